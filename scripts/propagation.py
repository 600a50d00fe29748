"""Measure how fast a publish reaches every replica and the VIP of a running cluster.

    .venv/bin/python scripts/propagation.py --dir DIR [--rounds N] [--json]

``DIR`` is a ``scripts/cluster up --dir DIR`` cluster. Each round moves the ``latest``
channel of the sample package between two releases with ``codecache publish`` on the
origin's config and polls (every 20 ms, HEAD of the channel URL, ``X-Codecache-Version``)
until every replica, then the VIP, serves the new target. Prints medians and maxima.
The goals (DESIGN.md §5): every replica within 2 s, the VIP within 3 s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

POLL = 0.02
DEADLINE = 30.0


def served_version(base: str, path: str) -> str | None:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=2)
    try:
        conn.request("HEAD", path, headers={"Cache-Control": "no-cache"})
        response = conn.getresponse()
        response.read()
        return response.getheader("X-Codecache-Version") if response.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def wait_all(nodes: dict[str, str], path: str, version: str, start: float) -> dict[str, float]:
    pending, reached = dict(nodes), {}
    while pending:
        if time.monotonic() - start > DEADLINE:
            raise SystemExit(f"propagation: not within {DEADLINE}s: {sorted(pending)}")
        for name, base in list(pending.items()):
            if served_version(base, path) == version:
                reached[name] = time.monotonic() - start
                del pending[name]
        time.sleep(POLL)
    return reached


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--package", default="pilot")
    parser.add_argument("--versions", default="1.1.0,1.2.0")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # scripts/cluster keeps what `up` printed under "info" in its state file.
    state: dict[str, Any] = json.loads((args.dir / "cluster.json").read_text())
    cluster: dict[str, Any] = state.get("info", state)
    config = cluster["config"]["origin"]
    nodes = {f"replica-{n}": url for n, url in enumerate(cluster["replicas"], start=1)}
    path = f"/{args.package}/latest.tar.gz"
    versions = args.versions.split(",")
    replica_times: list[float] = []
    vip_times: list[float] = []
    for round_ in range(args.rounds):
        version = versions[round_ % len(versions)]
        if served_version(cluster["vip"], path) == version:
            version = versions[(round_ + 1) % len(versions)]
        subprocess.run([sys.executable, "-m", "codecache", "--config", config, "publish",
                        args.package, version, "--channel", "latest"], check=True,
                       capture_output=True)
        start = time.monotonic()
        reached = wait_all({**nodes, "vip": cluster["vip"]}, path, version, start)
        replica_times.append(max(t for name, t in reached.items() if name != "vip"))
        vip_times.append(reached["vip"])
        time.sleep(1.2)  # the VIP's 1 s channel cache must not carry over to the next round
    result = {"rounds": args.rounds, "replicas": len(nodes),
              "all_replicas_seconds": {"median": statistics.median(replica_times),
                                       "max": max(replica_times), "each": replica_times},
              "vip_seconds": {"median": statistics.median(vip_times), "max": max(vip_times),
                              "each": vip_times}}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"publish -> all {len(nodes)} replicas: median "
              f"{result['all_replicas_seconds']['median']:.2f} s, max {max(replica_times):.2f} s;"
              f" -> VIP: median {result['vip_seconds']['median']:.2f} s, "
              f"max {max(vip_times):.2f} s ({args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
