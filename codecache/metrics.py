"""Prometheus instruments of one server, in a registry of its own (no global state).

Owns metric names and labels; the server updates them, ``/metrics`` renders them.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
    )
    metrics.not_modified_ratio.set_function(metrics.ratio_not_modified)
    return metrics
