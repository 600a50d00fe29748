"""The origin's writer: the sync worker and the release-manager operations.

Owns: turning a source's tags (Subversion) into signed releases in the store (export, tarball, sign,
file the blob), moving auto channels, publishing/yanking on request, re-signing the index
before it grows stale, and noticing tags that changed after they were published. Every
change is one locked, atomic store transaction that ends with a new index serial and
appends what it did to the release history (DESIGN.md §9: who, when, which serial); the
sync worker acts as ``sync``, publish and yank as the release manager's ``Actor``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from codecache.core.config import Config, PackageConfig
from codecache.core.errors import (
    BlobUnavailable,
    CodecacheError,
    ConfigError,
    PackageNotFound,
    ReleaseNotFound,
    StoreBusy,
    StoreError,
    UpstreamError,
)
from codecache.core.history import SYNC_ACTOR, Actor, History, diff, import_history
from codecache.core.index import (
    EMPTY,
    Index,
    Package,
    Release,
    add_release,
    minisig_keyid,
    move_channel,
    release_comment,
    yank,
)
from codecache.core.names import (
    check_channel,
    check_package,
    check_version,
    is_version,
    version_key,
)
from codecache.core.signing import PublicKey, SecretKey, normalise_keyid, sign_prehashed
from codecache.core.trust import SignedIndex, sign_index
from codecache.origin.build import build_release
from codecache.origin.sources.base import Source, Tag, release_ref, svn_location
from codecache.store.files import MISSING, FileIdentity, blob_fault, file_identity
from codecache.store.state import MutatedTag
from codecache.store.store import Store
from codecache.store.trusted import read_trusted_index

log = logging.getLogger("codecache.sync")


@dataclass(slots=True)
class SyncReport:
    published: list[str] = field(default_factory=list)     # "package version"
    skipped: list[str] = field(default_factory=list)       # "package tag: reason"
    mutated: list[MutatedTag] = field(default_factory=list)
    serial: int = 0


class Origin:
    """Writes the store of an origin. Construct once per process, pass explicitly."""

    def __init__(self, config: Config, store: Store, secret: SecretKey | Sequence[SecretKey],
                 trusted: dict[str, PublicKey], source: Source, actor: Actor) -> None:
        """``secret``: the signing key, or several during a rotation (the primary first)."""
        self._config = config
        self._actor = actor                     # who publish and yank record (DESIGN.md §9)
        self._acting = actor                    # who the operation under way records
        self._history: History | None = None    # the history installed or verified last
        self._history_id: FileIdentity | None = None
        self._store = store
        self._secrets = [secret] if isinstance(secret, SecretKey) else list(secret)
        if not self._secrets:
            raise ConfigError("no signing key")
        self._keys = {**trusted, **{s.public.keyid: s.public for s in self._secrets}}
        self._signing_keyids: list[str] | None = None
        self._primary = self._secrets[0].public.keyid
        self._keyid_set = frozenset(k.public.keyid for k in self._secrets)
        self._source = source
        self._held: SignedIndex | None = None   # the index this writer installed last
        self._warned: set[tuple[str, str]] = set()  # skipped tags already logged as warnings
        self._progress: Callable[[], None] = _nothing  # called before each tag is built
        self._sweeper = _Sweeper()              # removes export scratch in the background

    # --- public operations ----------------------------------------------------------------

    def sync_once(self, only: str | None = None) -> SyncReport:
        """Poll every configured package (or ``only``) once and publish new tags.

        One package whose Subversion cannot be listed does not hold up the others; its
        error is raised after the rest of the pass is committed.

        Raises:
            PackageNotFound: ``only`` is not configured.
            UpstreamError: a package's Subversion could not be listed (nothing of it changed).
            StoreError, StoreBusy: the store cannot be written (what was committed stays).
        """
        packages = self._packages(only)
        listings: dict[str, list[Tag]] = {}
        failures: list[UpstreamError] = []
        for pkg in packages:
            try:
                listings[pkg.name] = self._source.list_tags(pkg)
            except UpstreamError as err:
                if failures:  # the first failure is raised at the end; log the others
                    log.error("cannot list tags package=%s: %s", pkg.name, err,
                              extra={"package": pkg.name, "error": str(err)})
                failures.append(err)
        if failures and not listings and not self._store.index_path.exists():
            raise failures[0]  # nothing to publish, nothing to re-sign: leave the store alone
        report = SyncReport()
        self._acting = Actor(SYNC_ACTOR, self._actor.uid)
        with self._store.locked():
            index = self._load()
            if index is EMPTY:
                index = self._commit(index)
            for pkg in packages:
                if pkg.name in listings:
                    index = self._sync_package(index, pkg, listings[pkg.name], report)
            self._record_mutations(report.mutated)
            # Even while Subversion is away: pilots need an index that does not expire.
            index = self._resign_if_due(index)
            report.serial = index.serial
        if failures:
            raise failures[0]
        return report

    def publish(self, package: str, version: str, channel: str) -> Index:
        """Point ``channel`` at ``version``, importing the tag first if needed.

        Raises:
            InvalidName, PackageNotFound, ReleaseNotFound, ReleaseYanked, UpstreamError.
        """
        check_package(package)
        check_version(version)
        check_channel(channel)
        self._acting = self._actor
        with self._store.locked():
            index = self._load()
            if version not in index.packages.get(package, Package()).releases:
                index = self._import_one(index, package, version)
            moved = self._move(index, package, channel, version)
            if moved is not index:
                index = self._commit(moved)
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
        self._acting = self._actor
        with self._store.locked():
            index = self._load()
            changed = yank(index, package, version, reason)
            if changed is not index:
                index = self._commit(changed)
                log.warning("release yanked package=%s version=%s reason=%r serial=%d",
                            package, version, reason, index.serial,
                            extra={"package": package, "version": version, "reason": reason,
                                   "serial": index.serial})
            return index

    def run(self, stop: threading.Event, only: str | None = None, *,
            on_pass: Callable[[int | None], None] = lambda serial: None,
            heartbeat: Callable[[], None] = lambda: None,
            beat_every: float | None = None) -> None:
        """Poll every ``sync.interval`` until ``stop`` is set; back off while svn/store fail.

        ``on_pass(serial)`` is called after every pass (``serial`` None if it failed);
        ``heartbeat()`` before each tag is built and at least every ``beat_every`` seconds
        while waiting, so the service manager's watchdog (``codecache.telemetry.notify``) hears from
        this loop itself: a stuck loop is restarted, a long first sync is not.
        """
        delay = self._config.sync.interval
        self._progress = heartbeat
        while not stop.is_set():
            serial: int | None = None
            try:
                report = self.sync_once(only)
                delay = self._config.sync.interval
                serial = report.serial
                log.debug("sync done serial=%d published=%d", report.serial,
                          len(report.published),
                          extra={"serial": report.serial, "published": len(report.published)})
            except (UpstreamError, StoreError, StoreBusy) as err:
                # Conditions that clear by themselves (svn away, disk full, a long publish
                # holding the lock): the worker backs off instead of exiting.
                delay = min(max(delay, 1.0) * 2, self._config.sync.max_backoff)
                log.error("sync failed, retrying in %.0fs: %s", delay, err,
                          extra={"retry_in": delay, "error": str(err)})
            on_pass(serial)
            end = time.monotonic() + delay
            while (left := end - time.monotonic()) > 0:
                if stop.wait(min(left, beat_every or left)):
                    break
                heartbeat()

    # --- steps ----------------------------------------------------------------------------

    def _packages(self, only: str | None) -> list[PackageConfig]:
        if only is None:
            return list(self._config.packages)
        pkg = self._config.package(only)
        if pkg is None:
            raise PackageNotFound(only)
        return [pkg]

    def _sync_package(self, index: Index, pkg: PackageConfig, tags: list[Tag],
                      report: SyncReport) -> Index:
        known = index.packages.get(pkg.name, Package()).releases
        new: list[Tag] = []
        for tag in sorted(tags, key=lambda t: version_key(t.name)):
            if tag.name in known:
                mutation = self._check_mutation(pkg, known[tag.name], tag)
                if mutation is not None:
                    report.mutated.append(mutation)
                continue
            reason = _skip_reason(pkg, tag.name)
            if reason is not None:
                report.skipped.append(f"{pkg.name} {tag.name}: {reason}")
                # Once per worker process: a stray tag must not fill the log every poll.
                level = logging.DEBUG if (pkg.name, tag.name) in self._warned else logging.WARNING
                self._warned.add((pkg.name, tag.name))
                log.log(level, "tag skipped package=%s tag=%r: %s", pkg.name, tag.name, reason)
                continue
            new.append(tag)
        published: list[str] = []
        batch = _Batch(index)
        try:
            for position, tag in enumerate(new, start=1):
                self._progress()
                # The auto channel moves once, with the last (highest) new tag, in the same
                # commit: a crash before it leaves that tag unsynced, so the next pass moves it.
                is_last = position == len(new)
                try:
                    batch.index = self._add_tag(batch.index, pkg, tag, move_auto=is_last)
                except (UpstreamError, ConfigError, StoreError):
                    raise  # the environment, not this tag: end the pass (disk full is exit 3)
                except CodecacheError as err:
                    report.skipped.append(f"{pkg.name} {tag.name}: {err}")
                    log.error("tag not published package=%s tag=%r: %s", pkg.name, tag.name,
                              err, extra={"package": pkg.name, "version": tag.name,
                                          "error": str(err)})
                    continue
                batch.tags.append(tag)
                if is_last or batch.due():
                    self._commit_batch(batch, pkg, published, report)
        finally:
            # An error of the environment ends the pass: what was built before it is
            # still published (its blobs are on disk already), as it was tag by tag.
            if batch.tags:
                self._commit_batch(batch, pkg, published, report)
        return self._auto_move_after_failure(batch.index, pkg, published)

    def _commit_batch(self, batch: _Batch, pkg: PackageConfig, published: list[str],
                      report: SyncReport) -> None:
        """Commit the releases built since the last commit, in one new index serial."""
        tags, batch.tags = batch.tags, []   # a failed commit is not tried twice
        started = time.monotonic()
        batch.index = self._commit(batch.index)
        batch.committed(time.monotonic() - started)
        for tag in tags:
            published.append(tag.name)
            report.published.append(f"{pkg.name} {tag.name}")
            _, revision = svn_location(tag.ref)
            log.info("release published package=%s version=%s revision=%d serial=%d",
                     pkg.name, tag.name, revision, batch.index.serial,
                     extra={"package": pkg.name, "version": tag.name,
                            "revision": revision, "serial": batch.index.serial})

    def _auto_move_after_failure(self, index: Index, pkg: PackageConfig,
                                 published: list[str]) -> Index:
        """Move the auto channel when the last new tag failed but an earlier one is highest."""
        if not pkg.auto_channel or not published:
            return index
        current = index.packages[pkg.name]
        target = current.highest_live()
        pointer = current.channels.get(pkg.auto_channel)
        if target is None or target not in published or (
                pointer is not None and pointer.version == target):
            return index
        return self._commit(self._move(index, pkg.name, pkg.auto_channel, target))

    def _import_one(self, index: Index, package: str, version: str) -> Index:
        pkg = self._config.package(package)
        if pkg is None:
            raise PackageNotFound(package)
        reason = _skip_reason(pkg, version)
        if reason is not None:
            raise ConfigError(f"cannot publish {package} {version}: {reason}")
        tag = next((t for t in self._source.list_tags(pkg) if t.name == version), None)
        if tag is None:
            raise ReleaseNotFound(package, version)
        return self._commit(self._add_tag(index, pkg, tag, move_auto=True))

    def _add_tag(self, index: Index, pkg: PackageConfig, tag: Tag, *, move_auto: bool) -> Index:
        # The size of the release added last (or last in the file): tags of one package
        # are about the same size, and this is O(1) in a bulk import of thousands.
        releases = index.packages.get(pkg.name, Package()).releases
        hint = next(reversed(releases.values())).size if releases else None
        release = self._build_release(pkg, tag, hint)
        index = add_release(index, pkg.name, release)
        auto = pkg.auto_channel
        if move_auto and auto and index.packages[pkg.name].highest_live() == tag.name:
            index = self._move(index, pkg.name, auto, tag.name)
        return index

    def _move(self, index: Index, package: str, channel: str, version: str) -> Index:
        """``move_channel`` at a time after the channel's previous move.

        HTTP date validators have one-second resolution and must never lie in the future
        (RFC 9110 §8.8.2.1), so a second move within a second waits for the next second.
        """
        previous = index.packages.get(package, Package()).channels.get(channel)
        while previous is not None and previous.version != version \
                and self._now() <= previous.moved_at:
            time.sleep(0.05)
        return move_channel(index, package, channel, version, self._now())

    def _build_release(self, pkg: PackageConfig, tag: Tag, expected_size: int | None) -> Release:
        """Export, archive, sign and file one tag; returns its release record.

        ``expected_size``: the size of the package's latest release (``build_release``).
        """
        url, revision = svn_location(tag.ref)   # what the index and the comment record
        scratch = self._store.scratch_dir(f"export-{pkg.name}-")
        try:
            built = build_release(self._source, tag.ref, pkg.prefix, scratch, expected_size)
            self._store.add_blob(built.archive, built.info.sha256)
        finally:
            # Thousands of unlinks: done while the release is signed and committed
            # (``_commit`` waits for them), not before.
            self._sweeper.remove(scratch)
        info, prehash = built.info, built.prehash
        comment = release_comment(pkg.name, tag.name, info.sha256, info.size, url, revision)
        signatures = {k.public.keyid: sign_prehashed(k, prehash, comment) for k in self._secrets}
        return Release(version=tag.name, sha256=info.sha256, size=info.size,
                       tar_sha256=info.tar_sha256, svn_url=url, revision=revision,
                       author=tag.ref.author, date=tag.ref.time,
                       minisig=signatures[self._secrets[0].public.keyid],
                       signatures=signatures if len(signatures) > 1 else {})

    # --- key rotation ---------------------------------------------------------------------

    def _keyids(self) -> list[str]:
        # Asked for every release at every commit: derived once (a public key costs).
        if self._signing_keyids is None:
            self._signing_keyids = [k.public.keyid for k in self._secrets]
        return self._signing_keyids

    def _release_signed(self, release: Release) -> bool:
        """Whether ``release`` carries exactly one signature per signing key, primary first."""
        keyids = self._keyid_set
        if not release.signatures:   # one signature: ``minisig``
            return len(keyids) == 1 and minisig_keyid(release.minisig) in keyids
        return release.signatures.keys() == keyids \
            and release.signatures.get(self._primary) == release.minisig

    def _keys_out_of_date(self, index: Index) -> bool:
        """The signing keys changed since ``index`` was signed (a rotation step)."""
        held = self._held
        if held is None or held.index is not index:
            return True
        return list(held.signed_by) != self._keyids() or not all(
            self._release_signed(r) for p in index.packages.values() for r in p.releases.values())

    def _complete_signatures(self, index: Index) -> Index:
        """Every release signed by every signing key, ``minisig`` by the primary.

        A key added to ``signing.secret_key`` signs the existing releases here, at the next
        commit; only releases lacking its signature are read (Ed25519 needs the blob's
        BLAKE2b). Signatures by keys no longer configured are dropped.
        """
        keyids = self._keyids()
        packages = dict(index.packages)
        for name, pkg in index.packages.items():
            releases = dict(pkg.releases)
            for version, release in pkg.releases.items():
                if self._release_signed(release):
                    continue
                have = release.all_signatures()
                missing = [k for k in self._secrets if k.public.keyid not in have]
                if missing:
                    prehash = self._blob_prehash(release)
                    comment = release.trusted_comment(name)
                    have.update({k.public.keyid: sign_prehashed(k, prehash, comment)
                                 for k in missing})
                    log.info("release signed by new key package=%s version=%s keys=%s",
                             name, version, ",".join(k.public.keyid for k in missing))
                signatures = {k: have[k] for k in keyids}
                releases[version] = dataclasses.replace(
                    release, minisig=signatures[keyids[0]],
                    signatures=signatures if len(signatures) > 1 else {})
            packages[name] = dataclasses.replace(pkg, releases=releases)
        return dataclasses.replace(index, packages=packages)

    def _primary_since(self, index: Index, now: int) -> int | None:
        """``now`` when this commit changes the primary key, else what ``index`` says.

        Catalogs date every ``.minisig`` no earlier than this, so a client revalidating
        with ``If-Modified-Since`` alone (``wget -N``) fetches the new primary's signature.
        """
        held = self._held
        previous = normalise_keyid(held.signed_by[0]) if held and held.signed_by else None
        if previous is not None and previous != self._keyids()[0]:
            return now
        return index.primary_since

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

    def _check_mutation(self, pkg: PackageConfig, release: Release, tag: Tag) -> MutatedTag | None:
        if tag.ref.id == release_ref(release).id:
            return None
        return MutatedTag(pkg.name, tag.name, release.revision, svn_location(tag.ref)[1],
                          self._now())

    def _record_mutations(self, found: list[MutatedTag]) -> None:
        for m in self._store.state.record_mutations(found):
            log.error("MUTATED TAG package=%s version=%s published_revision=%d now=%d: the "
                      "tag changed after it was published; it is NOT republished, make a "
                      "new tag", m.package, m.version, m.published_revision, m.current_revision,
                      extra={"package": m.package, "version": m.version,
                             "revision": m.current_revision,
                             "published_revision": m.published_revision})

    def _resign_if_due(self, index: Index) -> Index:
        now = self._now()
        interval = self._config.signing.resign_interval
        if index.generated + interval <= now or index.expires - interval <= now:
            index = self._commit(index)
            log.info("index re-signed serial=%d", index.serial, extra={"serial": index.serial})
        elif self._keys_out_of_date(index):
            index = self._commit(index)
            log.info("index re-signed by keys %s serial=%d", ",".join(self._keyids()),
                     index.serial, extra={"serial": index.serial})
        return index

    # --- store transactions ---------------------------------------------------------------

    def _load(self) -> Index:
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
        signed = read_trusted_index(self._store, self._keys, now=self._now(), document=raw,
                                    floor=local.highest_serial)
        self._held = signed
        return signed.index

    def _commit(self, index: Index) -> Index:
        """Sign ``index`` under the next serial and install it, with its history entries.

        Serials are time-based (DESIGN.md §5): ``max(highest written or accepted + 1, now)``,
        so a promoted or restored origin that is behind never issues a serial below what
        replicas hold. What changed since the index held becomes history entries under that
        serial; a re-sign alone adds none and leaves ``history.json`` untouched.

        Raises:
            HistoryError: the history on disk does not verify against the index held
                (the writer never appends to a history it cannot vouch for).
        """
        now = self._now()
        old = self._held.index if self._held is not None else EMPTY
        highest = max(index.serial, self._store.state.load().highest_serial)
        serial = max(highest + 1, now)
        changes = diff(old, index)
        history: History | None = None
        head = old.history
        if changes or head is None:
            history = self._base_history(old).append(changes, time=now, actor=self._acting,
                                                     serial=serial)
            head = history.head
        new = dataclasses.replace(self._complete_signatures(index), serial=serial,
                                  generated=now, history=head,
                                  expires=now + int(self._config.signing.index_expiry),
                                  primary_since=self._primary_since(index, now))
        signed = sign_index(self._secrets, new)
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
            imported = import_history(held, self._acting.uid)
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

    def _now(self) -> int:
        return int(time.time())


def _nothing() -> None:
    pass


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


class _Batch:
    """Releases built but not yet committed during one package's pass (a bulk import).

    A commit signs and writes the whole index, so its cost grows with the store; one per
    tag made a first import of thousands of tags quadratic. Tags are therefore committed
    in batches, the next commit due once the work since the last one is ``_BATCH_FACTOR``
    times what that commit cost (at most ``_BATCH_MAX_SECONDS``): commits stay a small,
    fixed share of the pass at any store size, a small sync still commits tag by tag, and
    a kill -9 loses at most one batch of exports (blobs already on disk are reused).
    """

    def __init__(self, index: Index) -> None:
        self.index = index                  # the index with the batch's releases added
        self.tags: list[Tag] = []           # built since the last commit
        self._due = time.monotonic()        # the first tag is committed on its own

    def due(self) -> bool:
        return time.monotonic() >= self._due

    def committed(self, cost: float) -> None:
        self._due = time.monotonic() + min(cost * _BATCH_FACTOR, _BATCH_MAX_SECONDS)


_BATCH_FACTOR = 20
_BATCH_MAX_SECONDS = 30.0


def _skip_reason(pkg: PackageConfig, tag: str) -> str | None:
    if not is_version(tag):
        return "not a valid version name"
    if not pkg.tag_pattern.search(tag):
        return f"does not match tag_pattern {pkg.tag_pattern.pattern!r}"
    return None
