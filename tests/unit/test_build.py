"""Unit tests for codecache.origin.build: archiving behind the export gives the bytes of archiving
the finished tree, whatever the export reports.

The source here is a stand-in (a seam, named as such): its export copies a local tree and
reports as the pysvn worker does. A listing that lies, a file rewritten after it
was reported complete, or a failure halfway cannot be had on demand from a real svnserve;
tests/integration/test_svn_clients.py builds from real ones.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import threading
import time
from pathlib import Path

import pytest

from codecache.core.config import PackageConfig
from codecache.core.errors import SvnError
from codecache.core.signing import blake2b_file
from codecache.core.tarball import build_tarball, sorted_entries
from codecache.origin.build import STREAM_FROM, build_release
from codecache.origin.sources.base import ExportProgress, Source, SourceRef, Tag, svn_ref
from tests.unit.test_tarball import MTIME, make_tree

REF = svn_ref("svn://stand-in/pilot/tags/1.0", 7, MTIME, "")


class TreeSvn(Source):
    """Exports a copy of ``source`` in its listing order, reporting each path as done."""

    def __init__(self, source: Path, *, unlisted: str | None = None,
                 phantom: str | None = None, rewrite: str | None = None,
                 fail_at: str | None = None) -> None:
        self.source = source
        self.unlisted = unlisted    # exported, never listed
        self.phantom = phantom      # listed, never exported
        self.rewrite = rewrite      # rewritten after everything but the last path was reported
        self.fail_at = fail_at      # the export fails after writing this path
        self.exports = 0

    def list_tags(self, package: PackageConfig) -> list[Tag]:
        return [Tag("1.0", REF)]

    @property
    def reports_progress(self) -> bool:
        return True

    def export(self, ref: SourceRef, destination: Path,
               progress: ExportProgress | None = None) -> None:
        self.exports += 1
        progress = progress or _Unheard()
        paths = sorted_entries(self.source)
        progress.listed([p for p in paths if p != self.unlisted]
                        + ([self.phantom] if self.phantom else []))
        for n, path in enumerate(paths):
            if self.rewrite is not None and n == len(paths) - 1:
                time.sleep(1.0)   # the archive takes what it may meanwhile (not asserted)
                target = destination / self.rewrite
                target.write_bytes(target.read_bytes().upper())
            _copy(self.source / path if path else self.source,
                  destination / path if path else destination)
            progress.exported([path])
            if path == self.fail_at:
                raise SvnError("svn export failed: connection reset (stand-in)")


class _Unheard:
    def listed(self, paths: list[str]) -> None:
        pass

    def exported(self, paths: list[str]) -> None:
        pass


def _copy(source: Path, target: Path) -> None:
    if source.is_symlink():
        target.symlink_to(source.readlink())
    elif source.is_dir():
        target.mkdir()
    else:
        shutil.copy2(source, target)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "repo", reverse=False, file_mode=0o644, dir_mode=0o755,
                     exec_mode=0o755, mtime=1_000_000_000, umask=0o022)


def serial_bytes(tree: Path) -> bytes:
    out = io.BytesIO()
    build_tarball(tree, "pilot", MTIME, out)
    return out.getvalue()


def build(svn: Source, scratch: Path, expected_size: int | None = None) -> tuple[bytes, bool]:
    scratch.mkdir()
    built = build_release(svn, REF, "pilot", scratch, expected_size)
    data = built.archive.read_bytes()
    assert built.info.sha256 == hashlib.sha256(data).hexdigest()
    assert built.info.size == len(data)
    assert built.prehash == blake2b_file(io.BytesIO(data))   # hashed while written
    if built.streamed:   # each file was removed once checked; directories stay
        assert all(p.is_dir() and not p.is_symlink() for p in (scratch / "tree").rglob("*"))
    return data, built.streamed


@pytest.mark.parametrize(("expected_size", "streamed"),
                         [(None, True), (STREAM_FROM, True), (STREAM_FROM - 1, False)])
def test_only_archives_expected_to_be_large_or_of_unknown_size_are_built_behind_the_export(
        source: Path, tmp_path: Path, expected_size: int | None, streamed: bool) -> None:
    svn = TreeSvn(source)
    data, behind = build(svn, tmp_path / "s", expected_size)
    assert behind is streamed
    assert data == serial_bytes(source)
    assert svn.exports == 1


@pytest.mark.parametrize("lie", ["unlisted", "phantom"])
def test_a_listing_that_is_not_the_tree_is_archived_again_from_the_tree(
        source: Path, tmp_path: Path, lie: str) -> None:
    path = "lib/pilot/main.py" if lie == "unlisted" else "lib/pilot/ghost.py"
    svn = TreeSvn(source, **{lie: path})
    data, streamed = build(svn, tmp_path / "s")
    assert not streamed
    assert svn.exports == 2   # files were removed behind the archive: exported again
    assert data == serial_bytes(source)


def test_a_file_rewritten_after_it_was_reported_is_archived_as_it_ends_up(
        source: Path, tmp_path: Path) -> None:
    data, _ = build(TreeSvn(source, rewrite="bin/pilot.sh"), tmp_path / "s")
    target = source / "bin" / "pilot.sh"
    target.write_bytes(target.read_bytes().upper())   # what the export ends with
    assert data == serial_bytes(source)


def test_an_export_that_fails_halfway_raises_its_error_and_leaves_no_thread(
        source: Path, tmp_path: Path) -> None:
    before = set(threading.enumerate())
    (tmp_path / "s").mkdir()
    with pytest.raises(SvnError, match="connection reset"):
        build_release(TreeSvn(source, fail_at="etc"), REF, "pilot", tmp_path / "s")
    assert set(threading.enumerate()) == before
