"""The release history through the whole shape: origin -> 3 replicas -> nginx VIP.

``codecache history --url`` against the VIP (nginx caches ``/index.json`` and
``/history.json`` a second each, independently, and balances over replicas that may be a
moment apart) gives exactly the origin's history once a publish has propagated.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.cluster.helpers import Cluster, get, publish
from tests.conftest import run_cli


def history(cluster: Cluster, *args: str) -> dict[str, Any]:
    result = run_cli("history", "--json", *args, config=cluster.origin_config, check=True)
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_history_through_the_vip_is_the_origins_after_a_publish(cluster: Cluster) -> None:
    publish(cluster, "1.0.0", "production")
    local = history(cluster)
    assert local["entries"][-1]["channel"] == "production"
    deadline = time.monotonic() + 30
    while True:
        status, _, body = get(cluster.vip, "/index.json")
        if status == 200 and json.loads(body)["signed"]["serial"] == local["serial"]:
            break
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.2)
    assert history(cluster, "--url", cluster.vip) == local
    theirs = get(cluster.origin, "/history.json")[2]
    for replica in cluster.replicas:   # each one mirrors the origin's file byte for byte
        while get(replica, "/history.json")[2] != theirs:
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.2)
