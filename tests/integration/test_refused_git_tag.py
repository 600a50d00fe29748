"""A git tag whose tree is unsafe to extract is refused, shown by ``status`` and ``check``
until the tag names a tree that builds (DESIGN.md §3).

Real parts: a bare repository written by ``tests/harness/gitrepo.py`` (its crafted tree
holds an entry named ``..``, which no git porcelain makes), read over ``file://`` by the
real ``codecache sync --once``; ``status`` and ``check`` are the real commands.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.harness import config as harness_config
from tests.harness.gitrepo import FILE, TIME, GitRepo


def test_an_unsafe_git_tree_is_refused_until_the_tag_moves_to_a_safe_one(
        tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "pilot.git")
    readme = repo.put("blob", b"pilot\n")
    good = repo.commit(repo.tree({"README": (FILE, "pilot\n")}))
    bad = repo.commit(repo.raw_tree([(FILE, b"..", readme), (FILE, b"README", readme)]),
                      (good,), time=TIME + 60)
    repo.tag("1.0.0", good)
    repo.tag("2.0.0", bad, annotated=True)
    keys = tmp_path / "keys"
    keys.mkdir()
    run_cli("keygen", "--secret-key", str(keys / "codecache.key"), "--public-key",
            str(keys / "codecache.pub"), check=True)
    config = harness_config.write(tmp_path / "codecache.toml", harness_config.build(
        role="origin", store={"path": "store"},
        signing={"secret_key": "keys/codecache.key", "trusted_keys": ["keys/codecache.pub"]},
        packages=[{"name": "pilot", "git_url": repo.url, "auto_channel": "latest"}]))

    sync = run_cli("sync", "--once", config=config)
    assert sync.returncode == 0, sync.stderr      # a refusal is no failure of the pass
    assert "published pilot 1.0.0" in sync.stdout
    assert "tag not published package=pilot tag='2.0.0'" in sync.stderr
    payload = json.loads(run_cli("status", "--json", config=config, check=True).stdout)
    assert sorted(payload["packages"]["pilot"]["releases"]) == ["1.0.0"]
    (refused,) = payload["refused_tags"]
    assert (refused["version"], refused["code"], refused["source"]) == \
        ("2.0.0", "unsafe_tree", f"git={repo.url}@{bad}")
    assert "'..'" in refused["reason"]
    assert f"WARNING: tag pilot 2.0.0 refused since {refused['refused_at']}" in \
        run_cli("status", config=config, check=True).stdout
    check = run_cli("check", "--no-upstream", config=config)
    assert check.returncode == 1 and "1 refused tag(s): pilot 2.0.0" in check.stdout

    # Seen again: still refused, logged once (the log does not fill every pass).
    again = run_cli("sync", "--once", config=config)
    assert again.returncode == 0 and "tag not published" not in again.stderr
    # The release manager moves the tag to a safe tree: published, the refusal settled.
    fixed = repo.commit(repo.tree({"README": (FILE, "pilot 2\n")}), (bad,), time=TIME + 120)
    repo.tag("2.0.0", fixed, annotated=True)
    assert "published pilot 2.0.0" in run_cli("sync", "--once", config=config,
                                              check=True).stdout
    payload = json.loads(run_cli("status", "--json", config=config, check=True).stdout)
    assert payload["refused_tags"] == []
    assert payload["packages"]["pilot"]["releases"]["2.0.0"]["commit"] == fixed
    assert run_cli("check", "--no-upstream", config=config).returncode == 0
