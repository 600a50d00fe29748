"""sd_notify: real ``codecache serve`` and ``codecache sync`` tell a real unix datagram socket
(bound by the test and named in ``$NOTIFY_SOCKET``, as systemd does) READY=1 once serving or
synced, WATCHDOG=1 at half of ``$WATCHDOG_USEC`` from their loops, and STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codecache.telemetry.notify import Notifier
from tests.conftest import Origin, cli_command, cli_env
from tests.harness.timing import free_port, port_open, scaled, wait_until

DEADLINE = 60.0


class NotifySocket:
    """What systemd listens on: a unix datagram socket; records every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, field: str, process: subprocess.Popen[bytes],
                 timeout: float = DEADLINE) -> float:
        """Receive until a message holds ``field``; returns the monotonic time it arrived."""
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            self.sock.settimeout(0.2)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                if process.poll() is not None and field != "STOPPING=1":
                    pytest.fail(f"the process exited {process.returncode} before {field}")
                continue
            self.messages.append(data.decode())
            if field in data.decode().split("\n"):
                return time.monotonic()
        pytest.fail(f"no {field} within {timeout}s; got {self.messages}")

    def count(self, field: str) -> int:
        return sum(field in m.split("\n") for m in self.messages)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify.sock")
    try:
        yield listener
    finally:
        listener.sock.close()


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[
        subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   env=cli_env(env))
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_serve_is_ready_when_listening_pings_the_watchdog_and_says_stopping(
        synced_origin: Origin, notify_socket: NotifySocket, tmp_path: Path) -> None:
    port = free_port()
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "600000",
           "CODECACHE_SERVER_LISTEN": f"127.0.0.1:{port}"}
    with started(cli_command("serve", config=synced_origin.config), env,
                 tmp_path / "serve.log") as process:
        notify_socket.wait_for("READY=1", process)
        # Ready means serving: the port answers at once, no retry.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        first = notify_socket.count("WATCHDOG=1")
        for _ in range(3):
            notify_socket.wait_for("WATCHDOG=1", process)
        assert notify_socket.count("WATCHDOG=1") >= first + 3
        process.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1", process)
        assert process.wait(timeout=30) == 0
    assert notify_socket.count("READY=1") == 1
    # READY=1 came before any WATCHDOG=1 (sd_watchdog_enabled: pings count after start-up).
    assert "READY=1" in notify_socket.messages[0].split("\n")


def test_sync_is_ready_after_its_first_pass_and_pings_while_waiting(
        origin: Origin, notify_socket: NotifySocket, tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "600000",
           "CODECACHE_SYNC_INTERVAL": "1h"}
    with started(cli_command("sync", config=origin.config), env,
                 tmp_path / "sync.log") as process:
        notify_socket.wait_for("READY=1", process)
        # Before it, each tag built asked for more start-up time (one watchdog timeout).
        extended = [m for m in notify_socket.messages if "EXTEND_TIMEOUT_USEC=600000" in m]
        assert len(extended) >= 2, notify_socket.messages
        # Ready means synced: both tags are in the signed index already.
        releases = origin.status_json()["packages"][origin.package]["releases"]
        assert set(releases) == {"1.0.0", "1.2.0"}
        assert any(f"STATUS=index serial {origin.status_json()['serial']}" in m
                   for m in notify_socket.messages)
        for _ in range(3):  # the pass is over; the loop waits 1h and pings meanwhile
            notify_socket.wait_for("WATCHDOG=1", process)
        process.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1", process)
        assert process.wait(timeout=30) == 0
    assert notify_socket.count("READY=1") == 1


def test_without_notify_socket_nothing_is_sent_and_serve_runs(synced_origin: Origin,
                                                             tmp_path: Path) -> None:
    port = free_port()
    env = {"CODECACHE_SERVER_LISTEN": f"127.0.0.1:{port}", "WATCHDOG_USEC": "600000"}
    with started(cli_command("serve", config=synced_origin.config), env,
                 tmp_path / "serve.log") as process:

        def listening() -> bool:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            return port_open(port)

        wait_until(listening, DEADLINE, f"serve listens on {port}")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_notifier_sends_to_an_abstract_socket_and_drops_when_nobody_listens(
        tmp_path: Path) -> None:
    name = f"codecache-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("up")
        notifier.ready("still up")     # READY=1 only once
        sock.settimeout(5)
        assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=up"]
        assert sock.recv(4096).decode() == "STATUS=still up"
    gone = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    assert gone.send("READY=1") is False      # logged at debug, never raised
