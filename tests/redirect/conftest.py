"""The redirector's world: a serving node with sites, and the targets it may send clients to.

Real processes: the redirector is ``codecache serve`` on a copy of the run's template origin
with ``[[redirect.sites]]``; its targets are real nodes (edges, a replica), a port nobody
listens on, and one stand-in target (``standin``) for the one state a real edge shows only
after 30 s. The sites are told apart by loopback addresses (127.0.0.0/8 is all loopback on
Linux: ``curl --interface`` and ``wget --bind-address`` make a client of each) or by
``?site=``. One world per module: the redirector (two worker processes) probes every second.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Origin, copy_origin, require, write_config
from tests.harness.timing import free_port
from tests.http.helpers import Server, running
from tests.redirect.standin import StandInTarget
from tests.replica.conftest import replica_origin, write_replica_config

CHECK_INTERVAL = "1s"
PROXY = "127.0.0.3"          # the trusted front tier
UNTRUSTED = "127.0.0.4"      # anybody else who sets X-Forwarded-For
# site -> (its client address, for a client of that site)
CLIENT = {"near": "127.0.0.2", "dead": "127.0.0.5", "replica": "127.0.0.6",
          "behind": "127.0.0.7", "stale": "127.0.0.8", "mixed": "127.0.0.9",
          "narrow": "127.0.1.2", "wide": "127.0.1.3"}


@dataclass
class World:
    redirector: Server
    good: Server            # an edge holding the history the redirector serves
    behind: Server          # an edge one history entry behind it
    replica: Server         # a ready replica: not an edge
    dead: str               # a target nobody listens on
    stale: StandInTarget    # an edge, says its /readyz, whose index is 31 s unconfirmed
    ipv6: bool              # the redirector listens on [::1] too

    @property
    def package(self) -> str:
        return self.redirector.package


def ipv6_loopback() -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return True
    return False


def _edge(directory: Path, store_from: Origin, upstream: str, port: int) -> Origin:
    """An edge directory: ``role = "edge"``, trusting the template's key, pulling from
    ``upstream``; its store starts as a copy of ``store_from``'s."""
    copy = copy_origin(store_from, directory)
    copy.secret_key.unlink()   # an edge holds public keys only
    write_replica_config(directory, None, [upstream], role="edge")
    return replica_origin(copy.dir, store_from)


def _sites(world: dict[str, str]) -> list[dict[str, Any]]:
    def site(name: str, *targets: str, networks: tuple[str, ...] = ()) -> dict[str, Any]:
        return {"name": name, "networks": list(networks or (f"{CLIENT[name]}/32",)),
                "targets": list(targets)}

    return [site("near", world["good"], networks=("127.0.0.2/32", "::1/128")),
            site("dead", world["dead"]), site("replica", world["replica"]),
            site("behind", world["behind"]), site("stale", world["stale"]),
            site("mixed", world["behind"], world["good"], world["dead"]),
            # Nested networks: the longest prefix wins.
            site("wide", world["dead"], networks=("127.0.1.0/24",)),
            site("narrow", world["good"], networks=("127.0.1.2/32",))]


@pytest.fixture(scope="module")
def world(template_origin: Origin,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require("curl")
    require("wget")
    base = tmp_path_factory.mktemp("redirect")
    served = copy_origin(template_origin, base / "redirector")
    behind_store = copy_origin(template_origin, base / "behind-store")
    # A channel move adds a history entry: the redirector serves one more than the
    # template (and the lagging edge) holds.
    served.cli("publish", served.package, "1.0.0", "--channel", "stable", check=True)
    ipv6 = ipv6_loopback()
    ports = {name: free_port(ipv6=ipv6 and name == "redirector")
             for name in ("redirector", "good", "behind", "replica", "dead")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    stale = StandInTarget({"ready": True, "status": "ok", "role": "edge", "serial": 1,
                           "history_length": 99, "seconds_since_confirmed": 31})
    urls["stale"] = stale.base
    write_config(served.dir, served.package, served.svn_url, redirect={
        "check_interval": CHECK_INTERVAL, "trusted_proxies": [f"{PROXY}/32"],
        "sites": _sites(urls)})
    good = _edge(base / "good", served, urls["redirector"], ports["good"])
    behind = _edge(base / "behind", behind_store, urls["redirector"], ports["behind"])
    replica_dir = base / "replica"
    write_replica_config(replica_dir, served.public_key, [urls["redirector"]])
    also = (f"[::1]:{ports['redirector']}",) if ipv6 else ()
    with contextlib.ExitStack() as stack:
        stack.enter_context(stale.serving())
        # Two workers: each reads its targets itself (web/redirect.py).
        redirector = stack.enter_context(running(served, ports["redirector"],
                                                 env={"CODECACHE_SERVER_WORKERS": "2"},
                                                 also_listen=also))
        good_server = stack.enter_context(running(good, ports["good"]))
        behind_server = stack.enter_context(running(behind, ports["behind"]))
        replica = stack.enter_context(running(replica_origin(replica_dir, served),
                                              ports["replica"]))
        yield World(redirector, good_server, behind_server, replica, urls["dead"], stale,
                    ipv6)
