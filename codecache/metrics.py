"""Prometheus instruments of one server, in a registry of its own (no global state).

Owns metric names and labels; the server updates them, ``/metrics`` renders them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST


# Routes that serve files, where a 304 saves a download.
FILE_ROUTES = frozenset({"channel", "release", "signature", "checksum", "blob", "index"})


@dataclass(slots=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    response_bytes: Counter
    in_flight: Gauge
    index_serial: Gauge
    index_generated: Gauge
    index_age: Gauge
    index_expires: Gauge
    index_confirmed: Gauge
    blobs_unavailable: Gauge
    memory_bytes: Gauge
    mutated_tags: Gauge
    not_modified_ratio: Gauge
    store_free: Gauge
    store_size: Gauge
    file_requests: int = 0
    not_modified: int = 0

    def count(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()
        if route in FILE_ROUTES:
            self.file_requests += 1
            self.not_modified += status == 304

    def ratio_not_modified(self) -> float:
        return self.not_modified / self.file_requests if self.file_requests else 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)


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


class ReplicaCollector(Collector):
    """The pull loop's counters, read from its status file on every scrape.

    The loop may run in another process (``codecache replicate``), so its counters travel
    through ``replica.json`` rather than this process's registry; a restart of the loop
    resets them, which Prometheus' ``rate()`` handles as any counter reset.
    """

    def __init__(self, facts: Callable[[], PullFacts | None], now: Callable[[], float]) -> None:
        self._facts = facts
        self._now = now

    def collect(self) -> Iterator[Metric]:
        facts = self._facts()
        if facts is None:
            return
        yield _counter("codecache_replica_refusals", "Upstream indexes (or bodies in their "
                       "place) refused, by reason", "reason", facts.refusals)
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


def create_metrics() -> Metrics:
    r = CollectorRegistry(auto_describe=True)
    metrics = Metrics(
        registry=r,
        requests=Counter("codecache_http_requests", "HTTP requests by route and status "
                         "(304 ratio: status=\"304\" over all)", ["route", "status"],
                         registry=r),
        response_bytes=Counter("codecache_http_response_bytes", "Body bytes sent by route",
                               ["route"], registry=r),
        in_flight=Gauge("codecache_http_in_flight_requests", "Requests being served",
                        registry=r),
        index_serial=Gauge("codecache_index_serial", "Serial of the index being served",
                           registry=r),
        index_generated=Gauge("codecache_index_generated_timestamp_seconds",
                              "When the served index was signed", registry=r),
        index_age=Gauge("codecache_index_age_seconds", "Seconds since the served index was "
                        "signed", registry=r),
        index_expires=Gauge("codecache_index_expires_timestamp_seconds",
                            "When the served index expires", registry=r),
        index_confirmed=Gauge("codecache_index_confirmed_timestamp_seconds",
                              "Last time the served index was confirmed current", registry=r),
        blobs_unavailable=Gauge("codecache_blobs_unavailable",
                                "Listed blobs missing or corrupt on disk", registry=r),
        memory_bytes=Gauge("codecache_blob_memory_bytes", "Verified blob bytes held in memory",
                           registry=r),
        mutated_tags=Gauge("codecache_mutated_tags",
                           "Published tags that changed in Subversion afterwards", registry=r),
        not_modified_ratio=Gauge("codecache_http_not_modified_ratio",
                                 "Share of file requests answered 304 since start", registry=r),
        store_free=Gauge("codecache_store_free_bytes", "Bytes available to the server on the "
                         "file system of the store", registry=r),
        store_size=Gauge("codecache_store_filesystem_size_bytes", "Size of the file system "
                         "of the store", registry=r),
    )
    metrics.not_modified_ratio.set_function(metrics.ratio_not_modified)
    return metrics
