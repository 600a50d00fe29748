"""The access log of a real ``codecache serve``: one line per answered request, in order.

The lines are rendered by one template and written a loop iteration's worth at a time
(``codecache.telemetry.logs.AccessLog``, ``LogHandler``), so these tests hold that down from the
outside: every request of sequential and concurrent keep-alive clients (``http.client``)
has exactly its line, text and ``--log-format json`` alike, with the fields and their
order that operators parse (docs/admin.md, "Logs"); lines of requests answered just
before a SIGTERM are in the log once the server has stopped; two workers writing to one
full pipe never split each other's lines (each write is at most PIPE_BUF).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Origin, copy_origin
from tests.harness.timing import free_port, wait_for_port
from tests.http.helpers import Server, running

DEADLINE = 30.0
FIELDS = ["remote", "method", "path", "status", "bytes", "route", "package", "version",
          "serial", "ms", "agent", "request_id"]
TEXT_LINE = re.compile(
    r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO codecache\.access (?P<message>.*)')
JSON_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@dataclass(frozen=True)
class Answered:
    """What a client asked and got: the facts its access line must state."""

    request_id: str
    method: str
    path: str
    status: int
    body: int          # body bytes the line reports (0 for HEAD and 304)
    route: str
    package: str | None
    version: str | None
    serial: int | None
    agent: str | None


class Client:
    """Requests of one kind after another on one keep-alive connection."""

    def __init__(self, server: Server, serial: int, etag: str) -> None:
        self.server, self.serial, self.etag = server, serial, etag
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    def ask(self, request_id: str, kind: int) -> Answered:
        """One request of one of five kinds (200, HEAD, 304, 404, healthz) by ``kind``."""
        pkg = self.server.package
        headers = {"X-Request-ID": request_id}
        agent = None if kind % 2 else f"access-test/{kind}"
        if agent:
            headers["User-Agent"] = agent
        method, path, route = "GET", f"/{pkg}/releases/1.0.0.tar.gz", "release"
        package: str | None = pkg
        serial: int | None = self.serial
        if kind % 5 == 1:
            method, path, route = "HEAD", f"/{pkg}/latest.tar.gz", "channel"
        elif kind % 5 == 2:
            path = f"/{pkg}/releases/1.2.0.tar.gz"
            headers["If-None-Match"] = self.etag
        elif kind % 5 == 3:  # not in the index: refused while routing
            path, route, package, serial = f"/{pkg}/releases/9.9.9.tar.gz", "other", None, None
        elif kind % 5 == 4:
            path, route, package = "/healthz", "healthz", None
        self.conn.request(method, path, headers=headers)
        response = self.conn.getresponse()
        body = response.read()
        assert response.getheader("X-Request-ID") == request_id
        return Answered(request_id, method, path, response.status,
                        0 if method == "HEAD" or response.status == 304 else len(body),
                        route, package, response.getheader("X-Codecache-Version"), serial,
                        agent)

    def close(self) -> None:
        self.conn.close()


def message(a: Answered, ms: str) -> str:
    return (f'127.0.0.1 "{a.method} {a.path}" {a.status} {a.body} {ms}ms '
            f'version={a.version or "-"} serial={a.serial or "-"} request_id={a.request_id} '
            f'agent="{a.agent or "-"}"')


def parse_text(line: str) -> tuple[str, str]:
    """(request id, message) of a text access line; fails on any other shape."""
    match = TEXT_LINE.fullmatch(line)
    assert match, line
    rid = re.search(r" request_id=(\S+) ", match["message"])
    assert rid, line
    return rid[1], match["message"]


def parse_json(line: str) -> tuple[str, dict[str, Any]]:
    entry = json.loads(line)
    assert list(entry) == ["time", "level", "logger", "message", *FIELDS], line
    assert JSON_TIME.fullmatch(entry["time"]), line
    assert (entry["level"], entry["logger"]) == ("info", "codecache.access"), line
    return entry["request_id"], entry


def access_lines(server: Server, fmt: str) -> list[str]:
    lines = server.log_text().splitlines()
    if fmt == "text":
        return [line for line in lines if " INFO codecache.access " in line]
    return [line for line in lines if '"logger":"codecache.access"' in line]


def check_line(fmt: str, line: str, a: Answered) -> None:
    """``line`` states exactly what ``a`` asked and got (its time and ms are free)."""
    if fmt == "text":
        _, text = parse_text(line)
        ms = re.search(r" (\d+\.\d\d)ms ", text)
        assert ms and text == message(a, ms[1]), (line, a)
        return
    _, entry = parse_json(line)
    assert isinstance(entry["ms"], float | int) and entry["ms"] >= 0, line
    assert entry["message"] == message(a, f"{entry['ms']:.2f}"), line
    assert {k: entry[k] for k in FIELDS if k != "ms"} == {
        "remote": "127.0.0.1", "method": a.method, "path": a.path, "status": a.status,
        "bytes": a.body, "route": a.route, "package": a.package, "version": a.version,
        "serial": a.serial, "agent": a.agent, "request_id": a.request_id}, line


def request_ids(fmt: str, lines: list[str]) -> list[str]:
    parse: Callable[[str], tuple[str, object]] = parse_text if fmt == "text" else parse_json
    return [parse(line)[0] for line in lines]


def in_threads(work: Callable[[int], None], count: int) -> None:
    """``work(k)`` for each k below ``count``, each in a thread of its own, all at once;
    what any of them raised fails the test here, in the main thread."""
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            work(k)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


def index_facts(origin: Origin, server: Server) -> tuple[int, str]:
    serial = json.loads((origin.store / "index.json").read_bytes())["signed"]["serial"]
    etag = server.request(f"/{server.package}/releases/1.2.0.tar.gz",
                          headers={"X-Request-ID": "setup"}).headers["etag"]
    return serial, etag


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_request_has_its_access_line_in_order(template_origin: Origin, tmp_path: Path,
                                                    fmt: str) -> None:
    origin = copy_origin(template_origin, tmp_path / "origin")
    args = ("--log-format", "json") if fmt == "json" else ()
    with running(origin, global_args=args) as server:
        serial, etag = index_facts(origin, server)
        server.wait_for("the line of the setup's request",
                        lambda: "setup" in request_ids(fmt, access_lines(server, fmt)),
                        DEADLINE)
        before = len(access_lines(server, fmt))  # /readyz polls, the setup
        answered: dict[str, Answered] = {}
        # One client after the other first (a quiet server writes each line at once) ...
        client = Client(server, serial, etag)
        sequential = []
        for i in range(60):
            a = client.ask(f"seq-{i:03d}", i)
            sequential.append(a.request_id)
            answered[a.request_id] = a
            if i == 0:  # the line is there without more traffic to push it out
                server.wait_for("the first access line",
                                lambda: len(access_lines(server, fmt)) == before + 1,
                                DEADLINE)
        client.close()
        # ... then eight at once, so lines of one loop iteration are written together.
        per_thread: list[list[Answered]] = [[] for _ in range(8)]

        def run(k: int) -> None:
            c = Client(server, serial, etag)
            try:
                for i in range(60):
                    per_thread[k].append(c.ask(f"t{k}-{i:03d}", i + k))
            finally:
                c.close()

        in_threads(run, 8)
        answered.update((a.request_id, a) for done in per_thread for a in done)
        total = before + len(answered)
        server.wait_for(f"{total} access lines",
                        lambda: len(access_lines(server, fmt)) >= total, DEADLINE)
    lines = access_lines(server, fmt)
    ids = request_ids(fmt, lines)
    assert len(ids) == len(set(ids)) == total, server.log_tail()
    by_id = dict(zip(ids, lines, strict=True))
    for rid, a in answered.items():
        check_line(fmt, by_id[rid], a)
    # In the order the requests were answered: the times never go back (lines made in one
    # loop iteration share a write), one client's requests one after another.
    times = [line.split(" INFO ")[0] if fmt == "text" else json.loads(line)["time"]
             for line in lines]
    assert times == sorted(times), server.log_tail()
    assert [rid for rid in ids if rid.startswith("seq-")] == sequential
    for k, done in enumerate(per_thread):
        assert [rid for rid in ids if rid.startswith(f"t{k}-")] == \
            [a.request_id for a in done]


@pytest.mark.parametrize(("workers", "fmt"), [(1, "text"), (2, "json")])
def test_lines_of_requests_answered_before_a_graceful_stop_are_kept(
        template_origin: Origin, tmp_path: Path, workers: int, fmt: str) -> None:
    origin = copy_origin(template_origin, tmp_path / "origin")
    args = ("--log-format", "json") if fmt == "json" else ()
    env = {"CODECACHE_SERVER_WORKERS": str(workers)}
    answered: list[list[str]] = [[] for _ in range(8)]
    with running(origin, env=env, global_args=args) as server:
        serial, etag = index_facts(origin, server)
        stopping = threading.Event()

        def run(k: int) -> None:
            """Requests until the server is gone; a request counts once fully answered."""
            i = 0
            while not stopping.is_set():  # then on until the server closes the connection
                c = Client(server, serial, etag)
                try:
                    while True:
                        answered[k].append(c.ask(f"g{k}-{i:05d}", i).request_id)
                        i += 1
                except (OSError, http.client.HTTPException):
                    i += 1  # that one may or may not have been answered: not counted
                finally:
                    c.close()

        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        try:
            server.wait_for("a few hundred answers",
                            lambda: sum(map(len, answered)) >= 400, DEADLINE)
        finally:
            stopping.set()
            server.stop()  # SIGTERM while the clients keep asking, and wait for the exit
            for t in threads:
                t.join(timeout=60)
    assert server.process.returncode == 0, server.log_tail()
    logged = set(request_ids(fmt, access_lines(server, fmt)))
    missing = [rid for done in answered for rid in done if rid not in logged]
    assert not missing, (len(missing), missing[:5], server.log_tail())


def test_workers_on_one_pipe_never_split_each_others_lines(template_origin: Origin,
                                                           tmp_path: Path) -> None:
    """Two workers write long lines to one stderr pipe that a slow reader keeps full: a
    write of at most PIPE_BUF is never interleaved, so every line stays whole."""
    origin = copy_origin(template_origin, tmp_path / "origin")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    env.update(CODECACHE_SERVER_WORKERS="2", CODECACHE_SERVER_LISTEN=f"127.0.0.1:{port}")
    process = subprocess.Popen(
        [sys.executable, "-m", "codecache", "--config", str(origin.config), "--log-format",
         "json", "serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        cwd=origin.dir)
    assert process.stdout is not None
    stdout = process.stdout
    captured: list[bytes] = []
    reading = threading.Event()

    def read() -> None:
        """Slowly until the clients are done (the pipe stays full), then all of it."""
        while chunk := os.read(stdout.fileno(), 512):
            captured.append(chunk)
            if not reading.is_set():
                time.sleep(0.001)

    reader = threading.Thread(target=read)
    reader.start()
    answered: list[str] = []
    try:
        wait_for_port(port, timeout=30)
        agent = "slow-pipe " + "a" * 1500   # lines of ~1.8 KB: two fill a pipe write

        def run(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                for i in range(150):
                    rid = f"p{k}-{i:03d}"
                    conn.request("GET", "/healthz", headers={"X-Request-ID": rid,
                                                             "User-Agent": agent})
                    response = conn.getresponse()
                    response.read()
                    assert response.status == 200
                    answered.append(rid)
            finally:
                conn.close()

        in_threads(run, 8)
    finally:
        reading.set()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            reader.join(timeout=30)
            stdout.close()
    lines = b"".join(captured).decode().splitlines()
    access = [line for line in lines if "slow-pipe" in line]
    for line in access:
        _, entry = parse_json(line)   # fails on a line another line was written into
        assert entry["agent"] == agent, line[:200]
    assert sorted(request_ids("json", access)) == sorted(answered)
