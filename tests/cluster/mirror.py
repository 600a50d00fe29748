"""A small real fake mirror for the pilot-side tests: a threaded ``http.server`` on loopback.

It stands for what cannot be made real on purpose: a mirror or cache that serves altered
bytes, a replayed release, or a channel that moves between two requests of one pilot.
Paths it was given (``files``) are answered from memory; every other path is passed to an
upstream (a real codecache node or the VIP) with its ``Range``/``If-Range`` headers. Every
request is logged (method, path, status, Range header, body bytes sent).
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

STALL_SECONDS = 20.0


@dataclass
class Served:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Logged:
    method: str
    path: str
    status: int
    range: str | None
    bytes: int


@dataclass
class Mirror:
    upstream: str | None
    files: dict[str, Served] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    # Called after a response is read from the upstream, before it is sent: (method, path).
    after_upstream: Callable[[str, str], None] | None = None
    # path -> how many more requests for it get a 503 before it is answered normally.
    failures: dict[str, int] = field(default_factory=dict)
    # path -> send only this many body bytes, then stall (a connection that dies mid-body).
    stall_after: dict[str, int] = field(default_factory=dict)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, path: str, body: bytes, headers: dict[str, str] | None = None,
              status: int = 200) -> None:
        self.files[path] = Served(status, headers or {}, body)

    def answer(self, method: str, path: str, request_headers: dict[str, str]) -> Served:
        if self.failures.get(path, 0) > 0:
            self.failures[path] -= 1
            return Served(503, {"Content-Type": "text/plain", "Retry-After": "0"}, b"busy\n")
        if path in self.files:
            return self.files[path]
        if self.upstream is None:
            return Served(404, {"Content-Type": "text/plain"}, b"not here\n")
        parts = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            conn.request(method, path, headers=request_headers)
            response = conn.getresponse()
            body = response.read()
            headers = {k: v for k, v in response.getheaders()
                       if k.lower() not in ("connection", "transfer-encoding", "server",
                                            "date", "keep-alive")}
            served = Served(response.status, headers, body)
        finally:
            conn.close()
        if self.after_upstream is not None:
            self.after_upstream(method, path)
        return served


def _handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, method: str) -> None:
            forwarded = {k: v for k, v in self.headers.items()
                         if k.lower() in ("range", "if-range", "user-agent")}
            served = mirror.answer(method, self.path, forwarded)
            self.send_response(served.status)
            headers = {"Content-Length": str(len(served.body)), **served.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            sent = 0
            if method == "GET":
                cut = mirror.stall_after.get(self.path)
                body = served.body if cut is None else served.body[:cut]
                self.wfile.write(body)
                self.wfile.flush()
                sent = len(body)
                if cut is not None:
                    time.sleep(STALL_SECONDS)   # the client's stall timeout ends it first
                    self.close_connection = True
            mirror.log.append(Logged(method, self.path, served.status,
                                     self.headers.get("Range"), sent))

        def do_GET(self) -> None:
            self._reply("GET")

        def do_HEAD(self) -> None:
            self._reply("HEAD")

        def log_message(self, format: str, *args: object) -> None:
            pass  # the mirror keeps its own log

    return Handler


@contextlib.contextmanager
def running_mirror(upstream: str | None = None) -> Iterator[Mirror]:
    """A mirror on a free loopback port, stopped when the block ends."""
    mirror = Mirror(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mirror))
    server.daemon_threads = True
    mirror.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="fake-mirror", daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
