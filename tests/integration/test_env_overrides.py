"""``CODECACHE_*`` environment variables override config keys (DESIGN.md §7)."""

from __future__ import annotations

from pathlib import Path

from codecache.core.index import parse_time
from tests.conftest import Origin, assert_one_line_error, run_cli


def test_store_path_from_the_environment_moves_the_store(origin: Origin, tmp_path: Path) -> None:
    moved = tmp_path / "moved-store"
    env = {"CODECACHE_STORE_PATH": str(moved)}
    origin.cli("sync", "--once", check=True, env=env)
    assert (moved / "index.json").is_file()
    assert not origin.store.exists()
    result = origin.cli("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert str(moved) in result.stdout
    # Without the override the configured (empty) store is used.
    assert "no index yet" in assert_one_line_error(origin.cli("status"), 3)


def test_index_expiry_from_the_environment_sets_expires(origin: Origin) -> None:
    origin.cli("sync", "--once", check=True, env={"CODECACHE_SIGNING_INDEX_EXPIRY": "2d"})
    payload = origin.status_json()
    assert parse_time(payload["expires"]) - parse_time(payload["generated"]) == 2 * 86400


def test_default_index_expiry_is_seven_days(origin: Origin) -> None:
    origin.cli("sync", "--once", check=True)
    payload = origin.status_json()
    assert parse_time(payload["expires"]) - parse_time(payload["generated"]) == 7 * 86400


def test_codecache_config_names_the_config_file(origin: Origin, tmp_path: Path) -> None:
    origin.cli("sync", "--once", check=True)
    result = run_cli("status", env={"CODECACHE_CONFIG": str(origin.config)})
    assert result.returncode == 0, result.stderr
    assert f"package {origin.package}" in result.stdout
