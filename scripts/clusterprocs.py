"""The processes of a local cluster (``scripts/cluster``): started in their own sessions,
recorded with their start times in ``DIR/cluster.json``, signalled and stopped only while
they are still the processes started (a reused pid is never signalled), with the children
they forked (found by session id); and the readiness polls that wait for them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
STATE = "cluster.json"
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


class ClusterError(Exception):
    """A failure reported as one line on stderr; ``code`` is the exit status (2: the request
    is wrong, e.g. a bad argument or config; 3: the environment refused, e.g. a node failed)."""

    def __init__(self, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.code = code



def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 is index 0), None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rpartition(")")[2].split()


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None   # field 22: starttime in clock ticks


def alive(pid: int) -> bool:
    """Running (a zombie awaiting its reaper is not)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


@dataclass
class Proc:
    """One started process: its own session leader, identified by pid and start time."""

    name: str
    pid: int
    starttime: int
    argv: list[str]
    log: str
    cwd: str
    env: dict[str, str] = field(default_factory=dict)   # extras over child_env()

    def same(self) -> bool:
        """Still the process we started (pid not reused) and running."""
        return alive(self.pid) and start_time(self.pid) == self.starttime

    def members(self) -> list[int]:
        """The process and what it forked (same session). A non-leader in session PID can
        only descend from our leader: the kernel does not reuse a pid that names a session."""
        own = self.same()
        return [p for p in session_members(self.pid) if p != self.pid or own]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without CODECACHE_* (each node's config is explicit), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}:/usr/sbin:/sbin"
    return {**env, **(extra or {})}


def codecache(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "codecache", "--config", str(config), *args]


def which(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise ClusterError(f"{name} is not installed (run scripts/bootstrap)")
    return path


def stop(procs: Sequence[Proc]) -> None:
    """Stop ``procs`` (last started first): SIGTERM, then SIGKILL after STOP_TIMEOUT."""
    for proc in reversed(procs):
        members = proc.members()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + STOP_TIMEOUT
            while members and time.monotonic() < deadline:
                time.sleep(0.05)
                members = [p for p in members if alive(p)]
            if not members:
                break



@dataclass
class State:
    """What ``up`` started, persisted in DIR/cluster.json for ``status`` and ``down``."""

    dir: str
    processes: list[Proc] = field(default_factory=list)
    # nginx's private cache directories (mkdtemp, as root: nginx/README.md), for ``down``.
    private_dirs: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> State | None:
        path = directory / STATE
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["processes"] = [Proc(**p) for p in raw["processes"]]
        return cls(**raw)

    def save(self) -> None:
        path = Path(self.dir) / STATE
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        temp.replace(path)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def http_get(base: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                      timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def readyz(base: str) -> tuple[int | None, str]:
    """``/readyz`` status and its body's ``status`` field (None: no answer)."""
    try:
        status, body = http_get(base, "/readyz")
    except (OSError, http.client.HTTPException) as e:
        return None, str(e) or type(e).__name__
    try:
        return status, str(json.loads(body).get("status", ""))
    except (ValueError, AttributeError):
        return status, body[:80].decode(errors="replace")


class Launcher:
    """Starts processes in their own sessions, detached, and records them as it goes."""

    def __init__(self, state: State, logs: Path) -> None:
        self.state = state
        self.logs = logs
        self.popens: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Proc:
        log = self.logs / f"{name}.log"
        workdir = cwd or Path(self.state.dir)
        with log.open("ab") as out:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=child_env(env),
                                     cwd=workdir, start_new_session=True)
        started = start_time(popen.pid)
        proc = Proc(name, popen.pid, started if started is not None else -1, argv, str(log),
                    str(workdir), dict(env or {}))
        self.popens[name] = popen
        self.state.processes = [p for p in self.state.processes if p.name != name] + [proc]
        self.state.save()
        return proc

    def wait_ready(self, nodes: dict[str, str], timeout: float) -> None:
        """Until every node's /readyz answers 200.

        Raises:
            ClusterError: a process exited or the deadline passed.
        """
        deadline = time.monotonic() + timeout
        waiting = dict(nodes)
        while waiting:
            for name, base in list(waiting.items()):
                popen = self.popens.get(name)
                if popen is not None and popen.poll() is not None:
                    raise ClusterError(f"{name} exited with {popen.returncode}; see "
                                       f"{self.logs / (name + '.log')}")
                if readyz(base)[0] == 200:
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                name = next(iter(waiting))
                raise ClusterError(f"{name} ({waiting[name]}) not ready after {timeout:.0f} s: "
                                   f"{readyz(waiting[name])[1]}; see "
                                   f"{self.logs / (name + '.log')}")
            time.sleep(0.05)


def run_step(what: str, argv: list[str], log: Path, *, cwd: Path,
             env: dict[str, str] | None = None) -> None:
    """Run one setup command to completion, output appended to ``log``.

    Raises:
        ClusterError: it failed.
    """
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=child_env(env), cwd=cwd,
                                check=False, timeout=300)
    if result.returncode != 0:
        raise ClusterError(f"{what} failed (exit {result.returncode}); see {log}")




def remove_private_dirs(state: State) -> None:
    for directory in state.private_dirs:
        shutil.rmtree(directory, ignore_errors=True)
    state.private_dirs = []


def loaded(directory: Path) -> State:
    """The state ``up`` left in ``directory``.

    Raises:
        ClusterError: none there.
    """
    state = State.load(directory.resolve())
    if state is None:
        raise ClusterError(f"no cluster in {directory} ({STATE} not found)", code=2)
    return state


def named(state: State, name: str) -> Proc:
    """The recorded process ``name``.

    Raises:
        ClusterError: no such process.
    """
    for proc in state.processes:
        if proc.name == name:
            return proc
    names = ", ".join(p.name for p in state.processes)
    raise ClusterError(f"no process {name!r} in this cluster (there are: {names})", code=2)
