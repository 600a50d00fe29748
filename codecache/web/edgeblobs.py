"""An edge's blobs for the front end: what it does not pin, from its cache, filled on demand.

Owns the request side of DESIGN.md §5's edge: a blob is served from the edge cache only as
an open file whose identity is the one that hashed right (``EdgeCache.open_known``), so
nothing unverified is sent, HEAD and Range included, and a blob evicted between the look
and the open is looked for (or filled) again, never a 500. A blob not held is filled
first: one fill per blob in this process (one future, however many requests wait: none
of them holds a thread), the fill itself (``Fill``, handed in by ``node``: the web side
knows nothing of upstreams) one per blob across the node's processes. Counts each answer
as a hit (served from the cache) or a miss (it waited for a fill).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import BinaryIO

from codecache.core.errors import CacheFull
from codecache.store.edgecache import EdgeCache

#: Fetch blob ``sha256`` of ``size`` bytes from upstream, verified, into the edge cache.
#: Raises ``UpstreamInvalid``, ``UpstreamUnavailable`` or ``CacheFull``.
Fill = Callable[[str, int], Awaitable[None]]
#: The fill of one server process, open while it serves (its upstream connections).
OpenFill = Callable[[EdgeCache], AbstractAsyncContextManager[Fill]]

_ATTEMPTS = 3   # fills of one request whose blob was evicted before it could be opened


class EdgeBlobs:
    """The edge cache's blobs for one server process."""

    def __init__(self, cache: EdgeCache, fill: Fill) -> None:
        self.cache = cache
        self._fill = fill
        self._inflight: dict[str, asyncio.Future[bool]] = {}

    def known(self, sha256: str) -> BinaryIO | None:
        """The verified blob's open file, if this process knows it and it is unchanged
        (no hashing, no database: on the event loop); counted as a hit."""
        fh = self.cache.open_known(sha256)
        if fh is not None:
            self.cache.count(hits=1)
        return fh

    async def open(self, sha256: str, size: int) -> BinaryIO:
        """The verified blob's open file, filled first if the cache does not hold it.

        Raises:
            UpstreamInvalid, UpstreamUnavailable, CacheFull: as ``Fill``; ``CacheFull``
                too when the blob is evicted as soon as it is cached (a cache too small).
        """
        filled = False
        for _ in range(_ATTEMPTS):
            fh = self.cache.open_known(sha256)
            if fh is not None:
                self.cache.count(hits=int(not filled), misses=int(filled))
                return fh
            filled = await self._ensure(sha256, size) or filled
        raise CacheFull(f"blob {sha256} ({size} bytes) was evicted as soon as it was "
                        "cached: the edge cache is too small for it")

    async def _ensure(self, sha256: str, size: int) -> bool:
        """Make the blob held and verified in this process; whether it had to be filled."""
        future = self._inflight.get(sha256)
        if future is None:
            future = asyncio.ensure_future(self._held_or_filled(sha256, size))
            self._inflight[sha256] = future
            future.add_done_callback(lambda done: self._finished(sha256, done))
        # Shielded: a client that goes away does not cancel the fill the others wait for.
        return await asyncio.shield(future)

    def _finished(self, sha256: str, done: asyncio.Future[bool]) -> None:
        if self._inflight.get(sha256) is done:
            del self._inflight[sha256]   # a failed fill is tried again by the next request
        if not done.cancelled():
            done.exception()   # retrieved: every waiter may have gone

    async def _held_or_filled(self, sha256: str, size: int) -> bool:
        if await asyncio.to_thread(self.cache.verify, sha256, size):
            return False
        await self._fill(sha256, size)
        return True
