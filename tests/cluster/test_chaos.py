"""With one replica SIGKILLed under load and restarted, pilots through the VIP see no failed
and no corrupted download (DESIGN §8 "Available")."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.cluster.helpers import (
    Cluster,
    Download,
    cluster_cmd,
    pilot_download,
    requests_by_route,
    status_json,
)

DOWNLOADS, IN_FLIGHT = 1500, 200


def test_killing_a_replica_under_load_fails_no_download(cluster: Cluster,
                                                        tmp_path: Path) -> None:
    seed = int(os.environ.get("CLUSTER_TEST_SEED", time.time_ns() % 1_000_000))
    print(f"\nchaos seed {seed} (set CLUSTER_TEST_SEED to repeat)")
    rng = random.Random(seed)  # noqa: S311 -- a reproducible test load, not a secret
    releases = status_json(cluster)["packages"]["pilot"]["releases"]
    paths = ["/pilot/latest.tar.gz", "/pilot/production.tar.gz",
             *(f"/pilot/releases/{v}.tar.gz" for v in releases),
             *(f"/blobs/sha256/{r['sha256']}" for r in releases.values())]
    # A pilot's cache-busting query string makes every download its own front-tier cache
    # entry, so the load reaches the replicas instead of stopping at nginx's cache.
    urls = [f"{cluster.vip}{rng.choice(paths)}?pilot={n}" for n in range(DOWNLOADS)]
    victim_name = f"replica-{rng.randint(1, len(cluster.replicas))}"
    victim = cluster.replicas[int(victim_name.split("-")[1]) - 1]
    served_before = sum(requests_by_route(victim).values())

    done = 0
    lock = threading.Lock()

    def one(n: int) -> Download:
        nonlocal done
        workdir = tmp_path / f"pilot{n % IN_FLIGHT}"
        workdir.mkdir(exist_ok=True)
        result = pilot_download(urls[n], workdir, tries=5)
        with lock:
            done += 1
        return result

    events: list[str] = []

    def chaos() -> None:
        while done < DOWNLOADS // 5:
            time.sleep(0.02)
        served = sum(requests_by_route(victim).values()) - served_before
        events.append(f"{victim_name} served {served:.0f} requests before the kill")
        assert served > 0, f"{victim_name} carried no traffic"
        pid = cluster.pid(victim_name)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert f"{victim_name}/codecache.toml".encode() in b" ".join(cmdline)
        os.kill(pid, signal.SIGKILL)   # directly: no process start between decision and kill
        events.append(f"SIGKILL {victim_name} (pid {pid}) after {done} downloads")
        while done < DOWNLOADS * 2 // 5:
            time.sleep(0.02)
        started = cluster_cmd("start", "--dir", str(cluster.dir), "--node", victim_name)
        assert started.returncode == 0, started.stderr
        events.append(f"{victim_name} restarted and ready after {done} downloads")

    start = time.monotonic()
    with ThreadPoolExecutor(1) as side, ThreadPoolExecutor(IN_FLIGHT) as pool:
        chaos_done = side.submit(chaos)
        results = list(pool.map(one, range(DOWNLOADS)))
        chaos_done.result(timeout=120)
    duration = time.monotonic() - start
    failed = [r for r in results if not r.ok and not r.corrupted]
    corrupted = [r for r in results if r.corrupted]
    retried = sum(r.attempts > 1 for r in results)
    print("; ".join(events))
    print(f"chaos: {DOWNLOADS} downloads, {IN_FLIGHT} in flight, {duration:.1f}s: "
          f"{len(failed)} failed, {len(corrupted)} corrupted, {retried} needed a retry")
    assert not corrupted, corrupted[:3]
    assert not failed, failed[:3]
    served_after = sum(requests_by_route(victim).values())
    assert served_after > 0   # the restarted replica answers again
