"""Fixtures for replication tests: a served origin and replicas pulling from it.

Real processes only: the origin is a synced store (real svnserve, real ``sync --once``)
served by ``codecache serve``; each replica is ``codecache serve`` with ``role =
"replica"`` on a store of its own that starts empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Origin, copy_origin, require, run_cli
from tests.harness import config as harness_config
from tests.http.helpers import Server, running, start_server


def write_replica_config(directory: Path, public_key: Path | None, upstreams: list[str], *,
                         interval: str = "1s", timeout: str = "3s", role: str = "replica",
                         replica: dict[str, Any] | None = None,
                         **sections: Any) -> Path:
    """A replica directory with its config (store ``store``), trusting ``public_key``.

    ``public_key`` None: the caller has put ``keys/codecache.pub`` in place itself.
    ``replica`` adds ``[replica]`` keys; ``sections`` other tables (``harness.config.build``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "keys").mkdir(exist_ok=True)
    if public_key is not None:
        (directory / "keys" / "codecache.pub").write_bytes(public_key.read_bytes())
    signing = {"trusted_keys": ["keys/codecache.pub"], **sections.pop("signing", {})}
    config = harness_config.build(
        role=role, store={"path": "store"}, signing=signing,
        replica={"upstreams": upstreams, "interval": interval, "timeout": timeout,
                 **(replica or {})}, **sections)
    return harness_config.write(directory / "codecache.toml", config)


def replica_origin(directory: Path, template: Origin) -> Origin:
    """An ``Origin`` record for a replica directory (the helpers start servers from it)."""
    return Origin(directory, directory / "codecache.toml", directory / "store",
                  directory / "keys" / "none", directory / "keys" / "codecache.pub",
                  template.package, template.svn_url)


def start_replica(directory: Path, template: Origin, upstreams: list[str], *,
                  interval: str = "1s", env: dict[str, str] | None = None,
                  port: int | None = None) -> Server:
    write_replica_config(directory, template.public_key, upstreams, interval=interval)
    return start_server(replica_origin(directory, template), port=port, env=env)


def readyz(server: Server) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(server.request("/readyz").body)
    return body


def replica_status(directory: Path) -> dict[str, Any]:
    result = run_cli("status", "--json", config=directory / "codecache.toml")
    assert result.returncode in (0, 1), result.stderr  # 1: expired, still printed
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


@pytest.fixture
def served_origin(template_origin: Origin, tmp_path: Path) -> Iterator[Server]:
    """A private copy of the template origin, served (its svn package is shared: no tags)."""
    require("curl")
    with running(copy_origin(template_origin, tmp_path / "origin")) as server:
        yield server
