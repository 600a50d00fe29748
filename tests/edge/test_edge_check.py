"""How an edge reports itself: ``status``, ``codecache check`` (local and ``--url``).

Real processes: a served origin, edges (``codecache serve`` with ``role = "edge"``), wget as
the pilot, the real CLI. DESIGN.md §5/§6: ``status`` and ``check`` report the edge's cache
(bytes and bound, hit ratio, upstream bytes, evictions) and its lag like a replica's; the
channel targets alone beyond ``[edge] cache_size`` are kept and ``check`` warns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codecache.core.names import etag_for
from tests.check.conftest import Checked, check
from tests.conftest import Origin, copy_origin, run_cli
from tests.edge.conftest import channel_target, start_edge
from tests.harness.clients import wget
from tests.http.helpers import Server, release_info, running
from tests.replica.conftest import readyz, write_replica_config


def status(edge: Server, *args: str) -> tuple[int, str]:
    result = run_cli("status", *args, config=edge.origin.config)
    assert result.returncode == 0, result.stderr
    return result.returncode, result.stdout


@pytest.fixture(scope="module")
def edge(edge_origin: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An edge of the module's origin that a pilot asked for one release twice."""
    edge = start_edge(tmp_path_factory.mktemp("edge-check") / "edge", edge_origin.origin,
                      [edge_origin.base])
    try:
        other = next(v for v in ("1.0.0", "1.2.0") if v != channel_target(edge_origin))
        workdir = tmp_path_factory.mktemp("pilot")
        for n in range(2):   # a miss (filled from the origin), then a hit
            got = wget("-O", f"pilot{n}.tar.gz",
                       edge.url(f"/{edge_origin.package}/releases/{other}.tar.gz"),
                       cwd=workdir)
            assert got.returncode == 0, got.stderr
        edge.wait_for("the lag facts are written",
                      lambda: readyz(edge)["replica"]["upstream"] == edge_origin.base, 10)
        yield edge
    finally:
        edge.stop()


def cache_facts(edge_origin: Server) -> dict[str, int]:
    """What the edge of ``edge`` must report: the target pinned, one release filled."""
    target = release_info(edge_origin.origin, channel_target(edge_origin))
    other = next(v for v in ("1.0.0", "1.2.0") if v != channel_target(edge_origin))
    filled = release_info(edge_origin.origin, other)
    return {"reserved_bytes": target["size"], "cache_limit_bytes": 10_000_000,
            "cache_bytes": target["size"] + filled["size"], "hits": 1, "misses": 1,
            "upstream_bytes": target["size"] + filled["size"], "evictions": 0}


def test_status_reports_the_edge_cache_and_its_upstream(edge: Server,
                                                        edge_origin: Server) -> None:
    _, text = status(edge, "--json")
    local: dict[str, Any] = json.loads(text)["local"]
    assert local["role"] == "edge"
    assert local["replica"]["upstream"] == edge_origin.base
    assert local["replica"]["seconds_since_confirmed"] <= 30
    expected = cache_facts(edge_origin)
    assert {k: local["edge"][k] for k in expected} == expected
    assert local["edge"]["hit_ratio"] == 0.5
    assert local["edge"]["channel_targets_over_limit"] is False
    _, text = status(edge)
    assert f"edge of {edge_origin.base}: serial" in text
    assert (f"edge cache {expected['cache_bytes']} of 10000000 bytes (channel targets "
            f"{expected['reserved_bytes']} bytes, never evicted), hit ratio 50.0% (1 hits, "
            f"1 misses), {expected['upstream_bytes']} bytes from upstream, 0 evictions") in text


def perf_of(result: Checked) -> dict[str, float]:
    return {label: result.value(label) for label in result.perfdata}


def test_check_reports_the_edge_cache_and_lag_locally_and_over_http(
        edge: Server, edge_origin: Server) -> None:
    expected = cache_facts(edge_origin)
    for where in (("--url", edge.base), ()):
        result = check(*where, config=edge.origin.config)
        assert result.state == "OK", result.stdout
        assert "edge serving serial" in result.message and "hit ratio 50%" in result.message
        perf = perf_of(result)
        assert perf["edge_cache"] == expected["cache_bytes"], where
        assert perf["edge_channel_targets"] == expected["reserved_bytes"]
        assert perf["edge_hit_ratio"] == 0.5
        assert perf["edge_upstream_bytes"] == expected["upstream_bytes"]
        assert perf["edge_evictions"] == 0
        assert 0 <= perf["lag"] <= 30
        assert "refusals_rollback" in perf and "mutated_tags" not in perf


def test_an_edge_that_lost_its_upstream_lags_like_a_replica(template_origin: Origin,
                                                             tmp_path: Path) -> None:
    with running(copy_origin(template_origin, tmp_path / "origin")) as upstream:
        edge = start_edge(tmp_path / "edge", upstream.origin, [upstream.base])
    try:
        edge.wait_for("the edge has not confirmed its index for 2 s",
                      lambda: readyz(edge)["seconds_since_confirmed"] >= 2, 15)
        result = check("--url", edge.base, "--lag-warning", "1s", config=edge.origin.config)
        assert result.state == "WARNING", result.stdout
        assert "edge lags" in result.message and upstream.base in result.message
        assert readyz(edge)["ready"]                 # it serves what it holds
    finally:
        edge.stop()


def test_channel_targets_beyond_the_cache_size_are_kept_and_check_warns(
        edge_origin: Server, tmp_path: Path) -> None:
    target = release_info(edge_origin.origin, channel_target(edge_origin))
    bound = target["size"] - 1
    edge = start_edge(tmp_path / "edge", edge_origin.origin, [edge_origin.base],
                      cache_size=bound)
    try:
        # Kept and served: the bound never evicts a channel target.
        assert (edge.origin.store / "blobs" / "sha256" / target["sha256"]).exists()
        reply = edge.request(f"/{edge_origin.package}/latest.tar.gz")
        assert reply.status == 200 and reply.headers["etag"] == etag_for(target["sha256"])
        edge.wait_for("the edge's /readyz tells its reserve",
                      lambda: readyz(edge)["edge"]["reserved_bytes"] == target["size"], 10)
        for where in (("--url", edge.base), ()):
            result = check(*where, config=edge.origin.config)
            assert result.state == "WARNING", (where, result.stdout)
            assert "channel targets take" in result.message and "cache_size" in result.message
        _, text = status(edge)
        assert "WARNING: the channel targets alone exceed [edge] cache_size" in text
    finally:
        edge.stop()


def test_a_damaged_cache_database_leaves_status_readable_and_check_unknown(
        edge_origin: Server, tmp_path: Path) -> None:
    """status is for anyone: the rest of it is printed; check cannot decide: UNKNOWN."""
    config = write_replica_config(tmp_path / "edge", edge_origin.origin.public_key,
                                  [edge_origin.base], role="edge",
                                  edge={"cache_size": "10MB"})
    assert run_cli("replicate", "--once", config=config).returncode == 0
    database = tmp_path / "edge" / "store" / "edge-cache" / "stats" / "cache.db"
    database.write_bytes(b"not a database" * 100)
    result = run_cli("status", config=config)
    assert result.returncode == 0, result.stderr
    assert "edge cache: the edge cache in" in result.stdout and "cannot be read" in \
        result.stdout
    assert "package " in result.stdout
    checked = run_cli("check", "--no-upstream", config=config)
    assert checked.returncode == 3, (checked.stdout, checked.stderr)
    assert "cannot be read" in checked.stdout + checked.stderr
