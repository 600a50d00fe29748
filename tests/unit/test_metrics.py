"""The server's instruments with several workers: prometheus_client's multiprocess files,
read from a real directory."""

from __future__ import annotations

from pathlib import Path

from codecache.store.edgestats import EdgeStats
from codecache.telemetry.metrics import create_metrics


def test_a_file_a_starting_worker_has_not_sized_yet_is_skipped(tmp_path: Path) -> None:
    # prometheus_client creates a worker's file empty, then sizes it: a worker starting at
    # that moment (it collects once to register) or a scrape must not fail on it.
    (tmp_path / "counter_4242.db").write_bytes(b"")
    (tmp_path / "gauge_livesum_4242.db").write_bytes(b"")
    metrics = create_metrics(generated=lambda: None, now=lambda: 0.0, replica=lambda: None,
                             multiprocess_dir=tmp_path)
    text = metrics.render().decode()
    assert "codecache_http_not_modified_ratio 0.0" in text
    assert "codecache_index_age_seconds NaN" in text


def test_an_edges_cache_is_one_value_per_node_and_its_refusals_count_as_a_replicas(
        tmp_path: Path) -> None:
    stats = EdgeStats(cache_bytes=300, limit_bytes=1000, reserved_bytes=100, hits=7,
                      misses=3, upstream_bytes=250, evictions=2,
                      refusals={"blob_mismatch": 4})
    metrics = create_metrics(generated=lambda: None, now=lambda: 0.0, replica=lambda: None,
                             edge=lambda: stats, multiprocess_dir=tmp_path)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in metrics.registry.collect() for s in family.samples}
    assert samples[("codecache_edge_cache_bytes", ())] == 300
    assert samples[("codecache_edge_cache_limit_bytes", ())] == 1000
    assert samples[("codecache_edge_hits_total", ())] == 7
    assert samples[("codecache_edge_misses_total", ())] == 3
    assert samples[("codecache_edge_upstream_bytes_total", ())] == 250
    assert samples[("codecache_edge_evictions_total", ())] == 2
    assert samples[("codecache_replica_refusals_total", (("reason", "blob_mismatch"),))] == 4
