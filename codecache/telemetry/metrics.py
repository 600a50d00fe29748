"""Prometheus instruments of one server, in a registry of its own (no global state).

Owns metric names and labels; the server updates them, ``/metrics`` renders them. A server
of several worker processes keeps them in prometheus_client's multiprocess files, so
``/metrics`` from any worker counts the whole server.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST


# Routes that serve files, where a 304 saves a download.
FILE_ROUTES = frozenset({"channel", "release", "signature", "checksum", "blob", "index"})


@dataclass(slots=True)
class Metrics:
    """The instruments of one server process, and the tallies the request path keeps.

    The request path only adds to plain ints (``count``, ``started``/``finished``): a
    Prometheus child ``inc()`` costs 0.45 us in-process and 1.8 us in multiprocess mode, a
    dict add 0.12 us. ``flush`` moves the tallies into the instruments: the server calls it
    on the event loop (the tallies are not locked) every watch tick (0.25 s) and before it
    renders ``/metrics``. A worker killed with SIGKILL loses at most one tick of counts.
    """

    source: Collector
    requests: Counter
    response_bytes: Counter
    in_flight: Gauge
    index_serial: Gauge
    index_generated: Gauge
    index_expires: Gauge
    index_confirmed: Gauge
    blobs_unavailable: Gauge
    memory_bytes: Gauge
    mutated_tags: Gauge
    refused_tags: Gauge
    store_free: Gauge
    store_size: Gauge
    redirects: Counter        # labels: site, target (DESIGN.md §5)
    redirect_direct: Counter  # labels: site, reason: a site's client served directly
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(
        auto_describe=True))
    in_flight_now: int = 0
    _tally: dict[tuple[str, int], int] = field(default_factory=dict)
    _bytes: dict[str, int] = field(default_factory=dict)

    def count(self, route: str, status: int, body_bytes: int) -> None:
        key = (route, status)
        tally = self._tally
        tally[key] = tally.get(key, 0) + 1
        if body_bytes:
            self._bytes[route] = self._bytes.get(route, 0) + body_bytes
        if route not in FILE_ROUTES:
            # Probes, scrapes, errors: rare, and a probe must count at once, so any
            # worker's next /metrics shows it (files wait for the tick: the hot path).
            self.flush()

    def flush(self) -> None:
        """Move the request tallies into the (possibly shared) instruments."""
        tally, self._tally = self._tally, {}
        for (route, status), n in tally.items():
            self.requests.labels(route, str(status)).inc(n)
        sent, self._bytes = self._bytes, {}
        for route, n in sent.items():
            self.response_bytes.labels(route).inc(n)
        self.in_flight.set(self.in_flight_now)

    def render(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)


class _WorkerFiles(MultiProcessCollector):
    """Every worker's instruments, from their prometheus_client files, but those not sized
    yet: a worker creates its file empty and then sizes it, and a scrape (or the next
    worker's start, which collects once to register) reading it in between would fail
    with ``struct.error`` (prometheus_client 0.26). Such a file holds nothing yet."""

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in Path(self._path).glob("*.db"):
            with contextlib.suppress(FileNotFoundError):  # a dead worker's, just removed
                if path.stat().st_size >= _SIZED:
                    files.append(str(path))
        merged: Iterable[Metric] = self.merge(  # type: ignore[no-untyped-call]
            files, accumulate=True)
        return merged


# A sized file starts with its 4-byte "bytes used" and 4 bytes of padding.
_SIZED = 8


class _Derived(Collector):
    """The instruments (this process's, or every worker's) plus what is derived at scrape.

    ``codecache_http_not_modified_ratio`` comes from the summed request counter, so it
    covers every worker; ``codecache_index_age_seconds`` from the served index's time.
    """

    def __init__(self, source: Collector, generated: Callable[[], float | None],
                 now: Callable[[], float]) -> None:
        self._source = source
        self._generated = generated
        self._now = now

    def collect(self) -> Iterator[Metric]:
        file_requests = not_modified = 0.0
        for metric in self._source.collect():
            if metric.name == "codecache_http_requests":
                for sample in metric.samples:
                    if sample.name.endswith("_total") and \
                            sample.labels.get("route") in FILE_ROUTES:
                        file_requests += sample.value
                        not_modified += sample.value * (sample.labels.get("status") == "304")
            yield metric
        yield _gauge("codecache_http_not_modified_ratio", "Share of file requests answered "
                     "304 since start", not_modified / file_requests if file_requests else 0.0)
        generated = self._generated()
        yield _gauge("codecache_index_age_seconds", "Seconds since the served index was "
                     "signed", self._now() - generated if generated is not None
                     else float("nan"))


class PullFacts(Protocol):
    """What a replica's pull loop reports (``store.PullStatus``), as /metrics needs it."""

    @property
    def upstream(self) -> str | None: ...
    @property
    def serial(self) -> int: ...
    @property
    def confirmed_at(self) -> float: ...
    @property
    def attempted_at(self) -> float: ...
    @property
    def refusals(self) -> Mapping[str, int]: ...
    @property
    def errors(self) -> Mapping[str, int]: ...
    @property
    def pulls(self) -> Mapping[str, int]: ...
    @property
    def blobs_fetched(self) -> int: ...
    @property
    def refused_at(self) -> Mapping[str, float]: ...


class EdgeFacts(Protocol):
    """An edge's cache, summed over the node's processes (``store.EdgeStats``)."""

    @property
    def cache_bytes(self) -> int: ...
    @property
    def limit_bytes(self) -> int: ...
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def upstream_bytes(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    @property
    def refusals(self) -> Mapping[str, int]: ...


class EdgeCollector(Collector):
    """An edge's cache (DESIGN.md §5): counters and gauges of the whole node, one value
    each however many workers (they live in the cache's shared store, read every watch
    tick), not per process."""

    def __init__(self, facts: Callable[[], EdgeFacts | None]) -> None:
        self._facts = facts

    def collect(self) -> Iterator[Metric]:
        facts = self._facts()
        if facts is None:
            return
        yield _gauge("codecache_edge_cache_bytes", "Blob bytes the edge holds, channel "
                     "targets included", facts.cache_bytes)
        yield _gauge("codecache_edge_cache_limit_bytes", "The edge's cache bound "
                     "([edge] cache_size)", facts.limit_bytes)
        for name, doc, value in (
                ("codecache_edge_hits", "Blob answers from the edge cache (channel targets, "
                 "always held, not counted)", facts.hits),
                ("codecache_edge_misses", "Blob answers that waited for a fill from upstream",
                 facts.misses),
                ("codecache_edge_upstream_bytes", "Blob bytes read from upstream",
                 facts.upstream_bytes),
                ("codecache_edge_evictions", "Blobs evicted from the edge cache",
                 facts.evictions)):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family


class ReplicaCollector(Collector):
    """The pull loop's counters, read from its status file on every scrape.

    The loop may run in another process (``codecache replicate``), so its counters travel
    through ``replica.json`` rather than this process's registry; a restart of the loop
    resets them, which Prometheus' ``rate()`` handles as any counter reset. An edge's fills
    refuse bytes too: their refusals are added to the pull loop's, by reason.
    """

    def __init__(self, facts: Callable[[], PullFacts | None], now: Callable[[], float],
                 edge: Callable[[], EdgeFacts | None] = lambda: None) -> None:
        self._facts = facts
        self._now = now
        self._edge = edge

    def collect(self) -> Iterator[Metric]:
        facts = self._facts()
        edge = self._edge()
        refusals = collections.Counter(facts.refusals if facts is not None else {})
        refusals.update(edge.refusals if edge is not None else {})
        if facts is None and not refusals:
            return
        yield _counter("codecache_replica_refusals", "Upstream indexes (or bodies in their "
                       "place) refused, by reason", "reason", refusals)
        if facts is None:
            return
        yield _counter("codecache_replica_upstream_errors", "Upstream transport failures, by "
                       "kind", "reason", facts.errors)
        yield _counter("codecache_replica_pulls", "Pulls, by result", "result", facts.pulls)
        fetched = CounterMetricFamily("codecache_replica_blobs_fetched",
                                      "Blobs fetched from upstreams")
        fetched.add_metric([], facts.blobs_fetched)
        yield fetched
        info = GaugeMetricFamily("codecache_replica_upstream_info", "The upstream the held "
                                 "index was last confirmed from", labels=["upstream"])
        info.add_metric([facts.upstream or ""], 1)
        yield info
        last = GaugeMetricFamily("codecache_replica_last_refusal_timestamp_seconds",
                                 "When an upstream index was last refused, by reason",
                                 labels=["reason"])
        for reason, when in sorted(facts.refused_at.items()):
            last.add_metric([reason], when)
        yield last
        yield _gauge("codecache_replica_serial", "Serial held by the pull loop", facts.serial)
        yield _gauge("codecache_replica_last_pull_timestamp_seconds", "Last pull attempt",
                     facts.attempted_at)
        lag = self._now() - facts.confirmed_at if facts.confirmed_at else float("nan")
        yield _gauge("codecache_replica_lag_seconds", "Seconds since a pull last confirmed "
                     "the held index current", lag)


def _counter(name: str, doc: str, label: str, values: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _gauge(name: str, doc: str, value: float) -> Metric:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def create_metrics(*, generated: Callable[[], float | None], now: Callable[[], float],
                   replica: Callable[[], PullFacts | None],
                   edge: Callable[[], EdgeFacts | None] = lambda: None,
                   multiprocess_dir: Path | None = None) -> Metrics:
    """The instruments of one server process.

    ``multiprocess_dir``: the server runs several worker processes; the instruments live
    in prometheus_client's multiprocess files there (the worker must have been started
    with ``PROMETHEUS_MULTIPROC_DIR`` set to it) and ``/metrics`` of any worker sums them.
    """
    own = CollectorRegistry(auto_describe=True)
    target = own if multiprocess_dir is None else None
    metrics = Metrics(
        source=own if multiprocess_dir is None else _WorkerFiles(
            None, path=str(multiprocess_dir)),  # type: ignore[no-untyped-call]
        requests=Counter("codecache_http_requests", "HTTP requests by route and status "
                         "(304 ratio: status=\"304\" over all)", ["route", "status"],
                         registry=target),
        response_bytes=Counter("codecache_http_response_bytes", "Body bytes sent by route",
                               ["route"], registry=target),
        in_flight=Gauge("codecache_http_in_flight_requests", "Requests being served",
                        registry=target, multiprocess_mode="livesum"),
        index_serial=Gauge("codecache_index_serial", "Serial of the index being served",
                           registry=target, multiprocess_mode="livemostrecent"),
        index_generated=Gauge("codecache_index_generated_timestamp_seconds",
                              "When the served index was signed", registry=target,
                              multiprocess_mode="livemostrecent"),
        index_expires=Gauge("codecache_index_expires_timestamp_seconds",
                            "When the served index expires", registry=target,
                            multiprocess_mode="livemostrecent"),
        index_confirmed=Gauge("codecache_index_confirmed_timestamp_seconds",
                              "Last time the served index was confirmed current",
                              registry=target, multiprocess_mode="livemax"),
        blobs_unavailable=Gauge("codecache_blobs_unavailable",
                                "Listed blobs missing or corrupt on disk", registry=target,
                                multiprocess_mode="livemostrecent"),
        memory_bytes=Gauge("codecache_blob_memory_bytes", "Verified blob bytes held in memory "
                           "(all workers)", registry=target, multiprocess_mode="livesum"),
        mutated_tags=Gauge("codecache_mutated_tags",
                           "Published tags that changed in their source afterwards",
                           registry=target, multiprocess_mode="livemostrecent"),
        refused_tags=Gauge("codecache_refused_tags",
                           "New tags not published: their tree is unsafe or cannot be archived",
                           registry=target, multiprocess_mode="livemostrecent"),
        store_free=Gauge("codecache_store_free_bytes", "Bytes available to the server on the "
                         "file system of the store", registry=target,
                         multiprocess_mode="livemostrecent"),
        store_size=Gauge("codecache_store_filesystem_size_bytes", "Size of the file system "
                         "of the store", registry=target, multiprocess_mode="livemostrecent"),
        redirects=Counter("codecache_redirects", "Tarball requests redirected to a site's "
                          "edge, by site and target", ["site", "target"], registry=target),
        redirect_direct=Counter("codecache_redirect_direct", "Tarball requests of a site's "
                                "clients served directly, by site and reason "
                                "(target_not_ready, target_behind)", ["site", "reason"],
                                registry=target),
    )
    metrics.registry.register(_Derived(metrics.source, generated, now))
    metrics.registry.register(ReplicaCollector(replica, now, edge))
    metrics.registry.register(EdgeCollector(edge))
    return metrics
