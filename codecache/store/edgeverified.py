"""One process's memo of the edge cache's files that hashed right, and the identity rules.

Owns what lets a server process send a cached blob without hashing it again: the file of
each blob this process verified (``EdgeCache.put``/``adopt``/``verify``), by its identity
(mtime, size, inode: ``identity_of``), and the tag a blob is recorded with in the cache's
database (``tag_of``: the identity its file had when it hashed right, shared by the node's
processes). A file is served as known only while it keeps that identity, checked on the
open descriptor (``open``), never on a path. A blob served from the memo (or from a copy in
memory: ``used``) is a use for the LRU order, written by the cache's next ``flush``.

A server process may keep a copy of a small blob in memory (``web.edgeblobs``): ``read``
hashes the bytes it copies (a cache file that fails is dropped), ``unchanged`` (every
watch tick) says which copies still stand for the file this process verified.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import BinaryIO

from codecache.core.errors import BlobUnavailable
from codecache.store.files import FileIdentity, blob_fault, file_identity

log = logging.getLogger("codecache.edge")


def identity_of(st: os.stat_result) -> FileIdentity:
    """A file's identity from its ``stat`` (``files.file_identity``'s, from a descriptor)."""
    return st.st_mtime_ns, st.st_size, st.st_ino


def tag_of(of: FileIdentity) -> str:
    """The database tag of a blob whose file hashed right with identity ``of``."""
    return "{}:{}:{}".format(*of)


class VerifiedFiles:
    """The blobs this process verified, by file name and identity (thread-safe)."""

    def __init__(self, drop: Callable[[str], None]) -> None:
        """``drop``: the cache's drop of a blob whose file failed a hash (``read``)."""
        self._drop = drop
        self._lock = threading.Lock()
        self._files: dict[str, tuple[str, FileIdentity]] = {}
        self._used: set[str] = set()           # served from the memo since the last flush

    def remember(self, sha256: str, filename: str, of: FileIdentity) -> None:
        """Blob ``sha256``'s file ``filename`` hashed right with identity ``of``."""
        with self._lock:
            self._files[sha256] = (filename, of)

    def forget(self, sha256: str) -> None:
        with self._lock:
            self._files.pop(sha256, None)

    def retain(self, held: Callable[[], set[str]]) -> None:
        """Forget every blob not in ``held()`` (read under the memo's lock: one verified
        while it was read is kept)."""
        with self._lock:
            for sha256 in set(self._files) - held():
                del self._files[sha256]

    def matches(self, sha256: str, of: FileIdentity) -> bool:
        """Whether this process verified blob ``sha256`` in a file of identity ``of``."""
        known = self._files.get(sha256)
        return known is not None and known[1] == of

    def knows(self, sha256: str) -> bool:
        """Whether this process verified blob ``sha256`` (``open`` may open it)."""
        return sha256 in self._files

    def open(self, sha256: str) -> BinaryIO | None:
        """The open file of a blob this process verified, if its file is unchanged since
        (one open and fstat, no hashing: cheap enough for the event loop); else None.
        An evicted or changed file is never returned: the descriptor is checked, not a
        path, so eviction after this returns cannot change what is sent."""
        known = self._files.get(sha256)
        if known is None:
            return None
        try:
            fh = open(known[0], "rb")  # noqa: PTH123, SIM115 - a str path; the caller closes
        except FileNotFoundError:
            return None
        if identity_of(os.fstat(fh.fileno())) != known[1]:
            fh.close()
            return None
        with self._lock:
            self._used.add(sha256)
        return fh

    def used(self, sha256: str) -> None:
        """Blob ``sha256`` served from a copy in memory (the request path: no I/O): a use
        for the LRU order at the next flush."""
        if sha256 not in self._used:   # once per flush: the lock not taken per request
            with self._lock:
                self._used.add(sha256)

    def take_used(self) -> set[str]:
        """The blobs served from the memo since the last call (the cache's ``flush``)."""
        with self._lock:
            used, self._used = self._used, set()
        return used

    def read(self, fh: BinaryIO, sha256: str, size: int) -> tuple[bytes, bool]:
        """Blob ``sha256``'s bytes from its open file ``fh``, hashed as read (a copy in
        memory is bytes that hashed right), and whether ``fh`` is the cache's verified file
        (the copy is valid while it is ``unchanged``). Raises ``BlobUnavailable`` if they
        fail: the cache's file is dropped."""
        fh.seek(0)
        data = fh.read(size + 1)
        held = self.matches(sha256, identity_of(os.fstat(fh.fileno())))
        fault = blob_fault(sha256, size, len(data), hashlib.sha256(data).hexdigest())
        if fault is not None:
            log.error("edge cache: blob %s dropped, %s", sha256, fault)
            if held:
                self._drop(sha256)
            raise BlobUnavailable(sha256, fault)
        return data, held

    def unchanged(self, sha256s: Iterable[str]) -> set[str]:
        """Of ``sha256s``, those whose file is still the one this process verified (a stat
        each): not one evicted, dropped by another process, or changed on disk."""
        held = set()
        for sha256 in sha256s:
            known = self._files.get(sha256)
            if known is not None and file_identity(known[0]) == known[1]:
                held.add(sha256)
        return held
