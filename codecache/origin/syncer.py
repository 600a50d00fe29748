"""The sync pass: a source's tags become signed releases in the store.

Owns which tags are published (new ones that are valid versions matching the package's
``tag_pattern``, in version order), building each (export, tarball, sign, file the blob),
committing them in batches (``_Batch``), moving the package's auto channel to the highest
new release, noticing tags that changed after they were published (mutated tags:
reported in the log and ``state.json``, never republished), and keeping the tags it cannot
build as they are (refused tags: an unsafe tree, a file it cannot archive) in ``state.json``
until they build or are gone, so ``status`` and ``check`` show them. One pass is one locked store
transaction per commit (``writer``); the sync worker records its changes as ``sync``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from codecache.core.config import Config, PackageConfig
from codecache.core.errors import (
    CodecacheError,
    ConfigError,
    PackageNotFound,
    ReleaseNotFound,
    StoreError,
    UpstreamError,
)
from codecache.core.history import SYNC_ACTOR, Actor
from codecache.core.index import EMPTY, Index, Package, Release, add_release, release_comment
from codecache.core.names import is_version, version_key
from codecache.origin.ahead import Ahead, build_workers
from codecache.origin.build import Built, build_release
from codecache.origin.signer import Signer
from codecache.origin.sources.base import Source, Tag, release_ref
from codecache.origin.writer import StoreWriter
from codecache.store.state import MutatedTag, RefusedTag
from codecache.store.store import Store

log = logging.getLogger("codecache.sync")


@dataclass(slots=True)
class SyncReport:
    published: list[str] = field(default_factory=list)     # "package version"
    skipped: list[str] = field(default_factory=list)       # "package tag: reason"
    mutated: list[MutatedTag] = field(default_factory=list)
    refused: list[RefusedTag] = field(default_factory=list)
    # Per package synced: its new tags that the pass did not try (it ended early).
    untried: dict[str, set[str]] = field(default_factory=dict)
    serial: int = 0


class Syncer:
    """Publishes the tags ``source`` lists for the configured packages."""

    def __init__(self, config: Config, store: Store, writer: StoreWriter, signer: Signer,
                 source: Source) -> None:
        self._config = config
        self._store = store
        self._writer = writer
        self._signer = signer
        self._source = source
        self._warned: set[tuple[str, str]] = set()  # skipped tags already logged as warnings
        self._refused: dict[tuple[str, str], tuple[str, str]] = {}  # recorded: (source, code)
        self.progress: Callable[[], None] = _nothing  # called before each tag is built

    def sync_once(self, only: str | None = None) -> SyncReport:
        """Poll every configured package (or ``only``) once and publish new tags.

        Each package commits on its own (DESIGN.md §6): one whose source cannot be listed
        or fetched does not hold up the others, and what it published before failing
        stays; the first such error is raised after the rest of the pass is committed.

        Raises:
            PackageNotFound: ``only`` is not configured.
            UpstreamError: a package's source failed (the others' changes are committed).
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
        writer = self._writer
        writer.acting = Actor(SYNC_ACTOR, writer.actor.uid)
        with writer.locked():
            self._refused = {(r.package, r.version): (r.source, r.code)
                             for r in self._store.state.load().refused_tags}
            index = writer.load()
            if index is EMPTY:
                index = writer.commit(index)
            for pkg in packages:
                if pkg.name not in listings:
                    continue
                try:
                    index = self._sync_package(index, pkg, listings[pkg.name], report)
                except UpstreamError as err:
                    if failures:
                        log.error("cannot sync package=%s: %s", pkg.name, err,
                                  extra={"package": pkg.name, "error": str(err)})
                    failures.append(err)
                    index = writer.load()   # what it committed before failing stays
            self._record_mutations(report.mutated)
            self._store.state.settle_refusals(
                {name: ([r for r in report.refused if r.package == name], untried)
                 for name, untried in report.untried.items()},
                [p.name for p in self._config.packages])
            # Even while the source is away: pilots need an index that does not expire.
            index = writer.resign_if_due(index)
            report.serial = index.serial
        if failures:
            raise failures[0]
        return report

    def import_one(self, index: Index, package: str, version: str) -> Index:
        """Publish tag ``version`` of ``package`` now (a release manager's publish of a tag
        the sync worker has not published yet), committed with the auto channel's move.

        Raises:
            PackageNotFound, ReleaseNotFound, ConfigError (not a publishable tag),
            UpstreamError.
        """
        pkg = self._config.package(package)
        if pkg is None:
            raise PackageNotFound(package)
        reason = _skip_reason(pkg, version)
        if reason is not None:
            raise ConfigError(f"cannot publish {package} {version}: {reason}")
        tag = next((t for t in self._source.list_tags(pkg) if t.name == version), None)
        # prepared: a git tag's commit fetched, its time and author read
        ready = [] if tag is None else self._source.prepare(pkg, [tag])
        if not ready:
            raise ReleaseNotFound(package, version)
        build = partial(self._build, pkg, ready[0], _size_hint(index, pkg), self._writer.discard)
        return self._writer.commit(self._add_tag(index, pkg, ready[0], build, move_auto=True))

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
        # Until tried, each new tag keeps what state.json says of it (a refusal).
        untried = report.untried[pkg.name] = {t.name for t in new}
        if new:
            new = self._source.prepare(pkg, new)
        published: list[str] = []
        batch = _Batch(index)
        # Trees a source may read concurrently (git: a cat-file process each) are built
        # ahead, a few at once, and taken in version order: signing, the index, batches and
        # refusals are as in a serial pass. Otherwise (Subversion) each is built when taken.
        concurrent = self._source.for_kind(pkg.kind).concurrent_trees
        workers = build_workers() if concurrent else 1

        def build(tag: Tag) -> Built:
            # Sizes only matter to a source that exports (serial: the index as of now). Its
            # thousands of unlinks are done while the release is signed and committed (the
            # commit waits for them), not before.
            hint = None if concurrent else _size_hint(batch.index, pkg)
            return self._build(pkg, tag, hint, _remove if concurrent else self._writer.discard)

        try:
            with Ahead(new, build, workers, f"build-{pkg.name}") as builds:
                for position, tag in enumerate(new, start=1):
                    self.progress()
                    # The auto channel moves once, with the last (highest) new tag, in the
                    # same commit: a crash before it leaves that tag unsynced, so the next
                    # pass moves it.
                    is_last = position == len(new)
                    try:
                        batch.index = self._add_tag(batch.index, pkg, tag, builds.take,
                                                    move_auto=is_last)
                    except (UpstreamError, ConfigError, StoreError):
                        raise  # the environment, not this tag: end the pass (disk full: 3)
                    except CodecacheError as err:
                        untried.discard(tag.name)
                        self._refuse(pkg, tag, err, report)
                        continue
                    untried.discard(tag.name)
                    batch.tags.append(tag)
                    if is_last or batch.due():
                        self._commit_batch(batch, pkg, published, report)
        finally:
            # An error of the environment ends the pass: what was built before it is
            # still published (its blobs are on disk already), as it was tag by tag.
            if batch.tags:
                self._commit_batch(batch, pkg, published, report)
        return self._auto_move_after_failure(batch.index, pkg, published)

    def _refuse(self, pkg: PackageConfig, tag: Tag, err: CodecacheError,
                report: SyncReport) -> None:
        """Tag ``tag`` cannot be built as it is: reported, kept in ``state.json`` (news
        logged as an error; a refusal already recorded at the same source only at debug
        level, so a refused tag does not fill the log every pass)."""
        refused = RefusedTag(pkg.name, tag.name, tag.ref.pin.label, err.code, str(err),
                             self._writer.now())
        report.refused.append(refused)
        report.skipped.append(f"{pkg.name} {tag.name}: {err}")
        known = self._refused.get((pkg.name, tag.name)) == (refused.source, refused.code)
        log.log(logging.DEBUG if known else logging.ERROR,
                "tag not published package=%s tag=%r %s: %s", pkg.name, tag.name,
                refused.source, err, extra={"package": pkg.name, "version": tag.name,
                                            "source": refused.source, "error": str(err)})

    def _commit_batch(self, batch: _Batch, pkg: PackageConfig, published: list[str],
                      report: SyncReport) -> None:
        """Commit the releases built since the last commit, in one new index serial."""
        tags, batch.tags = batch.tags, []   # a failed commit is not tried twice
        started = time.monotonic()
        batch.index = self._writer.commit(batch.index)
        batch.committed(time.monotonic() - started)
        for tag in tags:
            published.append(tag.name)
            report.published.append(f"{pkg.name} {tag.name}")
            log.info("release published package=%s version=%s %s serial=%d",
                     pkg.name, tag.name, tag.ref.pin.label, batch.index.serial,
                     extra={"package": pkg.name, "version": tag.name,
                            "source": tag.ref.pin.label, "serial": batch.index.serial})

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
        return self._writer.commit(self._writer.move(index, pkg.name, pkg.auto_channel, target))

    def _add_tag(self, index: Index, pkg: PackageConfig, tag: Tag, build: Callable[[], Built],
                 *, move_auto: bool) -> Index:
        """``index`` with ``tag`` built (``build``: its archive filed), signed and added."""
        release = self._sign(pkg, tag, build())
        index = add_release(index, pkg.name, release)
        auto = pkg.auto_channel
        if move_auto and auto and index.packages[pkg.name].highest_live() == tag.name:
            index = self._writer.move(index, pkg.name, auto, tag.name)
        return index

    def _build(self, pkg: PackageConfig, tag: Tag, expected_size: int | None,
               discard: Callable[[Path], None]) -> Built:
        """Export and archive one tag and file its blob (any thread: no index, no key).

        ``expected_size``: the size of the package's latest release (``build_release``);
        ``discard`` removes the scratch directory.
        """
        scratch = self._store.scratch_dir(f"export-{pkg.name}-")
        try:
            built = build_release(self._source, tag.ref, pkg.prefix, scratch, expected_size)
            self._store.add_blob(built.archive, built.info.sha256)
        finally:
            discard(scratch)
        return built

    def _sign(self, pkg: PackageConfig, tag: Tag, built: Built) -> Release:
        """The release record of ``tag``, built (its blob filed) and signed."""
        pin = tag.ref.pin   # what the index and the comment record
        info = built.info
        comment = release_comment(pkg.name, tag.name, info.sha256, info.size, pin)
        minisig, signatures = self._signer.sign_release(built.prehash, comment)
        return Release(version=tag.name, sha256=info.sha256, size=info.size,
                       tar_sha256=info.tar_sha256, source=pin, author=tag.ref.author,
                       date=tag.ref.time, minisig=minisig, signatures=signatures)

    def _check_mutation(self, pkg: PackageConfig, release: Release, tag: Tag) -> MutatedTag | None:
        # Compared as the source's opaque ids (the interface's word for a revision).
        if tag.ref.id == release_ref(release).id:
            return None
        return MutatedTag(pkg.name, tag.name, release.source.kind, release.source.id,
                          tag.ref.id, self._writer.now())

    def _record_mutations(self, found: list[MutatedTag]) -> None:
        self._store.state.record_mutations(found, announce=_report_mutations)


def _report_mutations(news: list[MutatedTag]) -> None:
    for m in news:
        fields = m.fields()
        log.error("MUTATED TAG package=%s version=%s %s: the tag changed after it was "
                  "published; it is NOT republished, make a new tag", m.package, m.version,
                  " ".join(f"{k}={v}" for k, v in fields.items()),
                  extra={"package": m.package, "version": m.version, **fields})


def _nothing() -> None:
    pass


def _size_hint(index: Index, pkg: PackageConfig) -> int | None:
    """The size of the release added last (or last in the file): tags of one package are
    about the same size, and this is O(1) in a bulk import of thousands."""
    releases = index.packages.get(pkg.name, Package()).releases
    return next(reversed(releases.values())).size if releases else None


def _remove(scratch: Path) -> None:
    # A build ahead runs in a worker of its own already: its scratch directory (the tree is
    # read from the source, only the archive was there, now filed) goes right away. The
    # writer's sweeper (one directory at a time, from the main thread) is for exports.
    shutil.rmtree(scratch, ignore_errors=True)


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
