"""``codecache check`` against the whole shape ``scripts/cluster up`` starts (origin with its
sync worker, three replicas, nginx VIP): every node and the VIP are OK, by URL from "the
monitoring host" and by config on each node; a hung replica is CRITICAL within the check's
deadline; a killed replica is CRITICAL while the VIP stays OK (nginx takes the next
replica), and OK again once restarted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.check.conftest import check
from tests.cluster.helpers import Cluster, cluster_cmd


def test_every_node_and_the_vip_are_ok(cluster: Cluster) -> None:
    origin = cluster.origin_config
    for url in [cluster.origin, *cluster.replicas, cluster.vip]:
        result = check("--url", url, config=origin)
        assert (result.code, result.state) == (0, "OK"), result.stdout + cluster.logs()
        assert result.value("tarballs_verified") >= 1
    for config in [origin, *map(Path, cluster.info["config"]["replicas"])]:
        result = check(config=config)
        assert result.state == "OK", result.stdout + cluster.logs()
    replica = check("--url", cluster.replicas[0], config=origin)
    assert replica.value("serial_behind") == 0 and "replica serving" in replica.message


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (a server's worker processes share its port)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            found += family(int(child))
    return found


def test_a_hung_replica_is_critical_within_the_timeout(cluster: Cluster) -> None:
    pids = family(cluster.pid("replica-3"))
    for pid in pids:    # hung, not dead: connections are accepted, never answered
        os.kill(pid, signal.SIGSTOP)
    try:
        hung = check("--url", cluster.replicas[2], "--timeout", "2s",
                     config=cluster.origin_config)
        assert (hung.code, hung.state) == (2, "CRITICAL"), hung.stdout
        assert "timed out" in hung.message or "within" in hung.message
    finally:
        for pid in reversed(pids):
            os.kill(pid, signal.SIGCONT)
    again = check("--url", cluster.replicas[2], config=cluster.origin_config)
    assert again.state == "OK", again.stdout + cluster.logs()


def test_a_killed_replica_is_critical_the_vip_ok_and_a_restart_ok(cluster: Cluster) -> None:
    os.kill(cluster.pid("replica-3"), signal.SIGKILL)
    try:
        dead = check("--url", cluster.replicas[2], config=cluster.origin_config)
        assert (dead.code, dead.state) == (2, "CRITICAL"), dead.stdout
        assert "refused" in dead.message.lower()
        for _ in range(4):   # nginx spreads the check's requests over the replicas
            vip = check("--url", cluster.vip, config=cluster.origin_config)
            assert vip.state == "OK", vip.stdout + cluster.logs()
    finally:
        started = cluster_cmd("start", "--dir", str(cluster.dir), "--node", "replica-3")
        assert started.returncode == 0, started.stderr
    back = check("--url", cluster.replicas[2], config=cluster.origin_config)
    assert back.state == "OK", back.stdout + cluster.logs()
