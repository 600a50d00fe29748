"""Pilots' current client: real ``curl`` against a real ``codecache serve``.

Revalidation by ETag (``--etag-save``/``--etag-compare``), resume (``-C -``), byte ranges
(``-r``) and ``HEAD`` (``-I``), each against a server holding blobs in memory and against
one streaming them from their files (``memory_blob_max`` below the blob size).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Origin, copy_origin
from tests.harness.clients import curl_fetch
from tests.http.helpers import STREAMED, Server, release_bytes, release_info, running

COMPARED = ("etag", "last-modified", "content-length", "cache-control", "x-codecache-version",
            "accept-ranges", "content-type")


@pytest.fixture(scope="module", params=["memory", "streamed"])
def served(request: pytest.FixtureRequest, template_origin: Origin,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = STREAMED if request.param == "streamed" else None
    origin = copy_origin(template_origin, tmp_path_factory.mktemp("curl") / "o")
    with running(origin, env=env) as server:
        yield server


def _paths(site: Server) -> list[tuple[str, str]]:
    """(URL path, version) of a channel and a release URL."""
    return [(f"/{site.package}/latest.tar.gz", "1.2.0"),
            (f"/{site.package}/releases/1.0.0.tar.gz", "1.0.0")]


def _memory_bytes(site: Server) -> float:
    metrics = site.request("/metrics").body.decode()
    match = re.search(r"^codecache_blob_memory_bytes ([0-9.e+]+)$", metrics, re.MULTILINE)
    assert match is not None
    return float(match[1])


def test_streamed_server_really_streams_from_files(served: Server, workdir: Path) -> None:
    got = curl_fetch(served.url(f"/{served.package}/latest.tar.gz"), cwd=workdir)
    assert got.body == release_bytes(served.origin, "1.2.0")
    # The memory mode holds every (small) listed blob once verified; the streamed mode none.
    sizes = sum(release_info(served.origin, v)["size"] for v in ("1.0.0", "1.2.0"))
    held = 0 if served.env == STREAMED else sizes
    assert _memory_bytes(served) == held


def test_curl_etag_compare_gets_304_the_second_time(served: Server, workdir: Path) -> None:
    for path, version in _paths(served):
        url = served.url(path)
        first = curl_fetch(url, "--etag-save", "etag.txt", cwd=workdir, output="f1")
        assert first.status == 200
        assert first.body == release_bytes(served.origin, version)
        assert (workdir / "etag.txt").read_text().strip() == first.headers["etag"]

        second = curl_fetch(url, "--etag-compare", "etag.txt", cwd=workdir, output="f2")
        assert second.status == 304
        assert second.body == b""
        assert second.headers["etag"] == first.headers["etag"]
        assert "content-length" not in second.headers or \
            second.headers["content-length"] == "0"


def test_curl_C_resumes_a_partial_download(served: Server, workdir: Path) -> None:
    for path, version in _paths(served):
        full = release_bytes(served.origin, version)
        half = len(full) // 2
        target = workdir / f"resume-{version}"
        target.write_bytes(full[:half])
        got = curl_fetch(served.url(path), "-C", "-", cwd=workdir, output=target.name)
        assert got.status == 206
        assert got.headers["content-range"] == f"bytes {half}-{len(full) - 1}/{len(full)}"
        assert got.headers["content-length"] == str(len(full) - half)
        assert target.read_bytes() == full


def test_curl_range_0_99_gives_exactly_the_first_100_bytes(served: Server,
                                                           workdir: Path) -> None:
    for path, version in _paths(served):
        full = release_bytes(served.origin, version)
        got = curl_fetch(served.url(path), "-r", "0-99", cwd=workdir)
        assert got.status == 206
        assert got.body == full[:100]
        assert got.headers["content-range"] == f"bytes 0-99/{len(full)}"
        assert got.headers["content-length"] == "100"
        assert got.headers["etag"] == f'"sha256-{release_info(served.origin, version)["sha256"]}"'


def test_curl_range_suffix_gives_the_last_bytes(served: Server, workdir: Path) -> None:
    full = release_bytes(served.origin, "1.2.0")
    got = curl_fetch(served.url(f"/{served.package}/latest.tar.gz"), "-r", "-10", cwd=workdir)
    assert got.status == 206
    assert got.body == full[-10:]
    assert got.headers["content-range"] == f"bytes {len(full) - 10}-{len(full) - 1}/{len(full)}"


def test_curl_I_headers_equal_the_get_headers(served: Server, workdir: Path) -> None:
    paths = [p for p, _ in _paths(served)] + [
        f"/{served.package}/latest.tar.gz.sha256", f"/{served.package}/latest.tar.gz.minisig",
        f"/blobs/sha256/{release_info(served.origin, '1.0.0')['sha256']}", "/index.json"]
    for path in paths:
        get = curl_fetch(served.url(path), cwd=workdir)
        head = curl_fetch(served.url(path), "-I", cwd=workdir)
        assert get.status == head.status == 200, path
        # With -I curl writes the header block as its output: nothing may follow it.
        assert head.body.startswith(b"HTTP/1.1 200 ")
        assert head.body.endswith(b"\r\n\r\n")
        assert head.body.count(b"\r\n\r\n") == 1
        assert int(get.headers["content-length"]) == len(get.body) > 0
        for name in COMPARED:
            if name == "x-codecache-version" and path.startswith(("/index.json", "/blobs/")):
                assert name not in get.headers and name not in head.headers
                continue
            assert head.headers.get(name) == get.headers.get(name), (path, name)
            assert get.headers.get(name), (path, name)


def test_curl_taking_the_server_for_its_proxy_gets_the_tarball(served: Server,
                                                              workdir: Path) -> None:
    """A site that points its pilots' http_proxy at codecache: curl then sends the
    absolute-form (GET http://host/path), which a server MUST accept (RFC 9112 §3.2.2)."""
    proxy = ("-x", served.base)
    for path, version in _paths(served):
        url = f"http://codecache.invalid{path}"
        got = curl_fetch(url, *proxy, "--etag-save", "etag.txt", cwd=workdir)
        assert got.status == 200, got
        assert got.body == release_bytes(served.origin, version)
        assert got.headers["etag"] == f'"sha256-{release_info(served.origin, version)["sha256"]}"'
        again = curl_fetch(url, *proxy, "--etag-compare", "etag.txt", cwd=workdir)
        assert again.status == 304
