"""``codecache sync`` without ``--once``: the long-running worker (DESIGN.md §6)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import (
    Origin,
    SvnRepo,
    cli_command,
    cli_env,
    commit_random_files,
    with_file_size_limit,
    write_config,
)
from tests.harness.timing import poll


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    return bool(poll(condition, timeout, interval=0.1)) or condition()


@contextlib.contextmanager
def worker(command: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The worker running with its output in ``log_path``; it must stop cleanly on SIGTERM."""
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
        assert process.poll() is None  # still running
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in log_path.read_text()


def index_versions(origin: Origin) -> set[str]:
    raw = origin.index_bytes()
    if raw is None:
        return set()
    packages = json.loads(raw)["signed"]["packages"]
    return set(packages.get(origin.package, {}).get("releases", {}))


def test_sync_worker_publishes_new_tags_and_stops_on_sigterm(
        origin: Origin, svn_package: tuple[SvnRepo, str, str], tmp_path: Path) -> None:
    repo, name, _ = svn_package
    write_config(origin.dir, name, origin.svn_url, sync={"interval": "1s"})
    log_path = tmp_path / "worker.log"
    with worker(cli_command("sync", config=origin.config), log_path):
        assert wait_for(lambda: index_versions(origin) == {"1.0.0", "1.2.0"}, 15)
        repo.tag(name, "1.3.0")
        assert wait_for(lambda: "1.3.0" in index_versions(origin), 15)
    assert origin.status_json()["packages"][name]["channels"]["latest"]["version"] == "1.3.0"


def test_sync_worker_backs_off_when_the_store_cannot_be_written(
        origin: Origin, svn_package: tuple[SvnRepo, str, str], tmp_path: Path) -> None:
    repo, name, _ = svn_package
    write_config(origin.dir, name, origin.svn_url, sync={"interval": "1s"})
    origin.cli("sync", "--once", check=True)
    before = origin.index_bytes()
    commit_random_files(repo, name, 3, 20_000)
    repo.tag(name, "1.3.0")
    log_path = tmp_path / "worker.log"
    command = with_file_size_limit(cli_command("sync", config=origin.config), 50_000)
    with worker(command, log_path):
        assert wait_for(lambda: log_path.read_text().count("sync failed, retrying") >= 2, 15), \
            log_path.read_text()
        assert origin.index_bytes() == before  # still running (checked on exit), backing off
    assert "File too large" in log_path.read_text()


def test_sync_worker_warns_about_a_skipped_tag_once(
        origin: Origin, svn_package: tuple[SvnRepo, str, str], tmp_path: Path) -> None:
    repo, name, _ = svn_package
    repo.tag(name, "not-a-release")
    write_config(origin.dir, name, origin.svn_url, sync={"interval": "1s"})
    origin.cli("sync", "--once", check=True)
    serial = origin.status_json()["serial"]
    log_path = tmp_path / "worker.log"
    command = cli_command("--debug", "sync", config=origin.config)
    with worker(command, log_path):
        assert wait_for(lambda: log_path.read_text().count("sync done") >= 3, 15)
    output = log_path.read_text()
    assert output.count("tag skipped") >= 3, output  # seen on every poll ...
    assert output.count("WARNING codecache.sync tag skipped") == 1, output  # ... warned once
    assert "'not-a-release'" in output
    assert origin.status_json()["serial"] == serial  # nothing new, nothing re-signed
