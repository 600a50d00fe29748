"""The two Subversion clients (svn CLI, pysvn in a worker) build the same bytes, and pysvn
is contained: credentials on a pipe, a hang ends at the timeout, a crash is one error."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codecache.core.config import PackageConfig, SvnConfig
from codecache.core.errors import ConfigError, SvnError, SvnNotFound
from codecache.origin.build import build_release
from codecache.origin.sources.base import svn_location, svn_ref
from codecache.origin.sources.svn import Svn
from tests.conftest import SvnRepo, new_package
from tests.harness.timing import scaled
from tests.integration.test_sync_faults import AUTH_PASSWORD, AUTH_USER, auth_svn

__all__ = ["auth_svn"]  # a fixture of test_sync_faults, used here too

KEYWORDS = "Id Date Revision Author HeadURL LastChangedDate"


def package(url: str) -> PackageConfig:
    """A package whose ``svn_url`` is ``url`` (what the clients list the tags of)."""
    return PackageConfig("pilot", url)


def pysvn_workers() -> set[int]:
    """The process ids of this process's pysvn workers (its children running the worker)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue   # ended meanwhile
        if parent == os.getpid() and any(a.endswith(b"/pysvn_worker.py") for a in argv):
            found.add(int(stat.parent.name))
    return found


def one_new_worker(before: set[int]) -> int:
    new = pysvn_workers() - before
    assert len(new) == 1, new
    return new.pop()


@pytest.fixture(scope="module")
def pysvn_available() -> None:
    svn = Svn(SvnConfig(client="pysvn"))
    try:
        svn.client   # noqa: B018 - starts the worker: ConfigError if no Python has pysvn
    except ConfigError:
        if os.environ.get("CI"):
            pytest.fail("pysvn is not installed; scripts/bootstrap must install python3-svn")
        pytest.skip("pysvn is not installed (apt-get install python3-svn)")
    finally:
        svn.close()


@pytest.fixture(scope="module")
def keyword_tag(svn_server: SvnRepo) -> tuple[str, int, int]:
    """A tag whose files use every keyword, a native-eol file, an executable, a symlink, a
    non-ASCII name and names that a URL escapes: (tag URL, revision, commit time)."""
    name, url = new_package(svn_server)
    trunk = svn_server.wc / name
    (trunk / "etc" / "kw.txt").write_text("".join(f"${k}$\n" for k in KEYWORDS.split()))
    (trunk / "lib" / "pilot" / "données.py").write_bytes("X = 'é'\r\nY = 2\r\n".encode())
    (trunk / "share dir").mkdir()
    (trunk / "share dir" / "a%20b+c;d.txt").write_text("escaped in a URL\n")
    svn_server.svn("add", "-q", str(trunk / "etc" / "kw.txt"),
                   str(trunk / "lib" / "pilot" / "données.py"), str(trunk / "share dir"))
    svn_server.svn("propset", "-q", "svn:keywords", KEYWORDS, str(trunk / "etc" / "kw.txt"),
                   str(trunk / "bin" / "pilot.sh"))
    svn_server.svn("propset", "-q", "svn:eol-style", "native",
                   str(trunk / "lib" / "pilot" / "données.py"))
    svn_server.svn("commit", "-q", "-m", "keywords", str(trunk))
    svn_server.tag(name, "1.0.0")
    tag = next(t for t in Svn(SvnConfig(client="cli")).list_tags(package(url))
               if t.name == "1.0.0")
    return f"{url}/tags/1.0.0", svn_location(tag.ref)[1], tag.ref.time


def build_bytes(client: str, tag: tuple[str, int, int], scratch: Path,
                streamed: bool | None = None) -> bytes:
    """The archive ``client`` builds; ``streamed``: whether it must have been archived
    behind the export (pysvn) or after it (the svn command)."""
    url, revision, date = tag
    scratch.mkdir()
    svn = Svn(SvnConfig(client=client))
    try:
        assert svn.client == client
        built = build_release(svn, svn_ref(url, revision, date, ""), "pilot", scratch)
        if streamed is not None:
            assert built.streamed is streamed
        return built.archive.read_bytes()
    finally:
        svn.close()


def test_cli_and_pysvn_build_byte_identical_tarballs(
        pysvn_available: None, keyword_tag: tuple[str, int, int], tmp_path: Path) -> None:
    cli = build_bytes("cli", keyword_tag, tmp_path / "cli", streamed=False)
    # pysvn's export reports its listing and each finished path, and the archive is built
    # behind it: that listing (non-ASCII name, symlink, keyword files) is the exported tree.
    pysvn = build_bytes("pysvn", keyword_tag, tmp_path / "pysvn", streamed=True)
    assert cli == pysvn
    listing = subprocess.run(["tar", "xzOf", "-", "pilot/etc/kw.txt"], input=cli,
                             capture_output=True, check=True).stdout.decode()
    assert "$Date: " in listing and "+0000" in listing, listing  # expanded, in UTC
    assert "$Revision: " in listing


def test_cli_and_pysvn_list_the_same_tags(pysvn_available: None,
                                          keyword_tag: tuple[str, int, int]) -> None:
    package_url = keyword_tag[0].rsplit("/tags/", 1)[0]
    clients = [Svn(SvnConfig(client=c)) for c in ("cli", "pysvn")]
    try:
        cli, pysvn = (svn.list_tags(package(package_url)) for svn in clients)
    finally:
        for svn in clients:
            svn.close()
    assert cli == pysvn
    assert [t.name for t in cli] == ["1.0.0"]


BUILD_IN_CHILD = """
import sys
from pathlib import Path

from tests.harness.timing import scaled
from codecache.origin.build import build_release
from codecache.core.config import SvnConfig
from codecache.origin.sources.base import svn_ref
from codecache.origin.sources.svn import Svn
url, revision, date, client, scratch = sys.argv[1:]
built = build_release(Svn(SvnConfig(client=client)), svn_ref(url, int(revision), int(date), ""),
                      "pilot", Path(scratch))
sys.stdout.buffer.write(built.archive.read_bytes())
"""


@pytest.mark.parametrize("client", ["cli", "pysvn"])
def test_keyword_expansion_does_not_depend_on_the_time_zone_of_the_process(
        client: str, keyword_tag: tuple[str, int, int], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    if client == "pysvn":
        request.getfixturevalue("pysvn_available")
    url, revision, date = keyword_tag
    built = {}
    for zone in ("America/New_York", "UTC", "Asia/Kolkata"):
        scratch = tmp_path / zone.replace("/", "-")
        scratch.mkdir()
        built[zone] = subprocess.run(
            [sys.executable, "-c", BUILD_IN_CHILD, url, str(revision), str(date), client,
             str(scratch)], env={**os.environ, "TZ": zone}, capture_output=True, check=True,
            timeout=120).stdout
    assert built["America/New_York"] == built["UTC"] == built["Asia/Kolkata"]


def test_the_pysvn_worker_gets_the_password_on_its_pipe_never_argv_or_environment(
        pysvn_available: None, auth_svn: str) -> None:
    before = pysvn_workers()
    svn = Svn(SvnConfig(username=AUTH_USER, password=AUTH_PASSWORD, client="pysvn"))
    try:
        assert [t.name for t in svn.list_tags(package(auth_svn))] == ["2.0"]
        pid = one_new_worker(before)
        for what in ("cmdline", "environ"):
            assert AUTH_PASSWORD.encode() not in Path(f"/proc/{pid}/{what}").read_bytes()
    finally:
        svn.close()
    wrong = Svn(SvnConfig(username=AUTH_USER, password="wrong-guess-123",  # noqa: S106
                          client="pysvn"))
    try:
        with pytest.raises(SvnError) as caught:
            wrong.list_tags(package(auth_svn))  # refused at once: the login callback gives up
        assert "wrong-guess-123" not in str(caught.value)
    finally:
        wrong.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts and never says a word (a real hang for an svn client)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"svn://127.0.0.1:{listener.getsockname()[1]}/repo"


# Short enough to keep a hang test quick, long enough for the call after it: a restarted
# pysvn worker starting (and importing pysvn) on a loaded 2-core machine.
HANG_TIMEOUT = scaled(5.0)


def test_a_hang_in_libsvn_ends_at_the_timeout_and_the_next_call_works(
        pysvn_available: None, silent_server: str, keyword_tag: tuple[str, int, int]) -> None:
    svn = Svn(SvnConfig(timeout=HANG_TIMEOUT, client="pysvn"))
    try:
        with pytest.raises(SvnError, match="timed out"):
            svn.list_tags(package(silent_server))
        package_url = keyword_tag[0].rsplit("/tags/", 1)[0]
        assert [t.name for t in svn.list_tags(package(package_url))] == ["1.0.0"]
        with pytest.raises(SvnNotFound):
            svn.list_tags(package(package_url + "/no-such-dir"))
    finally:
        svn.close()


def test_a_crash_in_libsvn_is_one_svn_error_and_the_next_call_works(
        pysvn_available: None, silent_server: str, keyword_tag: tuple[str, int, int]) -> None:
    before = pysvn_workers()
    svn = Svn(SvnConfig(timeout=60.0, client="pysvn"))
    package_url = keyword_tag[0].rsplit("/tags/", 1)[0]
    try:
        svn.list_tags(package(package_url))  # the worker runs
        pid = one_new_worker(before)

        def crash() -> None:
            time.sleep(0.5)  # the worker is inside libsvn, waiting on the silent server
            os.kill(pid, signal.SIGSEGV)

        killer = threading.Thread(target=crash)
        killer.start()
        started = time.monotonic()
        with pytest.raises(SvnError, match="died"):
            svn.list_tags(package(silent_server))
        killer.join()
        assert time.monotonic() - started < 30  # the crash ended the call, not the timeout
        assert [t.name for t in svn.list_tags(package(package_url))] == ["1.0.0"]
        assert one_new_worker(before) != pid   # started again
    finally:
        svn.close()


def test_an_export_that_hangs_ends_at_the_timeout_while_the_archive_waits_behind_it(
        pysvn_available: None, silent_server: str, keyword_tag: tuple[str, int, int],
        tmp_path: Path) -> None:
    svn = Svn(SvnConfig(timeout=HANG_TIMEOUT, client="pysvn"))
    before = set(threading.enumerate())
    try:
        (tmp_path / "hang").mkdir()
        with pytest.raises(SvnError, match="timed out"):
            build_release(svn, svn_ref(f"{silent_server}/tags/1.0", 1, 0, ""), "pilot",
                          tmp_path / "hang")
        assert set(threading.enumerate()) == before   # no exporter or compressor left
        (tmp_path / "next").mkdir()
        url, revision, date = keyword_tag
        assert build_release(svn, svn_ref(url, revision, date, ""), "pilot",
                             tmp_path / "next").streamed
    finally:
        svn.close()
