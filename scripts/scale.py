"""Measure codecache at scale: bulk import of many tags, and propagation at many releases.

    .venv/bin/python scripts/scale.py sync --tags N [--exports K] [--json]
    .venv/bin/python scripts/scale.py propagate --releases N [--replicas R] [--rounds K] [--json]
    .venv/bin/python scripts/scale.py steps --releases N [--json]
    .venv/bin/python scripts/scale.py --quick [--json]        # all three, small (scripts/bench)

``sync``: a repository with N tags is made in one ``svnadmin load`` of a generated dump
(each tag a copy of trunk plus a file of its own, one commit per tag) and served by a real
``svnserve`` on loopback. A first ``Origin.sync_once`` (the code ``codecache sync --once``
runs) imports every tag; the time of each tag is taken between successive exports, so the
per-tag cost as the store fills is visible. The baseline is ``svn export`` of the same tags
with the flags codecache uses, one process per tag (K of them, evenly spread; default all).

``propagate``: an origin store with N releases (made directly: real blobs and signatures,
one commit), copied to R replica stores; ``codecache serve`` runs on the origin and on each
replica (role replica, pull interval 1 s). Each round makes one new tag in Subversion, runs
one sync pass in this process and polls every replica until it serves the new release and
``latest`` points at it.

``steps``: the pieces of one index change at N releases, timed in this process: sign and
serialise, verify and parse, install, the server's catalog, the status page.

Nothing here is a test: the numbers go to docs/benchmark.md ("Scale").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from codecache.core.config import load_config  # noqa: E402
from codecache.core.history import Actor  # noqa: E402
from codecache.core.index import Index, Package, Release, release_comment  # noqa: E402
from codecache.core.pin import svn_pin  # noqa: E402
from codecache.core.signing import (  # noqa: E402
    generate_key,
    load_secret_key,
    load_trusted_keys,
    sign_prehashed,
    write_key_pair,
)
from codecache.core.trust import sign_index, verify  # noqa: E402
from codecache.origin.sources.base import ExportProgress, SourceRef  # noqa: E402
from codecache.origin.sources.svn import Svn  # noqa: E402
from codecache.origin.sync import Origin  # noqa: E402
from codecache.store.store import Store  # noqa: E402
from tests.harness import config as harness_config  # noqa: E402

PACKAGE = "pilot"
BASE_DATE = 1_767_225_600   # 2026-01-01T00:00:00Z


# --- a repository with many tags, in one svnadmin load ------------------------------------


def _props(props: dict[str, str]) -> bytes:
    out = b""
    for key, value in props.items():
        k, v = key.encode(), value.encode()
        out += b"K %d\n%s\nV %d\n%s\n" % (len(k), k, len(v), v)
    return out + b"PROPS-END\n"


def _node(path: str, kind: str, action: str, *, props: dict[str, str] | None = None,
          text: bytes | None = None, copy_from: tuple[int, str] | None = None) -> bytes:
    head = [f"Node-path: {path}", f"Node-kind: {kind}", f"Node-action: {action}"]
    if copy_from is not None:
        head += [f"Node-copyfrom-rev: {copy_from[0]}", f"Node-copyfrom-path: {copy_from[1]}"]
    body = b""
    prop_bytes = _props(props) if props is not None else None
    if prop_bytes is not None:
        head.append(f"Prop-content-length: {len(prop_bytes)}")
        body += prop_bytes
    if text is not None:
        head.append(f"Text-content-length: {len(text)}")
        head.append(f"Text-content-md5: {hashlib.md5(text).hexdigest()}")  # noqa: S324
        body += text
    if prop_bytes is not None or text is not None:
        head.append(f"Content-length: {len(body)}")
    return ("\n".join(head) + "\n\n").encode() + body + b"\n\n"


def _revision(number: int, date: int, log: str, nodes: list[bytes]) -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(date))
    props = _props({"svn:log": log, "svn:author": "releasemgr", "svn:date": stamp})
    head = (f"Revision-number: {number}\nProp-content-length: {len(props)}\n"
            f"Content-length: {len(props)}\n\n").encode()
    return head + props + b"\n" + b"".join(nodes)


def pilot_files() -> list[tuple[str, bytes, dict[str, str]]]:
    """A small pilot tree: (path under trunk, content, svn properties)."""
    main = b"".join(b"print('pilot step %d')\n" % i for i in range(400))
    return [
        ("bin/pilot.sh", b"#!/bin/sh\n# $Id$\n# $Date$\nexec python3 lib/pilot/main.py\n",
         {"svn:executable": "*", "svn:keywords": "Id Date"}),
        ("etc/pilot.cfg", b"[pilot]\nretries = 3\n", {"svn:eol-style": "native"}),
        ("lib/pilot/__init__.py", b"", {}),
        ("lib/pilot/main.py", main, {}),
        ("lib/pilot/plugins/alpha.py", b"A = 1\n" * 200, {}),
        ("lib/pilot/plugins/zeta.py", b"Z = 1\n" * 200, {}),
        ("run", b"link bin/pilot.sh", {"svn:special": "*"}),
    ]


def write_dump(out: Path, tags: list[str]) -> None:
    """A dump: r1 the package with trunk (pilot tree) and tags/, then one revision per tag."""
    dirs = {f"{PACKAGE}/trunk/{d}" for path, _, _ in pilot_files()
            for d in _parents(path)}
    with out.open("wb") as fh:
        fh.write(b"SVN-fs-dump-format-version: 2\n\n")
        fh.write(_revision(0, BASE_DATE, "", []))
        nodes = [_node(PACKAGE, "dir", "add", props={}),
                 _node(f"{PACKAGE}/trunk", "dir", "add", props={}),
                 _node(f"{PACKAGE}/tags", "dir", "add", props={})]
        nodes += [_node(d, "dir", "add", props={}) for d in sorted(dirs, key=len)]
        nodes += [_node(f"{PACKAGE}/trunk/{path}", "file", "add", props=props, text=text)
                  for path, text, props in pilot_files()]
        fh.write(_revision(1, BASE_DATE + 60, "sample pilot", nodes))
        for number, tag in enumerate(tags, start=2):
            fh.write(_revision(number, BASE_DATE + 60 * number, f"tag {tag}", [
                _node(f"{PACKAGE}/tags/{tag}", "dir", "add", copy_from=(1, f"{PACKAGE}/trunk")),
                _node(f"{PACKAGE}/tags/{tag}/RELEASE", "file", "add", props={},
                      text=f"{tag}\n".encode())]))


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def make_repository(directory: Path, tags: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    repo = directory / "repo"
    subprocess.run(["svnadmin", "create", str(repo)], check=True)
    # Loopback only: anyone may commit, so the measurement can make tags with svnmucc.
    (repo / "conf" / "svnserve.conf").write_text("[general]\nanon-access = write\n")
    dump = directory / "repo.dump"
    write_dump(dump, tags)
    with dump.open("rb") as fh:
        subprocess.run(["svnadmin", "load", "--quiet", "--bypass-prop-validation", str(repo)],
                       stdin=fh, check=True)
    return repo


def svn_tag(repo_url: str, tag: str) -> None:
    """One more tag, made the way a release manager does (a server-side copy)."""
    subprocess.run(["svnmucc", "--non-interactive", "-m", f"tag {tag}", "cp", "HEAD",
                    f"{repo_url}/{PACKAGE}/trunk", f"{repo_url}/{PACKAGE}/tags/{tag}"],
                   check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"scale: nothing listens on port {port}")


@contextlib.contextmanager
def svnserve(repo: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([_which("svnserve"), "--daemon", "--foreground",
                                "--listen-host", "127.0.0.1", "--listen-port", str(port),
                                "--root", str(repo)])
    try:
        wait_port(port)
        yield f"svn://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def _which(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise SystemExit(f"scale: {name} is not installed (run scripts/bootstrap)")
    return path


# --- an origin ------------------------------------------------------------------------------


def write_origin(directory: Path, svn_url: str, *, port: int | None = None,
                 client: str = "auto", workers: int = 1) -> Path:
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    if not (keys / "codecache.key").exists():
        write_key_pair(generate_key(), keys / "codecache.key", keys / "codecache.pub")
    server = {"listen": [f"127.0.0.1:{port}"], "workers": workers} if port else {}
    return harness_config.write(directory / "codecache.toml", harness_config.build(
        role="origin", store={"path": "store"},
        signing={"secret_key": "keys/codecache.key", "trusted_keys": ["keys/codecache.pub"]},
        server=server, svn={"client": client},
        packages=[{"name": PACKAGE, "svn_url": f"{svn_url}/{PACKAGE}",
                   "auto_channel": "latest"}]))


def origin_of(config_path: Path, svn: Svn | None = None) -> Origin:
    config = load_config(config_path)
    if config.signing.secret_key is None:
        raise SystemExit("scale: no secret key configured")
    secret = load_secret_key(config.signing.secret_key)
    return Origin(config, Store(config.store.path), secret,
                  load_trusted_keys(config.signing.trusted_keys), svn or Svn(config.svn),
                  Actor("scale", os.getuid()))


class TimedSvn(Svn):
    """The real client, noting when each export starts (the per-tag clock)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.starts: list[float] = []

    def export(self, ref: SourceRef, destination: Path,
               progress: ExportProgress | None = None) -> None:
        self.starts.append(time.monotonic())
        super().export(ref, destination, progress)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"scale: {message}")


# --- sync -----------------------------------------------------------------------------------


def tag_names(count: int) -> list[str]:
    return [f"{1 + i // 1000}.{(i // 100) % 10}.{i % 100}" for i in range(count)]


def measure_exports(svn_url: str, tags: list[str], sample: int, scratch: Path) -> dict[str, Any]:
    """``svn export`` (codecache's flags) of ``sample`` of ``tags``, one process per tag."""
    step = max(1, len(tags) // max(1, sample))
    chosen = tags[::step][:sample]
    took: list[float] = []
    for n, tag in enumerate(chosen):
        target = scratch / f"export-{n}"
        with tempfile.TemporaryDirectory() as config_dir:
            start = time.monotonic()
            subprocess.run(["svn", "--non-interactive", "--no-auth-cache", "--config-dir",
                            config_dir, "export", "--quiet", "--ignore-externals",
                            "--native-eol", "LF", f"{svn_url}/{PACKAGE}/tags/{tag}",
                            str(target)], check=True, env={**os.environ, "TZ": "UTC"})
            took.append(time.monotonic() - start)
        shutil.rmtree(target)
    mean = statistics.fmean(took)
    return {"sampled": len(chosen), "mean_seconds": mean,
            "median_seconds": statistics.median(took),
            "estimated_total_seconds": mean * len(tags)}


def per_tag_windows(starts: list[float], end: float) -> dict[str, float]:
    """Mean seconds per tag around N = 100, 1000, 2000, ... (the 50 tags before N)."""
    edges = [*starts, end]
    costs = [b - a for a, b in zip(starts, edges[1:], strict=True)]
    out: dict[str, float] = {}
    for n in (100, 500, 1000, 2000, 3000, 5000):
        if n <= len(costs):
            window = costs[max(0, n - 50):n]
            out[str(n)] = statistics.fmean(window)
    return out


def run_sync(tags: int, exports: int | None, workdir: Path,
             client: str = "auto") -> dict[str, Any]:
    names = tag_names(tags)
    started = time.monotonic()
    repo = make_repository(workdir, names)
    made = time.monotonic() - started
    with svnserve(repo) as url:
        config = write_origin(workdir / "origin", url, client=client)
        baseline = measure_exports(url, names, exports or tags, workdir)
        svn = TimedSvn(load_config(config).svn)
        origin = origin_of(config, svn)
        start = time.monotonic()
        report = origin.sync_once()
        took = time.monotonic() - start
        end = time.monotonic()
    index_size = (workdir / "origin" / "store" / "index.json").stat().st_size
    check(len(report.published) == tags, f"published {len(report.published)} of {tags}")
    return {"tags": tags, "client": svn.client, "repository_seconds": made,
            "sync_seconds": took,
            "sync_per_tag_ms": took / tags * 1000,
            "per_tag_ms_at": {k: v * 1000 for k, v in per_tag_windows(svn.starts, end).items()},
            "svn_export": baseline,
            "ratio_to_exports": took / baseline["estimated_total_seconds"],
            "index_bytes": index_size, "index_bytes_per_release": index_size / tags}


# --- a store of N releases, made directly ---------------------------------------------------


def synthetic_store(config_path: Path, count: int, svn_url: str) -> None:
    """``count`` releases (0.0.0 ...), real blobs and signatures, installed in one commit."""
    config = load_config(config_path)
    if config.signing.secret_key is None:
        raise SystemExit("scale: no secret key configured")
    secret = load_secret_key(config.signing.secret_key)
    store = Store(config.store.path)
    store.init()
    pkg = config.packages[0]
    releases: dict[str, Release] = {}
    for i in range(count):
        version = f"0.{i // 100}.{i % 100}"
        body = hashlib.sha512(version.encode()).digest() * 16 + os.urandom(64)
        sha256 = hashlib.sha256(body).hexdigest()
        path = store.blob_path(sha256)
        path.write_bytes(body)
        url = f"{svn_url}/{PACKAGE}/tags/{version}"
        comment = release_comment(PACKAGE, version, sha256, len(body), svn_pin(url, 2 + i))
        minisig = sign_prehashed(secret, hashlib.blake2b(body, digest_size=64).digest(),
                                 comment)
        releases[version] = Release(version, sha256, len(body), hashlib.sha256(
            version.encode()).hexdigest(), svn_pin(url, 2 + i), "releasemgr", BASE_DATE + 60 * i,
            minisig)
    now = int(time.time())
    index = Index(serial=now, generated=now, expires=now + 7 * 86400,
                  packages={pkg.name: Package(releases, {})})
    with store.locked():
        store.install(sign_index(secret, index))


# --- steps of one change at N releases ------------------------------------------------------


def timed(fn: Any, *args: Any, repeat: int = 3, **kwargs: Any) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def run_steps(releases: int, workdir: Path) -> dict[str, Any]:
    from codecache.web.catalog import Catalog
    from codecache.web.statuspage import render_status_page

    config_path = write_origin(workdir / "origin", "svn://127.0.0.1:1")
    synthetic_store(config_path, releases, "svn://127.0.0.1:1")
    config = load_config(config_path)
    if config.signing.secret_key is None:
        raise SystemExit("scale: no secret key configured")
    secret = load_secret_key(config.signing.secret_key)
    keys = load_trusted_keys(config.signing.trusted_keys)
    store = Store(config.store.path)
    raw = store.read_document()
    if raw is None:
        raise SystemExit("scale: no index written")
    out: dict[str, float] = {}
    out["verify_parse"], signed = timed(verify, raw, keys)
    index = signed.index
    out["sign_serialise"], resigned = timed(sign_index, secret, dataclasses.replace(
        index, serial=index.serial + 1))
    out["install"], _ = timed(lambda: _install(store, resigned, signed.index))
    out["catalog"], _ = timed(Catalog, index, raw, 60)
    readiness = {"status": "ok", "role": "origin", "seconds_since_confirmed": 0}
    out["status_page"], page = timed(render_status_page, index, readiness, {}, now=time.time())
    return {"releases": releases, "index_bytes": len(raw),
            "seconds": out, "status_page_bytes": len(page)}


def _install(store: Store, signed: Any, previous: Index) -> None:
    with store.locked():
        store.install(signed, previous=previous)


# --- propagation ----------------------------------------------------------------------------


def served(port: int, path: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("HEAD", path)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("X-Codecache-Version")
    except OSError:
        return 0, None
    finally:
        conn.close()


def write_replica(directory: Path, port: int, upstream: str, public_key: Path,
                  workers: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return harness_config.write(directory / "codecache.toml", harness_config.build(
        role="replica", store={"path": "store"}, signing={"trusted_keys": [public_key]},
        server={"listen": [f"127.0.0.1:{port}"], "workers": workers},
        replica={"upstreams": [upstream], "interval": "1s"}))


def run_propagate(releases: int, replicas: int, rounds: int, workdir: Path,
                  workers: int = 1) -> dict[str, Any]:
    repo = make_repository(workdir, [])
    procs: list[subprocess.Popen[bytes]] = []
    logs = workdir / "logs"
    logs.mkdir()
    try:
        with svnserve(repo) as url:
            origin_port = free_port()
            config = write_origin(workdir / "origin", url, port=origin_port, workers=workers)
            made = time.monotonic()
            synthetic_store(config, releases, url)
            made = time.monotonic() - made
            ports = []
            for n in range(replicas):
                port = free_port()
                directory = workdir / f"replica-{n}"
                write_replica(directory, port, f"http://127.0.0.1:{origin_port}",
                              workdir / "origin" / "keys" / "codecache.pub", workers)
                shutil.copytree(workdir / "origin" / "store", directory / "store")
                ports.append((port, directory / "codecache.toml"))
            for port, cfg in [(origin_port, config), *ports]:
                with (logs / f"{port}.log").open("wb") as log:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "codecache", "--config", str(cfg), "serve"],
                        stdout=log, stderr=subprocess.STDOUT, env=_env()))
            for port, _ in [(origin_port, config), *ports]:
                wait_port(port, 60)
            origin = origin_of(config)
            times: list[dict[str, float]] = []
            # Round 0 is a warm-up, not counted: the made store has no history yet, and the
            # first commit imports one entry per release (once in a store's life).
            for r in range(rounds + 1):
                tag = f"9.0.{r}"
                svn_tag(url, tag)
                start = time.monotonic()
                report = origin.sync_once()
                synced = time.monotonic() - start
                check(report.published == [f"{PACKAGE} {tag}"], f"sync: {report}")
                pending = {port for port, _ in ports}
                reached: list[float] = []
                while pending:
                    if time.monotonic() - start > 60:
                        raise SystemExit(f"scale: round {r}: replicas {pending} not within 60 s")
                    for port in list(pending):
                        if served(port, f"/{PACKAGE}/latest.tar.gz") == (200, tag):
                            reached.append(time.monotonic() - start)
                            pending.discard(port)
                    time.sleep(0.02)
                if r > 0:
                    times.append({"sync": synced, "all_replicas": max(reached)})
                time.sleep(1.5)
        index_bytes = (workdir / "origin" / "store" / "index.json").stat().st_size
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    every = [t["all_replicas"] for t in times]
    return {"releases": releases, "replicas": replicas, "rounds": rounds, "workers": workers,
            "store_seconds": made, "index_bytes": index_bytes,
            "sync_seconds": statistics.median(t["sync"] for t in times),
            "tag_to_all_replicas_seconds": {"median": statistics.median(every),
                                            "max": max(every), "each": every}}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="sync 300 tags, steps and propagation at 1,000 releases")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("sync")
    p.add_argument("--tags", type=int, default=300)
    p.add_argument("--exports", type=int, help="how many svn exports to time (default: all)")
    p.add_argument("--client", choices=("auto", "cli", "pysvn"), default="auto",
                   help="svn.client of the origin (default auto: pysvn where found)")
    p = sub.add_parser("propagate")
    p.add_argument("--releases", type=int, default=5000)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=1,
                   help="server.workers of every node (all share this machine's cores)")
    p = sub.add_parser("steps")
    p.add_argument("--releases", type=int, default=5000)
    args = parser.parse_args()
    if not args.quick and args.command is None:
        parser.error("a command or --quick is required")
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            base = args.keep
        else:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-")))
        result: dict[str, Any] = {}
        if args.quick:
            result["sync"] = run_sync(300, 100, base / "sync")
            result["steps"] = run_steps(1000, base / "steps")
            result["propagate"] = run_propagate(1000, 3, 3, base / "propagate")
        elif args.command == "sync":
            result["sync"] = run_sync(args.tags, args.exports, base / "sync", args.client)
        elif args.command == "steps":
            result["steps"] = run_steps(args.releases, base / "steps")
        else:
            result["propagate"] = run_propagate(args.releases, args.replicas, args.rounds,
                                                base / "propagate", args.workers)
    print(json.dumps(result, indent=2) if args.json else _text(result))
    return 0


def _text(result: dict[str, Any]) -> str:
    lines = []
    if "sync" in result:
        s = result["sync"]
        e = s["svn_export"]
        lines.append(f"sync of {s['tags']} tags ({s['client']}): {s['sync_seconds']:.1f} s "
                     f"({s['sync_per_tag_ms']:.0f} ms/tag); svn export "
                     f"{e['mean_seconds'] * 1000:.0f} ms/tag ({e['sampled']} timed) → "
                     f"{e['estimated_total_seconds']:.1f} s; ratio {s['ratio_to_exports']:.2f}")
        lines.append("  per-tag ms at N: " + ", ".join(
            f"{n}: {ms:.0f}" for n, ms in s["per_tag_ms_at"].items()))
        lines.append(f"  index {s['index_bytes']:,} bytes "
                     f"({s['index_bytes_per_release']:.0f} per release)")
    if "steps" in result:
        s = result["steps"]
        lines.append(f"one change at {s['releases']} releases (index {s['index_bytes']:,} B): "
                     + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in s["seconds"].items()))
    if "propagate" in result:
        p = result["propagate"]
        t = p["tag_to_all_replicas_seconds"]
        lines.append(f"new tag at {p['releases']} releases → {p['replicas']} replicas: median "
                     f"{t['median']:.2f} s, max {t['max']:.2f} s ({p['rounds']} rounds; "
                     f"sync pass {p['sync_seconds']:.2f} s; index {p['index_bytes']:,} B)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
