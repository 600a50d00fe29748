"""A hostile upstream never replaces the good index a replica serves (DESIGN.md §5).

The replica is the real ``codecache serve`` (role replica) on loopback; its only upstream is
a fake (``tests/replica/upstream.py``): a small real HTTP server in the test process, since
a hostile upstream cannot be produced with the real server. The fake first serves a good
signed index and its blob; then, case after case, something hostile. Each case waits until
the replica's ``/metrics`` counts it under its reason, and shows the replica still serves
the good index and tarball bytes with ``/readyz`` 200. A final valid newer index is taken
(the positive control). One replica runs the whole sequence, so the cases run in order.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Origin
from tests.http.helpers import Server, release_info, start_server
from tests.replica.conftest import readyz, start_replica
from tests.replica.upstream import (
    FakeUpstream,
    Handler,
    Publisher,
    Responder,
    blob_routes,
    body,
    dump,
    endless_chunked,
    index,
    redirect,
    send,
    stalled,
    write_replica_dir,
)

pytestmark = pytest.mark.timeout(120)

CAP = 256 * 1024          # [replica] max_index_size: a gzip bomb's compressed bytes fit under it
GOOD_SERIAL = 1000
GOOD_BLOB = b"good tarball bytes " * 4096
BOMB_BYTES = 100 * 1024 * 1024


@dataclass
class World:
    """One replica and its one upstream, through the whole sequence of cases."""

    publisher: Publisher
    upstream: FakeUpstream
    elsewhere: FakeUpstream           # where a redirect points: must never be asked
    replica: Server
    good_doc: bytes
    good_releases: dict[str, bytes]
    serial: int = GOOD_SERIAL         # the highest serial the upstream offered (signed)
    figures: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.replica.origin.store

    def newer(self) -> int:
        self.serial += 1
        return self.serial


def replica_server(directory: Path, publisher: Publisher, upstreams: list[str]) -> Server:
    """``codecache serve`` as a replica of ``upstreams``; returns once it is ready."""
    config = write_replica_dir(directory, publisher, upstreams, interval=0.3, timeout="1s",
                               max_index_size=CAP)
    record = Origin(directory, config, directory / "store", directory / "keys" / "none",
                    directory / "keys" / "codecache.pub", publisher.package, "")
    return start_server(record)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    publisher = Publisher()
    releases = {"1.0.0": GOOD_BLOB}
    good_doc = publisher.sign(publisher.make_index(GOOD_SERIAL, releases, "1.0.0"))
    with FakeUpstream() as upstream, FakeUpstream() as elsewhere:
        upstream.set({"/index.json": index(good_doc), **blob_routes(releases)})
        elsewhere.set({"/index.json": index(good_doc), **blob_routes(releases)})
        replica = replica_server(tmp_path_factory.mktemp("hostile") / "replica", publisher,
                                 [upstream.base])
        try:
            assert replica.request("/index.json").body == good_doc
            yield World(publisher, upstream, elsewhere, replica, good_doc, releases)
        finally:
            replica.stop()


# --- observing the replica ----------------------------------------------------------------


def metric(server: Server, family: str, reason: str) -> float:
    """``codecache_replica_{family}_total{reason="..."}`` from the replica's /metrics."""
    text = server.request("/metrics").body.decode()
    prefix = f'codecache_replica_{family}_total{{reason="{reason}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


def pulled_counts(store: Path, family: str) -> dict[str, int]:
    """The pull loop's own counters (``replica.json``), read straight from the store."""
    key = {"refusals": "refusals", "upstream_errors": "errors", "pulls": "pulls"}[family]
    counts: dict[str, int] = json.loads((store / "replica.json").read_bytes())[key]
    return counts


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def switch_and_count(world: World, routes: dict[str, Responder], family: str,
                     reason: str) -> tuple[int, float]:
    """Serve ``routes``; wait until /metrics counts ``reason`` for a pull that saw them.

    Pulls run one after another and each saves its counters before the next begins, so
    once the upstream has answered the first index request of the new routes, the saved
    counters hold every earlier pull: an increase past them is this case's.
    Returns the generation and the seconds from switching to the count.
    """
    switched = time.monotonic()
    generation = world.upstream.set(routes)
    world.replica.wait_for("an index request to the switched upstream",
                           lambda: bool(world.upstream.requests("/index.json", generation)), 15)
    baseline = pulled_counts(world.store, family).get(reason, 0)
    world.replica.wait_for(f"/metrics counts {family} reason={reason} past {baseline}",
                           lambda: metric(world.replica, family, reason) > baseline, 20)
    return generation, time.monotonic() - switched


def assert_serves_the_good_index(world: World) -> None:
    replica = world.replica
    assert replica.process.poll() is None, replica.log_tail()
    assert replica.request("/index.json").body == world.good_doc
    tarball = replica.request(f"/{world.publisher.package}/latest.tar.gz")
    assert (tarball.status, tarball.body) == (200, world.good_releases["1.0.0"])
    ready = replica.request("/readyz")
    assert ready.status == 200, ready
    assert json.loads(ready.body)["serial"] == GOOD_SERIAL
    assert (world.store / "index.json").read_bytes() == world.good_doc


# --- the hostile cases, in order ----------------------------------------------------------


def good_payload(world: World) -> dict[str, object]:
    payload: dict[str, object] = json.loads(world.good_doc)["signed"]
    return payload


def signature_flipped(world: World) -> dict[str, Responder]:
    document = json.loads(world.good_doc)
    sig = document["signatures"][0]["sig"]
    document["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    return {"/index.json": index(dump(document))}


def untrusted_key(world: World) -> dict[str, Responder]:
    stranger = Publisher()   # a key the replica does not trust, signing a newer index
    doc = stranger.sign(stranger.make_index(world.serial + 1, {"6.6.6": b"evil"}, "6.6.6"))
    return {"/index.json": index(doc), **blob_routes({"6.6.6": b"evil"})}


def payload_edited(world: World) -> dict[str, Responder]:
    document = json.loads(world.good_doc)
    document["signed"]["serial"] = world.serial + 100   # edited after signing
    document["signed"]["expires"] = "2099-01-01T00:00:00Z"
    return {"/index.json": index(dump(document))}


def older_serial(world: World) -> dict[str, Responder]:
    doc = world.publisher.sign(world.publisher.make_index(world.serial - 1, world.good_releases,
                                                         "1.0.0"))
    return {"/index.json": index(doc), **blob_routes(world.good_releases)}


def same_serial_other_bytes(world: World) -> dict[str, Responder]:
    # The serial this upstream offered last, signed again over another payload (two writers).
    doc = world.publisher.sign(world.publisher.make_index(
        world.serial, world.good_releases, "1.0.0", expires_in=7200))
    assert doc != world.good_doc
    return {"/index.json": index(doc), **blob_routes(world.good_releases)}


def expired(world: World) -> dict[str, Responder]:
    releases = {**world.good_releases, "1.1.0": b"frozen " * 1000}
    past = int(time.time()) - 7200
    doc = world.publisher.sign(world.publisher.make_index(world.newer(), releases, "1.1.0",
                                                         generated=past, expires_in=3600))
    return {"/index.json": index(doc), **blob_routes(releases)}


def unknown_format(world: World) -> dict[str, Responder]:
    payload = {**good_payload(world), "format": 3, "serial": world.serial + 1}
    return {"/index.json": index(world.publisher.sign_payload(payload))}


def blob_bytes_differ(world: World) -> dict[str, Responder]:
    listed = b"the release the index signs " * 512
    releases = {**world.good_releases, "1.3.0": listed}
    doc = world.publisher.sign(world.publisher.make_index(world.newer(), releases, "1.3.0"))
    wrong = bytes(reversed(listed))         # same size, other bytes
    routes = {"/index.json": index(doc), **blob_routes(world.good_releases)}
    routes[f"/blobs/sha256/{hashlib.sha256(listed).hexdigest()}"] = body(wrong)
    return routes


def announced_too_large(world: World) -> dict[str, Responder]:
    # Announces 10 MiB, sends 64 KiB and hangs up: only the announced length can refuse it.
    return {"/index.json": body(b"{" * 65536, length=10 * 1024 * 1024)}


def endless_body(world: World) -> dict[str, Responder]:
    return {"/index.json": endless_chunked(world.upstream.closing)}


def gzip_bomb(world: World) -> dict[str, Responder]:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)    # wbits 31: the gzip container
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(BOMB_BYTES >> 20)) + packer.flush()
    assert len(bomb) < CAP
    world.figures["gzip bomb"] = f"{len(bomb)} bytes inflating to {BOMB_BYTES >> 20} MiB"
    return {"/index.json": body(bomb, headers={"Content-Encoding": "gzip",
                                               "Content-Type": "application/json"})}


def html_page(world: World) -> dict[str, Responder]:
    page = b"<!DOCTYPE html><html><body><h1>Service Unavailable</h1></body></html>\n"
    return {"/index.json": body(page, headers={"Content-Type": "text/html"})}


def truncated_json(world: World) -> dict[str, Responder]:
    return {"/index.json": body(world.good_doc[: len(world.good_doc) // 2])}


def server_error(world: World) -> dict[str, Responder]:
    return {"/index.json": body(b"<html>oops</html>", 500, reason="Internal Server Error")}


def redirect_elsewhere(world: World) -> dict[str, Responder]:
    return {"/index.json": redirect(f"{world.elsewhere.base}/index.json")}


def blob_redirected(world: World) -> dict[str, Responder]:
    # A new index whose blob the other server really has: following would install it.
    releases = {**world.good_releases, "1.4.0": b"elsewhere " * 2000}
    doc = world.publisher.sign(world.publisher.make_index(world.newer(), releases, "1.4.0"))
    world.elsewhere.set({"/index.json": index(doc), **blob_routes(releases)})
    routes = {"/index.json": index(doc), **blob_routes(world.good_releases)}
    path = f"/blobs/sha256/{hashlib.sha256(releases['1.4.0']).hexdigest()}"
    routes[path] = redirect(world.elsewhere.base + path)
    return routes


def stalled_body(world: World) -> dict[str, Responder]:
    return {"/index.json": stalled(world.upstream.closing)}


@dataclass(frozen=True)
class Case:
    name: str
    routes: Callable[[World], dict[str, Responder]]
    family: str       # refusals or upstream_errors
    reason: str


CASES = [
    Case("signature_bytes_flipped", signature_flipped, "refusals", "bad_signature"),
    Case("untrusted_key", untrusted_key, "refusals", "bad_signature"),
    Case("payload_edited_after_signing", payload_edited, "refusals", "bad_signature"),
    Case("older_serial_than_offered_before", older_serial, "refusals", "rollback"),
    Case("same_serial_other_bytes", same_serial_other_bytes, "refusals", "conflict"),
    Case("newer_but_expired", expired, "refusals", "expired"),
    Case("unknown_format_signed", unknown_format, "refusals", "unsupported_format"),
    Case("blob_bytes_do_not_match", blob_bytes_differ, "refusals", "blob_mismatch"),
    Case("content_length_over_cap", announced_too_large, "refusals", "too_large"),
    Case("endless_chunked_body", endless_body, "refusals", "too_large"),
    Case("gzip_bomb", gzip_bomb, "refusals", "bad_encoding"),
    Case("html_error_page_with_200", html_page, "refusals", "malformed"),
    Case("truncated_json", truncated_json, "refusals", "malformed"),
    Case("http_500", server_error, "upstream_errors", "http_5xx"),
    Case("redirect_to_another_server", redirect_elsewhere, "upstream_errors", "redirect"),
    Case("blob_redirected_to_another_server", blob_redirected, "upstream_errors", "redirect"),
    Case("stalled_body", stalled_body, "upstream_errors", "timeout"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_upstream_is_counted_and_the_good_index_kept(world: World, case: Case) -> None:
    pid = world.replica.process.pid
    rss_before = rss_kib(pid)
    generation, seconds = switch_and_count(world, case.routes(world), case.family, case.reason)
    if case.name == "gzip_bomb":
        # A few more bombs, then look at the replica's memory: it never inflated one.
        world.replica.wait_for("three bombs served", lambda: len(
            world.upstream.requests("/index.json", generation)) >= 3, 15)
        grown = rss_kib(pid) - rss_before
        print(f"\ngzip bomb: {world.figures['gzip bomb']}; replica RSS {rss_before} KiB, "
              f"grew {grown} KiB")
        assert grown < 50 * 1024, f"RSS grew {grown} KiB on a gzip bomb"
    if case.name in ("redirect_to_another_server", "blob_redirected_to_another_server"):
        world.replica.wait_for("two more redirects", lambda: len(
            world.upstream.requests("/index.json", generation)) >= 3, 15)
        assert world.elsewhere.requests() == [], "the replica followed a redirect"
    if case.name == "stalled_body":
        hits = world.replica.wait_for("a second pull after the stall", lambda: len(
            world.upstream.requests("/index.json", generation)) >= 2, 20)
        first, second = world.upstream.requests("/index.json", generation)[:2]
        stall = second.at - first.at
        print(f"\nstalled body: the replica gave up and pulled again after {stall:.2f} s "
              f"(timeout 1 s, interval 0.3 s; waited {hits:.2f} s)")
        assert stall < 10
    if case.family == "refusals":
        assert case.reason in readyz(world.replica)["replica"]["refusals"]
    assert_serves_the_good_index(world)
    print(f"\n{case.name}: counted as {case.family}{{reason={case.reason}}} "
          f"{seconds:.2f} s after the switch")


def test_a_valid_newer_index_is_still_taken_after_all_that(world: World) -> None:
    releases = {**world.good_releases, "2.0.0": b"the next pilot " * 5000}
    doc = world.publisher.sign(world.publisher.make_index(world.newer(), releases, "2.0.0"))
    world.upstream.set({"/index.json": index(doc), **blob_routes(releases)})
    seconds = world.replica.wait_for("the replica serves the newer index", lambda:
                                     world.replica.request("/index.json").body == doc, 20)
    tarball = world.replica.request(f"/{world.publisher.package}/latest.tar.gz")
    assert (tarball.status, tarball.body) == (200, releases["2.0.0"])
    old = world.replica.request(f"/{world.publisher.package}/releases/1.0.0.tar.gz")
    assert (old.status, old.body) == (200, world.good_releases["1.0.0"])
    body_ = readyz(world.replica)
    assert body_["ready"] and body_["serial"] == world.serial
    assert world.replica.process.poll() is None
    print(f"\npositive control: serial {world.serial} served {seconds:.2f} s after it was "
          f"offered; refusals so far {body_['replica']['refusals']}")


def test_failover_follows_a_real_origin_after_a_hostile_first_upstream(
        served_origin: Server, tmp_path: Path) -> None:
    """upstreams = [hostile fake, real origin]: every pull is refused by the first, taken
    from the second; a publish on the origin reaches the replica all the same."""
    origin = served_origin

    def tampered(h: Handler) -> None:
        # Whatever the origin offers now, its serial raised after signing.
        document = json.loads(origin.request("/index.json").body)
        document["signed"]["serial"] += 1
        send(h, 200, dump(document))

    with FakeUpstream() as hostile:
        hostile.set({"/index.json": tampered})
        replica = start_replica(tmp_path / "replica", origin.origin, [hostile.base, origin.base],
                                interval="1s")
        try:
            assert replica.request("/index.json").body == origin.request("/index.json").body
            target = release_info(origin.origin, "1.0.0")["sha256"]
            origin.origin.cli("publish", origin.package, "1.0.0", "--channel", "latest",
                              check=True)
            published = (origin.origin.store / "index.json").read_bytes()
            seconds = replica.wait_for("the replica follows the origin", lambda:
                                       replica.request("/index.json").body == published, 20)
            tarball = replica.request(f"/{origin.package}/latest.tar.gz")
            assert tarball.status == 200
            assert hashlib.sha256(tarball.body).hexdigest() == target
            # The pull that took the publish was refused by the hostile upstream first, as
            # was the very first pull: at least two refusals.
            replica.wait_for("two refusals of the hostile upstream counted", lambda:
                             metric(replica, "refusals", "bad_signature") >= 2, 10)
            refused = metric(replica, "refusals", "bad_signature")
            body_ = readyz(replica)
            assert body_["ready"] and body_["upstream"] == origin.base
            assert body_["replica"]["refusals"].get("bad_signature", 0) >= 1
            print(f"\nfailover: the publish reached the replica in {seconds:.2f} s through "
                  f"the second upstream; the hostile first one was refused {refused:.0f} times")
        finally:
            replica.stop()
