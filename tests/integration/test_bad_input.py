"""Bad input: one line on stderr, the right exit code, the store untouched (DESIGN.md §6, §7)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import (
    Origin,
    SvnRepo,
    assert_one_line_error,
    cli_command,
    cli_env,
    commit_random_files,
    make_origin,
    run_cli,
    snapshot,
    with_file_size_limit,
    write_config,
)
from tests.harness.timing import free_port


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)
    return edit


CONFIG_EDITS: dict[str, tuple[Callable[[str], str], str]] = {
    "malformed toml": (lambda t: t + "[store\n", "not valid TOML"),
    "unknown top-level key": (lambda t: 'stor = "x"\n' + t, "'stor'"),
    "unknown key in a section": (_replace("[signing]\n", "[signing]\nexpiry = \"1d\"\n"),
                                 "signing.'expiry'"),
    "unknown key in packages": (lambda t: t + 'tagpattern = "x"\n', "'tagpattern'"),
    "bad duration": (_replace("[signing]\n", "[signing]\nindex_expiry = \"7 days\"\n"),
                     "signing.index_expiry"),
    "zero duration": (lambda t: t + '[sync]\ninterval = "0s"\n', "sync.interval"),
    "bad package name": (lambda t: t.replace('name = "pilot', 'name = "Pilot', 1),
                         "invalid package name"),
    "invalid tag_pattern": (lambda t: t + "tag_pattern = '^[0-9'\n", "tag_pattern"),
    "bad auto_channel": (_replace('auto_channel = "latest"', 'auto_channel = "Latest"'),
                         "auto_channel"),
    "bad role": (lambda t: t.replace('role = "origin"', 'role = "primary"', 1), "role"),
}


@pytest.mark.parametrize("edit,expected", CONFIG_EDITS.values(), ids=CONFIG_EDITS.keys())
def test_bad_config_is_refused_with_one_line(store_copy: Origin,
                                             edit: Callable[[str], str], expected: str) -> None:
    origin = store_copy
    origin.config.write_text(edit(origin.config.read_text()))
    before = snapshot(origin.store)
    for command in (("sync", "--once"), ("publish", origin.package, "1.0.0", "--channel", "p"),
                    ("status",)):
        line = assert_one_line_error(origin.cli(*command), 2)
        assert expected in line, line
    assert snapshot(origin.store) == before


@pytest.mark.parametrize("env,expected", [
    ({"CODECACHE_STORE_PAHT": "/tmp/x"}, "CODECACHE_STORE_PAHT"),
    ({"CODECACHE_DEBUG": "1"}, "CODECACHE_DEBUG"),
    ({"CODECACHE_SIGNING_INDEX_EXPIRY": "2x"}, "signing.index_expiry"),
    ({"CODECACHE_SERVER_CHANNEL_MAX_AGE": "-1"}, "server.channel_max_age"),
], ids=["unknown-variable", "unknown-variable-2", "bad-duration", "bad-integer"])
def test_bad_environment_is_refused_with_one_line(store_copy: Origin, env: dict[str, str],
                                                  expected: str) -> None:
    before = snapshot(store_copy.store)
    line = assert_one_line_error(store_copy.cli("sync", "--once", env=env), 2)
    assert expected in line
    assert snapshot(store_copy.store) == before


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    line = assert_one_line_error(run_cli("status", config=tmp_path / "nope.toml"), 2)
    assert "nope.toml" in line


def test_world_readable_secret_key_is_refused(store_copy: Origin) -> None:
    origin = store_copy
    origin.secret_key.chmod(0o644)
    before = snapshot(origin.store)
    for command in (("sync", "--once"), ("publish", origin.package, "1.0.0", "--channel", "p"),
                    ("yank", origin.package, "1.0.0", "--reason", "x")):
        line = assert_one_line_error(origin.cli(*command), 3)
        assert "group/others" in line
    assert snapshot(origin.store) == before


def test_missing_secret_key_is_a_usage_error(store_copy: Origin) -> None:
    origin = store_copy
    origin.secret_key.rename(origin.secret_key.with_suffix(".moved"))
    before = snapshot(origin.store)
    line = assert_one_line_error(origin.cli("sync", "--once"), 2)
    assert str(origin.secret_key) in line
    assert "does not exist" in line
    assert snapshot(origin.store) == before


def test_missing_trusted_key_is_a_usage_error(store_copy: Origin) -> None:
    store_copy.public_key.unlink()
    before = snapshot(store_copy.store)
    assert_one_line_error(store_copy.cli("sync", "--once"), 2)
    assert_one_line_error(store_copy.cli("status"), 2)
    assert snapshot(store_copy.store) == before


def test_unreachable_subversion_refuses_sync_and_leaves_the_store(store_copy: Origin) -> None:
    origin = store_copy
    closed = f"svn://127.0.0.1:{free_port()}/{origin.package}"
    write_config(origin.dir, origin.package, closed)
    before = snapshot(origin.store)
    line = assert_one_line_error(origin.cli("sync", "--once"), 3)
    assert "svn" in line
    assert snapshot(origin.store) == before
    # publish of a tag that needs importing cannot reach svn either
    line = assert_one_line_error(
        origin.cli("publish", origin.package, "1.3.0", "--channel", "production"), 3)
    assert snapshot(origin.store) == before
    # but a release already in the store can still be published without svn
    origin.cli("publish", origin.package, "1.0.0", "--channel", "production", check=True)


def test_unreachable_subversion_creates_no_store(store_copy: Origin) -> None:
    shutil.rmtree(store_copy.store)
    write_config(store_copy.dir, store_copy.package, f"svn://127.0.0.1:{free_port()}/x")
    assert_one_line_error(store_copy.cli("sync", "--once"), 3)
    assert not store_copy.store.exists()


def test_bad_tag_names_are_skipped_and_the_rest_is_published(
        tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, url = svn_package
    for tag in ("1.0.0", "bad_tag", "-x", "1.1.0", "v1.2"):
        repo.tag(name, tag)
    origin = make_origin(tmp_path / "o", name, url)
    result = origin.cli("sync", "--once")
    assert result.returncode == 0, result.stderr
    for tag in ("bad_tag", "-x", "v1.2"):
        assert f"skipped {name} {tag}:" in result.stdout
        assert f"tag={tag!r}" in result.stderr  # logged as a warning
    assert "WARNING" in result.stderr
    assert "Traceback" not in result.stderr
    payload = origin.status_json()["packages"][name]
    assert set(payload["releases"]) == {"1.0.0", "1.1.0"}
    assert payload["channels"]["latest"]["version"] == "1.1.0"
    # publishing a skipped tag by name is refused as a bad request
    before = snapshot(origin.store)
    line = assert_one_line_error(origin.cli("publish", name, "bad_tag", "--channel", "p"), 2)
    assert "tag_pattern" in line
    assert snapshot(origin.store) == before


def test_sync_for_an_unconfigured_package_is_a_usage_error(store_copy: Origin) -> None:
    before = snapshot(store_copy.store)
    line = assert_one_line_error(store_copy.cli("sync", "--once", "--package", "nope"), 2)
    assert "nope" in line
    assert snapshot(store_copy.store) == before


def test_status_of_an_empty_store_is_refused_by_state(store_copy: Origin) -> None:
    shutil.rmtree(store_copy.store)
    # A valid request the store's state refuses: exit 3 (DESIGN.md §6), not a usage error.
    line = assert_one_line_error(store_copy.cli("status"), 3)
    assert "no index" in line


def test_debug_shows_the_traceback_that_is_otherwise_hidden(store_copy: Origin) -> None:
    store_copy.config.write_text(store_copy.config.read_text() + "[store\n")
    result = store_copy.cli("--debug", "sync", "--once")
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert "not valid TOML" in result.stderr


# The real CLI in a process where reading the store raises what no code expects: a fake
# standing for a bug below the verb (the seam is Store.read_document, which every verb that
# reads the local index goes through).
_BUG = """\
import sys
from codecache.store.store import Store
def read_document(self):
    raise RuntimeError("a fake bug under the verb")
Store.read_document = read_document
from codecache.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _with_a_bug(origin: Origin, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BUG, "--config", str(origin.config), *args],
                          capture_output=True, text=True, env=cli_env(), timeout=60,
                          check=False)


def test_a_bug_exits_70_with_one_line(store_copy: Origin) -> None:
    # 70 is EX_SOFTWARE; 3 would tell the operator the environment refused (DESIGN.md §6).
    line = assert_one_line_error(_with_a_bug(store_copy, "status"), 70)
    assert line == "codecache: error: internal error: a fake bug under the verb"


def test_a_bug_shows_its_traceback_with_debug_only(store_copy: Origin) -> None:
    result = _with_a_bug(store_copy, "--debug", "status")
    assert result.returncode == 70
    assert "Traceback" in result.stderr
    assert "in read_document" in result.stderr
    assert result.stderr.splitlines()[-1] == \
        "codecache: error: internal error: a fake bug under the verb"


def test_a_bug_in_check_is_unknown_as_nagios_wants(store_copy: Origin) -> None:
    result = _with_a_bug(store_copy, "check", "--no-upstream")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stdout.splitlines()[0] == \
        "CODECACHE UNKNOWN - internal error: a fake bug under the verb"


def test_a_write_failure_while_publishing_exits_3_and_keeps_the_previous_index(
        tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> None:
    """A real write fault, no root needed: RLIMIT_FSIZE makes the big tarball's write fail
    (EFBIG, as ENOSPC would) while every exported file and the index still fit."""
    repo, name, url = svn_package
    repo.tag(name, "1.0.0")
    origin = make_origin(tmp_path / "o", name, url)
    origin.cli("sync", "--once", check=True)
    commit_random_files(repo, name, 3, 20_000)  # the tarball outgrows the limit, no file does
    repo.tag(name, "1.1.0")
    before = snapshot(origin.store)
    command = with_file_size_limit(cli_command("sync", "--once", config=origin.config), 50_000)
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=60,
                            check=False)
    line = assert_one_line_error(result, 3)
    assert "internal error" not in line
    assert "File too large" in line
    after = snapshot(origin.store)
    assert after["index.json"] == before["index.json"]
    assert {k for k in after if k.startswith("blobs/")} == \
        {k for k in before if k.startswith("blobs/")}
    # Without the limit the next run publishes it.
    assert f"published {name} 1.1.0" in origin.cli("sync", "--once", check=True).stdout
