"""A local codecache cluster on loopback: origin, replicas and the nginx front tier (the VIP).

Run through ``scripts/cluster`` (which bootstraps the virtualenv first):

    scripts/cluster up --dir DIR [--replicas N] [--origin-config PATH] [--vip-port PORT]
                       [--workers N]
    scripts/cluster status --dir DIR [--json]
    scripts/cluster down --dir DIR
    scripts/cluster kill --dir DIR --node NAME [--signal SIG]  /  start --dir DIR --node NAME
    scripts/cluster render-nginx --out FILE --prefix DIR --listen ADDR... --replica URL...

``up`` prints one JSON object on stdout (the URLs, configs and pids); everything else goes
to stderr or to log files in ``DIR/logs``. Every process it starts is recorded in
``DIR/cluster.json`` with its start time, so ``down`` stops exactly those processes (and the
children they forked, found by session id) and nothing else.

The nginx configuration is rendered from ``nginx/codecache.conf`` itself by
``codecache.ops.nginx`` (``render-nginx`` is its command line); as root, the private cache
directory it creates for nginx's workers is removed by ``down`` (see nginx/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from codecache.core.errors import CodecacheError, exit_code
from codecache.ops.nginx import Rendered, render_nginx

# The config files come from the test harness's writer (rendered from the config dataclasses),
# the one the tests and scripts/bench.py use; it lives in this checkout's tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import config as harness_config
from tests.harness.timing import free_port

REPO = Path(__file__).resolve().parent.parent
STATE = "cluster.json"
SVN_USER, SVN_PASSWORD = "releasemgr", "demo-only-password"
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


class ClusterError(Exception):
    """A failure reported as one line on stderr; ``code`` is the exit status (2: the request
    is wrong, e.g. a bad argument or config; 3: the environment refused, e.g. a node failed)."""

    def __init__(self, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.code = code


def render(out: Path, prefix: Path, listens: Sequence[str], replicas: Sequence[str],
           cache_dir: Path | None = None) -> Rendered:
    """``codecache.ops.nginx.render_nginx``; its errors as ``ClusterError`` (exit 2 or 3).

    Raises:
        ClusterError: bad addresses, unreachable cache directory.
    """
    try:
        return render_nginx(out, prefix, listens, replicas, cache_dir)
    except CodecacheError as e:
        raise ClusterError(str(e), code=exit_code(e)) from None


# --- processes ------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 is index 0), None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rpartition(")")[2].split()


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None   # field 22: starttime in clock ticks


def alive(pid: int) -> bool:
    """Running (a zombie awaiting its reaper is not)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


@dataclass
class Proc:
    """One started process: its own session leader, identified by pid and start time."""

    name: str
    pid: int
    starttime: int
    argv: list[str]
    log: str
    cwd: str
    env: dict[str, str] = field(default_factory=dict)   # extras over child_env()

    def same(self) -> bool:
        """Still the process we started (pid not reused) and running."""
        return alive(self.pid) and start_time(self.pid) == self.starttime

    def members(self) -> list[int]:
        """The process and what it forked (same session). A non-leader in session PID can
        only descend from our leader: the kernel does not reuse a pid that names a session."""
        own = self.same()
        return [p for p in session_members(self.pid) if p != self.pid or own]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without CODECACHE_* (each node's config is explicit), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}:/usr/sbin:/sbin"
    return {**env, **(extra or {})}


def codecache(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "codecache", "--config", str(config), *args]


def which(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise ClusterError(f"{name} is not installed (run scripts/bootstrap)")
    return path


def stop(procs: Sequence[Proc]) -> None:
    """Stop ``procs`` (last started first): SIGTERM, then SIGKILL after STOP_TIMEOUT."""
    for proc in reversed(procs):
        members = proc.members()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + STOP_TIMEOUT
            while members and time.monotonic() < deadline:
                time.sleep(0.05)
                members = [p for p in members if alive(p)]
            if not members:
                break


# --- the cluster ------------------------------------------------------------------------


@dataclass
class State:
    """What ``up`` started, persisted in DIR/cluster.json for ``status`` and ``down``."""

    dir: str
    processes: list[Proc] = field(default_factory=list)
    cache_dir: str | None = None
    private_cache_dir: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> State | None:
        path = directory / STATE
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["processes"] = [Proc(**p) for p in raw["processes"]]
        return cls(**raw)

    def save(self) -> None:
        path = Path(self.dir) / STATE
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        temp.replace(path)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def http_get(base: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                      timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def readyz(base: str) -> tuple[int | None, str]:
    """``/readyz`` status and its body's ``status`` field (None: no answer)."""
    try:
        status, body = http_get(base, "/readyz")
    except (OSError, http.client.HTTPException) as e:
        return None, str(e) or type(e).__name__
    try:
        return status, str(json.loads(body).get("status", ""))
    except (ValueError, AttributeError):
        return status, body[:80].decode(errors="replace")


class Launcher:
    """Starts processes in their own sessions, detached, and records them as it goes."""

    def __init__(self, state: State, logs: Path) -> None:
        self.state = state
        self.logs = logs
        self.popens: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Proc:
        log = self.logs / f"{name}.log"
        workdir = cwd or Path(self.state.dir)
        with log.open("ab") as out:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=child_env(env),
                                     cwd=workdir, start_new_session=True)
        started = start_time(popen.pid)
        proc = Proc(name, popen.pid, started if started is not None else -1, argv, str(log),
                    str(workdir), dict(env or {}))
        self.popens[name] = popen
        self.state.processes = [p for p in self.state.processes if p.name != name] + [proc]
        self.state.save()
        return proc

    def wait_ready(self, nodes: dict[str, str], timeout: float) -> None:
        """Until every node's /readyz answers 200.

        Raises:
            ClusterError: a process exited or the deadline passed.
        """
        deadline = time.monotonic() + timeout
        waiting = dict(nodes)
        while waiting:
            for name, base in list(waiting.items()):
                popen = self.popens.get(name)
                if popen is not None and popen.poll() is not None:
                    raise ClusterError(f"{name} exited with {popen.returncode}; see "
                                       f"{self.logs / (name + '.log')}")
                if readyz(base)[0] == 200:
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                name = next(iter(waiting))
                raise ClusterError(f"{name} ({waiting[name]}) not ready after {timeout:.0f} s: "
                                   f"{readyz(waiting[name])[1]}; see "
                                   f"{self.logs / (name + '.log')}")
            time.sleep(0.05)


def run_step(what: str, argv: list[str], log: Path, *, cwd: Path,
             env: dict[str, str] | None = None) -> None:
    """Run one setup command to completion, output appended to ``log``.

    Raises:
        ClusterError: it failed.
    """
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=child_env(env), cwd=cwd,
                                check=False, timeout=300)
    if result.returncode != 0:
        raise ClusterError(f"{what} failed (exit {result.returncode}); see {log}")


@dataclass(frozen=True)
class OriginSetup:
    config: Path
    trusted_keys: tuple[Path, ...]
    svn_url: str


def load_origin_config(path: Path) -> OriginSetup:
    """Check a caller's origin config before anything starts.

    Raises:
        ClusterError: missing, unreadable, invalid, not an origin, or a store without index.
    """
    from codecache.core.config import Role, load_config
    from codecache.core.errors import CodecacheError

    if not path.is_file():
        raise ClusterError(f"--origin-config {path}: no such file", code=2)
    try:
        config = load_config(path, env={})
    except CodecacheError as e:
        raise ClusterError(f"--origin-config {path}: {e}", code=2) from None
    if config.role is not Role.ORIGIN:
        raise ClusterError(f"--origin-config {path}: role is {config.role.value!r}, "
                           f"not \"origin\"", code=2)
    if config.signing.secret_key is None or not config.signing.trusted_keys:
        raise ClusterError(f"--origin-config {path}: an origin needs signing.secret_key and "
                           f"signing.trusted_keys", code=2)
    if not config.packages:
        raise ClusterError(f"--origin-config {path}: no [[packages]]", code=2)
    if not (config.store.path / "index.json").is_file():
        raise ClusterError(f"--origin-config {path}: store {config.store.path} has no index "
                           f"yet; run codecache sync --once first")
    return OriginSetup(path.resolve(), config.signing.trusted_keys, config.packages[0].svn_url)


def write_origin_config(path: Path, *, port: int, svn_url: str) -> None:
    harness_config.write(path, harness_config.build(
        role="origin", store={"path": "store"},
        signing={"secret_key": "keys/codecache.key", "trusted_keys": ["keys/codecache.pub"],
                 "index_expiry": "7d", "resign_interval": "1h"},
        server={"listen": [f"127.0.0.1:{port}"], "channel_max_age": 60},
        sync={"interval": "10s"},
        packages=[{"name": "pilot", "svn_url": svn_url, "auto_channel": "latest"}]))


def write_replica_config(path: Path, *, port: int, upstream: str,
                         trusted_keys: Sequence[Path], workers: int | None = None) -> None:
    server: dict[str, Any] = {"listen": [f"127.0.0.1:{port}"]}
    if workers is not None:
        server["workers"] = workers
    harness_config.write(path, harness_config.build(
        role="replica", store={"path": "store"}, signing={"trusted_keys": list(trusted_keys)},
        server=server, replica={"upstreams": [upstream], "interval": "1s"},
        log={"format": "json"}))


def sample_origin(directory: Path, launcher: Launcher, logs: Path) -> OriginSetup:
    """svnserve with the sample pilot (scripts/sample-pilot), keys, an origin config, synced."""
    origin = directory / "origin"
    (origin / "keys").mkdir(parents=True)
    setup_log = logs / "setup.log"
    repo = directory / "svn" / "repo"
    repo.parent.mkdir()
    sample = ["bash", str(REPO / "scripts" / "sample-pilot")]
    run_step("creating the Subversion repository", [*sample, "create", str(repo)], setup_log,
             cwd=directory)
    svn_port = free_port()
    launcher.start("svnserve", [which("svnserve"), "--daemon", "--foreground",
                                "--listen-host", "127.0.0.1", "--listen-port", str(svn_port),
                                "--root", str(repo)])
    svn_url = f"svn://127.0.0.1:{svn_port}/pilot"
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", svn_port)) == 0:
                break
        if time.monotonic() > deadline:
            raise ClusterError(f"svnserve does not listen on {svn_port}; see {logs}")
        time.sleep(0.05)
    run_step("committing the sample pilot",
             [*sample, "populate", svn_url, str(directory / "svn" / "wc")], setup_log,
             cwd=directory)
    run_step("codecache keygen",
             [sys.executable, "-m", "codecache", "keygen", "--secret-key",
              str(origin / "keys" / "codecache.key"), "--public-key",
              str(origin / "keys" / "codecache.pub")], setup_log, cwd=origin)
    config = origin / "codecache.toml"
    write_origin_config(config, port=free_port(), svn_url=svn_url)
    run_step("codecache sync --once", codecache(config, "sync", "--once"), setup_log,
             cwd=origin)
    run_step("codecache publish", codecache(config, "publish", "pilot", "1.1.0", "--channel",
                                            "production"), setup_log, cwd=origin)
    return OriginSetup(config, (origin / "keys" / "codecache.pub",), svn_url)


def up(directory: Path, replicas: int, origin_config: Path | None, vip_port: int | None,
       timeout: float, workers: int | None = None) -> dict[str, Any]:
    """Start the cluster; return what ``up`` prints. On failure nothing is left running.

    Raises:
        ClusterError: bad arguments or a node that did not start.
    """
    given = load_origin_config(origin_config) if origin_config is not None else None
    if replicas < 1:
        raise ClusterError("--replicas must be at least 1", code=2)
    if workers is not None and workers < 0:
        raise ClusterError("--workers must be 0 (one per CPU) or more", code=2)
    directory.mkdir(parents=True, exist_ok=True)
    directory = directory.resolve()
    old = State.load(directory)
    if old is not None and any(p.same() for p in old.processes):
        raise ClusterError(f"a cluster is already up in {directory}; "
                           f"run scripts/cluster down --dir {directory} first")
    if given is None and (directory / "origin").exists():
        raise ClusterError(f"{directory} already holds a cluster's files; use an empty --dir")
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    state = State(str(directory))
    state.save()
    launcher = Launcher(state, logs)
    try:
        setup = given or sample_origin(directory, launcher, logs)
        info = start_nodes(directory, launcher, setup, replicas, vip_port, timeout,
                           sync_worker=given is None, workers=workers)
    except BaseException:
        stop(state.processes)
        remove_cache(state)
        raise
    state.info = info
    state.save()
    return info


def start_nodes(directory: Path, launcher: Launcher, setup: OriginSetup, count: int,
                vip_port: int | None, timeout: float, *, sync_worker: bool,
                workers: int | None = None) -> dict[str, Any]:
    state = launcher.state
    origin_port = free_port()
    origin = f"http://127.0.0.1:{origin_port}"
    launcher.start("origin", codecache(setup.config, "serve"),
                   env={"CODECACHE_SERVER_LISTEN": f"127.0.0.1:{origin_port}"},
                   cwd=setup.config.parent)
    if sync_worker:
        launcher.start("sync", codecache(setup.config, "sync"), cwd=setup.config.parent)
    launcher.wait_ready({"origin": origin}, timeout)
    replica_urls, replica_configs = [], []
    for n in range(1, count + 1):
        home = directory / f"replica-{n}"
        home.mkdir()
        port = free_port()
        config = home / "codecache.toml"
        write_replica_config(config, port=port, upstream=origin, trusted_keys=setup.trusted_keys,
                             workers=workers)
        launcher.start(f"replica-{n}", codecache(config, "serve"), cwd=home)
        replica_urls.append(f"http://127.0.0.1:{port}")
        replica_configs.append(str(config))
    launcher.wait_ready({f"replica-{n}": u for n, u in enumerate(replica_urls, 1)}, timeout)

    ipv6 = has_ipv6_loopback()
    port = vip_port or free_port(ipv6=ipv6)
    listens = [f"127.0.0.1:{port}"] + ([f"[::1]:{port}"] if ipv6 else [])
    prefix = directory / "nginx"
    rendered = render(prefix / "nginx.conf", prefix, listens, replica_urls)
    state.cache_dir, state.private_cache_dir = str(rendered.cache_dir), rendered.private_cache_dir
    state.save()
    launcher.start("nginx", [which("nginx"), "-p", str(prefix), "-c", str(rendered.conf),
                             "-g", "daemon off;"], cwd=prefix)
    vip = f"http://127.0.0.1:{port}"
    launcher.wait_ready({"nginx": vip}, timeout)
    return {
        "vip": vip,
        "vip6": f"http://[::1]:{port}" if ipv6 else None,
        "origin": origin,
        "replicas": replica_urls,
        "svn_url": setup.svn_url,
        "config": {"origin": str(setup.config), "replicas": replica_configs},
        "nginx": {"conf": str(rendered.conf), "prefix": str(prefix),
                  "cache_dir": str(rendered.cache_dir)},
        "pids": {p.name: p.pid for p in state.processes},
        "dir": str(directory),
    }


def remove_cache(state: State) -> None:
    if state.private_cache_dir and state.cache_dir:
        shutil.rmtree(state.cache_dir, ignore_errors=True)
        state.cache_dir = None
        state.private_cache_dir = False


def down(directory: Path) -> list[str]:
    """Stop what ``up`` started in ``directory``; return the names it stopped.

    Raises:
        ClusterError: no cluster state in ``directory``.
    """
    state = _loaded(directory)
    running = [p.name for p in state.processes if p.members()]
    stop(state.processes)
    remove_cache(state)
    state.save()
    left = [p.name for p in state.processes if p.members()]
    if left:
        raise ClusterError(f"still running after SIGKILL: {', '.join(left)}")
    return running


def node_url(state: State, name: str) -> str | None:
    info = state.info
    if name == "origin":
        return str(info["origin"])
    if name == "nginx":
        return str(info["vip"])
    if name.startswith("replica-"):
        index = int(name.removeprefix("replica-")) - 1
        replicas: list[str] = info.get("replicas", [])
        return replicas[index] if 0 <= index < len(replicas) else None
    return None


def _loaded(directory: Path) -> State:
    state = State.load(directory.resolve())
    if state is None:
        raise ClusterError(f"no cluster in {directory} ({STATE} not found)", code=2)
    return state


def _named(state: State, name: str) -> Proc:
    for proc in state.processes:
        if proc.name == name:
            return proc
    names = ", ".join(p.name for p in state.processes)
    raise ClusterError(f"no process {name!r} in this cluster (there are: {names})", code=2)


def kill_node(directory: Path, name: str, sig: signal.Signals) -> int:
    """Send ``sig`` to one recorded process (and its session) and wait until it is gone
    (unless the signal does not end processes). Returns the pid.

    Raises:
        ClusterError: unknown name, or not running.
    """
    proc = _named(_loaded(directory), name)
    members = proc.members()
    if not proc.same():
        raise ClusterError(f"{name} (pid {proc.pid}) is not running", code=3)
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(alive(p) for p in members) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in members:     # what a SIGTERM left behind
            with contextlib.suppress(ProcessLookupError):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    return proc.pid


def start_node(directory: Path, name: str, timeout: float) -> int:
    """Start a recorded process again (same argv, environment and directory) after it died;
    wait for its /readyz if it is a node. Returns the new pid.

    Raises:
        ClusterError: unknown name, still running, or not ready in time.
    """
    state = _loaded(directory)
    proc = _named(state, name)
    if proc.members():
        raise ClusterError(f"{name} (pid {proc.pid}) is still running", code=3)
    launcher = Launcher(state, Path(proc.log).parent)
    new = launcher.start(name, proc.argv, env=proc.env, cwd=Path(proc.cwd))
    url = node_url(state, name)
    if url is not None:
        launcher.wait_ready({name: url}, timeout)
    state.info.setdefault("pids", {})[name] = new.pid
    state.save()
    return new.pid


def status(directory: Path) -> dict[str, Any]:
    """Each process up/down and each node's /readyz.

    Raises:
        ClusterError: no cluster state in ``directory``.
    """
    state = _loaded(directory)
    processes = {p.name: {"pid": p.pid, "up": p.same()} for p in state.processes}
    nodes: dict[str, dict[str, Any]] = {}
    info = state.info
    bases = {"origin": info.get("origin"),
             **{f"replica-{n}": u for n, u in enumerate(info.get("replicas", []), 1)},
             "vip": info.get("vip")}
    for name, base in bases.items():
        if base:
            code, detail = readyz(base)
            nodes[name] = {"url": base, "readyz": code, "status": detail}
    return {"processes": processes, "nodes": nodes}


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_up = commands.add_parser("up", help="start svnserve, origin, replicas and nginx")
    p_up.add_argument("--dir", type=Path, required=True)
    p_up.add_argument("--replicas", type=int, default=3)
    p_up.add_argument("--origin-config", type=Path,
                      help="run the origin on this config (its store, keys, svn) as it is")
    p_up.add_argument("--vip-port", type=int, help="the VIP's port (default: a free one)")
    p_up.add_argument("--timeout", type=float, default=READY_TIMEOUT,
                      help="seconds to wait for each node's /readyz")
    p_up.add_argument("--workers", type=int,
                      help="[server] workers of each replica (default: the key is not written)")
    p_down = commands.add_parser("down", help="stop what up started")
    p_down.add_argument("--dir", type=Path, required=True)
    p_status = commands.add_parser("status", help="processes and /readyz of every node")
    p_status.add_argument("--dir", type=Path, required=True)
    p_status.add_argument("--json", action="store_true")
    p_kill = commands.add_parser("kill", help="signal one process (default SIGKILL)")
    p_kill.add_argument("--dir", type=Path, required=True)
    p_kill.add_argument("--node", required=True, help="e.g. replica-2, origin, nginx")
    p_kill.add_argument("--signal", default="KILL", help="signal name (default KILL)")
    p_start = commands.add_parser("start", help="start a killed process again")
    p_start.add_argument("--dir", type=Path, required=True)
    p_start.add_argument("--node", required=True)
    p_start.add_argument("--timeout", type=float, default=READY_TIMEOUT)
    p_render = commands.add_parser("render-nginx", help="write a complete nginx.conf")
    p_render.add_argument("--out", type=Path, required=True)
    p_render.add_argument("--prefix", type=Path, required=True)
    p_render.add_argument("--listen", action="append", required=True)
    p_render.add_argument("--replica", action="append", required=True)
    p_render.add_argument("--cache-dir", type=Path,
                          help="where the workers keep cache and temp files")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(json.dumps(up(args.dir, args.replicas, args.origin_config, args.vip_port,
                                args.timeout, args.workers), indent=2))
        elif args.command == "down":
            stopped = down(args.dir)
            print(f"cluster: stopped {', '.join(stopped) or 'nothing (all down)'}",
                  file=sys.stderr)
        elif args.command == "status":
            return print_status(status(args.dir), as_json=args.json)
        elif args.command == "kill":
            sig = _signal(args.signal)
            pid = kill_node(args.dir, args.node, sig)
            print(f"cluster: sent {sig.name} to {args.node} (pid {pid})", file=sys.stderr)
        elif args.command == "start":
            print(json.dumps({"name": args.node,
                              "pid": start_node(args.dir, args.node, args.timeout)}))
        else:
            rendered = render(args.out, args.prefix, args.listen, args.replica,
                              args.cache_dir)
            print(json.dumps({k: str(v) if isinstance(v, Path) else v
                              for k, v in asdict(rendered).items()}))
    except ClusterError as e:
        print(f"cluster: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("cluster: interrupted", file=sys.stderr)
        return 130
    return 0


def _signal(name: str) -> signal.Signals:
    """``KILL``, ``SIGKILL`` or ``9`` as a signal.

    Raises:
        ClusterError: no such signal.
    """
    try:
        return signal.Signals(int(name)) if name.isdigit() else \
            signal.Signals[name.upper() if name.upper().startswith("SIG") else
                           f"SIG{name.upper()}"]
    except (KeyError, ValueError):
        raise ClusterError(f"unknown signal {name!r}", code=2) from None


def print_status(report: dict[str, Any], *, as_json: bool) -> int:
    """Print the report; 0 when every process is up and every node ready, else 3."""
    healthy = all(p["up"] for p in report["processes"].values()) and \
        all(n["readyz"] == 200 for n in report["nodes"].values())
    if as_json:
        print(json.dumps({**report, "healthy": healthy}, indent=2))
    else:
        for name, p in report["processes"].items():
            print(f"process {name:<10} pid {p['pid']:<8} {'up' if p['up'] else 'down'}")
        for name, n in report["nodes"].items():
            print(f"node    {name:<10} {n['url']:<26} readyz {n['readyz'] or '-'} "
                  f"{n['status']}")
    return 0 if healthy else 3


if __name__ == "__main__":
    sys.exit(main())
