"""Processes a test starts: signals restored in the child, and the end-of-run leak check.

A test run may inherit SIGINT ignored (``nohup scripts/test &``), and an ignored signal
stays ignored across exec: a child that must be stopped with SIGINT gets its default
disposition back from ``restore_signals``. Every process started during the run inherits
``MARK`` in its environment (set once at the start of the session), so the end of the run
can find any that is still alive, even one re-parented to init.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

MARK = "TEST_RUN_MARK"
# The signals a child may be stopped or interrupted with (SIGTERM/SIGHUP can be ignored
# by a wrapper like nohup just as SIGINT is).
_RESTORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def restore_signals() -> None:
    """``preexec_fn``: the default disposition of the stop signals in the child."""
    for signum in _RESTORED:
        signal.signal(signum, signal.SIG_DFL)


def mark_run() -> str:
    """Put this run's mark in the environment children inherit; return it."""
    return os.environ.setdefault(MARK, f"{os.getpid()}-{time.time_ns()}")


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:          # gone, or not ours to read
        return False


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def marked_processes(mark: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process but this one that carries ``mark``."""
    entry = f"{MARK}={mark}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        pid = int(proc.name)
        if _environ_has(pid, entry) and _alive(pid):
            with contextlib.suppress(OSError):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace").strip()
                found.append((pid, command))
    return found


def leaked_processes(mark: str, grace: float) -> list[tuple[int, str]]:
    """The marked processes still alive after ``grace`` seconds (each killed then)."""
    deadline = time.monotonic() + grace
    while (found := marked_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, _ in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)   # so one leak does not outlive the run
    return found
