"""A git commit's tree as archive entries (DESIGN.md §3), read straight from a repository.

Owns the git half of the archive rule: which entries a commit's tree gives, with which
kind and mode, and which trees are refused. Every tree is a directory entry (empty ones
included); a blob whose mode has the owner-execute bit is an executable file, another blob
a plain file, ``120000`` a symlink to its target as committed; a submodule (``160000``)
gets no entry and is logged. Bytes are exactly as committed: nothing of ``.gitattributes``
or ``.gitmodules`` applies (no eol conversion, no ``export-ignore``/``export-subst``).

A tree with an entry unsafe to extract is refused (``UnsafeTree``) before any byte is
archived: a name that is empty, ``.``, ``..``, ``.git`` in any case (on a case-insensitive
file system, the default of macOS and Windows, ``.GIT`` *is* ``.git``; git itself refuses
such names there), holds a ``/`` (a git name cannot hold a NUL), is not UTF-8, or
appears twice in its tree; a symlink whose target is not UTF-8, holds a NUL or is longer
than any system makes one.

Everything is read from ONE ``git cat-file --batch`` process: the trees one by one (their
raw entries, so a crafted name holding a ``/`` is seen as such, which ``ls-tree -r`` would
hide), then the blobs in archive order, asked for all at once by a feeder thread and
streamed into the archive as they come (no checkout, no ``git archive``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from codecache.core.errors import GitError, UnsafeTree
from codecache.core.tarball import DIRECTORY, FILE, SYMLINK, Entry, archive_key

log = logging.getLogger("codecache.git")

_TREE, _BLOB, _LINK, _GITLINK = 0o040000, 0o100000, 0o120000, 0o160000
_CHUNK = 1 << 16
_TARGET_MAX = 4095   # PATH_MAX less its NUL: a longer symlink target cannot be made


@dataclass(frozen=True, slots=True)
class _Node:
    path: str      # relative to the tree's top, '/'-separated
    kind: str      # DIRECTORY, FILE or SYMLINK
    executable: bool
    oid: str


@contextlib.contextmanager
def commit_entries(repo: Path, commit: str, env: dict[str, str],
                   where: str) -> Iterator[Iterator[Entry]]:
    """The archive entries of ``commit``'s tree in ``repo``, in archive order.

    ``where`` names the commit in messages (``URL@COMMIT``). The tree is read and checked
    on entering; the blobs are read as the entries are taken.

    Raises:
        UnsafeTree: an entry is unsafe to extract, or not what its tree says it is.
        GitError: git failed, or the repository lacks an object of the tree.
    """
    with _CatFile(repo, env, where) as cat:
        nodes = _walk(cat, commit, where)
        yield _entries(cat, nodes, where)


def _walk(cat: _CatFile, commit: str, where: str) -> list[_Node]:
    """Every node below the commit's tree, checked, in archive order."""
    found: list[_Node] = []
    pending = [("", f"{commit}^{{tree}}")]
    while pending:
        directory, oid = pending.pop()
        kind, data = cat.read_object(oid)
        if kind != "tree":
            raise UnsafeTree(f"{where}: {directory or 'the top'} is a {kind}, not a tree")
        seen: set[bytes] = set()
        for mode, raw, child in _tree_entries(data, where):
            name = _checked_name(raw, seen, directory, where)
            path = f"{directory}/{name}" if directory else name
            kind_bits = mode & 0o170000
            if kind_bits == _TREE:
                found.append(_Node(path, DIRECTORY, False, child))
                pending.append((path, child))
            elif kind_bits == _BLOB:
                found.append(_Node(path, FILE, bool(mode & 0o100), child))
            elif kind_bits == _LINK:
                found.append(_Node(path, SYMLINK, False, child))
            elif kind_bits == _GITLINK:
                log.info("submodule not archived: %s path=%s commit=%s", where, path, child,
                         extra={"source": where, "path": path})
            else:
                raise UnsafeTree(f"{where}: {path!r} has the unknown mode {mode:o}")
    return sorted(found, key=lambda node: archive_key(node.path))


def _tree_entries(data: bytes, where: str) -> Iterator[tuple[int, bytes, str]]:
    """(mode, name, object id) of each entry of a raw tree object."""
    at = 0
    try:
        while at < len(data):
            space = data.index(b" ", at)
            nul = data.index(b"\0", space)
            oid = data[nul + 1:nul + 21]
            if len(oid) != 20:
                raise ValueError("truncated entry")
            yield int(data[at:space], 8), data[space + 1:nul], oid.hex()
            at = nul + 21
    except ValueError as err:
        raise UnsafeTree(f"{where}: a malformed tree object ({err})") from None


def _checked_name(raw: bytes, seen: set[bytes], directory: str, where: str) -> str:
    """``raw`` as text if it is a safe name, not yet ``seen`` in its tree."""
    shown = f"{directory}/{raw!r}" if directory else repr(raw)
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeTree(f"{where}: the name {shown} is not UTF-8") from None
    if name in ("", ".", "..") or name.lower() == ".git" or "/" in name:
        raise UnsafeTree(f"{where}: the entry {shown} is unsafe to extract")
    if raw in seen:
        raise UnsafeTree(f"{where}: the name {shown} appears twice in its tree")
    seen.add(raw)
    return name


def _entries(cat: _CatFile, nodes: list[_Node], where: str) -> Iterator[Entry]:
    cat.ask([node.oid for node in nodes if node.kind != DIRECTORY])
    yield Entry("", DIRECTORY)
    for node in nodes:
        if node.kind == DIRECTORY:
            yield Entry(node.path, DIRECTORY)
            continue
        size = cat.next_blob(node.oid, node.path)
        if node.kind == FILE:
            yield Entry(node.path, FILE, executable=node.executable, size=size,
                        data=cast(IO[bytes], _Blob(cat, size)))
            continue
        if size > _TARGET_MAX:
            raise UnsafeTree(f"{where}: the symlink {node.path!r} has a target of {size} "
                             "bytes (no system extracts one past 4095)")
        target = cat.read_exactly(size)
        cat.end_of_object()
        try:
            text = target.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeTree(f"{where}: the symlink {node.path!r} has a target that is not "
                             "UTF-8") from None
        if "\0" in text:
            raise UnsafeTree(f"{where}: the symlink {node.path!r} has a NUL in its target")
        yield Entry(node.path, SYMLINK, target=text)


class _CatFile:
    """One ``git cat-file --batch`` process: objects asked one by one (``read_object``),
    or blobs asked all at once (``ask``) and read in that order (``next_blob``)."""

    def __init__(self, repo: Path, env: dict[str, str], where: str) -> None:
        self._where = where
        try:
            self._process = subprocess.Popen(
                ["git", "cat-file", "--batch"], cwd=repo, env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError as err:
            raise GitError(f"cannot start git cat-file in {repo}: {err.strerror}") from err
        self._in: BinaryIO = cast(BinaryIO, self._process.stdin)   # both PIPE: not None
        self._out: BinaryIO = cast(BinaryIO, self._process.stdout)
        self._feeder: threading.Thread | None = None

    def __enter__(self) -> _CatFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.poll() is None:
            self._process.kill()   # a feeder blocked on a full pipe ends with it
        if self._feeder is not None:
            self._feeder.join()
        self._process.wait()
        for stream in (self._in, self._out):
            with contextlib.suppress(OSError):
                stream.close()

    def read_object(self, name: str) -> tuple[str, bytes]:
        """(type, content) of the object ``name`` (an id or ``id^{tree}``)."""
        self._send(f"{name}\n".encode())
        kind, size = self._header(name)
        data = self.read_exactly(size)
        self.end_of_object()
        return kind, data

    def ask(self, oids: list[str]) -> None:
        """Ask for ``oids`` (read them with ``next_blob``), all at once from a thread: git
        answers while this side reads, so neither waits on a full pipe."""
        def feed() -> None:
            with contextlib.suppress(OSError):   # the process was killed: reads fail too
                for start in range(0, len(oids), 512):
                    self._in.write("".join(f"{o}\n" for o in oids[start:start + 512]).encode())
                self._in.close()
        self._feeder = threading.Thread(target=feed, name="git-cat-file", daemon=True)
        self._feeder.start()

    def next_blob(self, oid: str, path: str) -> int:
        """The size of the next asked object, which must be the blob ``oid``."""
        kind, size = self._header(oid)
        if kind != "blob":
            raise UnsafeTree(f"{self._where}: {path!r} is a {kind}, not a blob")
        return size

    def read_exactly(self, size: int) -> bytes:
        data = self._out.read(size)
        if len(data) != size:
            raise self._ended()
        return data

    def end_of_object(self) -> None:
        if self._out.read(1) != b"\n":
            raise self._ended()

    def _send(self, data: bytes) -> None:
        try:
            self._in.write(data)
            self._in.flush()
        except OSError:
            raise self._ended() from None

    def _header(self, oid: str) -> tuple[str, int]:
        line = self._out.readline()
        parts = line.split()
        if len(parts) == 2 and parts[1] == b"missing":
            raise GitError(f"{self._where}: the repository lacks object {oid}")
        if len(parts) != 3 or not parts[2].isdigit():
            raise self._ended()
        return parts[1].decode(), int(parts[2])

    def _ended(self) -> GitError:
        return GitError(f"{self._where}: git cat-file ended unexpectedly")


class _Blob(io.RawIOBase):
    """The next ``size`` bytes of the cat-file stream: one blob's content."""

    def __init__(self, cat: _CatFile, size: int) -> None:
        self._cat = cat
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left)
        if wanted == 0:
            return b""
        data = self._cat.read_exactly(wanted)
        self._left -= wanted
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        """Skip what was not read, and the newline after the content: the stream is at
        the next object's header."""
        if not self.closed:
            try:
                while self._left:
                    self.read(min(self._left, _CHUNK))
                self._cat.end_of_object()
            finally:
                super().close()
