"""How git processes are configured and their failures told apart (sources.git_access):
the environment (credentials by reference only), the error mapping, the scrubbing.

The processes themselves (timeouts, process groups, a real credential exchange) are in
tests/integration/test_git_network.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from codecache.core.config import GitConfig, PackageConfig
from codecache.core.errors import GitError, GitNotFound
from codecache.origin.sources.git_access import GitAccess

TOKEN = "tok-3f9a1c77e2"
URL = "https://git.example.org:8443/pilot3.git"


def access(tmp_path: Path, url: str = URL, **keys: object) -> GitAccess:
    return GitAccess(GitConfig(timeout=60), PackageConfig("pilot3", git_url=url, **keys))


def with_token(tmp_path: Path, url: str = URL) -> GitAccess:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    return access(tmp_path, url, git_token_file=token_file, git_user="deploy")


def config_of(env: dict[str, str]) -> list[tuple[str, str]]:
    return [(env[f"GIT_CONFIG_KEY_{n}"], env[f"GIT_CONFIG_VALUE_{n}"])
            for n in range(int(env["GIT_CONFIG_COUNT"]))]


def test_no_user_config_no_prompt_and_stalls_bounded(tmp_path: Path) -> None:
    env = access(tmp_path).env()
    assert (env["GIT_CONFIG_NOSYSTEM"], env["GIT_CONFIG_GLOBAL"]) == ("1", "/dev/null")
    assert (env["GIT_TERMINAL_PROMPT"], env["GIT_ASKPASS"], env["LC_ALL"]) == ("0", "", "C")
    settings = dict(config_of(env))
    assert (settings["http.lowSpeedLimit"], settings["http.lowSpeedTime"]) == ("1", "30")
    assert settings["protocol.allow"] == "never"      # ext:: would run a command
    assert settings["protocol.https.allow"] == "always"
    assert settings["gc.auto"] == "0"                 # a detached gc would leave the group
    assert "BatchMode=yes" in env["GIT_SSH_COMMAND"]
    assert "ConnectTimeout=30" in env["GIT_SSH_COMMAND"]


def test_the_callers_environment_is_kept_but_not_its_git_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = {"GIT_SSL_CAINFO": "/etc/ca.pem", "https_proxy": "http://proxy:3128",
            "GIT_PROXY_SSL_CAINFO": "/p.pem", "HOME": "/home/x"}
    dropped = {"GIT_DIR": "/elsewhere", "GIT_TRACE_CURL": "1", "GIT_CONFIG_PARAMETERS": "'a.b'",
               "GIT_ASKPASS": "/usr/bin/ask", "SSH_ASKPASS": "/usr/bin/ask",
               "GIT_HTTP_LOW_SPEED_TIME": "9999", "LANGUAGE": "de"}
    for key, value in {**kept, **dropped}.items():
        monkeypatch.setenv(key, value)
    env = access(tmp_path).env()
    assert {k: env[k] for k in kept} == kept
    assert "GIT_DIR" not in env and "GIT_TRACE_CURL" not in env and "SSH_ASKPASS" not in env
    assert "GIT_CONFIG_PARAMETERS" not in env and "GIT_HTTP_LOW_SPEED_TIME" not in env
    assert "LANGUAGE" not in env and env["GIT_ASKPASS"] == ""


def test_the_token_reaches_git_by_a_helper_that_reads_its_file(tmp_path: Path) -> None:
    git = with_token(tmp_path)      # the helper lives as long as the access that made it
    env = git.env()
    assert all(TOKEN not in value for value in env.values())
    helpers = [v for k, v in config_of(env) if k == "credential.helper"]
    assert helpers[0] == ""                          # reset: nobody else's helper
    helper = Path(helpers[1])
    assert helper.stat().st_mode & 0o777 == 0o700
    assert helper.parent.stat().st_mode & 0o777 == 0o700
    text = helper.read_text()
    assert TOKEN not in text and str(tmp_path / "token") in text
    assert "git.example.org:8443" in text and "deploy" in text


@pytest.mark.parametrize("url", ["http://git.example.org/p.git", "ssh://git@h/p.git"])
def test_no_helper_without_https(tmp_path: Path, url: str) -> None:
    helpers = [v for k, v in config_of(with_token(tmp_path, url).env())
               if k == "credential.helper"]
    assert helpers == [""]


def test_the_ssh_key_is_named_quoted_and_the_only_one(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "my keys" / "deploy"
    env = access(tmp_path, "ssh://git@h/p.git", git_ssh_key=key).env()
    assert f"-i '{key}' -o IdentitiesOnly=yes" in env["GIT_SSH_COMMAND"]
    assert env["GIT_SSH_COMMAND"].startswith("ssh -o BatchMode=yes")
    # An operator's GIT_SSH_COMMAND (known_hosts, a jump host) comes first: ssh takes the
    # first value of an option.
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -o UserKnownHostsFile=/etc/cc/known_hosts")
    command = access(tmp_path, "ssh://git@h/p.git", git_ssh_key=key).env()["GIT_SSH_COMMAND"]
    assert command.startswith("ssh -o UserKnownHostsFile=/etc/cc/known_hosts -o BatchMode=yes")


NOT_FOUND = [
    "fatal: repository 'https://h/p.git/' not found\n",
    "fatal: '/srv/p.git' does not appear to be a git repository\nfatal: Could not read from "
    "remote repository.\n\nPlease make sure you have the correct access rights\nand the "
    "repository exists.\n",
    "fatal: couldn't find remote ref refs/tags/9.9\n",
    "fatal: remote error: upload-pack: not our ref 0123456789abcdef0123456789abcdef01234567\n",
    "error: Server does not allow request for unadvertised object 0123456789abcdef0123456789a"
    "bcdef01234567\n",
    "ERROR: Repository not found.\nfatal: Could not read from remote repository.\n",
    "fatal: remote error: access denied or repository not exported: /p.git\n",
]
FAILED = [
    "fatal: unable to access 'https://h/p.git/': Failed to connect to h port 443 after 0 ms: "
    "Couldn't connect to server\n",
    "fatal: Authentication failed for 'https://h/p.git/'\n",
    "fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused\n",
    "git@127.0.0.1: Permission denied (publickey).\nfatal: Could not read from remote "
    "repository.\n",
    "fatal: unable to access 'https://h/p.git/': server certificate verification failed.\n",
    "fatal: unable to access 'https://h/p.git/': The requested URL returned error: 403\n",
]


@pytest.mark.parametrize("stderr", NOT_FOUND)
def test_not_there_is_git_not_found(tmp_path: Path, stderr: str) -> None:
    assert type(access(tmp_path).failure("git fetch", stderr)) is GitNotFound


@pytest.mark.parametrize("stderr", FAILED)
def test_unreachable_refused_or_denied_is_a_git_error(tmp_path: Path, stderr: str) -> None:
    error = access(tmp_path).failure("git fetch", stderr)
    assert type(error) is GitError
    assert "\n" not in str(error)


def test_a_failure_is_one_line_with_the_reason_not_the_boilerplate(tmp_path: Path) -> None:
    stderr = ("Connection timed out during banner exchange\nConnection to 127.0.0.1 port 22 "
              "timed out\nfatal: Could not read from remote repository.\n\nPlease make sure "
              "you have the correct access rights\nand the repository exists.\n")
    assert str(access(tmp_path).failure("git ls-remote", stderr)) == (
        f"git ls-remote {URL}: Connection timed out during banner exchange; Connection to "
        "127.0.0.1 port 22 timed out")


def test_errors_are_scrubbed_of_the_token_and_of_passwords(tmp_path: Path) -> None:
    stderr = (f"fatal: unable to access 'https://deploy:{TOKEN}@h/p.git/': redirected to "
              f"https://u:pw@elsewhere/p.git?t={TOKEN}\n")
    text = str(with_token(tmp_path).failure("git fetch", stderr))
    assert TOKEN not in text and "pw@" not in text
    assert "https://***@h/p.git/" in text and "https://***@elsewhere" in text


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read git_token_file"), ("", "expected one token"),
    ("  \n", "expected one token"), ("two words\n", "expected one token"),
])
def test_a_token_file_that_cannot_be_a_token_fails_before_git_runs(
        tmp_path: Path, content: str | None, message: str) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    # Loopback, closed: were the check missing, git would fail otherwise, and nowhere else.
    url = "https://127.0.0.1:1/pilot3.git"
    git = access(tmp_path, url, git_token_file=token_file)
    with pytest.raises(GitError, match=message) as raised:
        git.run(["ls-remote", url], network=True)   # raised before any process starts
    assert type(raised.value) is GitError and "\n" not in str(raised.value)
