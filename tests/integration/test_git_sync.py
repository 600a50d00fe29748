"""``codecache sync --once`` with git packages (DESIGN.md §2, §3, §6), end to end through the
real CLI, a real ``git daemon`` and svnserve: a mixed store, reproducible git releases on
two origins, a refused unsafe tree, moved and deleted tags."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SvnRepo, cli_command, cli_env, new_package, run_cli
from tests.harness import config as harness_config
from tests.harness.gitrepo import AUTHOR, EXECUTABLE, FILE, SYMLINK, TREE, GitRepo, served
from tests.harness.timing import scaled

T0 = 1_700_000_000


class GitOrigin:
    """An origin directory with its own config, store and (shared or own) key pair."""

    def __init__(self, directory: Path, packages: list[dict[str, Any]], *,
                 keys_from: GitOrigin | None = None) -> None:
        self.dir = directory
        keys = directory / "keys"
        keys.mkdir(parents=True)
        if keys_from is None:
            run_cli("keygen", "--secret-key", str(keys / "codecache.key"), "--public-key",
                    str(keys / "codecache.pub"), check=True)
        else:
            shutil.copytree(keys_from.dir / "keys", keys, dirs_exist_ok=True)
        self.config = harness_config.write(directory / "codecache.toml", harness_config.build(
            role="origin", store={"path": "store"}, git={"timeout": "20s"},
            signing={"secret_key": "keys/codecache.key",
                     "trusted_keys": ["keys/codecache.pub"]},
            packages=[{"auto_channel": "latest", **p} for p in packages]))
        self.store = directory / "store"

    def cli(self, *args: str, env: dict[str, str] | None = None,
            umask: int | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_command(*args, config=self.config, umask=umask),
                              capture_output=True, text=True, env=cli_env(env),
                              timeout=scaled(120), check=False)

    def sync(self, env: dict[str, str] | None = None, umask: int | None = None) -> str:
        result = self.cli("sync", "--once", env=env, umask=umask)
        assert result.returncode == 0, (result.stdout, result.stderr)
        return result.stdout + result.stderr

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        payload: dict[str, Any] = json.loads(result.stdout)
        return payload

    def signed(self) -> dict[str, Any]:
        signed: dict[str, Any] = json.loads((self.store / "index.json").read_bytes())["signed"]
        return signed

    def files(self, sub: str) -> dict[str, bytes]:
        root = self.store / sub
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file()}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    base = tmp_path_factory.mktemp("gitd")
    with served(base) as prefix:
        yield base, prefix


def pilot_tree(repo: GitRepo, version: str, extra: dict[str, tuple[str, bytes | str]]
               | None = None) -> str:
    return repo.tree({"bin/pilot.sh": (EXECUTABLE, b"#!/bin/sh\necho pilot\n"),
                      "run": (SYMLINK, "bin/pilot.sh"),
                      "lib/main.py": (FILE, f"print('pilot {version}')\r\n".encode()),
                      **(extra or {})}, ("empty",))


@pytest.fixture(scope="module")
def gpilot(daemon: tuple[Path, str]) -> tuple[GitRepo, str]:
    """``gpilot.git`` with 1.0.0 (lightweight), 1.1.0 (annotated) and 1.2.0, whose tree
    holds ``..``; its git:// URL."""
    base, prefix = daemon
    repo = GitRepo(base / "gpilot.git")
    c1 = repo.commit(pilot_tree(repo, "1.0.0"), time=T0)
    c2 = repo.commit(pilot_tree(repo, "1.1.0"), (c1,), time=T0 + 60)
    bad_sub = repo.raw_tree([(FILE, b"..", repo.put("blob", b"escape\n"))])
    good = repo.git("cat-file", "-p", c2).split(b"\n", 1)[0].split()[1].decode()
    entries = repo.git("cat-file", "tree", good)
    c3 = repo.commit(repo.put("tree", entries + TREE.encode() + b" sub\0"
                              + bytes.fromhex(bad_sub)), (c2,), time=T0 + 120)
    repo.tag("1.0.0", c1)
    repo.tag("1.1.0", c2, annotated=True)
    repo.tag("1.2.0", c3)
    return repo, f"{prefix}/gpilot.git"


@pytest.fixture(scope="module")
def svn_pkg(svn_server: SvnRepo) -> tuple[str, str]:
    name, url = new_package(svn_server)
    svn_server.tag(name, "1.0.0")
    return name, url


def test_a_mixed_store_publishes_both_and_two_origins_agree_byte_for_byte(
        tmp_path: Path, gpilot: tuple[GitRepo, str], svn_pkg: tuple[str, str]) -> None:
    repo, url = gpilot
    svn_name, svn_url = svn_pkg
    packages = [{"name": svn_name, "svn_url": svn_url}, {"name": "gpilot", "git_url": url}]
    first = GitOrigin(tmp_path / "a", packages)
    out = first.sync(env={"TZ": "UTC"}, umask=0o022)
    assert f"published {svn_name} 1.0.0" in out
    assert "published gpilot 1.0.0" in out and "published gpilot 1.1.0" in out
    assert "published gpilot 1.2.0" not in out

    signed = first.signed()
    assert signed["format"] == 2
    releases = signed["packages"]["gpilot"]["releases"]
    assert sorted(releases) == ["1.0.0", "1.1.0"]           # 1.2.0 refused
    c2 = repo.git("rev-parse", "1.1.0^{commit}").decode().strip()
    record = releases["1.1.0"]
    assert (record["git_url"], record["commit"], record["author"]) == (url, c2, AUTHOR)
    assert "svn_url" not in record and "revision" not in record
    assert record["date"] == "2023-11-14T22:14:20Z"           # the committer time
    assert f"git={url}@{c2}" in record["minisig"]
    assert signed["packages"]["gpilot"]["channels"]["latest"]["version"] == "1.1.0"
    (refused,) = first.status()["refused_tags"]
    assert (refused["package"], refused["version"], refused["code"]) == \
        ("gpilot", "1.2.0", "unsafe_tree")
    assert (first.store / "git" / "gpilot.git").is_dir()

    # Another origin, another time zone and umask, the same keys: the same bytes.
    second = GitOrigin(tmp_path / "b", packages, keys_from=first)
    second.sync(env={"TZ": "America/St_Johns"}, umask=0o077)
    assert second.files("blobs") == first.files("blobs")
    assert second.files("signatures") == first.files("signatures")
    for name in (svn_name, "gpilot"):
        assert second.signed()["packages"][name]["releases"] == \
            signed["packages"][name]["releases"]

    # A store of the Subversion package alone stays format 1, its records unchanged.
    alone = GitOrigin(tmp_path / "c", packages[:1], keys_from=first)
    alone.sync()
    assert alone.signed()["format"] == 1
    assert alone.signed()["packages"][svn_name]["releases"] == \
        signed["packages"][svn_name]["releases"]


def test_moved_tags_are_reported_not_republished_and_a_deleted_tag_stays(
        tmp_path: Path, daemon: tuple[Path, str]) -> None:
    base, prefix = daemon
    repo = GitRepo(base / "moving.git")
    c1 = repo.commit(pilot_tree(repo, "c1"), time=T0)
    c2 = repo.commit(pilot_tree(repo, "c2"), (c1,), time=T0 + 1)
    c3 = repo.commit(pilot_tree(repo, "c3"), (c2,), time=T0 + 2)
    repo.tag("3.0.0", c1)                        # lightweight, will move
    repo.tag("3.1.0", c1, annotated=True)        # annotated, will move
    repo.tag("3.2.0", c2, annotated=True)        # annotated, re-created on the same commit
    repo.tag("3.3.0", c2)                        # will be deleted
    origin = GitOrigin(tmp_path / "m", [{"name": "moving", "git_url": f"{prefix}/moving.git"}])
    origin.sync()
    index_before = (origin.store / "index.json").read_bytes()
    releases = origin.signed()["packages"]["moving"]["releases"]
    blobs = origin.files("blobs")

    repo.tag("3.0.0", c3)
    repo.tag("3.1.0", c3, annotated=True, time=T0 + 100)
    old_tag = repo.git("rev-parse", "3.2.0").decode().strip()
    assert repo.tag("3.2.0", c2, annotated=True, time=T0 + 200) != old_tag
    repo.delete_tag("3.3.0")
    out = origin.sync()
    assert "MUTATED moving 3.0.0" in out and "MUTATED moving 3.1.0" in out
    assert "MUTATED moving 3.2.0" not in out and "MUTATED moving 3.3.0" not in out
    assert out.count("MUTATED TAG") == 2                     # logged, each once
    assert origin.signed()["packages"]["moving"]["releases"] == releases   # 3.3.0 stays
    assert origin.files("blobs") == blobs
    mutated = {m["version"]: m for m in origin.status()["mutated_tags"]}
    assert sorted(mutated) == ["3.0.0", "3.1.0"]
    assert (mutated["3.0.0"]["published_commit"], mutated["3.0.0"]["current_commit"]) == (c1, c3)
    assert (mutated["3.1.0"]["published_commit"], mutated["3.1.0"]["current_commit"]) == (c1, c3)
    text = origin.cli("status").stdout
    assert "3.0.0" in text.split("WARNING", 1)[1] and "3.1.0" in text.split("WARNING", 1)[1]
    # Reported once: the next pass changes nothing (a re-sign aside).
    again = origin.sync()
    assert "MUTATED TAG" not in again
    assert origin.signed()["packages"] == json.loads(index_before)["signed"]["packages"]
    assert (origin.store / "git" / "moving.git").is_dir()
