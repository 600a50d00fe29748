"""Replicas and edges read both index formats (DESIGN.md §3): an index that holds a git
release is format 2, and a node serves its Subversion and git releases alike.

The upstream is the fake of ``tests/replica/upstream.py`` (a small real HTTP server in the
test process), signing a mixed index as an origin would: Subversion release ``1.0.0`` and
git release ``2.0.0`` (``git_url`` + ``commit``, committed a day later). The replica and the
edge are real ``codecache serve`` processes; the client is the real curl. Each node serves
both tarballs with the strong ETag of their sha256 and ``Last-Modified`` = the commit time
(for git: the committer time the index records), and ``status --json`` shows the git source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Origin, run_cli
from tests.harness.clients import curl_fetch
from tests.http.helpers import Server, http_date, start_server
from tests.replica.conftest import write_replica_config
from tests.replica.upstream import FakeUpstream, Publisher, blob_routes, index

pytestmark = pytest.mark.timeout(90)

SVN_DATE, GIT_DATE = 1_700_000_000, 1_700_086_400
RELEASES = {"1.0.0": b"svn release bytes " * 300, "2.0.0": b"git release bytes " * 400}


@pytest.fixture(scope="module")
def publisher() -> Publisher:
    return Publisher()


@pytest.fixture(scope="module")
def document(publisher: Publisher) -> bytes:
    mixed = publisher.make_index(5000, RELEASES, "2.0.0", git={"2.0.0"},
                                 dates={"1.0.0": SVN_DATE, "2.0.0": GIT_DATE})
    doc = publisher.sign(mixed)
    assert json.loads(doc)["signed"]["format"] == 2
    return doc


@pytest.fixture(scope="module")
def upstream(document: bytes) -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.set({"/index.json": index(document), **blob_routes(RELEASES)})
        yield fake


def _node(directory: Path, publisher: Publisher, upstream: FakeUpstream, role: str) -> Server:
    directory.mkdir(parents=True)
    public = publisher.write_public_key(directory / "keys" / "codecache.pub")
    extra = {"edge": {"cache_size": "10MB"}} if role == "edge" else {}
    config = write_replica_config(directory, None, [upstream.base], interval="0.3s",
                                  role=role, **extra)
    return start_server(Origin(directory, config, directory / "store", directory / "none",
                               public, publisher.package, ""))


@pytest.fixture(scope="module", params=["replica", "edge"])
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         publisher: Publisher, upstream: FakeUpstream) -> Iterator[Server]:
    role: str = request.param
    server = _node(tmp_path_factory.mktemp(role) / "node", publisher, upstream, role)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(("version", "date"), [("1.0.0", SVN_DATE), ("2.0.0", GIT_DATE)])
def test_a_node_serves_svn_and_git_releases_of_a_format_2_index(
        node: Server, document: bytes, version: str, date: int, tmp_path: Path) -> None:
    assert node.request("/index.json").body == document      # taken as signed
    data = RELEASES[version]
    got = curl_fetch(node.url(f"/pilot/releases/{version}.tar.gz"), cwd=tmp_path)
    assert got.status == 200 and got.body == data
    assert got.headers["etag"] == f'"sha256-{hashlib.sha256(data).hexdigest()}"'
    assert got.headers["last-modified"] == http_date(date)
    assert got.headers["x-codecache-version"] == version
    again = curl_fetch(node.url(f"/pilot/releases/{version}.tar.gz"), "-H",
                       f"If-None-Match: {got.headers['etag']}", cwd=tmp_path)
    assert again.status == 304


def test_status_of_a_node_shows_each_release_s_own_source(
        node: Server, publisher: Publisher) -> None:
    result = run_cli("status", "--json", config=node.origin.config, check=True)
    releases = json.loads(result.stdout)["packages"]["pilot"]["releases"]
    commit = publisher.commit_of("2.0.0")
    assert {k: releases["2.0.0"].get(k) for k in ("git_url", "commit", "svn_url", "author")} \
        == {"git_url": "https://git.example.org/pilot.git", "commit": commit, "svn_url": None,
            "author": "Ann Example <ann@example.org>"}
    assert "git_url" not in releases["1.0.0"] and releases["1.0.0"]["revision"] == 1
    text = run_cli("status", config=node.origin.config, check=True).stdout
    assert f"git=https://git.example.org/pilot.git@{commit}" in text
