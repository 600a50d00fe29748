"""Subversion through pysvn: libsvn in one long-lived worker process.

Owns the worker (``pysvn_worker.py`` beside this file, run by file path with a Python that
has pysvn: this one if it finds pysvn, else the system's ``/usr/bin/python3``, for which
Debian's ``python3-svn`` is built), its pipes and its life: the same private config dir,
no auth cache and ``TZ=UTC`` as the ``svn`` command; the password reaches the worker on its
stdin pipe. A call that outlives the timeout kills the worker; a worker that dies (a crash
in libsvn) is an ``SvnError`` for that call and is started again for the next. An export
reports its listing and each finished path (``reports_progress``), so the archive can be
built behind it (``build``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections import deque
from pathlib import Path
from typing import IO, Any

from codecache.core.config import PackageConfig
from codecache.core.errors import SvnError
from codecache.origin.sources.base import ExportProgress, Source, SourceRef, Tag, svn_location
from codecache.origin.sources.svn_access import (
    SvnAccess,
    client_env,
    failure,
    tag_of,
    tags_url,
)

_WORKER = Path(__file__).with_name("pysvn_worker.py")
_SYSTEM_PYTHON = "/usr/bin/python3"   # Debian's python3-svn is built for it


class Pysvn(Source):
    """pysvn in a worker process run by ``python``, with the credentials of ``access``."""

    def __init__(self, access: SvnAccess, python: str) -> None:
        """Start the worker.

        Raises:
            SvnError: ``python`` cannot run it (e.g. it has no pysvn: the worker ends at once).
        """
        self._access = access
        self._python = python
        self._worker: _PysvnWorker | None = self._start()

    @classmethod
    def start(cls, access: SvnAccess) -> Pysvn | None:
        """The client with the first Python that can run the worker; None: none can.

        The worker is its own probe: a Python without pysvn ends it at once (one process
        start per candidate, instead of a probe process and then the worker).
        """
        for python in _candidates():
            try:
                return cls(access, python)
            except SvnError:
                continue
        return None

    @property
    def reports_progress(self) -> bool:
        return True

    def close(self) -> None:
        """Stop the worker, if one runs (it also stops when this process exits)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def list_tags(self, package: PackageConfig) -> list[Tag]:
        url = tags_url(package)
        answer = self._call({"op": "list", "url": url}, "list")
        try:
            return [tag_of(package, str(name), int(rev), int(when), str(author))
                    for name, rev, author, when in answer["entries"]]
        except (KeyError, ValueError, TypeError) as err:
            raise SvnError(f"unexpected answer listing {url}: {err}") from err

    def export(self, ref: SourceRef, destination: Path,
               progress: ExportProgress | None = None) -> None:
        url, revision = svn_location(ref)
        self._call({"op": "export", "url": url, "revision": revision,
                    "destination": str(destination), "progress": progress is not None},
                   "export", f"{url}@{revision}", progress=progress)

    def _start(self) -> _PysvnWorker:
        return _PysvnWorker(self._python, self._access.config_dir(), self._access.username,
                            self._access.password(), self._access.timeout)

    def _call(self, request: dict[str, Any], what: str, target: str | None = None,
              progress: ExportProgress | None = None) -> Any:
        if self._worker is None or not self._worker.alive():
            self._worker = self._start()
        try:
            answer = self._worker.call(request, self._access.timeout, progress)
        except SvnError as err:
            self._worker.stop()
            self._worker = None
            raise SvnError(f"svn {what} {target or request['url']}: {err}") from None
        if not answer.get("ok"):
            raise failure(what, answer.get("message") or "no error message",
                          set(answer.get("codes") or ()))
        return answer


def _candidates() -> list[str]:
    """The Pythons that may have pysvn: this one (if it finds pysvn), then the system's."""
    found = [sys.executable] if importlib.util.find_spec("pysvn") is not None else []
    # ``python -I`` finds no more than this process does: skip starting this one in vain.
    return [p for p in dict.fromkeys([*found, _SYSTEM_PYTHON]) if p and Path(p).exists()]


class _PysvnWorker:
    """One ``pysvn_worker.py`` process and its pipes (see that module for the protocol)."""

    def __init__(self, python: str, config_dir: Path, username: str | None,
                 password: str | None, timeout: float) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        try:
            self._process = subprocess.Popen(
                [python, "-I", str(_WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, env=client_env())
        except OSError as err:
            self._stderr.close()
            raise SvnError(f"cannot start the pysvn worker: {err.strerror}") from None
        # Stopped when this object goes (its client was dropped) or the process exits.
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
