"""Subversion behind a two-call interface: the ``svn`` command-line client, or pysvn.

Owns: listing a package's tags with their last-changed revision, author and date, and
exporting ``URL@REV``, through one of two clients that give the same trees (so the same
tarball bytes):

* ``cli``: one ``svn`` process per call, with ``--non-interactive``, a private empty
  ``--config-dir`` (no user config, no cached credentials), ``--no-auth-cache``, a timeout,
  ``TZ=UTC`` (stable keyword expansion) and a UTF-8 locale (non-ASCII file names). The
  password goes through ``--password-from-stdin``.
* ``pysvn``: libsvn in-process through pysvn, in one long-lived worker process
  (``codecache/origin/pysvn_worker.py``, run by a Python that has pysvn) with the same private
  config dir, no auth cache and ``TZ=UTC``. The password reaches it on its stdin pipe. A
  call that outlives the timeout kills the worker; a worker that dies (a crash in libsvn)
  is an ``SvnError`` for that call and is started again for the next.

``svn.client = "auto"`` (the default) takes pysvn where a Python with pysvn is found
(measured in docs/benchmark.md: about half the cost per export), else the CLI. The
password is never on a command line, where ``ps`` would show it, nor in a log line or
error message.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from codecache.core.config import SvnConfig
from codecache.core.errors import ConfigError, SvnError, SvnNotFound
from codecache.core.index import parse_time


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    revision: int   # last-changed revision of the tag's tree
    author: str
    date: int       # commit time of that revision, seconds since the epoch


class ExportProgress(Protocol):
    """Told what an export will write and what it has written (``Svn.export``'s watcher)."""

    def listed(self, paths: list[str]) -> None:
        """Every path the export will write, relative to its destination ('' is the root)."""

    def exported(self, paths: list[str]) -> None:
        """``paths`` (relative, as listed) are complete on disk."""


class Svn:
    """Subversion with credentials and a timeout from the config, through one client."""

    def __init__(self, config: SvnConfig, executable: str = "svn") -> None:
        self._config = config
        self._executable = executable
        self._config_dir: Path | None = None
        self._worker: _PysvnWorker | None = None
        self._chosen = False
        self._python: str | None = None    # the Python that runs the pysvn worker

    @property
    def client(self) -> str:
        """The client in use, chosen at the first call: ``pysvn`` or ``cli``.

        Raises:
            ConfigError: ``svn.client = "pysvn"`` and no Python with pysvn is found.
        """
        if not self._chosen:
            python = None if self._config.client == "cli" else self._start_worker()
            if self._config.client == "pysvn" and python is None:
                raise ConfigError("svn.client = \"pysvn\" but no Python with pysvn was "
                                  "found (Debian: apt-get install python3-svn)")
            self._python, self._chosen = python, True
        return "pysvn" if self._python is not None else "cli"

    def _start_worker(self) -> str | None:
        """Start the pysvn worker with the first Python that can; return that Python.

        The worker is its own probe: a Python without pysvn ends it at once (one process
        start per candidate, instead of a probe process and then the worker).
        """
        for python in _candidates():
            try:
                self._worker = _PysvnWorker(python, self._private_config_dir(),
                                            self._config.username, self._password(),
                                            self._config.timeout)
            except SvnError:
                continue
            return python
        return None

    @property
    def worker_pid(self) -> int | None:
        """The pysvn worker's process id while one runs (operators, tests)."""
        return self._worker.pid if self._worker is not None and self._worker.alive() else None

    def close(self) -> None:
        """Stop the pysvn worker, if one runs (it also stops when this process exits)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def list_tags(self, svn_url: str) -> list[Tag]:
        """The directories under ``{svn_url}/tags``.

        Raises:
            SvnError: unreachable repository, missing ``tags``, timeout, bad output.
        """
        if self.client == "pysvn":
            answer = self._call({"op": "list", "url": f"{svn_url}/tags"}, "list")
            try:
                return [Tag(name=str(name), revision=int(rev), author=str(author),
                            date=int(when)) for name, rev, author, when in answer["entries"]]
            except (KeyError, ValueError, TypeError) as err:
                raise SvnError(f"unexpected answer listing {svn_url}/tags: {err}") from err
        out = self._run(["list", "--xml", f"{svn_url}/tags"])
        try:
            root = ET.fromstring(out)  # noqa: S314 - output of our own svn client
            return [_parse_entry(e) for e in root.iter("entry") if e.get("kind") == "dir"]
        except (ET.ParseError, ValueError, TypeError) as err:
            raise SvnError(f"unexpected output from svn list {svn_url}/tags: {err}") from err

    @property
    def reports_progress(self) -> bool:
        """Whether ``export`` tells a ``progress`` watcher what it writes as it goes (pysvn)."""
        return self.client == "pysvn"

    def export(self, url: str, revision: int, destination: Path,
               progress: ExportProgress | None = None) -> None:
        """Export ``url@revision`` into ``destination`` (which must not exist yet).

        ``progress`` (with a client that ``reports_progress``; the other ignores it) hears
        the listing of ``url@revision`` first, then each path once it is complete on disk,
        called from this thread, so a reader in another thread can work behind the export.

        Raises:
            SvnError: unreachable repository, missing path, timeout.
        """
        if self.client == "pysvn":
            self._call({"op": "export", "url": url, "revision": revision,
                        "destination": str(destination), "progress": progress is not None},
                       "export", f"{url}@{revision}", progress=progress)
            return
        self._run(["export", "--quiet", "--ignore-externals", "--native-eol", "LF",
                   f"{url}@{revision}", str(destination)])

    def _private_config_dir(self) -> Path:
        """An empty config dir of this client's own, made once (not once per call)."""
        if self._config_dir is None or not self._config_dir.is_dir():
            self._config_dir = Path(tempfile.mkdtemp(prefix="codecache-svn-"))
            weakref.finalize(self, shutil.rmtree, self._config_dir, ignore_errors=True)
        return self._config_dir

    def _call(self, request: dict[str, Any], what: str, target: str | None = None,
              progress: ExportProgress | None = None) -> Any:
        if self._worker is None or not self._worker.alive():
            assert self._python is not None  # noqa: S101 - only called with a pysvn client
            self._worker = _PysvnWorker(self._python, self._private_config_dir(),
                                        self._config.username, self._password(),
                                        self._config.timeout)
        try:
            answer = self._worker.call(request, self._config.timeout, progress)
        except SvnError as err:
            self._worker.stop()
            self._worker = None
            raise SvnError(f"svn {what} {target or request['url']}: {err}") from None
        if not answer.get("ok"):
            codes = set(answer.get("codes") or ())
            message = f"svn {what} failed: {answer.get('message') or 'no error message'}"
            if codes & _NOT_FOUND_CODES and _UNABLE_TO_CONNECT not in codes:
                raise SvnNotFound(message)
            raise SvnError(message)
        return answer

    def _run(self, args: list[str]) -> str:
        password = self._password()
        command = [self._executable, "--non-interactive", "--no-auth-cache",
                   "--config-dir", str(self._private_config_dir())]
        if self._config.username:
            command += ["--username", self._config.username]
        if password is not None:
            command.append("--password-from-stdin")
        env = {**os.environ, "TZ": "UTC", "LC_ALL": "C.UTF-8"}
        try:
            result = subprocess.run(
                command + args, input=f"{password}\n" if password is not None else "",
                capture_output=True, text=True, timeout=self._config.timeout, env=env,
                check=False)
        except subprocess.TimeoutExpired:
            raise SvnError(f"svn {args[0]} timed out after {self._config.timeout:g}s "
                           f"({args[-1]})") from None
        except FileNotFoundError:
            raise SvnError(f"the Subversion client {self._executable!r} is not "
                           "installed") from None
        if result.returncode != 0:
            message = f"svn {args[0]} failed: {_first_error(result.stderr)}"
            if _not_found(result.stderr):
                raise SvnNotFound(message)
            raise SvnError(message)
        return result.stdout

    def _password(self) -> str | None:
        if self._config.password is not None:
            return self._config.password
        if self._config.password_file is None:
            return None
        try:
            return self._config.password_file.read_text().strip()
        except OSError as err:
            raise ConfigError(f"cannot read svn.password_file: {err.strerror}") from err


_WORKER = Path(__file__).with_name("pysvn_worker.py")
_SYSTEM_PYTHON = "/usr/bin/python3"   # Debian's python3-svn is built for it
_NOT_FOUND_CODES = {170000, 160013, 160006}
_UNABLE_TO_CONNECT = 170013


def _candidates() -> list[str]:
    """The Pythons that may have pysvn: this one (if it finds pysvn), then the system's."""
    found = [sys.executable] if importlib.util.find_spec("pysvn") is not None else []
    # ``python -I`` finds no more than this process does: skip starting this one in vain.
    return [p for p in dict.fromkeys([*found, _SYSTEM_PYTHON]) if p and Path(p).exists()]


def find_pysvn_python() -> str | None:
    """A Python that can import pysvn: this one, else the system's (None: neither)."""
    for python in _candidates():
        try:
            probe = subprocess.run([python, "-I", "-c", "import pysvn"], capture_output=True,
                                   timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return python
    return None


class _PysvnWorker:
    """One ``pysvn_worker.py`` process and its pipes (see that module for the protocol)."""

    def __init__(self, python: str, config_dir: Path, username: str | None,
                 password: str | None, timeout: float) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        try:
            self._process = subprocess.Popen(
                [python, "-I", str(_WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, env={**os.environ, "TZ": "UTC", "LC_ALL": "C.UTF-8"})
        except OSError as err:
            self._stderr.close()
            raise SvnError(f"cannot start the pysvn worker: {err.strerror}") from None
        # Stopped when this object goes (its Svn was dropped) or the process exits.
        self._finalizer = weakref.finalize(self, _stop_process, self._process, self._stderr)
        self._buffer = b""                          # a line not complete yet
        self._lines: deque[bytes] = deque()         # complete lines not taken yet
        try:
            answer = self.call({"config_dir": str(config_dir), "username": username,
                                "password": password}, timeout)
        except SvnError:
            self.stop()   # e.g. a Python without pysvn: it ended at once
            raise
        if not answer.get("ok"):
            self.stop()
            raise SvnError(f"the pysvn worker did not start: {answer}")

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def call(self, request: dict[str, Any], timeout: float,
             progress: ExportProgress | None = None) -> dict[str, Any]:
        """Send one request and wait for its answer; progress lines go to ``progress``.

        Raises:
            SvnError: no answer within ``timeout`` (the worker is killed), or it died.
        """
        assert self._process.stdin is not None and self._process.stdout is not None  # noqa: S101
        try:
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            self._process.stdin.flush()
        except OSError:
            raise SvnError(self._died()) from None
        deadline = time.monotonic() + timeout
        while True:
            answer = self._next_line(deadline, timeout)
            if "ok" in answer:
                return answer
            # A progress line of an export ({"listed": [...]} or {"exported": [...]}).
            try:
                if progress is not None and "listed" in answer:
                    progress.listed([str(p) for p in answer["listed"]])
                elif progress is not None:
                    progress.exported([str(path) for path in answer["exported"]])
            except (KeyError, TypeError):
                self.stop()
                raise SvnError("the pysvn worker answered garbage") from None

    def _next_line(self, deadline: float, timeout: float) -> dict[str, Any]:
        assert self._process.stdout is not None  # noqa: S101
        fd = self._process.stdout.fileno()
        while not self._lines:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise SvnError(f"timed out after {timeout:g}s (the pysvn worker was stopped)")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise SvnError(self._died())
                # An export's progress comes as thousands of lines: split each chunk once.
                *complete, self._buffer = (self._buffer + chunk).split(b"\n")
                self._lines.extend(complete)
        line = self._lines.popleft()
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self.stop()
            raise SvnError("the pysvn worker answered garbage")
        return answer

    def _died(self) -> str:
        code = self._process.wait()
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        return f"the pysvn worker died ({how})" + (f": {lines[-1]}" if lines else "")

    def stop(self) -> None:
        self._finalizer()


def _stop_process(process: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
    stderr.close()


# The repository answered, and the path or revision is not there (svn_error_codes.h:
# SVN_ERR_RA_ILLEGAL_URL, SVN_ERR_FS_NOT_FOUND, SVN_ERR_FS_NO_SUCH_REVISION).
_NOT_FOUND = ("svn: E170000:", "svn: E160013:", "svn: E160006:")


def _not_found(stderr: str) -> bool:
    lines = [line.strip() for line in stderr.splitlines()]
    return any(line.startswith(_NOT_FOUND) for line in lines) and not any(
        line.startswith("svn: E170013:") for line in lines)  # unable to connect


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # svn prints its most specific error last ("svn: E170013: Unable to connect ...").
    errors = [line for line in lines if line.startswith("svn: E")]
    return (errors[-1] if errors else lines[-1] if lines else "no error message").removeprefix(
        "svn: ")


def _parse_entry(entry: ET.Element) -> Tag:
    name = entry.findtext("name")
    commit = entry.find("commit")
    if name is None or commit is None:
        raise ValueError("entry without name or commit")
    date = commit.findtext("date")
    if date is None:
        raise ValueError(f"tag {name!r} has no commit date")
    return Tag(name=name, revision=int(commit.get("revision", "")),
               author=commit.findtext("author") or "", date=parse_time(date))
