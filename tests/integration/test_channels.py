"""Channels: the auto channel, publish, rollback, yank rules (DESIGN.md §2, §6)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from codecache.core.index import parse_time
from tests.conftest import (
    Origin,
    SvnRepo,
    assert_one_line_error,
    make_origin,
    snapshot,
    write_config,
)


def channels(origin: Origin) -> dict[str, str]:
    pkg = origin.status_json()["packages"][origin.package]
    return {name: ch["version"] for name, ch in pkg["channels"].items()}


def moved_at(origin: Origin, channel: str) -> int:
    pkg = origin.status_json()["packages"][origin.package]
    return parse_time(pkg["channels"][channel]["moved_at"])


def releases(origin: Origin) -> dict[str, dict[str, object]]:
    result: dict[str, dict[str, object]] = \
        origin.status_json()["packages"][origin.package]["releases"]
    return result


# --- the auto channel -------------------------------------------------------------------------


def test_latest_follows_natural_version_order_across_syncs(
        tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, url = svn_package
    origin = make_origin(tmp_path / "o", name, url)
    repo.tag(name, "1.9.2")
    origin.cli("sync", "--once", check=True)
    assert channels(origin) == {"latest": "1.9.2"}
    repo.tag(name, "1.10.0")
    origin.cli("sync", "--once", check=True)
    assert channels(origin) == {"latest": "1.10.0"}
    repo.tag(name, "1.0.1")  # a late hotfix of an old line
    result = origin.cli("sync", "--once", check=True)
    assert f"published {name} 1.0.1" in result.stdout
    assert set(releases(origin)) == {"1.9.2", "1.10.0", "1.0.1"}
    assert channels(origin) == {"latest": "1.10.0"}


def test_latest_is_the_highest_version_when_tags_arrive_together(
        tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, url = svn_package
    for tag in ("1.10.0", "1.9.2", "1.0.1"):  # svn order differs from version order
        repo.tag(name, tag)
    origin = make_origin(tmp_path / "o", name, url)
    origin.cli("sync", "--once", check=True)
    assert channels(origin) == {"latest": "1.10.0"}


def test_release_candidates_order_before_their_release(
        tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, url = svn_package
    origin = make_origin(tmp_path / "o", name, url)
    write_config(origin.dir, name, url,
                 package_keys={"tag_pattern": r"^[0-9]+(\.[0-9]+)*(rc[0-9]+)?$"})
    repo.tag(name, "1.10.0")
    repo.tag(name, "2.0.0rc1")
    origin.cli("sync", "--once", check=True)
    assert channels(origin) == {"latest": "2.0.0rc1"}
    repo.tag(name, "2.0.0")
    origin.cli("sync", "--once", check=True)
    assert channels(origin) == {"latest": "2.0.0"}
    repo.tag(name, "2.0.0rc2")  # a late candidate does not pull latest back
    origin.cli("sync", "--once", check=True)
    assert channels(origin) == {"latest": "2.0.0"}
    assert "2.0.0rc2" in releases(origin)


def test_sync_keeps_a_manual_rollback_of_the_auto_channel(store_copy: Origin) -> None:
    origin = store_copy
    origin.cli("publish", origin.package, "1.0.0", "--channel", "latest", check=True)
    origin.cli("sync", "--once", check=True)
    assert channels(origin) == {"latest": "1.0.0"}


# --- publish ----------------------------------------------------------------------------------


def test_publish_points_a_channel_and_rollback_is_allowed(store_copy: Origin) -> None:
    origin = store_copy
    result = origin.cli("publish", origin.package, "1.2.0", "--channel", "production")
    assert result.returncode == 0, result.stderr
    assert "production" in result.stdout
    assert channels(origin) == {"latest": "1.2.0", "production": "1.2.0"}
    times = [moved_at(origin, "production")]
    origin.cli("publish", origin.package, "1.0.0", "--channel", "production", check=True)
    assert channels(origin) == {"latest": "1.2.0", "production": "1.0.0"}
    times.append(moved_at(origin, "production"))
    origin.cli("publish", origin.package, "1.2.0", "--channel", "production", check=True)
    assert channels(origin)["production"] == "1.2.0"
    times.append(moved_at(origin, "production"))
    assert times[0] < times[1] < times[2], times


def test_publish_imports_a_tag_that_is_not_synced_yet(
        synced_origin: Origin, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, _ = svn_package
    origin = synced_origin
    repo.change(name, "lib/pilot/main.py", "print('pilot 1.3')\n")
    repo.tag(name, "1.3.0")
    serial = origin.status_json()["serial"]
    result = origin.cli("publish", name, "1.3.0", "--channel", "production")
    assert result.returncode == 0, result.stderr
    payload = origin.status_json()
    assert payload["serial"] > serial
    assert payload["packages"][name]["channels"]["production"]["version"] == "1.3.0"
    record = payload["packages"][name]["releases"]["1.3.0"]
    blob = (origin.store / "blobs" / "sha256" / record["sha256"]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == record["sha256"]
    assert len(blob) == record["size"]
    assert (origin.store / "signatures" / name / "1.3.0.minisig").read_text() \
        == record["minisig"]
    # A later sync has nothing left to publish.
    assert "published" not in origin.cli("sync", "--once", check=True).stdout


# --- yank -------------------------------------------------------------------------------------


def test_yank_refuses_a_release_a_channel_points_to(store_copy: Origin) -> None:
    origin = store_copy
    origin.cli("publish", origin.package, "1.2.0", "--channel", "production", check=True)
    before = snapshot(origin.store)
    line = assert_one_line_error(
        origin.cli("yank", origin.package, "1.2.0", "--reason", "broken"), 3)
    assert "latest" in line
    assert "production" in line
    assert snapshot(origin.store) == before


def test_yank_works_after_the_channel_moved_away(store_copy: Origin) -> None:
    origin = store_copy
    origin.cli("publish", origin.package, "1.0.0", "--channel", "latest", check=True)
    result = origin.cli("yank", origin.package, "1.2.0", "--reason", "broken build")
    assert result.returncode == 0, result.stderr
    record = releases(origin)["1.2.0"]
    assert record["yanked"] is True
    assert record["yanked_reason"] == "broken build"
    # Pilots pinned to the exact version keep working: the blob stays.
    assert (origin.store / "blobs" / "sha256" / str(record["sha256"])).is_file()
    assert channels(origin) == {"latest": "1.0.0"}


def test_publish_refuses_yanked_release(store_copy: Origin) -> None:
    origin = store_copy
    origin.cli("yank", origin.package, "1.0.0", "--reason", "broken", check=True)
    before = snapshot(origin.store)
    line = assert_one_line_error(
        origin.cli("publish", origin.package, "1.0.0", "--channel", "production"), 3)
    assert "yanked" in line
    assert snapshot(origin.store) == before


def test_sync_never_moves_latest_to_a_yanked_release(
        synced_origin: Origin, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, _ = svn_package
    origin = synced_origin
    origin.cli("yank", name, "1.0.0", "--reason", "broken", check=True)
    repo.tag(name, "1.1.0")
    origin.cli("sync", "--once", check=True)
    assert channels(origin) == {"latest": "1.2.0"}


@pytest.mark.parametrize("args", [
    ("publish", "nosuchpkg", "1.0.0", "--channel", "production"),
    ("publish", "{pkg}", "9.9.9", "--channel", "production"),
    ("publish", "{pkg}", "1.0.0", "--channel", "Production"),
    ("publish", "{pkg}", "1 0", "--channel", "production"),
    ("publish", "Bad/Pkg", "1.0.0", "--channel", "production"),
    ("yank", "nosuchpkg", "1.0.0", "--reason", "x"),
    ("yank", "{pkg}", "9.9.9", "--reason", "x"),
], ids=["publish-unknown-package", "publish-unknown-version", "publish-bad-channel",
        "publish-bad-version", "publish-bad-package", "yank-unknown-package",
        "yank-unknown-version"])
def test_unknown_or_invalid_names_are_usage_errors(store_copy: Origin,
                                                   args: tuple[str, ...]) -> None:
    origin = store_copy
    before = snapshot(origin.store)
    command = [a.format(pkg=origin.package) for a in args]
    line = assert_one_line_error(origin.cli(*command), 2)
    assert any(word in line for word in ("unknown", "no release", "invalid"))
    assert snapshot(origin.store) == before
