"""The redirector's world: a serving node with sites, and the targets it may send clients to.

Real processes: the redirector is ``codecache serve`` on a copy of the run's template origin
with ``[[redirect.sites]]``; its targets are real nodes (edges pulling from it or from an
upstream stuck on an older index, one whose upstream is gone, one not ready, a replica), a
port nobody listens on, and one fake (``slowtarget``: a /readyz slower than the probe
bound). The sites are told apart by loopback addresses (127.0.0.0/8 is all loopback on
Linux: ``curl --interface`` and ``wget --bind-address`` make a client of each) or by
``?site=``. One world per module: the redirector (two worker processes) probes every second.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Origin, copy_origin, require, write_config
from tests.harness.timing import free_port
from tests.http.helpers import Server, running
from tests.redirect.slowtarget import SlowTarget
from tests.replica.conftest import replica_origin, write_replica_config

CHECK_INTERVAL = "1s"
PROXY = "127.0.0.3"          # the trusted front tier
UNTRUSTED = "127.0.0.4"      # anybody else who sets X-Forwarded-For
# site -> (its client address, for a client of that site)
CLIENT = {"near": "127.0.0.2", "dead": "127.0.0.5", "replica": "127.0.0.6",
          "behind": "127.0.0.7", "stale": "127.0.0.8", "mixed": "127.0.0.9",
          "narrow": "127.0.1.2", "wide": "127.0.1.3", "unready": "127.0.0.10",
          "slow": "127.0.0.11", "mortal": "127.0.0.12"}


@dataclass
class World:
    redirector: Server
    good: Server            # an edge of the redirector: the history it serves
    mortal: Server          # another, which a test stops
    behind: Server          # an edge of an upstream stuck one history entry behind
    stale: Server           # an edge holding the index, its upstream gone since it started
    unready: Server         # an edge with nothing yet, its upstream gone: /readyz 503
    slow: SlowTarget        # says it is a perfect edge, a second too late
    replica: Server         # a ready replica: not an edge
    dead: str               # a target nobody listens on
    ipv6: bool              # the redirector listens on [::1] too

    @property
    def package(self) -> str:
        return self.redirector.package


def ipv6_loopback() -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return True
    return False


def _edge(directory: Path, template: Origin, upstream: str, *,
          store_from: Origin | None = None) -> Origin:
    """An edge directory: ``role = "edge"``, trusting the template's key, pulling from
    ``upstream``; its store empty, or a copy of ``store_from``'s store."""
    write_replica_config(directory, template.public_key, [upstream], role="edge")
    if store_from is not None:
        shutil.copytree(store_from.store, directory / "store")
    return replica_origin(directory, template)


def _sites(world: dict[str, str]) -> list[dict[str, Any]]:
    def site(name: str, *targets: str, networks: tuple[str, ...] = ()) -> dict[str, Any]:
        return {"name": name, "networks": list(networks or (f"{CLIENT[name]}/32",)),
                "targets": list(targets)}

    return [site("near", world["good"], networks=("127.0.0.2/32", "::1/128")),
            site("dead", world["dead"]), site("replica", world["replica"]),
            site("behind", world["behind"]), site("stale", world["stale"]),
            site("unready", world["unready"]), site("slow", world["slow"]),
            site("mortal", world["mortal"]),
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
    # The lagging edge's upstream: the template's state, never published to again.
    stuck = copy_origin(template_origin, base / "stuck")
    # A channel move adds a history entry: the redirector serves one more than the
    # template (and the lagging edge) holds.
    served.cli("publish", served.package, "1.0.0", "--channel", "stable", check=True)
    ipv6 = ipv6_loopback()
    ports = {name: free_port(ipv6=ipv6 and name == "redirector")
             for name in ("redirector", "stuck", "good", "mortal", "behind", "stale",
                          "unready", "replica", "dead")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    # Slower than the probe bound (check_interval, 1 s here).
    slow = SlowTarget(delay=1.5, history_length=99)
    urls["slow"] = slow.base
    write_config(served.dir, served.package, served.svn_url, redirect={
        "check_interval": CHECK_INTERVAL, "trusted_proxies": [f"{PROXY}/32"],
        "sites": _sites(urls)})
    good = _edge(base / "good", served, urls["redirector"])
    mortal = _edge(base / "mortal", served, urls["redirector"])
    behind = _edge(base / "behind", served, urls["stuck"])
    # Its store holds the index the redirector serves and its channel targets (as an
    # edge's does after a restart); its upstream never answers, so it has not confirmed
    # that index for as long as it runs: ready, not behind, but its misses cannot be filled.
    stale = _edge(base / "stale", served, urls["dead"], store_from=served)
    unready = _edge(base / "unready", served, urls["dead"])
    replica_dir = base / "replica"
    write_replica_config(replica_dir, served.public_key, [urls["stuck"]])
    also = (f"[::1]:{ports['redirector']}",) if ipv6 else ()
    with contextlib.ExitStack() as stack:
        def serve(origin: Origin, name: str, **kwargs: Any) -> Server:
            return stack.enter_context(running(origin, ports[name], **kwargs))

        # Every target in its final state before the redirector's first probe (but the edges
        # that follow the redirector: the tests wait until both workers saw them ready).
        stack.enter_context(slow.serving())
        serve(stuck, "stuck")
        behind_server, stale_server = serve(behind, "behind"), serve(stale, "stale")
        unready_server = serve(unready, "unready", wait_ready=False)
        replica = serve(replica_origin(replica_dir, served), "replica")
        # Two workers: each reads its targets itself (web/redirect.py).
        redirector = serve(served, "redirector", env={"CODECACHE_SERVER_WORKERS": "2"},
                           also_listen=also)
        yield World(redirector, serve(good, "good"), serve(mortal, "mortal"), behind_server,
                    stale_server,
                    unready_server, slow, replica, urls["dead"], ipv6)
