"""Unit tests for the origin's writer (codecache.origin.sync and its parts) with a fake source.

``FakeSource`` is a fake (the seam named in STYLE.md: ``Source``): its tags live in a dict
and its export writes a small tree from memory, so a pass needs no Subversion. Everything
else is real: the store in a temporary directory, keys, tarballs, signatures, the history.
tests/integration builds from a real svnserve.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import time
from pathlib import Path

import pytest

from codecache.core.config import Config, PackageConfig, StoreConfig
from codecache.core.errors import SvnError
from codecache.core.history import Action, Actor
from codecache.core.index import Index, Release
from codecache.core.signing import SecretKey, generate_key, parse_minisig, verify_minisig
from codecache.core.trust import sign_index, verify
from codecache.origin.sources.base import ExportProgress, Source, SourceRef, Tag, svn_ref
from codecache.origin.sync import Origin
from codecache.store.state import MutatedTag
from codecache.store.store import Store

URL = "svn://fake/pilot"
DATE = 1_767_225_600   # the tags' commit time (every archived mtime)


class FakeSource(Source):
    """A fake source: per tag name a revision and the files of its tree."""

    def __init__(self) -> None:
        self.tags: dict[str, tuple[int, dict[str, bytes]]] = {}
        self.exports: list[SourceRef] = []
        self.failing: set[str] = set()    # tags whose export fails (the source went away)
        self.fifo: set[str] = set()       # tags whose tree holds a FIFO (cannot be archived)

    def tag(self, name: str, revision: int, text: str = "") -> None:
        self.tags[name] = (revision, {"bin/pilot.sh": f"#!/bin/sh\n# {name} {text}\n".encode()})

    def list_tags(self, package: PackageConfig) -> list[Tag]:
        return [Tag(name, svn_ref(package.tag_url(name), revision, DATE + revision, "rm"))
                for name, (revision, _) in self.tags.items()]

    def export(self, ref: SourceRef, destination: Path,
               progress: ExportProgress | None = None) -> None:
        self.exports.append(ref)
        name = ref.url.rpartition("/")[2]
        if name in self.failing:
            raise SvnError(f"svn export failed: connection reset (fake) {ref.url}")
        revision, files = self.tags[name]
        assert ref.id == str(revision)   # the reference the listing gave
        destination.mkdir()
        for path, data in files.items():
            (destination / path).parent.mkdir(parents=True, exist_ok=True)
            (destination / path).write_bytes(data)
        if name in self.fifo:
            os.mkfifo(destination / "fifo")


@pytest.fixture
def secret() -> SecretKey:
    return generate_key()


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.init()
    return store


def origin_of(store: Store, secret: SecretKey | list[SecretKey], source: Source,
              **package: str) -> Origin:
    pkg = PackageConfig("pilot", URL, auto_channel=package.get("auto_channel", "latest"))
    config = Config(store=StoreConfig(store.root), packages=(pkg,))
    return Origin(config, store, secret, {}, source, Actor("rm", 1000))


@pytest.fixture
def origin(store: Store, secret: SecretKey, source: FakeSource) -> Origin:
    return origin_of(store, secret, source)


def on_disk(store: Store, secret: SecretKey) -> Index:
    raw = store.read_document()
    assert raw is not None
    return verify(raw, {secret.public.keyid: secret.public}).index


def serials_of(store: Store, secret: SecretKey) -> dict[str, int]:
    """Version -> the serial of the commit that published it (from the history)."""
    index = on_disk(store, secret)
    assert index.history is not None
    history = store.load_history(index.history)
    return {e.change.version: e.serial for e in history.entries
            if e.change.action is Action.RELEASE}


def test_new_tags_become_signed_releases_and_invalid_tags_are_skipped(
        origin: Origin, source: FakeSource, store: Store, secret: SecretKey) -> None:
    source.tag("1.0.0", 3)
    source.tag("1.2.0", 5)
    source.tag("nightly", 6)    # does not match tag_pattern
    report = origin.sync_once()
    assert report.published == ["pilot 1.0.0", "pilot 1.2.0"]
    assert [line.split(":")[0] for line in report.skipped] == ["pilot nightly"]
    release = on_disk(store, secret).release("pilot", "1.0.0")
    assert (release.source.url, release.source.revision, release.author, release.date) == \
        (f"{URL}/tags/1.0.0", 3, "rm", DATE + 3)
    blob = store.blob_path(release.sha256).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == release.sha256 and len(blob) == release.size
    minisig = parse_minisig(release.minisig)
    verify_minisig({secret.public.keyid: secret.public}, minisig, io.BytesIO(blob))
    # The trusted comment names the Subversion URL@REV, as before the Source interface.
    assert minisig.trusted_comment == (
        f"codecache package=pilot version=1.0.0 sha256={release.sha256} size={release.size} "
        f"svn={URL}/tags/1.0.0@3")
    assert report.serial == on_disk(store, secret).serial
    exports = len(source.exports)
    assert origin.sync_once().published == []
    assert len(source.exports) == exports   # a published tag is never exported again


def test_the_auto_channel_follows_the_highest_new_release_not_a_late_hotfix(
        origin: Origin, source: FakeSource, store: Store, secret: SecretKey) -> None:
    source.tag("1.0.0", 3)
    source.tag("2.0.0", 4)
    origin.sync_once()
    assert on_disk(store, secret).packages["pilot"].channels["latest"].version == "2.0.0"
    source.tag("1.0.1", 5)   # a hotfix of an older line
    assert origin.sync_once().published == ["pilot 1.0.1"]
    assert on_disk(store, secret).packages["pilot"].channels["latest"].version == "2.0.0"
    source.tag("2.1.0", 6)
    origin.sync_once()
    assert on_disk(store, secret).packages["pilot"].channels["latest"].version == "2.1.0"


def test_the_auto_channel_moves_to_the_highest_published_when_the_last_new_tag_fails(
        origin: Origin, source: FakeSource, store: Store, secret: SecretKey) -> None:
    for n, name in enumerate(("1.0.0", "1.2.0", "1.3.0")):
        source.tag(name, 3 + n)
    source.fifo.add("1.3.0")
    report = origin.sync_once()
    assert report.published == ["pilot 1.0.0", "pilot 1.2.0"]
    assert any(line.startswith("pilot 1.3.0: ") for line in report.skipped)
    assert on_disk(store, secret).packages["pilot"].channels["latest"].version == "1.2.0"


def test_a_mutated_tag_is_reported_and_not_republished(
        origin: Origin, source: FakeSource, store: Store, secret: SecretKey) -> None:
    source.tag("1.0.0", 3)
    origin.sync_once()
    before = on_disk(store, secret).release("pilot", "1.0.0")
    source.tag("1.0.0", 9, "changed after it was published")
    exports = len(source.exports)
    report = origin.sync_once()
    assert report.published == []
    assert [(m.package, m.version, m.kind, m.published, m.current)
            for m in report.mutated] == [("pilot", "1.0.0", "svn", "3", "9")]
    assert len(source.exports) == exports
    assert on_disk(store, secret).release("pilot", "1.0.0") == before
    recorded = store.state.load().mutated_tags
    assert [(m.version, m.fields()) for m in recorded] == \
        [("1.0.0", {"published_revision": 3, "current_revision": 9})]
    origin.sync_once()   # still reported, recorded once
    assert store.state.load().mutated_tags == recorded


def test_an_unchanged_tag_is_not_a_mutated_tag(
        origin: Origin, source: FakeSource, store: Store) -> None:
    source.tag("1.0.0", 3)
    origin.sync_once()
    assert origin.sync_once().mutated == []
    assert store.state.load().mutated_tags == ()


def test_a_bulk_import_commits_in_batches_the_first_tag_on_its_own(
        origin: Origin, source: FakeSource, store: Store, secret: SecretKey) -> None:
    names = [f"1.{n}.0" for n in range(40)]
    for n, name in enumerate(names):
        source.tag(name, 10 + n)
    report = origin.sync_once()
    assert report.published == [f"pilot {name}" for name in names]
    serials = serials_of(store, secret)
    assert set(serials) == set(names)
    first = serials[names[0]]
    assert all(serials[name] > first for name in names[1:])   # committed alone, first
    # A commit costs about what a build does here: the next is due after ~20 builds.
    commits = len(set(serials.values()))
    print(f"40 tags in {commits} commits")
    assert commits <= 20


def test_an_error_of_the_source_ends_the_pass_and_what_was_built_is_published(
        origin: Origin, source: FakeSource, store: Store, secret: SecretKey) -> None:
    for n in range(5):
        source.tag(f"1.{n}.0", 3 + n)
    source.failing.add("1.3.0")
    with pytest.raises(SvnError, match="connection reset"):
        origin.sync_once()
    index = on_disk(store, secret)
    assert sorted(index.packages["pilot"].releases) == ["1.0.0", "1.1.0", "1.2.0"]
    # The auto channel moves with the last new tag only: not yet.
    assert "latest" not in index.packages["pilot"].channels
    source.failing.clear()
    assert origin.sync_once().published == ["pilot 1.3.0", "pilot 1.4.0"]
    assert on_disk(store, secret).packages["pilot"].channels["latest"].version == "1.4.0"


def test_the_serial_increases_with_every_commit_and_never_falls_below_one_held(
        origin: Origin, source: FakeSource, store: Store, secret: SecretKey) -> None:
    started = int(time.time())
    source.tag("1.0.0", 3)
    source.tag("1.1.0", 4)
    seen = [origin.sync_once().serial,
            origin.publish("pilot", "1.0.0", "production").serial,
            origin.publish("pilot", "1.0.0", "latest").serial,   # a rollback
            origin.yank("pilot", "1.1.0", "broken").serial]
    assert seen == sorted(set(seen))
    assert seen[0] >= started   # time-based (DESIGN.md §5)
    assert origin.sync_once().serial == seen[-1]   # nothing to do: nothing committed
    # An index serial ahead of the clock (written by an origin whose clock ran ahead,
    # then restored here): the next serial still passes it.
    index = on_disk(store, secret)
    ahead = dataclasses.replace(index, serial=index.serial + 10_000)
    store.install(sign_index(secret, ahead), previous=index)
    source.tag("1.2.0", 5)
    assert origin.sync_once().serial == ahead.serial + 1
    assert on_disk(store, secret).serial == ahead.serial + 1


def test_publish_imports_a_tag_not_synced_yet_and_each_change_records_its_actor(
        origin: Origin, source: FakeSource, store: Store, secret: SecretKey) -> None:
    source.tag("1.0.0", 3)
    index = origin.publish("pilot", "1.0.0", "production")
    assert index.packages["pilot"].channels["production"].version == "1.0.0"
    assert index.packages["pilot"].channels["latest"].version == "1.0.0"   # auto moved too
    source.tag("1.1.0", 4)
    origin.sync_once()
    origin.publish("pilot", "1.0.0", "latest")
    before = on_disk(store, secret).serial
    index = origin.yank("pilot", "1.1.0", "broken")
    assert index.release("pilot", "1.1.0").yanked and index.serial > before
    index = on_disk(store, secret)
    assert index.history is not None
    entries = [(e.actor, e.change.action, e.change.version, e.change.channel)
               for e in store.load_history(index.history).entries]
    assert entries == [
        ("rm", Action.RELEASE, "1.0.0", None), ("rm", Action.MOVE, "1.0.0", "latest"),
        ("rm", Action.MOVE, "1.0.0", "production"),
        ("sync", Action.RELEASE, "1.1.0", None), ("sync", Action.MOVE, "1.1.0", "latest"),
        ("rm", Action.MOVE, "1.0.0", "latest"), ("rm", Action.YANK, "1.1.0", None)]


def test_a_key_added_signs_every_existing_release_at_the_next_pass(
        store: Store, secret: SecretKey, source: FakeSource) -> None:
    source.tag("1.0.0", 3)
    origin_of(store, secret, source).sync_once()
    second = generate_key()
    rotated = origin_of(store, [secret, second], source)
    rotated.sync_once()   # nothing new: the keys changed, so the index is re-signed
    keys = {k.public.keyid: k.public for k in (secret, second)}
    raw = store.read_document()
    assert raw is not None
    signed = verify(raw, keys)
    assert list(signed.signed_by) == [secret.public.keyid, second.public.keyid]
    release: Release = signed.index.release("pilot", "1.0.0")
    assert set(release.signatures) == set(keys)
    assert release.minisig == release.signatures[secret.public.keyid]
    blob = store.blob_path(release.sha256).read_bytes()
    for text in release.signatures.values():
        verify_minisig(keys, parse_minisig(text), io.BytesIO(blob))


def test_the_first_tag_of_a_pass_is_published_even_with_no_auto_channel(
        store: Store, secret: SecretKey, source: FakeSource) -> None:
    source.tag("1.0.0", 3)
    origin = origin_of(store, secret, source, auto_channel="")
    assert origin.sync_once().published == ["pilot 1.0.0"]
    assert on_disk(store, secret).packages["pilot"].channels == {}


def test_mutated_tag_record_keeps_when_it_was_first_detected(
        origin: Origin, source: FakeSource, store: Store) -> None:
    source.tag("1.0.0", 3)
    origin.sync_once()
    source.tag("1.0.0", 9)
    origin.sync_once()
    [first] = store.state.load().mutated_tags
    source.tag("1.0.0", 11)   # moved again
    origin.sync_once()
    [again] = store.state.load().mutated_tags
    assert again == MutatedTag("pilot", "1.0.0", "svn", "3", "11", first.detected_at)
