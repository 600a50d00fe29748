"""Work done ahead, taken in order: a package's tags built a few at a time, published one by
one in version order.

Owns the pool a sync pass builds with (``Ahead``): it runs a function on each item of a
list, at most ``workers`` at once, ahead of a taker that takes the results strictly in the
list's order (an item's error is raised when its turn comes, as if it had run then). With
one worker nothing runs in a thread: each item runs when it is taken, as a serial loop
would. Leaving the pool (early, on an error) cancels what has not started and waits for
what runs, so no work outlives the pass.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# A build is a git cat-file process plus a gzip thread (zlib releases the GIL): one per core,
# at least two (the reading of one overlaps the compressing of the other), at most four
# (each holds its scratch archive on disk until it is taken).
MAX_WORKERS = 4


def build_workers() -> int:
    """How many builds run at once for a source whose trees may be read concurrently."""
    return max(2, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


class Ahead(Generic[Item, Result]):
    """``run`` over ``items`` with up to ``workers`` at once, the results taken in order."""

    def __init__(self, items: list[Item], run: Callable[[Item], Result], workers: int,
                 name: str = "ahead") -> None:
        self._run = run
        self._items: Iterator[Item] = iter(items)
        self._pool = ThreadPoolExecutor(workers, name) if workers > 1 and len(items) > 1 \
            else None
        self._pending: deque[Future[Result]] = deque()
        if self._pool is not None:
            for _ in range(workers):
                self._submit(self._pool)

    def take(self) -> Result:
        """The next item's result (in the list's order), or its error raised.

        Raises:
            StopIteration: every item was taken (a bug of the caller).
        """
        if self._pool is None:
            return self._run(next(self._items))
        if not self._pending:
            raise StopIteration
        head = self._pending.popleft()
        self._submit(self._pool)   # queued behind the running ones: never more than ``workers`` run
        return head.result()

    def close(self) -> None:
        """Cancel what has not started; wait for what runs (its result is dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pending.clear()

    def __enter__(self) -> Ahead[Item, Result]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _submit(self, pool: ThreadPoolExecutor) -> None:
        item = next(self._items, _END)
        if item is not _END:
            self._pending.append(pool.submit(self._run, item))  # type: ignore[arg-type]


_END = object()
