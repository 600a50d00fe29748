"""An edge's shared counters: what ``/readyz``, ``status`` and ``/metrics`` report of its cache.

Owns ``<store>/edge-cache/stats/``, a small ``diskcache.Cache`` that is never evicted: the
node's counters (hits, misses, upstream bytes, evictions, refusals by reason), the bytes
the pinned channel targets reserve of the bound, and the time of the last scrub. Every
process of the node adds to them (sqlite: atomic across processes), so any worker reports
the node, and a worker killed loses at most its counts since its last ``flush``. The
request path only adds to a dict in memory (``add``); ``flush`` (every watch tick) writes
those; rare events are written at once (``incr``). A count that cannot be written (a full
disk) waits in memory for the next flush.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import diskcache

log = logging.getLogger("codecache.edge")

_KEYS = ("hits", "misses", "upstream_bytes", "evictions")
_REFUSALS = "refusals."          # key prefix: a fill's refusals by reason
_RESERVED = "reserved_bytes"
_LAST_SCRUB = "last_scrub"
SQLITE_TIMEOUT = 60.0            # seconds a writer waits for another process's transaction


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """The node's cache, summed over its processes (``/readyz``, ``status``, ``/metrics``).

    ``cache_bytes``: blob bytes held, the LRU part plus the reserved channel targets.
    """

    cache_bytes: int
    limit_bytes: int
    reserved_bytes: int
    hits: int
    misses: int
    upstream_bytes: int
    evictions: int
    refusals: dict[str, int] = field(default_factory=dict)

    @property
    def hit_ratio(self) -> float:
        asked = self.hits + self.misses
        return self.hits / asked if asked else 0.0


class EdgeCounters:
    """One process's handle on the node's counters (thread-safe)."""

    def __init__(self, directory: Path) -> None:
        self._db = diskcache.Cache(str(directory), timeout=SQLITE_TIMEOUT,
                                   eviction_policy="none")
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}     # counts not yet added to the node's

    def add(self, key: str, n: int) -> None:
        """Count ``n`` (no I/O: written by the next ``flush``)."""
        if n:
            with self._lock:
                self._pending[key] = self._pending.get(key, 0) + n

    def count(self, *, hits: int = 0, misses: int = 0) -> None:
        """Count answers (the request path: no I/O, written by ``flush``)."""
        self.add("hits", hits)
        self.add("misses", misses)

    def add_upstream_bytes(self, nbytes: int) -> None:
        """Blob bytes read from an upstream (a fill, or the pull loop's prefetch)."""
        self.incr("upstream_bytes", nbytes)

    def incr(self, key: str, n: int) -> None:
        """Count ``n`` now (rare events); on a full disk, at the next flush."""
        if n:
            try:
                self._db.incr(key, n, retry=True)
            except (sqlite3.Error, OSError):
                self.add(key, n)

    def refused(self, reason: str) -> None:
        """A fill refused what an upstream sent (``Refusal`` value), as a replica counts."""
        self.incr(_REFUSALS + reason, 1)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for key, n in pending.items():
            try:
                self._db.incr(key, n, retry=True)
            except (sqlite3.Error, OSError) as err:
                log.warning("edge cache: cannot write its counters (%s): kept for later", err)
                self.add(key, n)

    @property
    def reserved(self) -> int:
        return int(self._db.get(_RESERVED, 0))

    @reserved.setter
    def reserved(self, nbytes: int) -> None:
        self._db.set(_RESERVED, int(nbytes))

    def stats(self, *, lru_bytes: int, limit_bytes: int) -> EdgeStats:
        """The node's counters, this process's pending counts included."""
        self.flush()
        values = {key: int(self._db.get(key, 0)) for key in _KEYS}
        refusals = {str(key)[len(_REFUSALS):]: int(self._db.get(key, 0))
                    for key in self._db.iterkeys() if str(key).startswith(_REFUSALS)}
        reserved = self.reserved
        return EdgeStats(cache_bytes=lru_bytes + reserved, limit_bytes=limit_bytes,
                         reserved_bytes=reserved, refusals=refusals, **values)

    def scrub_due(self, interval: float) -> bool:
        """Claim the node's next scrub if ``interval`` passed since the last (one process
        of the node scrubs; the claim is atomic across processes)."""
        now = time.time()
        with self._db.transact(retry=True):
            if now - float(self._db.get(_LAST_SCRUB, 0.0)) < interval:
                return False
            self._db.set(_LAST_SCRUB, now)
        return True

    def close(self) -> None:
        self.flush()
        self._db.close()
