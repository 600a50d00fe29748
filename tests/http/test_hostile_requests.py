"""Nothing outside the store is reachable; malformed requests get 4xx, never 5xx or a hang.

DESIGN.md §4 and §8 ("Safe"). A file with a unique marker is planted inside the store
directory (but not as a blob), next to it, in the origin directory and in /tmp; then a
corpus of traversal and garbage requests goes to the server twice over: through
``curl --path-as-is`` and raw over a socket (for what curl will not send). Every answer is
4xx, arrives within a couple of seconds, and never holds the marker or ``/etc/passwd``.
Afterwards the server still serves the tarball byte for byte.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.clients import curl_fetch
from tests.harness.timing import scaled
from tests.http.helpers import RawReply, Server, raw_request, release_bytes

# At once, not after the 10 s header timeout a stalled request would wait for: half that,
# scaled for a loaded machine (a TEST_DEADLINE_FACTOR over 2 no longer tells them apart).
ANSWER_WITHIN = scaled(5.0)
MARKER = f"codecache-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def planted(site: Server) -> Iterator[list[Path]]:
    """``secret.txt`` with MARKER in the store, next to it and in /tmp."""
    places = [site.origin.store / "secret.txt", site.origin.store / "blobs" / "secret.txt",
              site.origin.store / "blobs" / "sha256" / "secret.txt",
              site.origin.dir / "secret.txt", site.origin.dir.parent / "secret.txt",
              Path("/tmp") / "secret.txt", Path("/tmp") / f"{MARKER}.txt"]
    made = []
    for place in places:
        if not place.exists():
            place.write_text(MARKER + "\n")
            made.append(place)
    try:
        yield places
    finally:
        for place in made:
            place.unlink(missing_ok=True)


def _leaks(data: bytes) -> list[str]:
    found = []
    if MARKER.encode() in data:
        found.append("marker")
    if b"root:" in data or b"/bin/bash" in data or b"/usr/sbin/nologin" in data:
        found.append("/etc/passwd")
    return found


# --- request paths, sent as-is by curl ------------------------------------------------------

TRAVERSALS = [
    "/secret.txt", "/../secret.txt", "/../../secret.txt", "/../../../secret.txt",
    "/store/secret.txt", "/../store/secret.txt", "/blobs/secret.txt",
    "/blobs/sha256/secret.txt", "/blobs/../secret.txt", "/blobs/sha256/../secret.txt",
    "/blobs/sha256/../../secret.txt", "/blobs/sha256/../../../secret.txt",
    "/blobs/sha256/..%2f..%2fsecret.txt", "/blobs/sha256/%2e%2e/%2e%2e/secret.txt",
    "/blobs/sha256/%2e%2e%2f%2e%2e%2fsecret.txt", "/blobs/sha256/%252e%252e%252fsecret.txt",
    "/blobs/sha256/%c0%ae%c0%ae%c0%afsecret.txt", "/blobs/sha256/..%5c..%5csecret.txt",
    "/blobs/sha256/..%255c..%255csecret.txt", "/blobs/sha256/.%2e/.%2e/secret.txt",
    "/blobs/sha256/" + "a" * 64 + "/../../secret.txt", "/blobs/sha256/%00",
    "/blobs/sha256/" + "0" * 63 + "%2f", "/blobs/sha256/" + "A" * 64,
    "/etc/passwd", "/../../../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/..%2f..%2f..%2fetc%2fpasswd",
    "/%252e%252e/%252e%252e/etc/passwd", "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/%c0%af..%c0%afetc%c0%afpasswd", "/..%255c..%255cetc%255cpasswd", "/..;/..;/etc/passwd",
    "/%2fetc%2fpasswd", "//etc/passwd", "///etc/passwd", "/./././etc/passwd",
    "/file:%2f%2f%2fetc%2fpasswd", "/proc/self/environ", "/~root/.ssh/id_rsa",
    "/%u002e%u002e/etc/passwd", "/%ff%fe/etc/passwd", "/%", "/%zz", "/%%32%65",
    "/{pkg}/../../../etc/passwd", "/{pkg}/..%2f..%2f..%2fetc%2fpasswd.tar.gz",
    "/{pkg}/releases/../../../etc/passwd", "/{pkg}/releases/..%2f..%2fsecret.txt.tar.gz",
    "/{pkg}/releases/%2e%2e.tar.gz", "/{pkg}/releases/..tar.gz",
    "/{pkg}/releases/%2fetc%2fpasswd.tar.gz", "/{pkg}/releases/1.0.0.tar.gz%00.txt",
    "/{pkg}/releases/1.0.0%00.tar.gz", "/{pkg}/releases/1.0.0.tar.gz/../../secret.txt",
    "/{pkg}/releases/~.tar.gz", "/{pkg}/releases/" + "9" * 200 + ".tar.gz",
    "/{pkg}/latest.tar.gz/..", "/{pkg}/latest.tar.gz%2f..%2f..%2fsecret.txt",
    "/{pkg}%2f..%2f..%2fsecret.txt", "/{pkg}/%2e%2e/%2e%2e/secret.txt",
    "/{pkg}/..%5clatest.tar.gz", "/{pkg}/latest%00.tar.gz", "/{pkg}/LATEST.tar.gz",
    "/{pkg}/latest.tar.gz.sha256/../../../etc/passwd", "/index.json/../../secret.txt",
    "/index.json%00", "/metrics/../../secret.txt", "/healthz/../../etc/passwd",
    "/readyz%2f..%2f..%2fsecret.txt", "/" + "a" * 10240, "/" + "%2e%2e/" * 1500,
    "/../../../../../../../../../../tmp/secret.txt", "/%2e%2e/" * 12 + "tmp/secret.txt",
    "/blobs/sha256/" + "..%2f" * 12 + "tmp%2fsecret.txt", "/../" * 12 + "tmp/{marker}.txt",
    "/{pkg}/releases/" + "..%2f" * 12 + "tmp%2f{marker}.txt",
]


@pytest.fixture(scope="module")
def hostile_paths(site: Server) -> list[str]:
    return [p.replace("{pkg}", site.package).replace("{marker}", MARKER) for p in TRAVERSALS]


def test_corpus_is_big_enough(hostile_paths: list[str]) -> None:
    assert len(set(hostile_paths)) >= 50


def test_traversal_paths_via_curl_get_4xx_and_never_leak(
        site: Server, planted: list[Path], hostile_paths: list[str], workdir: Path) -> None:
    for path in hostile_paths:
        start = time.monotonic()
        got = curl_fetch(site.url(path), "--path-as-is", cwd=workdir, timeout=10)
        took = time.monotonic() - start
        assert 400 <= got.status <= 499, (path, got.status, got.body[:200])
        assert took < ANSWER_WITHIN, (path, took)
        assert _leaks(got.body) == [], path
        assert b"Traceback" not in got.body


HOSTILE_HEADERS = [
    "Range: bytes=0-1," + ",".join(f"{i}-{i}" for i in range(2, 3000)),
    "Range: bytes=" + ",".join(f"{i}-{i}" for i in range(500)),
    "If-None-Match: " + '"x",' * 1000, "If-Range: " + '"x",' * 1000,
    "Range: bytes=99999999999999999999999-", "Range: bytes=--1", "Range: bytes=-0",
    "Range: \xff\xfe", "If-None-Match: " + '"x",' * 3000, "If-None-Match: W/",
    "If-Modified-Since: Sat, 99 Foo 99999 99:99:99 GMT", "If-Range: W/\"x\"",
    "If-Range: Fri, 31 Dec 9999 23:59:59 GMT", "If-Match: ../../secret.txt",
    "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
    "Host: ../../etc/passwd", "X-Original-URL: /../../secret.txt",
    "X-Rewrite-URL: /../../etc/passwd", "Accept-Encoding: gzip;q=\u00e9",
    "Content-Length: 99999999999999999999", "Transfer-Encoding: chunked",
    "Expect: 100-continue", "Connection: upgrade", "Upgrade: h2c", "Accept-Encoding: \x7f",
]


@pytest.mark.parametrize("header", HOSTILE_HEADERS, ids=range(len(HOSTILE_HEADERS)))
def test_hostile_headers_on_a_traversal_path_get_4xx(site: Server, planted: list[Path],
                                                     workdir: Path, header: str) -> None:
    got = curl_fetch(site.url("/../../secret.txt"), "--path-as-is", "-H", header,
                     cwd=workdir, timeout=10)
    assert 400 <= got.status <= 499, (header, got.status, got.body[:200])
    assert _leaks(got.body) == []


@pytest.mark.parametrize("header", HOSTILE_HEADERS, ids=range(len(HOSTILE_HEADERS)))
def test_hostile_headers_on_the_tarball_never_get_5xx_or_wrong_bytes(
        site: Server, workdir: Path, header: str) -> None:
    full = release_bytes(site.origin, "1.2.0")
    got = curl_fetch(site.url(f"/{site.package}/latest.tar.gz"), "-H", header, cwd=workdir,
                     timeout=10)
    assert got.status in (200, 206, 304, 400, 412, 416, 431), (header, got.status)
    if got.status == 200:
        assert got.body == full
    if got.status == 206:
        first, last = got.headers["content-range"].split()[1].split("/")[0].split("-")
        assert got.body == full[int(first):int(last) + 1]


# --- raw bytes over a socket ----------------------------------------------------------------

def _req(line: bytes, *headers: bytes) -> bytes:
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in (b"Host: x", *headers)) + \
        b"Connection: close\r\n\r\n"


RAW = [
    _req(b"GET http://x/../../etc/passwd HTTP/1.1"),
    _req(b"GET http://127.0.0.1/../../secret.txt HTTP/1.1"),
    _req(b"GET http://x/%2e%2e/%2e%2e/secret.txt HTTP/1.1"),
    _req(b"GET file:///etc/passwd HTTP/1.1"),
    _req(b"GET ../../etc/passwd HTTP/1.1"),
    _req(b"GET etc/passwd HTTP/1.1"),
    _req(b"GET * HTTP/1.1"),
    _req(b"GET /..\\..\\secret.txt HTTP/1.1"),
    _req(b"GET /\\..\\..\\etc\\passwd HTTP/1.1"),
    _req(b"GET /blobs/sha256/..\\..\\secret.txt HTTP/1.1"),
    _req(b"GET /blobs/sha256/\x00../../secret.txt HTTP/1.1"),
    _req(b"GET /secret.txt\x00.tar.gz HTTP/1.1"),
    _req(b"GET /\xff\xfe/../secret.txt HTTP/1.1"),
    _req(b"GET /\xc0\xae\xc0\xae/\xc0\xae\xc0\xae/etc/passwd HTTP/1.1"),
    _req(b"GET /%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd HTTP/1.1"),
    _req(b"GET /%2e%2e/%2e%2e/secret.txt HTTP/1.1"),
    _req(b"GET /%252e%252e/%252e%252e/secret.txt HTTP/1.1"),
    _req(b"GET /..%2f..%2fsecret.txt HTTP/1.1"),
    _req(b"GET /blobs%2fsha256%2f..%2f..%2fsecret.txt HTTP/1.1"),
    _req(b"GET /\t/../secret.txt HTTP/1.1"),
    _req(b"GET /" + b"a" * 10240 + b" HTTP/1.1"),
    _req(b"GET /../../secret.txt HTTP/1.1", b"X-Big: " + b"v" * 20480),
    _req(b"GET /../../secret.txt HTTP/1.1", *(b"X-H%d: v" % i for i in range(1000))),
    _req(b"GET /../../secret.txt HTTP/1.1", b"Bad Header Without Colon"),
    _req(b"GET /../../secret.txt HTTP/1.1", b"X-Nul: a\x00b"),
    _req(b"GET /../../secret.txt HTTP/1.1", b" folded: continuation"),
    _req(b"GET /../../secret.txt HTTP/1.1", b"Content-Length: -1"),
    _req(b"GET /../../secret.txt HTTP/1.1", b"Content-Length: 5", b"Content-Length: 6"),
    _req(b"GET /../../secret.txt HTTP/1.1", b"Transfer-Encoding: chunked",
         b"Content-Length: 3"),
    _req(b"GET /../../secret.txt HTTP/1.1", b"Transfer-Encoding: gzip, identity"),
    _req(b"G@RB/GE / HTTP/1.1"),
    _req(b"FOO /../../secret.txt HTTP/1.1"),
    _req(b"TRACE /../../secret.txt HTTP/1.1"),
    _req(b"CONNECT 127.0.0.1:22 HTTP/1.1"),
    _req(b"GET /../../secret.txt HTTP/1.1 extra"),
    _req(b"GET  /../../secret.txt  HTTP/1.1"),
    _req(b"GET /../../secret.txt HTTP/1.x"),
    _req(b"GET /../../secret.txt HTTX/1.1"),
    _req(b"GET /../../secret.txt"),
    b"GET /../../secret.txt\r\n\r\n",          # HTTP/0.9 style
    b"GET /\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n",  # TLS hello
    b"GET / HTTP/1.1\nHost: x\n\x00\n\n",
    b"POST /../../secret.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nshort",
]


@pytest.mark.parametrize("data", RAW, ids=range(len(RAW)))
def test_raw_garbage_requests_get_4xx_fast_and_never_leak(site: Server, planted: list[Path],
                                                          data: bytes) -> None:
    # The write side stays open: aiohttp drops the answer to a half-closed connection.
    reply = raw_request(site.port, data)
    assert reply.seconds < ANSWER_WITHIN, reply
    assert reply.status is not None, f"no HTTP answer to {data[:80]!r}: {reply.head[:200]!r}"
    assert 400 <= reply.status <= 499, (data[:120], reply.head[:300])
    assert _leaks(reply.head + reply.body) == []


TRUNCATED = [
    b"", b"\r\n\r\n\r\n", b"GET /", b"GET /../../secret.txt HTTP/1.1\r\n",
    b"GET / HTTP/1.1\r\nHost: x",
    b"GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=0-",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nabc",
]


@pytest.mark.parametrize("data", TRUNCATED, ids=range(len(TRUNCATED)))
def test_truncated_requests_are_answered_or_closed_quickly(site: Server,
                                                           data: bytes) -> None:
    # The client sends part of a request and half-closes: the server must not wait on it.
    reply = raw_request(site.port, data, shutdown_write=True)
    assert reply.seconds < ANSWER_WITHIN
    assert reply.status is None or 400 <= reply.status <= 499, reply.head[:300]
    assert _leaks(reply.head + reply.body) == []


def test_stalled_connections_do_not_block_other_clients(site: Server, workdir: Path) -> None:
    full = release_bytes(site.origin, "1.2.0")
    stalled = []
    try:
        for n in range(50):
            sock = socket.create_connection(("127.0.0.1", site.port), timeout=2)
            sock.sendall([b"GET /", b"GET / HTTP/1.1\r\nHo", b"G"][n % 3])
            stalled.append(sock)
        start = time.monotonic()
        got = curl_fetch(site.url(f"/{site.package}/latest.tar.gz"), cwd=workdir, timeout=5)
        assert time.monotonic() - start < ANSWER_WITHIN
        assert got.body == full
    finally:
        for sock in stalled:
            sock.close()


def test_server_still_serves_the_tarball_after_the_corpus(
        site: Server, hostile_paths: list[str], workdir: Path) -> None:
    # Run the corpus once more in this test, so it holds whatever order tests run in.
    for data in RAW:
        raw_request(site.port, data)
    for path in hostile_paths[:20]:
        curl_fetch(site.url(path), "--path-as-is", cwd=workdir)
    assert site.process.poll() is None
    got = curl_fetch(site.url(f"/{site.package}/latest.tar.gz"), cwd=workdir)
    assert got.status == 200
    assert hashlib.sha256(got.body).hexdigest() == got.headers["etag"][8:-1]
    assert got.body == release_bytes(site.origin, "1.2.0")
    assert curl_fetch(site.url("/readyz"), cwd=workdir).status == 200
    # aiohttp logs its own parser's refusals with a traceback; none may come from codecache.
    log = site.log_text()
    assert "internal error" not in log
    assert re.search(r'codecache/[a-z_]+\.py"', log) is None
    assert '"status":5' not in log


def test_raw_reply_reports_real_statuses(site: Server) -> None:
    """The socket helper itself can tell a 200 from a 404 (so the checks above can fail)."""
    ok: RawReply = raw_request(site.port, _req(f"GET /{site.package}/latest.tar.gz "
                                               "HTTP/1.1".encode()))
    assert ok.status == 200
    assert ok.body == release_bytes(site.origin, "1.2.0")
    assert raw_request(site.port, _req(b"GET /nope HTTP/1.1")).status == 404


def test_http_0_9_request_for_the_tarball_is_refused(site: Server) -> None:
    # An HTTP/0.9 client takes everything it reads for the body: answering with a status
    # line and headers would leave it a corrupt tarball, so the server must refuse.
    reply = raw_request(site.port, f"GET /{site.package}/latest.tar.gz\r\n\r\n".encode())
    assert reply.status == 400
    assert release_bytes(site.origin, "1.2.0") not in reply.body
    assert b'"code": "bad_request"' in reply.body
