"""Large bodies start on a page boundary in the VIP's cache files, so a cache hit's
sendfile(2) reads whole pages (codecache.web.cachealign; nginx/README.md, "Cost per
request"), and the replicas' pad never reaches a client.

A cluster of its own (real svnserve, origin, two replicas, nginx from nginx/codecache.conf)
whose releases hold noise above cachealign.MIN_BODY: 200 KB, which a replica holds in
memory, and 1.2 MB, which it sends from the file (above server.memory_blob_max)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from codecache.web.cachealign import MIN_BODY, PAGE
from tests.cluster.helpers import Cluster, cluster_up
from tests.conftest import (
    Origin,
    SvnRepo,
    commit_random_files,
    make_origin,
    new_package,
    require,
    tag_sample_releases,
)
from tests.harness.clients import Response, curl
from tests.harness.timing import poll, wait_until
from tests.http.helpers import raw_request

OFFSET = "342"   # what nginx/codecache.conf sends


@pytest.fixture(scope="module", params=[200_000, 1_200_000], ids=["memory", "file"])
def big(request: pytest.FixtureRequest, svn_server: SvnRepo,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Origin]]:
    for tool in ("nginx", "curl", "svnserve"):
        require(tool)
    name, url = new_package(svn_server)
    commit_random_files(svn_server, name, 1, request.param)
    tag_sample_releases(svn_server, name)
    directory = tmp_path_factory.mktemp("aligned")
    origin = make_origin(directory / "origin", name, url)
    origin.cli("sync", "--once", check=True)
    with cluster_up(directory / "cluster", "--origin-config", str(origin.config),
                    "--replicas", "2") as cluster:
        yield cluster, origin


def sha256_of(origin: Origin, version: str) -> str:
    signed = json.loads((origin.store / "index.json").read_bytes())["signed"]
    sha: str = signed["packages"][origin.package]["releases"][version]["sha256"]
    return sha


def cache_file(cluster: Cluster, path: str, timeout: float = 10) -> bytes:
    """The VIP's proxy cache file for ``path`` (nginx renames it into place as the upstream
    response ends): its header names the key, which is the request target."""
    cache_dir = Path(cluster.info["nginx"]["cache_dir"])
    key = b"\nKEY: " + path.encode() + b"\n"
    found: list[bytes] = []

    def cached() -> bool:
        # Not a temp file (use_temp_path=off: "<md5>.<n>" beside the objects) of a refresh.
        found[:] = [data for file in cache_dir.rglob("*") if file.is_file()
                    and "." not in file.name and key in (data := file.read_bytes())[:PAGE]]
        return bool(found)

    poll(cached, timeout, interval=0.1)
    assert len(found) == 1, f"{len(found)} cache files for {path}"
    return found[0]


@pytest.mark.parametrize("kind", ["channel", "release", "blob"])
def test_a_large_body_starts_on_a_page_in_the_vip_cache(big: tuple[Cluster, Origin],
                                                        tmp_path: Path, kind: str) -> None:
    cluster, origin = big
    sha = sha256_of(origin, "1.2.0")
    path = {"channel": f"/{origin.package}/latest.tar.gz",
            "release": f"/{origin.package}/releases/1.2.0.tar.gz",
            "blob": f"/blobs/sha256/{sha}"}[kind]
    responses = [curl(cluster.vip + path, cwd=tmp_path) for _ in range(2)]   # miss, hit
    for response in responses:
        assert response.status == 200
        assert hashlib.sha256(response.body).hexdigest() == sha
        assert response.all("x-codecache-pad") == []
    body = responses[0].body
    assert len(body) >= MIN_BODY
    stored = cache_file(cluster, path)
    assert stored.endswith(body)
    assert (len(stored) - len(body)) % PAGE == 0, len(stored) - len(body)
    assert b"\r\nX-Codecache-Pad: " in stored[:-len(body)]
    # A revalidation is answered from that file as before.
    etag = responses[0].header("etag")
    again = curl(cluster.vip + path, "-H", f"If-None-Match: {etag}", cwd=tmp_path)
    assert again.status == 304 and again.all("x-codecache-pad") == []


def test_a_small_body_is_not_padded(big: tuple[Cluster, Origin], tmp_path: Path) -> None:
    cluster, origin = big
    path = f"/{origin.package}/releases/1.0.0.tar.gz.sha256"
    response = curl(cluster.vip + path, cwd=tmp_path)
    assert response.status == 200 and len(response.body) < MIN_BODY
    stored = cache_file(cluster, path)
    assert stored.endswith(response.body)
    assert b"X-Codecache-Pad" not in stored


def raw_get(cluster: Cluster, target: str, *headers: str, version: str = "1.1") -> tuple[
        bytes, bytes]:
    port = urlsplit(cluster.replicas[0]).port
    assert port is not None
    lines = [f"GET {target} HTTP/{version}", "Host: replica", *headers, "", ""]
    reply = raw_request(port, "\r\n".join(lines).encode(), timeout=10)
    return reply.head, reply.body


def test_a_replica_pads_only_what_the_front_tier_asks_for(big: tuple[Cluster, Origin]) -> None:
    cluster, origin = big
    target = f"/{origin.package}/releases/1.0.0.tar.gz"
    sha = sha256_of(origin, "1.0.0")
    # The first from the file, the next from memory where the replica holds the blob
    # (server.fast_answers: the bytes are written by web/fastpath.py).
    for _ in range(2):
        head, body = raw_get(cluster, target, f"X-Codecache-Cache-Offset: {OFFSET}")
        assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nX-Codecache-Pad: " in head
        assert hashlib.sha256(body).hexdigest() == sha
        # Where nginx would put the body: its 342 bytes, the key (the target), "\n", the
        # header.
        assert (int(OFFSET) + len(target) + 1 + len(head) + 4) % PAGE == 0
    for extra, version in ((), "1.1"), (("X-Codecache-Cache-Offset: nonsense",), "1.1"), \
            ((f"X-Codecache-Cache-Offset: {OFFSET}",), "1.0"), \
            ((f"X-Codecache-Cache-Offset: {OFFSET}", "Range: bytes=10-"), "1.1"):
        head, body = raw_get(cluster, target, *extra, version=version)
        assert head.split(b" ")[1] in (b"200", b"206"), head
        assert b"X-Codecache-Pad" not in head, (extra, version)


def test_after_a_channel_move_the_vip_serves_the_new_release_whole(
        big: tuple[Cluster, Origin], tmp_path: Path) -> None:
    """The VIP revalidates its copy of a channel URL with the old ETag once the copy is
    stale (proxy_cache_revalidate); the replica's 200 must carry the whole new release
    (a file-backed one once carried its first byte). Runs last: it moves the channel."""
    cluster, origin = big
    path = f"/{origin.package}/latest.tar.gz"
    first = curl(cluster.vip + path, cwd=tmp_path)
    assert first.status == 200 and first.header("x-codecache-version") == "1.2.0"
    want = sha256_of(origin, "1.0.0")
    origin.cli("publish", origin.package, "1.0.0", "--channel", "latest", check=True)
    try:

        def moved_answer() -> Response | None:
            answer = curl(cluster.vip + path, cwd=tmp_path)
            assert answer.status == 200
            return answer if answer.header("x-codecache-version") == "1.0.0" else None

        moved = wait_until(moved_answer, 30, "the VIP serves 1.0.0", interval=0.2)
        for response in moved, curl(cluster.vip + path, cwd=tmp_path):   # the fill, a hit
            assert response.header("content-length") == str(len(response.body))
            assert hashlib.sha256(response.body).hexdigest() == want
    finally:
        origin.cli("publish", origin.package, "1.2.0", "--channel", "latest", check=True)
