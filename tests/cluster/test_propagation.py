"""A publish on the origin reaches every replica and the VIP (goals: 2 s and 3 s, DESIGN §5,
printed as measured; asserted with a margin for a loaded 2-core machine), and a burst of
pilots right after a channel move costs each replica about one request per second."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.cluster.helpers import (
    Cluster,
    get,
    pilot_download,
    publish,
    requests_by_route,
    status_json,
)
from tests.harness.timing import scaled, wait_until

PATH = "/pilot/latest.tar.gz"


def _serves(base: str, sha256: str) -> bool:
    status, _, body = get(base, PATH)
    return status == 200 and hashlib.sha256(body).hexdigest() == sha256


REPLICA_GOAL, VIP_GOAL = 2.0, 3.0         # DESIGN §5 and the front tier's cache period
REPLICA_BOUND, VIP_BOUND = 10.0, 12.0     # asserted (scaled): the goals plus load margin


def _seconds_until_served(base: str, sha256: str, since: float, timeout: float) -> float:
    try:
        wait_until(lambda: _serves(base, sha256), timeout, f"{base} serves {sha256[:12]}",
                   interval=0.02, ignore=(OSError,))
    except AssertionError:
        return math.inf
    return time.monotonic() - since


def test_publish_reaches_every_replica_within_10s_and_the_vip_within_12s(
        cluster: Cluster) -> None:
    releases = status_json(cluster)["packages"]["pilot"]["releases"]
    target = releases["1.0.0"]["sha256"]
    assert not _serves(cluster.vip, target)
    published = publish(cluster, "1.0.0", "latest")
    with ThreadPoolExecutor(len(cluster.replicas) + 1) as pool:
        futures = {base: pool.submit(_seconds_until_served, base, target, published, 15)
                   for base in [*cluster.replicas, cluster.vip]}
        seconds = {base: f.result() for base, f in futures.items()}
    vip = seconds.pop(cluster.vip)
    slowest = max(seconds.values())
    print(f"\npropagation after publish: replicas "
          f"{', '.join(f'{s:.2f}s' for s in seconds.values())} (slowest {slowest:.2f}s, "
          f"goal {REPLICA_GOAL:g}s); VIP {vip:.2f}s (goal {VIP_GOAL:g}s)")
    # Generous margins for a loaded 2-core machine; the figures above are the measurement.
    assert slowest < scaled(REPLICA_BOUND), cluster.logs()
    assert vip < scaled(VIP_BOUND), cluster.logs()


def test_burst_after_a_channel_move_costs_each_replica_about_one_request_per_second(
        cluster: Cluster, tmp_path: Path) -> None:
    releases = status_json(cluster)["packages"]["pilot"]["releases"]
    before = {base: requests_by_route(base).get("channel", 0.0) for base in cluster.replicas}
    publish(cluster, "1.1.0", "latest")
    pilots, in_flight = 600, 100
    lock = threading.Lock()
    seq = iter(range(pilots))

    def one(_: int) -> tuple[bool, bool, str | None]:
        with lock:
            n = next(seq)
        workdir = tmp_path / f"pilot{n % in_flight}"
        workdir.mkdir(exist_ok=True)
        result = pilot_download(cluster.vip + PATH, workdir, tries=1)
        return result.ok, result.corrupted, result.version

    start = time.monotonic()
    with ThreadPoolExecutor(in_flight) as pool:
        results = list(pool.map(one, range(pilots)))
    duration = time.monotonic() - start
    after = {base: requests_by_route(base).get("channel", 0.0) for base in cluster.replicas}
    upstream = {base: after[base] - before[base] for base in cluster.replicas}
    failed = sum(not ok for ok, _, _ in results)
    corrupted = sum(bad for _, bad, _ in results)
    versions = {v: sum(1 for *_, w in results if w == v) for v in {r[2] for r in results}}
    total = sum(upstream.values())
    periods = math.ceil(duration) + 2     # front-tier cache period: 1 s
    print(f"\nburst: {pilots} pilots ({in_flight} in flight) in {duration:.1f}s, "
          f"versions {versions}; channel requests reaching the replicas: {total:.0f} "
          f"({', '.join(f'{v:.0f}' for v in upstream.values())}); "
          f"allowed about {periods} per replica")
    assert failed == 0 and corrupted == 0
    assert set(versions) <= {"1.1.0", "1.0.0"}
    assert versions.get("1.1.0", 0) > 0
    assert all(v <= periods for v in upstream.values()), upstream
    assert total <= periods * 1.5, upstream
    assert releases["1.1.0"]["sha256"]
