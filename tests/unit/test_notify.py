"""Unit tests for codecache.telemetry.notify: reading systemd's environment (no sockets here)."""

from __future__ import annotations

import os

from codecache.telemetry.notify import Notifier


def test_no_notify_socket_means_disabled_and_no_watchdog() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.send("READY=1") is False


def test_watchdog_pings_at_half_the_timeout() -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "30000000"})
    assert notifier.enabled
    assert notifier.watchdog_interval == 15.0


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "30000000",
           "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(env).watchdog_interval is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_env(env).watchdog_interval == 15.0


def test_unsupported_socket_addresses_disable_notification() -> None:
    for value in ("", "relative.sock", "@", "vsock:2:1234"):
        assert not Notifier.from_env({"NOTIFY_SOCKET": value}).enabled
    assert Notifier.from_env({"NOTIFY_SOCKET": "@abstract"}).enabled


def test_bad_watchdog_values_mean_no_watchdog() -> None:
    for value in ("", "0", "-5", "abc"):
        env = {"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": value}
        assert Notifier.from_env(env).watchdog_interval is None
