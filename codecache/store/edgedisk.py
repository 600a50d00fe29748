"""diskcache made an edge's blob store: blob files renamed in, a bound on blob bytes alone.

Owns the few places where ``edgecache`` needs diskcache to behave otherwise than it does:
a value that is a file already renamed into the cache's tree (``Placed``: a verified
scratch file is moved in, never copied, so no second write and no partial file); the
cache's volume as its blob bytes (diskcache counts its database too, which DESIGN.md §5
calls bookkeeping); an LRU cull that evicts one blob at a time (diskcache's evicts ten);
reading what is held without counting a use. Also the file locks of the processes that
share the cache (their liveness test: ``edgerecover``). Pinned to diskcache 5 (pyproject):
it reads its ``Cache`` table and settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import diskcache
from diskcache.core import MODE_BINARY


@dataclass(frozen=True, slots=True)
class Placed:
    """A file already renamed into the cache's tree: ``Disk.store`` records it as is."""

    filename: str
    size: int


class Disk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk that also takes a file already in place (``Placed``)."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if isinstance(value, Placed):
            return value.size, MODE_BINARY, value.filename, None
        return super().store(value, read, key=key)


class Blobs(diskcache.Cache):  # type: ignore[misc]
    """The blobs' cache: bounded on blob bytes (the database is bookkeeping)."""

    def volume(self) -> int:
        return int(self.reset("size"))

    def cull_to(self, limit: int) -> list[str]:
        """Evict the least recently used blob, one at a time, until ``volume() <= limit``
        (diskcache's own ``cull`` evicts ten at a time: up to nine blobs too many).
        Returns the keys evicted."""
        evicted = []
        while self.volume() > limit:
            with self._transact(retry=True) as (sql, cleanup):
                rows = sql("SELECT rowid, key, filename FROM Cache ORDER BY access_time "
                           "LIMIT 1").fetchall()
                if not rows:
                    break
                ((rowid, key, filename),) = rows
                sql("DELETE FROM Cache WHERE rowid = ?", (rowid,))
                cleanup(filename)
            evicted.append(str(key))
        return evicted

    def peek(self, sha256: str) -> tuple[BinaryIO | None, str | None]:
        """The open file of a held blob and its tag, without counting a use (``get``
        writes one: impossible on a full disk)."""
        rows = self._sql("SELECT filename, tag FROM Cache WHERE key = ? AND raw = 1",
                         (sha256,)).fetchall()
        if not rows:
            return None, None
        try:
            return Path(self.directory, rows[0][0]).open("rb"), rows[0][1]
        except FileNotFoundError:
            return None, None

    def held(self) -> list[tuple[str, str]]:
        """(sha256, file name in the cache's tree) of every held blob, read without
        counting uses (``get`` would reorder the LRU)."""
        rows = self._sql("SELECT key, filename FROM Cache").fetchall()
        return [(str(key), str(filename)) for key, filename in rows]


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created), waited for, held for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
