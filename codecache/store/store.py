"""The content-addressed, versioned store on disk.

Layout (plain files, so operators can inspect, rsync and serve it with ordinary tools)::

    index.json                          the current signed index {"signed", "signatures"}
    history.json                        the release history (DESIGN.md §9), one entry a line
    blobs/sha256/<hex>                  tarballs, named by the sha256 of their bytes
    signatures/<package>/<version>.minisig   detached release signatures (also in the index)
    state.json                          local facts: highest serial ever accepted, mutated tags
    tmp/                                scratch space of the writer (exports, downloads)
    .lock                               writers hold an exclusive flock on it

Every write is atomic (temp file in the same directory, fsync, rename, fsync of the
directory) and idempotent; blobs and signatures land before the index that names them, and
the index is swapped last, so a crash at any point leaves the previous consistent state.
``history.json`` is written just before ``index.json``, so a served index never names a
history longer than the file.
Writers (sync, publish, yank, replication) serialise on ``.lock``; readers never lock.
The atomic file helpers are in ``store.files``, ``state.json`` and ``replica.json`` in
``store.state``; the index on disk is read through the trust rules by ``store.trusted``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from codecache.core.errors import BlobUnavailable, HistoryError, NoIndex, StoreBusy, StoreError
from codecache.core.history import EMPTY_HISTORY, History
from codecache.core.history import verify as verify_history
from codecache.core.history_parse import load as load_history
from codecache.core.index import HistoryHead, Index
from codecache.core.signing import PublicKey
from codecache.core.trust import Mark, SignedIndex, verify
from codecache.store.files import (
    TMP_MARK,
    atomic_write,
    check_blob,
    fsync_dir,
    make_dirs,
    sync_filesystem,
)
from codecache.store.state import PullStatus, StateFile, load_pull_status, save_pull_status

_FSYNC_EACH_MAX = 16   # signatures written in one install that get an fsync each


class Store:
    """One store directory. Cheap to construct; holds no open files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index_path = root / "index.json"
        self.history_path = root / "history.json"
        self.state_path = root / "state.json"
        self.state = StateFile(self.state_path)
        self.pull_status_path = root / "replica.json"
        self.blob_dir = root / "blobs" / "sha256"
        self.signature_dir = root / "signatures"
        self.tmp_dir = root / "tmp"
        # An origin's git caches, one bare repository per git package (origin.sources.git):
        # objects fetched to build releases, never served, rebuilt from the server if lost.
        self.git_dir = root / "git"
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
        fd = self.acquire_lock(wait)
        try:
            yield
        finally:
            os.close(fd)

    def acquire_lock(self, wait: float = 30.0) -> int:
        """``locked`` for callers that cannot use a ``with`` block (the async pull loop).

        Returns the open lock file descriptor; closing it releases the lock.

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
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _clear_scratch(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for directory in (self.root, self.blob_dir, *self.signature_dir.glob("*")):
            for leftover in directory.glob(f".*{TMP_MARK}*"):
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

    def add_blob(self, source: Path, sha256: str, *, replace: bool = False) -> None:
        """Move a complete temp file into place as blob ``sha256`` (caller checked the hash).

        The temp file must be in the store's file system; an existing blob is kept unless
        ``replace`` (a replica repairing a blob that failed its hash on disk).

        Raises:
            StoreError: the file system refuses.
        """
        target = self.blob_path(sha256)
        try:
            with source.open("rb+") as fh:
                os.fsync(fh.fileno())
            source.chmod(0o644)
            if target.exists() and not replace:
                source.unlink()
                return
            source.replace(target)
            fsync_dir(self.blob_dir)
        except OSError as err:
            raise StoreError(f"cannot store blob {sha256}: {err.strerror}") from err

    # --- index ----------------------------------------------------------------------------

    def read_document(self) -> bytes | None:
        """Raw bytes of ``index.json``, or None before the first index is written."""
        try:
            return self.index_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError(f"cannot read {self.index_path}: {err.strerror}") from err

    def read_signed(self, keys: Mapping[str, PublicKey]) -> SignedIndex:
        """The index on disk, its signature verified (no acceptance decision: see ``trust``).

        Raises:
            NoIndex: the store has no index yet.
            IndexRefused: not a valid signed index.
        """
        return verify(self.require_document(), keys)

    def require_document(self) -> bytes:
        """``index.json``'s bytes.

        Raises:
            NoIndex: the store has no index yet.
        """
        raw = self.read_document()
        if raw is None:
            raise NoIndex(f"store {self.root} has no index yet (run codecache sync)")
        return raw

    def read_history_bytes(self) -> bytes | None:
        """Raw bytes of ``history.json``, or None where there is none."""
        try:
            return self.history_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError(f"cannot read {self.history_path}: {err.strerror}") from err

    def load_history(self, head: HistoryHead) -> History:
        """The history on disk, its first ``head.length`` entries verified against ``head``.

        Raises:
            HistoryError: missing, malformed, or not the chain the signed index names.
            StoreError: the file cannot be read.
        """
        raw = self.read_history_bytes()
        if raw is None:
            if head.length == 0:
                return EMPTY_HISTORY
            raise HistoryError(None, f"{self.history_path} is missing; the index names "
                               f"{head.length} history entries")
        try:
            return verify_history(load_history(raw), head)
        except HistoryError as err:
            raise HistoryError(err.seq, f"{self.history_path}: {err}") from None

    def install(self, signed: SignedIndex, *, previous: Index | None = None,
                history: History | None = None, marks: Mapping[str, Mark] | None = None,
                reset_serial: bool = False, required: Mapping[str, int] | None = None) -> None:
        """Install a verified index with everything it names; the index is swapped last.

        Every blob it lists must already be in the store (the origin's writer and the
        replica's pull put them there first), or only those of ``required`` (sha256 →
        size: an edge's channel targets, ``readiness.must_hold``; it fills the others on
        demand); each release's ``.minisig`` is written beside them (from the index, so a
        replica's store is as complete as the origin's). Then
        ``history.json`` when ``history`` is given (it must be the chain the index signs;
        None leaves the file as it is), then ``index.json``, then the local state: the
        highest serial accepted (``reset_serial``: set to this one, the operator's explicit
        override) and the upstream ``marks``.
        A crash at any point leaves the previous index in place, or this one complete.

        Raises:
            BlobUnavailable: a blob required is not in the store.
            StoreError: the file system refuses.
        """
        index = signed.index
        if history is not None and history.head != index.history:
            raise HistoryError(None, f"refusing to install serial {signed.serial}: the history "
                               "given is not the one its index signs")
        # Per-release work runs on every install, thousands of times at scale: plain
        # string paths and one directory listing per package, not a Path and a stat each.
        blob_dir = str(self.blob_dir)
        for sha256, size in sorted((index.blob_sizes() if required is None
                                    else required).items()):
            fault = check_blob(f"{blob_dir}/{sha256}", sha256, size, deep=False)
            if fault is not None:
                raise BlobUnavailable(sha256, fault)
        todo: list[tuple[str, str, str]] = []
        for package, pkg in index.packages.items():
            known = previous.packages.get(package) if previous is not None else None
            try:
                present = set(os.listdir(self.signature_dir / package))  # noqa: PTH208
            except FileNotFoundError:
                present = set()
            for version, release in pkg.releases.items():
                before = known.releases.get(version) if known is not None else None
                if before is not None and before.minisig == release.minisig \
                        and f"{version}.minisig" in present:
                    continue  # written by an earlier install: no need to read it again
                todo.append((package, version, release.minisig))
        # A few files (a sync pass, a publish) are made durable one by one. Many (a key
        # switch rewrites every release's .minisig: 5,000 fsync pairs took 39 s here, with
        # the writers' lock held) are renamed into place without an fsync each, and one
        # flush of the file system makes them all durable before the index is swapped; a
        # flush that also writes back whatever else is dirty on that file system (the
        # export just archived, other programs' files), so not for a few.
        each = len(todo) <= _FSYNC_EACH_MAX
        written = sum(self._write_signature(*item, durable=each) for item in todo)
        if written and not each:
            sync_filesystem(self.signature_dir)
        if history is not None:
            atomic_write(self.history_path, history.render())
        atomic_write(self.index_path, signed.document)
        self.state.record_serial(signed.serial, reset=reset_serial, marks=marks)

    def _write_signature(self, package: str, version: str, minisig: str, *,
                         durable: bool) -> int:
        """Write one ``.minisig`` atomically (durably: see ``install``); 1 if written."""
        path = self.signature_path(package, version)
        data = minisig.encode()
        try:
            if path.read_bytes() == data:
                return 0
        except FileNotFoundError:
            pass
        try:
            if not path.parent.is_dir():
                make_dirs(path.parent)
                if durable:  # the new package directory's own entry, too
                    fsync_dir(path.parent.parent)
        except OSError as err:
            raise StoreError(f"cannot create {path.parent}: {err.strerror}") from err
        atomic_write(path, data, durable=durable)
        return 1

    # --- local state (store.state) -------------------------------------------------------

    def load_pull_status(self) -> PullStatus | None:
        """The replica's lag facts, None where no pull loop ever wrote them (an origin)."""
        return load_pull_status(self.pull_status_path)

    def save_pull_status(self, status: PullStatus) -> None:
        save_pull_status(self.pull_status_path, status)
