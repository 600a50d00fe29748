"""A fake upstream for replica tests: a small real HTTP server in the test process.

A fake, named as such (STYLE.md, Tests): a hostile upstream (bad signatures, rollbacks,
gzip bombs, endless or stalled bodies, redirects) cannot be produced with the real
``codecache serve``, so this server answers whatever the test sets, path by path, and the
test switches it step by step. It is real HTTP on a loopback port (``ThreadingHTTPServer``
in a thread), so the replica under test is the real ``codecache`` process talking over a
real socket. Every response is written raw (status line, headers, body), so a test can
send what no well-behaved server would.

``Publisher`` signs index documents with a key the test generates, the way an origin does
(``trust.sign_index``); blobs are arbitrary bytes whose sha256 and size the release records
(a replica checks sha256 and size only). Its releases are Subversion releases, or git ones
(``git_url`` + ``commit``, the commit author) for the versions a test names: an index that
holds one is format 2, as an origin writes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from codecache.core.index import EMPTY, Index, Release, add_release, move_channel, release_comment
from codecache.core.names import blob_url_path, etag_for
from codecache.core.pin import git_pin, svn_pin
from codecache.core.signing import SecretKey, generate_key, sign_document, sign_prehashed
from codecache.core.trust import sign_index
from tests.replica.conftest import write_replica_config

Responder = Callable[["Handler"], None]


# --- the server ---------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0 on our side: one request per connection, so a response a test cuts short
    # never leaves the replica a half-read connection to reuse.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self.server.owner.dispatch(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeUpstream

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The replica hanging up on an endless, oversized or stalled body is the expected
        # outcome of those cases, not an error of the fake.
        import sys

        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


@dataclass(frozen=True)
class Hit:
    at: float            # time.monotonic()
    generation: int      # which set of routes answered
    path: str
    headers: dict[str, str]


class FakeUpstream:
    """The fake upstream server; ``set`` replaces its routes (a new generation)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._lock = threading.Lock()
        self._routes: dict[str, Responder] = {}
        self.generation = 0
        self.hits: list[Hit] = []
        self.closing = threading.Event()   # ends stalled and endless responses

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        self._thread.start()
        return self

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set(self, routes: dict[str, Responder]) -> int:
        """Answer with ``routes`` from now on (unknown paths: 404); returns the generation."""
        with self._lock:
            self.generation += 1
            self._routes = dict(routes)
            return self.generation

    def requests(self, path: str | None = None, since: int = 0) -> list[Hit]:
        """Requests received (for ``path``) while generation ``since`` or later was set."""
        with self._lock:
            return [h for h in self.hits
                    if h.generation >= since and (path is None or h.path == path)]

    def dispatch(self, handler: Handler) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.hits.append(Hit(time.monotonic(), self.generation, path,
                                 {k.lower(): v for k, v in handler.headers.items()}))
            responder = self._routes.get(path)
        if responder is None:
            send(handler, 404, b"not here\n", reason="Not Found")
        else:
            responder(handler)


@contextlib.contextmanager
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


# --- responses (each a Responder, or a factory of one) ------------------------------------


def send(handler: Handler, status: int, body: bytes = b"", *,
         headers: dict[str, str] | None = None, reason: str = "OK",
         length: int | None = None) -> None:
    """Write one raw response; ``length`` overrides the Content-Length announced."""
    lines = [f"HTTP/1.1 {status} {reason}", "Connection: close",
             f"Content-Length: {len(body) if length is None else length}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with contextlib.suppress(ConnectionError):
        handler.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        handler.wfile.flush()


def body(data: bytes, status: int = 200, *, headers: dict[str, str] | None = None,
         reason: str = "OK", length: int | None = None) -> Responder:
    return lambda h: send(h, status, data, headers=headers, reason=reason, length=length)


def index(document: bytes) -> Responder:
    """An index as the real server sends it: strong ETag, 304 on ``If-None-Match``."""
    etag = etag_for(hashlib.sha256(document).hexdigest())

    def respond(h: Handler) -> None:
        if h.headers.get("If-None-Match") == etag:
            send(h, 304, headers={"ETag": etag}, reason="Not Modified", length=0)
        else:
            send(h, 200, document, headers={"ETag": etag, "Content-Type": "application/json"})
    return respond


def throttled(data: bytes, bytes_per_second: float, stop: threading.Event) -> Responder:
    """``data`` with its length, written in small pieces at about ``bytes_per_second``."""
    piece = 32 * 1024

    def respond(h: Handler) -> None:
        send(h, 200, b"", length=len(data), headers={"Content-Type": "application/gzip"})
        start = time.monotonic()
        with contextlib.suppress(ConnectionError):
            for offset in range(0, len(data), piece):
                if stop.is_set():
                    return
                h.wfile.write(data[offset:offset + piece])
                h.wfile.flush()
                ahead = (offset + piece) / bytes_per_second - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    return respond


def endless_chunked(stop: threading.Event, limit: int = 1 << 30) -> Responder:
    """A 200 with ``Transfer-Encoding: chunked`` and no length, never ending (up to ``limit``)."""
    chunk = b"%x\r\n" % 65536 + b"[" * 65536 + b"\r\n"

    def respond(h: Handler) -> None:
        head = ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            h.wfile.write(head.encode())
            sent = 0
            while sent < limit and not stop.is_set():
                h.wfile.write(chunk)
                sent += 65536
    return respond


def stalled(stop: threading.Event, seconds: float = 30.0) -> Responder:
    """Headers announcing a body, then nothing until the client gives up (or ``seconds``)."""
    def respond(h: Handler) -> None:
        with contextlib.suppress(ConnectionError):
            h.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4096\r\n"
                          b"Content-Type: application/json\r\n\r\n{")
            h.wfile.flush()
        stop.wait(seconds)
    return respond


def redirect(location: str) -> Responder:
    return body(b"moved\n", 302, headers={"Location": location}, reason="Found")


# --- signing like an origin ---------------------------------------------------------------


def dump(document: dict[str, Any]) -> bytes:
    """A document's bytes, formatted as ``trust.sign_index`` writes them."""
    return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False).encode() + b"\n"


@dataclass
class Publisher:
    """Signs indexes like an origin does, with a key of the test's own."""

    package: str = "pilot"
    channel: str = "latest"
    secret: SecretKey = field(default_factory=generate_key)

    def write_public_key(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.secret.public.to_minisign())
        return path

    def release(self, version: str, data: bytes, date: int = 1_700_000_000, *,
                git: bool = False) -> Release:
        """A signed release of ``data``: from Subversion, or (``git``) from a git commit."""
        sha256 = hashlib.sha256(data).hexdigest()
        if git:
            source = git_pin(f"https://git.example.org/{self.package}.git",
                             self.commit_of(version))
            author = "Ann Example <ann@example.org>"
        else:
            source = svn_pin(f"svn://svn.example.org/repo/{self.package}/tags/{version}", 1)
            author = "releasemgr"
        comment = release_comment(self.package, version, sha256, len(data), source)
        minisig = sign_prehashed(self.secret, hashlib.blake2b(data, digest_size=64).digest(),
                                 comment)
        return Release(version=version, sha256=sha256, size=len(data),
                       tar_sha256=hashlib.sha256(b"tar:" + data).hexdigest(),
                       source=source, author=author, date=date, minisig=minisig)

    @staticmethod
    def commit_of(version: str) -> str:
        """The commit a git release of ``version`` names: made up, but well-formed."""
        return hashlib.sha256(version.encode()).hexdigest()[:40]

    def make_index(self, serial: int, releases: dict[str, bytes], latest: str, *,
                   expires_in: int = 3600, generated: int | None = None,
                   git: Collection[str] = (), dates: Mapping[str, int] | None = None) -> Index:
        """An index of ``releases`` (version → tarball bytes), ``channel`` → ``latest``;
        the versions in ``git`` are git releases; ``dates``: commit times by version."""
        now = int(time.time()) if generated is None else generated
        index = EMPTY
        for version, data in releases.items():
            date = (dates or {}).get(version, 1_700_000_000)
            index = add_release(index, self.package,
                                self.release(version, data, date, git=version in git))
        index = move_channel(index, self.package, self.channel, latest, now)
        return Index(serial=serial, generated=now, expires=now + expires_in,
                     packages=index.packages)

    def sign(self, index: Index) -> bytes:
        return sign_index(self.secret, index).document

    def sign_payload(self, payload: dict[str, Any]) -> bytes:
        """Sign any payload, even one no codecache origin would write."""
        return dump(sign_document(self.secret, payload))


def blob_routes(releases: dict[str, bytes]) -> dict[str, Responder]:
    """``/blobs/sha256/{hex}`` for each tarball, served plainly."""
    return {blob_url_path(hashlib.sha256(d).hexdigest()): body(d) for d in releases.values()}


# --- the replica's config -----------------------------------------------------------------


def write_replica_dir(directory: Path, publisher: Publisher, upstreams: list[str], *,
                      interval: float = 0.3, timeout: str = "1s",
                      max_index_size: int | None = None) -> Path:
    """A replica directory (store ``store``) trusting ``publisher``'s key; returns the config."""
    directory.mkdir(parents=True, exist_ok=True)
    publisher.write_public_key(directory / "keys" / "codecache.pub")
    cap = {"max_index_size": max_index_size} if max_index_size is not None else {}
    return write_replica_config(directory, None, upstreams, interval=f"{interval}s",
                                timeout=timeout, replica=cap)
