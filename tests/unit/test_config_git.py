"""Unit tests for the git side of the config (core/config_git.py, DESIGN.md §7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codecache.core.config import Config, load_config
from codecache.core.errors import ConfigError

HEAD = """\
role = "origin"
[store]
path = "store"
[signing]
secret_key = "keys/codecache.key"
trusted_keys = ["keys/codecache.pub"]
"""


def load(tmp_path: Path, package: str, extra: str = "", env: dict[str, str] | None = None,
         ) -> Config:
    path = tmp_path / "conf" / "codecache.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + extra + "[[packages]]\nname = \"pilot3\"\n" + package)
    return load_config(path, env=env or {})


@pytest.mark.parametrize("url", [
    "https://git.example.org/pilot3.git", "http://127.0.0.1:8080/pilot3.git",
    "ssh://git@git.example.org:2222/pilot3.git", "git://git.example.org/pilot3.git",
    "file:///srv/git/pilot3.git", "https://[::1]:8443/x/pilot3",
])
def test_accepted_git_urls_are_kept_exactly_as_written(tmp_path: Path, url: str) -> None:
    config = load(tmp_path, f'git_url = "{url}"\n')
    [pkg] = config.packages
    assert (pkg.kind, pkg.git_url, pkg.svn_url, pkg.git_user) == ("git", url, "", "git")


@pytest.mark.parametrize(("url", "message"), [
    ("https://user:secret@git.example.org/p.git", "password"),
    ("https://:secret@git.example.org/p.git", "password"),
    ("https://ghp_0123456789abcdef@github.com/p.git", "user name in a https"),
    ("http://deploy@git.example.org/p.git", "user name in a http"),
    ("git://anon@git.example.org/p.git", "user name in a git"),
    ("https://git.example.org/p .git", "whitespace"),
    ("https://git.example.org/p.git\n", "whitespace"),
    ("git@git.example.org:pilot3.git", "scp-like"),
    ("ftp://git.example.org/p.git", "scheme"),
    ("svn://git.example.org/p.git", "scheme"),
    ("file://host/srv/p.git", "file:///"),
    ("https:///p.git", "host"),
    ("https://git.example.org", "host"),
])
def test_a_bad_git_url_is_a_config_error(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, f"git_url = {json.dumps(url)}\n")   # a TOML basic string


def test_exactly_one_source_per_package(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of svn_url and git_url"):
        load(tmp_path, 'git_url = "https://h/p.git"\nsvn_url = "svn://h/p"\n')
    with pytest.raises(ConfigError, match="exactly one of svn_url and git_url"):
        load(tmp_path, 'tag_pattern = ".*"\n')
    with pytest.raises(ConfigError, match="only for a git package"):
        load(tmp_path, 'svn_url = "svn://h/p"\ngit_user = "x"\n')


def test_credentials_only_where_they_are_safe(tmp_path: Path) -> None:
    config = load(tmp_path, 'git_url = "https://h/p.git"\ngit_token_file = "t"\n'
                            'git_user = "ci-bot"\n')
    [pkg] = config.packages
    assert pkg.git_token_file == tmp_path / "conf" / "t"
    assert pkg.git_user == "ci-bot"
    with pytest.raises(ConfigError, match="only over https"):
        load(tmp_path, 'git_url = "http://h/p.git"\ngit_token_file = "t"\n')
    with pytest.raises(ConfigError, match="only with ssh"):
        load(tmp_path, 'git_url = "https://h/p.git"\ngit_ssh_key = "k"\n')
    ssh = load(tmp_path, 'git_url = "ssh://git@h/p.git"\ngit_ssh_key = "/k/deploy"\n')
    assert ssh.packages[0].git_ssh_key == Path("/k/deploy")


def test_git_timeout_defaults_to_a_minute_and_takes_the_environment(tmp_path: Path) -> None:
    package = 'git_url = "https://h/p.git"\n'
    assert load(tmp_path, package).git.timeout == 60.0
    assert load(tmp_path, package, '[git]\ntimeout = "5m"\n').git.timeout == 300.0
    env = {"CODECACHE_GIT_TIMEOUT": "10s"}
    assert load(tmp_path, package, env=env).git.timeout == 10.0
    with pytest.raises(ConfigError, match="unknown"):
        load(tmp_path, package, '[git]\ntimout = "5m"\n')
