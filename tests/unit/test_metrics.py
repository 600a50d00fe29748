"""The server's instruments with several workers: prometheus_client's multiprocess files,
read from a real directory."""

from __future__ import annotations

from pathlib import Path

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
