"""The release history through the whole shape: origin -> 3 replicas -> nginx VIP.

``codecache history --url`` against the VIP (nginx caches ``/index.json`` and
``/history.json`` a second each, independently, and balances over replicas that may be a
moment apart) gives exactly the origin's history once a publish has propagated.
"""

from __future__ import annotations

import json
from typing import Any

from tests.cluster.helpers import Cluster, get, publish
from tests.conftest import run_cli
from tests.harness.timing import wait_until


def history(cluster: Cluster, *args: str) -> dict[str, Any]:
    result = run_cli("history", "--json", *args, config=cluster.origin_config, check=True)
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_history_through_the_vip_is_the_origins_after_a_publish(cluster: Cluster) -> None:
    publish(cluster, "1.0.0", "production")
    local = history(cluster)
    assert local["entries"][-1]["channel"] == "production"

    def vip_serial() -> int | None:
        status, _, body = get(cluster.vip, "/index.json")
        return json.loads(body)["signed"]["serial"] if status == 200 else None

    wait_until(lambda: vip_serial() == local["serial"], 30, "the VIP serves the new serial",
               interval=0.2, detail=cluster.logs)
    assert history(cluster, "--url", cluster.vip) == local
    theirs = get(cluster.origin, "/history.json")[2]
    for replica in cluster.replicas:   # each one mirrors the origin's file byte for byte
        wait_until(lambda r=replica: get(r, "/history.json")[2] == theirs, 30,
                   f"{replica} mirrors history.json", interval=0.2, detail=cluster.logs)
