"""The run-level checks of tests/conftest.py, on a run of their own: a skip fails a CI run
unless allowlisted, and a process a test leaves alive fails the run (and is killed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.processes import MARK

REPO = Path(__file__).resolve().parents[2]


def _pytest(directory: Path, test: str | dict[str, str], *args: str,
            **env: str) -> subprocess.CompletedProcess[str]:
    """``pytest`` on one test file (or several, a conftest.py too: name -> text) with
    tests/conftest.py's hooks, a run mark of its own; ``args`` go to pytest (``-n 2``)."""
    files = {"test_inner.py": test} if isinstance(test, str) else test
    for name, text in files.items():
        (directory / name).write_text(text)
    # A run of its own: not this run's mark, nor (when this run has workers) a worker's.
    environ = {k: v for k, v in os.environ.items()
               if k not in (MARK, "CI") and not k.startswith("PYTEST_XDIST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--basetemp", str(directory / "tmp"), *args,
         *(str(directory / n) for n in files if n.startswith("test_"))],
        capture_output=True, text=True, cwd=REPO, env={**environ, **env}, timeout=120,
        check=False)


SKIPS = "import pytest\n\ndef test_it() -> None:\n    pytest.skip('no such capability')\n"


@pytest.mark.parametrize("workers", [(), ("-n", "1")], ids=["alone", "xdist-worker"])
def test_a_skip_fails_a_ci_run_only(tmp_path: Path, workers: tuple[str, ...]) -> None:
    ci = _pytest(tmp_path, SKIPS, *workers, CI="true")
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "skipped in CI: test_inner.py::test_it: no such capability" in ci.stdout
    local = _pytest(tmp_path, SKIPS, *workers)
    assert local.returncode == 0, local.stdout + local.stderr


@pytest.mark.parametrize("workers", [(), ("-n", "1")], ids=["alone", "xdist-worker"])
def test_a_process_left_alive_fails_the_run_and_is_killed(tmp_path: Path,
                                                           workers: tuple[str, ...]) -> None:
    pid_file = tmp_path / "pid"
    leaks = ("import subprocess\n\ndef test_it() -> None:\n"
             "    child = subprocess.Popen(['sleep', '60'])\n"
             f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n")
    run = _pytest(tmp_path, leaks, *workers, TEST_DEADLINE_FACTOR="0.2")
    assert run.returncode == 1, run.stdout + run.stderr
    pid = int(pid_file.read_text())
    assert f"process left alive (killed now): {pid} sleep 60" in run.stdout
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_worker_that_ends_leaves_a_sibling_workers_processes_alone(tmp_path: Path) -> None:
    # One worker runs test_quick and ends (its leak check runs in its sessionfinish, before
    # its unconfigure), while the other's test still has a child running.
    done = tmp_path / "done"
    conftest = ("def pytest_unconfigure(config) -> None:\n"
                "    if hasattr(config, 'workerinput') and 'QUICK' in __import__('os').environ:\n"
                f"        open({str(done)!r}, 'w').close()\n")
    quick = "import os\n\ndef test_quick() -> None:\n    os.environ['QUICK'] = '1'\n"
    busy = (
        "import subprocess\nfrom pathlib import Path\n"
        "from tests.harness.timing import wait_until\n\n"
        "def test_busy() -> None:\n"
        "    with subprocess.Popen(['sleep', '60']) as child:\n"
        "        try:\n"
        f"            wait_until(Path({str(done)!r}).exists, 300, 'the other worker ended')\n"
        "            assert child.poll() is None, 'killed by the other worker'\n"
        "        finally:\n"
        "            child.kill()\n")
    run = _pytest(tmp_path, {"conftest.py": conftest, "test_quick.py": quick,
                             "test_busy.py": busy},
                  "-n", "2", "--dist", "loadfile", TEST_DEADLINE_FACTOR="0.2")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout, run.stdout
