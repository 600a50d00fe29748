"""The one build rule of a release: a source reference → reproducible ``tar.gz``.

Owns the step the origin's sync worker publishes with and ``codecache audit`` checks with,
so the two can never build differently: export a source reference (Subversion ``URL@REV``:
``svn export --ignore-externals --native-eol LF``, ``TZ=UTC``; ``sources.base.Source``)
into a scratch directory and archive it with ``tarball.build_tarball``, or (git
``URL@COMMIT``) archive the tree the source reads straight from its repository
(``Source.tree``) with ``tarball.write_tarball``, the same entry writer; under the
package's prefix with the reference's commit time as every mtime, and return the archive
with its hashes (DESIGN.md §3). Where the archive goes afterwards (the store, or nowhere)
is the caller's business.

With a source that reports its progress (pysvn) the archive is built *behind* the export:
the export lists the tree first and then names each path once it is complete on disk, and
the archiver takes the listed paths in their archive order as they arrive, so compressing
(the longest step) overlaps the export. The bytes are those of archiving the finished
tree: once the export has ended, its tree is walked (it must hold exactly the archived
paths) and every archived path must be unchanged since it was taken (same inode, mode,
size, mtime and ctime); each file is removed as soon as that is checked, while the archive
is still compressing, so the caller's clean-up has only empty directories left. If
anything differs, the tag is exported again and archived after the export.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from codecache.core.errors import StoreError
from codecache.core.tarball import (
    Sink,
    TarballInfo,
    archive_key,
    build_tarball,
    sorted_entries,
    write_tarball,
)
from codecache.origin.sources.base import Source, SourceRef

log = logging.getLogger("codecache.build")

# Archives from this size are built behind the export. The listing it needs costs about a
# round trip (~5-15 ms on loopback); the overlap saves about a third of the archiving time
# (~30 ms per MB compressed, docs/benchmark.md "Sync path").
STREAM_FROM = 1 << 20


@dataclass(frozen=True, slots=True)
class Built:
    archive: Path        # the .tar.gz, in the caller's scratch directory
    info: TarballInfo    # sha256 and size of the .tar.gz, sha256 of the uncompressed tar
    prehash: bytes       # BLAKE2b-512 of the .tar.gz (what a minisign signature signs)
    streamed: bool = False   # archived behind the export (False: after it, or again)


def build_release(source: Source, ref: SourceRef, prefix: str, scratch: Path,
                  expected_size: int | None = None) -> Built:
    """Export ``ref`` and archive it as ``prefix/`` dated ``ref.time``, in ``scratch``.

    ``scratch`` is an empty private directory; ``tree`` and ``archive.tar.gz`` are made in it.
    ``expected_size``: about how large the archive will be (the package's last release),
    None if unknown. Archiving behind the export costs a listing of the tree first, one
    more request to the source: it is done where it pays, for archives of ``STREAM_FROM``
    bytes or more and where the size is unknown, not for a bulk import of small tags.

    Raises:
        UpstreamError: the source is unreachable, or (``SourceNotFound``) has no such tree.
        UnsupportedFile: the tree holds a device, fifo or socket.
        UnsafeTree: the tree holds an entry unsafe to extract (git).
        StoreError: the archive cannot be written (disk full).
    """
    source = source.for_kind(ref.kind)
    tree = scratch / "tree"
    archive = scratch / "archive.tar.gz"
    read = source.tree(ref)
    if read is not None:
        with read as entries:
            return _write(ref, archive, lambda sink: write_tarball(entries, prefix, ref.time,
                                                                   sink))
    if source.reports_progress and (expected_size is None or expected_size >= STREAM_FROM):
        built = _build_behind_export(source, ref, prefix, tree, archive)
        if built is not None:
            return built
        shutil.rmtree(tree, ignore_errors=True)   # files of it are removed already
    source.export(ref, tree)
    return _archive(ref, tree, prefix, archive)


def _archive(ref: SourceRef, tree: Path, prefix: str, archive: Path,
             entries: Iterator[str] | None = None) -> Built:
    """Archive ``tree`` into ``archive``, hashing the compressed bytes as they are written
    (no second read of the archive for the signature's BLAKE2b).

    Raises:
        UnsupportedFile, StoreError (see ``build_release``).
    """
    built = _write(ref, archive,
                   lambda sink: build_tarball(tree, prefix, ref.time, sink, entries))
    return dataclasses.replace(built, streamed=entries is not None)


def _write(ref: SourceRef, archive: Path, write: Callable[[Sink], TarballInfo]) -> Built:
    """``write`` the archive into ``archive``, hashing the compressed bytes as they are
    written.

    Raises:
        StoreError: the archive cannot be written.
    """
    try:
        with archive.open("wb") as out:
            sink = _Blake2bWriter(out)
            info = write(sink)
    except OSError as err:
        raise StoreError(f"cannot write the tarball of {ref.pin.location}: "
                         f"{err.strerror}") from err
    return Built(archive, info, sink.digest.digest())


def _build_behind_export(source: Source, ref: SourceRef, prefix: str, tree: Path,
                         archive: Path) -> Built | None:
    """Export in a thread while this one archives behind it; None: export and archive
    again, one after the other.

    Raises:
        UpstreamError: the export failed (whatever the archive did meanwhile).
    """
    arrivals = _Arrivals(tree)

    def export() -> None:
        try:
            source.export(ref, tree, progress=arrivals)
            finished = sorted_entries(tree)
        except BaseException as err:  # handed to the archiving thread, raised there
            arrivals.end(err)
        else:
            arrivals.end(None, finished)

    exporter = threading.Thread(target=export, name="svn-export", daemon=True)
    exporter.start()
    try:
        built: Built | None = _archive(ref, tree, prefix, archive, arrivals.entries())
    except Exception as err:  # whatever it was, the finished tree decides below
        built, reason = None, str(err)
        if isinstance(err.__cause__, OSError) and err.__cause__.errno in _DISK_FULL:
            exporter.join()
            raise   # building again would not help: the archive's own disk is full
    exporter.join()
    if arrivals.failure is not None:
        raise arrivals.failure
    if built is not None and not arrivals.unchanged():
        built, reason = None, "the tree is not what was archived"
    if built is None:
        # The export succeeded and the archive of it did not come out right (a listing that
        # differs from the tree, or a real error, which building again raises as such).
        log.info("building %s@%s again, archived after the export: %s", ref.url, ref.id, reason)
    return built


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)   # no room for the archive


class _Blake2bWriter:
    """Write-through sink that also takes the BLAKE2b-512 of what passes (minisign's
    prehash, DESIGN.md §3)."""

    def __init__(self, target: Sink) -> None:
        self._target = target
        self.digest = hashlib.blake2b(digest_size=64)

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.digest.update(data)
        self._target.write(data)
        return len(data)


class _ExportEnded(Exception):
    """The export failed while the archive waited for a path (its error is raised instead)."""


_Identity = tuple[int, int, int, int, int]


def _identity(path: Path) -> _Identity:
    """What archiving ``path`` depended on: for a directory, that it is one (its times
    change as the export fills it); for a file or symlink, its inode, mode, size and times."""
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode):
        return st.st_ino, stat.S_IFDIR, 0, 0, 0
    return st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class _Arrivals:
    """What an export reported so far (``ExportProgress``), for the archiving thread."""

    def __init__(self, tree: Path) -> None:
        self._tree = tree
        self._changed = threading.Condition()
        self._listed: list[str] | None = None
        self._exported: set[str] = set()
        self._wanted: str | None = None             # the path the archiver waits for
        self._ended = False
        self.failure: BaseException | None = None
        self._finished: list[str] | None = None     # the finished tree's paths
        self._archived: dict[str, _Identity] = {}   # path -> identity when it was taken
        self._consistent = True                     # every archived path checked so far

    # --- the export's thread --------------------------------------------------------------

    def listed(self, paths: list[str]) -> None:
        ordered = sorted(paths, key=archive_key)
        with self._changed:
            self._listed = ordered
            self._changed.notify_all()

    def exported(self, paths: list[str]) -> None:
        with self._changed:
            self._exported.update(paths)
            if self._wanted in self._exported:   # wake the archiver only when it can go on
                self._changed.notify_all()

    def end(self, failure: BaseException | None, finished: list[str] | None = None) -> None:
        """The export ended: with ``failure``, or with the tree's paths ``finished``."""
        with self._changed:
            self._ended, self.failure, self._finished = True, failure, finished
            self._changed.notify_all()

    # --- the archiving thread -------------------------------------------------------------

    def entries(self) -> Iterator[str]:
        """The listed paths in archive order, each once the export has written it.

        Raises:
            _ExportEnded: the export failed, or ended without a listing.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._listed is not None or self._ended)
            listed = self._listed
        if listed is None or self.failure is not None:
            raise _ExportEnded
        taken: list[str] = []   # archived, not yet checked against the finished tree
        for path in listed:
            with self._changed:
                self._wanted = path
                while path not in self._exported and not self._ended:
                    self._changed.wait()
                if self.failure is not None:
                    raise _ExportEnded
                ended = self._ended
            if ended:   # the files archived so far are final now: check, remove them
                self._check_and_remove(taken)
            self._archived[path] = _identity(self._tree / path if path else self._tree)
            yield path  # resumed once the archive has read all of ``path``
            taken.append(path)
        with self._changed:
            self._changed.wait_for(lambda: self._ended)
        if self.failure is not None:
            raise _ExportEnded
        self._check_and_remove(taken)

    def _check_and_remove(self, paths: list[str]) -> None:
        """Check archived ``paths`` against the finished tree; remove their files."""
        for path in paths:
            full = self._tree / path if path else self._tree
            try:
                same = self._consistent and _identity(full) == self._archived[path]
            except OSError:
                same = False
            if not same:
                self._consistent = False   # keep the rest: nothing more is removed
                break
            if self._archived[path][1] != stat.S_IFDIR:   # a file or symlink
                full.unlink()
        paths.clear()

    def unchanged(self) -> bool:
        """After the archive: the finished tree was exactly what was archived, unchanged."""
        return self._consistent and self._finished == list(self._archived)
