"""Conditional and range requests (RFC 9110 §13, §14) through real curl with raw headers.

``-H`` sets the exact header values; the server's answer (status, validators, body) is
checked against the stored tarball of the release the URL names, once with the blobs held
in memory and once sent from their files (a large release: sendfile(2) of a byte range).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from tests.conftest import Origin, copy_origin
from tests.harness.clients import Fetched, curl_fetch
from tests.http.helpers import STREAMED, Server, http_date, release_bytes, running

FUTURE = "Fri, 01 Jan 2100 00:00:00 GMT"
PAST = "Mon, 01 Jan 2001 00:00:00 GMT"
OTHER_TAG = '"sha256-' + "0" * 64 + '"'


@pytest.fixture(scope="module", params=["memory", "streamed"])
def site(request: pytest.FixtureRequest, template_origin: Origin,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The module's server, once per way a blob's body is sent."""
    env = STREAMED if request.param == "streamed" else None
    with running(copy_origin(template_origin, tmp_path_factory.mktemp("site") / "o"),
                 env=env) as s:
        yield s


@pytest.fixture(scope="module", params=["channel", "release"])
def url_path(request: pytest.FixtureRequest, site: Server) -> str:
    """Both a channel URL and a release URL must behave alike."""
    if request.param == "channel":
        return f"/{site.package}/latest.tar.gz"
    return f"/{site.package}/releases/1.2.0.tar.gz"


@pytest.fixture(scope="module")
def body(site: Server) -> bytes:
    return release_bytes(site.origin, "1.2.0")


@pytest.fixture(scope="module")
def validators(site: Server, url_path: str, tmp_path_factory: pytest.TempPathFactory,
               body: bytes) -> tuple[str, str]:
    """(ETag, Last-Modified) of ``url_path``, from a plain GET."""
    got = curl_fetch(site.url(url_path), cwd=tmp_path_factory.mktemp("validators"))
    assert got.status == 200
    assert got.body == body
    return got.headers["etag"], got.headers["last-modified"]


def _get(site: Server, path: str, workdir: Path, *headers: str) -> Fetched:
    args = [arg for header in headers for arg in ("-H", header)]
    return curl_fetch(site.url(path), *args, cwd=workdir)


def _assert_304(got: Fetched, etag: str) -> None:
    assert got.status == 304
    assert got.body == b""
    assert got.headers["etag"] == etag
    assert got.headers["x-codecache-version"] == "1.2.0"


def _assert_full(got: Fetched, body: bytes) -> None:
    assert got.status == 200
    assert got.body == body
    assert "content-range" not in got.headers


def test_if_none_match_list_with_the_etag_gives_304(site: Server, url_path: str,
                                                    validators: tuple[str, str],
                                                    workdir: Path) -> None:
    etag, _ = validators
    got = _get(site, url_path, workdir, f"If-None-Match: {OTHER_TAG}, {etag}, \"x\"")
    _assert_304(got, etag)


def test_if_none_match_on_two_lines_is_one_list(site: Server, url_path: str,
                                                validators: tuple[str, str],
                                                workdir: Path) -> None:
    """RFC 9110 §5.3: a list field sent on several lines is one list."""
    etag, _ = validators
    got = _get(site, url_path, workdir, f"If-None-Match: {OTHER_TAG}",
               f"If-None-Match: {etag}")
    _assert_304(got, etag)


def test_if_match_on_two_lines_is_one_list(site: Server, url_path: str,
                                           validators: tuple[str, str], workdir: Path,
                                           body: bytes) -> None:
    etag, _ = validators
    _assert_full(_get(site, url_path, workdir, f"If-Match: {OTHER_TAG}", f"If-Match: {etag}"),
                 body)


def test_if_none_match_star_gives_304(site: Server, url_path: str,
                                      validators: tuple[str, str], workdir: Path) -> None:
    _assert_304(_get(site, url_path, workdir, "If-None-Match: *"), validators[0])


def test_if_none_match_weak_form_of_the_etag_gives_304(site: Server, url_path: str,
                                                       validators: tuple[str, str],
                                                       workdir: Path) -> None:
    etag, _ = validators
    _assert_304(_get(site, url_path, workdir, f"If-None-Match: W/{etag}"), etag)


def test_if_none_match_other_tag_wins_over_future_if_modified_since(
        site: Server, url_path: str, body: bytes, workdir: Path) -> None:
    # RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    got = _get(site, url_path, workdir, f"If-None-Match: {OTHER_TAG}",
               f"If-Modified-Since: {FUTURE}")
    _assert_full(got, body)


def test_if_modified_since_equal_to_last_modified_gives_304(
        site: Server, url_path: str, validators: tuple[str, str], workdir: Path) -> None:
    etag, last_modified = validators
    _assert_304(_get(site, url_path, workdir, f"If-Modified-Since: {last_modified}"), etag)


def test_if_modified_since_before_last_modified_gives_200(
        site: Server, url_path: str, body: bytes, workdir: Path) -> None:
    _assert_full(_get(site, url_path, workdir, f"If-Modified-Since: {PAST}"), body)


def test_range_with_if_range_etag_gives_206(site: Server, url_path: str, body: bytes,
                                            validators: tuple[str, str],
                                            workdir: Path) -> None:
    got = _get(site, url_path, workdir, "Range: bytes=10-19", f"If-Range: {validators[0]}")
    assert got.status == 206
    assert got.body == body[10:20]
    assert got.headers["content-range"] == f"bytes 10-19/{len(body)}"


def test_range_with_if_range_other_etag_gives_full_200(site: Server, url_path: str,
                                                       body: bytes, workdir: Path) -> None:
    got = _get(site, url_path, workdir, "Range: bytes=10-19", f"If-Range: {OTHER_TAG}")
    _assert_full(got, body)


def test_range_with_if_range_last_modified_gives_206(site: Server, url_path: str, body: bytes,
                                                     validators: tuple[str, str],
                                                     workdir: Path) -> None:
    got = _get(site, url_path, workdir, "Range: bytes=0-4", f"If-Range: {validators[1]}")
    assert got.status == 206
    assert got.body == body[:5]


def test_range_with_if_range_other_date_gives_full_200(site: Server, url_path: str,
                                                       body: bytes,
                                                       validators: tuple[str, str],
                                                       workdir: Path) -> None:
    other = http_date(int(parsedate_to_datetime(validators[1]).timestamp()) - 1)
    _assert_full(_get(site, url_path, workdir, "Range: bytes=0-4", f"If-Range: {other}"), body)


def test_range_starting_at_the_size_gives_416_with_content_range(
        site: Server, url_path: str, body: bytes, workdir: Path) -> None:
    got = _get(site, url_path, workdir, f"Range: bytes={len(body)}-")
    assert got.status == 416
    assert got.headers["content-range"] == f"bytes */{len(body)}"
    assert got.headers["content-type"].startswith("application/json")
    error = json.loads(got.body)["error"]
    assert error["status"] == 416
    assert error["code"] == "range_not_satisfiable"
    assert isinstance(error["message"], str) and error["message"]


def test_multiple_ranges_give_the_full_body(site: Server, url_path: str, body: bytes,
                                            workdir: Path) -> None:
    _assert_full(_get(site, url_path, workdir, "Range: bytes=0-9,20-29"), body)


def test_head_with_matching_if_none_match_gives_304(site: Server, url_path: str,
                                                    validators: tuple[str, str],
                                                    workdir: Path) -> None:
    got = curl_fetch(site.url(url_path), "-I", "-H", f"If-None-Match: {validators[0]}",
                     cwd=workdir)
    assert got.status == 304
    assert got.headers["etag"] == validators[0]
