"""What an edge keeps in its store beside its bounded cache (DESIGN.md §5): channel targets.

An edge holds the blobs its channels point to in the store's ``blobs/sha256``, as a replica
holds every blob: the pull loop fetches them before it swaps a new index in, and readiness
requires them (``readiness.must_hold``). Every other blob lives in the ``EdgeCache``
(``store.edgecache``), filled on demand by the server and bounded by ``[edge] cache_size``.
This module owns the moves between the two around an install, under the store's writers'
lock:

- ``seed``: a new channel target the cache already holds (a rollback's target, a release a
  pilot asked for before it was published to a channel) is copied from it, checked, instead
  of crossing the WAN again;
- ``settle``: a blob that is no longer a channel target is handed to the cache (a rollback,
  or a pilot still asking for that release, wants it again) and leaves the store, and the
  cache is told how many bytes the channel targets reserve of its bound. The channel
  targets are never evicted: if they alone exceed the bound they are kept, logged here,
  and ``codecache check`` warns.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from codecache.core.errors import CodecacheError
from codecache.core.names import is_sha256
from codecache.store.files import check_blob
from codecache.store.store import Store

if TYPE_CHECKING:   # a replica's pull loop never imports the cache's databases
    from codecache.store.edgestats import EdgeCounters

log = logging.getLogger("codecache.replica")


class Cache(Protocol):
    """What the pull loop asks of the edge's cache (``store.edgecache.EdgeCache``)."""

    def path(self, sha256: str) -> Path | None: ...

    def put(self, sha256: str, source: Path, size: int) -> None: ...

    def set_reserved(self, nbytes: int) -> None: ...

    @property
    def counters(self) -> EdgeCounters: ...


class EdgeKeep:
    """The channel targets of one edge's store and its cache. One per pull loop.

    Blocking (copies, hashes, renames): the pull loop runs it in a thread.
    """

    def __init__(self, store: Store, cache: Cache, limit: int) -> None:
        self._store = store
        self._cache = cache
        self._limit = limit
        self._over: int | None = None   # the channel targets' bytes last logged over it
        self.unsettled = True           # nothing settled yet since this process started

    @classmethod
    def open(cls, store: Store, limit: int) -> EdgeKeep:
        """The keep of ``store`` with the edge's cache (``[edge] cache_size``: ``limit``)."""
        # Imported here: a replica's pull loop never opens the cache database.
        from codecache.store.edgecache import EdgeCache

        return cls(store, EdgeCache(store.root, limit), limit)

    def seed(self, wanted: Mapping[str, int]) -> set[str]:
        """Copy into the store the blobs of ``wanted`` (sha256 → size) that the cache holds
        and that hash right; returns those copied (the caller fetches the others)."""
        taken = set()
        for sha256, size in sorted(wanted.items()):
            source = self._cache.path(sha256)
            if source is None:
                continue
            try:
                self._copy_in(source, sha256, size)
            except (OSError, CodecacheError) as err:
                # Evicted meanwhile, corrupt, or no room: fetched from upstream instead.
                log.warning("blob %s not taken from the edge cache (%s): fetching it", sha256,
                            err)
                continue
            taken.add(sha256)
        if taken:
            log.info("%d channel target(s) taken from the edge cache, not fetched",
                     len(taken))
        return taken

    def _copy_in(self, source: Path, sha256: str, size: int) -> None:
        scratch = self._store.scratch_dir("edge-")
        part = scratch / sha256
        try:
            shutil.copyfile(source, part)
            fault = check_blob(part, sha256, size)
            if fault is not None:
                raise OSError(f"the cached copy is {fault}")
            self._store.add_blob(part, sha256)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def fetched(self, nbytes: int) -> None:
        """Count blob bytes the pull loop read from upstream (its prefetch) as the
        cache's fills are counted: ``codecache_edge_upstream_bytes_total``."""
        self._cache.counters.add_upstream_bytes(nbytes)

    def settle(self, targets: Mapping[str, int]) -> None:
        """After an install: every blob in the store that is not in ``targets`` (the channel
        targets held now) goes to the cache; the cache reserves what ``targets`` take."""
        try:
            paths = list(self._store.blob_dir.iterdir())
        except FileNotFoundError:
            paths = []
        for path in paths:
            name = path.name
            if name in targets or not is_sha256(name):
                continue
            try:
                size = path.stat().st_size
                self._cache.put(name, path, size)
            except FileNotFoundError:
                continue
            except (OSError, CodecacheError) as err:
                # Dropped all the same: the store must not grow past the channel targets;
                # the next request for it fills the cache from upstream.
                log.warning("blob %s left the channel targets but could not enter the edge "
                            "cache (%s): dropped", name, err)
            path.unlink(missing_ok=True)
        reserved = sum(targets.values())
        self._cache.set_reserved(reserved)
        self.unsettled = False
        if reserved > self._limit:
            if self._over != reserved:
                log.warning("the channel targets take %d bytes, more than [edge] cache_size "
                            "(%d): kept all the same (never evicted); raise cache_size",
                            reserved, self._limit)
            self._over = reserved
        else:
            self._over = None
