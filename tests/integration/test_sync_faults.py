"""Sync under partial failure, Subversion credentials, and CLI/store hygiene."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codecache.core.config import PackageConfig, load_config
from codecache.core.errors import SvnError
from codecache.core.history import Actor
from codecache.core.signing import load_secret_key, load_trusted_keys
from codecache.origin.sources.base import ExportProgress, Source, SourceRef, Tag
from codecache.origin.sources.svn import Svn
from codecache.origin.sync import Origin as OriginWriter
from codecache.store.store import Store
from tests.conftest import (
    Origin,
    SvnRepo,
    assert_one_line_error,
    make_origin,
    require,
    run_cli,
    write_config,
)
from tests.harness.svn import served_repository
from tests.harness.timing import free_port

AUTH_USER, AUTH_PASSWORD = "pilotsync", "s3cret-svn-password-7731"


def _add_package(config: Path, name: str, svn_url: str) -> None:
    with config.open("a") as fh:
        fh.write(f'\n[[packages]]\nname = "{name}"\nsvn_url = "{svn_url}"\n'
                 'auto_channel = "latest"\n')


def test_unreachable_package_does_not_hold_up_the_others(origin: Origin) -> None:
    _add_package(origin.config, "ghost", f"svn://127.0.0.1:{free_port()}/ghost")
    result = origin.cli("sync", "--once")
    assert result.returncode == 3, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("codecache: error: svn list failed"), last
    assert "Traceback" not in result.stderr
    status = origin.status_json()
    assert set(status["packages"][origin.package]["releases"]) == {"1.0.0", "1.2.0"}
    assert "ghost" not in status["packages"]


class _FifoInTag(Source):
    """Seam for a fault real Subversion cannot hold: a tag whose export has a FIFO in it.

    Used because svn refuses to store FIFOs; the export itself is the real one.
    """

    def __init__(self, svn: Svn, bad_tag: str) -> None:
        self._svn = svn
        self._bad_tag = bad_tag

    def list_tags(self, package: PackageConfig) -> list[Tag]:
        return self._svn.list_tags(package)

    @property
    def reports_progress(self) -> bool:
        return False  # the FIFO appears after the export: archive the finished tree only

    def export(self, ref: SourceRef, destination: Path,
               progress: ExportProgress | None = None) -> None:
        self._svn.export(ref, destination)
        if ref.url.endswith(f"/tags/{self._bad_tag}"):
            os.mkfifo(destination / "fifo")


def test_auto_channel_moves_to_highest_published_when_last_tag_fails(
        origin: Origin, svn_server: SvnRepo) -> None:
    svn_server.change(origin.package, "lib/pilot/main.py", "print('1.3')\n")
    svn_server.tag(origin.package, "1.3.0")
    config = load_config(origin.config)
    writer = OriginWriter(config, Store(config.store.path),
                          load_secret_key(origin.secret_key),
                          load_trusted_keys(config.signing.trusted_keys),
                          _FifoInTag(Svn(config.svn), "1.3.0"), Actor("test", os.getuid()))
    report = writer.sync_once()
    assert report.published == [f"{origin.package} 1.0.0", f"{origin.package} 1.2.0"]
    assert any("1.3.0" in line for line in report.skipped)
    channels = origin.status_json()["packages"][origin.package]["channels"]
    assert channels["latest"]["version"] == "1.2.0"


@pytest.fixture(scope="module")
def auth_svn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A repository that refuses anonymous access, with one tagged package ``locked``."""
    svn = require("svn")
    repo = tmp_path_factory.mktemp("authsvn") / "repo"
    with served_repository(repo, anon_access="none", user=AUTH_USER,
                           password=AUTH_PASSWORD) as (root, _):
        url = f"{root}/locked"
        auth = ["--non-interactive", "--no-auth-cache", "--username", AUTH_USER,
                "--password", AUTH_PASSWORD]
        subprocess.run([svn, "mkdir", *auth, "--parents", "-m", "init", f"{url}/trunk",
                        f"{url}/tags"], check=True, capture_output=True)
        subprocess.run([svn, "copy", *auth, "-m", "tag", f"{url}/trunk", f"{url}/tags/2.0"],
                       check=True, capture_output=True)
        yield url


@pytest.fixture
def svn_spy(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose ``svn`` records its argv, then runs the real client."""
    real = require("svn")
    bin_dir, log = tmp_path / "spybin", tmp_path / "svn-argv.log"
    bin_dir.mkdir()
    spy = bin_dir / "svn"
    spy.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    spy.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def test_password_reaches_svn_by_stdin_never_argv(
        tmp_path: Path, auth_svn: str, svn_spy: tuple[dict[str, str], Path]) -> None:
    origin = make_origin(tmp_path / "o", "locked", auth_svn)
    (origin.dir / "svn-password").write_text(AUTH_PASSWORD + "\n")
    (origin.dir / "svn-password").chmod(0o600)
    write_config(origin.dir, "locked", auth_svn, package_keys={"tag_pattern": ".*"},
                 svn={"username": AUTH_USER, "password_file": "svn-password"})
    env, argv_log = svn_spy
    # The svn command's side (the pysvn worker's: tests/integration/test_svn_clients.py).
    result = origin.cli("sync", "--once", env={**env, "CODECACHE_SVN_CLIENT": "cli"})
    assert result.returncode == 0, result.stderr
    assert "published locked 2.0" in result.stdout
    calls = argv_log.read_text()
    assert "--password-from-stdin" in calls and AUTH_USER in calls
    assert AUTH_PASSWORD not in calls
    assert AUTH_PASSWORD not in result.stdout + result.stderr


def test_password_from_environment(tmp_path: Path, auth_svn: str) -> None:
    origin = make_origin(tmp_path / "o", "locked", auth_svn)
    write_config(origin.dir, "locked", auth_svn, package_keys={"tag_pattern": ".*"})
    denied = origin.cli("sync", "--once")
    assert_one_line_error(denied, 3)
    assert AUTH_PASSWORD not in denied.stderr
    ok = origin.cli("sync", "--once", env={"CODECACHE_SVN_USERNAME": AUTH_USER,
                                           "CODECACHE_SVN_PASSWORD": AUTH_PASSWORD})
    assert ok.returncode == 0, ok.stderr
    assert "published locked 2.0" in ok.stdout


def test_wrong_svn_password_is_one_line_exit_3_without_the_password(
        tmp_path: Path, auth_svn: str) -> None:
    origin = make_origin(tmp_path / "o", "locked", auth_svn)
    result = origin.cli("sync", "--once", env={"CODECACHE_SVN_USERNAME": AUTH_USER,
                                               "CODECACHE_SVN_PASSWORD": "wrong-guess-123"})
    assert_one_line_error(result, 3)
    assert "wrong-guess-123" not in result.stderr
    assert not (origin.store / "index.json").exists()


def test_svn_timeout_is_an_svn_error(tmp_path: Path) -> None:
    """A server that accepts and never answers: the call ends at the timeout."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        config = load_config(None, env={"CODECACHE_SVN_TIMEOUT": "1s"})
        with pytest.raises(SvnError, match="timed out"):
            Svn(config.svn).list_tags(PackageConfig("x", f"svn://127.0.0.1:{port}/x"))


@pytest.mark.parametrize("argv", [
    ["sync", "--bogus"], [], ["publish", "pilot"], ["status", "--json", "extra"], ["nope"],
])
def test_usage_errors_are_one_line_exit_2(argv: list[str]) -> None:
    result = run_cli(*argv)
    assert_one_line_error(result, 2)


def test_store_is_world_readable_even_under_umask_077(origin: Origin) -> None:
    script = (f"import os, sys; os.umask(0o077); from codecache.cli.main import main; "
              f"sys.exit(main(['--config', {str(origin.config)!r}, 'sync', '--once']))")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    for path in [origin.store, *origin.store.rglob("*")]:
        if path.name in (".lock", "tmp") or path.parent.name == "tmp":
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{path} is {mode:o}"
    index = json.loads((origin.store / "index.json").read_text())
    assert index["signed"]["serial"] >= 1


def test_index_is_resigned_while_svn_is_away(synced_origin: Origin) -> None:
    origin = synced_origin
    serial = origin.status_json()["serial"]
    write_config(origin.dir, origin.package, f"svn://127.0.0.1:{free_port()}/gone",
                 signing={"resign_interval": "1s"})
    time.sleep(1.1)
    result = origin.cli("sync", "--once")
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1].startswith("codecache: error: svn list failed")
    status = origin.status_json()
    assert status["serial"] > serial
    assert set(status["packages"][origin.package]["releases"]) == {"1.0.0", "1.2.0"}


def test_status_before_the_first_sync_says_so_with_exit_3(origin: Origin) -> None:
    line = assert_one_line_error(origin.cli("status"), 3)
    assert "no index yet" in line
    assert not origin.store.exists()  # status never writes
