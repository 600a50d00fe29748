"""An edge follows the signed index like a replica, holding only the channel targets.

Real processes: a served origin (``codecache serve`` of a synced store), edges (``codecache
serve`` with ``role = "edge"``), the origin's access log as the count of what crossed the
"WAN". DESIGN.md §5: channel targets are fetched as soon as the index names them, before
any pilot asks; the new index is swapped in only once they are held, so ``/readyz`` never
flaps across a publish; a target that stops being one goes to the bounded cache (a move
back takes it from there, not from the upstream); an upstream that is a pool answering a
lower serial after a higher one, with a prefix of the history held, is ``stale_upstream``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

from codecache.core.names import blob_url_path
from tests.conftest import Origin, copy_origin, run_cli
from tests.edge.conftest import (
    ReadyzPoller,
    channel_target,
    publish,
    sha256_of,
    start_edge,
    store_blobs,
    upstream_fetches,
)
from tests.harness.timing import free_port
from tests.http.helpers import Server, release_info, running
from tests.replica.conftest import readyz, write_replica_config
from tests.replica.upstream import FakeUpstream, Handler, Responder, body, index, send


def flushed(upstream: Server, mark: str) -> None:
    """Wait until the upstream's access log has a request made now (and so every earlier
    line: the log is written in order)."""
    upstream.request(f"/healthz?{mark}")
    upstream.wait_for("the upstream's access log is written",
                      lambda: f"/healthz?{mark}" in upstream.log_text(), 10)


def test_channel_targets_are_prefetched_and_the_index_swapped_once_they_are_held(
        edge_origin: Server, tmp_path: Path) -> None:
    origin = edge_origin
    first = channel_target(origin)
    other = next(v for v in ("1.0.0", "1.2.0") if v != first)
    first_sha, other_sha = sha256_of(origin, first), sha256_of(origin, other)
    edge = start_edge(tmp_path / "edge", origin.origin, [origin.base])
    try:
        # Ready holding the channel target alone: the other release is not fetched.
        assert store_blobs(edge) == [first_sha]
        with ReadyzPoller(edge) as poller:
            before = upstream_fetches(origin, other_sha)
            serial = publish(origin, other)
            edge.wait_for("the edge swaps in the new index",
                          lambda: readyz(edge)["serial"] == serial, 15)
            # The burst after a publish never waits on the WAN: the target is on disk.
            reply = edge.request(f"/{origin.package}/latest.tar.gz")
            assert reply.status == 200 and hashlib.sha256(reply.body).hexdigest() == other_sha
            flushed(origin, "prefetch")
            # Fetched once by the pull loop, before any pilot asked the edge for it.
            assert upstream_fetches(origin, other_sha) == before + 1
            assert store_blobs(edge) == [other_sha]   # the former target left the store

            # A move back: the former target comes from the edge's cache, not the upstream.
            before = upstream_fetches(origin, first_sha)
            serial = publish(origin, first)
            edge.wait_for("the edge swaps in the move back",
                          lambda: readyz(edge)["serial"] == serial, 15)
            flushed(origin, "back")
            assert upstream_fetches(origin, first_sha) == before
            assert store_blobs(edge) == [first_sha]
        statuses = {status for status, _ in poller.seen}
        serials = [s for _, s in poller.seen]
        print(f"/readyz read {len(poller.seen)} times across two publishes: {statuses}")
        assert statuses == {200}, [seen for seen in poller.seen if seen[0] != 200][:5]
        assert serials == sorted(serials) and serials[-1] == serial
    finally:
        edge.stop()


def test_a_pool_member_behind_is_a_stale_upstream_not_a_rollback(
        template_origin: Origin, tmp_path: Path) -> None:
    """The edge's upstream is one URL in front of a pool (the VIP): after answering a
    serial, it may answer a lower one from a member that has not caught up (emulated for
    real: another server at the same address, serving the index before the publish)."""
    port = free_port()
    current = copy_origin(template_origin, tmp_path / "current")
    behind = copy_origin(template_origin, tmp_path / "behind")   # the same history, shorter
    with running(current, port=port) as upstream:
        edge = start_edge(tmp_path / "edge", current, [upstream.base])
        try:
            version = next(v for v in ("1.0.0", "1.2.0") if v != channel_target(upstream))
            serial = publish(upstream, version)
            edge.wait_for("the edge takes the publish",
                          lambda: readyz(edge)["serial"] == serial, 15)
        except BaseException:
            edge.stop()
            raise
    try:
        with running(behind, port=port) as member:
            older = readyz(member)["serial"]
            assert older < serial

            def refusals() -> dict[str, int]:
                found: dict[str, int] = readyz(edge)["replica"]["refusals"]
                return found

            edge.wait_for("the edge has asked the member behind",
                          lambda: refusals().get("stale_upstream", 0) >= 2, 15)
            assert "rollback" not in refusals()
            body = readyz(edge)
            assert body["ready"] and body["serial"] == serial   # the newer index kept
            assert "stale_upstream" in body["replica"]["last_error"]
    finally:
        edge.stop()


def test_replicate_once_pulls_an_edge_store_without_a_server(edge_origin: Server,
                                                               tmp_path: Path) -> None:
    """``codecache replicate --once`` (and its operator override) works on an edge too."""
    config = write_replica_config(tmp_path / "edge", edge_origin.origin.public_key,
                                  [edge_origin.base], role="edge",
                                  edge={"cache_size": "10MB"})
    result = run_cli("replicate", "--once", config=config)
    assert result.returncode == 0, result.stderr
    target = sha256_of(edge_origin, channel_target(edge_origin))
    assert sorted(p.name for p in (tmp_path / "edge" / "store" / "blobs" / "sha256").iterdir()) \
        == [target]


def test_the_old_index_is_served_while_a_new_channel_target_is_on_its_way(
        template_origin: Origin, tmp_path: Path) -> None:
    """A slow WAN, made visible: the upstream (a fake, the one fault the real server cannot
    produce: a transfer that takes seconds) serves the real signed indexes, and the new
    channel target half at once, the rest 2 s later. All that while the edge serves the
    index it held, ready; it swaps once the whole target is on its disk."""
    after = copy_origin(template_origin, tmp_path / "after")
    old_version = channel_target_of(template_origin)
    new_version = next(v for v in ("1.0.0", "1.2.0") if v != old_version)
    after.cli("publish", after.package, new_version, "--channel", "latest", check=True)
    old_sha = release_info(template_origin, old_version)["sha256"]
    new_sha = release_info(after, new_version)["sha256"]
    new_blob = (after.store / "blobs" / "sha256" / new_sha).read_bytes()
    arrived = threading.Event()

    def slowly(handler: Handler) -> None:
        send(handler, 200, new_blob[:len(new_blob) // 2], length=len(new_blob))
        time.sleep(2)
        handler.wfile.write(new_blob[len(new_blob) // 2:])
        handler.wfile.flush()
        arrived.set()

    def routes(origin: Origin) -> dict[str, Responder]:
        return {"/index.json": index((origin.store / "index.json").read_bytes()),
                "/history.json": body((origin.store / "history.json").read_bytes())}

    with FakeUpstream() as upstream:
        upstream.set({**routes(template_origin), blob_url_path(old_sha): body(
            (template_origin.store / "blobs" / "sha256" / old_sha).read_bytes())})
        edge = start_edge(tmp_path / "edge", template_origin, [upstream.base])
        try:
            before = readyz(edge)["serial"]
            since = upstream.set({**routes(after), blob_url_path(new_sha): slowly})
            edge.wait_for("the edge asks for the new target",
                          lambda: bool(upstream.requests(blob_url_path(new_sha), since)), 10)
            seen = []
            while not arrived.is_set():
                reply, body_sha = edge.request("/readyz"), latest_sha(edge, after.package)
                seen.append((reply.status, json.loads(reply.body)["serial"], body_sha))
                time.sleep(0.05)
            print(f"{len(seen)} reads while the target was on its way")
            assert len(seen) >= 10
            assert set(seen) == {(200, before, old_sha)}, set(seen)
            edge.wait_for("the edge serves the new index",
                          lambda: latest_sha(edge, after.package) == new_sha, 10)
            assert readyz(edge)["serial"] > before
        finally:
            edge.stop()


def channel_target_of(origin: Origin) -> str:
    document = json.loads((origin.store / "index.json").read_bytes())
    version: str = document["signed"]["packages"][origin.package]["channels"]["latest"][
        "version"]
    return version


def latest_sha(edge: Server, package: str) -> str:
    reply = edge.request(f"/{package}/latest.tar.gz")
    assert reply.status == 200, reply
    return hashlib.sha256(reply.body).hexdigest()
