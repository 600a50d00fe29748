"""A frozen replica (SIGSTOP: it still accepts connections, it never answers) costs a pilot
behind the VIP a few seconds, not a failed download: nginx gives up on it after
``proxy_read_timeout`` and tries the next replica within ``proxy_next_upstream_timeout``."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

from tests.cluster.helpers import Cluster
from tests.harness.clients import curl

DOWNLOADS = 9   # sequential, round robin over three replicas: three or so reach the frozen one


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant (a replica is a supervisor and its worker processes)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue   # the process ended while we looked
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def test_a_frozen_replica_fails_no_download_through_the_vip(cluster: Cluster,
                                                           workdir: Path) -> None:
    frozen = process_tree(cluster.pid("replica-1"))
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        took: list[float] = []
        for n in range(DOWNLOADS):
            start = time.monotonic()
            # One try, no client retry: the front tier alone must route around the replica.
            response = curl(f"{cluster.vip}/pilot/latest.tar.gz?frozen={n}", cwd=workdir,
                            timeout=25)
            took.append(time.monotonic() - start)
            assert response.exit_code == 0, response.stderr
            assert response.status == 200, f"download {n}: {response.status} {response.body!r}"
            digest = hashlib.sha256(response.body).hexdigest()
            assert response.header("etag") == f'"sha256-{digest}"'
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    print(f"\n{DOWNLOADS} downloads with replica-1 frozen: slowest {max(took):.1f} s, "
          f"median {sorted(took)[len(took) // 2]:.2f} s")
