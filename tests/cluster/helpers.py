"""Helpers for the cluster tests: ``scripts/cluster`` as a user runs it, real curl clients.

Nothing is mocked: ``scripts/cluster up`` starts a real svnserve, origin, replicas
(``codecache serve`` with ``role = "replica"``) and nginx; downloads are real ``curl``
processes. ``http.client`` is used only to poll a state (readiness, metrics, propagation).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import cli_env
from tests.harness.clients import curl
from tests.harness.tls import LocalCa

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count()


def cluster_cmd(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``bash scripts/cluster ARGS`` (without any CODECACHE_* from the test's env)."""
    return subprocess.run(["bash", str(REPO / "scripts" / "cluster"), *args],
                          capture_output=True, text=True, timeout=timeout, env=cli_env(),
                          check=False)


@dataclass
class Cluster:
    """A running cluster, as ``scripts/cluster up`` described it."""

    dir: Path
    info: dict[str, Any]

    @property
    def vip(self) -> str:
        return str(self.info["vip"])

    @property
    def origin(self) -> str:
        return str(self.info["origin"])

    @property
    def replicas(self) -> list[str]:
        return list(self.info["replicas"])

    @property
    def origin_config(self) -> Path:
        return Path(self.info["config"]["origin"])

    def pid(self, name: str) -> int:
        state = json.loads((self.dir / "cluster.json").read_text())
        return next(int(p["pid"]) for p in state["processes"] if p["name"] == name)

    def logs(self) -> str:
        """The tails of every log file, for a failure message."""
        parts = []
        for log in sorted((self.dir / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)


@dataclass
class SiteCluster(Cluster):
    """A cluster with site "bnl" and its edge, the VIP serving https too."""

    tls: LocalCa

    @property
    def vip_https(self) -> str:
        return str(self.info["vip_https"])

    @property
    def edge(self) -> dict[str, str]:
        return dict(self.info["edges"]["bnl"])

    @property
    def access_log(self) -> Path:
        """The VIP's nginx access log."""
        return Path(self.info["nginx"]["prefix"]) / "logs" / "access.log"


@contextlib.contextmanager
def cluster_up(directory: Path, *args: str) -> Iterator[Cluster]:
    """``scripts/cluster up --dir directory ARGS``; ``down`` when the block ends."""
    result = cluster_cmd("up", "--dir", str(directory), *args)
    try:
        assert result.returncode == 0, f"cluster up failed:\n{result.stderr}"
        yield Cluster(directory, json.loads(result.stdout))
    finally:
        # Also after a failed ``up``: what it started before failing must not outlive it.
        down = cluster_cmd("down", "--dir", str(directory))
        assert down.returncode == 0 or result.returncode != 0, down.stderr


# --- polling (not the clients under test) ---------------------------------------------------


def get(base: str, path: str, headers: dict[str, str] | None = None,
        timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read())
    finally:
        conn.close()


_SAMPLE = re.compile(r'^codecache_http_requests_total\{route="([^"]*)",status="([^"]*)"\}'
                     r"\s+(\S+)$")


def requests_by_route(base: str) -> dict[str, float]:
    """A node's ``codecache_http_requests_total``, summed over statuses, by route."""
    status, _, body = get(base, "/metrics")
    assert status == 200
    counts: dict[str, float] = {}
    for line in body.decode().splitlines():
        match = _SAMPLE.match(line)
        if match:
            counts[match[1]] = counts.get(match[1], 0.0) + float(match[3])
    return counts


def status_json(cluster: Cluster) -> dict[str, Any]:
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "codecache"), "--config", str(cluster.origin_config),
         "status", "--json"], capture_output=True, text=True, timeout=60, env=cli_env(),
        check=True)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def publish(cluster: Cluster, version: str, channel: str) -> float:
    """``codecache publish`` on the origin; returns the monotonic time it returned."""
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "codecache"), "--config", str(cluster.origin_config),
         "publish", "pilot", version, "--channel", channel], capture_output=True, text=True,
        timeout=120, env=cli_env(), check=False)
    assert result.returncode == 0, result.stderr
    return time.monotonic()


# --- the clients under test ---------------------------------------------------------------


@dataclass
class Download:
    """A pilot's download with retries, as ``wget --tries`` / ``curl --retry`` do."""

    url: str
    ok: bool            # a 200 whose body hashes to its ETag
    corrupted: bool     # a 200 that curl called complete but whose body does not match
    attempts: int
    version: str | None
    last_error: str


def pilot_download(url: str, cwd: Path, *, tries: int = 5, pause: float = 0.3) -> Download:
    """Download ``url`` until a complete 200 arrives (at most ``tries`` times); check the
    body's sha256 against the ETag ("sha256-<hex>")."""
    error = ""
    for attempt in range(1, tries + 1):
        response = curl(url, cwd=cwd, timeout=30)
        if response.exit_code == 0 and response.status == 200:
            etag = response.header("etag") or ""
            digest = hashlib.sha256(response.body).hexdigest()
            good = etag == f'"sha256-{digest}"'
            return Download(url, good, not good, attempt, response.header("x-codecache-version"),
                            "" if good else f"etag {etag} != sha256 {digest}")
        error = f"curl exit {response.exit_code} status {response.status} {response.stderr}"
        time.sleep(pause * attempt)
    return Download(url, False, False, tries, None, error)
