"""The nodes of a local cluster (``scripts/cluster``): the sample origin (svnserve, keys,
sync), or a caller's origin config checked before anything starts, and the config files of
origin, replicas (with the sites' redirect rules) and edges, written by the test harness's
writer (``tests.harness.config``, rendered from the product's config dataclasses: the one
TOML writer), never by hand.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterprocs import REPO, ClusterError, Launcher, codecache, run_step, which

from codecache.core.config_sites import redirect_config
from codecache.core.errors import CodecacheError

sys.path.insert(0, str(REPO))   # the tests' harness: the same config writer and free ports
from tests.harness import config as harness_config
from tests.harness.timing import free_port

# An edge of the local cluster holds the sample pilot's few releases many times over.
EDGE_CACHE_SIZE = "200MB"
# The front tier's address as the replicas see it: its X-Forwarded-For is believed.
FRONT_TIER = ("127.0.0.1/32", "::1/128")


@dataclass(frozen=True)
class Site:
    """``--site NAME=CIDR[,CIDR...]``: a site's client networks; the cluster adds its edge."""

    name: str
    networks: tuple[str, ...]


def parse_sites(specs: Sequence[str]) -> list[Site]:
    """``--site`` values, checked by the product's own rules for ``[[redirect.sites]]``.

    Raises:
        ClusterError: not NAME=CIDR[,CIDR...], or sites the config would refuse.
    """
    sites = []
    for spec in specs:
        name, sep, networks = spec.partition("=")
        if not sep or not name or not networks:
            raise ClusterError(f"--site {spec!r}: expected NAME=CIDR[,CIDR...]", code=2)
        sites.append(Site(name.strip(), tuple(n.strip() for n in networks.split(","))))
    try:
        redirect_config({"sites": [{"name": s.name, "networks": list(s.networks),
                                    "targets": ["http://edge.invalid:1"]} for s in sites]}, ())
    except CodecacheError as e:
        raise ClusterError(f"--site: {e}", code=2) from None
    return sites


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
                         trusted_keys: Sequence[Path], workers: int | None = None,
                         sites: Sequence[tuple[Site, Sequence[str]]] = ()) -> None:
    """A replica of ``upstream``; with ``sites`` (each with its edges' URLs) it redirects
    their clients, believes the front tier's X-Forwarded-For and reads each edge's
    readiness every second (so a local demo reacts within a second)."""
    server: dict[str, Any] = {"listen": [f"127.0.0.1:{port}"]}
    if workers is not None:
        server["workers"] = workers
    sections: dict[str, Any] = {}
    if sites:
        sections["redirect"] = {
            "check_interval": "1s", "trusted_proxies": list(FRONT_TIER),
            "sites": [{"name": site.name, "networks": list(site.networks),
                       "targets": list(targets)} for site, targets in sites]}
    harness_config.write(path, harness_config.build(
        role="replica", store={"path": "store"}, signing={"trusted_keys": list(trusted_keys)},
        server=server, replica={"upstreams": [upstream], "interval": "1s"},
        log={"format": "json"}, **sections))


def write_edge_config(path: Path, *, port: int, upstream: str,
                      trusted_keys: Sequence[Path]) -> None:
    """An edge whose upstream is ``upstream`` (the VIP)."""
    harness_config.write(path, harness_config.build(
        role="edge", store={"path": "store"}, signing={"trusted_keys": list(trusted_keys)},
        server={"listen": [f"127.0.0.1:{port}"]},
        replica={"upstreams": [upstream], "interval": "1s"},
        edge={"cache_size": EDGE_CACHE_SIZE}, log={"format": "json"}))


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

