"""Helpers for the HTTP front end acceptance tests: origins, a real server process, clients.

Nothing is mocked: origins are synced from a real svnserve by the real CLI, the server is a
``codecache serve`` subprocess on a free loopback port, and the clients are the real ``wget``
and ``curl`` binaries. ``http.client`` (``Server.request``) is used only to poll for a state
and for setup, never as the client whose behaviour a test asserts.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Origin
from tests.harness.timing import free_port, port_open, scaled, timed_wait, wait_until

READY_TIMEOUT = 20.0
# Blobs above this many bytes are streamed from their file instead of served from memory.
STREAMED = {"CODECACHE_SERVER_MEMORY_BLOB_MAX": "1"}


# --- origins ------------------------------------------------------------------------------


def release_info(origin: Origin, version: str) -> dict[str, Any]:
    """A release record of the signed index in the origin's store (read from disk)."""
    document = json.loads((origin.store / "index.json").read_bytes())
    info: dict[str, Any] = document["signed"]["packages"][origin.package]["releases"][version]
    return info


def blob_path(origin: Origin, sha256: str) -> Path:
    return origin.store / "blobs" / "sha256" / sha256


def release_bytes(origin: Origin, version: str) -> bytes:
    """The stored tarball of a release, read from the store directly (not over HTTP)."""
    sha256 = release_info(origin, version)["sha256"]
    data = blob_path(origin, sha256).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha256
    return data


# --- the server process -------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]      # lower-cased names
    body: bytes


@dataclass
class Server:
    """A running ``codecache serve`` for one origin."""

    origin: Origin
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)   # CODECACHE_* overrides given
    _closed: bool = field(default=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def package(self) -> str:
        return self.origin.package

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None,
                timeout: float = 5.0) -> Reply:
        """A plain http.client request (polling and setup; the tests' clients are curl/wget)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                         body)
        finally:
            conn.close()

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> float:
        """Poll ``check`` until it holds; return the seconds it took, fail at the deadline."""
        took = timed_wait(check, timeout, what, ignore=(OSError, http.client.HTTPException),
                          detail=self.log_tail)
        print(f"{what}: {took:.2f} s (bound {scaled(timeout):g} s)")
        return took

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "server log tail:\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(origin: Origin, port: int | None = None,
                 env: dict[str, str] | None = None,
                 global_args: tuple[str, ...] = (), also_listen: tuple[str, ...] = (),
                 wait_ready: bool = True) -> Server:
    """Start ``codecache serve`` for ``origin`` and wait until ``/readyz`` says 200.

    ``env`` adds ``CODECACHE_*`` overrides (e.g. ``CODECACHE_SERVER_MEMORY_BLOB_MAX``);
    ``global_args`` go before the command (e.g. ``--log-format json``); ``also_listen``:
    addresses served besides ``127.0.0.1:port`` (``[::1]:PORT``); ``wait_ready`` False: wait
    only until the port answers (a node that cannot be ready yet).
    """
    port = port or free_port()
    log = origin.dir / f"serve-{port}.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    # One process unless a test asks for workers (tests/http/test_workers.py): these tests
    # read a state right after making it, which each worker sees within a watch tick.
    environ["CODECACHE_SERVER_WORKERS"] = "1"
    environ.update(env or {})
    environ["CODECACHE_SERVER_LISTEN"] = ",".join((f"127.0.0.1:{port}", *also_listen))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "codecache", "--config", str(origin.config), *global_args,
             "serve"],
            stdout=out, stderr=subprocess.STDOUT, env=environ, cwd=origin.dir)
    server = Server(origin, port, process, log, dict(env or {}))

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"codecache serve exited {process.returncode}\n"
                                 f"{server.log_tail()}")
        return port_open(port) and (not wait_ready or server.request("/readyz").status == 200)

    try:
        wait_until(ready, READY_TIMEOUT, "codecache serve answers /readyz with 200",
                   ignore=(OSError, http.client.HTTPException), detail=server.log_tail)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running(origin: Origin, port: int | None = None, env: dict[str, str] | None = None,
            global_args: tuple[str, ...] = (), also_listen: tuple[str, ...] = (),
            wait_ready: bool = True) -> Iterator[Server]:
    """A started server (``start_server``), stopped (SIGTERM, then SIGKILL) when the block
    ends."""
    server = start_server(origin, port, env, global_args, also_listen, wait_ready)
    try:
        yield server
    finally:
        server.stop()


# --- clients ------------------------------------------------------------------------------


def http_date(seconds: int) -> str:
    """IMF-fixdate of Unix ``seconds``, computed here independently of the server."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))


def rfc3339_seconds(text: str) -> int:
    """Unix seconds of an index timestamp like ``2026-01-02T03:04:05Z``."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


# --- raw sockets (what curl will not send) --------------------------------------------------


@dataclass
class RawReply:
    status: int | None           # None: the server closed without answering
    head: bytes
    body: bytes
    seconds: float


def raw_request(port: int, data: bytes, *, timeout: float = 3.0,
                shutdown_write: bool = False) -> RawReply:
    """Send raw bytes, read one response (or until the server closes), time it all."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            if shutdown_write:
                sock.shutdown(socket.SHUT_WR)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf and (chunk := sock.recv(65536)):
                buf += chunk
            length = _content_length(buf.partition(b"\r\n\r\n")[0])
            while length is not None and len(buf.partition(b"\r\n\r\n")[2]) < length \
                    and (chunk := sock.recv(65536)):
                buf += chunk
        except ConnectionResetError:
            pass  # what arrived before the reset is the answer
        except TimeoutError:
            pytest.fail(f"no complete answer within {timeout}s to {data[:120]!r}: {buf[:200]!r}")
    head, _, body = buf.partition(b"\r\n\r\n")
    status = None
    first = head.split(b"\r\n", 1)[0].split()
    if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit():
        status = int(first[1])
    return RawReply(status, head, body, time.monotonic() - start)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None
