"""An edge's blobs for the front end: what it does not pin, from its cache, filled on demand.

Owns the request side of DESIGN.md §5's edge: a blob is served from the edge cache only as
an open file whose identity is the one that hashed right (``VerifiedFiles.open``), so
nothing unverified is sent, HEAD and Range included, and a blob evicted between the look
and the open is looked for (or filled) again, never a 500. A blob not held is filled
first: one fill per blob in this process (one future, however many requests wait: none
of them holds a thread), the fill itself (``Fill``, handed in by ``node``: the web side
knows nothing of upstreams) one per blob across the node's processes. Counts each answer
as a hit (served from the cache) or a miss (it waited for a fill).

A blob no larger than ``server.memory_blob_max`` is then read once, hashed as it is read,
and kept in this process's share of blob memory (``BlobCache.keep``), as a replica keeps
its small blobs: from the next request on it is answered from memory, on the fast path
(``fastpath``; a hit counted by ``StoreView.cached``). The copy goes when its file fails a
check or is evicted in this process (at once: ``EdgeCache``'s ``gone``), and when its file
changes or leaves the cache otherwise (another process evicted or dropped it) at the next
watch tick (``StoreView.refresh``). A GET of a ~200 KB cached blob went from 0.35-0.58x
a replica's requests/s at 2.4-3.1x its CPU per request to 0.9-1.2x at 0.9-1.2x
(docs/benchmark.md, "Edge hit: a cached blob from memory").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from codecache.core.errors import BlobUnavailable, CacheFull
from codecache.store.edgecache import EdgeCache
from codecache.store.edgeverified import VerifiedFiles
from codecache.web.blobcache import BlobCache

#: Fetch blob ``sha256`` of ``size`` bytes from upstream, verified, into the edge cache
#: (None), or, when the cache cannot keep a blob that large, into a verified file of its
#: own (its path: served to the requests that waited, then removed). Raises
#: ``UpstreamInvalid``, ``UpstreamUnavailable`` or ``CacheFull``.
Fill = Callable[[str, int], Awaitable[Path | None]]
#: The fill of one server process, open while it serves (its upstream connections).
OpenFill = Callable[[EdgeCache], AbstractAsyncContextManager[Fill]]

_ATTEMPTS = 3   # fills of one request whose blob was evicted before it could be opened


@dataclass
class _Flight:
    """One fill (or look) of a blob in this process, and the requests waiting for it."""

    future: asyncio.Future[Path | bool]
    waiting: int = 0


class EdgeBlobs:
    """The edge cache's blobs for one server process."""

    def __init__(self, cache: EdgeCache, fill: Fill, memory: BlobCache | None = None) -> None:
        """``memory``: this process's blob memory, where small blobs are kept (none: every
        blob is served from its file)."""
        self.cache = cache
        self._fill = fill
        self._memory = memory
        self._inflight: dict[str, _Flight] = {}
        self._reading: dict[str, asyncio.Future[tuple[bytes, bool]]] = {}

    async def body(self, sha256: str, size: int) -> bytes | BinaryIO:
        """The verified blob, filled first if the cache does not hold it: a small one's
        bytes, kept in memory from now on (read and hashed off the event loop), or the
        open file of a larger one.

        Raises:
            UpstreamInvalid, UpstreamUnavailable, CacheFull: as ``open``.
        """
        fh = self.known(sha256)
        if fh is None:
            fh = await self.open(sha256, size)
        memory = self._memory
        if memory is None or size > memory.blob_max:
            return fh
        # One read per blob however many requests got here at once (a burst that waited
        # for one fill): the first one's file is read, the others' closed.
        reading = self._reading.get(sha256)
        if reading is None:
            reading = asyncio.ensure_future(asyncio.to_thread(_read, self.cache.verified, fh,
                                                              sha256, size))
            self._reading[sha256] = reading
            reading.add_done_callback(lambda done: self._was_read(sha256, done, memory))
        else:
            fh.close()
        try:
            # Shielded: a client that goes away does not cancel the read others wait for.
            data, _ = await asyncio.shield(reading)
        except BlobUnavailable:
            # Its file rotted unchanged in name and identity (the cache dropped it):
            # filled again, served from the fill's file, kept by the next request.
            return await self.open(sha256, size)
        return data

    def _was_read(self, sha256: str, done: asyncio.Future[tuple[bytes, bool]],
              memory: BlobCache) -> None:
        if self._reading.get(sha256) is done:
            del self._reading[sha256]
        if done.cancelled() or done.exception() is not None:
            return
        data, held = done.result()
        if held:   # not a blob filled beside the cache, which is gone after this answer
            memory.keep(sha256, data)

    def known(self, sha256: str) -> BinaryIO | None:
        """The verified blob's open file, if this process knows it and it is unchanged
        (no hashing, no database: on the event loop); counted as a hit."""
        fh = self.cache.verified.open(sha256)
        if fh is not None:
            self.cache.counters.count(hits=1)
        return fh

    async def open(self, sha256: str, size: int) -> BinaryIO:
        """The verified blob's open file, filled first if the cache does not hold it.

        Raises:
            UpstreamInvalid, UpstreamUnavailable, CacheFull: as ``Fill``; ``CacheFull``
                too when the blob is evicted again and again as soon as it is cached.
        """
        filled = False
        for _ in range(_ATTEMPTS):
            fh = self.cache.verified.open(sha256)
            if fh is not None:
                self.cache.counters.count(hits=int(not filled), misses=int(filled))
                return fh
            outcome = await self._ensure(sha256, size)
            if not isinstance(outcome, bool):
                self.cache.counters.count(misses=1)
                return outcome
            filled = filled or outcome
        raise CacheFull(f"blob {sha256} ({size} bytes) was evicted as soon as it was "
                        "cached, again and again")

    async def _ensure(self, sha256: str, size: int) -> bool | BinaryIO:
        """Make the blob held and verified in this process: whether it had to be filled;
        or the open file of a blob the cache cannot keep, filled for the requests that
        waited (the last of them to open it removes it)."""
        flight = self._inflight.get(sha256)
        if flight is None:
            future = asyncio.ensure_future(self._held_or_filled(sha256, size))
            flight = self._inflight[sha256] = _Flight(future)
            future.add_done_callback(lambda done: self._finished(sha256, flight))
        flight.waiting += 1
        try:
            # Shielded: a client that goes away does not cancel the fill others wait for.
            outcome = await asyncio.shield(flight.future)
            if isinstance(outcome, Path):
                beside: BinaryIO = outcome.open("rb")
                return beside
            return outcome
        finally:
            flight.waiting -= 1
            if not flight.waiting:
                self._passed(flight)

    def _finished(self, sha256: str, flight: _Flight) -> None:
        if self._inflight.get(sha256) is flight:
            del self._inflight[sha256]   # a failed fill is tried again by the next request
        if not flight.waiting:           # every waiter went away meanwhile
            self._passed(flight)

    @staticmethod
    def _passed(flight: _Flight) -> None:
        """A blob filled beside the cache, opened by all who waited: its file goes."""
        done = flight.future
        if done.done() and not done.cancelled() and done.exception() is None:
            outcome = done.result()
            if isinstance(outcome, Path):
                outcome.unlink(missing_ok=True)

    async def _held_or_filled(self, sha256: str, size: int) -> Path | bool:
        """False: held; True: filled into the cache; a path: filled beside it."""
        if await asyncio.to_thread(self.cache.verify, sha256, size):
            return False
        beside = await self._fill(sha256, size)
        return True if beside is None else beside


def _read(verified: VerifiedFiles, fh: BinaryIO, sha256: str,
          size: int) -> tuple[bytes, bool]:
    """``VerifiedFiles.read`` of ``fh``, closed after (in the thread that reads it)."""
    with fh:
        return verified.read(fh, sha256, size)
