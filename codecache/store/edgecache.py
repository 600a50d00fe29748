"""An edge's bounded cache of the blobs it does not pin (DESIGN.md §5, ``[edge] cache_size``).

Owns ``<store>/edge-cache/``: a ``diskcache.Cache`` whose values are files of the raw blob
bytes (``disk_min_file_size = 0``), keyed by sha256, evicted least recently used first;
scratch files of fills in flight (``tmp/``) and the fill locks (``locks/``). Every worker
process and the pull loop open it (sqlite: process-safe). Each handle carries the node's
counters (``counters``: ``edgestats``) and this process's memo of the files that hashed
right (``verified``: ``edgeverified``); a process that opens it after a kill -9 removes
what the dead left (``edgerecover``). The channel targets themselves are the store's
blobs (``Store.blob_dir``), held as a replica holds them; the bound covers both: the LRU
part may hold ``cache_size`` minus the reserved bytes.

diskcache does not verify content: a blob enters only through ``put``/``adopt`` with its
bytes hashed, tagged with the identity of its file (mtime, size, inode); it is served only
while its file still has that identity, or after it hashed right again (its file changed,
or the periodic ``scrub``); one that fails is dropped, to be fetched again. A server
process may keep a copy of a small blob in memory (``web.edgeblobs``): ``gone`` (at once,
this handle's evictions and drops) and ``verified.unchanged`` (every watch tick, the rest)
say when a copy must go. The bound is on blob bytes alone (``edgedisk``: the database is
bookkeeping). A write culls explicitly (``cull_limit = 0``), making room before a blob
lands, so blob bytes on disk stay within the bound plus the fill in flight. A full disk
raises ``CacheFull`` and leaves no partial file.

Blocking (sqlite, file I/O, hashing): call it through ``asyncio.to_thread``, except
``served`` and ``verified.open`` (one open and fstat, like a replica's verified file).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from codecache.core.errors import CacheFull, StoreError
from codecache.store.edgedisk import Blobs, Disk, Placed, flocked
from codecache.store.edgerecover import recover
from codecache.store.edgestats import SQLITE_TIMEOUT, EdgeCounters, EdgeStats
from codecache.store.edgeverified import VerifiedFiles, identity_of, tag_of
from codecache.store.files import CHUNK, blob_fault, make_dirs

log = logging.getLogger("codecache.edge")

CACHE_DIR = "edge-cache"


def _disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, sqlite3.OperationalError) and "full" in str(err)


class EdgeCache:
    """One process's handle on the node's edge cache (thread-safe)."""

    def __init__(self, root: Path, cache_size: int,
                 gone: Callable[[list[str]], None] | None = None) -> None:
        """``root``: the store root; ``cache_size``: ``[edge] cache_size``; ``gone``: told
        at once of the blobs this handle evicts or drops (their copies in memory go)."""
        self.dir = root / CACHE_DIR
        self.tmp_dir = self.dir / "tmp"
        self.lock_dir = self.dir / "locks"
        for directory in (self.tmp_dir, self.lock_dir):
            make_dirs(directory)
        self._cache_size = cache_size
        self.verified = VerifiedFiles(drop=self._drop)   # this process's memo
        self._gone = gone
        # One process at a time opens the databases: diskcache's set-up (pragmas, tables)
        # run by several processes at once can fail "database is locked" (diskcache
        # issues 85, 266). The workers are fresh interpreters, not forks of one that made
        # it first, so they take turns here.
        with flocked(self.lock_dir / "init"):
            self._blobs = Blobs(str(self.dir / "blobs"), timeout=SQLITE_TIMEOUT, disk=Disk,
                                 disk_min_file_size=0, eviction_policy="least-recently-used",
                                 cull_limit=0, size_limit=cache_size, statistics=False)
            # Counters and the reserved bytes: never evicted, so not in the blobs' cache.
            self.counters = EdgeCounters(self.dir / "stats")
            self._open_lock = recover(self._blobs, self.tmp_dir, self.lock_dir)

    # --- the API of the fill and the pull loop ---------------------------------------------

    def path(self, sha256: str) -> Path | None:
        """The file of a held blob (a use, for the LRU order), or None; not verified here."""
        fh, _ = self._lookup(sha256)
        if fh is None:
            return None
        with fh:
            return Path(fh.name)

    def put(self, sha256: str, source: Path, size: int) -> None:
        """Copy the verified file ``source`` in as blob ``sha256`` (its bytes are hashed on
        the way: a file that changed meanwhile is refused), then cull.

        Raises:
            CacheFull: the disk is full (no partial file is left).
            StoreError: ``source`` is not the blob, or another failure of the file system.
        """
        scratch = self.scratch(sha256)
        digest = hashlib.sha256()
        try:
            with source.open("rb") as src, scratch.open("wb") as out:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            fault = blob_fault(sha256, size, scratch.stat().st_size, digest.hexdigest())
            if fault is not None:
                raise StoreError(f"blob {sha256} not cached: {source} is {fault}")
            self.adopt(sha256, scratch, size)
        except BaseException as err:
            scratch.unlink(missing_ok=True)
            if _disk_full(err):
                raise CacheFull(f"edge cache full: cannot store blob {sha256}") from err
            if isinstance(err, OSError):
                raise StoreError(f"cannot cache blob {sha256}: {err.strerror}") from err
            raise

    def scratch(self, sha256: str) -> Path:
        """A fresh scratch path for a fill of ``sha256`` (same file system as the cache)."""
        return self.tmp_dir / f"{os.getpid()}.{sha256}.{os.urandom(4).hex()}"

    def adopt(self, sha256: str, scratch: Path, size: int) -> None:
        """Move ``scratch`` (from ``scratch()``, written and hashed by the caller: its bytes
        ARE blob ``sha256``) into the cache, making room first, then cull.

        Raises:
            CacheFull: the disk is full (``scratch`` and any partial entry are removed).
        """
        placed: Path | None = None
        try:
            if size > self.limit:
                # It would evict everything and then itself: refused, the cache kept.
                raise CacheFull(f"blob {sha256} ({size} bytes) is larger than the edge cache "
                                f"holds besides the channel targets ({self.limit} bytes)")
            with scratch.open("rb+") as fh:
                os.fsync(fh.fileno())
                identity = identity_of(os.fstat(fh.fileno()))
            scratch.chmod(0o644)
            self._cull(room=size)
            filename, full = self._blobs._disk.filename()
            placed = Path(full)
            make_dirs(placed.parent)
            scratch.replace(placed)   # a rename keeps mtime, size and inode: the tag holds
            self._blobs.set(sha256, Placed(filename, size), read=True, tag=tag_of(identity))
            placed = None
        except BaseException as err:
            scratch.unlink(missing_ok=True)
            if placed is not None:
                placed.unlink(missing_ok=True)
            if _disk_full(err):
                raise CacheFull(f"edge cache full: cannot store blob {sha256}") from err
            raise
        self.verified.remember(sha256, full, identity)
        self.cull()

    def set_reserved(self, nbytes: int) -> None:
        """The bytes of the pinned channel targets; the LRU part shrinks to make room."""
        self.counters.reserved = nbytes
        self.cull()

    def stats(self) -> EdgeStats:
        """The node's counters (this process's pending counts included)."""
        self.flush()
        return self.counters.stats(lru_bytes=self.lru_bytes, limit_bytes=self._cache_size)

    def flush(self) -> None:
        """Write this process's pending counts, and the LRU uses of blobs served from the
        memo to the cache's order (every watch tick, and ``stats``)."""
        self.counters.flush()
        for sha256 in self.verified.take_used():
            with contextlib.suppress(sqlite3.Error, OSError):
                self.path(sha256)

    # --- serving ----------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """Bytes the LRU part may hold: ``cache_size`` less the reserved channel targets."""
        return max(0, self._cache_size - self.reserved)

    @property
    def reserved(self) -> int:
        return self.counters.reserved

    @property
    def lru_bytes(self) -> int:
        return int(self._blobs.volume())

    def served(self, sha256: str) -> None:
        """A hit on blob ``sha256`` served from a copy in memory (the request path: no
        I/O): counted, and a use for the LRU order at the next ``flush``."""
        self.counters.add("hits", 1)
        self.verified.used(sha256)

    def verify(self, sha256: str, size: int) -> bool:
        """Whether blob ``sha256`` is held with the right bytes (then ``verified.open``
        opens it): its file as tagged when it was put, or hashed right now. A held file
        that fails is dropped (the next fill fetches it again)."""
        fh, tag = self._lookup(sha256)
        if fh is None:
            return False
        with fh:
            identity = identity_of(os.fstat(fh.fileno()))
            if tag != tag_of(identity) and not self.verified.matches(sha256, identity):
                fault = _fault(fh, sha256, size)
                if fault is not None:
                    log.error("edge cache: blob %s dropped, %s", sha256, fault)
                    self._drop(sha256)
                    return False
            self.verified.remember(sha256, fh.name, identity)
        return True

    def scrub(self, sizes: dict[str, int]) -> list[str]:
        """Hash every held blob again (one process of the node per ``interval``: the others
        return at once); drop those that fail. ``sizes``: the index's blob sizes (a held
        blob it no longer lists is checked against its own size). Returns those dropped."""
        dropped = []
        for sha256, filename in self._blobs.held():
            try:
                fh = (self.dir / "blobs" / filename).open("rb")
            except FileNotFoundError:
                continue   # evicted meanwhile
            with fh:
                size = sizes.get(sha256, os.fstat(fh.fileno()).st_size)
                fault = _fault(fh, sha256, size)
            if fault is not None:
                log.error("edge cache scrub: blob %s dropped, %s", sha256, fault)
                self._drop(sha256)
                dropped.append(sha256)
        self.verified.retain(lambda: {sha256 for sha256, _ in self._blobs.held()})
        return dropped

    def cull(self) -> int:
        """Evict least recently used blobs until the LRU part is within its limit."""
        return self._cull(room=0)

    def close(self) -> None:
        self.flush()
        self._blobs.close()
        self.counters.close()
        os.close(self._open_lock)

    # --- internals --------------------------------------------------------------------------

    def _cull(self, *, room: int) -> int:
        """Evict until the LRU part plus ``room`` bytes fits the limit; count evictions."""
        evicted = self._blobs.cull_to(max(0, self.limit - room))
        if evicted and self._gone is not None:
            self._gone(evicted)
        self.counters.incr("evictions", len(evicted))
        return len(evicted)

    def _lookup(self, sha256: str) -> tuple[BinaryIO | None, str | None]:
        """The open file of a held blob and its tag, counted as a use (the LRU order);
        on a full disk, where the use cannot be written, looked up without it: what the
        edge holds is still served."""
        try:
            found: tuple[BinaryIO | None, str | None] = self._blobs.get(sha256, read=True,
                                                                        tag=True)
            return found
        except sqlite3.OperationalError as err:
            if not _disk_full(err):
                raise
        return self._blobs.peek(sha256)

    def _drop(self, sha256: str) -> None:
        self.verified.forget(sha256)
        if self._gone is not None:
            self._gone([sha256])
        self._blobs.delete(sha256, retry=True)


def _fault(fh: BinaryIO, sha256: str, size: int) -> str | None:
    fh.seek(0)
    digest = hashlib.sha256()
    length = 0
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
        length += len(chunk)
    return blob_fault(sha256, size, length, digest.hexdigest())
