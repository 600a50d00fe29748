"""The origin's store transaction: load the index, change it, commit it under a new serial.

Owns reading the store's index through the trust rules before writing on top of it, the
serial rule (DESIGN.md §5), appending what changed to the release history under the new
serial (DESIGN.md §9: who, when, which serial), signing and installing the result,
re-signing before the index grows stale or when the signing keys change, channel moves at
a time after the previous move, and the release manager's publish and yank. Every change
is made under the store's lock by the caller (``locked``); what a commit signs is the
``signer``'s business, and where new releases come from the ``syncer``'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from codecache.core.config import Config
from codecache.core.errors import BlobUnavailable
from codecache.core.history import Actor, History, diff, import_history
from codecache.core.index import EMPTY, Index, Package, Release, move_channel, yank
from codecache.core.names import check_channel, check_package, check_version
from codecache.core.trust import SignedIndex
from codecache.origin.signer import Signer
from codecache.store.files import MISSING, FileIdentity, blob_fault, file_identity
from codecache.store.store import Store
from codecache.store.trusted import read_trusted_index

log = logging.getLogger("codecache.sync")

# Adds ``version`` of ``package`` to the index from its source (publishing a tag not
# synced yet); raises what the import raises.
Importer = Callable[[Index, str, str], Index]


class StoreWriter:
    """Writes one store's index, signed by ``signer``; ``actor`` is who publish and yank
    record in the history (the sync pass records ``acting``, set by the caller)."""

    def __init__(self, config: Config, store: Store, signer: Signer, actor: Actor) -> None:
        self._config = config
        self._store = store
        self._signer = signer
        self.actor = actor                      # who publish and yank record (DESIGN.md §9)
        self.acting = actor                     # who the operation under way records
        self._history: History | None = None    # the history installed or verified last
        self._history_id: FileIdentity | None = None
        self._held: SignedIndex | None = None   # the index this writer installed last
        self._sweeper = _Sweeper()              # removes export scratch in the background

    def locked(self) -> AbstractContextManager[None]:
        """The store's lock, held by one writer at a time (``StoreBusy`` otherwise)."""
        return self._store.locked()

    def discard(self, scratch: Path) -> None:
        """Remove ``scratch`` in the background; the next commit waits for it."""
        self._sweeper.remove(scratch)

    # --- the release manager's operations -------------------------------------------------

    def publish(self, package: str, version: str, channel: str, importer: Importer) -> Index:
        """Point ``channel`` at ``version``, importing the tag first (``importer``) if needed.

        Raises:
            InvalidName, PackageNotFound, ReleaseNotFound, ReleaseYanked, UpstreamError.
        """
        check_package(package)
        check_version(version)
        check_channel(channel)
        self.acting = self.actor
        with self.locked():
            index = self.load()
            if version not in index.packages.get(package, Package()).releases:
                index = importer(index, package, version)
            moved = self.move(index, package, channel, version)
            if moved is not index:
                index = self.commit(moved)
                log.info("channel moved package=%s channel=%s version=%s serial=%d",
                         package, channel, version, index.serial,
                         extra={"package": package, "channel": channel, "version": version,
                                "serial": index.serial})
            return index

    def yank(self, package: str, version: str, reason: str) -> Index:
        """Withdraw a release (it stays downloadable by its exact version URL).

        Raises:
            InvalidName, PackageNotFound, ReleaseNotFound, ChannelInUse.
        """
        check_package(package)
        check_version(version)
        self.acting = self.actor
        with self.locked():
            index = self.load()
            changed = yank(index, package, version, reason)
            if changed is not index:
                index = self.commit(changed)
                log.warning("release yanked package=%s version=%s reason=%r serial=%d",
                            package, version, reason, index.serial,
                            extra={"package": package, "version": version, "reason": reason,
                                   "serial": index.serial})
            return index

    # --- changes --------------------------------------------------------------------------

    def move(self, index: Index, package: str, channel: str, version: str) -> Index:
        """``move_channel`` at a time after the channel's previous move.

        HTTP date validators have one-second resolution and must never lie in the future
        (RFC 9110 §8.8.2.1), so a second move within a second waits for the next second.
        """
        previous = index.packages.get(package, Package()).channels.get(channel)
        while previous is not None and previous.version != version \
                and self.now() <= previous.moved_at:
            time.sleep(0.05)
        return move_channel(index, package, channel, version, self.now())

    def resign_if_due(self, index: Index) -> Index:
        """Commit ``index`` unchanged if it expires soon or the signing keys changed."""
        now = self.now()
        interval = self._config.signing.resign_interval
        if index.generated + interval <= now or index.expires - interval <= now:
            index = self.commit(index)
            log.info("index re-signed serial=%d", index.serial, extra={"serial": index.serial})
        elif self._signer.out_of_date(index, self._held):
            index = self.commit(index)
            log.info("index re-signed by keys %s serial=%d", ",".join(self._signer.keyids),
                     index.serial, extra={"serial": index.serial})
        return index

    # --- the transaction ------------------------------------------------------------------

    def load(self) -> Index:
        """The store's index, taken through the same trust rules as every other role.

        Expired is fine here (re-signing is how it stops being expired); a rollback or a
        tampered index on disk is refused, so the writer never signs on top of it.

        Raises:
            IndexRefused: the index on disk is not acceptable.
        """
        raw = self._store.read_document()
        if raw is None:
            self._held = None
            return EMPTY
        local = self._store.state.load()
        held = self._held
        if held is not None and raw == held.document and local.highest_serial <= held.serial:
            return held.index  # the very bytes this writer verified or signed: unchanged
        signed = read_trusted_index(self._store, self._signer.keys, now=self.now(),
                                    document=raw, floor=local.highest_serial)
        self._held = signed
        return signed.index

    def commit(self, index: Index) -> Index:
        """Sign ``index`` under the next serial and install it, with its history entries.

        Serials are time-based (DESIGN.md §5): ``max(highest written or accepted + 1, now)``,
        so a promoted or restored origin that is behind never issues a serial below what
        replicas hold. What changed since the index held becomes history entries under that
        serial; a re-sign alone adds none and leaves ``history.json`` untouched.

        Raises:
            HistoryError: the history on disk does not verify against the index held
                (the writer never appends to a history it cannot vouch for).
        """
        now = self.now()
        old = self._held.index if self._held is not None else EMPTY
        highest = max(index.serial, self._store.state.load().highest_serial)
        serial = max(highest + 1, now)
        changes = diff(old, index)
        history: History | None = None
        head = old.history
        if changes or head is None:
            history = self._base_history(old).append(changes, time=now, actor=self.acting,
                                                     serial=serial)
            head = history.head
        new = dataclasses.replace(self._signer.complete(index, self._blob_prehash),
                                  serial=serial, generated=now, history=head,
                                  expires=now + int(self._config.signing.index_expiry),
                                  primary_since=self._signer.primary_since(index, self._held,
                                                                           now))
        signed = self._signer.sign_index(new)
        self._store.install(signed, previous=old if self._held else None, history=history)
        self._sweeper.wait()
        self._held = signed
        if history is not None:
            self._history = history
            self._history_id = file_identity(self._store.history_path)
        return new

    def _base_history(self, held: Index) -> History:
        """The history to append to: the one on disk, verified against the index held.

        A store that predates history starts it here with the ``import`` entries of the
        index held (none for a new store). The verified history is kept while the file
        stays the same, so a sync worker does not re-read it every pass.
        """
        if held.history is None:
            imported = import_history(held, self.acting.uid)
            if len(imported):
                log.warning("starting the release history of this store: %d entries imported "
                            "from index serial %d (actor import)", len(imported), held.serial)
            return imported
        identity = file_identity(self._store.history_path)
        if self._history is None or self._history.head != held.history \
                or identity != self._history_id:
            self._history = self._store.load_history(held.history)
            self._history_id = identity
        return self._history

    def _blob_prehash(self, release: Release) -> bytes:
        """BLAKE2b-512 of a release's blob, after checking it is the bytes the index names.

        Raises:
            BlobUnavailable: the blob is missing or not the bytes its sha256 names.
        """
        path = self._store.blob_path(release.sha256)
        blake, sha = hashlib.blake2b(digest_size=64), hashlib.sha256()
        length = 0
        try:
            with path.open("rb") as fh:   # one read for both digests: not check_blob's
                while chunk := fh.read(1 << 20):
                    blake.update(chunk)
                    sha.update(chunk)
                    length += len(chunk)
        except FileNotFoundError:
            raise BlobUnavailable(release.sha256, MISSING) from None
        except OSError as err:
            raise BlobUnavailable(release.sha256, f"cannot be read: {err.strerror}") from err
        fault = blob_fault(release.sha256, release.size, length, sha.hexdigest())
        if fault is not None:
            raise BlobUnavailable(release.sha256, f"{fault}; not signing it")
        return blake.digest()

    @staticmethod
    def now() -> int:
        return int(time.time())


class _Sweeper:
    """Removes one scratch directory at a time in a thread of its own."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None

    def remove(self, path: Path) -> None:
        self.wait()
        self._thread = threading.Thread(target=shutil.rmtree, args=(path,),
                                        kwargs={"ignore_errors": True}, name="sweeper")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
