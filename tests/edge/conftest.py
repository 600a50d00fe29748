"""Fixtures for edge tests: a served origin and edges (``role = "edge"``) following it.

Real processes only: the origin is a copy of the run's synced template origin served by
``codecache serve``; each edge is ``codecache serve`` with ``role = "edge"`` on a store of
its own that starts empty. The module-scoped origin is shared by a module's tests: a test
that moves a channel leaves it moved (tests read the channel target they start from).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Origin, copy_origin, require
from tests.http.helpers import Server, release_info, running, start_server
from tests.replica.conftest import replica_origin, write_replica_config


def start_edge(directory: Path, template: Origin, upstreams: list[str], *,
               cache_size: str | int = "10MB", env: dict[str, str] | None = None,
               port: int | None = None) -> Server:
    """An edge of ``upstreams`` trusting ``template``'s key, started and ready."""
    write_replica_config(directory, template.public_key, upstreams, role="edge",
                         edge={"cache_size": cache_size})
    return start_server(replica_origin(directory, template), port=port, env=env)


def store_blobs(edge: Server) -> list[str]:
    """The blobs in the edge's store proper (its channel targets), not its cache."""
    return sorted(p.name for p in (edge.origin.store / "blobs" / "sha256").iterdir())


def channel_target(origin: Server, channel: str = "latest") -> str:
    """The version ``channel`` points to in the origin's store (read from disk)."""
    document = json.loads((origin.origin.store / "index.json").read_bytes())
    version: str = document["signed"]["packages"][origin.package]["channels"][channel]["version"]
    return version


def sha256_of(origin: Server, version: str) -> str:
    sha256: str = release_info(origin.origin, version)["sha256"]
    return sha256


def publish(origin: Server, version: str) -> int:
    """Point ``latest`` at ``version`` on the origin; the new serial."""
    result = origin.origin.cli("publish", origin.package, version, "--channel", "latest",
                               check=True)
    return int(result.stdout.rsplit("serial ", 1)[1].rstrip(")\n"))


def upstream_fetches(upstream: Server, sha256: str) -> int:
    """GETs of blob ``sha256`` the upstream answered 200 (its access log)."""
    return upstream.log_text().count(f'"GET /blobs/sha256/{sha256}" 200 ')


class ReadyzPoller:
    """Reads an edge's ``/readyz`` over and over in a thread: every status seen."""

    def __init__(self, edge: Server) -> None:
        self._edge = edge
        self._stop = threading.Event()
        self.seen: list[tuple[int, Any]] = []    # (status, serial)
        self._thread = threading.Thread(target=self._run, name="readyz-poller", daemon=True)

    def _run(self) -> None:
        # The last read starts after the block ends, so ``seen`` ends with what the edge
        # answers then (a starved thread's last read could predate the block's last step).
        while True:
            stopping = self._stop.is_set()
            reply = self._edge.request("/readyz")
            self.seen.append((reply.status, json.loads(reply.body).get("serial")))
            if stopping:
                return
            self._stop.wait(0.01)

    def __enter__(self) -> ReadyzPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def edge_origin(template_origin: Origin,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A private copy of the template origin, served for a whole module."""
    require("curl")
    with running(copy_origin(template_origin,
                             tmp_path_factory.mktemp("edge") / "origin")) as server:
        yield server

