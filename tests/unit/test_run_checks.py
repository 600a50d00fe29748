"""The run-level checks of tests/conftest.py, on a run of their own: a skip fails a CI run
unless allowlisted, and a process a test leaves alive fails the run (and is killed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness.processes import MARK

REPO = Path(__file__).resolve().parents[2]


def _pytest(directory: Path, test: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``pytest`` on one test file with tests/conftest.py's hooks, a run mark of its own."""
    (directory / "test_inner.py").write_text(test)
    environ = {k: v for k, v in os.environ.items() if k not in (MARK, "CI")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--basetemp", str(directory / "tmp"), str(directory / "test_inner.py")],
        capture_output=True, text=True, cwd=REPO, env={**environ, **env}, timeout=120,
        check=False)


SKIPS = "import pytest\n\ndef test_it() -> None:\n    pytest.skip('no such capability')\n"


def test_a_skip_fails_a_ci_run_only(tmp_path: Path) -> None:
    ci = _pytest(tmp_path, SKIPS, CI="true")
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "skipped in CI: test_inner.py::test_it: no such capability" in ci.stdout
    local = _pytest(tmp_path, SKIPS)
    assert local.returncode == 0, local.stdout + local.stderr


def test_a_process_left_alive_fails_the_run_and_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    leaks = ("import subprocess\n\ndef test_it() -> None:\n"
             "    child = subprocess.Popen(['sleep', '60'])\n"
             f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n")
    run = _pytest(tmp_path, leaks, TEST_DEADLINE_FACTOR="0.2")
    assert run.returncode == 1, run.stdout + run.stderr
    pid = int(pid_file.read_text())
    assert f"process left alive (killed now): {pid} sleep 60" in run.stdout
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
