"""The main job, ``scripts/demo``, end to end: as a user runs it, then as a pilot uses it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

from tests.conftest import require
from tests.harness.processes import restore_signals
from tests.harness.timing import free_port, scaled, wait_until

REPO = Path(__file__).resolve().parents[2]


def _demo_env(demo_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    return {**env, "DEMO_DIR": str(demo_dir), "DEMO_PORT": str(port)}


def test_demo_without_serving_syncs_and_prints_status(tmp_path: Path) -> None:
    result = subprocess.run([str(REPO / "scripts" / "demo"), "--no-serve"],
                            env=_demo_env(tmp_path / "demo", free_port()), capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "published pilot 1.2.0" in out
    # The git package beside it (a bare repository read by file://), its source shown.
    assert "published gitpilot 1.2.0" in out
    assert re.search(r"release 1\.1\.0 sha256=[0-9a-f]{64} size=\d+ git=file://\S+/gitpilot"
                     r"\.git@[0-9a-f]{40}\n", out), out
    assert "skipped pilot experimental" in out
    assert "pilot production -> 1.1.0" in out
    assert "channel latest -> 1.2.0" in out
    assert "channel production -> 1.1.0" in out
    assert re.search(r"demo-rm \(uid \d+\)\s+move\s+pilot\s+production\s+- -> 1\.1\.0", out), out
    # history names a git release's commit author (the JSON's svn_author, DESIGN.md §9).
    assert re.search(r"release\s+gitpilot\s+-\s+1\.2\.0\s+\d+\s+author: Release Manager "
                     r"<rm@example\.org>", out), out
    assert not _svnserve_alive(tmp_path / "demo")  # the demo cleans up after itself


def _svnserve_alive(demo_dir: Path, patience: float = 5.0) -> bool:
    """Whether the demo's svnserve still runs ``patience`` seconds from now at the latest."""
    try:
        wait_until(lambda: not _svnserve_running(demo_dir), patience, "svnserve gone",
                   interval=0.1)
    except AssertionError:
        return True
    return False


def _svnserve_running(demo_dir: Path) -> bool:
    """Whether the demo's svnserve still runs (a zombie awaiting its reaper does not)."""
    try:
        pid = int((demo_dir / "svnserve.pid").read_text())
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ValueError):
        return False
    return "State:\tZ" not in status


def test_demo_serves_what_a_pilot_downloads_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    demo_dir = tmp_path / "demo"
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        # Its own session (the whole tree gets the SIGINT, as from a terminal) with SIGINT
        # at its default: a run started under nohup would otherwise hand the demo a SIGINT
        # it ignores (ignored signals stay ignored across exec).
        process = subprocess.Popen([str(REPO / "scripts" / "demo")], env=_demo_env(demo_dir, port),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=restore_signals)
    try:
        wait_until(lambda: "Ctrl-C to stop" in log.read_text() or process.poll() is not None,
                   300, "the demo says Ctrl-C to stop", interval=0.2)
        text = log.read_text()
        assert process.poll() is None, text
        # The demo's own sha256sum -c and minisign -V, of the svn and of the git package.
        assert text.count("latest.tar.gz: OK") == 2
        assert text.count("Signature and comment signature verified") == 2
        assert re.search(r"OK latest\.tar\.gz: package=gitpilot version=1\.2\.0 "
                         r"sha256=[0-9a-f]{64} git=file://\S+/gitpilot\.git@[0-9a-f]{40} ",
                         text), text
        # The site's pilot (wget --bind-address=127.0.0.2): a 302 from the VIP to the site's
        # edge, which served it (its access line names the site's address).
        edge = re.search(r"  Location: (http://127\.0\.0\.1:\d+)/pilot/production\.tar\.gz", text)
        assert edge is not None, text
        assert re.search(r'"GET /pilot/production\.tar\.gz HTTP/1\.1" 302 .* site=demo-site',
                         text), text
        assert re.search(r'edge: 127\.0\.0\.2 "GET /pilot/production\.tar\.gz" 200', text), text
        node = tmp_path / "node"
        node.mkdir()
        fetched = subprocess.run(
            [require("wget"), "-q", f"http://127.0.0.1:{port}/pilot/production.tar.gz"],
            cwd=node, timeout=scaled(30), check=False)
        assert fetched.returncode == 0
        listing = subprocess.run(["tar", "tzf", str(node / "production.tar.gz")],
                                 capture_output=True, text=True, check=True).stdout
        assert "pilot/bin/pilot.sh" in listing.splitlines()
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=scaled(30))      # Ctrl-C stops it (a hang fails here)
    finally:
        _tear_down(process, demo_dir)
    assert not _svnserve_alive(demo_dir)


def _tear_down(process: subprocess.Popen[bytes], demo_dir: Path) -> None:
    """Stop whatever the demo left, by our own means: its session, its cluster, svnserve."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if (demo_dir / "cluster").exists():
        # The cluster's processes are their own sessions: the SIGKILL above missed them.
        subprocess.run([str(REPO / "scripts" / "cluster"), "down", "--dir",
                        str(demo_dir / "cluster")], capture_output=True, timeout=scaled(60),
                       check=False)
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int((demo_dir / "svnserve.pid").read_text()), signal.SIGKILL)
