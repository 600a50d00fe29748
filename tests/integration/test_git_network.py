"""git over the network (DESIGN.md §6, §7): credentials never shown, every network step
bounded, a failing git package failing alone, and ``audit`` fetching recorded commits.

Real servers on loopback: ``git http-backend`` behind nginx with TLS and basic auth (the
token is the password of ``git_user``), a ``git daemon`` that speaks protocol v0 only
(refuses any commit no ref points to), and one FAKE, named as such: a socket that accepts
and never answers (a hung server). The hung sync runs with the default ``[git] timeout``
(60 s) in the background from the module's first test on, and is judged by its last one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Origin,
    SvnRepo,
    assert_one_line_error,
    cli_command,
    cli_env,
    new_package,
    run_cli,
)
from tests.harness import config as harness_config
from tests.harness.git_servers import closed_port, http_backend, silent_server, ssh_server
from tests.harness.gitrepo import FILE, GitRepo, served
from tests.harness.timing import scaled, wait_until
from tests.harness.tls import LocalCa, make_ca

pytestmark = pytest.mark.usefixtures("hung_sync")   # started first: it runs for a minute

TOKEN = "cc-token-5d1e8f0a9b7c"     # distinctive, so a search for it cannot miss
USER = "deploy"
# A pack this large at this rate takes about a second to fetch: a fetch the test can see.
BIG, RATE = 300_000, 300_000


@dataclass
class World:
    base: Path
    ca: LocalCa
    repos: Path        # every served repository (https and git daemon)
    https: str         # https://127.0.0.1:PORT (basic auth: USER / TOKEN)
    redirect: str      # https://127.0.0.1:OTHER, redirecting every request to https
    daemon: str        # git://127.0.0.1:PORT, protocol v0 only
    token: Path
    keys: Path

    def env(self) -> dict[str, str]:
        return {"GIT_SSL_CAINFO": str(self.ca.ca)}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("gitnet")
    ca = make_ca(base / "tls")
    repos = base / "repos"
    repos.mkdir()
    token = base / "token"
    token.write_text(f"{TOKEN}\n")
    token.chmod(0o600)
    keys = base / "keys"
    keys.mkdir()
    run_cli("keygen", "--secret-key", str(keys / "codecache.key"),
            "--public-key", str(keys / "codecache.pub"), check=True)
    with http_backend(repos, base / "nginx", tls=ca, users={USER: TOKEN}, rate=RATE) as https, \
            served(repos, v0_only=True) as daemon:
        yield World(base, ca, repos, https.url, https.redirect, daemon, token, keys)


def releases_repo(world: World, name: str, big: bool = False) -> tuple[GitRepo, list[str]]:
    """A repository ``name.git`` with commits c1 <- c2 on ``main``, tagged 1.0.0 and 1.1.0."""
    repo = GitRepo(world.repos / f"{name}.git")
    files: dict[str, tuple[str, bytes | str]] = {"bin/pilot.sh": (FILE, "echo 1.0.0\n")}
    if big:   # incompressible: the fetch of the pack takes BIG / RATE seconds
        files["data.bin"] = (FILE, os.urandom(BIG))
    c1 = repo.commit(repo.tree(files), time=1_700_000_000)
    files["bin/pilot.sh"] = (FILE, "echo 1.1.0\n")
    c2 = repo.commit(repo.tree(files), (c1,), time=1_700_000_100)
    repo.branch("main", c2)
    repo.tag("1.0.0", c1)
    repo.tag("1.1.0", c2, annotated=True)
    return repo, [c1, c2]


def git_origin(world: World, directory: Path, packages: list[dict[str, Any]],
               **sections: dict[str, Any]) -> Origin:
    """An origin (the module's key pair) with ``packages``; ``sections`` add config."""
    shutil.copytree(world.keys, directory / "keys")
    config = harness_config.write(directory / "codecache.toml", harness_config.build(
        role="origin", store={"path": "store"},
        signing={"secret_key": "keys/codecache.key", "trusted_keys": ["keys/codecache.pub"]},
        packages=packages, **sections))
    first = packages[0]
    return Origin(directory, config, directory / "store", directory / "keys" / "codecache.key",
                  directory / "keys" / "codecache.pub", first["name"],
                  first.get("svn_url", ""))


def releases(origin: Origin, package: str, env: dict[str, str]) -> set[str]:
    status = origin.cli("status", "--json", env=env, check=True)
    return set(json.loads(status.stdout)["packages"].get(package, {}).get("releases", {}))


# --- processes -------------------------------------------------------------------------------

def processes() -> Iterator[tuple[int, bytes, bytes]]:
    """(pid, command line, environment) of every live process readable here."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            yield int(proc.name), (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()
        except OSError:
            continue


def naming(needle: str) -> list[str]:
    """The command lines of live processes that hold ``needle``."""
    return [command.replace(b"\0", b" ").decode(errors="replace")
            for _, command, _ in processes() if needle.encode() in command]


class Watcher(threading.Thread):
    """Reads every process's command line and environment, again and again, until stopped:
    what ``ps`` (and anyone on the machine with the same uid) could see."""

    def __init__(self, secret: str) -> None:
        super().__init__(name="proc-watcher", daemon=True)
        self.secret = secret.encode()
        self.stop = threading.Event()
        self.seen: set[str] = set()      # command lines of git processes
        self.leaks: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for _, command, environ in processes():
                text = command.replace(b"\0", b" ").decode(errors="replace")
                if b"git" in command.split(b"\0")[0]:
                    self.seen.add(text)
                if self.secret in command or self.secret in environ:
                    self.leaks.append(text)
            self.stop.wait(0.01)    # a scan every ~20 ms: many during a one-second fetch


# --- the hung server (started by the module's first test) ----------------------------------

@dataclass
class Hung:
    process: subprocess.Popen[str]
    started: float
    port: int
    children: list[str]    # git's processes talking to the hung server while it hung


@pytest.fixture(scope="module")
def hung_sync(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hung]:
    """``sync --once`` with the DEFAULT config against a server that never answers."""
    with silent_server() as port:
        origin = git_origin(world, tmp_path_factory.mktemp("hung") / "origin",
                            [{"name": "hung", "git_url": f"https://127.0.0.1:{port}/p.git"}])
        assert "[git]" not in origin.config.read_text()      # the default timeout
        started = time.monotonic()
        process = subprocess.Popen(cli_command("sync", "--once", config=origin.config),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=cli_env(world.env()))
        children = wait_until(lambda: [c for c in naming(f":{port}/")
                                       if "git-remote-https" in c or "remote-https" in c],
                              scaled(30), "git's https helper connected to the hung server")
        try:
            yield Hung(process, started, port, children)
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()


# --- credentials ---------------------------------------------------------------------------

def test_a_token_reaches_the_server_and_nowhere_else(world: World, tmp_path: Path) -> None:
    releases_repo(world, "secret", big=True)
    url = f"{world.https}/secret.git"
    origin = git_origin(world, tmp_path / "origin", [
        {"name": "secret", "git_url": url, "git_token_file": world.token, "git_user": USER}])
    watcher = Watcher(TOKEN)
    watcher.start()
    try:
        result = run_cli("--debug", "sync", "--once", config=origin.config, env=world.env())
    finally:
        watcher.stop.set()
        watcher.join()
    assert result.returncode == 0, result.stderr
    assert releases(origin, "secret", world.env()) == {"1.0.0", "1.1.0"}
    # The watcher saw the fetch running (it takes about a second), and no secret in it.
    assert any(" fetch " in c and url in c for c in watcher.seen), sorted(watcher.seen)
    assert watcher.leaks == []
    assert TOKEN not in result.stdout + result.stderr
    for path in origin.dir.rglob("*"):     # the store, its index and its git cache
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_the_token_is_not_given_to_the_host_a_redirect_leads_to(world: World,
                                                                 tmp_path: Path) -> None:
    # The configured URL redirects to another host:port (the real repository, whose
    # password the token is): git asks for credentials there, and gets none.
    releases_repo(world, "redirected")
    url = f"{world.redirect}/redirected.git"
    origin = git_origin(world, tmp_path / "origin", [
        {"name": "redirected", "git_url": url, "git_token_file": world.token,
         "git_user": USER}])
    line = assert_one_line_error(origin.cli("sync", "--once", env=world.env()), 3)
    assert f"could not read Username for '{world.https}'" in line, line


def test_a_bad_token_fails_its_package_alone_and_the_next_sync_catches_up(
        world: World, svn_server: SvnRepo, tmp_path: Path) -> None:
    repo, (c1, _) = releases_repo(world, "badtoken")
    svn_name, svn_url = new_package(svn_server)
    svn_server.tag(svn_name, "1.0.0")
    token = tmp_path / "token"
    token.write_text(TOKEN)
    origin = git_origin(world, tmp_path / "origin", [
        {"name": svn_name, "svn_url": svn_url},
        {"name": "badtoken", "git_url": f"{world.https}/badtoken.git", "git_token_file": token,
         "git_user": USER}])
    repo.delete_tag("1.1.0")
    origin.cli("sync", "--once", env=world.env(), check=True)
    before = releases(origin, "badtoken", world.env())
    assert before == {"1.0.0"}
    # New releases on both sides; the git token is now wrong.
    repo.tag("1.1.0", repo.commit(repo.tree({"x": (FILE, "x\n")}), (c1,)))
    svn_server.change(svn_name, "lib/pilot/main.py", "print('1.1')\n")
    svn_server.tag(svn_name, "1.1.0")
    token.write_text("not-the-token\n")
    result = origin.cli("sync", "--once", env=world.env())
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    # One error line (the svn release's publish is logged on stderr too).
    [line] = [line for line in result.stderr.splitlines() if line.startswith("codecache: ")]
    assert line.startswith("codecache: error: ")
    assert "Authentication failed" in line and "not-the-token" not in line, line
    assert releases(origin, "badtoken", world.env()) == before          # unchanged
    assert releases(origin, svn_name, world.env()) == {"1.0.0", "1.1.0"}  # published anyway
    token.write_text(f"{TOKEN}\n")
    origin.cli("sync", "--once", env=world.env(), check=True)
    assert releases(origin, "badtoken", world.env()) == {"1.0.0", "1.1.0"}


def test_ssh_with_a_deploy_key_and_the_operators_known_hosts(world: World,
                                                              tmp_path: Path) -> None:
    releases_repo(world, "viassh")
    with ssh_server(tmp_path / "sshd") as sshd:
        url = sshd.url(world.repos / "viassh.git")
        # The operator's GIT_SSH_COMMAND (here: the server's host key) is kept; codecache
        # adds the key, BatchMode and IdentitiesOnly after it.
        env = {"GIT_SSH_COMMAND": sshd.ssh_command()}
        origin = git_origin(world, tmp_path / "origin", [
            {"name": "viassh", "git_url": url, "git_ssh_key": sshd.key}])
        origin.cli("sync", "--once", env=env, check=True)
        assert releases(origin, "viassh", env) == {"1.0.0", "1.1.0"}
        # The same with a key the server does not know: exit 3, one line, nothing published.
        other = git_origin(world, tmp_path / "other", [
            {"name": "viassh", "git_url": url, "git_ssh_key": sshd.other_key}])
        line = assert_one_line_error(other.cli("sync", "--once", env=env), 3)
        assert "Permission denied (publickey)" in line, line
        assert not (other.store / "index.json").exists()


@pytest.mark.parametrize(("keys", "message"), [
    ({"git_url": f"https://{USER}:{TOKEN}@127.0.0.1:1/p.git"}, "password"),
    ({"git_url": f"https://{TOKEN}@127.0.0.1:1/p.git"}, "user name"),
    ({"git_url": "https://127.0.0.1:1/p .git"}, "whitespace"),
    ({"git_url": "http://127.0.0.1:1/p.git", "git_token_file": "token"}, "only over https"),
], ids=["password", "token-as-user", "whitespace", "token-over-http"])
def test_a_git_url_that_would_publish_or_leak_a_secret_is_a_config_error(
        world: World, tmp_path: Path, keys: dict[str, str], message: str) -> None:
    origin = git_origin(world, tmp_path / "origin", [{"name": "p", **keys}])
    line = assert_one_line_error(origin.cli("sync", "--once"), 2)
    assert message in line and TOKEN not in line, line
    assert not origin.store.exists()


def test_an_unreachable_server_is_exit_3_in_one_line(world: World, tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{closed_port()}/p.git"
    origin = git_origin(world, tmp_path / "origin", [{"name": "p", "git_url": url}])
    line = assert_one_line_error(origin.cli("sync", "--once", env=world.env()), 3)
    assert url in line and "connect" in line, line


# --- audit -------------------------------------------------------------------------------

def audit(origin: Origin, env: dict[str, str],
          config: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("audit", config=config or origin.config, env=env)


def finding(result: subprocess.CompletedProcess[str], version: str) -> str:
    [line] = [line for line in result.stdout.splitlines() if f" {version} " in line]
    return line


def test_audit_reports_missing_the_commit_a_second_repository_lacks(
        world: World, tmp_path: Path) -> None:
    _, (_, c2) = releases_repo(world, "swapped")
    origin = git_origin(world, tmp_path / "origin", [
        {"name": "swapped", "git_url": f"{world.https}/swapped.git",
         "git_token_file": world.token, "git_user": USER}])
    origin.cli("sync", "--once", env=world.env(), check=True)
    # A second repository at the same URL: the same first commit, another 1.1.0.
    honest = world.repos / "swapped.git"
    honest.rename(world.repos / "swapped-honest.git")
    other = GitRepo(honest)
    c1 = other.commit(other.tree({"bin/pilot.sh": (FILE, "echo 1.0.0\n")}), time=1_700_000_000)
    forged = other.commit(other.tree({"bin/pilot.sh": (FILE, "echo evil\n")}), (c1,))
    other.branch("main", forged)
    other.tag("1.0.0", c1)
    other.tag("1.1.0", forged)
    result = audit(origin, world.env())
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert finding(result, "1.0.0").startswith("OK ")
    missing = finding(result, "1.1.0")
    assert missing.startswith(f"MISSING swapped 1.1.0 {world.https}/swapped.git@{c2}"), missing
    assert "no branch or tag reaches" in missing


def test_audit_finds_a_commit_whose_tag_was_deleted_through_the_refs(
        world: World, tmp_path: Path) -> None:
    # git daemon (protocol v0 only) will not hand out a commit no ref points to; the
    # https server (smart http, stateless) hands out any commit a ref reaches.
    daemon_repo, _ = releases_repo(world, "deleted-daemon")
    https_repo, _ = releases_repo(world, "deleted-https")
    packages = [{"name": "viadaemon", "git_url": f"{world.daemon}/deleted-daemon.git"},
                {"name": "viahttps", "git_url": f"{world.https}/deleted-https.git",
                 "git_token_file": world.token, "git_user": USER}]
    origin = git_origin(world, tmp_path / "origin", packages)
    origin.cli("sync", "--once", env=world.env(), check=True)
    daemon_repo.delete_tag("1.0.0")
    https_repo.delete_tag("1.0.0")
    result = audit(origin, world.env())
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "audited 4 release(s): 4 match" in result.stdout, result.stdout
    assert "without credentials" not in result.stdout
    # An auditor whose config names another URL for the package: the release is fetched
    # from the recorded URL, without credentials, and the finding says so.
    moved = dict(packages[0], git_url=f"{world.daemon}/elsewhere.git")
    auditor = git_origin(world, tmp_path / "auditor", [moved, packages[1]])
    config = auditor.config.read_text().replace('path = "store"', f'path = "{origin.store}"')
    auditor.config.write_text(config)
    result = audit(auditor, world.env())
    assert result.returncode == 0, (result.stdout, result.stderr)
    note = "fetched from the recorded URL without credentials: the configured git_url differs"
    assert note in finding(result, "viadaemon 1.0.0")
    assert note not in finding(result, "viahttps 1.0.0")


# --- the hung server: judged last, it has been hanging since the module's first test ------

def test_a_hung_server_ends_sync_once_within_two_minutes_with_no_git_left(
        hung_sync: Hung) -> None:
    process = hung_sync.process
    stdout, stderr = process.communicate(timeout=scaled(150))
    elapsed = time.monotonic() - hung_sync.started
    print(f"sync --once against a hung https server, default config: exit "
          f"{process.returncode} after {elapsed:.1f} s")
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    line = assert_one_line_error(result, 3)
    assert "no answer within 60 s" in line, line
    assert elapsed < 120               # DESIGN.md §7: within 2 minutes with the default config
    assert hung_sync.children          # git's https helper was there while it hung ...
    wait_until(lambda: not naming(f":{hung_sync.port}/"), scaled(5),
               "no process of git's left talking to the hung server")   # ... and is gone
