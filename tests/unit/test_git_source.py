"""The git source against real repositories (``file://``, git's own files): tags listed and
peeled, commits fetched into the cache, trees refused where they are unsafe to extract, and
a cache left broken by a kill -9 made again (DESIGN.md §2, §3)."""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

import pytest

from codecache.core.config import GitConfig, PackageConfig
from codecache.core.errors import GitError, GitNotFound, UnsafeTree
from codecache.origin.build import build_release
from codecache.origin.sources.base import SourceRef, Tag
from codecache.origin.sources.git import Git, parse_ls_remote
from tests.harness.gitrepo import AUTHOR, FILE, SYMLINK, TREE, GitRepo

COMMIT_A, COMMIT_B, TAG_OBJECT = "a" * 40, "b" * 40, "c" * 40


def test_ls_remote_output_gives_each_tag_peeled_to_what_it_names() -> None:
    out = (f"{COMMIT_A}\tHEAD\n{COMMIT_A}\trefs/heads/main\n"
           f"{TAG_OBJECT}\trefs/tags/2.0\n{COMMIT_B}\trefs/tags/2.0^{{}}\n"
           f"{COMMIT_A}\trefs/tags/1.0\n").encode()
    tags = {t.name: t.ref for t in parse_ls_remote("git://h/r.git", out)}
    assert tags == {"2.0": SourceRef("git", "git://h/r.git", COMMIT_B, 0, ""),
                    "1.0": SourceRef("git", "git://h/r.git", COMMIT_A, 0, "")}


def test_ls_remote_garbage_is_an_error() -> None:
    with pytest.raises(GitError, match="unexpected output"):
        parse_ls_remote("git://h/r.git", b"<html>not git</html>\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    return GitRepo(tmp_path_factory.mktemp("git") / "source.git")


def source_of(repo: GitRepo, caches: Path) -> tuple[Git, PackageConfig]:
    package = PackageConfig(name="pilot", git_url=repo.url)
    return Git(GitConfig(timeout=20), caches), package


def test_tags_are_listed_peeled_and_prepared_with_committer_time_and_author(
        repo: GitRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tree = repo.tree({"a.txt": (FILE, b"a\n")})
    commit = repo.commit(tree, time=1_600_000_000, author="Ann Author <ann@example.org>",
                         author_time=1_500_000_000)
    repo.tag("p1.0", commit)
    repo.tag("p1.1", commit, annotated=True)
    repo.tag("p-tree", tree, annotated=True, kind="tree")   # peels to a tree
    repo.tag("p-blob", repo.put("blob", b"x"))               # a lightweight tag of a blob
    git, package = source_of(repo, tmp_path / "caches")
    listed = {t.name: t for t in git.list_tags(package) if t.name.startswith("p")}
    assert {n: t.ref.id for n, t in listed.items()}["p1.1"] == commit
    assert listed["p-tree"].ref.id == tree
    caplog.set_level(logging.WARNING, logger="codecache.git")
    ready = git.prepare(package, sorted(listed.values(), key=lambda t: t.name))
    assert [(t.name, t.ref.id, t.ref.time, t.ref.author) for t in ready] == [
        ("p1.0", commit, 1_600_000_000, "Ann Author <ann@example.org>"),
        ("p1.1", commit, 1_600_000_000, "Ann Author <ann@example.org>")]
    skipped = sorted(r.getMessage() for r in caplog.records)
    assert len(skipped) == 2
    assert "tag='p-blob': it names a blob, not a commit" in skipped[0]
    assert "tag='p-tree': it names a tree, not a commit" in skipped[1]
    # Two tags of one commit: each builds.
    for n, ready_tag in enumerate(ready):
        (tmp_path / f"s{n}").mkdir()
        build_release(git, ready_tag.ref, "p", tmp_path / f"s{n}")
    # Warned once per process: the tag is new again at every pass.
    caplog.clear()
    git.prepare(package, [listed["p-tree"]])
    assert not caplog.records


def tree_with(repo: GitRepo, name: bytes, kind: str) -> str:
    """A commit whose tree holds ``ok.txt`` and, in ``sub/``, ``fine.txt`` and the entry
    ``name``: a file, a directory (holding a hook script), a file twice, or a symlink."""
    blob = repo.put("blob", b"payload\n")
    hook = repo.raw_tree([(FILE, b"post-checkout", repo.put("blob", b"#!/bin/sh\n"))])
    entry = {"file": [(FILE, name, blob)], "dir": [(TREE, name, hook)],
             "twice": [(FILE, name, blob)] * 2, "link": [(SYMLINK, name, blob)]}[kind]
    sub = repo.raw_tree([(FILE, b"fine.txt", blob), *entry])
    return repo.commit(repo.raw_tree([(FILE, b"ok.txt", blob), (TREE, b"sub", sub)]))


def build(git: Git, url: str, commit: str, scratch: Path) -> None:
    """Prepare the commit (as the sync does) and build it."""
    (ready,) = git.prepare(PackageConfig(name="pilot", git_url=url), [tag("b", url, commit)])
    assert ready.ref == SourceRef("git", url, commit, 1_700_000_000, AUTHOR)
    scratch.mkdir()
    build_release(git, ready.ref, "p", scratch)


# (An empty name, or a tree entry that is a blob, cannot be had: git's pack-objects refuses
# to send such a tree.)
@pytest.mark.parametrize(("name", "kind", "reason"), [
    (b"..", "file", "unsafe to extract"),
    (b".", "dir", "unsafe to extract"),
    (b".git", "dir", "unsafe to extract"),
    (b".GiT", "file", "unsafe to extract"),     # .git on a case-insensitive file system
    (b"a/../../b", "file", "unsafe to extract"),
    (b"caf\xe9", "file", "not UTF-8"),
    (b"twice.txt", "twice", "appears twice"),
    (b"run", "link", None),                    # the control: a safe tree builds
    (b".gitignore", "file", None),
])
def test_a_tree_with_an_unsafe_entry_is_refused(
        repo: GitRepo, tmp_path: Path, name: bytes, kind: str, reason: str | None) -> None:
    commit = tree_with(repo, name, kind)
    git, _ = source_of(repo, tmp_path / "caches")
    if reason is None:
        build(git, repo.url, commit, tmp_path / "scratch")
        return
    with pytest.raises(UnsafeTree, match=reason):
        build(git, repo.url, commit, tmp_path / "scratch")
    assert not (tmp_path / "scratch" / "archive.tar.gz").exists()   # refused before a byte


@pytest.mark.parametrize(("target", "reason"), [
    (b"caf\xe9", "not UTF-8"), (b"a\0b", "a NUL"), (b"x/" * 2048, "a target of 4096 bytes")])
def test_a_symlink_with_an_unsafe_target_is_refused(
        repo: GitRepo, tmp_path: Path, target: bytes, reason: str) -> None:
    # Found while archiving, with more blobs asked for than the pipe holds: the cat-file
    # process and its feeder end with the refusal.
    files = [(FILE, f"a{n}".encode(), repo.put("blob", bytes([n]) * 70_000)) for n in range(9)]
    link = (SYMLINK, b"0link", repo.put("blob", target))
    commit = repo.commit(repo.raw_tree([link, *files]))
    git, _ = source_of(repo, tmp_path / "caches")
    with pytest.raises(UnsafeTree, match=reason):
        build(git, repo.url, commit, tmp_path / "scratch")
    assert not [t for t in threading.enumerate() if t.name in ("git-cat-file", "gzip")]


def tag(name: str, url: str, oid: str) -> Tag:
    return Tag(name, SourceRef("git", url, oid, 0, ""))


def test_a_commit_the_server_does_not_have_is_not_found(repo: GitRepo, tmp_path: Path) -> None:
    git, package = source_of(repo, tmp_path / "caches")
    with pytest.raises(GitNotFound):
        git.prepare(package, [tag("9.9", repo.url, "d" * 40)])


def test_a_cache_broken_by_a_kill_is_made_again_and_its_locks_go(
        repo: GitRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = repo.commit(repo.tree({"v.txt": (FILE, b"1\n")}))
    second = repo.commit(repo.tree({"v.txt": (FILE, b"2\n")}), (first,))
    caches = tmp_path / "caches"
    git, package = source_of(repo, caches)
    cache = caches / "pilot.git"
    git.prepare(package, [tag("k1", repo.url, first)])
    assert cache.is_dir()
    # A fetch killed mid-way leaves its lock; the next fetch must not stop at it.
    (cache / "shallow.lock").write_text("")
    git.prepare(package, [tag("k2", repo.url, second)])
    assert not (cache / "shallow.lock").exists()
    # A creation killed mid-way leaves a half-made cache under a temporary name; one whose
    # HEAD is gone is no repository: made again, and the commit fetched again.
    (caches / ".pilot.git.half").mkdir()
    (cache / "HEAD").unlink()
    caplog.set_level(logging.WARNING, logger="codecache.git")
    fresh, _ = source_of(repo, caches)
    (ready,) = fresh.prepare(package, [tag("k2", repo.url, second)])
    assert "not a usable repository" in caplog.text
    assert sorted(p.name for p in caches.iterdir()) == ["pilot.git"]
    build(fresh, repo.url, ready.ref.id, tmp_path / "scratch")


def pack_objects(cache: Path) -> list[int]:
    """The number of objects of each pack of ``cache``, oldest first."""
    packs = sorted((cache / "objects" / "pack").glob("*.idx"), key=lambda p: p.stat().st_mtime_ns)
    return [len(subprocess.run(["git", "show-index"], input=idx.read_bytes(), check=True,
                               capture_output=True).stdout.splitlines()) for idx in packs]


def test_a_new_tag_brings_only_what_changed_and_packs_are_merged(
        repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"src/m{n}.py": (FILE, f"N = {n}\n".encode()) for n in range(40)}
    first = repo.commit(repo.tree(files))
    second = repo.commit(repo.tree({**files, "src/m0.py": (FILE, b"N = 'changed'\n")}),
                         (first,))
    git, package = source_of(repo, tmp_path / "caches")
    cache = tmp_path / "caches" / "pilot.git"
    git.prepare(package, [tag("n1", repo.url, first)])
    git.prepare(package, [tag("n2", repo.url, second)])
    # The first fetch brings the whole tree (40 blobs, 2 trees, the commit); the second,
    # offered the first commit, little more than the commit, 2 trees and the changed blob.
    assert pack_objects(cache)[0] == 43 and pack_objects(cache)[1] <= 5
    monkeypatch.setattr("codecache.origin.sources.git._PACKS_MAX", 2)
    third = repo.commit(repo.tree({**files, "src/m1.py": (FILE, b"N = 'also'\n")}), (second,))
    (ready,) = git.prepare(package, [tag("n3", repo.url, third)])
    assert len(pack_objects(cache)) == 1    # three packs merged into one
    build(git, repo.url, ready.ref.id, tmp_path / "scratch")
