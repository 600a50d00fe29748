"""Shared fixtures: a real Subversion repository behind a real svnserve, keys, configs.

Nothing here is mocked: ``svnadmin`` creates the repository, ``svnserve`` serves it on a
free loopback port and the ``svn`` client commits the sample pilot tree and its tags.
In CI (``CI=true``) a missing binary fails the run; ``scripts/test`` installs them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import config as harness_config
from tests.harness.binaries import require
from tests.harness.processes import leaked_processes, mark_run
from tests.harness.svn import served_repository
from tests.harness.timing import scaled

SVN_USER, SVN_PASSWORD = "releasemgr", "not-a-real-secret"


# --- the run: leaked processes and skips ---------------------------------------------------

# A skip that CI accepts: (test id prefix, reason substring) -> why a green run without it is
# still a full run. Anything else skipped fails a CI run (``CI=true``): scripts/test installs
# every tool, so a skip there is a capability the run silently did not test.
SKIP_ALLOWED = {
    # The machine's network, not a tool: container runtimes may start without IPv6, and
    # scripts/test cannot add it. The IPv4 VIP tests still run.
    ("tests/cluster/test_vip_http.py", "no IPv6 loopback"),
    ("tests/redirect/test_redirect.py", "no IPv6 loopback"),
}
_skipped: list[pytest.TestReport] = []


# The leak reports of the pytest-xdist workers, gathered by the controller as each ends.
_worker_problems: list[str] = []


def _worker_id(config: pytest.Config) -> str | None:
    """The pytest-xdist worker's id (``gw0``) in a worker, None in the controller or alone."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    return None if workerinput is None else str(workerinput["workerid"])


def pytest_configure(config: pytest.Config) -> None:
    """Every process started from here on carries this run's mark (the leak check's)."""
    mark_run(_worker_id(config))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The per-test timeout (pyproject's ``timeout``, or a test's own ``timeout`` mark)
    scales like every other deadline."""
    if scaled(1) == 1:
        return
    configured = config.getini("timeout")
    for item in items:
        marker = item.get_closest_marker("timeout")
        seconds = marker.args[0] if marker is not None and marker.args else configured
        if seconds:
            # First among the item's marks: the one pytest-timeout reads.
            item.add_marker(pytest.mark.timeout(scaled(float(seconds))), append=False)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """(pytest-xdist controller) A worker ended: keep the leaks its own check found."""
    _worker_problems.extend(getattr(node, "workeroutput", {}).get("run_problems", []))


@pytest.hookimpl(trylast=True)  # after pytest's own teardown of the session's fixtures,
def pytest_sessionfinish(session: pytest.Session) -> None:  # which an interrupted run leaves
    """Fail the run on a process a test left alive, and (in CI) on a skip not allowed.

    Under pytest-xdist each worker checks its own processes (its mark, its basetemp) and
    hands what it found to the controller, which reports every worker's with its own
    (every skip reaches the controller's ``pytest_runtest_logreport``).
    """
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    problems: list[str] = [*_worker_problems]
    basetemp = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    leaked = leaked_processes(mark_run(), grace=scaled(5), paths=(basetemp,))
    problems += [f"process left alive (killed now): {pid} {command}"
                 for pid, command in leaked]
    if _worker_id(session.config) is not None:
        session.config.workeroutput["run_problems"] = problems  # type: ignore[attr-defined]
        return
    if os.environ.get("CI") == "true":
        problems += [f"skipped in CI: {r.nodeid}: {_skip_reason(r)}" for r in _skipped
                     if not any(r.nodeid.startswith(prefix) and text in _skip_reason(r)
                                for prefix, text in SKIP_ALLOWED)]
    if problems:
        if reporter is not None:
            reporter.write_sep("=", "the run fails its own checks", red=True)
            for line in problems:
                reporter.write_line(f"ERROR {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@dataclass
class SvnRepo:
    """A served repository plus a working copy to change it with."""

    root: Path
    url: str           # svn://127.0.0.1:PORT (repository root)
    wc: Path
    process: subprocess.Popen[bytes]
    _counter = itertools.count()

    def svn(self, *args: str) -> str:
        result = subprocess.run(
            [require("svn"), "--non-interactive", "--no-auth-cache", "--username", SVN_USER,
             "--password", SVN_PASSWORD, *args],
            capture_output=True, text=True, check=False, cwd=self.wc,
            env={**os.environ, "LC_ALL": "C.UTF-8"})
        if result.returncode != 0:
            state = "running" if self.process.poll() is None else \
                f"exited {self.process.returncode}"
            raise AssertionError(f"svn {' '.join(args)}: exit {result.returncode} "
                                 f"(svnserve {state}):\n{result.stderr}")
        return result.stdout

    def new_package(self, name: str) -> str:
        """Create ``/name/{trunk,tags}`` with the sample pilot tree; return the package URL."""
        url = f"{self.url}/{name}"
        self.svn("mkdir", "--parents", "-m", f"create {name}", f"{url}/trunk", f"{url}/tags")
        checkout = self.wc / name
        self.svn("checkout", "-q", f"{url}/trunk", str(checkout))
        write_sample_tree(checkout)
        self.svn("add", "-q", "--force", str(checkout))
        self.svn("propset", "-q", "svn:executable", "on", str(checkout / "bin" / "pilot.sh"))
        self.svn("propset", "-q", "svn:eol-style", "native", str(checkout / "etc" / "pilot.cfg"))
        self.svn("commit", "-q", "-m", "sample pilot", str(checkout))
        return url

    def change(self, package: str, relpath: str, content: str, message: str = "change") -> None:
        """Change (or add) a file in trunk and commit."""
        path = self.wc / package / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        path.write_text(content)
        if not existed:
            self.svn("add", "-q", "--parents", str(path))
        self.svn("commit", "-q", "-m", message, str(self.wc / package))
        self.svn("update", "-q", str(self.wc / package))

    def tag(self, package: str, tag: str) -> None:
        url = f"{self.url}/{package}"
        self.svn("copy", "-q", "-m", f"tag {tag}", f"{url}/trunk", f"{url}/tags/{tag}")

    def commit_to_tag(self, package: str, tag: str, relpath: str, content: str) -> None:
        """Mutate an existing tag (what release managers must not do)."""
        checkout = self.wc / f"{package}-tag-{tag}-{next(self._counter)}"
        self.svn("checkout", "-q", f"{self.url}/{package}/tags/{tag}", str(checkout))
        (checkout / relpath).write_text(content)
        self.svn("commit", "-q", "-m", f"mutate tag {tag}", str(checkout))


_random_files = itertools.count()


def commit_random_files(repo: SvnRepo, package: str, count: int, size: int) -> None:
    """Commit ``count`` incompressible files of ``size`` bytes to the package's trunk."""
    directory = repo.wc / package / "data"
    directory.mkdir(exist_ok=True)
    for _ in range(count):
        path = directory / f"blob{next(_random_files)}.bin"
        path.write_bytes(os.urandom(size))
        repo.svn("add", "-q", "--parents", str(path))
    repo.svn("commit", "-q", "-m", f"{count} random files", str(repo.wc / package))
    repo.svn("update", "-q", str(repo.wc / package))


def write_sample_tree(root: Path) -> None:
    """A small pilot: executable script, symlink, nested dirs, a native-eol file."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "lib" / "pilot" / "plugins").mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    script = root / "bin" / "pilot.sh"
    script.write_text("#!/bin/sh\n# $Id$\n"
                      "exec python3 \"$(dirname \"$0\")/../lib/pilot/main.py\"\n")
    script.chmod(0o755)
    (root / "lib" / "pilot" / "__init__.py").write_text("")
    (root / "lib" / "pilot" / "main.py").write_text("print('pilot running')\n" * 50)
    (root / "lib" / "pilot" / "plugins" / "zeta.py").write_text("Z = 1\n")
    (root / "lib" / "pilot" / "plugins" / "alpha.py").write_text("A = 1\n")
    (root / "etc" / "pilot.cfg").write_text("[pilot]\nretries = 3\n")
    (root / "run").symlink_to("bin/pilot.sh")


@pytest.fixture(scope="session")
def svn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SvnRepo]:
    require("svn")
    base = tmp_path_factory.mktemp("svn")
    with served_repository(base / "repo", anon_access="read", user=SVN_USER,
                           password=SVN_PASSWORD) as (url, process):
        wc = base / "wc"
        wc.mkdir()
        yield SvnRepo(base / "repo", url, wc, process)


_package_names = itertools.count()


def new_package(repo: SvnRepo) -> tuple[str, str]:
    """A fresh package in ``repo`` (sample tree committed, no tags yet): (name, url)."""
    name = f"pilot{next(_package_names)}"
    return name, repo.new_package(name)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory for the downloads of wget, curl or a pilot."""
    path = tmp_path / "client"
    path.mkdir()
    return path


@pytest.fixture
def svn_package(svn_server: SvnRepo) -> tuple[SvnRepo, str, str]:
    """A fresh package (own name, sample tree committed, no tags yet): (repo, name, url)."""
    return (svn_server, *new_package(svn_server))


def cli_command(*args: str, config: Path | None = None, umask: int | None = None) -> list[str]:
    """argv of the real ``codecache`` CLI; ``umask`` runs it under that umask (via sh)."""
    command = [sys.executable, "-m", "codecache"]
    if config is not None:
        command += ["--config", str(config)]
    if umask is not None:
        command = ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", *command]
    return [*command, *args]


def with_file_size_limit(command: list[str], limit: int) -> list[str]:
    """``command`` under RLIMIT_FSIZE: a write past ``limit`` bytes fails with EFBIG.

    A real write fault (like a full disk) without root: Python ignores SIGXFSZ, so the
    write returns an error instead of killing the process.
    """
    return [sys.executable, "-c",
            "import os, resource, sys; "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "os.execv(sys.argv[1], sys.argv[1:])", *command]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any ``CODECACHE_*`` variable, plus ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODECACHE_")}
    return {**environ, **(env or {})}


def run_cli(*args: str, config: Path | None = None, check: bool = False,
            env: dict[str, str] | None = None, timeout: float = 120,
            umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``codecache`` CLI in a subprocess."""
    result = subprocess.run(cli_command(*args, config=config, umask=umask),
                            capture_output=True, text=True, timeout=scaled(timeout),
                            env=cli_env(env),
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"codecache {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Origin:
    """A configured origin: keys, config file and store directory."""

    dir: Path
    config: Path
    store: Path
    secret_key: Path
    public_key: Path
    package: str
    svn_url: str

    def cli(self, *args: str, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, config=self.config, check=check, env=env)

    def status_json(self) -> dict[str, Any]:
        """The payload ``status --json`` prints (the command must succeed)."""
        result: dict[str, Any] = json.loads(self.cli("status", "--json", check=True).stdout)
        return result

    def index_bytes(self) -> bytes | None:
        """The stored ``index.json`` as bytes, None before the first sync."""
        path = self.store / "index.json"
        return path.read_bytes() if path.exists() else None


def write_config(directory: Path, package: str, svn_url: str, *, store: str = "store",
                 package_keys: dict[str, Any] | None = None,
                 **sections: dict[str, Any]) -> Path:
    """An origin's ``codecache.toml``: its store, its key pair, one package (auto channel
    ``latest``); ``sections`` add keys to a section (``sync={"interval": "1s"}``) and
    ``package_keys`` to the package."""
    signing = {"secret_key": "keys/codecache.key", "trusted_keys": ["keys/codecache.pub"],
               **sections.pop("signing", {})}
    package_table = {"name": package, "svn_url": svn_url, "auto_channel": "latest",
                     **(package_keys or {})}
    config = harness_config.build(role="origin", store={"path": store}, signing=signing,
                                  packages=[package_table], **sections)
    return harness_config.write(directory / "codecache.toml", config)


def make_origin(directory: Path, package: str, svn_url: str, *,
                keys_from: Path | None = None) -> Origin:
    """An origin directory; ``keys_from`` reuses another origin's key pair."""
    (directory / "keys").mkdir(parents=True, exist_ok=True)
    secret, public = directory / "keys" / "codecache.key", directory / "keys" / "codecache.pub"
    if keys_from is None:
        run_cli("keygen", "--secret-key", str(secret), "--public-key", str(public), check=True)
    else:
        shutil.copy2(keys_from / "keys" / "codecache.key", secret)
        shutil.copy2(keys_from / "keys" / "codecache.pub", public)
        secret.chmod(0o600)
    config = write_config(directory, package, svn_url)
    return Origin(directory, config, directory / "store", secret, public, package, svn_url)


@pytest.fixture
def origin(tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> Origin:
    """An origin for a fresh package with tags 1.0.0 and 1.2.0 (not yet synced)."""
    repo, name, url = svn_package
    tag_sample_releases(repo, name)
    return make_origin(tmp_path / "origin", name, url)


@pytest.fixture
def synced_origin(origin: Origin) -> Origin:
    """``origin`` after one successful ``sync --once`` (releases 1.0.0, 1.2.0; latest=1.2.0)."""
    origin.cli("sync", "--once", check=True)
    return origin


def snapshot(root: Path) -> dict[str, bytes | str | None]:
    """Every path below ``root``: file bytes, ``-> target`` for symlinks, None for dirs."""
    found: dict[str, bytes | str | None] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"-> {path.readlink()}"
        elif path.is_dir():
            found[key] = None
        else:
            found[key] = path.read_bytes()
    return found


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The CLI failed with ``code`` and exactly one ``codecache: error:`` line; returns it."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("codecache: error: "), lines[0]
    return lines[0]


def tag_sample_releases(repo: SvnRepo, name: str) -> None:
    """Tags 1.0.0 and (after a change to main.py) 1.2.0, as the ``origin`` fixture has them."""
    repo.tag(name, "1.0.0")
    repo.change(name, "lib/pilot/main.py", "print('pilot 1.2')\n")
    repo.tag(name, "1.2.0")


def copy_origin(template: Origin, directory: Path) -> Origin:
    """A private copy of an origin (config, keys, store); it shares the svn package."""
    shutil.copytree(template.dir, directory, symlinks=True)
    return Origin(directory, directory / template.config.name, directory / "store",
                  directory / "keys" / "codecache.key", directory / "keys" / "codecache.pub",
                  template.package, template.svn_url)


def new_origin(repo: SvnRepo, directory: Path, *, tags: tuple[str, ...] = ("1.0.0", "1.2.0"),
               keys_from: Path | None = None, package: str | None = None,
               later: bool = False) -> Origin:
    """A synced origin for a package with ``tags`` (a fresh svn package unless given).

    Each tag after the first follows a change of ``lib/pilot/main.py``, so every release
    has different bytes. ``later`` syncs at least a second after the last tag commit, so
    a channel's ``moved_at`` differs from its release's commit date.
    """
    if package is None:
        package, _ = new_package(repo)
        for n, tag in enumerate(tags):
            if n:
                repo.change(package, "lib/pilot/main.py", f"print('pilot {tag}')\n")
            repo.tag(package, tag)
    tagged = time.time()
    origin = make_origin(directory, package, f"{repo.url}/{package}", keys_from=keys_from)
    if later:
        time.sleep(max(0.0, int(tagged) + 1.05 - time.time()))
    origin.cli("sync", "--once", check=True)
    return origin


@pytest.fixture(scope="session")
def template_origin(svn_server: SvnRepo, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    """The one synced origin of the run (1.0.0, 1.2.0; ``latest`` -> 1.2.0), never changed
    or served itself: tests copy it (``copy_origin``). Its svn package is shared by every
    copy, so do not tag it. Synced a second after tagging: a channel URL's Last-Modified
    (the move) must be told apart from a release URL's (the tag's commit date).
    """
    return new_origin(svn_server, tmp_path_factory.mktemp("template") / "origin", later=True)


@pytest.fixture
def store_copy(template_origin: Origin, tmp_path: Path) -> Origin:
    """Like ``synced_origin`` but cheap: a copy of the run's template origin (do not tag
    its svn package: every copy shares it)."""
    return copy_origin(template_origin, tmp_path / "copy")
