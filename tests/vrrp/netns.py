"""A private LAN in network namespaces: a bridge, nodes on veth pairs, processes inside.

The test's network never touches the machine's own: the ``lan`` namespace holds a bridge
with the LAN's first address (backends and clients run there), and every node is a
namespace of its own with one ``eth0`` whose peer is a port of that bridge. Cutting a node's
port is its cable being pulled. Interfaces are created directly inside the namespaces
(``ip -n NS link add ... peer ... netns LAN``), never in the root namespace, so nothing can
clash with the host's interfaces or routes.

Every process is started with ``ip netns exec`` (which execs, so the ``Popen`` pid is the
process itself). ``Lan.close`` SIGKILLs whatever still runs in its namespaces (by pid, from
``ip netns pids``: only processes this LAN started live there) and deletes them, which
also deletes the bridge and every veth pair.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import require
from tests.harness.timing import scaled

_CLEAN_ENV_DROP = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy",
                   "NO_PROXY", "all_proxy", "ALL_PROXY")


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip`` (iproute2); return stdout. Raises CalledProcessError when ``check``."""
    result = subprocess.run([require("ip"), *args], capture_output=True, text=True,
                            timeout=10, check=False)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, ["ip", *args],
                                            result.stdout, result.stderr)
    return result.stdout


def namespaces() -> set[str]:
    """Names of all network namespaces ``ip netns`` knows."""
    return {line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()}


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without proxies or ``CODECACHE_*``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in _CLEAN_ENV_DROP and not k.startswith("CODECACHE_")}
    return {**env, "LC_ALL": "C", "LANG": "C", **(extra or {})}


@dataclass
class Node:
    """A namespace on the LAN: ``eth0`` with ``address``, its bridge port named ``name``."""

    lan: Lan
    name: str
    ns: str
    address: str

    def addresses(self) -> set[str]:
        """IPv4 addresses on ``eth0`` as ``A.B.C.D/P``."""
        out = self.lan.ip_in(self.ns, "-4", "-o", "addr", "show", "dev", "eth0")
        return {line.split()[3] for line in out.splitlines() if " inet " in line}

    def pull_cable(self) -> None:
        """Take the node's bridge port down: from now on nothing it sends reaches the LAN."""
        self.lan.ip_in(self.lan.ns, "link", "set", "dev", self.name, "down")

    def die(self) -> None:
        """The machine dies at once: frozen, unplugged, then every process SIGKILLed.

        Frozen first (SIGSTOP), so that nothing on it can react to its link going down or
        to a sibling's death: a real dead machine sends no goodbye (no priority-0 advert,
        no removal of the VIP). Unplugged before the kill, because a SIGKILLed keepalived
        leaves the VIP configured on ``eth0``.
        """
        self.lan.signal_all(self.ns, signal.SIGSTOP)
        self.pull_cable()
        self.lan.signal_all(self.ns, signal.SIGKILL)


@dataclass
class Lan:
    """Namespaces ``{prefix}lan`` (bridge ``br0``) and one per node, all removed by close()."""

    prefix: str
    subnet: str                  # first three octets, e.g. "10.41.7"
    logs: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)
    closed: bool = False         # set when close() begins: clients stop starting downloads

    @property
    def ns(self) -> str:
        return f"{self.prefix}lan"

    @property
    def gateway(self) -> str:
        """The bridge's own address (where the backends listen)."""
        return f"{self.subnet}.1"

    def namespaces(self) -> list[str]:
        return [self.ns, *(node.ns for node in self.nodes.values())]

    def ip_in(self, ns: str, *args: str) -> str:
        return ip("-n", ns, *args)

    def remove_after(self, path: Path) -> None:
        """Delete ``path`` (a directory) in close(), once every process is gone."""
        self.leftovers.append(path)

    def create(self) -> None:
        ip("netns", "add", self.ns)
        self.ip_in(self.ns, "link", "set", "lo", "up")
        self.ip_in(self.ns, "link", "add", "br0", "type", "bridge")
        self.ip_in(self.ns, "addr", "add", f"{self.gateway}/24", "dev", "br0")
        self.ip_in(self.ns, "link", "set", "br0", "up")

    def add_node(self, name: str, host: int) -> Node:
        """A namespace ``{prefix}{name}`` whose ``eth0`` has ``{subnet}.{host}/24``."""
        node = Node(self, name, f"{self.prefix}{name}", f"{self.subnet}.{host}")
        ip("netns", "add", node.ns)
        self.nodes[name] = node
        self.ip_in(node.ns, "link", "set", "lo", "up")
        self.ip_in(node.ns, "link", "add", "eth0", "type", "veth", "peer", "name", name,
                   "netns", self.ns)
        self.ip_in(self.ns, "link", "set", "dev", name, "master", "br0")
        self.ip_in(self.ns, "link", "set", "dev", name, "up")
        self.ip_in(node.ns, "addr", "add", f"{node.address}/24", "dev", "eth0")
        self.ip_in(node.ns, "link", "set", "eth0", "up")
        return node

    def command(self, ns: str, *argv: str) -> list[str]:
        """argv that runs ``argv`` inside namespace ``ns``."""
        return [require("ip"), "netns", "exec", ns, *argv]

    def spawn(self, ns: str, argv: list[str], log_name: str, *,
              env: dict[str, str] | None = None, cwd: Path | None = None,
              ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``ns``, stdout and stderr to ``logs/log_name``."""
        with (self.logs / log_name).open("ab") as log:
            process = subprocess.Popen(self.command(ns, *argv), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=clean_env(env), cwd=cwd)
        self.processes.append(process)
        return process

    def run(self, ns: str, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(ns, *argv), capture_output=True, text=True,
                              timeout=timeout, env=clean_env(), check=False)

    def pids(self, ns: str) -> list[int]:
        """Every process whose network namespace is ``ns`` (all started by this LAN)."""
        return [int(p) for p in ip("netns", "pids", ns, check=False).split()]

    def signal_all(self, ns: str, signum: int = signal.SIGKILL) -> list[int]:
        """Send ``signum`` to every process in ``ns``; return their pids."""
        pids = self.pids(ns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return pids

    def close(self) -> None:
        """Kill everything in the LAN's namespaces and delete them (bridge, veths go too)."""
        self.closed = True
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + scaled(5)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for ns in self.namespaces():
            # Orphans (nginx workers, keepalived children) are not in self.processes.
            for _ in range(50):
                if not self.signal_all(ns, signal.SIGKILL):
                    break
                time.sleep(0.1)
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for ns in reversed(self.namespaces()):
            ip("netns", "delete", ns, check=False)
        for path in self.leftovers:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def private_lan(tag: str, logs: Path) -> Iterator[Lan]:
    """A fresh LAN whose namespaces are named ``cc{pid}{tag}...``; removed afterwards.

    The subnet is derived from the pid only to tell runs apart in logs: the namespaces do
    not see the host's network, so no subnet can clash with it.
    """
    pid = os.getpid()
    lan = Lan(prefix=f"cc{pid}{tag}", subnet=f"10.{(pid >> 8) % 256}.{pid % 256}", logs=logs)
    try:
        lan.create()
        yield lan
    finally:
        lan.close()
        left = sorted(ns for ns in namespaces() if ns.startswith(lan.prefix))
        assert not left, f"network namespaces left behind: {left}"
