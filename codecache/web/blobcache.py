"""Verified blob bytes for the front end: loaded once, hashed once, watched on disk.

Owns the rule that a blob is served only after its bytes hashed to its name: when it is
first loaded, whenever its file changes on disk (size, mtime or inode), and on every
periodic scrub. Small (hot) blobs are kept in memory so the request path does no file I/O;
larger ones are verified here and streamed from the file by the server. A blob that is
missing or fails its hash is evicted and reported until its file is good again.

The memory (``server.memory_total_max``, this process's share) also holds bytes a caller
verified itself: an edge's cached blobs (``edgeblobs``), hashed as they were read from the
edge cache's file, ``keep``-ed here and ``forget``-ten by their keeper when that file
changes or leaves the cache (``StoreView.refresh``): one budget, one least-recently-used
order, one ``cached`` for the request path.

Blocking code (stat, read, sha256): the server calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from codecache.core.errors import BlobUnavailable
from codecache.store.files import MISSING, FileIdentity, blob_fault, check_blob, file_identity
from codecache.store.store import Store

log = logging.getLogger("codecache.blobs")


class BlobCache:
    """Thread-safe: request threads load, the watcher thread checks and scrubs."""

    def __init__(self, store: Store, blob_max: int, total_max: int) -> None:
        self._store = store
        self._blob_max = blob_max
        self._total_max = total_max
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._verified: dict[str, FileIdentity] = {}     # file identity that last hashed right
        self._problems: dict[str, str] = {}         # sha256 → why it cannot be served
        self._kept: set[str] = set()                # in memory for a caller (``keep``)

    # --- request path ---------------------------------------------------------------------

    def cached(self, sha256: str) -> bytes | None:
        """Bytes already verified and held in memory (no I/O; safe on the event loop)."""
        data = self._memory.get(sha256)
        if data is not None:
            with self._lock:
                if sha256 in self._memory:
                    self._memory.move_to_end(sha256)
        return data

    def verified_path(self, sha256: str, size: int) -> Path | None:
        """The file of a large blob whose bytes hashed right and whose file is unchanged
        since (one stat, no hashing: cheap enough for the event loop); None: ask ``load``.
        """
        verified = self._verified.get(sha256)
        if size <= self._blob_max or verified is None or sha256 in self._problems:
            return None
        path = self._store.blob_path(sha256)
        return path if file_identity(path) == verified else None

    def load(self, sha256: str, size: int) -> bytes | Path:
        """Verified bytes (small blobs, now cached) or the verified file's path (large ones).

        Raises:
            BlobUnavailable: missing, or its bytes do not hash to its name.
        """
        problem = self._problems.get(sha256)
        if problem is not None:
            raise BlobUnavailable(sha256, problem)
        path = self._store.blob_path(sha256)
        if size > self._blob_max:
            self._verify(sha256, size)
            return path
        data = self._read_verified(sha256, size, path)
        self._remember(sha256, data)
        return data

    @property
    def blob_max(self) -> int:
        """The largest blob held in memory (``server.memory_blob_max``)."""
        return self._blob_max

    # --- bytes a caller verified (an edge's cached blobs) -----------------------------------

    def keep(self, sha256: str, data: bytes) -> None:
        """Hold ``data``, the caller's verified bytes of blob ``sha256``, in memory (within
        the budget, least recently used first out) until the caller ``forget``s it; ``check``
        leaves them alone."""
        with self._lock:
            self._kept.add(sha256)
        self._remember(sha256, data)

    def kept(self) -> set[str]:
        """The blobs held for a caller that are still in memory."""
        with self._lock:
            self._kept &= self._memory.keys()
            return set(self._kept)

    def forget(self, sha256s: Iterable[str]) -> None:
        """Out of memory at once (a caller's blob whose file changed, left its cache, or
        failed a check)."""
        with self._lock:
            for sha256 in sha256s:
                self._kept.discard(sha256)
                data = self._memory.pop(sha256, None)
                if data is not None:
                    self._memory_bytes -= len(data)

    # --- watcher --------------------------------------------------------------------------

    def check(self, blobs: dict[str, int]) -> dict[str, str]:
        """Re-verify every listed blob whose file changed; return the problems found."""
        for sha256, size in blobs.items():
            current = file_identity(self._store.blob_path(sha256))
            if current is None:
                # _fail records the problem and raises for the request path; here the
                # pass must go on to the other blobs and report what it found.
                with contextlib.suppress(BlobUnavailable):
                    self._fail(sha256, MISSING)
            elif current != self._verified.get(sha256):
                self._refresh(sha256, size)
        with self._lock:
            for sha256 in set(self._problems) - set(blobs):
                del self._problems[sha256]
            for sha256 in set(self._memory) - set(blobs) - self._kept:
                self._memory_bytes -= len(self._memory.pop(sha256))
            return dict(self._problems)

    def scrub(self, blobs: dict[str, int]) -> dict[str, str]:
        """Re-hash every listed blob, changed or not (periodic scrub)."""
        for sha256, size in blobs.items():
            self._refresh(sha256, size, force=True)
        return dict(self._problems)

    @property
    def memory_bytes(self) -> int:
        return self._memory_bytes

    # --- internals ------------------------------------------------------------------------

    def _refresh(self, sha256: str, size: int, *, force: bool = False) -> None:
        """Hash the file again; small blobs are (re)loaded into memory on the way."""
        try:
            if size > self._blob_max:
                self._verify(sha256, size, force=force)
            else:
                self._remember(sha256, self._read_verified(sha256, size,
                                                           self._store.blob_path(sha256)))
        except BlobUnavailable:
            pass  # recorded in self._problems by _fail

    def _verify(self, sha256: str, size: int, *, force: bool = False) -> None:
        path = self._store.blob_path(sha256)
        before = file_identity(path)
        if before is None:
            self._fail(sha256, MISSING)
        if not force and before == self._verified.get(sha256) and sha256 not in self._problems:
            return
        self._judge(sha256, check_blob(path, sha256, size), before)

    def _read_verified(self, sha256: str, size: int, path: Path) -> bytes:
        before = file_identity(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._fail(sha256, MISSING)
        # The bytes kept in memory are the bytes hashed: one read, not check_blob's own.
        self._judge(sha256, blob_fault(sha256, size, len(data), hashlib.sha256(data).hexdigest()),
                    before)
        return data

    def _judge(self, sha256: str, fault: str | None, file_id: FileIdentity | None) -> None:
        if fault is not None:
            self._fail(sha256, fault)
        with self._lock:
            if file_id is not None:
                self._verified[sha256] = file_id
            if self._problems.pop(sha256, None) is not None:
                log.warning("blob good again sha256=%s", sha256)

    def _fail(self, sha256: str, reason: str) -> None:
        with self._lock:
            if self._problems.get(sha256) != reason:
                log.error("blob unavailable sha256=%s: %s", sha256, reason)
            self._problems[sha256] = reason
            self._verified.pop(sha256, None)
            data = self._memory.pop(sha256, None)
            if data is not None:
                self._memory_bytes -= len(data)
        raise BlobUnavailable(sha256, reason)

    def _remember(self, sha256: str, data: bytes) -> None:
        with self._lock:
            if sha256 in self._memory:
                return
            self._memory[sha256] = data
            self._memory_bytes += len(data)
            while self._memory_bytes > self._total_max and len(self._memory) > 1:
                gone, evicted = self._memory.popitem(last=False)
                self._memory_bytes -= len(evicted)
                self._kept.discard(gone)
