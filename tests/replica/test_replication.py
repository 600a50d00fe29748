"""A replica mirrors its origin: same bytes, same ETags, its store as complete as the origin's."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

from tests.conftest import snapshot
from tests.http.helpers import Server, release_info
from tests.replica.conftest import readyz, replica_status, start_replica


def channel_sha(server: Server, package: str, channel: str = "latest") -> str:
    reply = server.request(f"/{package}/{channel}.tar.gz")
    assert reply.status == 200, reply
    return hashlib.sha256(reply.body).hexdigest()


def test_replica_serves_the_origins_bytes_and_keeps_an_inspectable_store(
        served_origin: Server, tmp_path: Path) -> None:
    origin = served_origin
    replica = start_replica(tmp_path / "replica", origin.origin, [origin.base])
    try:
        assert replica.request("/index.json").body == origin.request("/index.json").body
        for path in (f"/{origin.package}/latest.tar.gz", f"/{origin.package}/releases/1.0.0.tar.gz",
                     f"/{origin.package}/releases/1.0.0.tar.gz.minisig"):
            mine, theirs = replica.request(path), origin.request(path)
            assert (mine.status, mine.body) == (200, theirs.body)
            for header in ("etag", "last-modified", "cache-control", "x-codecache-version"):
                assert mine.headers[header] == theirs.headers[header], header
        # The replica's store has what the origin's has: blobs, signatures, the index.
        theirs_files = snapshot(origin.origin.store)
        mine_files = snapshot(replica.origin.store)
        for name in ("index.json", *[k for k in theirs_files if k.startswith(("blobs/sha256/",
                                                                            "signatures/"))]):
            assert mine_files.get(name) == theirs_files[name], name
        # replica.json is written right after the install the server may already serve.
        replica.wait_for("the lag facts are written",
                         lambda: readyz(replica).get("upstream") == origin.base, 10)
        status = replica_status(replica.origin.dir)
        assert status["local"]["role"] == "replica"
        assert status["local"]["replica"]["upstream"] == origin.base
        assert status["local"]["replica"]["seconds_since_confirmed"] <= 30
        body = readyz(replica)
        assert body["ready"] and body["upstream"] == origin.base and body["role"] == "replica"
    finally:
        replica.stop()


def test_a_publish_reaches_every_replica_quickly(served_origin: Server, tmp_path: Path) -> None:
    origin = served_origin
    replicas = [start_replica(tmp_path / f"r{n}", origin.origin, [origin.base])
                for n in range(3)]
    try:
        target = release_info(origin.origin, "1.0.0")["sha256"]
        origin.origin.cli("publish", origin.package, "1.0.0", "--channel", "latest", check=True)
        published = time.monotonic()
        seconds = []
        for replica in replicas:
            replica.wait_for("the replica serves the new channel target",
                             lambda r=replica: channel_sha(r, origin.package) == target, 15)
            seconds.append(time.monotonic() - published)
        # The goal is 2 s (DESIGN.md §5); scripts/bench reports it, a loaded CI machine
        # only has to stay within the generous deadline above.
        print(f"propagation to 3 replicas: {max(seconds):.2f} s")
    finally:
        for replica in replicas:
            replica.stop()


def test_an_unchanged_index_costs_one_304_per_interval(served_origin: Server,
                                                       tmp_path: Path) -> None:
    origin = served_origin
    replica = start_replica(tmp_path / "replica", origin.origin, [origin.base])
    try:
        def index_requests(status: str) -> float:
            text = origin.request("/metrics").body.decode()
            for line in text.splitlines():
                if line.startswith("codecache_http_requests_total{") and 'route="index"' in line \
                        and f'status="{status}"' in line:
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        before_200, before_304 = index_requests("200"), index_requests("304")
        time.sleep(4)
        assert index_requests("200") == before_200
        assert index_requests("304") - before_304 >= 2
    finally:
        replica.stop()


def test_a_replica_of_several_workers_pulls_once_and_every_worker_serves_the_publish(
        served_origin: Server, tmp_path: Path) -> None:
    """One pull loop per server (in worker 0), not per worker; every worker serves."""
    origin = served_origin
    replica = start_replica(tmp_path / "replica", origin.origin, [origin.base],
                            env={"CODECACHE_SERVER_WORKERS": "3"})
    try:
        workers = Path(f"/proc/{replica.process.pid}/task/{replica.process.pid}/children")
        # Ready when the first worker answers; the others may still be starting.
        replica.wait_for("three workers", lambda: len(workers.read_text().split()) == 3, 30)
        target = release_info(origin.origin, "1.0.0")["sha256"]
        origin.origin.cli("publish", origin.package, "1.0.0", "--channel", "latest", check=True)
        answered: set[int] = set()

        def every_worker_serves_it() -> bool:
            # Fresh connections spread over the workers; each one that answers must serve
            # the new target, and all three must have answered.
            pid = json.loads(replica.request("/healthz").body)["pid"]
            if channel_sha(replica, origin.package) != target:
                answered.clear()
                return False
            answered.add(pid)
            return len(answered) == 3

        replica.wait_for("every worker serves the new channel target",
                         every_worker_serves_it, 30)
        # One pull loop, in one worker: only it holds connections to the origin.
        parent, children = replica.process.pid, [int(p) for p in workers.read_text().split()]
        replica.wait_for("a worker holds a connection to the origin", lambda: any(
            _connections_to(pid, origin.port) for pid in children), 30)
        assert _connections_to(parent, origin.port) == 0
        assert sum(_connections_to(pid, origin.port) > 0 for pid in children) == 1
    finally:
        replica.stop()


def _connections_to(pid: int, port: int) -> int:
    """TCP connections of process ``pid`` to 127.0.0.1:``port`` (from /proc, no tools)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[9] in inodes:
            count += 1
    return count
