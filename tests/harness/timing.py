"""Every wait of a test: one deadline factor, one polling loop, one free port.

``TEST_DEADLINE_FACTOR`` (default 1) multiplies every deadline a test waits for, so a slow
or loaded machine gets more time from one knob. It is named outside ``CODECACHE_*``: the
product refuses an unknown ``CODECACHE_`` variable.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
FACTOR_VARIABLE = "TEST_DEADLINE_FACTOR"


def _factor() -> float:
    text = os.environ.get(FACTOR_VARIABLE, "1")
    try:
        factor = float(text)
    except ValueError:
        raise SystemExit(f"{FACTOR_VARIABLE} must be a number, not {text!r}") from None
    if factor <= 0:
        raise SystemExit(f"{FACTOR_VARIABLE} must be positive, not {text!r}")
    return factor


FACTOR = _factor()


def scaled(seconds: float) -> float:
    """A deadline of ``seconds`` on a quiet machine, as this run allows it."""
    return seconds * FACTOR


def poll(predicate: Callable[[], T], timeout: float, *, interval: float = 0.05,
         ignore: tuple[type[BaseException], ...] = ()) -> T | None:
    """Poll ``predicate`` until it returns something truthy (returned) or the scaled
    deadline passes (None): for a caller that asserts on what it got, not on the wait."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        with contextlib.suppress(*ignore):
            result = predicate()
            if result:
                return result
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *,
               interval: float = 0.05, ignore: tuple[type[BaseException], ...] = (),
               detail: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy; return that.

    ``timeout`` is scaled by the run's factor. ``ignore``: exceptions that count as "not
    yet" (e.g. a refused connection). At the deadline: AssertionError naming ``what`` and
    the bound, plus ``detail()`` (e.g. a log tail).
    """
    result = poll(predicate, timeout, interval=interval, ignore=ignore)
    if result is None:
        extra = f"\n{detail()}" if detail is not None else ""
        raise AssertionError(f"not within {scaled(timeout):g} s: {what}{extra}")
    return result


def timed_wait(predicate: Callable[[], object], timeout: float, what: str, *,
               interval: float = 0.05, ignore: tuple[type[BaseException], ...] = (),
               detail: Callable[[], str] | None = None) -> float:
    """``wait_until`` that returns the seconds the condition took to hold."""
    start = time.monotonic()
    wait_until(predicate, timeout, what, interval=interval, ignore=ignore, detail=detail)
    return time.monotonic() - start


# Where the kernel picks the local port of an outgoing connection (and of a bind to port 0).
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_FREE_PORTS = 12000      # how many ports just below that range free_port draws from


def _free_port_candidates() -> range:
    """The ports ``free_port`` draws from: just below the kernel's ephemeral range.

    A port from inside that range (what a bind to port 0 returns) can be taken between the
    check and the server's own bind by any connection's local port: with two workers
    running downloads and load tests at once, "Address already in use" happened. Below the
    range only another ``free_port`` caller competes, and a random draw from 12,000 ports
    makes that unlikely.
    """
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768          # Linux's default
    return range(max(1024, low - _FREE_PORTS), low)


def free_port(*, ipv6: bool = False) -> int:
    """A loopback TCP port nothing listens on right now (on 127.0.0.1, and on ::1 too
    with ``ipv6``), outside the ephemeral range (see ``_free_port_candidates``)."""
    candidates = _free_port_candidates()
    for _ in range(100):
        port = candidates[secrets.randbelow(len(candidates))]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
            if ipv6:
                with socket.socket(socket.AF_INET6) as s6:
                    s6.bind(("::1", port))
        except OSError:
            continue
        return port
    raise OSError(f"no loopback port free in {candidates.start}-{candidates.stop - 1}"
                  + (" on both 127.0.0.1 and ::1" if ipv6 else ""))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    wait_until(lambda: port_open(port), timeout, f"something listens on 127.0.0.1:{port}",
               interval=0.02)
