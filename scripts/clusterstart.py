"""Starting a local cluster's nodes (``scripts/cluster up``): what ``up`` is asked for
(``Options``), each site's edge planned before the replicas name it, and the order the
upstreams need: origin, replicas (their redirect rules naming the edges), the VIP's nginx
(its site block read from the replicas' config files), the edges (their upstream the VIP)
and, with a certificate, each edge's https front; ``up`` returns once every replica
redirects each site's clients.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusternodes import OriginSetup, Site, write_edge_config, write_replica_config
from clusterprocs import (
    READY_TIMEOUT,
    ClusterError,
    Launcher,
    codecache,
    has_ipv6_loopback,
    http_get,
    which,
)

from codecache.core.config import RedirectSite
from codecache.core.errors import CodecacheError, exit_code
from codecache.ops.nginx import Rendered, Tls, render_nginx
from codecache.ops.nginx_sites import read_sites
from tests.harness.timing import free_port

# Answers in a row, each on a new connection, that show a replica redirects a site (below).
REDIRECT_STREAK = 20


def render(out: Path, prefix: Path, listens: Sequence[str], replicas: Sequence[str],
           cache_dir: Path | None = None, *, tls: Tls | None = None,
           sites_from: Sequence[Path] = ()) -> Rendered:
    """``codecache.ops.nginx.render_nginx``, its sites read from the replicas' config files;
    its errors as ``ClusterError`` (exit 2 or 3).

    Raises:
        ClusterError: bad addresses, unreachable cache directory, configs that disagree.
    """
    try:
        sites: Sequence[RedirectSite] = read_sites(sites_from)
        return render_nginx(out, prefix, listens, replicas, cache_dir, tls=tls, sites=sites)
    except CodecacheError as e:
        raise ClusterError(str(e), code=exit_code(e)) from None


@dataclass(frozen=True)
class Options:
    """What ``up`` is asked for."""

    replicas: int = 3
    origin_config: Path | None = None
    vip_port: int | None = None
    timeout: float = READY_TIMEOUT
    workers: int | None = None
    sites: tuple[Site, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None       # what the replicas trust (default: the certificate)

    def check(self) -> None:
        """Raises: ClusterError (exit 2): arguments that cannot work together."""
        if self.replicas < 1:
            raise ClusterError("--replicas must be at least 1", code=2)
        if self.workers is not None and self.workers < 0:
            raise ClusterError("--workers must be 0 (one per CPU) or more", code=2)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ClusterError("--tls-cert and --tls-key go together", code=2)
        if self.tls_ca is not None and self.tls_cert is None:
            raise ClusterError("--tls-ca goes with --tls-cert", code=2)
        for pem in (self.tls_cert, self.tls_key, self.tls_ca):
            if pem is not None and not pem.is_file():
                raise ClusterError(f"{pem}: no such file", code=2)



@dataclass
class EdgePlan:
    """One site's edge: its ports chosen before the replicas name it as a target."""

    site: Site
    port: int = field(default_factory=free_port)
    https_port: int | None = None        # its nginx front's TLS port (with a certificate)
    front_port: int | None = None        # that nginx's plain http port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def https(self) -> str | None:
        return f"https://127.0.0.1:{self.https_port}" if self.https_port else None

    @property
    def front(self) -> str | None:
        return f"http://127.0.0.1:{self.front_port}" if self.front_port else None

    def targets(self) -> list[str]:
        return [self.url] + ([self.https] if self.https else [])


class Nodes:
    """Starts origin, replicas, the VIP and the edges, in the order their upstreams need."""

    def __init__(self, directory: Path, launcher: Launcher, setup: OriginSetup,
                 options: Options) -> None:
        self.dir = directory
        self.launcher = launcher
        self.setup = setup
        self.options = options
        self.tls = options.tls_cert is not None
        self.edges = [EdgePlan(site) for site in options.sites]
        for edge in self.edges:
            if self.tls:
                edge.https_port, edge.front_port = free_port(), free_port()

    def _trust(self) -> dict[str, str] | None:
        """The replicas read the https edges' /readyz: they trust the cluster's CA (OpenSSL's
        SSL_CERT_FILE, which Python's default context reads; a local cluster reaches no
        other https server)."""
        ca = self.options.tls_ca or self.options.tls_cert
        return {"SSL_CERT_FILE": str(ca.resolve())} if ca is not None and self.edges else None

    def _tls(self, listens: list[str]) -> Tls | None:
        if self.options.tls_cert is None or self.options.tls_key is None:
            return None
        return Tls(tuple(listens), self.options.tls_cert.resolve(),
                   self.options.tls_key.resolve())

    def _nginx(self, name: str, prefix: Path, listens: list[str], upstreams: list[str],
               https: list[str], sites_from: Sequence[Path] = ()) -> Rendered:
        rendered = render(prefix / "nginx.conf", prefix, listens, upstreams,
                          tls=self._tls(https) if https else None, sites_from=sites_from)
        state = self.launcher.state
        if rendered.private_cache_dir:
            state.private_dirs.append(str(rendered.cache_dir))
            state.save()
        self.launcher.start(name, [which("nginx"), "-p", str(prefix), "-c", str(rendered.conf),
                                   "-g", "daemon off;"], cwd=prefix)
        return rendered

    def start(self, *, sync_worker: bool) -> dict[str, Any]:
        timeout, setup = self.options.timeout, self.setup
        origin_port = free_port()
        origin = f"http://127.0.0.1:{origin_port}"
        self.launcher.start("origin", codecache(setup.config, "serve"),
                            env={"CODECACHE_SERVER_LISTEN": f"127.0.0.1:{origin_port}"},
                            cwd=setup.config.parent)
        if sync_worker:
            self.launcher.start("sync", codecache(setup.config, "sync"),
                                cwd=setup.config.parent)
        self.launcher.wait_ready({"origin": origin}, timeout)
        replica_urls, replica_configs = [], []
        for n in range(1, self.options.replicas + 1):
            home = self.dir / f"replica-{n}"
            home.mkdir()
            port = free_port()
            config = home / "codecache.toml"
            write_replica_config(config, port=port, upstream=origin,
                                 trusted_keys=setup.trusted_keys, workers=self.options.workers,
                                 sites=[(e.site, e.targets()) for e in self.edges])
            self.launcher.start(f"replica-{n}", codecache(config, "serve"), cwd=home,
                                env=self._trust())
            replica_urls.append(f"http://127.0.0.1:{port}")
            replica_configs.append(config)
        self.launcher.wait_ready({f"replica-{n}": u for n, u in enumerate(replica_urls, 1)},
                                 timeout)

        ipv6 = has_ipv6_loopback()
        port = self.options.vip_port or free_port(ipv6=ipv6)
        https_port = free_port(ipv6=ipv6) if self.tls else None

        def both(p: int) -> list[str]:
            return [f"127.0.0.1:{p}"] + ([f"[::1]:{p}"] if ipv6 else [])

        prefix = self.dir / "nginx"
        rendered = self._nginx("nginx", prefix, both(port), replica_urls,
                               both(https_port) if https_port else [], replica_configs)
        vip = f"http://127.0.0.1:{port}"
        self.launcher.wait_ready({"nginx": vip}, timeout)
        edges = self._start_edges(vip)
        self._wait_redirecting(replica_urls)
        return {
            "vip": vip,
            "vip6": f"http://[::1]:{port}" if ipv6 else None,
            "vip_https": f"https://127.0.0.1:{https_port}" if https_port else None,
            "origin": origin,
            "replicas": replica_urls,
            "edges": edges,
            "svn_url": setup.svn_url,
            "config": {"origin": str(setup.config), "replicas": [str(c) for c in replica_configs]},
            "nginx": {"conf": str(rendered.conf), "prefix": str(prefix),
                      "cache_dir": str(rendered.cache_dir)},
            "pids": {p.name: p.pid for p in self.launcher.state.processes},
            "dir": str(self.dir),
        }

    def _start_edges(self, vip: str) -> dict[str, dict[str, Any]]:
        """Each site's edge (upstream: the VIP) and, with a certificate, its https front."""
        waiting: dict[str, str] = {}
        edges: dict[str, dict[str, Any]] = {}
        for edge in self.edges:
            name = f"edge-{edge.site.name}"
            home = self.dir / name
            home.mkdir()
            config = home / "codecache.toml"
            write_edge_config(config, port=edge.port, upstream=vip,
                              trusted_keys=self.setup.trusted_keys)
            self.launcher.start(name, codecache(config, "serve"), cwd=home)
            waiting[name] = edge.url
            if edge.front_port is not None and edge.https_port is not None:
                self._nginx(f"nginx-{name}", home / "nginx", [f"127.0.0.1:{edge.front_port}"],
                            [edge.url], [f"127.0.0.1:{edge.https_port}"])
            edges[edge.site.name] = {"url": edge.url, "https": edge.https, "front": edge.front,
                                     "config": str(config), "networks": list(edge.site.networks)}
        self.launcher.wait_ready(waiting, self.options.timeout)
        # An edge's https front answers /readyz once the edge behind it does.
        self.launcher.wait_ready({f"nginx-edge-{e.site.name}": e.front for e in self.edges
                                  if e.front}, self.options.timeout)
        return edges


    def _wait_redirecting(self, replicas: list[str]) -> None:
        """Until every replica sends each site's clients to its edge: each worker process of
        a replica reads the edges' /readyz on its own, so REDIRECT_STREAK answers in a row,
        each on a new connection (the kernel hands them to any worker), are asked of each.

        Raises:
            ClusterError: not within the timeout.
        """
        path = _channel_path(replicas[0]) if self.edges else None
        if path is None:
            return          # no site, or nothing a site's client could be redirected for
        deadline = time.monotonic() + self.options.timeout
        for replica in replicas:
            for edge in self.edges:
                streak, last = 0, ""
                while streak < REDIRECT_STREAK:
                    try:
                        status, body = http_get(replica, f"{path}?site={edge.site.name}")
                    except (OSError, http.client.HTTPException) as e:
                        status, body = 0, str(e).encode()
                    streak = streak + 1 if status == 302 else 0
                    last = f"{status} {body[:120].decode(errors='replace')}"
                    if streak < REDIRECT_STREAK and time.monotonic() > deadline:
                        raise ClusterError(f"{replica} does not redirect site "
                                           f"{edge.site.name!r} to its edge: {last}")
                    if status != 302:
                        time.sleep(0.1)


def _channel_path(base: str) -> str | None:
    """The first channel URL of the index ``base`` serves, or None if it has none."""
    status, body = http_get(base, "/index.json")
    if status != 200:
        return None
    packages = json.loads(body).get("signed", {}).get("packages", {})
    for name, package in sorted(packages.items()):
        for channel in sorted(package.get("channels", {})):
            return f"/{name}/{channel}.tar.gz"
    return None
