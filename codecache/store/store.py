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
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
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

from codecache.core.errors import (
    BlobUnavailable,
    HistoryError,
    IndexRefused,
    NoIndex,
    StoreBusy,
    StoreError,
)
from codecache.core.history import EMPTY_HISTORY, History
from codecache.core.history import load as load_history
from codecache.core.history import verify as verify_history
from codecache.core.index import HistoryHead, Index
from codecache.core.signing import PublicKey
from codecache.core.trust import Mark, SignedIndex, TrustState, verify

_CHUNK = 1 << 20
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # no C library to ask: fall back to sync()
    _LIBC = None
_TMP_MARK = ".tmp-"
_FSYNC_EACH_MAX = 16   # signatures written in one install that get an fsync each


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
    marks: Mapping[str, Mark] = field(default_factory=dict)   # per upstream (trust.offered)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PullStatus:
    """A replica's lag facts (``replica.json``), written by its pull loop after every pull.

    Read by the server (``/readyz``, ``/metrics``, the status page) and ``status``, which
    may run in other processes than the pull loop.
    """

    upstream: str | None = None        # the upstream the held index came from
    serial: int = 0                    # the serial held
    confirmed_at: float = 0.0          # last pull that confirmed it current
    attempted_at: float = 0.0          # last pull, whatever its result
    last_error: str | None = None      # why the last pull did not confirm, if it did not
    # Counters since the pull loop started (exposed by /metrics as Prometheus counters).
    refusals: Mapping[str, int] = field(default_factory=dict)   # refusal reason → count
    errors: Mapping[str, int] = field(default_factory=dict)     # upstream error → count
    pulls: Mapping[str, int] = field(default_factory=dict)      # result → count
    blobs_fetched: int = 0
    # When each refusal reason was last seen (Unix time), so a check can tell a refusal of
    # the last hour from one of last week while the counters keep growing.
    refused_at: Mapping[str, float] = field(default_factory=dict)


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
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{_TMP_MARK}", dir=path.parent)
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
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class Store:
    """One store directory. Cheap to construct; holds no open files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index_path = root / "index.json"
        self.history_path = root / "history.json"
        self.state_path = root / "state.json"
        self.pull_status_path = root / "replica.json"
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
        raw = self.read_document()
        if raw is None:
            raise NoIndex(f"store {self.root} has no index yet (run codecache sync)")
        return verify(raw, keys)

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

    def trust_state(self, keys: Mapping[str, PublicKey]) -> TrustState:
        """What this store accepted before, with its index (None if absent or refused)."""
        state = self.load_state()
        try:
            held: SignedIndex | None = self.read_signed(keys)
        except (NoIndex, IndexRefused):
            held = None
        return TrustState(state.highest_serial, held, state.marks)

    def install(self, signed: SignedIndex, *, previous: Index | None = None,
                history: History | None = None, marks: Mapping[str, Mark] | None = None,
                reset_serial: bool = False) -> None:
        """Install a verified index with everything it names; the index is swapped last.

        Every blob it lists must already be in the store (the origin's writer and the
        replica's pull put them there first); each release's ``.minisig`` is written beside
        them (from the index, so a replica's store is as complete as the origin's). Then
        ``history.json`` when ``history`` is given (it must be the chain the index signs;
        None leaves the file as it is), then ``index.json``, then the local state: the
        highest serial accepted (``reset_serial``: set to this one, the operator's explicit
        override) and the upstream ``marks``.
        A crash at any point leaves the previous index in place, or this one complete.

        Raises:
            BlobUnavailable: a blob the index lists is not in the store.
            StoreError: the file system refuses.
        """
        index = signed.index
        if history is not None and history.head != index.history:
            raise HistoryError(None, f"refusing to install serial {signed.serial}: the history "
                               "given is not the one its index signs")
        # Per-release work runs on every install, thousands of times at scale: plain
        # string paths and one directory listing per package, not a Path and a stat each.
        blob_dir = str(self.blob_dir)
        for sha256, size in sorted(index.blob_sizes().items()):
            try:
                actual = os.stat(f"{blob_dir}/{sha256}").st_size  # noqa: PTH116 - hot loop
            except FileNotFoundError:
                raise BlobUnavailable(sha256, "missing from the store") from None
            if actual != size:
                raise BlobUnavailable(sha256, f"{actual} bytes on disk, {size} listed")
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
        state = self.load_state()
        highest = signed.serial if reset_serial else max(state.highest_serial, signed.serial)
        new_marks = state.marks if marks is None else marks
        self.save_state(dataclasses.replace(state, highest_serial=highest, marks=new_marks))

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

    # --- local state ----------------------------------------------------------------------

    def load_pull_status(self) -> PullStatus | None:
        """The replica's lag facts, None where no pull loop ever wrote them (an origin)."""
        try:
            raw = json.loads(self.pull_status_path.read_bytes())
            return PullStatus(
                upstream=raw.get("upstream"), serial=int(raw.get("serial", 0)),
                confirmed_at=float(raw.get("confirmed_at", 0.0)),
                attempted_at=float(raw.get("attempted_at", 0.0)),
                last_error=raw.get("last_error"),
                refusals=_counts(raw.get("refusals", {})), errors=_counts(raw.get("errors", {})),
                pulls=_counts(raw.get("pulls", {})), blobs_fetched=int(raw.get("blobs_fetched", 0)),
                refused_at={str(k): float(v) for k, v in raw.get("refused_at", {}).items()})
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, AttributeError) as err:
            raise StoreError(f"{self.pull_status_path} is malformed: {err}") from err

    def save_pull_status(self, status: PullStatus) -> None:
        data = {"upstream": status.upstream, "serial": status.serial,
                "confirmed_at": status.confirmed_at, "attempted_at": status.attempted_at,
                "last_error": status.last_error, "refusals": dict(status.refusals),
                "errors": dict(status.errors), "pulls": dict(status.pulls),
                "blobs_fetched": status.blobs_fetched, "refused_at": dict(status.refused_at)}
        # Advisory and rewritten every pull: atomic, but not worth an fsync each second.
        atomic_write(self.pull_status_path, json.dumps(data, sort_keys=True).encode(),
                     durable=False)

    def load_state(self) -> LocalState:
        try:
            raw = json.loads(self.state_path.read_bytes())
            mutated = tuple(MutatedTag(**m) for m in raw.get("mutated_tags", []))
            marks = {url: Mark(int(m["serial"]), str(m["digest"]))
                     for url, m in raw.get("marks", {}).items()}
            return LocalState(int(raw.get("highest_serial", 0)), mutated, marks,
                              dict(raw.get("extra", {})))
        except FileNotFoundError:
            return LocalState()
        except (ValueError, TypeError, KeyError, AttributeError) as err:
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
            "marks": {url: {"serial": m.serial, "digest": m.digest}
                      for url, m in sorted(state.marks.items())},
            "extra": state.extra,
        }
        atomic_write(self.state_path, json.dumps(data, indent=1, sort_keys=True).encode())


def _counts(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError("expected an object of counts")
    return {str(k): int(v) for k, v in value.items()}
