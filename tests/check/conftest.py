"""Fixtures for ``codecache check``: real origins and replicas (``codecache serve``), real
svnserve behind them; each test makes its own condition (expiry, lag, damage, two writers).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Origin, copy_origin, require, run_cli
from tests.http.helpers import Server, running

# CODECACHE STATE - message | perfdata
LINE = re.compile(r"^CODECACHE (OK|WARNING|CRITICAL|UNKNOWN) - (.+?)(?: \| (.*))?$")
STATES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


@dataclass
class Checked:
    code: int
    state: str
    message: str
    perfdata: dict[str, str]     # label -> value with its unit
    stdout: str
    stderr: str

    def value(self, label: str) -> float:
        return float(re.sub(r"[^0-9.eE+-]", "", self.perfdata[label]))


def check(*args: str, config: Path | None = None, timeout: float = 60) -> Checked:
    """Run the real ``codecache check`` and parse its one status line."""
    result = run_cli("check", *args, config=config, timeout=timeout)
    return parse(result)


def parse(result: subprocess.CompletedProcess[str]) -> Checked:
    lines = result.stdout.splitlines()
    assert len(lines) == 1, (result.returncode, result.stdout, result.stderr)
    match = LINE.match(lines[0])
    assert match, lines[0]
    assert STATES[match[1]] == result.returncode, (result.returncode, lines[0], result.stderr)
    perf = {}
    for item in (match[3] or "").split():
        label, _, rest = item.partition("=")
        perf[label] = rest.split(";")[0]
    return Checked(result.returncode, match[1], match[2], perf, result.stdout, result.stderr)


@pytest.fixture
def served(template_origin: Origin, tmp_path: Path) -> Iterator[Server]:
    """A private copy of the template origin, served."""
    require("curl")
    with running(copy_origin(template_origin, tmp_path / "origin")) as server:
        yield server
