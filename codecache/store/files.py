"""Files written atomically, and the one check of a blob on disk.

Every write of the store goes through ``atomic_file``: a temp file in the same directory,
fsync, rename over the target, fsync of the directory, so a reader sees the old file or
the new one and a crash leaves one of them. Directories and files are 0755/0644 whatever
the umask: operators serve and rsync the store with plain tools, often as another user.

``check_blob`` (with ``blob_fault``, its wording) is the one rule of "this file is the blob
the index lists": its size, and with ``deep`` the sha256 of its bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from codecache.core.errors import StoreError

CHUNK = 1 << 20
TMP_MARK = ".tmp-"   # in the name of every temp file; a writer clears leftovers by it
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # no C library to ask: fall back to sync()
    _LIBC = None

MISSING = "missing from disk"


def make_dirs(path: Path) -> None:
    """``mkdir -p`` whose new directories are 0755 whatever the umask.

    Files are written 0644 for the same reason: operators serve and rsync the store with
    plain tools, often as another user.
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for directory in missing:
        directory.chmod(0o755)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``path``; on success fsync it and rename it over ``path``.

    ``durable=False`` skips the fsyncs (still atomic: readers see old or new, never part).

    Raises:
        StoreError: the file system refuses (disk full, permissions).
    """
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    except OSError as err:
        raise StoreError(f"cannot write in {path.parent}: {err.strerror}") from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
        if durable:
            fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {err.strerror}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the file system holding ``path`` (Linux ``syncfs``).

    Many small files made durable at once: one flush instead of two fsyncs per file.
    Falls back to ``sync()`` where ``syncfs`` is not available.

    Raises:
        StoreError: the flush failed (an I/O error).
    """
    syncfs = getattr(_LIBC, "syncfs", None) if _LIBC is not None else None
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise StoreError(f"cannot flush {path} to disk: {os.strerror(err)}")
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (see ``atomic_file``)."""
    with atomic_file(path, durable=durable) as fh:
        fh.write(data)


FileIdentity = tuple[int, int, int]


def file_identity(path: str | Path) -> FileIdentity | None:
    """What changes when a file is replaced or rewritten: (mtime_ns, size, inode)."""
    try:
        st = os.stat(path)  # noqa: PTH116 - called per blob, thousands of times: str paths too
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def sha256_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def blob_fault(sha256: str, size: int, length: int, digest: str | None = None) -> str | None:
    """Why ``length`` bytes hashing to ``digest`` (None: not hashed) are not the blob
    ``sha256`` of ``size`` bytes the index lists; None when they are."""
    if length != size:
        return f"corrupt on disk ({length} bytes, {size} listed)"
    if digest is not None and digest != sha256:
        return f"corrupt on disk (sha256 {digest})"
    return None


def check_blob(path: str | Path, sha256: str, size: int, *, deep: bool = True) -> str | None:
    """Why the file at ``path`` is not the blob the index lists (missing, its size, with
    ``deep`` its sha256), or None: it is."""
    try:
        length = os.stat(path).st_size  # noqa: PTH116 - per blob at every install: str paths
        if not deep or length != size:   # a wrong size is told without reading the file
            return blob_fault(sha256, size, length)
        digest, length = sha256_file(Path(path))
    except FileNotFoundError:
        return MISSING
    return blob_fault(sha256, size, length, digest)
