"""The front tier on a private LAN: codecache backends, and front nodes running nginx plus
keepalived with the shipped ``nginx/keepalived.conf``.

The keepalived configuration is the example file itself: only the values of its
``$PARAMETER=`` lines in the per-site block are replaced (the node-specific lines are
selected by keepalived's own ``-i front1`` / ``-i front2``), so what the test runs is what
operators copy.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codecache.ops.nginx import render_nginx
from tests.conftest import Origin, require
from tests.harness.timing import timed_wait
from tests.vrrp.netns import Lan, Node

REPO = Path(__file__).resolve().parents[2]
KEEPALIVED_EXAMPLE = REPO / "nginx" / "keepalived.conf"
READY_TIMEOUT = 20.0


def render_keepalived(values: dict[str, str]) -> str:
    """The example file with the given ``$NAME=`` definitions changed (each must exist)."""
    text = KEEPALIVED_EXAMPLE.read_text()
    for name, value in values.items():
        text, count = re.subn(rf"^\${name}=.*$", lambda _m, n=name, v=value: f"${n}={v}",
                              text, flags=re.MULTILINE)
        assert count == 1, f"nginx/keepalived.conf defines ${name} {count} times, not once"
    return text


def wait_until(what: str, check: Callable[[], bool], timeout: float,
               logs: list[Path]) -> float:
    """Poll ``check()`` every 20 ms until true; seconds it took; fail with log tails."""

    def tails() -> str:
        return "\n".join(f"--- {p.name}:\n" + "\n".join(
            p.read_text(errors="replace").splitlines()[-25:]) for p in logs if p.exists())

    return timed_wait(check, timeout, what, interval=0.02, detail=tails)


@dataclass
class Backend:
    """A ``codecache serve`` inside the LAN namespace, on the bridge address."""

    url: str
    log: Path


def start_backend(lan: Lan, origin: Origin, port: int) -> Backend:
    """Start ``codecache serve`` for ``origin`` on ``{gateway}:{port}``; wait for /readyz."""
    name = f"backend-{port}.log"
    lan.spawn(lan.ns, [sys.executable, "-m", "codecache", "--config", str(origin.config),
                       "serve"], name, cwd=origin.dir,
              env={"CODECACHE_SERVER_LISTEN": f"{lan.gateway}:{port}"})
    backend = Backend(f"http://{lan.gateway}:{port}", lan.logs / name)
    curl = require("curl")
    wait_until(f"{backend.url}/readyz says 200",
               lambda: lan.run(lan.ns, curl, "-fsS", "-o", "/dev/null", "--max-time", "1",
                               f"{backend.url}/readyz", timeout=5).returncode == 0,
               READY_TIMEOUT, [backend.log])
    return backend


def render_front(lan: Lan, prefix: Path, replicas: list[str]) -> Path:
    """``codecache.ops.nginx.render_nginx``: nginx/codecache.conf as a complete nginx.conf.

    Listening on port 80 of every address of the node, so both the VIP (whenever the node
    holds it) and keepalived's check on 127.0.0.1 reach it. As root the renderer puts the
    cache in a private directory its workers (``nobody``) can enter; the LAN removes it.
    """
    rendered = render_nginx(prefix / "nginx.conf", prefix, ["80"], replicas)
    if rendered.private_cache_dir:
        lan.remove_after(rendered.cache_dir)
    return rendered.conf


@dataclass
class FrontNode:
    """One front node: nginx on port 80 and keepalived from the example, in its namespace."""

    lan: Lan
    node: Node
    config_id: str               # front1 / front2: selects the @front1 / @front2 lines
    keepalived_conf: Path
    vip: str                     # A.B.C.D/P

    @property
    def dir(self) -> Path:
        return self.lan.logs / self.config_id

    @property
    def keepalived_log(self) -> Path:
        return self.lan.logs / f"{self.config_id}-keepalived.log"

    @property
    def nginx_log(self) -> Path:
        return self.lan.logs / f"{self.config_id}-nginx.log"

    def start_nginx(self, replicas: list[str]) -> None:
        nginx = require("nginx")
        self.dir.mkdir(exist_ok=True)
        conf = render_front(self.lan, self.dir, replicas)
        self.lan.spawn(self.node.ns, [nginx, "-p", str(self.dir), "-c", str(conf),
                                      "-g", "daemon off;"], self.nginx_log.name)
        curl = require("curl")
        wait_until(f"nginx on {self.config_id} answers",
                   lambda: self.lan.run(self.node.ns, curl, "-sS", "-o", "/dev/null",
                                        "--max-time", "1", "http://127.0.0.1/healthz",
                                        timeout=5).returncode == 0,
                   READY_TIMEOUT, self.logs())

    def start_keepalived(self) -> None:
        keepalived = require("keepalived")
        self.dir.mkdir(exist_ok=True)
        # -n: stay in the foreground (the Popen pid is the parent); -P: VRRP only, no LVS
        # checker; own pid files so two instances on one host do not see each other.
        self.lan.spawn(self.node.ns, [
            keepalived, "-n", "-l", "-D", "-G", "-P", "-i", self.config_id,
            "-f", str(self.keepalived_conf),
            "-p", str(self.dir / "keepalived.pid"), "-r", str(self.dir / "vrrp.pid")],
            self.keepalived_log.name)

    def holds_vip(self) -> bool:
        return self.vip in self.node.addresses()

    def logs(self) -> list[Path]:
        return [self.keepalived_log, self.nginx_log, self.dir / "logs" / "error.log"]

    def log_has(self, text: str) -> bool:
        return self.keepalived_log.exists() and text in self.keepalived_log.read_text(
            errors="replace")

    def nginx_pids(self) -> list[int]:
        """pids of this node's nginx master and workers."""
        found = []
        for pid in self.lan.pids(self.node.ns):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "nginx":
                found.append(pid)
        return found
