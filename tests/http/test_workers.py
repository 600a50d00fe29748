"""One server, several worker processes: shared port, one set of metrics, replacement, stop.

Real ``codecache serve`` processes; which worker answered is read from ``/healthz``
(``pid``). Requests that are only load or probes use ``http.client`` on fresh connections,
so the kernel spreads them over the workers' ``SO_REUSEPORT`` sockets.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Origin, SvnRepo, copy_origin, new_origin
from tests.harness.timing import poll, wait_until
from tests.http.helpers import Server, release_bytes, running

WORKERS = 3
DEADLINE = 30.0


@pytest.fixture
def server(template_origin: Origin, tmp_path: Path) -> Iterator[Server]:
    env = {"CODECACHE_SERVER_WORKERS": str(WORKERS)}
    with running(copy_origin(template_origin, tmp_path / "origin"), env=env) as s:
        # Ready when the first worker answers; the others may still be starting.
        s.wait_for(f"{WORKERS} workers", lambda: len(_children(s.process.pid)) == WORKERS,
                   DEADLINE)
        yield s


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _worker_pid(server: Server) -> int:
    pid: int = json.loads(server.request("/healthz").body)["pid"]
    return pid


def _seen_workers(server: Server, want: int) -> set[int]:
    """Worker pids answering fresh connections, until ``want`` distinct ones were seen."""
    seen: set[int] = set()
    poll(lambda: seen.add(_worker_pid(server)) or len(seen) >= want, DEADLINE, interval=0)
    return seen


def _requests_counted(server: Server, route: str) -> float:
    text = server.request("/metrics").body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("codecache_http_requests_total{") and
               f'route="{route}"' in line)


def test_a_server_runs_the_configured_number_of_workers(server: Server) -> None:
    assert len(_children(server.process.pid)) == WORKERS
    assert _seen_workers(server, WORKERS) == _children(server.process.pid)


def test_metrics_count_requests_spread_over_every_worker(server: Server) -> None:
    n = 90
    path = f"/{server.package}/releases/1.2.0.tar.gz"
    answered_by = set()
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        conn.close()
    answered_by = _seen_workers(server, WORKERS)
    assert len(answered_by) == WORKERS
    # Every worker's tallies reach the shared counters within a watch tick (0.25 s).
    server.wait_for(f"/metrics counts {n} release requests",
                    lambda: _requests_counted(server, "release") == n, DEADLINE)
    # Asked again (and so of other workers), the count is the same: nothing counted twice.
    for _ in range(10):
        assert _requests_counted(server, "release") == n


def test_readiness_is_the_same_from_every_worker(server: Server) -> None:
    moving = {"index_age_seconds", "seconds_since_confirmed", "last_confirmed"}
    bodies: dict[int, dict[str, object]] = {}
    deadline = time.monotonic() + DEADLINE
    while len(bodies) < WORKERS and time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:  # one connection, so one worker, for both requests
            conn.request("GET", "/healthz")
            pid = json.loads(conn.getresponse().read())["pid"]
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            assert response.status == 200
            body = json.loads(response.read())
        finally:
            conn.close()
        bodies[pid] = {k: v for k, v in body.items() if k not in moving}
    assert len(bodies) == WORKERS
    first = next(iter(bodies.values()))
    assert first["status"] == "ok"
    assert all(body == first for body in bodies.values())


def test_a_worker_killed_with_sigkill_is_replaced_and_serves(server: Server) -> None:
    before = _children(server.process.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    server.wait_for("a new worker replaces the killed one",
                    lambda: len(_children(server.process.pid) - before) == 1 and
                    victim not in _children(server.process.pid), DEADLINE)
    after = _children(server.process.pid)
    assert len(after) == WORKERS
    assert _seen_workers(server, WORKERS) == after  # the new one answers too
    assert "exited with signal SIGKILL; starting a new one" in server.log_text()
    reply = server.request(f"/{server.package}/latest.tar.gz")
    assert reply.status == 200


def test_a_worker_told_to_look_at_the_store_while_it_starts_survives(server: Server) -> None:
    """SIGUSR1 (an index was installed: every worker looks at the store) reaching a worker
    that is still starting must not kill it (its default action): a replica's worker 0
    sends one right after its first pull, while the other workers may still be starting."""
    before = _children(server.process.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    def signalled_and_replaced() -> set[int]:
        # The parent passes each SIGUSR1 on to every worker, the replacement from its start.
        os.kill(server.process.pid, signal.SIGUSR1)
        return _children(server.process.pid) - before

    replaced = wait_until(signalled_and_replaced, DEADLINE, "a worker replaced the killed one",
                          interval=0.005, detail=server.log_tail)
    for _ in range(400):   # 2 s of signals: the replacement's start-up and its first ticks
        os.kill(server.process.pid, signal.SIGUSR1)
        time.sleep(0.005)
    assert _children(server.process.pid) - before == replaced, server.log_tail()
    assert "exited with signal SIGUSR1" not in server.log_text()
    assert _seen_workers(server, WORKERS) == _children(server.process.pid)


def test_sigterm_stops_every_worker_and_exits_cleanly(server: Server) -> None:
    workers = _children(server.process.pid)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=DEADLINE) == 0
    for pid in workers:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # not ours to reap; gone is what matters
        assert not Path(f"/proc/{pid}").exists() or \
            "zombie" in Path(f"/proc/{pid}/status").read_text()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port),
                                                          timeout=2):
        pass


def test_one_worker_is_a_single_process(template_origin: Origin, tmp_path: Path) -> None:
    env = {"CODECACHE_SERVER_WORKERS": "1"}
    with running(copy_origin(template_origin, tmp_path / "origin"), env=env) as s:
        assert _children(s.process.pid) == set()
        assert _worker_pid(s) == s.process.pid
        assert s.request(f"/{s.package}/latest.tar.gz").status == 200


# --- slow and idle clients ----------------------------------------------------------------


def _closed_by_server(sock: socket.socket) -> bool:
    """Block until the server closes ``sock`` (or the deadline): True when it did."""
    sock.settimeout(DEADLINE)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.fixture
def strict_server(template_origin: Origin, tmp_path: Path) -> Iterator[Server]:
    env = {"CODECACHE_SERVER_WORKERS": "2", "CODECACHE_SERVER_HEADER_TIMEOUT": "1s",
           "CODECACHE_SERVER_KEEPALIVE_TIMEOUT": "2s"}
    with running(copy_origin(template_origin, tmp_path / "origin"), env=env) as s:
        yield s


def test_half_sent_request_headers_are_closed_after_the_header_timeout(
        strict_server: Server) -> None:
    socks = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", strict_server.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: codecache\r\nUser-Agent: slo")
            socks.append(sock)
        # The default keepalive_timeout (75 s) is beyond DEADLINE: only the header bound
        # closes them in time.
        assert all(_closed_by_server(sock) for sock in socks)
        # An honest client is still served.
        assert strict_server.request("/healthz").status == 200
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed(strict_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=5) as sock:
        assert _closed_by_server(sock)


def test_an_idle_keep_alive_connection_is_closed(strict_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: codecache\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
            chunk = sock.recv(4096)
            assert chunk, "closed before the response"
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        assert _closed_by_server(sock)


def test_a_slow_but_steady_request_on_a_kept_alive_connection_is_answered(
        strict_server: Server) -> None:
    """Header bound starts with the request's first byte: a quick second request works."""
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: codecache\r\n\r\n")
            reply = b""
            while not reply.endswith(b"}"):
                chunk = sock.recv(4096)
                assert chunk, "closed before the response"
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200")


def test_access_sample_logs_one_in_n_answers_and_every_error(template_origin: Origin,
                                                             tmp_path: Path) -> None:
    env = {"CODECACHE_SERVER_WORKERS": "1", "CODECACHE_LOG_ACCESS_SAMPLE": "3"}
    with running(copy_origin(template_origin, tmp_path / "origin"), env=env) as s:
        path = f"/{s.package}/releases/1.2.0.tar.gz"
        for _ in range(9):
            assert s.request(path).status == 200
        assert s.request(f"/{s.package}/releases/9.9.9.tar.gz").status == 404
        s.wait_for("the 404 is logged", lambda: '"GET /' in s.log_text() and
                   " 404 " in s.log_text(), DEADLINE)
        lines = [line for line in s.log_text().splitlines() if "codecache.access" in line]
        assert sum(f'"GET {path}" 200' in line for line in lines) == 3
        assert sum(" 404 " in line for line in lines) == 1


def test_access_sample_0_logs_no_answer(template_origin: Origin, tmp_path: Path) -> None:
    """Neither the answers written beside aiohttp's handling (fastpath) nor the others."""
    env = {"CODECACHE_SERVER_WORKERS": "1", "CODECACHE_LOG_ACCESS_SAMPLE": "0"}
    with running(copy_origin(template_origin, tmp_path / "origin"), env=env) as s:
        path = f"/{s.package}/releases/1.2.0.tar.gz"
        etag = s.request(path).headers["etag"]
        for _ in range(5):
            assert s.request(path).status == 200
            assert s.request(path, headers={"If-None-Match": etag}).status == 304
        assert s.request(f"/{s.package}/releases/9.9.9.tar.gz").status == 404
        # Answered after them by the same process: their lines would be written by now.
        assert b"codecache_http_requests_total" in s.request("/metrics").body
        assert [line for line in s.log_text().splitlines() if "codecache.access" in line] == []


def test_a_channel_move_is_served_by_every_worker(server: Server) -> None:
    server.origin.cli("publish", server.package, "1.0.0", "--channel", "latest", check=True)
    answered: set[int] = set()

    def every_worker_serves_it() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:  # one connection, so one worker, for both requests
            conn.request("GET", "/healthz")
            pid = json.loads(conn.getresponse().read())["pid"]
            conn.request("GET", f"/{server.package}/latest.tar.gz")
            response = conn.getresponse()
            response.read()
            version = response.getheader("X-Codecache-Version")
        finally:
            conn.close()
        if version != "1.0.0":
            answered.clear()   # a worker still serving the old target: start over
            return False
        answered.add(pid)
        return len(answered) == WORKERS

    server.wait_for("every worker serves the moved channel", every_worker_serves_it, DEADLINE)


def test_sigterm_lets_a_download_in_flight_finish(svn_server: SvnRepo, tmp_path: Path) -> None:
    """A slow client mid-download when the server is told to stop still gets every byte."""
    package = f"big{os.getpid()}"
    svn_server.new_package(package)
    # About 9 MB of tarball (hex of random bytes: gzip keeps ~55 %), more than the kernel's
    # socket buffers hold (tcp_wmem max 4 MiB), so the server is still sending at SIGTERM.
    svn_server.change(package, "lib/pilot/data.txt", os.urandom(8 << 20).hex())
    svn_server.tag(package, "2.0.0")
    origin = new_origin(svn_server, tmp_path / "origin", package=package, tags=("2.0.0",))
    expected = release_bytes(origin, "2.0.0")
    with running(origin, env={"CODECACHE_SERVER_WORKERS": "2"}) as s:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", s.port))
        sock.sendall(f"GET /{package}/releases/2.0.0.tar.gz HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n".encode())
        received = sock.recv(4096)
        time.sleep(0.5)  # not a timing assertion: lets the server fill its socket buffer
        s.process.send_signal(signal.SIGTERM)   # the body is far from sent
        sock.settimeout(DEADLINE)
        while chunk := sock.recv(65536):
            received += chunk
        sock.close()
        assert s.process.wait(timeout=DEADLINE) == 0
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == expected


def test_the_open_files_limit_is_raised_to_the_hard_limit(template_origin: Origin,
                                                          tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))  # inherited by serve
    try:
        env = {"CODECACHE_SERVER_WORKERS": "2"}
        with running(copy_origin(template_origin, tmp_path / "origin"), env=env) as s:
            s.wait_for("2 workers", lambda: len(_children(s.process.pid)) == 2, DEADLINE)
            for pid in (s.process.pid, *_children(s.process.pid)):
                limits = Path(f"/proc/{pid}/limits").read_text()
                line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
                assert line.split()[3:5] == [str(hard), str(hard)], line
            assert f"open files limit {hard} (hard {hard})" in s.log_text()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_second_server_on_the_same_port_is_refused(server: Server) -> None:
    """SO_REUSEPORT must not let an old and a new server share a port without a word."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    env.update(CODECACHE_SERVER_WORKERS="2", CODECACHE_SERVER_LISTEN=f"127.0.0.1:{server.port}")
    second = subprocess.run(
        [sys.executable, "-m", "codecache", "--config", str(server.origin.config), "serve"],
        capture_output=True, text=True, env=env, timeout=DEADLINE, check=False)
    assert second.returncode == 2
    assert "cannot listen on" in second.stderr


def test_sigkill_of_the_server_takes_its_workers_along(server: Server) -> None:
    """Nothing outlives a server killed with SIGKILL (a worker could go on writing)."""
    workers = _children(server.process.pid)
    server.process.kill()
    server.process.wait(timeout=DEADLINE)
    server.wait_for("every worker is gone", lambda: not any(
        _alive(pid) for pid in workers), DEADLINE)
    # A worker's main thread is a zombie before its other threads have ended, and the
    # descriptors (the listening sockets) close with the last thread: wait for the port.
    # A worker still alive would hold it for good.
    server.wait_for("the port refuses connections", lambda: _refused(server.port), DEADLINE)


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for whoever adopted it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status and "\nState:\tX" not in status
