"""Errors have a proper status and the documented JSON body (DESIGN.md §4).

``{"error": {"status": 404, "code": "release_not_found", "message": "..."}}``; anything
but GET and HEAD is 405 with ``Allow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.clients import Fetched, curl_fetch
from tests.http.helpers import Server, raw_request

ZEROS = "0" * 64


def _error(got: Fetched, status: int) -> dict[str, object]:
    assert got.status == status
    assert got.headers["content-type"].startswith("application/json")
    assert got.headers["cache-control"] == "no-store"
    document = json.loads(got.body)
    assert list(document) == ["error"]
    error: dict[str, object] = document["error"]
    assert set(error) == {"status", "code", "message"}
    assert error["status"] == status
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize(("path", "code"), [
    ("/nosuchpkg/latest.tar.gz", "package_not_found"),
    ("/nosuchpkg/releases/1.0.0.tar.gz", "package_not_found"),
    ("/{pkg}/nosuchchannel.tar.gz", "channel_not_found"),
    ("/{pkg}/nosuchchannel.tar.gz.sha256", "channel_not_found"),
    ("/{pkg}/releases/9.9.9.tar.gz", "release_not_found"),
    ("/{pkg}/releases/9.9.9.tar.gz.minisig", "release_not_found"),
    ("/{pkg}/releases/1.0.0.zip", "not_found"),
    ("/{pkg}/latest.zip", "not_found"),
    ("/{pkg}/releases/1.0.0.tar.gz/extra", "not_found"),
    ("/nothing/here/at/all", "not_found"),
    ("/index.json.gz", "not_found"),
    (f"/blobs/sha256/{ZEROS}", "blob_not_found"),
    ("/blobs/sha256/not-a-hash", "blob_not_found"),
])
def test_unknown_names_get_404_with_the_json_error_body(site: Server, workdir: Path,
                                                        path: str, code: str) -> None:
    got = curl_fetch(site.url(path.replace("{pkg}", site.package)), cwd=workdir)
    error = _error(got, 404)
    assert error["code"] == code


def test_404_messages_name_what_was_not_found(site: Server, workdir: Path) -> None:
    got = curl_fetch(site.url(f"/{site.package}/releases/9.9.9.tar.gz"), cwd=workdir)
    message = str(_error(got, 404)["message"])
    assert site.package in message
    assert "9.9.9" in message
    head = curl_fetch(site.url(f"/{site.package}/releases/9.9.9.tar.gz"), "-I", cwd=workdir)
    assert head.status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/{pkg}/latest.tar.gz", "/{pkg}/releases/1.0.0.tar.gz",
                                  "/index.json", "/nothing"])
def test_methods_other_than_get_and_head_get_405_with_allow(site: Server, workdir: Path,
                                                             method: str, path: str) -> None:
    url = site.url(path.replace("{pkg}", site.package))
    got = curl_fetch(url, "-X", method, "--data-binary", "payload", cwd=workdir)
    error = _error(got, 405)
    assert error["code"] == "method_not_allowed"
    allowed = {m.strip() for m in got.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD"}
    # Nothing was changed: the tarball is still there.
    assert curl_fetch(site.url(f"/{site.package}/latest.tar.gz"), cwd=workdir).status == 200


@pytest.mark.parametrize("line", [b"CONNECT 127.0.0.1:22 HTTP/1.1", b"CONNECT {pkg} HTTP/1.1",
                                  b"OPTIONS * HTTP/1.1", b"TRACE /{pkg}/latest.tar.gz HTTP/1.1"])
def test_connect_options_and_trace_get_405_too(site: Server, line: bytes) -> None:
    line = line.replace(b"{pkg}", site.package.encode())
    reply = raw_request(site.port, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.status == 405, reply.head
    assert b"\r\nAllow: GET,HEAD\r\n" in reply.head
    assert json.loads(reply.body)["error"]["code"] == "method_not_allowed"
