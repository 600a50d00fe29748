"""Helpers of the edge serving tests: an origin of many releases, and an edge's disk.

The origin is real (``codecache serve`` of a store synced from a real svnserve): each
release carries a payload of random bytes, so its tarball does not compress away and
sizes are known. What crossed the "WAN" is read from the origin's access log.
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import SvnRepo, make_origin, new_package
from tests.harness.binaries import require
from tests.http.helpers import Server, release_info
from tests.replica.conftest import readyz


def payload_origin(repo: SvnRepo, directory: Path, sizes: dict[str, int], *,
                   seed: int) -> Any:
    """A synced origin of one release per ``sizes`` entry (version → payload bytes, tagged
    in that order), each its own random payload; ``latest`` is the highest version."""
    rng = random.Random(seed)  # noqa: S311 - payload bytes, replayable
    package, _ = new_package(repo)
    for version, size in sizes.items():
        text = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
        repo.change(package, "data/payload.b64", text, message=f"payload {version}")
        repo.tag(package, version)
    origin = make_origin(directory, package, f"{repo.url}/{package}")
    origin.cli("sync", "--once", check=True)
    return origin


def release(origin: Server, version: str) -> tuple[str, int]:
    """(sha256, size) of a release, from the origin's index on disk."""
    info = release_info(origin.origin, version)
    return str(info["sha256"]), int(info["size"])


def cached_files(edge: Server) -> list[Path]:
    """The blob files of the edge's cache (its databases excluded)."""
    return sorted((edge.origin.store / "edge-cache" / "blobs").glob("*/*/*.val"))


def blob_bytes_on_disk(edge: Server) -> int:
    """Blob bytes the edge holds: its store's channel targets plus its cache's files, plus
    any scratch file of a fill."""
    store = edge.origin.store
    files = [*(store / "blobs" / "sha256").iterdir(), *cached_files(edge),
             *(store / "edge-cache" / "tmp").iterdir()]
    return sum(p.stat().st_size for p in files if p.is_file())


def edge_facts(edge: Server) -> dict[str, Any]:
    facts: dict[str, Any] = readyz(edge)["edge"]
    return facts


def seed_from_env(name: str) -> int:
    """A test's random seed: ``$name`` to replay one, else a new one (printed)."""
    value = os.environ.get(name)
    seed = int(value) if value else random.SystemRandom().randrange(1 << 32)
    print(f"{name}={seed}  (set it to replay this run)")
    return seed


def fetches(upstream: Server, sha256: str) -> int:
    """GETs of blob ``sha256`` the upstream answered 200, every one made so far: a request
    made now is waited for in its access log first (the log is written in order)."""
    mark = os.urandom(4).hex()
    upstream.request(f"/healthz?{mark}")
    upstream.wait_for("the upstream's access log is written",
                      lambda: f"/healthz?{mark}" in upstream.log_text(), 10)
    return upstream.log_text().count(f'"GET /blobs/sha256/{sha256}" 200 ')


def curl_at_once(url: str, clients: int, cwd: Path) -> list[tuple[str, bytes]]:
    """``clients`` GETs of ``url`` at once from one real curl (``--parallel``): the status
    and body of each."""
    args = [require("curl"), "-sS", "-Z", "--parallel-max", str(clients),
            "--parallel-immediate", "-w", "%{http_code}\n"]
    for n in range(clients):
        args += ["-o", f"body{n}", url]
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)
    statuses = done.stdout.split()
    assert len(statuses) == clients, done.stderr
    return [(status, (cwd / f"body{n}").read_bytes()) for n, status in enumerate(statuses)]
