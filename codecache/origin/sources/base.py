"""The ``Source`` interface: where the origin's releases come from, whatever the system.

Owns the calls the writer and the audit make of a source (list a package's tags, make the
new ones ready, export one into a directory) and the **source reference** they speak of: a
record of what a tag named when it was listed (its ``core.pin.Pin``: kind, URL, id; and
its time and author). The writer compares ids (a tag whose id changed after it was
published is a mutated tag) and hands a reference back to ``export``; only the source that
made it reads its URL and id. One class per client implements it (``svn_cli``, ``pysvn``,
``git``); ``chooser.Sources`` sends each package to its own.
"""

from __future__ import annotations

import abc
import shutil
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from codecache.core.config import PackageConfig
from codecache.core.index import Release
from codecache.core.pin import GIT, SVN, Pin
from codecache.core.tarball import DIRECTORY, SYMLINK, Entry


@dataclass(frozen=True, slots=True)
class SourceRef:
    """What one tag names in its source, as listed: enough to export exactly that tree.

    Subversion: ``url`` is the tag's URL and ``id`` its last-changed revision (as text).
    git: ``url`` is the package's ``git_url`` and ``id`` the commit the tag peels to; its
    ``time`` (committer time) and ``author`` are known once the commit is fetched
    (``Source.prepare``), 0 and "" before.
    """

    kind: str
    url: str
    id: str
    time: int       # commit time, seconds since the epoch (every archived entry's mtime)
    author: str

    @property
    def pin(self) -> Pin:
        """What the index and the trusted comment record of this reference."""
        return Pin(self.kind, self.url, self.id)


@dataclass(frozen=True, slots=True)
class Tag:
    """One tag of a package: its name (the release's version) and what it names now."""

    name: str
    ref: SourceRef


class ExportProgress(Protocol):
    """Told what an export will write and what it has written (``Source.export``'s watcher)."""

    def listed(self, paths: list[str]) -> None:
        """Every path the export will write, relative to its destination ('' is the root)."""

    def exported(self, paths: list[str]) -> None:
        """``paths`` (relative, as listed) are complete on disk."""


class Source(abc.ABC):
    """A system that holds tagged trees (one client of it): lists tags and exports them."""

    @abc.abstractmethod
    def list_tags(self, package: PackageConfig) -> list[Tag]:
        """The tags of ``package``, each with the reference it names now.

        Raises:
            UpstreamError: the source is unreachable, refuses, times out or answers garbage
                (``SvnNotFound``: the package's tags are not there).
        """

    def prepare(self, package: PackageConfig, tags: list[Tag]) -> list[Tag]:
        """Make the new ``tags`` of ``package`` ready to export, in one go where the source
        can (git: one fetch of their commits), and return them with complete references
        (git: the commit's time and author). Subversion needs nothing: as listed.

        Raises:
            UpstreamError: the source is unreachable, refuses or times out.
        """
        return tags

    def for_kind(self, kind: str) -> Source:
        """The source that handles references of ``kind`` (a single client: itself;
        ``chooser.Sources``: the one of that kind)."""
        return self

    def tree(self, ref: SourceRef) -> AbstractContextManager[Iterable[Entry]] | None:
        """The tree ``ref`` names as archive entries in archive order, read straight from
        the source (git: the commit's tree, never a checkout); None where the source
        exports into a directory instead (Subversion: ``export``).

        Raises (on entering):
            UpstreamError: the source is unreachable, or (``SourceNotFound``) has no such
                tree; UnsafeTree: the tree has an entry unsafe to extract.
        """
        return None

    @property
    def concurrent_trees(self) -> bool:
        """Whether several of its trees may be built at once, from several threads (git:
        each ``tree`` reads through a process of its own; Subversion: no, one client)."""
        return False

    @property
    def reports_progress(self) -> bool:
        """Whether ``export`` tells a ``progress`` watcher what it writes as it goes."""
        return False

    def export(self, ref: SourceRef, destination: Path,
               progress: ExportProgress | None = None) -> None:
        """Write the tree ``ref`` names into ``destination`` (which must not exist yet).

        A source implements ``export`` (Subversion), or ``tree`` and inherits this one,
        which writes the tree's entries (git: a tree as the archive holds it, for a person
        or a tool that wants the files; the build archives ``tree`` directly).

        ``progress`` (with a source that ``reports_progress``; others ignore it) hears the
        listing of the tree first, then each path once it is complete on disk, called from
        this thread, so a reader in another thread can work behind the export.

        Raises:
            UpstreamError: unreachable, timeout (``SvnNotFound``: no such path or revision).
        """
        read = self.tree(ref)
        if read is None:   # a bug: a source must give its trees one way or the other
            raise NotImplementedError(f"{type(self).__name__} gives no tree of {ref.pin.label}")
        with read as entries:
            write_entries(entries, destination)

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release what the source holds (a worker process); it may be used again after."""


def svn_location(ref: SourceRef) -> tuple[str, int]:
    """The Subversion ``URL`` and ``REV`` of ``ref``: the index's ``svn_url`` and
    ``revision``, the trusted comment's ``svn=URL@REV``.

    Raises:
        ValueError: ``ref`` is not a Subversion reference (a bug: sources map their own).
    """
    if ref.kind != SVN:
        raise ValueError(f"not a Subversion reference: {ref.kind} {ref.url}@{ref.id}")
    return ref.url, ref.pin.revision


def svn_ref(url: str, revision: int, time: int, author: str) -> SourceRef:
    """The reference of Subversion ``url@revision`` (committed at ``time`` by ``author``)."""
    return SourceRef(SVN, url, str(revision), time, author)


def release_ref(release: Release) -> SourceRef:
    """The reference a release was built from, as its index record says."""
    pin = release.source
    return SourceRef(pin.kind, pin.url, pin.id, release.date, release.author)


__all__ = ["GIT", "SVN", "ExportProgress", "Source", "SourceRef", "Tag", "release_ref",
           "svn_location", "svn_ref"]


def write_entries(entries: Iterable[Entry], destination: Path) -> None:
    """Write archive ``entries`` (archive order: the top directory first, every parent
    before its children) as files under ``destination``, which must not exist yet; modes
    as the archive gives them (0755 directories and executables, 0644 files, symlinks)."""
    for entry in entries:
        path = destination / entry.path if entry.path else destination
        if entry.kind == DIRECTORY:
            path.mkdir(mode=0o755)
            path.chmod(0o755)   # whatever the umask
        elif entry.kind == SYMLINK:
            path.symlink_to(entry.target)
        else:
            if entry.data is None:
                raise ValueError(f"file entry {entry.path!r} without its bytes")
            with entry.data as data, path.open("xb") as out:
                shutil.copyfileobj(data, out)
            path.chmod(0o755 if entry.executable else 0o644)
