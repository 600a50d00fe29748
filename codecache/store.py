"""The content-addressed, versioned store on disk.

Layout (plain files, so operators can inspect, rsync and serve it with ordinary tools)::

    index.json                          the current signed index {"signed", "signatures"}
    blobs/sha256/<hex>                  tarballs, named by the sha256 of their bytes
    signatures/<package>/<version>.minisig   detached release signatures (also in the index)
    state.json                          local facts: highest serial ever accepted, mutated tags
    tmp/                                scratch space of the writer (exports, downloads)
    .lock                               writers hold an exclusive flock on it

Every write is atomic (temp file in the same directory, fsync, rename, fsync of the
directory) and idempotent; blobs and signatures land before the index that names them, and
the index is swapped last, so a crash at any point leaves the previous consistent state.
Writers (sync, publish, yank, replication) serialise on ``.lock``; readers never lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from codecache.errors import (
    BlobNotFound,
    HashMismatch,
    IndexExpired,
    IntegrityError,
    NoIndex,
    StoreBusy,
    StoreError,
)
from codecache.index import Index, from_payload, to_payload
from codecache.signing import PublicKey, SecretKey, sign_document, verify_document

_CHUNK = 1 << 20
_TMP_MARK = ".tmp-"


@dataclass(frozen=True, slots=True)
class MutatedTag:
    package: str
    version: str
    published_revision: int
    current_revision: int
    detected_at: int


@dataclass(frozen=True, slots=True)
class LocalState:
    """Facts about this store that are not part of the signed index."""

    highest_serial: int = 0
    mutated_tags: tuple[MutatedTag, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


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
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``path``; on success fsync it and rename it over ``path``.

    Raises:
        StoreError: the file system refuses (disk full, permissions).
    """
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{_TMP_MARK}", dir=path.parent)
    except OSError as err:
        raise StoreError(f"cannot write in {path.parent}: {err.strerror}") from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {err.strerror}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (see ``atomic_file``)."""
    with atomic_file(path) as fh:
        fh.write(data)


FileIdentity = tuple[int, int, int]


def file_identity(path: Path) -> FileIdentity | None:
    """What changes when a file is replaced or rewritten: (mtime_ns, size, inode)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def sha256_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class Store:
    """One store directory. Cheap to construct; holds no open files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index_path = root / "index.json"
        self.state_path = root / "state.json"
        self.blob_dir = root / "blobs" / "sha256"
        self.signature_dir = root / "signatures"
        self.tmp_dir = root / "tmp"
        self.lock_path = root / ".lock"

    # --- layout ---------------------------------------------------------------------------

    def init(self) -> None:
        """Create the directories (idempotent).

        Raises:
            StoreError: the directories cannot be created.
        """
        try:
            for directory in (self.blob_dir, self.signature_dir, self.tmp_dir):
                make_dirs(directory)
        except OSError as err:
            raise StoreError(f"cannot create store at {self.root}: {err.strerror}") from err

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256

    def signature_path(self, package: str, version: str) -> Path:
        return self.signature_dir / package / f"{version}.minisig"

    # --- locking --------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, wait: float = 30.0) -> Iterator[None]:
        """Hold the writers' lock; clear scratch left by a writer that crashed.

        Raises:
            StoreBusy: another writer held it for ``wait`` seconds.
        """
        self.init()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreBusy(f"store {self.root} is locked by another writer") from None
                    time.sleep(0.05)
            self._clear_scratch()
            yield
        finally:
            os.close(fd)

    def _clear_scratch(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for directory in (self.root, self.blob_dir, *self.signature_dir.glob("*")):
            for leftover in directory.glob(f".*{_TMP_MARK}*"):
                leftover.unlink(missing_ok=True)

    def scratch_dir(self, prefix: str) -> Path:
        """A new private directory under ``tmp/``.

        Raises:
            StoreError: the file system refuses (disk full, permissions).
        """
        try:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp_dir))
        except OSError as err:
            raise StoreError(f"cannot create scratch space in {self.tmp_dir}: "
                             f"{err.strerror}") from err

    # --- blobs ----------------------------------------------------------------------------

    def has_blob(self, sha256: str, size: int) -> bool:
        try:
            return self.blob_path(sha256).stat().st_size == size
        except FileNotFoundError:
            return False

    def add_blob(self, source: Path, sha256: str) -> None:
        """Move a complete temp file into place as blob ``sha256`` (caller checked the hash).

        The temp file must be in the store's file system; an existing blob is kept.

        Raises:
            StoreError: the file system refuses.
        """
        target = self.blob_path(sha256)
        try:
            with source.open("rb+") as fh:
                os.fsync(fh.fileno())
            source.chmod(0o644)
            if target.exists():
                source.unlink()
                return
            source.replace(target)
            fsync_dir(self.blob_dir)
        except OSError as err:
            raise StoreError(f"cannot store blob {sha256}: {err.strerror}") from err

    def verify_blob(self, sha256: str, size: int) -> None:
        """Re-hash a stored blob.

        Raises:
            BlobNotFound: it is missing.
            HashMismatch: its bytes are not the ones named.
        """
        try:
            actual, actual_size = sha256_file(self.blob_path(sha256))
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        if actual != sha256 or actual_size != size:
            raise HashMismatch(f"blob {sha256} is corrupted (sha256 {actual}, {actual_size} bytes)")

    # --- index ----------------------------------------------------------------------------

    def read_document(self) -> bytes | None:
        """Raw bytes of ``index.json``, or None before the first index is written."""
        try:
            return self.index_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError(f"cannot read {self.index_path}: {err.strerror}") from err

    def load_index(self, keys: Mapping[str, PublicKey], now: int | None = None,
                   *, allow_expired: bool = False) -> Index:
        """The verified index.

        Raises:
            NoIndex: the store has no index yet.
            IntegrityError: bad signature or malformed content.
            IndexExpired: past ``expires`` (unless ``allow_expired``).
        """
        raw = self.read_document()
        if raw is None:
            raise NoIndex(f"store {self.root} has no index yet (run codecache sync)")
        index = parse_document(raw, keys)
        current = int(time.time()) if now is None else now
        if not allow_expired and index.expires <= current:
            raise IndexExpired(f"index serial {index.serial} expired at {index.expires}")
        return index

    def write_index(self, secret: SecretKey, index: Index) -> bytes:
        """Sign and swap in ``index``; write its release signatures first.

        Returns the document bytes written.

        Raises:
            StoreError: the file system refuses.
        """
        for package, pkg in index.packages.items():
            for version, release in pkg.releases.items():
                self._write_signature(package, version, release.minisig)
        document = sign_document(secret, to_payload(index))
        data = json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False).encode() + b"\n"
        self.write_document(data, index.serial)
        return data

    def write_document(self, data: bytes, serial: int) -> None:
        """Swap in an already signed document (a replica's copy of its upstream's)."""
        atomic_write(self.index_path, data)
        state = self.load_state()
        if serial > state.highest_serial:
            self.save_state(LocalState(serial, state.mutated_tags, state.extra))

    def _write_signature(self, package: str, version: str, minisig: str) -> None:
        path = self.signature_path(package, version)
        data = minisig.encode()
        try:
            if path.read_bytes() == data:
                return
        except FileNotFoundError:
            pass
        try:
            make_dirs(path.parent)
        except OSError as err:
            raise StoreError(f"cannot create {path.parent}: {err.strerror}") from err
        atomic_write(path, data)

    # --- local state ----------------------------------------------------------------------

    def load_state(self) -> LocalState:
        try:
            raw = json.loads(self.state_path.read_bytes())
            mutated = tuple(MutatedTag(**m) for m in raw.get("mutated_tags", []))
            return LocalState(int(raw.get("highest_serial", 0)), mutated,
                              dict(raw.get("extra", {})))
        except FileNotFoundError:
            return LocalState()
        except (ValueError, TypeError) as err:
            raise StoreError(f"{self.state_path} is malformed: {err}") from err

    def save_state(self, state: LocalState) -> None:
        data = {
            "highest_serial": state.highest_serial,
            "mutated_tags": [
                {"package": m.package, "version": m.version,
                 "published_revision": m.published_revision,
                 "current_revision": m.current_revision, "detected_at": m.detected_at}
                for m in state.mutated_tags
            ],
            "extra": state.extra,
        }
        atomic_write(self.state_path, json.dumps(data, indent=1, sort_keys=True).encode())


def parse_document(raw: bytes, keys: Mapping[str, PublicKey]) -> Index:
    """Verify and parse a signed index document.

    Raises:
        IntegrityError: not JSON, bad signature or malformed content.
    """
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise IntegrityError(f"index is not valid JSON: {err}") from err
    return from_payload(verify_document(keys, document))

