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


def parse_header_block(raw: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers of the last response in a ``curl -D`` dump."""
    blocks = [b for b in raw.replace(b"\r\n", b"\n").split(b"\n\n") if b.strip()]
    if not blocks:
        return 0, {}
    lines = blocks[-1].decode("latin-1").split("\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def curl_fetch(url: str, *args: str, cwd: Path, output: str | None = None,
               timeout: float = 20.0) -> Fetched:
    """Run the real curl; ``output`` names a file in ``cwd`` to write to (default: capture)."""
    timeout = scaled(timeout)
    heads = cwd / f".headers-{next(_names)}"
    body_file = cwd / (output or f".body-{next(_names)}")
    result = subprocess.run(
        [require("curl"), "-sS", "--max-time", str(timeout), "-D", str(heads),
         "-o", str(body_file), "-w", "%{http_code}", *args, url],
        capture_output=True, timeout=timeout + 5, cwd=cwd, check=False)
    status, headers = parse_header_block(heads.read_bytes() if heads.exists() else b"")
    heads.unlink(missing_ok=True)
    body = body_file.read_bytes() if body_file.exists() else b""
    if output is None:
        body_file.unlink(missing_ok=True)
    code = result.stdout.decode().strip()
    assert result.returncode in (0, 33), f"curl {args} {url} failed: {result.stderr.decode()}"
    assert code == str(status) or status == 0, (code, status)
    return Fetched(int(code), headers, body, result.stderr.decode(errors="replace"))


def wget(*args: str, cwd: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the real wget in ``cwd`` (C locale, so its messages are the English ones)."""
    timeout = scaled(timeout)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    return subprocess.run([require("wget"), "--no-config", "--tries=1",
                           f"--timeout={timeout / 2}", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
                          check=False)
