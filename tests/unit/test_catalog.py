"""Catalog: the URL space, validators per representation, and path safety."""

from __future__ import annotations

import hashlib

import pytest

from codecache.core.errors import (
    BlobNotFound,
    ChannelNotFound,
    NotFound,
    PackageNotFound,
    ReleaseNotFound,
)
from codecache.core.index import Channel, Index, Package, Release
from codecache.core.pin import svn_pin
from codecache.web.catalog import (
    IMMUTABLE,
    BadRequest,
    Catalog,
    Route,
    package_of,
    service_route,
    split_path,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def _release(version: str, sha256: str, date: int) -> Release:
    return Release(version=version, sha256=sha256, size=100, tar_sha256="c" * 64,
                   source=svn_pin(f"svn://h/pilot/tags/{version}", 7), author="rm",
                   date=date, minisig=f"sig of {version}\n")


@pytest.fixture
def catalog() -> Catalog:
    pkg = Package(
        releases={"1.0.0": _release("1.0.0", SHA_A, 1000), "1.2.0": _release("1.2.0", SHA_B, 2000)},
        channels={"latest": Channel("1.2.0", 5000), "production": Channel("1.0.0", 6000)},
    )
    index = Index(serial=9, generated=7000, expires=9000, packages={"pilot": pkg})
    return Catalog(index, b'{"signed":{}}', channel_max_age=60)


def test_channel_tarball_has_channel_validators(catalog: Catalog) -> None:
    route, rep = catalog.lookup("/pilot/latest.tar.gz")
    assert route is Route.CHANNEL
    assert rep is not None
    assert rep.etag == f'"sha256-{SHA_B}"'
    assert rep.last_modified == 5000
    assert rep.cache_control == "public, max-age=60"
    assert rep.version == "1.2.0"
    assert rep.blob == SHA_B


def test_release_tarball_is_immutable_and_dated_by_commit(catalog: Catalog) -> None:
    route, rep = catalog.lookup("/pilot/releases/1.0.0.tar.gz")
    assert route is Route.RELEASE
    assert rep is not None
    assert (rep.cache_control, rep.last_modified, rep.version) == (IMMUTABLE, 1000, "1.0.0")


def test_sha256_file_names_the_urls_own_file(catalog: Catalog) -> None:
    _, channel = catalog.lookup("/pilot/production.tar.gz.sha256")
    _, release = catalog.lookup("/pilot/releases/1.0.0.tar.gz.sha256")
    assert channel is not None and release is not None
    assert channel.inline == f"{SHA_A}  production.tar.gz\n".encode()
    assert release.inline == f"{SHA_A}  1.0.0.tar.gz\n".encode()
    assert channel.etag == f'"sha256-{hashlib.sha256(channel.inline).hexdigest()}"'


def test_signature_served_inline(catalog: Catalog) -> None:
    route, rep = catalog.lookup("/pilot/latest.tar.gz.minisig")
    assert route is Route.SIGNATURE
    assert rep is not None and rep.inline == b"sig of 1.2.0\n"


def test_blob_and_index_routes(catalog: Catalog) -> None:
    _, blob = catalog.lookup(f"/blobs/sha256/{SHA_A}")
    assert blob is not None and blob.cache_control == IMMUTABLE and blob.size == 100
    route, index = catalog.lookup("/index.json?x=1")
    assert route is Route.INDEX and index is not None and index.cache_control == "no-cache"
    assert catalog.blob_sizes() == {SHA_A: 100, SHA_B: 100}


@pytest.mark.parametrize(("path", "error"), [
    ("/nopkg/latest.tar.gz", PackageNotFound),
    ("/pilot/nochannel.tar.gz", ChannelNotFound),
    ("/pilot/releases/9.9.9.tar.gz", ReleaseNotFound),
    (f"/blobs/sha256/{'d' * 64}", BlobNotFound),
    ("/blobs/sha256/xyz", BlobNotFound),
    ("/pilot/latest.zip", NotFound),
    ("/pilot/releases/..%2F..%2Fetc.tar.gz", BadRequest),
    ("/pilot/%2e%2e/latest.tar.gz", NotFound),
    ("/pilot/../../etc/passwd", NotFound),
    ("/%2e%2e/%2e%2e/etc/passwd", NotFound),
    ("/pilot/%252e%252e.tar.gz", NotFound),
    ("/pilot/latest.tar.gz/", NotFound),
    ("//pilot/latest.tar.gz", NotFound),
    ("http://evil/../etc/passwd", NotFound),
    ("http://evil/%2e%2e/%2e%2e/etc/passwd", NotFound),
    ("/Pilot/latest.tar.gz", NotFound),
])
def test_lookup_refuses_unknown_and_hostile_paths(catalog: Catalog, path: str,
                                                   error: type[Exception]) -> None:
    with pytest.raises(error):
        catalog.lookup(path)


@pytest.mark.parametrize("path", [
    "file:///etc/passwd", "ftp://x/pilot/latest.tar.gz", "pilot/latest.tar.gz", "/a%00b",
    "/%ff%fe", "/a\\b", "/a%5cb", "/a%2fb", "/" + "a" * 2000, "/%c0%ae%c0%ae/x",
])
def test_split_path_rejects_malformed(path: str) -> None:
    with pytest.raises(BadRequest):
        split_path(path)


def test_split_path_decodes_each_segment_once() -> None:
    assert split_path("/") == [""]
    assert split_path("/pilot/releases/1.0.0%2Bhotfix.tar.gz") == [
        "pilot", "releases", "1.0.0+hotfix.tar.gz"]
    assert split_path("/a/%2541") == ["a", "%41"]


def test_split_path_takes_the_path_of_an_absolute_form_target() -> None:
    # RFC 9112 §3.2.2: what a client sends when it takes the server for its proxy.
    assert split_path("http://codecache.example:8080/pilot/latest.tar.gz?x=/y") == [
        "pilot", "latest.tar.gz"]
    assert split_path("HTTPS://codecache.example/pilot/releases/1.0.0%2B1.tar.gz") == [
        "pilot", "releases", "1.0.0+1.tar.gz"]
    assert split_path("http://codecache.example") == [""]
    assert split_path("http://codecache.example?x") == [""]
    assert package_of(Route.CHANNEL.value, "http://h/pil%6ft/latest.tar.gz") == "pilot"


def test_service_routes_need_no_index() -> None:
    assert service_route("/") is Route.STATUS_PAGE
    assert service_route("/healthz?probe=1") is Route.HEALTHZ
    assert service_route("/readyz") is Route.READYZ
    assert service_route("/metrics") is Route.METRICS
    assert service_route("/index.json") is None
    assert service_route("/pilot/latest.tar.gz") is None
    with pytest.raises(BadRequest):
        service_route("/%00")
