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
import itertools
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

from tests.conftest import Origin, SvnRepo, free_port, make_origin, require, wait_for_port

_names = itertools.count()
READY_TIMEOUT = 20.0
# Blobs above this many bytes are streamed from their file instead of served from memory.
STREAMED = {"CODECACHE_SERVER_MEMORY_BLOB_MAX": "1"}


# --- origins ------------------------------------------------------------------------------


def new_origin(repo: SvnRepo, directory: Path, *, tags: tuple[str, ...] = ("1.0.0", "1.2.0"),
               keys_from: Path | None = None, package: str | None = None,
               later: bool = False) -> Origin:
    """A synced origin for a package with ``tags`` (a fresh svn package unless given).

    Each tag after the first follows a change of ``lib/pilot/main.py``, so every release
    has different bytes. ``later`` syncs at least a second after the last tag commit, so
    a channel's ``moved_at`` differs from its release's commit date.
    """
    if package is None:
        package = f"web{os.getpid()}-{next(_names)}"
        repo.new_package(package)
        for n, tag in enumerate(tags):
            if n:
                repo.change(package, "lib/pilot/main.py", f"print('pilot {tag}')\n")
            repo.tag(package, tag)
    tagged = time.time()
    origin = make_origin(directory, package, f"{repo.url}/{package}", keys_from=keys_from)
    if later:
        time.sleep(max(0.0, int(tagged) + 1.05 - time.time()))
    origin.cli("sync", "--once", check=True)
    return origin


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
        start = time.monotonic()
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if check():
                    return time.monotonic() - start
            if time.monotonic() - start > timeout:
                pytest.fail(f"not within {timeout}s: {what}\n{self.log_tail()}")
            time.sleep(0.05)

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
                 global_args: tuple[str, ...] = ()) -> Server:
    """Start ``codecache serve`` for ``origin`` and wait until ``/readyz`` says 200.

    ``env`` adds ``CODECACHE_*`` overrides (e.g. ``CODECACHE_SERVER_MEMORY_BLOB_MAX``);
    ``global_args`` go before the command (e.g. ``--log-format json``).
    """
    port = port or free_port()
    log = origin.dir / f"serve-{port}.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    # One process unless a test asks for workers (tests/http/test_workers.py): these tests
    # read a state right after making it, which each worker sees within a watch tick.
    environ["CODECACHE_SERVER_WORKERS"] = "1"
    environ.update(env or {})
    environ["CODECACHE_SERVER_LISTEN"] = f"127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "codecache", "--config", str(origin.config), *global_args,
             "serve"],
            stdout=out, stderr=subprocess.STDOUT, env=environ, cwd=origin.dir)
    server = Server(origin, port, process, log, dict(env or {}))
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"codecache serve exited {process.returncode}\n"
                                     f"{server.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                wait_for_port(port, timeout=0.2)
                if server.request("/readyz").status == 200:
                    return server
            if time.monotonic() > deadline:
                raise AssertionError(f"codecache serve not ready\n{server.log_tail()}")
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise


@contextlib.contextmanager
def running(origin: Origin, port: int | None = None, env: dict[str, str] | None = None,
            global_args: tuple[str, ...] = ()) -> Iterator[Server]:
    """A started server, stopped (SIGTERM, then SIGKILL) when the block ends."""
    server = start_server(origin, port, env, global_args)
    try:
        yield server
    finally:
        server.stop()


# --- clients ------------------------------------------------------------------------------


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]      # the last response's headers, lower-cased names
    body: bytes
    stderr: str


def parse_header_block(raw: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers of the last response in a ``curl -D`` dump."""
    blocks = [b for b in raw.replace(b"\r\n", b"\n").split(b"\n\n") if b.strip()]
    if not blocks:
        return 0, {}
    lines = blocks[-1].decode("latin-1").split("\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def curl_fetch(url: str, *args: str, cwd: Path, output: str | None = None,
               timeout: float = 20.0) -> Fetched:
    """Run the real curl; ``output`` names a file in ``cwd`` to write to (default: capture)."""
    heads = cwd / f".headers-{next(_names)}"
    body_file = cwd / (output or f".body-{next(_names)}")
    result = subprocess.run(
        [require("curl"), "-sS", "--max-time", str(timeout), "-D", str(heads),
         "-o", str(body_file), "-w", "%{http_code}", *args, url],
        capture_output=True, timeout=timeout + 5, cwd=cwd, check=False)
    status, headers = parse_header_block(heads.read_bytes() if heads.exists() else b"")
    heads.unlink(missing_ok=True)
    body = body_file.read_bytes() if body_file.exists() else b""
    if output is None:
        body_file.unlink(missing_ok=True)
    code = result.stdout.decode().strip()
    assert result.returncode in (0, 33), f"curl {args} {url} failed: {result.stderr.decode()}"
    assert code == str(status) or status == 0, (code, status)
    return Fetched(int(code), headers, body, result.stderr.decode(errors="replace"))


def wget(*args: str, cwd: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the real wget in ``cwd`` (C locale, so its messages are the English ones)."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    return subprocess.run([require("wget"), "--no-config", "--tries=1",
                           f"--timeout={timeout / 2}", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
                          check=False)


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
