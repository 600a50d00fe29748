"""Processes a test starts: signals restored in the child, and the end-of-run leak check.

A test run may inherit SIGINT ignored (``nohup scripts/test &``), and an ignored signal
stays ignored across exec: a child that must be stopped with SIGINT gets its default
disposition back from ``restore_signals``. Every process started during the run inherits
``MARK`` in its environment (set once at the start of the session), so the end of the run
can find any that is still alive, even one re-parented to init. Under pytest-xdist each
worker has a mark of its own (``mark_run(worker)``).
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


def mark_run(worker: str | None = None) -> str:
    """Put this run's mark in the environment children inherit; return it.

    ``worker`` (once, at the start of a pytest-xdist worker): the worker's children get the
    run's mark plus the worker's id, so one worker's leak check never takes a sibling's
    live processes for its own leftovers.
    """
    mark = os.environ.setdefault(MARK, f"{os.getpid()}-{time.time_ns()}")
    if worker is not None:
        mark = os.environ[MARK] = f"{mark}-{worker}"
    return mark


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:          # gone, or not ours to read
        return b""


def _alive(stat: bytes) -> bool:
    """Running (a zombie waiting for its parent to reap it is not)."""
    fields = stat.rsplit(b")", 1)[-1].split()
    return bool(fields) and fields[0] != b"Z"


def marked_processes(mark: str, paths: tuple[Path, ...] = ()) -> list[tuple[int, str]]:
    """(pid, command line) of every live process but this one that carries ``mark``, or
    names one of ``paths`` on its command line, and of their descendants.

    ``paths``: a program that rewrites its process title over its environment (nginx)
    loses the mark; its command line still names the directory the test gave it.
    """
    entry, needles = f"{MARK}={mark}".encode(), [f"{p}/".encode() for p in paths]
    parents: dict[int, int] = {}
    commands: dict[int, bytes] = {}
    found: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        pid, stat = int(proc.name), _read(proc / "stat")
        if not _alive(stat):
            continue
        parents[pid] = int(stat.rsplit(b")", 1)[1].split()[1])
        commands[pid] = _read(proc / "cmdline").replace(b"\0", b" ").strip()
        if entry in _read(proc / "environ").split(b"\0") \
                or any(n in commands[pid] for n in needles):
            found.add(pid)
    grown = True
    while grown:              # and their children, which may not carry the mark either
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grown = bool(more)
    return sorted((pid, commands[pid].decode(errors="replace")) for pid in found)


def leaked_processes(mark: str, grace: float,
                     paths: tuple[Path, ...] = ()) -> list[tuple[int, str]]:
    """The marked processes still alive after ``grace`` seconds (each killed then)."""
    deadline = time.monotonic() + grace
    while (found := marked_processes(mark, paths)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, _ in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)   # so one leak does not outlive the run
    return found
