"""The edge's parts of scripts/bench: an edge's hit against a replica direct, and its disk.

* **Edge hit**: the same ~200 KB release (``2.1.1``, no channel target in the upstream's
  copy of the origin's store: the edge serves it from its bounded cache after one fill)
  and its 304 revalidation from an edge (``role = "edge"``) and from a replica direct,
  both pulling from that upstream, the same worker count; plus the channel tarball (pinned
  in the edge's store, as a replica holds it). wrk, rounds alternating between the two;
  requests/s, p50/p99 and CPU per request (every process of the server's session),
  medians.
* **Disk**: an edge of a package of 50 releases (quick: 15) of ~100 KB of random bytes,
  ``[edge] cache_size`` a third of their bytes: each release asked once in order, then
  again in a seeded random order; the blob bytes on disk (the store's pinned channel
  target plus the cache's files, scratch files of fills in flight included; the cache's
  own database apart: bookkeeping) sampled every 10 ms throughout, against the bound.

``scripts/bench --only edge`` runs both alone and prints their JSON; the full run puts
them in the report (``benchreport``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bench  # the running scripts/bench.py (it registers itself under this name)

from tests.harness import config as harness_config
from tests.harness.timing import free_port, wait_until

HIT_CASES = {  # name: (label, path, conditional, connections (full, quick))
    "get_200kb": ("GET ~200 KB release (edge: from its cache)", "/pilot/releases/2.1.1.tar.gz",
                  False, (64, 16)),
    "304_200kb": ("304 revalidation of it", "/pilot/releases/2.1.1.tar.gz", True, (100, 50)),
    "get_200kb_pinned": ("GET ~200 KB channel tarball (pinned)", "/pilot/small.tar.gz",
                         False, (64, 16)),
}
DISK_RELEASE_BYTES = 100_000


@contextlib.contextmanager
def serving(work: Path, configs: dict[str, Any]) -> Iterator[dict[str, str]]:
    """``codecache serve`` of each config (name -> Config), each in a session of its own;
    their base URLs once ``/readyz`` answers 200."""
    processes, urls = [], {}
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    try:
        for name, config in configs.items():
            path = harness_config.write(work / f"{name}.toml", config)
            urls[name] = f"http://{config.server.listen[0]}"
            with (work / f"{name}.log").open("wb") as log_file:
                processes.append(subprocess.Popen(
                    [bench.PY, "-m", "codecache", "--config", str(path), "serve"], cwd=work,
                    stdout=log_file, stderr=subprocess.STDOUT, env=environ,
                    start_new_session=True))
            bench.wait_http(f"{urls[name]}/readyz")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def node(role: str, store: Path, keys: Path, upstream: str, workers: int,
         **sections: Any) -> Any:
    """The Config of a replica or an edge of ``upstream`` on a port of its own."""
    return harness_config.build(
        role=role, store={"path": str(store)}, signing={"trusted_keys": [str(keys)]},
        replica={"upstreams": [upstream], "interval": "1s"},
        server={"listen": [f"127.0.0.1:{free_port()}"], "workers": workers}, **sections)


def upstream_config(origin: bench.Origin, store: Path) -> Any:
    """The bench origin's config (its keys) on ``store``, served on a port of its own (one
    worker)."""
    from codecache.core.config import load_config  # the product's own reader

    base = load_config(origin.config, env={})
    return dataclasses.replace(
        base, store=dataclasses.replace(base.store, path=store),
        server=dataclasses.replace(base.server, listen=(f"127.0.0.1:{free_port()}",),
                                   workers=1))


def hit_upstream(origin: bench.Origin, work: Path) -> Any:
    """A copy of the origin's store whose ``latest`` points at 2.0.0, so that the ~200 KB
    2.1.1 is no channel target (the cluster's store is left as it is); its config."""
    store = work / "hit-upstream-store"
    shutil.copytree(origin.dir / "store", store)
    config = upstream_config(origin, store)
    path = harness_config.write(work / "hit-upstream-publish.toml", config)
    bench.codecache(path, "publish", "pilot", "2.0.0", "--channel", "latest")
    return config


def readyz(url: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(bench.run(["curl", "-sS", f"{url}/readyz"]).stdout)
    return body


# --- edge hit -----------------------------------------------------------------------------


def edge_hit(origin: bench.Origin, work: Path, workers: int, rounds: int, seconds: int,
             quick: bool) -> dict[str, Any]:
    """An edge's hit (and pinned channel tarball) against a replica direct; see the module."""
    keys = origin.dir / "keys" / "k.pub"
    with serving(work, {"edge-hit-upstream": hit_upstream(origin, work)}) as up:
        configs = {
            "replica": node("replica", work / "hit-replica", keys, up["edge-hit-upstream"],
                            workers),
            "edge": node("edge", work / "hit-edge", keys, up["edge-hit-upstream"], workers,
                         edge={"cache_size": "1GB"}),
        }
        with serving(work, configs) as urls:
            paths = {case[1] for case in HIT_CASES.values()}
            expected = {p: bench.run(["sh", "-c", f"curl -fsS {urls['replica']}{p} | sha256sum"]
                                     ).stdout.split()[0] for p in paths}
            for path, sha256 in expected.items():   # the edge fills its cache here, once
                body = bench.run(["sh", "-c", f"curl -fsS {urls['edge']}{path} | sha256sum"]
                                 ).stdout.split()[0]
                if body != sha256:
                    raise SystemExit(f"bench: the edge serves other bytes for {path}")
            etags = {t: {p: bench.head(f"{u}{p}")["etag"] for p in paths}
                     for t, u in urls.items()}
            sessions = {t: bench.listener_session(u) for t, u in urls.items()}
            results = {case: _hit_case(case, urls, etags, sessions, rounds, seconds, quick)
                       for case in HIT_CASES}
            edge = readyz(urls["edge"])["edge"]
    return {"workers": workers, "rounds": rounds, "seconds": seconds, "cases": results,
            "edge_cache": {k: edge[k] for k in ("hits", "misses", "upstream_bytes")}}


def _hit_case(case: str, urls: dict[str, str], etags: dict[str, dict[str, str]],
              sessions: dict[str, int], rounds: int, seconds: int,
              quick: bool) -> dict[str, Any]:
    label, path, conditional, conns = HIT_CASES[case]
    connections = conns[1] if quick else conns[0]
    per: dict[str, list[dict[str, Any]]] = {t: [] for t in urls}
    for round_ in range(rounds):
        for target in list(urls) if round_ % 2 == 0 else list(reversed(urls)):
            header = f"If-None-Match: {etags[target][path]}" if conditional else None
            before = bench.session_cpu(sessions[target])
            result = bench.wrk(f"{urls[target]}{path}", connections, seconds, header)
            result["cpu_us"] = ((bench.session_cpu(sessions[target]) - before)
                                / max(1, result["requests"]) * 1e6)
            per[target].append(result)
            bench.log(f"edge hit {case} round {round_ + 1}/{rounds} {target}: "
                      f"{result['rps']:,.0f} req/s p50 {result['p50_ms']:.2f} ms p99 "
                      f"{result['p99_ms']:.2f} ms, {result['cpu_us']:.0f} us/request"
                      + (f" ERRORS {result['errors']}" if result["errors"] else ""))
    targets = {t: {"rps": [round(r["rps"]) for r in rs],
                   "median_rps": statistics.median(r["rps"] for r in rs),
                   "median_p50_ms": statistics.median(r["p50_ms"] for r in rs),
                   "median_p99_ms": statistics.median(r["p99_ms"] for r in rs),
                   "median_cpu_us": statistics.median(r["cpu_us"] for r in rs),
                   "errors": sum(r["errors"] for r in rs)} for t, rs in per.items()}
    edge, replica = targets["edge"], targets["replica"]
    return {"label": label, "path": path, "connections": connections, "targets": targets,
            "rps_edge_over_replica": edge["median_rps"] / replica["median_rps"],
            "cpu_edge_over_replica": edge["median_cpu_us"] / replica["median_cpu_us"]}


# --- disk ---------------------------------------------------------------------------------


def disk_package(origin: bench.Origin, work: Path, releases: int) -> Path:
    """A package ``disk`` of ``releases`` tags of ~100 KB of random bytes each, synced into
    a store of its own (the origin's keys); returns that store."""
    root = f"{origin.root}/disk"
    bench.svn("mkdir", "-q", "--parents", "-m", "disk", f"{root}/trunk", f"{root}/tags")
    wc = work / "disk-wc"
    bench.svn("checkout", "-q", f"{root}/trunk", str(wc))
    data, rng = wc / "data.bin", random.Random(3)  # noqa: S311 (test data, not secrets)
    for n in range(releases):
        data.write_bytes(rng.randbytes(DISK_RELEASE_BYTES))
        if n == 0:
            bench.svn("add", "-q", str(data))
        bench.svn("commit", "-q", "-m", f"disk {n}", str(wc))
        bench.svn("copy", "-q", "-m", f"tag 1.{n}", f"{root}/trunk", f"{root}/tags/1.{n}")
    config = harness_config.write(work / "disk-origin.toml", harness_config.build(
        role="origin", store={"path": str(work / "disk-store")},
        signing={"secret_key": str(origin.dir / "keys" / "k.key"),
                 "trusted_keys": [str(origin.dir / "keys" / "k.pub")]},
        packages=[{"name": "disk", "svn_url": root, "auto_channel": "latest"}]))
    bench.codecache(config, "sync", "--once")
    return work / "disk-store"


def blob_bytes(store: Path) -> tuple[int, int]:
    """(blob bytes, bookkeeping bytes) of an edge's store: its pinned blobs and its cache's
    files (scratch of fills in flight included) against the cache's databases. Files are
    told apart by inode: one renamed from scratch into the cache during the walk is
    counted once."""
    blobs: dict[int, int] = {}
    bookkeeping = 0
    for directory in (store / "blobs", store / "edge-cache"):
        # os.walk skips a directory removed meanwhile (diskcache drops emptied ones).
        for parent, _, names in os.walk(directory):
            for name in names:
                with contextlib.suppress(FileNotFoundError):   # evicted or renamed meanwhile
                    size, inode = _size_and_inode(os.path.join(parent, name))  # noqa: PTH118
                    if name.startswith("cache.db") or Path(parent).name == "locks":
                        bookkeeping += size
                    else:
                        blobs[inode] = size
    return sum(blobs.values()), bookkeeping


def _size_and_inode(path: str) -> tuple[int, int]:
    st = os.stat(path)  # noqa: PTH116 - a str path from os.walk
    return st.st_size, st.st_ino


class DiskSampler:
    """``blob_bytes`` every 10 ms in a thread; keeps the peak."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.peak = 0
        self.samples = 0
        self.failed: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, blob_bytes(self.store)[0])
                self.samples += 1
        except BaseException as err:   # told in __exit__: a partial peak is no measurement
            self.failed = err

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.failed is not None:
            raise SystemExit(f"bench: the disk sampler failed: {self.failed!r}")


def edge_disk(origin: bench.Origin, work: Path, quick: bool) -> dict[str, Any]:
    """An edge's blob bytes on disk against ``cache_size``; see the module."""
    releases = 15 if quick else 50
    bench.log(f"disk: a package of {releases} releases of ~{DISK_RELEASE_BYTES // 1000} KB")
    store = disk_package(origin, work, releases)
    index = json.loads((store / "index.json").read_text())["signed"]["packages"]["disk"]
    sizes = {v: r["size"] for v, r in index["releases"].items()}
    total = sum(sizes.values())
    bound = total // 3
    keys = origin.dir / "keys" / "k.pub"
    with serving(work, {"disk-upstream": upstream_config(origin, store)}) as up:
        edge_store = work / "disk-edge"
        config = node("edge", edge_store, keys, up["disk-upstream"], 1,
                      edge={"cache_size": bound})
        with serving(work, {"disk-edge": config}) as urls:
            order = sorted(sizes, key=lambda v: int(v.split(".")[1]))
            shuffled = random.Random(4).sample(order, len(order))  # noqa: S311
            failed = 0
            with DiskSampler(edge_store) as sampler:
                for version in order + shuffled:
                    got = bench.run(["curl", "-fsS", "-o", "/dev/null", "-w", "%{http_code}",
                                     f"{urls['disk-edge']}/disk/releases/{version}.tar.gz"],
                                     check=False)
                    failed += got.stdout != "200"
            final, bookkeeping = blob_bytes(edge_store)
            # Every request but those of the pinned channel target is a hit or a miss; the
            # node's counters are summed once a watch tick.
            asked = len(order + shuffled) - 2

            def counted() -> bool:
                edge = readyz(urls["disk-edge"])["edge"]
                return bool(edge["hits"] + edge["misses"] >= asked)

            wait_until(counted, 10, "the edge has counted every request", interval=0.2)
            edge = readyz(urls["disk-edge"])["edge"]
    largest = max(sizes.values())
    return {"releases": releases, "release_bytes": total, "cache_size": bound,
            "requests": 2 * releases, "failed": failed, "samples": sampler.samples,
            "peak_blob_bytes": sampler.peak, "final_blob_bytes": final,
            "bookkeeping_bytes": bookkeeping, "largest_blob": largest,
            "within_bound_plus_one_fill": sampler.peak <= bound + largest,
            "edge_cache": {k: edge[k] for k in ("cache_bytes", "reserved_bytes", "hits",
                                                 "misses", "evictions", "upstream_bytes")}}


# --- alone ----------------------------------------------------------------------------------


def only_edge(workers: int, rounds: int, seconds: int, quick: bool, keep: bool) -> int:
    """``scripts/bench --only edge``: both parts alone, their JSON on stdout."""
    started = time.monotonic()
    result = bench.alone(lambda origin, work: {
        "edge_hit": edge_hit(origin, work, workers, rounds, seconds, quick),
        "edge_disk": edge_disk(origin, work, quick)},
        quick=True, pilot=True, keep=keep, setting_up="svnserve, sample pilot, origin store")
    for case in result["edge_hit"]["cases"].values():
        bench.log(f"edge / replica, {case['label']}: {case['rps_edge_over_replica']:.2f} in "
                  f"req/s, {case['cpu_edge_over_replica']:.2f} in CPU per request")
    disk = result["edge_disk"]
    bench.log(f"disk: peak {disk['peak_blob_bytes']:,} blob bytes on disk, bound "
              f"{disk['cache_size']:,} ({disk['edge_cache']['evictions']} evictions); "
              f"{time.monotonic() - started:.0f} s in all")
    print(json.dumps({**result, "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    return 0

