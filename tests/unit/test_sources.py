"""Unit tests for codecache.origin.sources: choosing the Subversion client, and the one
mapping between a source reference and what the index records.

Starting pysvn is replaced by a fake starter (``Svn``'s ``start_pysvn`` seam, named as
such) that hands back a ``FakeClient``: no worker process is started here.
tests/integration/test_svn_clients.py runs both real clients.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from codecache.core.config import PackageConfig, SvnConfig
from codecache.core.errors import ConfigError
from codecache.core.index import Release
from codecache.core.pin import svn_pin
from codecache.origin.sources.base import (
    ExportProgress,
    Source,
    SourceRef,
    Tag,
    release_ref,
    svn_location,
    svn_ref,
)
from codecache.origin.sources.svn import Svn
from codecache.origin.sources.svn_access import SvnAccess, not_found, tag_of
from codecache.origin.sources.svn_cli import _error_codes

PACKAGE = PackageConfig("pilot", "svn://example.org/repo/pilot/")


class FakeClient(Source):
    """A fake client that records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def list_tags(self, package: PackageConfig) -> list[Tag]:
        self.calls.append(f"list {package.name}")
        return [tag_of(package, "1.0", 7, 1_000, "rm")]

    @property
    def reports_progress(self) -> bool:
        return True

    def export(self, ref: SourceRef, destination: Path,
               progress: ExportProgress | None = None) -> None:
        self.calls.append(f"export {ref.url}@{ref.id}")

    def close(self) -> None:
        self.calls.append("close")


class FakeStarter:
    """Stands in for ``Pysvn.start``: a ``FakeClient`` where pysvn is "found", else None."""

    def __init__(self, found: bool) -> None:
        self.found = found
        self.started: list[FakeClient] = []

    def __call__(self, access: SvnAccess) -> Source | None:
        if not self.found:
            return None
        self.started.append(FakeClient())
        return self.started[-1]


@pytest.mark.parametrize(("client", "found", "chosen"), [
    ("auto", True, "pysvn"), ("auto", False, "cli"), ("cli", True, "cli"),
    ("pysvn", True, "pysvn")])
def test_the_config_chooses_the_client(client: str, found: bool, chosen: str) -> None:
    starter = FakeStarter(found)
    svn = Svn(SvnConfig(client=client), start_pysvn=starter)
    assert svn.client == chosen
    assert svn.reports_progress is (chosen == "pysvn")   # the CLI reports no progress
    assert len(starter.started) == (chosen == "pysvn")   # "cli" never tries pysvn


def test_pysvn_forced_where_no_python_has_it_is_a_config_error() -> None:
    svn = Svn(SvnConfig(client="pysvn"), start_pysvn=FakeStarter(False))
    with pytest.raises(ConfigError, match=r"no Python with pysvn.*python3-svn"):
        svn.list_tags(PACKAGE)


def test_the_choice_waits_for_the_first_call_and_is_made_once() -> None:
    starter = FakeStarter(True)
    svn = Svn(SvnConfig(), start_pysvn=starter)
    assert starter.started == []   # constructing starts nothing (publish, audit --help...)
    [tag] = svn.list_tags(PACKAGE)
    svn.export(tag.ref, Path("/nonexistent"))
    svn.close()
    assert len(starter.started) == 1
    assert starter.started[0].calls == [
        "list pilot", "export svn://example.org/repo/pilot/tags/1.0@7", "close"]


def test_a_listed_tag_names_the_tag_url_and_its_last_changed_revision() -> None:
    [tag] = FakeClient().list_tags(PACKAGE)
    assert tag == Tag("1.0", SourceRef("svn", "svn://example.org/repo/pilot/tags/1.0", "7",
                                       1_000, "rm"))


def test_the_index_records_a_reference_as_svn_url_and_revision_and_back() -> None:
    ref = svn_ref("svn://example.org/repo/pilot/tags/1.0", 7, 1_000, "rm")
    assert svn_location(ref) == ("svn://example.org/repo/pilot/tags/1.0", 7)
    release = Release(version="1.0", sha256="a" * 64, size=1, tar_sha256="b" * 64,
                      source=svn_pin(ref.url, 7), author="rm", date=1_000, minisig="")
    assert release_ref(release) == ref
    with pytest.raises(ValueError, match="not a Subversion reference"):
        svn_location(SourceRef("git", "https://example.org/pilot.git", "c0ffee", 1_000, "rm"))


@pytest.mark.parametrize(("stderr", "codes", "missing"), [
    ("svn: E170000: URL 'svn://x/y/tags' doesn't exist\n", {170000}, True),
    ("svn: warning: W160013: ...\nsvn: E160013: Path not found\n", {160013}, True),
    ("svn: E170013: Unable to connect to a repository at URL 'svn://x'\n"
     "svn: E000111: Can't connect to host 'x': Connection refused\n", {170013, 111}, False),
    ("svn: E170000: URL 'svn://x/y' doesn't exist\nsvn: E170013: Unable to connect\n",
     {170000, 170013}, False),
    ("svn: E170001: Authorization failed\n", {170001}, False),
    ("Segmentation fault\n", set(), False),
])
def test_the_svn_command_s_errors_are_read_by_libsvn_code(stderr: str, codes: set[int],
                                                          missing: bool) -> None:
    assert _error_codes(stderr) == codes
    assert not_found(codes) is missing
