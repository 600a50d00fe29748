"""What a front end knows about its store: the verified index, blob health, readiness.

Owns the rule that only a verified index is served (a refused or older one never replaces
it), the blob checks (through ``BlobCache``), the readiness verdict of ``/readyz`` and the
gauges that describe them. Blocking code (stat, read, hash): the server runs ``refresh``
and ``scrub`` in a thread. No aiohttp here.
"""

from __future__ import annotations

import logging
import time

from codecache.blobcache import BlobCache
from codecache.catalog import Catalog
from codecache.config import Config
from codecache.errors import IntegrityError, RollbackError
from codecache.metrics import Metrics, create_metrics
from codecache.signing import load_trusted_keys
from codecache.store import Store, file_identity, parse_document

log = logging.getLogger("codecache.server")


class StoreView:
    """One server's view of its store; replaced piecewise by the watcher, read by handlers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store(config.store.path)
        self.keys = load_trusted_keys(config.signing.trusted_keys)
        self.blobs = BlobCache(self.store, config.server.memory_blob_max,
                               config.server.memory_total_max)
        self.metrics: Metrics = create_metrics()
        self.catalog: Catalog | None = None
        self.index_problem: str | None = None     # the index on disk is refused
        self.blob_problems: dict[str, str] = {}
        self.confirmed_at: float = 0.0             # last time the index was confirmed current
        self.mutated_tags = 0
        self._index_id: tuple[int, int, int] | None = None
        self._state_id: tuple[int, int, int] | None = None
        self.metrics.index_age.set_function(self._index_age)

    def _index_age(self) -> float:
        return time.time() - self.catalog.index.generated if self.catalog else float("nan")

    def refresh(self) -> None:
        """Pick up a new index and local state, re-check blobs (blocking: run in a thread)."""
        self._refresh_index()
        self._refresh_state()
        if self.catalog is not None:
            self.blob_problems = self.blobs.check(self.catalog.blob_sizes())
        self._update_gauges()

    def scrub(self) -> None:
        if self.catalog is not None:
            self.blob_problems = self.blobs.scrub(self.catalog.blob_sizes())

    def _refresh_index(self) -> None:
        identity = file_identity(self.store.index_path)
        if identity is None:
            self.index_problem = "the store has no index yet" if self.catalog is None else \
                "index.json disappeared from the store"
            return
        if identity == self._index_id:
            self.confirmed_at = time.time()
            return
        raw = self.store.read_document() or b""
        try:
            index = parse_document(raw, self.keys)
            if self.catalog is not None and index.serial < self.catalog.index.serial:
                raise RollbackError(f"serial {index.serial} is older than the served "
                                    f"{self.catalog.index.serial}")
        except IntegrityError as err:
            if self.index_problem != str(err):
                log.error("index on disk refused, still serving serial %s: %s",
                          self.catalog.index.serial if self.catalog else None, err)
            self.index_problem = f"index on disk refused: {err}"
            self._index_id = identity
            return
        self.catalog = Catalog(index, raw, self.config.server.channel_max_age)
        self._index_id, self.index_problem, self.confirmed_at = identity, None, time.time()
        log.info("serving index serial=%d", index.serial)

    def _refresh_state(self) -> None:
        identity = file_identity(self.store.state_path)
        if identity != self._state_id:
            self._state_id = identity
            self.mutated_tags = len(self.store.load_state().mutated_tags)

    def _update_gauges(self) -> None:
        m = self.metrics
        if self.catalog is not None:
            m.index_serial.set(self.catalog.index.serial)
            m.index_generated.set(self.catalog.index.generated)
            m.index_expires.set(self.catalog.index.expires)
        m.index_confirmed.set(self.confirmed_at)
        m.blobs_unavailable.set(len(self.blob_problems))
        m.memory_bytes.set(self.blobs.memory_bytes)
        m.mutated_tags.set(self.mutated_tags)

    def readiness(self) -> tuple[int, dict[str, object]]:
        """/readyz: 200 with a verified index and every blob; 503 and the reason otherwise."""
        body: dict[str, object] = {"serial": None, "index_age_seconds": None}
        if self.catalog is not None:
            index = self.catalog.index
            now = time.time()
            body.update(serial=index.serial, generated=index.generated,
                        expires=index.expires, index_age_seconds=int(now - index.generated),
                        last_confirmed=int(self.confirmed_at),
                        seconds_since_confirmed=int(now - self.confirmed_at))
        if self.catalog is None:
            return 503, {**body, "ready": False, "status": self.index_problem or "no index"}
        if self.blob_problems:
            sha256, reason = sorted(self.blob_problems.items())[0]
            return 503, {**body, "ready": False, "status": f"blob {sha256} {reason}",
                         "blobs_unavailable": len(self.blob_problems)}
        if self.index_problem:
            return 503, {**body, "ready": False, "status": self.index_problem}
        if self.catalog.index.expires <= time.time():
            # Pilots must not stop because the origin is away: keep serving, say so.
            return 200, {**body, "ready": True, "status": "degraded: index expired"}
        return 200, {**body, "ready": True, "status": "ok"}
