"""git for ``codecache audit``: each release's commit fetched from its recorded URL into
private temporary repositories, never the origin's cache.

Owns where an audited git commit comes from, so that a rebuild proves the *server* still
holds what was signed (a commit found in the origin's cache would prove nothing):

* The commit is fetched alone, by id (``--depth=1``), into a private temporary bare
  repository made for this audit (one per URL and credentials) and removed after it.
* A server may refuse a commit no ref points to (protocol v0 without
  ``uploadpack.allowAnySHA1InWant``, as servers before git 2.18 or with v2 off do): a
  release whose tag was deleted upstream is then looked for through the refs (every head
  and tag, full history, fetched once per URL into a second private repository).
  ``GitNotFound`` (the audit's ``MISSING``) only when no ref reaches it, or the
  repository is not there.
* The credentials are those of the package the caller hands to ``prepare`` (``audit``:
  the configured package of that name when its ``git_url`` is the recorded URL, else
  none); a reference no ``prepare`` made ready is fetched without credentials.

The tree is then read by ``git_tree`` and archived by the build step, as the sync does.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from codecache.core.config import GitConfig, PackageConfig
from codecache.core.errors import GitError, GitNotFound
from codecache.core.tarball import Entry
from codecache.origin.sources.base import Source, SourceRef, Tag
from codecache.origin.sources.git import FETCH, object_kinds
from codecache.origin.sources.git_access import GitAccess
from codecache.origin.sources.git_tree import commit_entries

# Every branch and tag with its full history: what "a ref reaches the commit" looks through.
_ALL_REFS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]


class AuditGit(Source):
    """Fetches audited commits into private temporary repositories (removed by ``close``)."""

    def __init__(self, config: GitConfig) -> None:
        self._config = config
        self._root: Path | None = None
        self._accesses: dict[tuple[object, ...], GitAccess] = {}
        self._refs_fetched: set[Path] = set()
        self._ready: dict[tuple[str, str], tuple[GitAccess, Path]] = {}

    def list_tags(self, package: PackageConfig) -> list[Tag]:
        raise GitError("the audit rebuilds recorded commits; it lists no tags")

    def prepare(self, package: PackageConfig, tags: list[Tag]) -> list[Tag]:
        """Fetch each tag's commit from its recorded URL with ``package``'s credentials.

        Raises:
            GitNotFound: the repository is not there, or no ref of it reaches a commit.
            GitError: the server is unreachable, refuses the credentials, times out.
        """
        access = self._access(package)
        for tag in tags:
            self._ready[(tag.ref.url, tag.ref.id)] = (access, self._fetch(access, tag.ref.id))
        return tags

    def tree(self, ref: SourceRef) -> AbstractContextManager[Iterable[Entry]]:
        return self._tree(ref)

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
        self._root = None
        self._accesses.clear()
        self._refs_fetched.clear()
        self._ready.clear()

    @contextmanager
    def _tree(self, ref: SourceRef) -> Iterator[Iterable[Entry]]:
        if (ref.url, ref.id) not in self._ready:
            self.prepare(PackageConfig(name="", git_url=ref.url), [Tag("", ref)])
        access, repo = self._ready[(ref.url, ref.id)]
        with commit_entries(repo, ref.id, access.env(), ref.pin.label) as entries:
            yield entries

    def _fetch(self, access: GitAccess, commit: str) -> Path:
        """The private repository holding ``commit`` (fetched from the access's URL)."""
        url = access.package.git_url
        by_id, by_refs = self._repo(access, "by-id"), self._repo(access, "refs")
        for repo in (by_id, by_refs):
            if _is_commit(access, repo, commit):
                return repo
        try:
            access.run([*FETCH, "--depth=1", "--", url, commit], cwd=by_id, network=True)
            refused = "fetched by id but absent"
        except GitNotFound as err:     # no such commit, or not handed out by id
            refused = str(err)
        if _is_commit(access, by_id, commit):
            return by_id
        if by_refs not in self._refs_fetched:
            access.run([*FETCH, "--", url, *_ALL_REFS], cwd=by_refs, network=True)
            self._refs_fetched.add(by_refs)
        if _is_commit(access, by_refs, commit):
            return by_refs
        raise GitNotFound(f"{url}: no branch or tag reaches commit {commit} (fetching it by "
                          f"id: {refused})")

    def _access(self, package: PackageConfig) -> GitAccess:
        """One access per URL and credentials (its credential helper is made once)."""
        key = _reached_as(package)
        if key not in self._accesses:
            self._accesses[key] = GitAccess(self._config, package)
        return self._accesses[key]

    def _repo(self, access: GitAccess, kind: str) -> Path:
        """A private bare repository of this access (URL and credentials) and ``kind``."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="codecache-audit-git-"))
            weakref.finalize(self, shutil.rmtree, self._root, ignore_errors=True)
        name = hashlib.sha256(repr(_reached_as(access.package)).encode()).hexdigest()[:16]
        path = self._root / f"{name}-{kind}.git"
        if not path.exists():
            access.run(["init", "--quiet", "--bare", str(path)])
        return path


def _reached_as(package: PackageConfig) -> tuple[object, ...]:
    """What a repository is reached as: its URL and the credentials."""
    return package.git_url, package.git_token_file, package.git_user, package.git_ssh_key


def _is_commit(access: GitAccess, repo: Path, oid: str) -> bool:
    return object_kinds(access, repo, [oid]).get(oid) == "commit"


__all__ = ["AuditGit"]
