"""Unit tests for codecache.telemetry.notify: reading systemd's environment, and whether a
datagram reaches a unix socket of the test's own (as systemd's would)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from codecache.telemetry.notify import Notifier


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A listening unix datagram socket and its ``NOTIFY_SOCKET`` value (a path)."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock, str(path)


def _received(sock: socket.socket) -> bytes | None:
    try:
        return sock.recv(4096)
    except BlockingIOError:
        return None


def test_no_notify_socket_means_disabled_and_no_watchdog() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert notifier.watchdog_interval is None
    assert notifier.send("READY=1") is False


def test_watchdog_pings_at_half_the_timeout(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert notifier.watchdog_interval == 15.0
    assert notifier.send("READY=1") is True
    assert _received(sock) == b"READY=1"


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "30000000",
           "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(env).watchdog_interval is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_env(env).watchdog_interval == 15.0


def test_unsupported_socket_addresses_disable_notification(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as relative:
        relative.bind("relative.sock")   # there is one, but a relative path is not used
        relative.setblocking(False)
        for value in ("", "relative.sock", "@", "vsock:2:1234"):
            assert Notifier.from_env({"NOTIFY_SOCKET": value}).send("READY=1") is False
        assert _received(relative) is None
    name = f"codecache-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        abstract.setblocking(False)
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).send("READY=1") is True
        assert _received(abstract) == b"READY=1"


def test_bad_watchdog_values_mean_no_watchdog() -> None:
    for value in ("", "0", "-5", "abc"):
        env = {"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": value}
        assert Notifier.from_env(env).watchdog_interval is None
