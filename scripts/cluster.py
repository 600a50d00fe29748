"""A local codecache cluster on loopback: origin, replicas, the nginx front tier (the VIP)
and, per site, an edge.

Run through ``scripts/cluster`` (which bootstraps the virtualenv first):

    scripts/cluster up --dir DIR [--replicas N] [--origin-config PATH] [--vip-port PORT]
                       [--workers N] [--site NAME=CIDR[,CIDR...]]...
                       [--tls-cert PEM --tls-key PEM [--tls-ca PEM]]
    scripts/cluster status --dir DIR [--json]
    scripts/cluster down --dir DIR
    scripts/cluster kill --dir DIR --node NAME [--signal SIG]  /  start --dir DIR --node NAME
    scripts/cluster render-nginx --out FILE --prefix DIR --listen ADDR... --replica URL...
                                 [--tls-listen ADDR... --tls-cert PEM --tls-key PEM]
                                 [--sites-config REPLICA_TOML...]

``up`` prints one JSON object on stdout (the URLs, configs and pids); everything else goes
to stderr or to log files in ``DIR/logs``. Every process it starts is recorded in
``DIR/cluster.json`` with its start time, so ``down`` stops exactly those processes (and the
children they forked, found by session id) and nothing else (``clusterprocs``). The nodes'
configs are ``clusternodes``'s, the order they start in ``clusterstart``'s.

The nginx configuration is rendered from ``nginx/codecache.conf`` itself by
``codecache.ops.nginx`` (``render-nginx`` is its command line), its site block from the
replicas' config files; as root, the private cache directory it creates for nginx's workers
is removed by ``down`` (see nginx/README.md). With a certificate the VIP also listens for
https (HTTP/2), and each edge gets an https front: an nginx rendered by the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from clusternodes import load_origin_config, parse_sites, sample_origin
from clusterprocs import (
    READY_TIMEOUT,
    STOP_TIMEOUT,
    ClusterError,
    Launcher,
    State,
    alive,
    loaded,
    named,
    readyz,
    remove_private_dirs,
    stop,
)
from clusterstart import Nodes, Options, render

from codecache.ops.nginx import Tls


def up(directory: Path, options: Options) -> dict[str, Any]:
    """Start the cluster; return what ``up`` prints. On failure nothing is left running.

    Raises:
        ClusterError: bad arguments or a node that did not start.
    """
    options.check()
    given = load_origin_config(options.origin_config) if options.origin_config else None
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
        info = Nodes(directory, launcher, setup, options).start(sync_worker=given is None)
    except BaseException:
        stop(state.processes)
        remove_private_dirs(state)
        state.save()
        raise
    state.info = info
    state.save()
    return info




def down(directory: Path) -> list[str]:
    """Stop what ``up`` started in ``directory``; return the names it stopped.

    Raises:
        ClusterError: no cluster state in ``directory``.
    """
    state = loaded(directory)
    running = [p.name for p in state.processes if p.members()]
    stop(state.processes)
    remove_private_dirs(state)
    state.save()
    left = [p.name for p in state.processes if p.members()]
    if left:
        raise ClusterError(f"still running after SIGKILL: {', '.join(left)}")
    return running


def node_urls(info: dict[str, Any]) -> dict[str, str]:
    """Each node's plain http URL by process name (the nginx in front of an edge: its plain
    port); the VIP is the process ``nginx``."""
    urls = {"origin": info.get("origin"), "nginx": info.get("vip"),
            **{f"replica-{n}": u for n, u in enumerate(info.get("replicas", []), 1)}}
    for name, edge in info.get("edges", {}).items():
        urls[f"edge-{name}"] = edge["url"]
        urls[f"nginx-edge-{name}"] = edge.get("front")
    return {name: str(url) for name, url in urls.items() if url}


def kill_node(directory: Path, name: str, sig: signal.Signals) -> int:
    """Send ``sig`` to one recorded process (and its session) and wait until it is gone
    (unless the signal does not end processes). Returns the pid.

    Raises:
        ClusterError: unknown name, or not running.
    """
    proc = named(loaded(directory), name)
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
    state = loaded(directory)
    proc = named(state, name)
    if proc.members():
        raise ClusterError(f"{name} (pid {proc.pid}) is still running", code=3)
    launcher = Launcher(state, Path(proc.log).parent)
    new = launcher.start(name, proc.argv, env=proc.env, cwd=Path(proc.cwd))
    url = node_urls(state.info).get(name)
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
    state = loaded(directory)
    processes = {p.name: {"pid": p.pid, "up": p.same()} for p in state.processes}
    nodes: dict[str, dict[str, Any]] = {}
    bases = node_urls(state.info)
    bases["vip"] = bases.pop("nginx", "")
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
    p_up.add_argument("--site", action="append", default=[], metavar="NAME=CIDR[,CIDR...]",
                      help="a site whose clients the replicas redirect to its own edge "
                           "(repeatable; e.g. bnl=127.0.0.2/32)")
    p_up.add_argument("--tls-cert", type=Path, metavar="PEM",
                      help="the VIP (and each edge's front) also serves https with this "
                           "certificate (chain first)")
    p_up.add_argument("--tls-key", type=Path, metavar="PEM")
    p_up.add_argument("--tls-ca", type=Path, metavar="PEM",
                      help="the CA the replicas trust to read the https edges' /readyz "
                           "(default: the certificate itself, as for a self-signed one)")
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
    p_render.add_argument("--tls-listen", action="append", default=[],
                          help="an https listen address (with --tls-cert and --tls-key)")
    p_render.add_argument("--tls-cert", type=Path, metavar="PEM")
    p_render.add_argument("--tls-key", type=Path, metavar="PEM")
    p_render.add_argument("--sites-config", action="append", default=[], type=Path,
                          metavar="TOML", help="a replica's codecache.toml: its "
                          "[[redirect.sites]] become the site block (repeatable; all agree)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            options = Options(args.replicas, args.origin_config, args.vip_port, args.timeout,
                              args.workers, tuple(parse_sites(args.site)), args.tls_cert,
                              args.tls_key, args.tls_ca)
            print(json.dumps(up(args.dir, options), indent=2))
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
                              args.cache_dir, tls=_tls(args), sites_from=args.sites_config)
            print(json.dumps({k: str(v) if isinstance(v, Path) else v
                              for k, v in asdict(rendered).items()}))
    except ClusterError as e:
        print(f"cluster: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("cluster: interrupted", file=sys.stderr)
        return 130
    return 0


def _tls(args: argparse.Namespace) -> Tls | None:
    """render-nginx's TLS options.

    Raises:
        ClusterError: some of them but not all.
    """
    given = [args.tls_listen, args.tls_cert, args.tls_key]
    if not any(given):
        return None
    if not all(given):
        raise ClusterError("--tls-listen, --tls-cert and --tls-key go together", code=2)
    return Tls(tuple(args.tls_listen), args.tls_cert.resolve(), args.tls_key.resolve())


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
