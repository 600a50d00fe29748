"""Response headers of every kind of URL (DESIGN.md §4), as real curl receives them."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.harness.clients import curl_fetch
from tests.http.helpers import Server, http_date, release_info, rfc3339_seconds

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture(scope="module")
def signed(site: Server) -> dict[str, Any]:
    """The origin's own view of the index (``status --json``)."""
    return site.origin.status_json()


def test_channel_url_is_cached_60s_and_dated_by_the_channel_move(
        site: Server, signed: dict[str, Any], workdir: Path) -> None:
    channel = signed["packages"][site.package]["channels"]["latest"]
    release = signed["packages"][site.package]["releases"]["1.2.0"]
    assert channel["version"] == "1.2.0"
    assert channel["moved_at"] != release["date"]  # else this test could not tell them apart
    for suffix in ("", ".sha256", ".minisig"):
        got = curl_fetch(site.url(f"/{site.package}/latest.tar.gz{suffix}"), cwd=workdir)
        assert got.status == 200, suffix
        assert got.headers["cache-control"] == "public, max-age=60", suffix
        assert got.headers["last-modified"] == http_date(rfc3339_seconds(channel["moved_at"]))
        assert got.headers["x-codecache-version"] == "1.2.0"
    tarball = curl_fetch(site.url(f"/{site.package}/latest.tar.gz"), cwd=workdir)
    assert tarball.headers["etag"] == f'"sha256-{release["sha256"]}"'
    assert tarball.headers["content-type"] == "application/gzip"
    assert tarball.headers["accept-ranges"] == "bytes"
    assert tarball.headers["content-length"] == str(release["size"])


def test_release_url_is_immutable_dated_by_the_tag_commit_with_sha256_etag(
        site: Server, signed: dict[str, Any], workdir: Path) -> None:
    for version in ("1.0.0", "1.2.0"):
        release = signed["packages"][site.package]["releases"][version]
        got = curl_fetch(site.url(f"/{site.package}/releases/{version}.tar.gz"), cwd=workdir)
        digest = hashlib.sha256(got.body).hexdigest()
        assert got.status == 200
        assert digest == release["sha256"]
        assert got.headers["etag"] == f'"sha256-{digest}"'
        assert got.headers["cache-control"] == IMMUTABLE
        assert got.headers["last-modified"] == http_date(rfc3339_seconds(release["date"]))
        assert got.headers["x-codecache-version"] == version
        assert got.headers["accept-ranges"] == "bytes"
        assert got.headers["content-length"] == str(len(got.body)) == str(release["size"])


def test_release_sidecars_name_their_own_file_and_carry_the_signature(
        site: Server, signed: dict[str, Any], workdir: Path) -> None:
    release = signed["packages"][site.package]["releases"]["1.0.0"]
    base = f"/{site.package}/releases/1.0.0.tar.gz"
    checksum = curl_fetch(site.url(base + ".sha256"), cwd=workdir)
    assert checksum.body == f"{release['sha256']}  1.0.0.tar.gz\n".encode()
    assert checksum.headers["cache-control"] == IMMUTABLE
    assert checksum.headers["etag"] == f'"sha256-{hashlib.sha256(checksum.body).hexdigest()}"'
    minisig = curl_fetch(site.url(base + ".minisig"), cwd=workdir)
    assert minisig.body.decode() == release["minisig"]
    assert minisig.headers["cache-control"] == "public, max-age=60"  # changes at a key switch
    assert minisig.headers["x-codecache-version"] == "1.0.0"


def test_blob_url_is_immutable_and_named_by_its_sha256(
        site: Server, signed: dict[str, Any], workdir: Path) -> None:
    sha256 = signed["packages"][site.package]["releases"]["1.0.0"]["sha256"]
    got = curl_fetch(site.url(f"/blobs/sha256/{sha256}"), cwd=workdir)
    assert got.status == 200
    assert hashlib.sha256(got.body).hexdigest() == sha256
    assert got.headers["cache-control"] == IMMUTABLE
    assert got.headers["etag"] == f'"sha256-{sha256}"'
    assert got.headers["content-type"] == "application/octet-stream"


def _verify_index(document: dict[str, Any], public_key: Path) -> None:
    """Check the embedded signature with the raw Ed25519 key (not codecache's code)."""
    raw = base64.b64decode(public_key.read_text().splitlines()[1])
    assert raw[:2] == b"Ed"
    keyid = f"{struct.unpack('<Q', raw[2:10])[0]:X}"
    key = Ed25519PublicKey.from_public_bytes(raw[10:42])
    canonical = json.dumps(document["signed"], sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False).encode()
    [entry] = document["signatures"]
    assert entry["keyid"] == keyid
    key.verify(bytes.fromhex(entry["sig"]), canonical)


def test_index_json_is_no_cache_and_its_embedded_signature_verifies(
        site: Server, signed: dict[str, Any], workdir: Path) -> None:
    got = curl_fetch(site.url("/index.json"), cwd=workdir)
    assert got.status == 200
    assert got.headers["cache-control"] == "no-cache"
    assert got.headers["content-type"].startswith("application/json")
    assert got.headers["etag"] == f'"sha256-{hashlib.sha256(got.body).hexdigest()}"'
    document = json.loads(got.body)
    assert got.body == (site.origin.store / "index.json").read_bytes()
    _verify_index(document, site.origin.public_key)
    assert document["signed"]["serial"] == signed["serial"]
    assert document["signed"]["packages"] == signed["packages"]
    document["signed"]["serial"] += 1
    with pytest.raises(InvalidSignature):
        _verify_index(document, site.origin.public_key)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_health_readiness_and_metrics_are_no_store(site: Server, path: str,
                                                   workdir: Path) -> None:
    got = curl_fetch(site.url(path), cwd=workdir)
    assert got.status == 200
    assert got.headers["cache-control"] == "no-store"
    assert "etag" not in got.headers
    assert "x-codecache-version" not in got.headers


def test_x_codecache_version_names_the_release_served(site: Server, workdir: Path) -> None:
    cases = {f"/{site.package}/latest.tar.gz": "1.2.0",
             f"/{site.package}/releases/1.0.0.tar.gz": "1.0.0",
             f"/{site.package}/releases/1.2.0.tar.gz": "1.2.0"}
    for path, version in cases.items():
        for extra in ((), ("-I",), ("-r", "0-0")):
            got = curl_fetch(site.url(path), *extra, cwd=workdir)
            assert got.headers["x-codecache-version"] == version, (path, extra)
    assert release_info(site.origin, "1.0.0")["sha256"] != \
        release_info(site.origin, "1.2.0")["sha256"]
