"""The benchmark of codecache against nginx, one machine, one run, loopback (scripts/bench).

    scripts/bench                    # full run: writes docs/benchmark.{md,json,png}
    scripts/bench --quick            # small counts, report in a temporary directory
    scripts/bench --out DIR --workers N --rounds R --seconds S --replicas N

Every baseline is measured in the same run, rounds alternating between the servers so that
machine noise hits all of them:

  * nginx serving the same tarballs as static files, as many worker processes as a replica;
  * one replica, direct;
  * the VIP of the front tier (``scripts/cluster up --origin-config``: origin, replicas, nginx).

Cases (wrk): GET of a ~3 MB and a ~200 KB channel tarball, 304 revalidation (If-None-Match)
at 100 and at 1,000 connections. Then, through the VIP with ``codecache loadgen``: 10,000
slow pilot connections held at once (errors; RSS of every replica's processes meanwhile),
and a publish burst (2,000 pilots within 1 s of a channel move; requests the replicas saw,
from their access logs; the pilots' p99). The sync path: publishing a new tag of a
~2,000-file / ~20 MB tree against ``svn export`` + ``tar czf`` of the same tag. And the
propagation of a publish (scripts/propagation.py). A redirect's cost: the 302 a node with
``[[redirect.sites]]`` answers a site's client against the 304 of a direct client
(``--only redirect`` runs it alone), and the same at the VIP (the cluster has one site,
``bench``, with its edge; no bench client is in its network, ``?site=bench`` selects it).
An edge's hit against a replica direct, and its blob bytes on disk against ``[edge]
cache_size`` (``benchedge``; ``--only edge``). A cold burst: 1,000 pilots of a site within
1 s of a publish, through the VIP to the site's edge (``benchburst``; ``--only cold-burst``).
The git source: a first sync of 500 tags against ``git clone`` + ``git archive | gzip`` of
each, and one new tag against ``git fetch`` + ``git archive | gzip`` (``benchgit``; ``--only
git``).
``benchreport`` writes the report.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))   # the tests' harness: the same svnserve and config files

sys.modules.setdefault("bench", sys.modules[__name__])   # benchedge's ``import bench``
import benchreport  # noqa: E402 (a sibling script, found through the path set above)

from tests.harness import config as harness_config  # noqa: E402
from tests.harness.svn import served_repository  # noqa: E402
from tests.harness.timing import free_port, wait_until  # noqa: E402

SVN_USER, SVN_PASSWORD = "releasemgr", "demo-only-password"
PY = str(REPO / ".venv" / "bin" / "python")
CASES = {  # name: (label, channel, conditional, connections (full, quick))
    "get_3mb": ("GET ~3 MB tarball", "big", False, (16, 8)),
    "get_200kb": ("GET ~200 KB tarball", "small", False, (64, 16)),
    "304_100": ("304 revalidation, 100 connections", "small", True, (100, 50)),
    "304_1000": ("304 revalidation, 1,000 connections", "small", True, (1000, 200)),
}


def log(message: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    environ["PATH"] = f"{REPO / '.venv' / 'bin'}:{environ.get('PATH', '')}:/usr/sbin"
    result = subprocess.run(argv, cwd=cwd, env={**environ, **(env or {})}, text=True,
                            capture_output=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:4])} ... failed ({result.returncode}):\n"
                         f"{result.stderr[-3000:]}")
    return result


def svn(*args: str, cwd: Path | None = None) -> str:
    return run(["svn", "--non-interactive", "--no-auth-cache", "--username", SVN_USER,
                "--password", SVN_PASSWORD, *args], cwd=cwd).stdout


def codecache(config: Path, *args: str, timeout: float = 600) -> str:
    return run([PY, "-m", "codecache", "--config", str(config), *args],
               cwd=config.parent, timeout=timeout).stdout


# --- the origin: svn repository, tags, store ------------------------------------------------


def write_tree(root: Path, files: int, total_bytes: int, seed: int) -> None:
    """A source-like tree: ``files`` files in nested directories, ``total_bytes`` in all,
    text that compresses about as well as code does (hex of random bytes: ~2:1)."""
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    per_file = max(1, total_bytes // files)
    for n in range(files):
        path = root / f"pkg{n % 20:02d}" / f"mod{n % 7}" / f"file{n:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rng.randbytes(per_file // 2).hex() + "\n")


class Origin:
    """svnserve with the sample pilot plus the bench's tags; an origin store synced."""

    def __init__(self, work: Path, quick: bool, *, pilot: bool = True) -> None:
        self.work = work
        self.quick = quick
        self.pilot = pilot   # False: only the sync path's tree (``--only sync-path``)
        self.repo = work / "svn" / "repo"
        self.dir = work / "origin"
        self.config = self.dir / "codecache.toml"
        self._served = contextlib.ExitStack()

    def start(self) -> None:
        (self.work / "svn").mkdir(parents=True)
        self.root, _ = self._served.enter_context(served_repository(
            self.repo, anon_access="read", user=SVN_USER, password=SVN_PASSWORD))
        if self.pilot:
            self._populate_pilot()
        # The sync-path tree: ~2,000 files / ~20 MB (quick: 200 files / 2 MB).
        files, size = (200, 2 << 20) if self.quick else (2000, 20 << 20)
        svn("mkdir", "-q", "--parents", "-m", "tree", f"{self.root}/tree/trunk",
            f"{self.root}/tree/tags")
        tree = self.work / "svn" / "tree"
        svn("checkout", "-q", f"{self.root}/tree/trunk", str(tree))
        write_tree(tree, files, size, seed=2)
        svn("add", "-q", "--force", str(tree))
        svn("commit", "-q", "-m", f"{files} files", str(tree))
        self.tree_files, self.tree_bytes = files, size

        (self.dir / "keys").mkdir(parents=True)
        run([PY, "-m", "codecache", "keygen", "--secret-key", str(self.dir / "keys" / "k.key"),
             "--public-key", str(self.dir / "keys" / "k.pub")])
        signing = {"secret_key": "keys/k.key", "trusted_keys": ["keys/k.pub"]}
        harness_config.write(self.config, harness_config.build(
            role="origin", store={"path": "store"},
            signing={**signing, "index_expiry": "7d", "resign_interval": "1h"},
            server={"listen": [f"127.0.0.1:{free_port()}"]},
            packages=[{"name": "pilot", "svn_url": f"{self.root}/pilot",
                       "auto_channel": "latest"}]))
        # The sync path publishes into a store of its own (same keys, same svnserve), so the
        # served store holds what pilots fetch and the replicas' memory is not about the tree.
        self.sync_config = self.dir / "sync.toml"
        harness_config.write(self.sync_config, harness_config.build(
            role="origin", store={"path": "sync-store"}, signing=signing,
            packages=[{"name": "tree", "svn_url": f"{self.root}/tree"}]))
        if self.pilot:
            codecache(self.config, "sync", "--once", "--package", "pilot")
            for channel, version in (("big", "2.0.0"), ("small", "2.1.0"), ("burst", "1.2.0")):
                codecache(self.config, "publish", "pilot", version, "--channel", channel)

    def _populate_pilot(self) -> None:
        wc = self.work / "svn" / "wc"
        run(["bash", str(REPO / "scripts" / "sample-pilot"), "populate", f"{self.root}/pilot",
             str(wc)])
        # Two larger pilot releases: ~3 MB (2.0.0) and ~200 KB (2.1.0, 2.1.1) of data.
        data = wc / "lib" / "pilot" / "data.bin"
        rng = random.Random(1)  # noqa: S311 (test data, not secrets)
        for tag, size in (("2.0.0", 3 << 20), ("2.1.0", 200 << 10), ("2.1.1", 200 << 10)):
            new = not data.exists()
            data.write_bytes(rng.randbytes(size))
            if new:
                svn("add", "-q", str(data))
            svn("commit", "-q", "-m", f"pilot {tag}", str(wc))
            svn("copy", "-q", "-m", f"tag {tag}", f"{self.root}/pilot/trunk",
                f"{self.root}/pilot/tags/{tag}")

    def stop(self) -> None:
        self._served.close()

    def blob(self, version: str) -> Path:
        index = json.loads((self.dir / "store" / "index.json").read_text())
        sha = index["signed"]["packages"]["pilot"]["releases"][version]["sha256"]
        return self.dir / "store" / "blobs" / "sha256" / sha


def children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sync_path(origin: Origin, rounds: int) -> dict[str, Any]:
    """Publishing a new tag (``codecache sync --once --package tree``: export, tarball, sign,
    store, index) against ``svn export`` + ``tar czf`` of the same tag; order alternates.
    Wall time is what counts; the CPU time (user + system of the commands run, not of
    svnserve) is beside it, steadier than wall time while other jobs share the cores."""
    publish, export = [], []
    cpu: dict[str, list[float]] = {"publish": [], "export": []}
    # As installed (pip byte-compiles a wheel's modules): an editable install under
    # PYTHONDONTWRITEBYTECODE=1 would compile every module at each start (~40 ms here).
    run([PY, "-m", "compileall", "-q", str(REPO / "codecache")])
    scratch = origin.work / "export"
    for n in range(rounds):
        tag = f"1.0.{n}"
        svn("copy", "-q", "-m", f"tag {tag}", f"{origin.root}/tree/trunk",
            f"{origin.root}/tree/tags/{tag}")

        def timed_publish(tag: str = tag) -> None:
            start, used = time.monotonic(), children_cpu()
            out = codecache(origin.sync_config, "sync", "--once", "--package", "tree")
            publish.append(time.monotonic() - start)
            cpu["publish"].append(children_cpu() - used)
            if f"tree {tag}" not in out and tag not in out:
                raise SystemExit(f"bench: sync did not publish tree {tag}: {out}")

        def timed_export(tag: str = tag) -> None:
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            start, used = time.monotonic(), children_cpu()
            run(["svn", "export", "-q", "--non-interactive", f"{origin.root}/tree/tags/{tag}",
                 str(scratch / "tree")])
            run(["tar", "czf", str(scratch / "tree.tar.gz"), "-C", str(scratch), "tree"])
            export.append(time.monotonic() - start)
            cpu["export"].append(children_cpu() - used)

        for step in (timed_publish, timed_export) if n % 2 == 0 else (timed_export,
                                                                         timed_publish):
            step()
        log(f"sync path round {n + 1}/{rounds}: publish {publish[-1]:.2f} s "
            f"(CPU {cpu['publish'][-1]:.2f} s), svn export + tar czf {export[-1]:.2f} s "
            f"(CPU {cpu['export'][-1]:.2f} s)")
    shutil.rmtree(scratch, ignore_errors=True)
    return {"files": origin.tree_files, "bytes": origin.tree_bytes,
            "publish_s": publish, "export_tar_s": export,
            "publish_median_s": statistics.median(publish),
            "export_tar_median_s": statistics.median(export),
            "publish_cpu_s": cpu["publish"], "export_tar_cpu_s": cpu["export"],
            "ratio": statistics.median(publish) / statistics.median(export)}


# --- nginx static ---------------------------------------------------------------------------


@contextlib.contextmanager
def static_nginx(work: Path, workers: int, files: dict[str, Path]) -> Iterator[str]:
    """nginx with ``workers`` processes serving ``files`` (URL path -> file) as static files."""
    prefix = work / "static-nginx"
    prefix.mkdir()
    www = Path(tempfile.mkdtemp(prefix="codecache-bench-www-"))
    www.chmod(0o755)
    port = free_port()
    locations = []
    for path, source in files.items():
        target = www / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        locations.append(path)
    for d in [www, *www.rglob("*")]:
        d.chmod(0o755 if d.is_dir() else 0o644)
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    temp = Path(tempfile.mkdtemp(prefix="codecache-bench-tmp-"))
    if os.geteuid() == 0:
        shutil.chown(temp, "nobody", "nogroup")
    (prefix / "nginx.conf").write_text(f"""\
{user}
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {min(24576, nofile)}; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=64;
    etag on;
    default_type application/gzip;
    keepalive_requests 1000000;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {www};
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                             "-g", "daemon off;"], start_new_session=True,
                            stderr=(prefix / "stderr.log").open("wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + locations[0])
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(www, ignore_errors=True)
        shutil.rmtree(temp, ignore_errors=True)


def wait_http(url: str, timeout: float = 30) -> None:
    wait_until(lambda: run(["curl", "-fsS", "-o", "/dev/null", url], check=False).returncode
               == 0, timeout, f"{url} answers", interval=0.1)


def head(url: str) -> dict[str, str]:
    out = run(["curl", "-fsSI", url]).stdout
    return {k.strip().lower(): v.strip() for k, _, v in
            (line.partition(":") for line in out.splitlines()[1:]) if v}


# --- wrk ------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number = re.match(r"[\d.]+", text)
    if number is None:
        return float("nan")
    return float(number[0]) * _UNITS[text[len(number[0]):]]


def wrk(url: str, connections: int, seconds: int, header: str | None) -> dict[str, Any]:
    """One wrk run: requests/s, transfer MB/s, p50/p99 ms, errors (socket errors, non-2xx/3xx)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if header:
        argv += ["-H", header]
    out = run([*argv, url], timeout=seconds + 120).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = (sum(int(x) for x in socket_errors.groups()) if socket_errors else 0) + (
        int(non2xx[1]) if non2xx else 0)
    if rps is None or p50 is None or p99 is None or requests is None:
        raise SystemExit(f"bench: cannot read wrk's output:\n{out}")
    return {"rps": float(rps[1]), "p50_ms": _ms(p50[1]), "p99_ms": _ms(p99[1]),
            "errors": errors, "requests": int(requests[1])}


def throughput(targets: dict[str, str], etags: dict[str, dict[str, str]], rounds: int,
               seconds: int, quick: bool) -> dict[str, Any]:
    """wrk against each target; besides req/s (which wrk, on the same cores, also limits),
    the CPU the server's processes spent per request: the steadier figure on a shared
    machine."""
    results: dict[str, Any] = {}
    sessions = {t: listener_session(u) for t, u in targets.items()}
    for case, (label, channel, conditional, conns) in CASES.items():
        connections = conns[1] if quick else conns[0]
        per: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
        for round_ in range(rounds):
            order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
            for target in order:
                url = f"{targets[target]}/pilot/{channel}.tar.gz"
                header = f"If-None-Match: {etags[target][channel]}" if conditional else None
                before = session_cpu(sessions[target])
                result = wrk(url, connections, seconds, header)
                result["cpu_us"] = ((session_cpu(sessions[target]) - before)
                                    / max(1, result["requests"]) * 1e6)
                per[target].append(result)
                log(f"{case} round {round_ + 1}/{rounds} {target}: {result['rps']:,.0f} req/s "
                    f"p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms"
                    + (f" ERRORS {result['errors']}" if result["errors"] else ""))
        results[case] = {
            "label": label, "connections": connections, "seconds": seconds,
            "command": f"wrk -t1 -c{connections} -d{seconds}s --latency --timeout 10s"
                       + (" -H 'If-None-Match: <ETag>'" if conditional else "")
                       + f" URL/pilot/{channel}.tar.gz",
            "targets": {t: {"rps": [r["rps"] for r in rs],
                            "median_rps": statistics.median(r["rps"] for r in rs),
                            "median_p50_ms": statistics.median(r["p50_ms"] for r in rs),
                            "median_p99_ms": statistics.median(r["p99_ms"] for r in rs),
                            "cpu_us": [round(r["cpu_us"], 1) for r in rs],
                            "median_cpu_us": statistics.median(r["cpu_us"] for r in rs),
                            "errors": sum(r["errors"] for r in rs)}
                        for t, rs in per.items()}}
        nginx = results[case]["targets"]["nginx"]
        for t in targets:
            mine = results[case]["targets"][t]
            mine["ratio"] = mine["median_rps"] / nginx["median_rps"]
            # nginx's CPU per request over ours: the throughput ratio on idle, CPU-bound cores.
            mine["cpu_ratio"] = nginx["median_cpu_us"] / mine["median_cpu_us"]
    return results


# --- a redirect's cost ---------------------------------------------------------------------

REDIRECT_CASES = {  # name: (label, server, query, conditional)
    "302_site": ("302 to a site's edge (?site=)", "sites", "?site=bench", False),
    "304_direct": ("304 to a direct client, node with sites", "sites", "", True),
    "304_no_sites": ("304 to a direct client, node without sites", "plain", "", True),
}
VIP_REDIRECT_CASES = {
    "302_site": ("302 at the VIP (?site=)", "vip", "?site=bench", False),
    "304_direct": ("304 at the VIP, a direct client", "vip", "", True),
}
SMALL = "/pilot/small.tar.gz"
# The bench's site: no bench client is in its network (TEST-NET-1); ``?site=`` selects it.
BENCH_SITE = "bench=192.0.2.0/24"


def redirect_cost(origin: Origin, work: Path, workers: int, rounds: int, seconds: int,
                  quick: bool) -> dict[str, Any]:
    """requests/s and CPU per request of the redirector's 302 against the 304 a direct
    client gets from the same node, and from a node without sites (what the site check
    costs a direct client), wrk at 100 connections. Three servers on the origin's store:
    the redirector (its ``[[redirect.sites]]`` name an edge), the same without sites, and
    the edge (``role = "edge"``, a copy of the store, pulling from the redirector). wrk
    cannot choose its source address on loopback, so the site is chosen with ``?site=``:
    the same path through the server as a client in a site network."""
    from codecache.core.config import load_config  # the product's own reader
    from codecache.core.config_schema import RedirectConfig, RedirectSite

    base = load_config(origin.config, env={})
    ports = {name: free_port() for name in ("sites", "plain", "edge")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    edge_dir = work / "redirect-edge"
    shutil.copytree(origin.dir / "store", edge_dir / "store")
    name, _, network = BENCH_SITE.partition("=")
    configs = {
        "sites": dataclasses.replace(
            base, server=dataclasses.replace(base.server, listen=(f"127.0.0.1:{ports['sites']}",),
                                             workers=workers),
            redirect=RedirectConfig(check_interval=1.0, sites=(
                RedirectSite(name, (network,), (urls["edge"],)),))),
        "plain": dataclasses.replace(
            base, server=dataclasses.replace(base.server, listen=(f"127.0.0.1:{ports['plain']}",),
                                             workers=workers)),
        "edge": harness_config.build(
            role="edge", store={"path": str(edge_dir / "store")},
            signing={"trusted_keys": [str(origin.dir / "keys" / "k.pub")]},
            replica={"upstreams": [urls["sites"]]},
            server={"listen": [f"127.0.0.1:{ports['edge']}"], "workers": 1}),
    }
    processes = []
    try:
        for name, config in configs.items():
            path = harness_config.write(work / f"redirect-{name}.toml", config)
            environ = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
            log_file = (work / f"redirect-{name}.log").open("wb")
            processes.append(subprocess.Popen(
                [PY, "-m", "codecache", "--config", str(path), "serve"], cwd=origin.dir,
                stdout=log_file, stderr=subprocess.STDOUT, env=environ,
                start_new_session=True))
        for url in urls.values():
            wait_http(f"{url}/readyz")
        result = redirect_cases(REDIRECT_CASES, urls, rounds, seconds, quick)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    cases = result["cases"]
    return {**result, "workers": workers, "rps_sites_over_no_sites":
            cases["304_direct"]["median_rps"] / cases["304_no_sites"]["median_rps"]}


def redirect_cases(cases: dict[str, tuple[str, str, str, bool]], urls: dict[str, str],
                   rounds: int, seconds: int, quick: bool) -> dict[str, Any]:
    """wrk on each case (its server in ``urls``), rounds alternating, once the server
    redirects ``?site=bench``; CPU per request of the server's processes."""
    servers = {server for _, server, _, _ in cases.values()}
    for server in {server for _, server, query, _ in cases.values() if query}:
        wait_until(lambda server=server: run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
             f"{urls[server]}{SMALL}?site=bench"]).stdout == "302", 30,
            f"{server} redirects the bench site", interval=0.2)
    etag = head(f"{urls[next(iter(servers))]}{SMALL}")["etag"]
    sessions = {server: listener_session(urls[server]) for server in servers}
    connections = 50 if quick else 100
    per: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    for round_ in range(rounds):
        order = list(cases)
        for case in order if round_ % 2 == 0 else reversed(order):
            _, server, query, conditional = cases[case]
            before = session_cpu(sessions[server])
            result = wrk(f"{urls[server]}{SMALL}{query}", connections, seconds,
                         f"If-None-Match: {etag}" if conditional else None)
            result["cpu_us"] = ((session_cpu(sessions[server]) - before)
                                / max(1, result["requests"]) * 1e6)
            per[case].append(result)
            log(f"redirect {case} at {server} round {round_ + 1}/{rounds}: "
                f"{result['rps']:,.0f} req/s p99 {result['p99_ms']:.2f} ms, "
                f"{result['cpu_us']:.0f} us/request"
                + (f" ERRORS {result['errors']}" if result["errors"] else ""))
    summary = {case: {"label": cases[case][0],
                      "rps": [round(r["rps"]) for r in rs],
                      "median_rps": statistics.median(r["rps"] for r in rs),
                      "median_p99_ms": statistics.median(r["p99_ms"] for r in rs),
                      "median_cpu_us": statistics.median(r["cpu_us"] for r in rs),
                      "errors": sum(r["errors"] for r in rs)} for case, rs in per.items()}
    redirect, direct = summary["302_site"], summary["304_direct"]
    return {"cases": summary, "connections": connections, "seconds": seconds,
            "rounds": rounds,
            "rps_302_over_304": redirect["median_rps"] / direct["median_rps"],
            "cpu_302_over_304": redirect["median_cpu_us"] / direct["median_cpu_us"]}


def only_redirect(workers: int, rounds: int, seconds: int, quick: bool, keep: bool) -> int:
    """``--only redirect``: a redirect's cost alone, its JSON on stdout (about a minute)."""
    result = alone(lambda origin, work: redirect_cost(origin, work, workers, rounds, seconds,
                                                      quick),
                   quick=True, pilot=True, keep=keep, setting_up="svnserve, sample pilot, "
                   "origin store")
    log(f"a redirect's cost: 302 / 304 = {result['rps_302_over_304']:.2f} in req/s, "
        f"{result['cpu_302_over_304']:.2f} in CPU per request; a direct 304 with sites / "
        f"without = {result['rps_sites_over_no_sites']:.2f}")
    print(json.dumps({**result, "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    return 0


def alone(measure: Callable[[Origin, Path], dict[str, Any]], *, quick: bool, pilot: bool,
          keep: bool, setting_up: str) -> dict[str, Any]:
    """One part of the bench (``--only``) in a work directory of its own, with its origin."""
    work = Path(tempfile.mkdtemp(prefix="codecache-bench-work-"))
    work.chmod(0o755)
    origin = Origin(work, quick, pilot=pilot)
    try:
        log(f"setting up: {setting_up}")
        origin.start()
        return measure(origin, work)
    finally:
        origin.stop()
        if keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# --- processes and memory -----------------------------------------------------------------


def listener_session(url: str) -> int:
    """The session id of the processes listening on ``url``'s port (a server and its
    workers: nginx's master and workers, a replica's parent and workers)."""
    port = url.rsplit(":", 1)[1]
    out = run(["ss", "-Hltnp", f"sport = :{port}"]).stdout
    pid = re.search(r"pid=(\d+)", out)
    if pid is None:
        raise SystemExit(f"bench: no process found listening on port {port}")
    return int((Path("/proc") / pid[1] / "stat").read_text().rpartition(")")[2].split()[3])


def session_processes(sid: int) -> Iterator[tuple[Path, list[str]]]:
    """The /proc directory and the stat fields (those after the command name) of each live
    process of session ``sid``; one that ends while it is read is left out."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(stat[3]) == sid:      # field 6: session id
                yield entry, stat
        except (OSError, IndexError, ValueError):
            continue


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) spent so far by the live processes of session ``sid``."""
    ticks = sum(int(stat[11]) + int(stat[12])  # fields 14, 15: utime, stime
                for _, stat in session_processes(sid))
    return ticks / os.sysconf("SC_CLK_TCK")


def session_rss(pid: int, field: str = "VmRSS:") -> int:
    """Resident bytes of a process and everything in its session (a replica's workers);
    ``field="Pss:"``: proportional share instead (shared pages divided among the sharers)."""
    total = 0
    for entry, _ in session_processes(pid):
        source = entry / ("status" if field == "VmRSS:" else "smaps_rollup")
        with contextlib.suppress(OSError, IndexError, ValueError):  # it ended meanwhile
            for line in source.read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1]) * 1024
    return total


class RssSampler:
    """Samples the RSS of some process sessions every 0.25 s in a thread; keeps the maxima."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = {name: 0 for name in pids}
        self.peak_pss = {name: 0 for name in pids}
        self.before = {name: session_rss(pid) for name, pid in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], session_rss(pid))
                self.peak_pss[name] = max(self.peak_pss[name], session_rss(pid, "Pss:"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def loadgen(url: str, *args: str, timeout: float) -> tuple[dict[str, Any], list[str]]:
    """``codecache loadgen URL ARGS --json``; its progress lines are relayed to stderr."""
    argv = [PY, "-m", "codecache", "loadgen", url, *args, "--json"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environ)
    stdout, stderr = proc.stdout, proc.stderr
    if stdout is None or stderr is None:
        raise SystemExit("bench: no pipes to loadgen")
    # stderr (progress) is relayed by a thread, stdout (the report) read here; a timer ends a
    # run that overstays its bounds.
    relay = threading.Thread(target=lambda: [log(line.rstrip()) for line in stderr
                                             if line.strip()], daemon=True)
    relay.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        out = stdout.read()
        proc.wait()
    finally:
        timer.cancel()
    relay.join(timeout=5)
    if proc.returncode < 0:
        raise SystemExit(f"bench: loadgen did not finish within {timeout} s")
    if not out.strip():
        raise SystemExit(f"bench: loadgen printed no report (exit {proc.returncode})")
    shown = ["codecache", "loadgen", "VIP", *args, "--json"]
    return json.loads(out), shown


def cluster(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run(["bash", str(REPO / "scripts" / "cluster"), *args], timeout=timeout)


def served_version(base: str, path: str) -> str | None:
    result = run(["curl", "-sSI", "-H", "Cache-Control: no-cache", base + path], check=False)
    match = re.search(r"^x-codecache-version:\s*(\S+)", result.stdout, re.I | re.M)
    return match[1] if match else None


def replica_requests(cluster_dir: Path, path: str) -> dict[str, int]:
    """Requests for ``path`` in each replica's access log (every worker writes there; the
    cluster's replicas log every request: ``log.access_sample`` is left at 1)."""
    counts = {}
    for logfile in sorted((cluster_dir / "logs").glob("replica-*.log")):
        text = logfile.read_text(errors="replace")
        # Text ("GET /p" 200 ...) or JSON ("method":"GET","path":"/p") access log lines.
        target = re.compile(rf'{re.escape(path)}(?=["\s?])')
        counts[logfile.stem] = sum(1 for line in text.splitlines()
                                   if target.search(line) and ("GET" in line or "HEAD" in line))
    return counts


def slow_pilots(vip: str, pids: dict[str, int], count: int, quick: bool) -> dict[str, Any]:
    """``count`` slow downloads of the ~200 KB channel held open together through the VIP."""
    # ~200 KB at 8 KB/s: ~25 s per pilot, so all are open together after --ramp (quick: 4 s).
    rate = 51200 if quick else 8192
    ramp = 1.0 if quick else 10.0
    with RssSampler(pids) as sampler:
        result, command = loadgen(vip, "--slow", str(count), "--slow-rate", str(rate),
                                  "--ramp", str(ramp), "--channel", "small", "--duration",
                                  "120", "--timeout", "60", "--processes", "2", timeout=400)
    replicas = {n: v for n, v in sampler.peak.items() if n.startswith("replica-")}
    return {"pilots": count, "slow_rate": rate, "ramp_s": ramp, "command": " ".join(command),
            "errors": result["errors_total"], "corrupted": result["corrupted"],
            "held_at_once": result["slow_peak_open"],
            "latency_ms": result["latency_ms"], "statuses": result["statuses"],
            "rss_before": sampler.before, "rss_peak": sampler.peak,
            "pss_peak": sampler.peak_pss,
            "replica_rss_peak_max": max(replicas.values()) if replicas else 0}


def generator_capacity(vip: str, quick: bool) -> dict[str, Any]:
    """How many one-connection-per-pilot downloads per second the generator itself drives
    (closed loop, the same 2 processes as the burst) against the VIP, beside wrk's rate with
    ``Connection: close`` for the same URL: what a burst's latency can be read against."""
    count = 500 if quick else 4000
    result, command = loadgen(vip, "--concurrency", "64", "--requests", str(count), "--mix",
                              "full=1", "--channel", "small", "--processes", "2", "--quiet",
                              timeout=300)
    close = wrk(f"{vip}/pilot/small.tar.gz", 64, 2 if quick else 5, "Connection: close")
    log(f"generator: {result['requests_per_s']:,.0f} new-connection downloads/s (loadgen, "
        f"2 processes); wrk with Connection: close {close['rps']:,.0f}/s")
    return {"loadgen_rps": result["requests_per_s"], "loadgen_errors": result["errors_total"],
            "loadgen_command": " ".join(command), "wrk_close_rps": close["rps"],
            "wrk_command": "wrk -t1 -c64 -d5s -H 'Connection: close' VIP/pilot/small.tar.gz"}


def publish_burst(origin: Origin, vip: str, replicas: list[str], cluster_dir: Path,
                  pilots: int, rounds: int) -> dict[str, Any]:
    """Move the ``burst`` channel, wait until the replicas serve it, then ``pilots`` pilots
    through the VIP within 1 s; count the requests for that URL at the replicas."""
    path = "/pilot/burst.tar.gz"
    each = []
    command: list[str] = []
    for n in range(rounds):
        version = ("2.1.0", "2.1.1")[n % 2]
        codecache(origin.config, "publish", "pilot", version, "--channel", "burst")
        moved = time.monotonic()
        while any(served_version(r, path) != version for r in replicas):
            if time.monotonic() - moved > 30:
                raise SystemExit("bench: the channel move did not reach the replicas")
            time.sleep(0.02)
        time.sleep(0.5)   # the access log lines of those polls are written
        before = replica_requests(cluster_dir, path)   # after the polls: pilots' requests only
        result, command = loadgen(vip, "--burst", str(pilots), "--within", "1", "--mix",
                                  "full=1", "--channel", "burst", "--timeout", "30",
                                  "--processes", "2", "--quiet", timeout=300)
        time.sleep(1.5)   # access log lines of the last requests
        after = replica_requests(cluster_dir, path)
        upstream = {r: after.get(r, 0) - before.get(r, 0) for r in after}
        each.append({"version": version, "failed": result["errors_total"],
                     "corrupted": result["corrupted"], "p99_ms": result["latency_ms"]["p99"],
                     "p50_ms": result["latency_ms"]["p50"], "max_ms": result["latency_ms"]["max"],
                     "requests": result["requests"], "upstream_requests": upstream,
                     "seconds": result["seconds"],
                     "upstream_total": sum(upstream.values())})
        log(f"burst round {n + 1}/{rounds}: {result['requests']} pilots, failed "
            f"{result['errors_total']}, p99 {result['latency_ms']['p99']:.0f} ms, replicas saw "
            f"{sum(upstream.values())} requests {upstream}")
        time.sleep(2.5)   # the VIP's channel cache must not carry over
    return {"pilots": pilots, "within_s": 1, "rounds": each, "command": " ".join(command),
            "failed": sum(r["failed"] for r in each),
            "corrupted": sum(r["corrupted"] for r in each),
            "median_p99_ms": statistics.median(r["p99_ms"] for r in each),
            "median_upstream_total": statistics.median(r["upstream_total"] for r in each)}


# --- machine --------------------------------------------------------------------------------


def machine(workers: int, replicas: int) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    load = os.getloadavg()

    def version(argv: list[str]) -> str:
        result = run(argv, check=False)
        return (result.stdout + result.stderr).strip().splitlines()[0] if (
            result.stdout + result.stderr).strip() else "?"

    commit = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "kernel": os.uname().release, "python": sys.version.split()[0],
            "nginx": version(["nginx", "-v"]), "wrk": version(["wrk", "--version"]),
            "svn": version(["svn", "--version", "--quiet"]), "git": version(["git", "--version"]),
            "commit": commit.stdout.strip() or "?", "loadavg_at_start": [round(x, 2)
                                                                         for x in load],
            "replica_workers": workers, "replicas": replicas,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def workers_supported() -> bool:
    """Whether this codecache knows ``[server] workers`` (the multi-process server)."""
    probe = Path(tempfile.mkdtemp(prefix="codecache-bench-probe-"))
    try:
        (probe / "c.toml").write_text('role = "replica"\n[store]\npath = "s"\n[signing]\n'
                                      'trusted_keys = ["k.pub"]\n[server]\nworkers = 1\n'
                                      '[replica]\nupstreams = ["http://127.0.0.1:1"]\n')
        result = run([PY, "-c", "import sys; from pathlib import Path; "
                      "from codecache.core.config import load_config; "
                      "load_config(Path(sys.argv[1]), env={})", str(probe / "c.toml")],
                     check=False)
        return result.returncode == 0 or "workers" not in result.stderr
    finally:
        shutil.rmtree(probe, ignore_errors=True)


# --- main -----------------------------------------------------------------------------------


def merge_section(out: Path, key: str, result: dict[str, Any]) -> list[Path]:
    """Put one section measured alone (``--only git --out DIR``) into the report already in
    ``out`` and write it again: the other sections' figures are the earlier run's, in the
    order that run wrote them (benchmark.json keeps its keys sorted)."""
    import benchedge

    report: dict[str, Any] = json.loads((out / "benchmark.json").read_text())
    report.pop("verdicts", None)
    report["throughput"] = {c: report["throughput"][c] for c in CASES}
    hit = report.get("edge_hit")
    if hit is not None:
        hit["cases"] = {c: hit["cases"][c] for c in benchedge.HIT_CASES if c in hit["cases"]}
    report[key] = result
    return benchreport.write(report, out)


def only_sync_path(rounds: int, quick: bool, keep: bool) -> int:
    """``--only sync-path``: the sync path alone, its JSON on stdout (about a minute)."""
    result = alone(lambda origin, _: sync_path(origin, rounds), quick=quick, pilot=False,
                   keep=keep, setting_up=f"svnserve, {'200-file' if quick else '2,000-file'} "
                   "tree, keys")
    log(f"sync path: publish {result['publish_median_s']:.2f} s, svn export + tar czf "
        f"{result['export_tar_median_s']:.2f} s (medians of {rounds}): "
        f"ratio {result['ratio']:.2f}")
    print(json.dumps({**result, "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small counts, short runs; report in a temporary directory")
    parser.add_argument("--out", type=Path, help="report directory (default: docs/, or a "
                        "new temporary directory with --quick)")
    parser.add_argument("--workers", type=int, help="worker processes per replica and of "
                        "nginx static (default: one per core where the server supports "
                        "[server] workers, else 1)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--scale", action="store_true", help="also run scripts/scale.py "
                        "--quick (bulk import, one change at 1,000 releases; into the "
                        "JSON report; the full numbers: docs/scale.md)")
    parser.add_argument("--rounds", type=int, help="wrk rounds per case and server "
                        "(default 5; quick 1)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (default 5; "
                        "quick 1)")
    parser.add_argument("--slow", type=int, help="slow pilots held (default 10000; quick 200)")
    parser.add_argument("--burst", type=int, help="pilots in a burst (default 2000; quick 100)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--first-rounds", type=int, help="rounds of the git first sync "
                        "(default 1: minutes each)")
    parser.add_argument("--only", choices=["sync-path", "redirect", "edge", "cold-burst",
                                           "git"],
                        help="run one "
                        "part alone and print its JSON (no report written): sync-path = "
                        "publishing a new tag vs svn export + tar czf, --rounds rounds "
                        "(default 5); redirect = a redirect's cost (302 vs 304 req/s, "
                        "--rounds default 3); edge = an edge's hit vs a replica direct "
                        "(--rounds default 3) and its disk against cache_size; cold-burst = "
                        "a site's pilots within 1 s of a publish (--rounds default 3); git = "
                        "a first sync of 500 tags vs git clone + archive | gzip of each "
                        "(--first-rounds, default 1) and one new tag vs git fetch + archive "
                        "| gzip (--rounds default 5); with --out DIR, put into DIR's "
                        "existing report, marked as a run of its own")
    args = parser.parse_args()
    if args.only == "sync-path":
        return only_sync_path(args.rounds or 5, args.quick, args.keep)
    if args.only == "redirect":
        workers = args.workers or (os.cpu_count() or 1)
        return only_redirect(workers, args.rounds or (1 if args.quick else 3),
                             args.seconds or (1 if args.quick else 5), args.quick, args.keep)
    if args.only == "edge":
        import benchedge

        return benchedge.only_edge(args.workers or (os.cpu_count() or 1),
                                   args.rounds or (1 if args.quick else 3),
                                   args.seconds or (1 if args.quick else 5), args.quick,
                                   args.keep)
    if args.only == "cold-burst":
        import benchburst

        return benchburst.only_cold_burst(args.rounds or (1 if args.quick else 3),
                                          args.quick, args.keep)
    if args.only == "git":
        import benchgit

        if args.quick and args.out and args.out.resolve() == (REPO / "docs").resolve():
            raise SystemExit("bench: --quick never writes over docs/")
        return benchgit.only_git(args.first_rounds or 1, args.rounds or (2 if args.quick else 5),
                                 args.quick, args.keep, args.out)
    started = time.monotonic()
    quick = args.quick
    out = args.out or (Path(tempfile.mkdtemp(prefix="codecache-bench-")) if quick
                       else REPO / "docs")
    out.mkdir(parents=True, exist_ok=True)
    if quick and out.resolve() == (REPO / "docs").resolve():
        raise SystemExit("bench: --quick never writes over docs/")
    supported = workers_supported()
    workers = args.workers if args.workers is not None else (
        (os.cpu_count() or 1) if supported else 1)
    if not supported and workers != 1:
        raise SystemExit("bench: this codecache has no [server] workers; --workers must be 1")
    rounds = args.rounds or (1 if quick else 5)
    seconds = args.seconds or (1 if quick else 5)
    slow = args.slow or (200 if quick else 10_000)
    burst = args.burst or (100 if quick else 2000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    log(f"{'quick' if quick else 'full'} run; report to {out}; replicas {args.replicas} x "
        f"{workers} worker(s) ({'[server] workers' if supported else 'single process'}); "
        f"open files limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")

    work = Path(tempfile.mkdtemp(prefix="codecache-bench-work-"))
    work.chmod(0o755)
    info = machine(workers, args.replicas)
    origin = Origin(work, quick)
    cluster_dir = work / "cluster"
    up = False
    report: dict[str, Any] = {"schema": "codecache-bench/1", "quick": quick, "machine": info}
    try:
        log("setting up: svnserve, sample pilot, 3 MB / 200 KB releases, "
            f"{'200-file' if quick else '2,000-file'} tree, origin store")
        origin.start()
        log("sync path: publishing a new tag vs svn export + tar czf")
        report["sync_path"] = sync_path(origin, 1 if quick else 3)
        import benchgit

        log("git: a first sync of many tags, and one new tag, vs git clone/fetch + archive")
        report["git_sync"] = benchgit.git_sync(work, quick, args.first_rounds or 1,
                                               2 if quick else 5)

        log("cluster: origin, replicas, nginx VIP (scripts/cluster up --origin-config)")
        up_args = ["up", "--dir", str(cluster_dir), "--origin-config", str(origin.config),
                   "--replicas", str(args.replicas), "--site", BENCH_SITE]
        if supported:
            up_args += ["--workers", str(workers)]
        state = json.loads(cluster(*up_args).stdout)
        up = True
        replicas: list[str] = state["replicas"]
        vip: str = state["vip"]
        files = {f"/pilot/{c}.tar.gz": origin.blob(v) for c, v in
                 (("big", "2.0.0"), ("small", "2.1.0"))}
        with static_nginx(work, workers, files) as nginx:
            targets = {"nginx": nginx, "replica": replicas[0], "vip": vip}
            etags = {t: {c: head(f"{u}/pilot/{c}.tar.gz")["etag"] for c in ("big", "small")}
                     for t, u in targets.items()}
            for t, u in targets.items():    # the same bytes everywhere
                for c in ("big", "small"):
                    body = run(["sh", "-c", f"curl -fsS {u}/pilot/{c}.tar.gz | sha256sum"]
                               ).stdout.split()[0]
                    if body != origin.blob({"big": "2.0.0", "small": "2.1.0"}[c]).name:
                        raise SystemExit(f"bench: {t} serves other bytes for {c}")
            report["sizes"] = {c: p.stat().st_size for c, p in
                               (("big", files["/pilot/big.tar.gz"]),
                                ("small", files["/pilot/small.tar.gz"]))}
            log(f"throughput: {len(CASES)} cases x {rounds} rounds x 3 servers x {seconds} s")
            report["throughput"] = throughput(targets, etags, rounds, seconds, quick)
        log("a redirect's cost: 302 vs 304 at a node with sites, and at the VIP")
        report["redirect"] = redirect_cost(origin, work, workers, min(rounds, 3), seconds,
                                           quick)
        report["redirect"]["vip"] = redirect_cases(VIP_REDIRECT_CASES, {"vip": vip},
                                                   min(rounds, 3), seconds, quick)
        import benchedge

        log("an edge's hit: GET and 304 from an edge vs a replica direct")
        report["edge_hit"] = benchedge.edge_hit(origin, work, workers, min(rounds, 3),
                                                seconds, quick)
        log("an edge's disk: blob bytes under cache_size")
        report["edge_disk"] = benchedge.edge_disk(origin, work, quick)

        pids = {p["name"]: p["pid"] for p in
                json.loads((cluster_dir / "cluster.json").read_text())["processes"]}
        log(f"slow pilots: {slow:,} held through the VIP")
        report["slow"] = slow_pilots(vip, {n: p for n, p in pids.items()
                                           if n.startswith("replica-") or n == "nginx"},
                                     slow, quick)
        log(f"publish burst: {burst:,} pilots within 1 s of a channel move")
        report["burst"] = publish_burst(origin, vip, replicas, cluster_dir, burst,
                                        1 if quick else 3)
        report["burst"]["generator"] = generator_capacity(vip, quick)
        log("propagation of a publish (scripts/propagation.py)")
        prop_rounds = 2 if quick else 7
        prop = run([PY, str(REPO / "scripts" / "propagation.py"), "--dir", str(cluster_dir),
                    "--rounds", str(prop_rounds), "--json"], timeout=600).stdout
        report["propagation"] = {**json.loads(prop), "command":
                                 f"python3 scripts/propagation.py --dir DIR --rounds "
                                 f"{prop_rounds}"}
        import benchburst

        log("cold burst: a site's pilots within 1 s of a publish, through the VIP to its edge")
        report["cold_burst"] = benchburst.cold_burst(origin, work, quick, 1 if quick else 3)
    finally:
        if up:
            cluster("down", "--dir", str(cluster_dir))
        origin.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work directory kept: {work}")
    if args.scale:
        log("scale (scripts/scale.py --quick)")
        scale = run([PY, str(REPO / "scripts" / "scale.py"), "--quick", "--json"],
                    timeout=1800).stdout
        report["scale"] = {**json.loads(scale), "command": "python3 scripts/scale.py --quick"}
    report["seconds"] = round(time.monotonic() - started, 1)
    report["command"] = "scripts/bench" + (" --quick" if quick else "")
    paths = benchreport.write(report, out)
    log(f"done in {report['seconds']:.0f} s: {', '.join(str(p) for p in paths)}")
    print(json.dumps({"out": str(out), "files": [str(p) for p in paths]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
