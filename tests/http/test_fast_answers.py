"""``server.fast_answers``: the requests pilots repeat, answered beside aiohttp's handling.

The ordinary way (aiohttp's request handling, ``front.Front``) is the reference: a server
with ``fast_answers = false`` must send the same bytes, byte for byte but for the Date, for
every request the fast way answers. Then what the fast way must not change on a
connection: pipelined requests answered in order whichever way each goes, a client that
does not read meets flow control and still gets everything, the keep-alive timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpRequestParser

from codecache.core.config import load_config
from codecache.telemetry.logs import AccessLog
from codecache.web.fastpath import FastPath
from codecache.web.storeview import StoreView
from tests.conftest import Origin, copy_origin
from tests.harness.timing import scaled
from tests.http.helpers import STREAMED, Server, release_bytes, running

SLOW = {"CODECACHE_SERVER_FAST_ANSWERS": "false"}
DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


@pytest.fixture(scope="module")
def pair(template_origin: Origin,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """(fast, slow): two servers of identical copies of one origin."""
    directory = tmp_path_factory.mktemp("pair")
    with running(copy_origin(template_origin, directory / "fast")) as fast, \
            running(copy_origin(template_origin, directory / "slow"), env=SLOW) as slow:
        yield fast, slow


class Connection:
    """One kept-alive connection, raw bytes both ways; reads responses one at a time."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 20)
        self.buf += chunk
        return bool(chunk)

    def response(self, head_only: bool = False) -> tuple[int, bytes, bytes]:
        """(status, header block, body) of the next response; a HEAD's has no body."""
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed; had {self.buf[:200]!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        match = re.search(rb"\r\nContent-Length: (\d+)", head, re.IGNORECASE)
        length = 0 if head_only or status == 304 or match is None else int(match[1])
        while len(self.buf) < length:
            assert self._fill(), "connection closed in a body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, head, body

    def closed_by_server(self, within: float) -> bool:
        self.sock.settimeout(within)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False


def request(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: codecache.test",
             "X-Request-ID: fixed-id-for-comparison", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(server: Server, *requests: tuple[bytes, bool]) -> list[bytes]:
    """Each request on one connection in turn; the whole responses, Date removed."""
    conn = Connection(server.port)
    try:
        answers = []
        for data, head_only in requests:
            conn.send(data)
            _, head, body = conn.response(head_only)
            answers.append(DATE.sub(b"\r\n", head) + b"\r\n\r\n" + body)
        return answers
    finally:
        conn.close()


def etag_of(server: Server, path: str) -> str:
    return server.request(path).headers["etag"]


def cases(package: str, etag: str) -> list[tuple[bytes, bool]]:
    channel = f"/{package}/latest.tar.gz"
    release = f"/{package}/releases/1.2.0.tar.gz"
    return [
        (request(channel), False),                # loads the blob (the ordinary way)
        (request(channel), False),                # from memory
        (request(release), False),
        (request(channel, "User-Agent: Wget/1.21.3", "Connection: Keep-Alive"), False),
        (request(channel, f"If-None-Match: {etag}"), False),
        (request(channel, f"If-None-Match: {etag}", f"If-Modified-Since: {'x' * 3}"), False),
        (request(channel, method="HEAD"), True),
        (request(channel, f"If-None-Match: {etag}", method="HEAD"), True),
        (request(f"{channel}.sha256"), False),
        (request(f"{channel}.minisig"), False),
        (request(f"/{package}/releases/1.0.0.tar.gz.sha256"), False),
        (request("/index.json"), False),
    ]


def test_the_fast_way_sends_the_bytes_of_the_ordinary_way(pair: tuple[Server, Server]) -> None:
    fast, slow = pair
    channel = f"/{fast.package}/latest.tar.gz"
    etag = etag_of(fast, channel)
    assert etag == etag_of(slow, channel)
    want = exchange(slow, *cases(slow.package, etag))
    got = exchange(fast, *cases(fast.package, etag))
    for number, (mine, theirs) in enumerate(zip(got, want, strict=True)):
        assert mine == theirs, f"case {number}"
    assert got[1].endswith(release_bytes(fast.origin, "1.2.0"))
    # And the same access lines (but for the time and the milliseconds taken).
    mine_lines = access_lines(fast, len(got))
    assert mine_lines == access_lines(slow, len(want))
    assert sum('request_id=fixed-id-for-comparison' in line for line in mine_lines) == len(got)


ACCESS = re.compile(r"^\S+ \S+ INFO codecache\.access (.*) [0-9.]+ms (.*)$")


def access_lines(server: Server, count: int) -> list[str]:
    """The last ``count`` access lines of the server's log, without time and duration."""
    def lines() -> list[str]:
        found = [ACCESS.match(line) for line in server.log_text().splitlines()]
        return [f"{m[1]} {m[2]}" for m in found if m and "fixed-id-for-comparison" in m[2]]

    server.wait_for(f"{count} access lines", lambda: len(lines()) >= count, timeout=10)
    return lines()[-count:]


def test_pipelined_requests_are_answered_in_order_whichever_way(
        pair: tuple[Server, Server]) -> None:
    fast, _ = pair
    channel = f"/{fast.package}/latest.tar.gz"
    etag = etag_of(fast, channel)
    body = release_bytes(fast.origin, "1.2.0")
    conn = Connection(fast.port)
    try:
        conn.send(request(channel) + request(channel, f"If-None-Match: {etag}")
                  + request(f"/{fast.package}/nothing.tar.gz")     # 404: the ordinary way
                  + request(channel, "Range: bytes=0-9")           # 206: the ordinary way
                  + request(f"{channel}.sha256") + request(channel, method="HEAD")
                  + request("/healthz") + request(channel))
        got = [conn.response(), conn.response(), conn.response(), conn.response(),
               conn.response(), conn.response(head_only=True), conn.response(),
               conn.response()]
    finally:
        conn.close()
    assert [status for status, _, _ in got] == [200, 304, 404, 206, 200, 200, 200, 200]
    assert got[0][2] == body and got[7][2] == body
    assert got[3][2] == body[:10]
    assert got[4][2] == f"{hashlib.sha256(body).hexdigest()}  latest.tar.gz\n".encode()
    assert b'"status":"ok"' in got[6][2].replace(b" ", b"")


def test_a_client_that_does_not_read_still_gets_every_answer(
        pair: tuple[Server, Server]) -> None:
    """2,000 pipelined downloads sent before reading any: the socket's buffers fill, the
    server must stop answering fast and meet aiohttp's flow control, then go on, in order."""
    fast, _ = pair
    channel = f"/{fast.package}/latest.tar.gz"
    body = release_bytes(fast.origin, "1.2.0")
    count = 2000
    conn = Connection(fast.port, timeout=30)
    try:
        fast.request(channel)   # the blob in memory
        conn.sock.setblocking(False)
        data = memoryview(request(channel) * count)
        deadline = time.monotonic() + scaled(30)
        while data and time.monotonic() < deadline:   # as much as the server takes
            try:
                data = data[conn.sock.send(data):]
            except BlockingIOError:
                time.sleep(0.05)
        conn.sock.setblocking(True)
        conn.sock.settimeout(30)
        assert not data, "the server stopped reading for good"
        for number in range(count):
            status, _, got = conn.response()
            assert (status, got == body) == (200, True), f"answer {number}"
    finally:
        conn.close()


def test_a_connection_in_use_outlives_the_keepalive_timeout_and_idle_it_does_not(
        template_origin: Origin, tmp_path: Path) -> None:
    with running(copy_origin(template_origin, tmp_path / "o"),
                 env={"CODECACHE_SERVER_KEEPALIVE_TIMEOUT": "2s"}) as server:
        path = f"/{server.package}/latest.tar.gz.sha256"
        conn = Connection(server.port)
        try:
            started = time.monotonic()
            # Two and a half keep-alive timeouts in use; 1.7 s of margin between requests.
            while time.monotonic() - started < 5:
                conn.send(request(path))
                assert conn.response()[0] == 200
                time.sleep(0.3)
            assert conn.closed_by_server(within=15), "idle past keepalive_timeout, still open"
        finally:
            conn.close()


# --- FastPath itself: which requests it takes (the rest go the ordinary way) ---------------


def store_view(template_origin: Origin, directory: Path,
               env: dict[str, str] | None = None) -> StoreView:
    origin = copy_origin(template_origin, directory / "o")
    view = StoreView(load_config(origin.config, env=env or {}), workers=1, metrics_dir=None)
    view.refresh()
    return view


@pytest.fixture(scope="module")
def state(template_origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> StoreView:
    view = store_view(template_origin, tmp_path_factory.mktemp("state"))
    assert view.catalog is not None
    _, rep = view.catalog.lookup(f"/{template_origin.package}/latest.tar.gz")
    assert rep is not None and rep.blob is not None
    view.blobs.load(rep.blob, rep.size)
    return view


def answer(state: StoreView, method: str, path: str, headers: dict[str, str] | None = None,
           *, version: str = "1.1", body: bytes = b"") -> bytes | None:
    """What FastPath answers to the request, parsed by aiohttp's own parser."""
    lines = [f"{method} {path} HTTP/{version}", "Host: codecache.test",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(BaseProtocol(loop), loop, 2**16, max_line_size=4096,
                                   max_field_size=8190)
        messages, _, _ = parser.feed_data(("\r\n".join(lines) + "\r\n\r\n").encode()
                                          + body)
    finally:
        loop.close()
    (message, payload), = messages
    access = AccessLog(logging.getLogger("codecache.access"), loop, sample=0)   # no lines
    return FastPath(state, access).answer(message, payload, lambda: "127.0.0.1", 0.0)


def test_fast_path_answers_the_plain_cases(state: StoreView, template_origin: Origin) -> None:
    package = template_origin.package
    channel = f"/{package}/latest.tar.gz"
    assert state.catalog is not None
    _, rep = state.catalog.lookup(channel)
    assert rep is not None
    full = answer(state, "GET", channel)
    assert full is not None and full.startswith(b"HTTP/1.1 200 OK\r\n")
    assert full.endswith(release_bytes(template_origin, "1.2.0"))
    revalidated = answer(state, "GET", channel, {"If-None-Match": rep.etag})
    assert revalidated is not None and revalidated.startswith(b"HTTP/1.1 304 Not Modified")
    head = answer(state, "HEAD", channel)
    assert head is not None and head.endswith(b"\r\n\r\n")
    assert answer(state, "GET", f"{channel}.sha256") is not None


@pytest.mark.parametrize(("method", "path", "headers", "version", "body"), [
    ("GET", "/{p}/latest.tar.gz", {"Connection": "close"}, "1.1", b""),
    ("GET", "/{p}/latest.tar.gz", {}, "1.0", b""),
    ("GET", "/{p}/latest.tar.gz", {"Connection": "keep-alive"}, "1.0", b""),
    ("POST", "/{p}/latest.tar.gz", {}, "1.1", b""),
    ("GET", "/{p}/latest.tar.gz", {}, "1.1", b"a body"),
    ("GET", "/{p}/latest.tar.gz", {"Transfer-Encoding": "chunked"}, "1.1", b""),
    ("GET", "/{p}/latest.tar.gz", {"Connection": "Upgrade", "Upgrade": "websocket"}, "1.1",
     b""),
    ("GET", "/{p}/latest.tar.gz", {"Range": "bytes=0-1"}, "1.1", b""),
    ("GET", "/{p}/latest.tar.gz", {"If-None-Match": '"other"'}, "1.1", b""),
    ("GET", "/{p}/latest.tar.gz", {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
     "1.1", b""),
    ("GET", "/{p}/nothing.tar.gz", {}, "1.1", b""),
    ("GET", "/readyz", {}, "1.1", b""),
    ("GET", "/history.json", {}, "1.1", b""),
    ("GET", "/%zz", {}, "1.1", b""),
])
def test_fast_path_leaves_the_rest_to_the_ordinary_way(
        state: StoreView, template_origin: Origin, method: str, path: str,
        headers: dict[str, str], version: str, body: bytes) -> None:
    assert answer(state, method, path.format(p=template_origin.package), headers,
                  version=version, body=body) is None


def test_fast_path_sends_no_file_but_revalidates_it(template_origin: Origin,
                                                    tmp_path: Path) -> None:
    """A blob sent from its file (above memory_blob_max) goes the ordinary way (sendfile);
    its 304 needs no body and is answered."""
    streamed = store_view(template_origin, tmp_path, env={**STREAMED})
    channel = f"/{template_origin.package}/latest.tar.gz"
    assert streamed.catalog is not None
    _, rep = streamed.catalog.lookup(channel)
    assert rep is not None
    assert answer(streamed, "GET", channel) is None
    assert answer(streamed, "GET", channel, {"If-None-Match": rep.etag}) is not None


# --- random pipelines: the fast way and the ordinary way send the same bytes ---------------

RANDOM_PIPELINES = 40
REQUEST_ID = re.compile(rb"\r\nX-Request-ID: [^\r]*\r\n", re.IGNORECASE)
PID = re.compile(rb'"pid": \d+')   # /healthz names the process: the two servers' differ


def random_request(rng: random.Random, package: str, etag: str, last_modified: str, *,
                   parsable: bool) -> bytes:
    """One request a pilot, a proxy or a confused client might send: mostly the plain
    cases the fast way takes, mixed with everything that must go the ordinary way.

    Unless ``parsable``, it may be one that aiohttp's parser itself refuses (no Host, a
    lowercase method, HTTP/1.2, ``*``): see ``random_pipeline``.
    """
    path = rng.choice([
        f"/{package}/latest.tar.gz", f"/{package}/latest.tar.gz", f"/{package}/latest.tar.gz",
        f"/{package}/releases/1.2.0.tar.gz", f"/{package}/releases/1.0.0.tar.gz",
        f"/{package}/latest.tar.gz.sha256", f"/{package}/latest.tar.gz.minisig",
        f"/{package}/releases/1.0.0.tar.gz.sha256", f"/{package}/nothing.tar.gz",
        f"/{package}/latest.tar.gz?pilot=7", f"/{package}//latest.tar.gz",
        f"/{package}/%6catest.tar.gz", f"/{package}/latest.tar.gz/", "/index.json",
        "/healthz", "/%zz", "/../etc/passwd", f"http://codecache.test/{package}/latest.tar.gz",
        *([] if parsable else ["*"]),
    ])
    method = rng.choice(["GET"] * 8 + ["HEAD", "HEAD", "POST", "OPTIONS", "PUT"]
                        + ([] if parsable else ["get"]))
    version = rng.choice(["HTTP/1.1"] * 12 + ["HTTP/1.0", "HTTP/2.0"]
                         + ([] if parsable else ["HTTP/1.2"]))
    headers = ["Host: codecache.test"] if parsable or rng.random() < 0.5 else []
    # One line of each chosen kind: aiohttp's parser refuses a second User-Agent,
    # If-Modified-Since, Content-Length... (If-None-Match may come on two lines).
    kinds = [
        [f"If-None-Match: {etag}", f"if-none-match: {etag}", f"If-None-Match: W/{etag}",
         f'If-None-Match: "x", {etag}', 'If-None-Match: "other"', "If-None-Match: *",
         f"If-None-Match:{etag}", f"If-None-Match:   {etag}   ",
         f'If-None-Match: "x"\r\nIf-None-Match: {etag}'],
        [f"If-Modified-Since: {last_modified}", "If-Modified-Since: yesterday",
         "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT",
         "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"],
        [f"If-Match: {etag}", 'If-Match: "other"'],
        [f"If-Unmodified-Since: {last_modified}"],
        ["Range: bytes=0-9", "Range: bytes=-5", "Range: bytes=999999999-", "Range: lines=1-2"],
        [f"If-Range: {etag}"],
        ["Connection: keep-alive", "Connection: close"],
        ["Upgrade: websocket"], ["Expect: 100-continue"], ["Accept-Encoding: gzip, deflate"],
        ["User-Agent: Wget/1.21.3", "User-Agent: curl/7.88.1"],
        ["Cache-Control: no-cache", "Pragma: no-cache"], ["Content-Length: 0"],
        ["X-Codecache-Cache-Offset: 342", "X-Codecache-Cache-Offset: nonsense"],
        ["X-Request-ID: " + "r" * rng.choice([1, 16, 200])], ["X-Forwarded-For: 10.0.0.1"],
    ]
    chosen = rng.sample(kinds, rng.choice([0, 0, 1, 1, 1, 2, 3, 5]))
    headers += [rng.choice(kind) for kind in chosen]
    # Content-Length with Transfer-Encoding, or twice: refused by the parser.
    body = "" if "Content-Length: 0" in headers else rng.choice([""] * 10 + ["length", "chunked"])
    if body == "length":
        headers.append("Content-Length: 5")
    elif body == "chunked":
        headers.append("Transfer-Encoding: chunked")
    content = {"": "", "length": "hello", "chunked": "5\r\nhello\r\n0\r\n\r\n"}[body]
    return (f"{method} {path} {version}\r\n" + "".join(f"{h}\r\n" for h in headers)
            + "\r\n" + content).encode()


def closes(data: bytes) -> bool:
    """Whether the server ends the connection after answering this request."""
    head = data.partition(b"\r\n\r\n")[0].lower()
    line = head.partition(b"\r\n")[0]
    return b"\r\nconnection: close" in head or (
        not line.endswith(b"http/1.1") and b"\r\nconnection: keep-alive" not in head)


def random_pipeline(rng: random.Random, package: str, etag: str,
                    last_modified: str) -> list[bytes]:
    """1 to 12 requests. One that aiohttp's parser refuses only alone, and one that ends
    the connection only last: aiohttp drops the requests it parsed in the same read before
    a refused one (or before bytes after a closing one) and sends its 400 alone, so the
    answer would depend on how the kernel split the bytes, either way."""
    count = rng.randint(1, 12)
    requests = []
    for place in range(count):
        while True:
            data = random_request(rng, package, etag, last_modified, parsable=count > 1)
            if place == count - 1 or not closes(data):
                break
        requests.append(data)
    return requests


def everything_sent(port: int, data: bytes, chunks: list[int]) -> bytes:
    """``data`` sent in pieces of the given sizes; all that comes back until the server
    closes (the pipeline ends with a Connection: close request, if nothing closed it first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        at = 0
        for size in chunks:
            with contextlib.suppress(OSError):   # a server that closed early stops reading
                sock.sendall(data[at:at + size])
            at += size
            time.sleep(0.002)
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 20):
                got += chunk
    got = DATE.sub(b"\r\n", got)
    return PID.sub(b'"pid": -', REQUEST_ID.sub(b"\r\nX-Request-ID: -\r\n", got))


def test_random_pipelines_get_the_same_bytes_either_way(pair: tuple[Server, Server]) -> None:
    fast, slow = pair
    seed = int(os.environ.get("CODECACHE_TEST_SEED", time.time_ns() % 1_000_000))
    print(f"seed {seed} (replay: CODECACHE_TEST_SEED={seed})")
    rng = random.Random(seed)  # noqa: S311 - test input, replayable; not crypto
    channel = f"/{fast.package}/latest.tar.gz"
    reply = fast.request(channel)
    etag, modified = reply.headers["etag"], reply.headers["last-modified"]
    slow.request(channel)                          # both hold the blob in memory
    for number in range(RANDOM_PIPELINES):
        requests = random_pipeline(rng, fast.package, etag, modified)
        data = b"".join(requests)
        if not closes(requests[-1]):
            data += request(channel, "Connection: close")
        chunks: list[int] = []
        while sum(chunks) < len(data):
            chunks.append(rng.randint(1, 400))
        theirs = everything_sent(slow.port, data, chunks)
        mine = everything_sent(fast.port, data, chunks)
        at = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                  min(len(mine), len(theirs)))
        assert mine == theirs, (f"seed {seed}, pipeline {number}: {requests!r}\n"
                                f"differ at byte {at}:\nfast: {mine[max(0, at - 300):at + 300]!r}"
                                f"\nslow: {theirs[max(0, at - 300):at + 300]!r}")
