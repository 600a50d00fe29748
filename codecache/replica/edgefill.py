"""An edge's fill (DESIGN.md §5): a blob it does not hold, from its upstreams, into its cache.

Owns one fill: the failover order over ``[replica] upstreams`` (as the puller's: the next
on a transport failure or on bytes refused), the blob fetched by ``Fetcher.blob`` (the
index's size as a hard cap) into a scratch file of the cache, its size and sha256 checked,
and only then ``EdgeCache.adopt``; and the one fill per blob across the node's processes:
an exclusive ``flock`` on ``edge-cache/locks/<sha256>``, after which the cache is looked
at again (another process may have filled it while this one waited).

Bytes that fail the check are refused (counted by reason, as a replica counts refusals)
and never cached: ``UpstreamInvalid`` (502) when no upstream gave good bytes, so the next
request tries again; ``UpstreamUnavailable`` (503) when none answered; ``CacheFull``
(503) when the disk is full, with no partial file left. A blob larger than the cache may
hold besides its channel targets is not cached: its verified file is handed to the caller
to serve to the requests waiting for it. Within a process, one fill per blob is the
caller's (``web.edgeblobs``: one future per blob, whatever asks).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from codecache.core.config import Config
from codecache.core.errors import (
    CacheFull,
    IndexRefused,
    Refusal,
    UpstreamFailure,
    UpstreamInvalid,
    UpstreamUnavailable,
)
from codecache.replica.fetcher import Fetcher
from codecache.store.edgecache import EdgeCache

log = logging.getLogger("codecache.edge")
_LOCK_POLL = (0.005, 0.1)   # first and longest pause between tries of a held fill lock
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class EdgeFill:
    """The fill of one process: ``await fill(sha256, size)``; raises as the module says."""

    def __init__(self, config: Config, cache: EdgeCache, fetcher: Fetcher) -> None:
        self._upstreams = config.replica.upstreams
        self._cache = cache
        self._fetcher = fetcher

    async def __call__(self, sha256: str, size: int) -> Path | None:
        """None: the blob is in the cache now. A path: the cache cannot keep a blob that
        large (``web.edgeblobs.Fill``): the verified file is the caller's to serve and
        remove."""
        async with self._locked(sha256):
            if await asyncio.to_thread(self._cache.verify, sha256, size):
                return None   # another process filled it while this one waited
            return await self._fill(sha256, size)

    @contextlib.asynccontextmanager
    async def _locked(self, sha256: str) -> AsyncIterator[None]:
        """The node's fill lock of ``sha256``. Polled without blocking, not waited for in a
        thread: a worker may wait on many fills at once, and the default executor has a
        handful of threads that the store watch needs too."""
        try:
            fd = os.open(self._cache.lock_dir / sha256, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if err.errno in _DISK_FULL:
                raise CacheFull(f"edge cache full: cannot fill blob {sha256}") from err
            raise
        try:
            pause = _LOCK_POLL[0]
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _LOCK_POLL[1])
            yield
        finally:
            os.close(fd)   # releases the lock (a killed process's too: the kernel does)

    async def _fill(self, sha256: str, size: int) -> Path | None:
        invalid: list[str] = []
        failed: list[str] = []
        for upstream in self._upstreams:
            scratch = self._cache.scratch(sha256)
            beside = False
            try:
                received, digest = await self._fetcher.blob(upstream, sha256, size, scratch)
                self._cache.counters.add_upstream_bytes(received)
                if received != size or digest != sha256:
                    raise IndexRefused(Refusal.BLOB_MISMATCH, f"blob {sha256} from {upstream}: "
                                       f"got {received} bytes hashing to {digest}")
                log.info("edge fill sha256=%s size=%d upstream=%s", sha256, size, upstream,
                         extra={"upstream": upstream})
                if size > await asyncio.to_thread(lambda: self._cache.limit):
                    # Larger than the cache may hold: served from its verified file to the
                    # requests waiting now, then removed (the bound holds: a fill in flight).
                    log.warning("edge fill: blob %s (%d bytes) is larger than the cache "
                                "holds besides the channel targets: served, not kept",
                                sha256, size)
                    beside = True
                    return scratch
                await asyncio.to_thread(self._cache.adopt, sha256, scratch, size)
                return None
            except UpstreamFailure as err:
                failed.append(f"{upstream}: {err}")
                log.warning("edge fill: upstream failed upstream=%s reason=%s: %s", upstream,
                            err.reason, err, extra={"upstream": upstream, "reason": err.reason})
            except IndexRefused as err:
                invalid.append(f"{upstream}: {err}")
                self._cache.counters.refused(err.reason.value)
                log.error("edge fill refused upstream=%s reason=%s: %s", upstream,
                          err.reason.value, err,
                          extra={"upstream": upstream, "reason": err.reason.value})
            except OSError as err:
                if err.errno in _DISK_FULL:
                    log.error("edge fill: disk full, blob %s not cached", sha256)
                    raise CacheFull(f"edge cache full: cannot store blob {sha256}") from err
                raise
            finally:
                if not beside:
                    scratch.unlink(missing_ok=True)   # adopted: already gone
        if invalid:
            raise UpstreamInvalid(sha256, f"blob {sha256}: no upstream sent its bytes: "
                                  + "; ".join(invalid + failed))
        raise UpstreamUnavailable(f"blob {sha256} is not held and no upstream answered: "
                                  + ("; ".join(failed) or "no upstream configured"))
