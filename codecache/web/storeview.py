"""What a front end knows about its store: the verified index, blob health, readiness, lag.

Owns what the server serves: the index on disk is taken only through ``trust`` (a refused
or older one never replaces the one served), blobs only through ``BlobCache``; the verdict
of ``/readyz`` comes from ``readiness.judge``, over the blobs ``readiness.must_hold`` names
for this role. On a replica or an edge, the lag facts come from the pull loop's
``replica.json`` (it may run in another process). Blocking code (stat, read,
hash): the server runs ``refresh`` and ``scrub`` in a thread. No aiohttp here.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from codecache.core.config import Config, Role
from codecache.core.errors import IndexRefused, NoIndex, NotFound, StoreError
from codecache.core.readiness import IndexProblem, IndexTrouble, Readiness, judge, must_hold
from codecache.core.signing import load_trusted_keys
from codecache.store.edgecache import EdgeCache
from codecache.store.edgestats import EdgeStats
from codecache.store.files import file_identity
from codecache.store.state import PullStatus, RefusedTag
from codecache.store.store import Store
from codecache.store.trusted import read_trusted_index
from codecache.telemetry.metrics import Metrics, create_metrics
from codecache.web.blobcache import BlobCache
from codecache.web.catalog import Catalog, Representation, history_representation
from codecache.web.edgeblobs import EdgeBlobs

log = logging.getLogger("codecache.web.server")


class StoreView:
    """One server's view of its store; replaced piecewise by the watcher, read by handlers."""

    def __init__(self, config: Config, *, workers: int = 1,
                 metrics_dir: Path | None = None) -> None:
        """``workers``: processes of this server, each with a view of its own; they share
        one in-memory blob budget (``memory_total_max``) and, in ``metrics_dir``, /metrics.
        """
        self.config = config
        self.store = Store(config.store.path)
        self.keys = load_trusted_keys(config.signing.trusted_keys)
        self.blobs = BlobCache(self.store, config.server.memory_blob_max,
                               config.server.memory_total_max // workers)
        self.catalog: Catalog | None = None
        # The blobs this node must hold to serve the catalog (``must_hold``): all of them,
        # or an edge's channel targets; the others are its cache's.
        self.held_sizes: dict[str, int] = {}
        self.index_problem: IndexProblem | None = None   # none, or not the one on disk
        self.blob_problems: dict[str, str] = {}
        self.confirmed_at: float = 0.0             # last time the index was confirmed current
        self.pull: PullStatus | None = None        # a replica's lag facts
        self.mutated_tags = 0
        # Tags the origin's sync did not publish (state.json): the status page lists them.
        self.refused_tags: tuple[RefusedTag, ...] = ()
        self._index_id: tuple[int, int, int] | None = None
        self._history_body: bytes | None = None   # history.json as last read
        self._history_id: tuple[int, int, int] | None = None
        self._history_rep: tuple[bytes, Catalog, Representation] | None = None
        self._state_id: tuple[int, int, int] | None = None
        self._pull_id: tuple[int, int, int] | None = None
        self._refreshing = threading.Lock()
        # An edge's cache of the blobs it does not pin (shared by the node's processes),
        # its counters as last read, and its blobs for requests (``server.run`` hands in
        # the fill).
        self.edge_cache = EdgeCache(config.store.path, config.edge.cache_size,
                                    gone=self.blobs.forget) \
            if config.role is Role.EDGE else None
        self.edge_stats: EdgeStats | None = None
        self.edge: EdgeBlobs | None = None
        self.metrics: Metrics = create_metrics(
            generated=lambda: self.catalog.index.generated if self.catalog else None,
            now=time.time, replica=lambda: self.pull, edge=lambda: self.edge_stats,
            multiprocess_dir=metrics_dir)

    def refresh(self) -> None:
        """Pick up a new index and local state, re-check blobs (blocking: run in a thread).

        The watcher and an in-process pull loop (right after an install) may both call it.
        """
        with self._refreshing:
            self._refresh_index()
            self._refresh_history()   # a history that changed alone (a replica's repair)
            self._refresh_state()
            self._refresh_pull_status()
            if self.catalog is not None:
                self.blob_problems = self.blobs.check(self.held_sizes)
            if self.edge_cache is not None:
                # The edge's cached blobs held in memory (``edgeblobs``) whose file changed or
                # left the cache since: out, to be read (and hashed) again if still held.
                kept = self.blobs.kept()
                self.blobs.forget(kept - self.edge_cache.verified.unchanged(kept))
                self.edge_stats = self.edge_cache.stats()   # this process's counts added
            self._update_gauges()

    def cached(self, sha256: str) -> bytes | None:
        """A verified blob's bytes held in memory (no I/O: the request path); on an edge,
        one of its cache's (not a pinned channel target) is a hit of the cache."""
        data = self.blobs.cached(sha256)
        if data is not None and self.edge_cache is not None and \
                sha256 not in self.held_sizes:
            self.edge_cache.served(sha256)
        return data

    def scrub(self) -> None:
        if self.catalog is not None:
            self.blob_problems = self.blobs.scrub(self.held_sizes)
        # The edge cache is the node's: one of its processes scrubs it per interval.
        if self.edge_cache is not None and \
                self.edge_cache.counters.scrub_due(self.config.store.scrub_interval):
            self.edge_cache.scrub(self.catalog.blob_sizes() if self.catalog else {})

    def _refresh_index(self) -> None:
        identity = file_identity(self.store.index_path)
        if identity is None:
            self.index_problem = IndexProblem(IndexTrouble.ABSENT if self.catalog is None
                                              else IndexTrouble.DISAPPEARED)
            return
        if identity == self._index_id:
            self.confirmed_at = time.time()
            return
        raw = self.store.read_document() or b""
        # The floor is the highest serial the store's writer recorded, not the serial served
        # here, so an operator's explicit lower-serial override (after a restore) reaches
        # the server, while an older index.json alone is refused.
        try:
            signed = read_trusted_index(self.store, self.keys, now=time.time(), document=raw)
        except IndexRefused as err:
            problem = IndexProblem.refused(err)
            if self.index_problem != problem:
                log.error("index on disk refused (%s), still serving serial %s: %s",
                          err.reason.value, self.catalog.index.serial if self.catalog else None,
                          err)
            self.index_problem = problem
            self._index_id = identity
            return
        # The history after this index was read (the writer puts history.json in place
        # before index.json, so it is at least as long as the index names) and before the
        # index is served, so no request sees the new index with the old history.
        self._refresh_history()
        self.catalog = Catalog(signed.index, raw, self.config.server.channel_max_age)
        self.held_sizes = must_hold(signed.index, self.config.role)
        self._index_id, self.index_problem, self.confirmed_at = identity, None, time.time()
        log.info("serving index serial=%d", signed.serial)

    def _refresh_history(self) -> None:
        identity = file_identity(self.store.history_path)
        if identity == self._history_id:
            return
        try:
            self._history_body = self.store.read_history_bytes()
        except StoreError as err:
            log.error("cannot read the release history: %s", err)
            return
        self._history_id = identity

    def history(self) -> Representation:
        """``/history.json``: the file as on disk (its readers verify it against the index).

        Raises:
            NoIndex: no verified index yet.
            NotFound: the index served carries no history, or the file is missing.
        """
        if self.catalog is None:
            raise NoIndex("the server holds no verified index yet")
        if self.catalog.index.history is None or self._history_body is None:
            raise NotFound("the index served carries no release history")
        rep = self._history_rep
        if rep is None or rep[0] is not self._history_body or rep[1] is not self.catalog:
            rep = (self._history_body, self.catalog,
                   history_representation(self._history_body, self.catalog.index))
            self._history_rep = rep
        return rep[2]

    def _refresh_state(self) -> None:
        identity = file_identity(self.store.state_path)
        if identity != self._state_id:
            self._state_id = identity
            state = self.store.state.load()
            self.mutated_tags = len(state.mutated_tags)
            self.refused_tags = state.refused_tags

    def _refresh_pull_status(self) -> None:
        identity = file_identity(self.store.pull_status_path)
        if identity != self._pull_id:
            self._pull_id = identity
            try:
                self.pull = self.store.load_pull_status()
            except StoreError as err:
                log.warning("cannot read the replica status: %s", err)

    @property
    def last_confirmed(self) -> float:
        """When the index served was last confirmed current (by a pull, on a replica)."""
        return self.pull.confirmed_at if self.pull is not None else self.confirmed_at

    def _update_gauges(self) -> None:
        m = self.metrics
        if self.catalog is not None:
            m.index_serial.set(self.catalog.index.serial)
            m.index_generated.set(self.catalog.index.generated)
            m.index_expires.set(self.catalog.index.expires)
        m.index_confirmed.set(self.last_confirmed)
        m.blobs_unavailable.set(len(self.blob_problems))
        m.memory_bytes.set(self.blobs.memory_bytes)
        m.mutated_tags.set(self.mutated_tags)
        m.refused_tags.set(len(self.refused_tags))
        try:
            disk = shutil.disk_usage(self.store.root)
            m.store_free.set(disk.free)
            m.store_size.set(disk.total)
        except OSError:
            m.store_free.set(float("nan"))
            m.store_size.set(float("nan"))

    def verdict(self) -> Readiness:
        return judge(index=self.catalog.index if self.catalog else None,
                     now=time.time(), index_problem=self.index_problem,
                     blob_problems=self.blob_problems)

    def readiness(self) -> tuple[Readiness, dict[str, Any]]:
        """The verdict with the facts ``/readyz`` and the status page show beside it."""
        verdict = self.verdict()
        now = time.time()
        body: dict[str, Any] = {"ready": verdict.ready, "status": verdict.status,
                                "health": verdict.health.value, "reasons": list(verdict.reasons),
                                "role": self.config.role.value, "serial": None,
                                "history_length": None, "index_age_seconds": None}
        if self.catalog is not None:
            index = self.catalog.index
            # What a redirector compares with the history it serves (DESIGN.md §5): a
            # re-sign adds no entry, so a target is never "behind" for a re-sign alone.
            body.update(serial=index.serial, generated=index.generated,
                        history_length=index.history.length if index.history else 0,
                        expires=index.expires, index_age_seconds=int(now - index.generated),
                        last_confirmed=int(self.last_confirmed),
                        seconds_since_confirmed=int(now - self.last_confirmed))
        if self.blob_problems:
            body["blobs_unavailable"] = len(self.blob_problems)
        if self.config.role.pulls:
            body["upstream"] = self.pull.upstream if self.pull is not None else None
        if self.edge_stats is not None:
            body["edge"] = edge_facts(self.edge_stats)
        if self.pull is not None:
            body["replica"] = {"upstream": self.pull.upstream, "serial": self.pull.serial,
                               "last_pull": int(self.pull.attempted_at),
                               "last_error": self.pull.last_error,
                               "refusals": dict(self.pull.refusals),
                               "refused_at": {reason: int(when) for reason, when
                                              in self.pull.refused_at.items()}}
        return verdict, body


def edge_facts(stats: EdgeStats) -> dict[str, Any]:
    """An edge's cache in ``/readyz``'s body (``status`` and ``check`` read these keys)."""
    return {"cache_bytes": stats.cache_bytes, "cache_limit_bytes": stats.limit_bytes,
            "reserved_bytes": stats.reserved_bytes, "hits": stats.hits,
            "misses": stats.misses, "hit_ratio": round(stats.hit_ratio, 4),
            "upstream_bytes": stats.upstream_bytes, "evictions": stats.evictions,
            "refusals": dict(stats.refusals)}
