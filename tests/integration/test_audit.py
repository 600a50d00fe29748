"""``codecache audit``: rebuild every release from its ``svn URL@REV`` and compare (real svnserve).

The module has a Subversion server of its own, so the "compromised origin" case can be
made real: a second repository with the same layout and revision numbers, whose tag
``1.2.0`` holds other content, is put in the place the svnserve serves (svnserve opens the
repository per connection), so the recorded ``svn://…/tags/1.2.0@REV`` now answers with
bytes that were never signed. The auditor's config holds only the public key, and the
store it reads is made read-only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    Origin,
    assert_one_line_error,
    make_origin,
    require,
    run_cli,
    write_sample_tree,
)
from tests.harness import config as harness_config
from tests.harness.timing import free_port, wait_for_port
from tests.http.helpers import running

PACKAGE = "auditpilot"
# Both Subversion clients (svn.client): pysvn where found (the default), and the svn command.
CLIENTS = [{}, {"CODECACHE_SVN_CLIENT": "cli"}]


def _svn(*args: str, cwd: Path) -> None:
    subprocess.run([require("svn"), "--non-interactive", *args], check=True, cwd=cwd,
                   capture_output=True, env={**os.environ, "LC_ALL": "C.UTF-8"})


def populate(repo: Path, work: Path, main_py_of_1_2: str) -> None:
    """A repository with the package, tags 1.0.0 (r3) and 1.2.0 (r5), through file:// URLs.

    The same steps give the same revision numbers in every repository made with it.
    """
    subprocess.run([require("svnadmin"), "create", str(repo)], check=True)
    url = f"file://{repo}/{PACKAGE}"
    work.mkdir(parents=True)
    _svn("mkdir", "-q", "--parents", "-m", "create", f"{url}/trunk", f"{url}/tags", cwd=work)
    _svn("checkout", "-q", f"{url}/trunk", "wc", cwd=work)
    wc = work / "wc"
    write_sample_tree(wc)
    _svn("add", "-q", "--force", ".", cwd=wc)
    _svn("propset", "-q", "svn:executable", "on", "bin/pilot.sh", cwd=wc)
    _svn("commit", "-q", "-m", "sample pilot", cwd=wc)
    _svn("copy", "-q", "-m", "tag 1.0.0", f"{url}/trunk", f"{url}/tags/1.0.0", cwd=work)
    (wc / "lib" / "pilot" / "main.py").write_text(main_py_of_1_2)
    _svn("commit", "-q", "-m", "1.2", cwd=wc)
    _svn("copy", "-q", "-m", "tag 1.2.0", f"{url}/trunk", f"{url}/tags/1.2.0", cwd=work)


@dataclass
class AuditSite:
    served: Path          # the directory svnserve serves (a repository)
    evil: Path            # same layout and revisions, other content in tag 1.2.0
    honest: Path          # where the honest repository waits while the evil one is served
    origin: Origin
    auditor: Path         # config: trusted public key, the origin's store; no secret key
    svnserve: subprocess.Popen[bytes]

    @contextlib.contextmanager
    def evil_served(self) -> Iterator[None]:
        self.served.rename(self.honest)
        self.evil.rename(self.served)
        try:
            yield
        finally:
            self.served.rename(self.evil)
            self.honest.rename(self.served)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditSite]:
    base = tmp_path_factory.mktemp("audit")
    populate(base / "served", base / "work-honest", "print('pilot 1.2')\n")
    populate(base / "evil", base / "work-evil", "import os; os.system('steal')\n")
    (base / "served" / "conf" / "svnserve.conf").write_text("[general]\nanon-access = read\n")
    (base / "evil" / "conf" / "svnserve.conf").write_text("[general]\nanon-access = read\n")
    port = free_port()
    svnserve = subprocess.Popen(
        [require("svnserve"), "--daemon", "--foreground", "--listen-host", "127.0.0.1",
         "--listen-port", str(port), "--root", str(base / "served")])
    try:
        wait_for_port(port)
        origin = make_origin(base / "origin", PACKAGE, f"svn://127.0.0.1:{port}/{PACKAGE}")
        origin.cli("sync", "--once", check=True)
        auditor = base / "auditor"
        auditor.mkdir()
        shutil.copy(origin.public_key, auditor / "origin.pub")
        harness_config.write(auditor / "codecache.toml", harness_config.build(
            store={"path": origin.store}, signing={"trusted_keys": ["origin.pub"]},
            packages=[{"name": PACKAGE, "svn_url": f"svn://127.0.0.1:{port}/{PACKAGE}"}]))
        yield AuditSite(base / "served", base / "evil", base / "honest", origin,
                        auditor / "codecache.toml", svnserve)
    finally:
        svnserve.terminate()
        svnserve.wait(timeout=10)


@contextlib.contextmanager
def read_only(tree: Path) -> Iterator[None]:
    """The store cannot be written while the audit runs (it needs no store write)."""
    paths = [tree, *tree.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths if not p.is_symlink()}
    for p, mode in modes.items():
        p.chmod(stat.S_IMODE(mode) & ~0o222)
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(stat.S_IMODE(mode))


def test_audit_passes_on_an_honest_store(site: AuditSite) -> None:
    with read_only(site.origin.store):
        result = run_cli("audit", config=site.auditor)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"OK {PACKAGE} 1.0.0 svn://") for line in lines), lines
    assert any(line.startswith(f"OK {PACKAGE} 1.2.0 svn://") for line in lines), lines
    assert "audited 2 release(s): 2 match their source" in result.stdout
    assert result.stderr.count("codecache: error") == 0


def test_audit_of_one_release_and_bad_selections(site: AuditSite) -> None:
    result = run_cli("audit", "--package", PACKAGE, "--version", "1.0.0", config=site.auditor)
    assert result.returncode == 0, result.stderr
    assert "audited 1 release(s)" in result.stdout and "1.2.0" not in result.stdout
    assert "release" in assert_one_line_error(
        run_cli("audit", "--package", PACKAGE, "--version", "9.9", config=site.auditor), 2)
    assert "nope" in assert_one_line_error(
        run_cli("audit", "--package", "nope", config=site.auditor), 2)
    assert "--package" in assert_one_line_error(
        run_cli("audit", "--version", "1.0.0", config=site.auditor), 2)


def test_audit_of_a_served_index_by_url(site: AuditSite, tmp_path: Path) -> None:
    # Anyone with the public key: a config without any store of its own.
    config = tmp_path / "codecache.toml"
    shutil.copy(site.auditor.parent / "origin.pub", tmp_path / "origin.pub")
    harness_config.write(config, harness_config.build(
        store={"path": "nostore"}, signing={"trusted_keys": ["origin.pub"]}))
    with running(site.origin) as server:
        result = run_cli("audit", "--url", server.base, config=config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "audited 2 release(s): 2 match" in result.stdout
        with site.evil_served():
            result = run_cli("audit", "--url", server.base + "/", config=config)
        assert result.returncode == 1, result.stdout + result.stderr
    assert not (tmp_path / "nostore").exists()
    # Trusting another key, the served index itself is refused (exit 1, nothing rebuilt).
    (tmp_path / "origin.pub").unlink()
    run_cli("keygen", "--secret-key", str(tmp_path / "other.key"), "--public-key",
            str(tmp_path / "origin.pub"), check=True)
    with running(site.origin) as server:
        line = assert_one_line_error(run_cli("audit", "--url", server.base, config=config), 1)
    assert "signature" in line


def test_audit_refuses_a_rolled_back_local_index(site: AuditSite, tmp_path: Path) -> None:
    # A copy of the origin (its own store), moved on one serial, then its older index.json
    # put back: validly signed, but below the serial the store accepted (DESIGN.md §5).
    origin = tmp_path / "origin"
    shutil.copytree(site.origin.dir, origin)
    config = origin / "codecache.toml"
    old = (origin / "store" / "index.json").read_bytes()
    run_cli("publish", PACKAGE, "1.0.0", "--channel", "production", config=config, check=True)
    (origin / "store" / "index.json").write_bytes(old)
    result = run_cli("audit", config=config)
    line = assert_one_line_error(result, 1)
    assert "older than the" in line and "already accepted" in line, line
    assert "auditing" not in result.stdout   # refused before anything is rebuilt


@pytest.mark.parametrize("client", CLIENTS, ids=["default", "cli"])
def test_audit_names_the_release_whose_svn_content_differs_from_what_was_signed(
        site: AuditSite, client: dict[str, str]) -> None:
    with site.evil_served(), read_only(site.origin.store):
        result = run_cli("audit", config=site.auditor, env=client)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"OK {PACKAGE} 1.0.0 ") for line in lines), lines
    mismatch = [line for line in lines if line.startswith(f"MISMATCH {PACKAGE} 1.2.0 ")]
    assert len(mismatch) == 1 and "tar_sha256 signed" in mismatch[0], lines
    error = assert_one_line_error(result, 1)
    assert f"{PACKAGE} 1.2.0" in error and "1.0.0" not in error


@pytest.mark.parametrize("client", CLIENTS, ids=["default", "cli"])
def test_a_tag_missing_from_svn_is_a_mismatch_not_an_outage(
        site: AuditSite, tmp_path: Path, client: dict[str, str]) -> None:
    # An empty repository at the same URL: the recorded path does not exist there.
    empty = tmp_path / "empty"
    subprocess.run([require("svnadmin"), "create", str(empty)], check=True)
    (empty / "conf" / "svnserve.conf").write_text("[general]\nanon-access = read\n")
    site.served.rename(site.honest)
    empty.rename(site.served)
    try:
        result = run_cli("audit", config=site.auditor, env=client)
    finally:
        site.served.rename(empty)
        site.honest.rename(site.served)
    assert result.returncode == 1, result.stdout + result.stderr
    assert sum(line.startswith("MISSING ") for line in result.stdout.splitlines()) == 2
    assert "2 release(s) do not match" in assert_one_line_error(result, 1)


def test_audit_exits_3_when_subversion_cannot_be_reached(site: AuditSite) -> None:
    # Last in the module: it stops the svnserve.
    site.svnserve.terminate()
    site.svnserve.wait(timeout=10)
    for client in CLIENTS:
        line = assert_one_line_error(run_cli("audit", config=site.auditor, env=client), 3)
        assert "connect" in line.lower(), client
