"""Two independent origins serve the same validators (DESIGN.md §4, §8).

Two origin directories, each with its own store synced from the same Subversion package
and signing with the same key pair, each behind its own ``codecache serve``: a release URL
has the same bytes, ETag, Last-Modified and signature on both, so a cache or pilot that
revalidates against the other one gets a 304.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SvnRepo, new_origin
from tests.harness.clients import curl_fetch
from tests.http.helpers import Server, running


@pytest.fixture(scope="module")
def pair(svn_server: SvnRepo,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    base = tmp_path_factory.mktemp("pair")
    a = new_origin(svn_server, base / "a")
    b = new_origin(svn_server, base / "b", package=a.package, keys_from=a.dir)
    assert a.store != b.store
    with running(a) as server_a, running(b) as server_b:
        yield server_a, server_b


RELEASES = ["1.0.0.tar.gz", "1.2.0.tar.gz", "1.2.0.tar.gz.minisig", "1.0.0.tar.gz.sha256"]


@pytest.mark.parametrize("name", RELEASES)
def test_two_origins_serve_the_same_etag_and_bytes_for_a_release(
        pair: tuple[Server, Server], workdir: Path, name: str) -> None:
    a, b = pair
    path = f"/{a.package}/releases/{name}"
    got_a, got_b = (curl_fetch(s.url(path), cwd=workdir) for s in pair)
    assert got_a.status == got_b.status == 200
    assert got_a.body == got_b.body
    for header in ("etag", "last-modified", "content-length", "x-codecache-version"):
        assert got_a.headers[header] == got_b.headers[header], header
    assert b.port != a.port


@pytest.mark.parametrize("name", ["1.0.0.tar.gz", "1.2.0.tar.gz"])
def test_etag_from_one_origin_revalidates_against_the_other(
        pair: tuple[Server, Server], workdir: Path, name: str) -> None:
    a, b = pair
    path = f"/{a.package}/releases/{name}"
    first = curl_fetch(a.url(path), "--etag-save", "etag.txt", cwd=workdir, output="from-a")
    assert first.status == 200
    again = curl_fetch(b.url(path), "--etag-compare", "etag.txt", cwd=workdir, output="from-b")
    assert again.status == 304
    assert again.headers["etag"] == first.headers["etag"]
    partial = curl_fetch(b.url(path), "-r", "0-9", "-H", f"If-Range: {first.headers['etag']}",
                         cwd=workdir)
    assert partial.status == 206
    assert partial.body == first.body[:10]
    since = curl_fetch(b.url(path), "-H", f"If-Modified-Since: {first.headers['last-modified']}",
                       cwd=workdir)
    assert since.status == 304


def test_channel_url_on_both_origins_has_the_same_etag(pair: tuple[Server, Server],
                                                       workdir: Path) -> None:
    a, b = pair
    got_a, got_b = (curl_fetch(s.url(f"/{a.package}/latest.tar.gz"), "-I", cwd=workdir)
                    for s in pair)
    assert got_a.headers["etag"] == got_b.headers["etag"]
    assert got_a.headers["x-codecache-version"] == got_b.headers["x-codecache-version"] == "1.2.0"
    again = curl_fetch(b.url(f"/{a.package}/latest.tar.gz"), "-H",
                       f"If-None-Match: {got_a.headers['etag']}", cwd=workdir)
    assert again.status == 304
