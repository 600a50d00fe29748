"""Unit tests for codecache.store: atomic files, blobs, the signed index, the writers' lock."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from codecache.core.errors import (
    BlobUnavailable,
    IndexRefused,
    NoIndex,
    Refusal,
    StoreBusy,
    StoreError,
)
from codecache.core.index import EMPTY, Index, Release, add_release, move_channel
from codecache.core.pin import svn_pin
from codecache.core.signing import SecretKey, generate_key
from codecache.core.trust import Mark, sign_index
from codecache.store.files import atomic_write, check_blob, sha256_file
from codecache.store.state import LocalState, MutatedTag, PullStatus
from codecache.store.store import Store
from codecache.store.trusted import read_trusted_index

NOW = 1_800_000_000
BLOB = b"abc"
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.init()
    return store


@pytest.fixture
def secret() -> SecretKey:
    return generate_key()


def sample_index(serial: int = 3) -> Index:
    release = Release(version="1.0", sha256=BLOB_SHA, size=3, tar_sha256="b" * 64,
                      source=svn_pin("svn://x/pilot/tags/1.0", 4), author="rm", date=NOW,
                      minisig="untrusted comment: x\nAAAA\ntrusted comment: c\nBBBB\n")
    index = dataclasses.replace(EMPTY, serial=serial, generated=NOW, expires=NOW + 3600)
    return move_channel(add_release(index, "pilot", release), "pilot", "latest", "1.0", NOW)


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    atomic_write(path, b"one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_write_failure_is_a_store_error_and_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    with pytest.raises(StoreError):
        atomic_write(tmp_path / "sub", b"cannot replace a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]
    assert (tmp_path / "sub").is_dir()


def test_atomic_write_into_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        atomic_write(tmp_path / "missing" / "f.json", b"x")


def test_blob_is_named_by_its_hash(store: Store) -> None:
    data = b"tarball bytes"
    digest = hashlib.sha256(data).hexdigest()
    source = store.scratch_dir("t-") / "archive"
    source.write_bytes(data)
    store.add_blob(source, digest)
    assert store.blob_path(digest).read_bytes() == data
    assert not source.exists()
    assert sha256_file(store.blob_path(digest)) == (digest, len(data))


def test_adding_an_existing_blob_keeps_the_stored_one(store: Store) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    for _ in range(2):
        source = store.scratch_dir("t-") / "archive"
        source.write_bytes(b"x")
        store.add_blob(source, digest)
    assert [p.name for p in store.blob_dir.iterdir()] == [digest]


def with_blob(store: Store) -> None:
    store.blob_path(BLOB_SHA).write_bytes(BLOB)


def test_install_writes_signatures_then_the_index_then_the_state(store: Store,
                                                                  secret: SecretKey) -> None:
    keys = {secret.public.keyid: secret.public}
    with_blob(store)
    signed = sign_index(secret, sample_index())
    store.install(signed)
    assert store.index_path.read_bytes() == signed.document
    assert set(json.loads(signed.document)) == {"signed", "signatures"}
    assert store.read_signed(keys).index == sample_index()
    assert store.signature_path("pilot", "1.0").read_text() == \
        sample_index().packages["pilot"].releases["1.0"].minisig
    assert store.state.load().highest_serial == 3


def test_install_refuses_an_index_whose_blob_is_not_in_the_store(store: Store,
                                                                 secret: SecretKey) -> None:
    with pytest.raises(BlobUnavailable):
        store.install(sign_index(secret, sample_index()))
    assert not store.index_path.exists()
    store.blob_path(BLOB_SHA).write_bytes(BLOB + b"!")
    with pytest.raises(BlobUnavailable, match="listed"):
        store.install(sign_index(secret, sample_index()))
    assert not store.index_path.exists()


def test_reading_without_an_index_is_no_index(store: Store, secret: SecretKey) -> None:
    with pytest.raises(NoIndex):
        store.read_signed({secret.public.keyid: secret.public})
    with pytest.raises(NoIndex):
        read_trusted_index(store, {secret.public.keyid: secret.public}, now=NOW)


@pytest.mark.parametrize("edit", [
    lambda raw: raw.replace(b'"serial":3', b'"serial":4'),
    lambda raw: raw.replace(BLOB_SHA.encode(), BLOB_SHA[::-1].encode(), 1),
    lambda raw: raw[:-10],
    lambda raw: b"\xff" + raw,
], ids=["serial", "sha256", "truncated", "not utf-8"])
def test_edited_index_file_is_refused(store: Store, secret: SecretKey,
                                      edit: Callable[[bytes], bytes]) -> None:
    with_blob(store)
    store.install(sign_index(secret, sample_index()))
    raw = store.index_path.read_bytes()
    edited = edit(raw)
    assert edited != raw
    store.index_path.write_bytes(edited)
    with pytest.raises(IndexRefused):
        store.read_signed({secret.public.keyid: secret.public})
    with pytest.raises(IndexRefused):
        read_trusted_index(store, {secret.public.keyid: secret.public}, now=NOW)


def test_index_signed_by_another_key_is_refused(store: Store, secret: SecretKey) -> None:
    with_blob(store)
    store.install(sign_index(generate_key(), sample_index()))
    with pytest.raises(IndexRefused) as info:
        store.read_signed({secret.public.keyid: secret.public})
    assert info.value.reason is Refusal.BAD_SIGNATURE


def test_highest_serial_never_goes_down_unless_reset(store: Store, secret: SecretKey) -> None:
    with_blob(store)
    store.install(sign_index(secret, sample_index(serial=7)))
    store.install(sign_index(secret, sample_index(serial=5)))
    assert store.state.load().highest_serial == 7
    store.install(sign_index(secret, sample_index(serial=4)), reset_serial=True)
    assert store.state.load().highest_serial == 4


def test_install_keeps_and_replaces_upstream_marks(store: Store, secret: SecretKey) -> None:
    with_blob(store)
    marks = {"http://a": Mark(3, "d" * 64)}
    store.install(sign_index(secret, sample_index()), marks=marks)
    store.install(sign_index(secret, sample_index(serial=4)))
    assert store.state.load().marks == marks


def test_pull_status_round_trip(store: Store) -> None:
    assert store.load_pull_status() is None
    status = PullStatus("http://a", 5, 10.5, 11.0, "timeout", {"expired": 2})
    store.save_pull_status(status)
    assert store.load_pull_status() == status


def test_local_state_round_trip(store: Store) -> None:
    state = LocalState(9, (MutatedTag("pilot", "1.0", "svn", "4", "6", NOW),),
                       {"http://a": Mark(9, "e" * 64)})
    store.state.save(state)
    assert store.state.load() == state


def test_mutations_are_recorded_once_per_revision(store: Store) -> None:
    first = MutatedTag("pilot", "1.0", "svn", "4", "6", NOW)
    assert store.state.record_mutations([first]) == [first]
    assert store.state.record_mutations([first]) == []      # seen again: not news
    moved = MutatedTag("pilot", "1.0", "svn", "4", "8", NOW + 5)
    assert store.state.record_mutations([moved]) == [moved]
    # The first detection time is kept; the revision the tag now points to is updated.
    assert store.state.load().mutated_tags == (MutatedTag("pilot", "1.0", "svn", "4", "8", NOW),)


def test_mutations_are_announced_before_they_are_saved(store: Store) -> None:
    # A save that fails (a full disk) must not swallow the report: it is made first.
    found = MutatedTag("pilot", "1.0", "svn", "4", "6", NOW)
    seen: list[tuple[list[MutatedTag], tuple[MutatedTag, ...]]] = []
    store.state.record_mutations(
        [found], announce=lambda news: seen.append((news, store.state.load().mutated_tags)))
    assert seen == [([found], ())]
    store.state.record_mutations([found], announce=lambda news: seen.append((news, ())))
    assert len(seen) == 1                                    # no news: nothing announced


def test_older_index_put_back_is_a_rollback_and_expiry_is_no_refusal(
        store: Store, secret: SecretKey) -> None:
    keys = {secret.public.keyid: secret.public}
    with_blob(store)
    store.install(sign_index(secret, sample_index(serial=3)))
    old = store.index_path.read_bytes()
    store.install(sign_index(secret, sample_index(serial=4)))
    # Expired (NOW + 3600 is past) but held: still read; serving decides what that means.
    assert read_trusted_index(store, keys, now=NOW + 7200).serial == 4
    store.index_path.write_bytes(old)
    with pytest.raises(IndexRefused) as info:
        read_trusted_index(store, keys, now=NOW)
    assert info.value.reason is Refusal.ROLLBACK
    assert read_trusted_index(store, keys, now=NOW, floor=3).serial == 3


def test_check_blob_names_what_is_wrong(store: Store) -> None:
    path = store.blob_path(BLOB_SHA)
    assert check_blob(path, BLOB_SHA, 3) == "missing from disk"
    path.write_bytes(BLOB)
    assert check_blob(path, BLOB_SHA, 3) is None
    assert check_blob(path, BLOB_SHA, 4, deep=False) == "corrupt on disk (3 bytes, 4 listed)"
    path.write_bytes(b"abd")
    assert check_blob(path, BLOB_SHA, 3, deep=False) is None   # the size alone
    assert check_blob(path, BLOB_SHA, 3) == \
        f"corrupt on disk (sha256 {hashlib.sha256(b'abd').hexdigest()})"


def test_malformed_local_state_is_a_store_error(store: Store) -> None:
    store.state_path.write_text("{not json")
    with pytest.raises(StoreError):
        store.state.load()


def test_second_writer_gets_store_busy(store: Store) -> None:
    with store.locked(), pytest.raises(StoreBusy), store.locked(wait=0.1):
        pass
    with store.locked():  # released again
        pass


def test_taking_the_lock_clears_a_crashed_writers_scratch(store: Store) -> None:
    leftover = store.scratch_dir("export-")
    (leftover / "tree").mkdir()
    stray = store.root / ".index.json.tmp-abc"
    stray.write_bytes(b"partial")
    blob_stray = store.blob_dir / ".x.tmp-abc"
    blob_stray.write_bytes(b"partial")
    with store.locked():
        assert not leftover.exists()
        assert not stray.exists()
        assert not blob_stray.exists()
        assert store.tmp_dir.is_dir()
