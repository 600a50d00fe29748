"""The reference tree (DESIGN.md §3, docs/sources.md): its archive's bytes are fixed for ever,
whether the tree comes from a directory (a Subversion export) or from a git commit."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from codecache.core.config import GitConfig, PackageConfig
from codecache.core.tarball import build_tarball
from codecache.origin.build import build_release
from codecache.origin.sources.git import Git
from tests.harness import reftree
from tests.harness.gitrepo import EXECUTABLE, FILE, SYMLINK, GitRepo

DOC = Path(__file__).resolve().parents[2] / "docs" / "sources.md"
GIT_MODES = {reftree.FILE: FILE, reftree.EXECUTABLE: EXECUTABLE, reftree.SYMLINK: SYMLINK}


def test_the_reference_directory_gives_the_documented_bytes(tmp_path: Path) -> None:
    out = io.BytesIO()
    info = build_tarball(reftree.write_directory(tmp_path / "tree"), reftree.PREFIX,
                         reftree.MTIME, out)
    assert info.tar_sha256 == reftree.TAR_SHA256
    assert info.sha256 == reftree.SHA256


@pytest.mark.parametrize("annotated", [False, True])
def test_the_reference_commit_gives_the_same_bytes(tmp_path: Path, annotated: bool) -> None:
    repo = GitRepo(tmp_path / "ref.git")
    tree = repo.tree({path: (GIT_MODES[kind], data)
                      for path, (kind, data) in reftree.ENTRIES.items()},
                     reftree.EMPTY_DIRECTORIES)
    # An author time and zone that differ from the committer's: the committer time counts.
    repo.tag("1.0", repo.commit(tree, time=reftree.MTIME, author_time=12345),
             annotated=annotated)
    package = PackageConfig(name="ref", git_url=repo.url)
    git = Git(GitConfig(), tmp_path / "caches")
    (tag,) = git.prepare(package, git.list_tags(package))
    assert tag.ref.time == reftree.MTIME
    (tmp_path / "scratch").mkdir()
    built = build_release(git, tag.ref, reftree.PREFIX, tmp_path / "scratch")
    assert built.info.tar_sha256 == reftree.TAR_SHA256
    assert built.info.sha256 == reftree.SHA256


def test_the_documentation_gives_the_reference_hashes() -> None:
    section = DOC.read_text().split("## Reference tree", 1)[1].split("\n## ", 1)[0]
    assert f"`tar_sha256` (the uncompressed tar) `{reftree.TAR_SHA256}`" in section
    assert f"`{reftree.SHA256}`" in section
    for path in reftree.ENTRIES:
        if len(path) < 60:
            assert f"`{path}`" in section, path


def test_a_git_tree_exported_to_a_directory_archives_to_the_same_bytes(
        tmp_path: Path) -> None:
    # ``export`` of a tree source writes its entries as files: the directory build (the
    # Subversion path) of that export gives the reference bytes too, whatever the umask.
    repo = GitRepo(tmp_path / "ref.git")
    tree = repo.tree({path: (GIT_MODES[kind], data)
                      for path, (kind, data) in reftree.ENTRIES.items()},
                     reftree.EMPTY_DIRECTORIES)
    repo.tag("1.0", repo.commit(tree, time=reftree.MTIME))
    package = PackageConfig(name="ref", git_url=repo.url)
    git = Git(GitConfig(), tmp_path / "caches")
    (tag,) = git.prepare(package, git.list_tags(package))
    old = os.umask(0o077)
    try:
        git.export(tag.ref, tmp_path / "export")
    finally:
        os.umask(old)
    out = io.BytesIO()
    info = build_tarball(tmp_path / "export", reftree.PREFIX, reftree.MTIME, out)
    assert (info.tar_sha256, info.sha256) == (reftree.TAR_SHA256, reftree.SHA256)
