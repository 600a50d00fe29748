"""A git release's tarball is the commit's tree as git itself gives it (DESIGN.md §3): the
entries of ``git ls-tree -r -t`` with the bytes of ``git cat-file``, submodules left out,
``.gitattributes`` without effect, fetched from a real ``git daemon``."""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from codecache.core.config import GitConfig, PackageConfig
from codecache.origin.build import build_release
from codecache.origin.sources.git import Git
from tests.harness.gitrepo import EXECUTABLE, FILE, GITLINK, SYMLINK, GitRepo, served
from tests.integration.test_reproducible import raw_entries

SUBMODULE_COMMIT = "5" * 40
FILES: dict[str, tuple[str, bytes | str]] = {
    ".gitattributes": (FILE, b"* text=auto eol=crlf\nsecret.txt export-ignore\n"
                             b"version.txt export-subst\n*.sh eol=crlf\n"),
    ".gitmodules": (FILE, b'[submodule "vendor/lib"]\n\tpath = vendor/lib\n'
                          b"\turl = https://example.org/lib.git\n"),
    "vendor/lib": (GITLINK, SUBMODULE_COMMIT),
    "vendor/README": (FILE, b"the submodule is not archived\n"),
    "bin/pilot.sh": (EXECUTABLE, b"#!/bin/sh\necho pilot\n"),
    "run": (SYMLINK, "bin/pilot.sh"),
    "lib/up": (SYMLINK, "../.."),
    "dos.txt": (FILE, b"one\r\ntwo\r\n"),
    "unix.txt": (FILE, b"one\ntwo\n"),
    "secret.txt": (FILE, b"export-ignore has no effect\n"),
    "version.txt": (FILE, b"$Format:%H$\n"),
    "with space/na\u00efve caf\u00e9.txt": (FILE, "UTF-8 \u00e9\n".encode()),
    "lib-extra/x.py": (FILE, b"X = 1\n"),
    "lib.cfg": (FILE, b"[lib]\n"),
}
EMPTY = ("empty", "lib/nested/empty")
COMMITTED, TOP = 1_650_000_000, 1_650_000_777


@pytest.fixture(scope="module")
def served_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GitRepo, str, str]]:
    """(repo, its git:// URL, the tagged commit): the tree above, then an empty commit."""
    base = tmp_path_factory.mktemp("daemon")
    repo = GitRepo(base / "pilot.git")
    first = repo.commit(repo.tree(FILES, EMPTY), time=COMMITTED)
    top = repo.commit(repo.tree(FILES, EMPTY), (first,), time=TOP, message="empty commit")
    repo.tag("2.0", top, annotated=True)
    repo.branch("main", top)
    with served(base) as prefix:
        yield repo, f"{prefix}/pilot.git", top


def git_view(repo: GitRepo, commit: str) -> dict[str, tuple[str, int, bytes]]:
    """What git says the commit holds: path -> (kind, mode, bytes or symlink target)."""
    out = repo.git("ls-tree", "-r", "-t", "-z", "--full-tree", commit)
    view: dict[str, tuple[str, int, bytes]] = {"": ("dir", 0o755, b"")}
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, oid = meta.decode().split()
        name = path.decode()
        if kind == "tree":
            view[name] = ("dir", 0o755, b"")
        elif kind == "blob":
            data = repo.git("cat-file", "blob", oid)
            view[name] = ("link", 0o777, data) if mode == SYMLINK else \
                ("file", 0o755 if mode == EXECUTABLE else 0o644, data)
    return view


def test_the_tarball_is_the_commit_tree_as_git_gives_it(
        served_repo: tuple[GitRepo, str, str], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    repo, url, top = served_repo
    package = PackageConfig(name="pilot", git_url=url)
    git = Git(GitConfig(timeout=30), tmp_path / "caches")
    caplog.set_level(logging.INFO, logger="codecache.git")
    (tag,) = git.prepare(package, git.list_tags(package))
    assert (tag.name, tag.ref.id, tag.ref.time) == ("2.0", top, TOP)
    (tmp_path / "scratch").mkdir()
    built = build_release(git, tag.ref, "pilot", tmp_path / "scratch")

    entries = raw_entries(gzip.decompress(built.archive.read_bytes()))
    names = [e.name.rstrip("/") for e in entries]
    assert names == sorted(names, key=os.fsencode)       # byte order of the full path
    archived: dict[str, tuple[str, int, bytes]] = {}
    for e in entries:
        relative = e.name.rstrip("/").removeprefix("pilot").removeprefix("/")
        kind = {b"5": "dir", b"2": "link", b"0": "file"}[e.typeflag]
        assert e.name.endswith("/") == (kind == "dir"), e.name
        archived[relative] = (kind, e.mode, e.linkname.encode() if kind == "link" else e.data)
        assert (e.mtime, e.uid, e.gid, e.uname.strip(b"\0"), e.gname.strip(b"\0")) == \
            (TOP, 0, 0, b"", b""), e.name
    expected = git_view(repo, top)
    assert archived == expected
    # What the listing shows, and what it must: no submodule, attributes without effect.
    assert "vendor/lib" not in archived and "vendor" in archived
    assert archived["dos.txt"][2] == b"one\r\ntwo\r\n" and archived["unix.txt"][2] == b"one\ntwo\n"
    assert archived["version.txt"][2] == b"$Format:%H$\n" and "secret.txt" in archived
    assert archived["empty"] == archived["lib/nested/empty"] == ("dir", 0o755, b"")
    assert archived["bin/pilot.sh"][1] == 0o755 and archived["run"] == ("link", 0o777,
                                                                         b"bin/pilot.sh")
    assert f"submodule not archived: git={url}@{top} path=vendor/lib" in caplog.text
