"""The real HTTP clients the tests assert against: curl and wget.

Both run as subprocesses with a bound on their own time (``timeout``, scaled by the run's
deadline factor) and a larger one on the subprocess, so a hang is a failure, not a stuck run.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.harness.binaries import require
from tests.harness.timing import scaled

_names = itertools.count()


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]      # the last response's headers, lower-cased names
    body: bytes
    stderr: str


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]   # lower-cased names, in order, duplicates kept
    body: bytes
    exit_code: int
    stderr: str
    stdout: str = ""             # what ``-w`` wrote

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[-1] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


def parse_header_block(raw: bytes) -> tuple[int, list[tuple[str, str]]]:
    """Status and headers (in order, duplicates kept) of the last response in a
    ``curl -D`` dump; (0, []) when there is none."""
    blocks = [b for b in raw.replace(b"\r\n", b"\n").split(b"\n\n") if b.strip()]
    if not blocks:
        return 0, []
    lines = blocks[-1].decode("latin-1").split("\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return int(lines[0].split()[1]), headers


def curl(url: str, *args: str, cwd: Path, timeout: float = 30.0,
         output: str | None = None) -> Response:
    """One real curl run; the last response's headers (raw, duplicates kept) and body.

    ``output`` names a file in ``cwd`` to keep the body in (default: read and removed).
    """
    timeout = scaled(timeout)
    heads = cwd / f".headers-{next(_names)}"
    body_file = cwd / (output or f".body-{next(_names)}")
    result = subprocess.run(
        [require("curl"), "-sS", "--max-time", str(timeout), "-D", str(heads), "-o",
         str(body_file), *args, url], capture_output=True, timeout=timeout + 10, cwd=cwd,
        check=False)
    status, headers = parse_header_block(heads.read_bytes() if heads.exists() else b"")
    heads.unlink(missing_ok=True)
    body = body_file.read_bytes() if body_file.exists() else b""
    if output is None:
        body_file.unlink(missing_ok=True)
    return Response(status, headers, body, result.returncode,
                    result.stderr.decode(errors="replace"), result.stdout.decode())


def curl_fetch(url: str, *args: str, cwd: Path, output: str | None = None,
               timeout: float = 20.0) -> Fetched:
    """``curl`` that must complete (exit 0, or 33: a range past the end) with a status."""
    got = curl(url, "-w", "%{http_code}", *args, cwd=cwd, timeout=timeout, output=output)
    code = got.stdout.strip()
    assert got.exit_code in (0, 33), f"curl {args} {url} failed: {got.stderr}"
    assert code == str(got.status) or got.status == 0, (code, got.status)
    return Fetched(int(code), dict(got.headers), got.body, got.stderr)


def wget(*args: str, cwd: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the real wget in ``cwd`` (C locale, so its messages are the English ones)."""
    timeout = scaled(timeout)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    return subprocess.run([require("wget"), "--no-config", "--tries=1",
                           f"--timeout={timeout / 2}", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
                          check=False)
