"""Byte-for-byte reproducible ``tar.gz`` of a tree (DESIGN.md §3): the ONE tar writer.

Owns the archive rules only: what goes in, in which order, with which metadata, and how it
is compressed. Both sources' trees pass the same entry writer (``write_tarball``): a
directory walk (``build_tarball``: a Subversion export on disk) and a git commit's tree
(``Entry`` records read straight from the repository, ``origin/sources/git_tree``).
Whatever the order files come back from disk, their mtimes, owners, the umask or the
machine, the same tree gives the same bytes:

* entries in the byte order of their full path (``prefix/...``, no trailing slash), under
  one top-level directory ``prefix``; a source hands them in that order (``archive_key``),
  the writer refuses any other;
* mtime of every entry = the given commit time; uid/gid 0; empty user/group names;
* mode 0755 for directories and executable files (``svn:executable``, git's 100755),
  0644 for other files, 0777 for symlinks (stored as symlinks, target kept verbatim);
* POSIX.1-2001 (PAX) format; a PAX header only where a name needs it, never atime/ctime;
* gzip level 9, header without file name and with mtime 0; compressed in a thread of its
  own while the tar stream is built (the deflate data is the same as one serial pass).

Anything that is not a directory, regular file or symlink is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import queue
import stat
import tarfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from codecache.core.errors import UnsupportedFile

_CHUNK = 1 << 20


DIRECTORY, FILE, SYMLINK = "directory", "file", "symlink"


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of the archive as a source gives it.

    ``path`` is relative to the prefix ('' is the top directory). A file's ``data`` gives
    exactly ``size`` bytes; the writer reads them and closes it. A symlink's ``target`` is
    kept verbatim.
    """

    path: str
    kind: str                   # DIRECTORY, FILE or SYMLINK
    executable: bool = False    # a file: mode 0755 instead of 0644
    size: int = 0
    target: str = ""
    data: IO[bytes] | None = None


def archive_key(path: str) -> bytes:
    """The sort key of the archive's order: the bytes of the path."""
    return os.fsencode(path)


@dataclass(frozen=True, slots=True)
class TarballInfo:
    sha256: str       # of the .tar.gz bytes
    size: int         # of the .tar.gz bytes
    tar_sha256: str   # of the uncompressed tar stream, independent of the zlib build


class Sink(Protocol):
    """Where the archive goes: a binary file, or anything with its ``write``."""

    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


class _HashingWriter(io.RawIOBase):
    """Write-through file object that hashes and counts what passes."""

    def __init__(self, target: Sink) -> None:
        self._target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.size += len(data)
        self._target.write(data)
        return len(data)


class _CompressingWriter(io.RawIOBase):
    """The tar stream's sink: gzip runs in a thread of its own, fed in order through a
    bounded queue, so compressing (zlib releases the GIL) overlaps reading files and
    writing tar headers. The compressed bytes do not depend on how the input is cut:
    deflate without flushes decides only on the stream, so they are the serial ones."""

    def __init__(self, gz: gzip.GzipFile) -> None:
        self._gz = gz
        self._pending = bytearray()
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._compress, name="gzip", daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._pending += data
        if len(self._pending) >= _CHUNK:
            self._hand_over()
        return len(data)

    def finish(self) -> None:
        """Compress what is left and wait for it; re-raise the compressor's failure."""
        self._hand_over()
        self._stop()
        if self._failure is not None:
            raise self._failure

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()

    def _hand_over(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._pending:
            self._chunks.put(bytes(self._pending))
            self._pending.clear()

    def _compress(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if self._failure is None:
                try:
                    self._gz.write(chunk)
                except BaseException as exc:
                    self._failure = exc

    def abandon(self) -> None:
        """Stop the compressor without raising (the archive failed already)."""
        self._pending.clear()
        self._stop()


def build_tarball(tree: Path, prefix: str, mtime: int, output: Sink,
                  entries: Iterable[str] | None = None) -> TarballInfo:
    """Write the reproducible archive of the directory ``tree`` (as ``prefix/``) to ``output``.

    ``entries``: the paths to archive, as ``sorted_entries(tree)`` gives them (the default);
    a caller that knows them before the tree is complete passes them as they become ready
    (each path is read from disk when the writer comes to it).

    Raises:
        UnsupportedFile: the tree holds a device, fifo or socket.
    """
    paths = sorted_entries(tree) if entries is None else entries
    return write_tarball(_disk_entries(tree, paths), prefix, mtime, output)


def write_tarball(entries: Iterable[Entry], prefix: str, mtime: int,
                  output: Sink) -> TarballInfo:
    """Write the reproducible archive of ``entries`` (as ``prefix/``) to ``output``.

    ``entries`` come in archive order (``archive_key``), the top directory ('') first; each
    is taken only once the one before it is written, so a source may produce them lazily.

    Raises:
        ValueError: ``entries`` out of order, repeated, or not starting with the top
            directory (a source's bug).
        UnsupportedFile: a directory walk met a device, fifo or socket.
    """
    compressed = _HashingWriter(output)
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=9,
                       mtime=0) as gz:
        sink = _CompressingWriter(gz)
        plain = _HashingWriter(sink)
        try:
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                last: bytes | None = None
                for entry in entries:
                    try:
                        key = archive_key(entry.path)
                        if (last is None) != (entry.path == "") or (
                                last is not None and key <= last):
                            raise ValueError(f"archive entry {entry.path!r} out of order")
                        last = key
                        _add_entry(tar, entry, prefix, mtime)
                    finally:
                        if entry.data is not None:
                            entry.data.close()
        except BaseException:
            sink.abandon()
            raise
        sink.finish()
    return TarballInfo(compressed.digest.hexdigest(), compressed.size, plain.digest.hexdigest())


def sorted_entries(tree: Path) -> list[str]:
    """Every path below ``tree`` relative to it ('' is the tree), in archive order."""
    found = [""]
    for root, dirs, files in os.walk(tree, followlinks=False):
        rel_root = os.path.relpath(root, tree)
        for name in dirs + files:
            found.append(name if rel_root == "." else f"{rel_root}/{name}")
    return sorted(found, key=archive_key)


def _disk_entries(tree: Path, paths: Iterable[str]) -> Iterator[Entry]:
    """The entries of the directory ``tree`` at ``paths``, each read when it is asked for."""
    for relative in paths:
        path = tree / relative if relative else tree
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            yield Entry(relative, DIRECTORY)
        elif stat.S_ISLNK(st.st_mode):
            # os.readlink: Path would normalise the target
            yield Entry(relative, SYMLINK, target=os.readlink(path))  # noqa: PTH115
        elif stat.S_ISREG(st.st_mode):
            yield Entry(relative, FILE, executable=bool(st.st_mode & stat.S_IXUSR),
                        size=st.st_size, data=path.open("rb"))
        else:
            raise UnsupportedFile(
                f"cannot archive {relative!r}: not a file, directory or symlink")


def _add_entry(tar: tarfile.TarFile, entry: Entry, prefix: str, mtime: int) -> None:
    """The one entry writer: every member's header follows the rules above."""
    info = tarfile.TarInfo(f"{prefix}/{entry.path}" if entry.path else prefix)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == DIRECTORY:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    elif entry.kind == SYMLINK:
        info.type, info.mode = tarfile.SYMTYPE, 0o777
        info.linkname = entry.target
        tar.addfile(info)
    elif entry.kind == FILE and entry.data is not None:
        info.type = tarfile.REGTYPE
        info.mode = 0o755 if entry.executable else 0o644
        info.size = entry.size
        tar.addfile(info, entry.data)
    else:
        raise ValueError(f"archive entry {entry.path!r}: unknown kind {entry.kind!r}")
