"""``scripts/bench --quick`` produces a well-formed report (JSON, markdown, PNG) in the
directory it is given and never touches docs/. Timings are never asserted: the numbers of a
quick run on a shared machine mean nothing; only the shape of the report is checked."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_env, require

REPO = Path(__file__).resolve().parents[2]
CASES = ("get_3mb", "get_200kb", "304_100", "304_1000")


def bench(*args: str, timeout: float = 840) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "scripts" / "bench"), *args],
                          capture_output=True, text=True, timeout=timeout, env=cli_env(),
                          check=False)


def docs_state() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((REPO / "docs").glob("benchmark*"))}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    for tool in ("nginx", "wrk", "svnserve", "curl"):
        require(tool)
    before = docs_state()
    out = tmp_path_factory.mktemp("bench") / "report"
    result = bench("--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-5000:]
    assert docs_state() == before, "a --quick run wrote into docs/"
    return out, json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_bench_reports_every_case_for_every_server(
        quick: tuple[Path, dict[str, str], str]) -> None:
    out, printed, stderr = quick
    assert printed["out"] == str(out)
    report: dict[str, Any] = json.loads((out / "benchmark.json").read_text())
    assert report["schema"] == "codecache-bench/1" and report["quick"] is True
    assert set(report["throughput"]) == set(CASES)
    for case in CASES:
        targets = report["throughput"][case]["targets"]
        assert set(targets) == {"nginx", "replica", "vip"}
        for measured in targets.values():
            assert measured["median_rps"] > 0 and measured["ratio"] > 0
            assert len(measured["rps"]) >= 1
            # the server's processes were found and spent CPU on the requests they answered
            assert measured["median_cpu_us"] > 0 and measured["cpu_ratio"] > 0
            assert len(measured["cpu_us"]) == len(measured["rps"])
        assert targets["nginx"]["ratio"] == 1.0 and targets["nginx"]["cpu_ratio"] == 1.0
    slow, burst = report["slow"], report["burst"]
    assert slow["pilots"] == 200 and slow["held_at_once"] >= 1
    assert slow["replica_rss_peak_max"] > 0
    assert {"replica-1", "nginx"} <= set(slow["rss_peak"])
    assert burst["pilots"] == 100 and burst["rounds"]
    assert all(r["requests"] == 100 for r in burst["rounds"])
    # the VIP had to fetch the moved channel from a replica: the access-log count sees it
    assert all(r["upstream_total"] >= 1 for r in burst["rounds"]), burst
    assert burst["generator"]["loadgen_rps"] > 0 and burst["generator"]["wrk_close_rps"] > 0
    assert report["sync_path"]["publish_median_s"] > 0
    assert report["sync_path"]["export_tar_median_s"] > 0
    assert report["propagation"]["rounds"] == 2
    redirect = report["redirect"]
    assert set(redirect["cases"]) == {"302_site", "304_direct", "304_no_sites"}
    assert all(c["median_rps"] > 0 and c["errors"] == 0 for c in redirect["cases"].values())
    assert set(redirect["vip"]["cases"]) == {"302_site", "304_direct"}
    assert all(c["median_rps"] > 0 and c["errors"] == 0
               for c in redirect["vip"]["cases"].values())
    hit, disk = report["edge_hit"], report["edge_disk"]
    assert set(hit["cases"]) == {"get_200kb", "304_200kb", "get_200kb_pinned"}
    for case in hit["cases"].values():
        assert set(case["targets"]) == {"replica", "edge"}
        assert all(t["median_rps"] > 0 and t["errors"] == 0 for t in case["targets"].values())
        assert case["rps_edge_over_replica"] > 0 and case["cpu_edge_over_replica"] > 0
    assert disk["releases"] == 15 and disk["requests"] == 30 and disk["failed"] == 0
    assert disk["cache_size"] == disk["release_bytes"] // 3
    assert disk["samples"] > 0 and disk["peak_blob_bytes"] > 0
    assert disk["edge_cache"]["evictions"] > 0    # the stream was bigger than the bound
    # git: a first sync of the quick repository's 20 tags, then one new tag per round, each
    # against its git baseline, both sides having done the work
    git = report["git_sync"]
    assert git["tags"] == 20 and git["files"] == 200
    assert git["first_sync"]["rounds"] == 1 and git["one_tag"]["rounds"] == 2
    for case in (git["first_sync"], git["one_tag"]):
        assert all(case[f"{k}_median_s"] > 0 for k in ("codecache", "codecache_cpu",
                                                        "baseline", "baseline_cpu"))
        assert case["ratio"] > 0 and case["cpu_ratio"] > 0
    assert git["tarball_median_bytes"] > 0 and git["baseline_tarball_median_bytes"] > 0
    # 13, the git source's two (first sync, one new tag) and the cold burst's two (failed
    # pilots, edge upstream bytes over the blob)
    assert len(report["verdicts"]) == 17
    assert all(isinstance(v["met"], bool) for v in report["verdicts"])
    # the progress of every step went to stderr
    for step in ("setting up", "sync path", "git first sync", "git one new tag", "throughput",
                 "a redirect's cost", "slow pilots", "publish burst", "propagation", "done in"):
        assert step in stderr, step


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_bench_writes_markdown_that_shows_the_plot(
        quick: tuple[Path, dict[str, str], str]) -> None:
    out, _, _ = quick
    text = (out / "benchmark.md").read_text()
    assert text.startswith("# Benchmark")
    assert "--quick" in text and "![benchmark](benchmark.png)" in text
    for heading in ("## Targets", "## Throughput (wrk)", "slow pilots through the VIP",
                    "## Publish burst", "## A redirect's cost", "## An edge's hit",
                    "## An edge's disk", "## Sync path", "## Git: a first sync",
                    "## Propagation of a publish",
                    "## Commands"):
        assert heading in text, heading
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) >= 2 + 15 + 2 + 4 + 2 + 4 + 2 + 1 + 2 + 2
    assert "µs/request nginx / replica / VIP" in text
    assert all(row.endswith("|") for row in rows)
    assert "wrk -t1" in text and "scripts/cluster up" in text


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_bench_draws_a_png(quick: tuple[Path, dict[str, str], str]) -> None:
    out, _, _ = quick
    data = (out / "benchmark.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 300


def test_quick_bench_refuses_to_write_over_docs() -> None:
    before = docs_state()
    result = bench("--quick", "--out", str(REPO / "docs"), timeout=600)
    assert result.returncode != 0
    assert "never writes over docs" in result.stderr
    assert docs_state() == before


def test_a_rewritten_report_keeps_the_sections_written_by_hand() -> None:
    import sys
    sys.path.insert(0, str(REPO / "scripts"))
    import benchreport

    old = "# Benchmark\n\n## Targets\n| a |\n\n## Scale\nsvn numbers\n\n## Commands\nx\n"
    assert benchreport.hand_written(old).strip() == "## Scale\nsvn numbers"
    marked = f"# Benchmark\n\n## Targets\n{benchreport.KEPT}\n\n## Notes\nkeep\n"
    assert benchreport.hand_written(marked).strip() == "## Notes\nkeep"
    assert benchreport.hand_written("# Benchmark\n\n## 200 slow pilots through the VIP\nx\n") \
        == ""
