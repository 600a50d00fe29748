"""The cold burst of scripts/bench: a site's pilots right after a publish, through the VIP.

``scripts/cluster up --origin-config ORIGIN --site bench=127.0.0.2/32``: the origin, three
replicas redirecting the site to its edge (``role = "edge"``, its upstream the VIP), the
VIP's nginx. Each round commits a new ~200 KB tag to the bench's Subversion repository and
publishes it (``codecache sync --once --package pilot``: ``latest`` moves to it, a blob the
edge has never held); as soon as every replica serves it, 1,000 pilots of the site (quick:
200), each a new connection from 127.0.0.2 at a uniformly random moment within 1 s, fetch
``/pilot/latest.tar.gz`` through the VIP and follow the redirect (the edge, or the VIP's
own answer while the edge is still fetching the new blob), every body checked against its
ETag. Measured: failed and corrupted pilots, the versions served, the pilots' p50/p99
(from their scheduled moment to the last byte), how many were redirected, the blob bytes
the edge read from its upstream (``codecache_edge_upstream_bytes_total``: ≈ one blob) and
the requests the replicas saw for the channel URL (their access logs).

The pilots are one asyncio process of this script (aiohttp, a connector bound to the
site's address), on the same cores as the servers: its own CPU time is reported beside.
``scripts/bench --only cold-burst`` runs it alone; the full run puts it in the report, last
(it moves ``latest``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import bench  # the running scripts/bench.py (it registers itself under this name)

SITE_ADDRESS = "127.0.0.2"
PATH = "/pilot/latest.tar.gz"
TAG_BYTES = 200 << 10


def _edge_upstream_bytes(edge: str) -> int:
    text = bench.run(["curl", "-fsS", f"{edge}/metrics"]).stdout
    return sum(int(float(line.split()[-1])) for line in text.splitlines()
               if line.startswith("codecache_edge_upstream_bytes_total"))


def new_tag(origin: bench.Origin, version: str, seed: int) -> None:
    """Commit ~200 KB of new data to the pilot's trunk and tag it ``version`` (not synced)."""
    wc = origin.work / "svn" / "wc"
    data = random.Random(seed).randbytes(TAG_BYTES)  # noqa: S311 (test data, not secrets)
    (wc / "lib" / "pilot" / "data.bin").write_bytes(data)
    bench.svn("commit", "-q", "-m", f"pilot {version}", str(wc))
    bench.svn("copy", "-q", "-m", f"tag {version}", f"{origin.root}/pilot/trunk",
              f"{origin.root}/pilot/tags/{version}")


async def _pilots(url: str, count: int, within: float, seed: int) -> list[dict[str, Any]]:
    """``count`` pilots from the site's address at random moments within ``within`` s."""
    rng = random.Random(seed)  # noqa: S311 (arrival times, not secrets)
    moments = sorted(rng.uniform(0, within) for _ in range(count))
    connector = aiohttp.TCPConnector(limit=0, force_close=True, local_addr=(SITE_ADDRESS, 0))
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.monotonic() + 0.05

        async def pilot(moment: float) -> dict[str, Any]:
            await asyncio.sleep(max(0.0, start + moment - time.monotonic()))
            begun = start + moment
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    etag = response.headers.get("ETag", "")
                    digest = hashlib.sha256(body).hexdigest()
                    return {"status": response.status, "ms": (time.monotonic() - begun) * 1000,
                            "ok": response.status == 200 and etag == f'"sha256-{digest}"',
                            "version": response.headers.get("X-Codecache-Version"),
                            "redirected": bool(response.history)}
            except (TimeoutError, aiohttp.ClientError) as err:
                return {"status": 0, "ms": (time.monotonic() - begun) * 1000, "ok": False,
                        "version": None, "redirected": False, "error": type(err).__name__}

        return list(await asyncio.gather(*(pilot(m) for m in moments)))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _vip_answers(access_log: Path, offset: int) -> tuple[int, int]:
    """(200 answers, body bytes) the VIP sent the site's clients for PATH since ``offset``:
    what crossed the WAN besides the edge's own fetch."""
    with access_log.open("rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode(errors="replace").splitlines()
    answers = total = 0
    for line in lines:
        match = re.search(rf'"GET {re.escape(PATH)} HTTP/[0-9.]+" 200 (\d+) .* site=bench$', line)
        if match:
            answers += 1
            total += int(match[1])
    return answers, total


def _burst(cluster: dict[str, Any], pilots: int, seed: int, edge_bytes_before: int
           ) -> dict[str, Any]:
    """``pilots`` site pilots within 1 s, with what they cost upstream (the edge's bytes
    since ``edge_bytes_before``, read before the publish: its prefetch included)."""
    cluster_dir = Path(cluster["dir"])
    access_log = Path(cluster["nginx"]["prefix"]) / "logs" / "access.log"
    edge = cluster["edges"]["bench"]["url"]
    before = bench.replica_requests(cluster_dir, PATH)
    offset = access_log.stat().st_size
    cpu = _cpu()
    results = asyncio.run(_pilots(cluster["vip"] + PATH, pilots, 1.0, seed))
    cpu = _cpu() - cpu
    time.sleep(1.5)   # the access log lines of the last requests
    upstream = {r: c - before.get(r, 0)
                for r, c in bench.replica_requests(cluster_dir, PATH).items()}
    direct, direct_bytes = _vip_answers(access_log, offset)
    latencies = sorted(r["ms"] for r in results)
    versions: dict[str, int] = {}
    for r in results:
        versions[str(r["version"])] = versions.get(str(r["version"]), 0) + 1
    return {"pilots": pilots, "failed": sum(r["status"] != 200 for r in results),
            "corrupted": sum(r["status"] == 200 and not r["ok"] for r in results),
            "versions": versions, "redirected": sum(r["redirected"] for r in results),
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)],
            "max_ms": latencies[-1],
            "edge_upstream_bytes": _edge_upstream_bytes(edge) - edge_bytes_before,
            "vip_answers_to_site": direct, "vip_bytes_to_site": direct_bytes,
            "replica_requests": upstream, "replica_requests_total": sum(upstream.values()),
            "generator_cpu_s": round(cpu, 2)}


def _redirected_for(vip: str, version: str) -> bool:
    """Whether a site client is sent to the edge and gets ``version`` there."""
    result = bench.run(["curl", "-sS", "-L", "--interface", SITE_ADDRESS, "-o", "/dev/null",
                        "-w", "%{num_redirects} %header{x-codecache-version}", vip + PATH],
                       check=False)
    return result.stdout.strip() == f"1 {version}"


def cold_burst(origin: bench.Origin, work: Path, quick: bool, rounds: int) -> dict[str, Any]:
    """The rounds described above, on a cluster of their own (brought down at the end).

    Each round has two bursts, each after a publish of a new tag: **at once** (as soon as
    every replica serves it: the edge has not caught up yet, so the VIP answers the site
    itself, from its 1 s site cache) and **redirected** (once the site is sent to the edge
    for it: the edge prefetched the blob and serves the burst)."""
    pilots = 200 if quick else 1000
    cluster_dir = work / "cold-burst-cluster"
    cluster = json.loads(bench.cluster(
        "up", "--dir", str(cluster_dir), "--origin-config", str(origin.config),
        "--replicas", "3", "--site", f"bench={SITE_ADDRESS}/32").stdout)
    each = []
    try:
        for n in range(rounds):
            for phase in ("at_once", "redirected"):
                version = f"3.{n}.{0 if phase == 'at_once' else 1}"
                new_tag(origin, version, seed=100 + 2 * n + (phase == "redirected"))
                edge_bytes = _edge_upstream_bytes(cluster["edges"]["bench"]["url"])
                bench.codecache(origin.config, "sync", "--once", "--package", "pilot")
                published = time.monotonic()
                while any(bench.served_version(r, PATH) != version
                          for r in cluster["replicas"]) or (
                        phase == "redirected" and not _redirected_for(cluster["vip"], version)):
                    if time.monotonic() - published > 60:
                        raise SystemExit(f"bench: {version} did not reach the {phase} state")
                    time.sleep(0.02)
                waited = time.monotonic() - published
                result = _burst(cluster, pilots, seed=n, edge_bytes_before=edge_bytes)
                blob = origin.blob(version).stat().st_size
                each.append({"phase": phase, "version": version, "blob_bytes": blob,
                             "publish_to_burst_s": round(waited, 2), **result,
                             "edge_upstream_over_blob": result["edge_upstream_bytes"] / blob})
                bench.log(f"cold burst round {n + 1}/{rounds} {phase}: {pilots} site pilots, "
                          f"failed {result['failed']}, redirected {result['redirected']}, p99 "
                          f"{result['p99_ms']:.0f} ms; the edge read "
                          f"{result['edge_upstream_bytes']:,} bytes upstream (blob {blob:,}); "
                          f"the VIP answered the site {result['vip_answers_to_site']} times "
                          f"({result['vip_bytes_to_site']:,} bytes); the replicas saw "
                          f"{result['replica_requests_total']} requests")
                time.sleep(2.5)   # the VIP's site cache must not carry over
    finally:
        bench.cluster("down", "--dir", str(cluster_dir))

    def median(phase: str, key: str) -> float:
        return float(statistics.median(r[key] for r in each if r["phase"] == phase))

    return {"pilots": pilots, "within_s": 1, "rounds": each,
            "failed": sum(r["failed"] for r in each),
            "corrupted": sum(r["corrupted"] for r in each),
            **{f"{phase}_median_{key}": median(phase, key)
               for phase in ("at_once", "redirected")
               for key in ("p99_ms", "edge_upstream_over_blob", "vip_bytes_to_site",
                           "replica_requests_total", "redirected")}}


def only_cold_burst(rounds: int, quick: bool, keep: bool) -> int:
    """``scripts/bench --only cold-burst``: the rounds alone, their JSON on stdout."""
    result = bench.alone(lambda origin, work: cold_burst(origin, work, quick, rounds),
                         quick=True, pilot=True, keep=keep,
                         setting_up="svnserve, sample pilot, origin store")
    bench.log(f"cold burst: failed {result['failed']}; at once: p99 "
              f"{result['at_once_median_p99_ms']:.0f} ms, the VIP sent the site "
              f"{result['at_once_median_vip_bytes_to_site']:,.0f} bytes; redirected: p99 "
              f"{result['redirected_median_p99_ms']:.0f} ms, edge upstream / blob "
              f"{result['redirected_median_edge_upstream_over_blob']:.2f} (medians)")
    print(json.dumps(result))
    return 0
