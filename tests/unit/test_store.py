"""Unit tests for codecache.store: atomic files, blobs, the signed index, the writers' lock."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from codecache.errors import (
    BlobNotFound,
    HashMismatch,
    IndexExpired,
    IntegrityError,
    NoIndex,
    StoreBusy,
    StoreError,
)
from codecache.index import EMPTY, Index, Release, add_release, move_channel
from codecache.signing import SecretKey, generate_key
from codecache.store import LocalState, MutatedTag, Store, atomic_write, sha256_file

NOW = 1_800_000_000


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.init()
    return store


@pytest.fixture
def secret() -> SecretKey:
    return generate_key()


def sample_index(serial: int = 3) -> Index:
    release = Release(version="1.0", sha256="a" * 64, size=3, tar_sha256="b" * 64,
                      svn_url="svn://x/pilot/tags/1.0", revision=4, author="rm", date=NOW,
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


def test_blob_is_named_by_its_hash_and_verified(store: Store) -> None:
    data = b"tarball bytes"
    digest = hashlib.sha256(data).hexdigest()
    source = store.scratch_dir("t-") / "archive"
    source.write_bytes(data)
    store.add_blob(source, digest)
    assert store.blob_path(digest).read_bytes() == data
    assert not source.exists()
    assert store.has_blob(digest, len(data))
    assert not store.has_blob(digest, len(data) + 1)
    store.verify_blob(digest, len(data))
    assert sha256_file(store.blob_path(digest)) == (digest, len(data))


def test_adding_an_existing_blob_keeps_the_stored_one(store: Store) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    for _ in range(2):
        source = store.scratch_dir("t-") / "archive"
        source.write_bytes(b"x")
        store.add_blob(source, digest)
    assert [p.name for p in store.blob_dir.iterdir()] == [digest]


def test_flipped_byte_in_a_blob_is_detected(store: Store) -> None:
    data = b"tarball bytes"
    digest = hashlib.sha256(data).hexdigest()
    store.blob_path(digest).write_bytes(b"tarball bytez")
    with pytest.raises(HashMismatch):
        store.verify_blob(digest, len(data))
    with pytest.raises(BlobNotFound):
        store.verify_blob("c" * 64, 1)


def test_index_round_trip_writes_signatures_first(store: Store, secret: SecretKey) -> None:
    keys = {secret.public.keyid: secret.public}
    index = sample_index()
    raw = store.write_index(secret, index)
    assert store.index_path.read_bytes() == raw
    document = json.loads(raw)
    assert set(document) == {"signed", "signatures"}
    assert store.load_index(keys, now=NOW) == index
    assert store.signature_path("pilot", "1.0").read_text() == \
        index.packages["pilot"].releases["1.0"].minisig
    assert store.load_state().highest_serial == 3


def test_index_without_a_file_is_no_index(store: Store, secret: SecretKey) -> None:
    with pytest.raises(NoIndex):
        store.load_index({secret.public.keyid: secret.public})


def test_expired_index_is_refused_unless_allowed(store: Store, secret: SecretKey) -> None:
    keys = {secret.public.keyid: secret.public}
    store.write_index(secret, sample_index())
    with pytest.raises(IndexExpired):
        store.load_index(keys, now=NOW + 3600)
    assert store.load_index(keys, now=NOW + 3600, allow_expired=True).serial == 3


@pytest.mark.parametrize("edit", [
    lambda raw: raw.replace(b'"serial": 3', b'"serial": 4'),
    lambda raw: raw.replace(b'"a' + b"a" * 63, b'"b' + b"a" * 63, 1),
    lambda raw: raw[:-10],
    lambda raw: b"\xff" + raw,
], ids=["serial", "sha256", "truncated", "not utf-8"])
def test_edited_index_file_is_an_integrity_error(store: Store, secret: SecretKey,
                                                 edit: Callable[[bytes], bytes]) -> None:
    store.write_index(secret, sample_index())
    raw = store.index_path.read_bytes()
    edited = edit(raw)
    assert edited != raw
    store.index_path.write_bytes(edited)
    with pytest.raises(IntegrityError):
        store.load_index({secret.public.keyid: secret.public}, now=NOW)


def test_index_signed_by_another_key_is_refused(store: Store, secret: SecretKey) -> None:
    store.write_index(generate_key(), sample_index())
    with pytest.raises(IntegrityError):
        store.load_index({secret.public.keyid: secret.public}, now=NOW)


def test_highest_serial_never_goes_down(store: Store, secret: SecretKey) -> None:
    store.write_index(secret, sample_index(serial=7))
    store.write_index(secret, sample_index(serial=5))
    assert store.load_state().highest_serial == 7


def test_local_state_round_trip(store: Store) -> None:
    state = LocalState(9, (MutatedTag("pilot", "1.0", 4, 6, NOW),), {"k": "v"})
    store.save_state(state)
    assert store.load_state() == state


def test_malformed_local_state_is_a_store_error(store: Store) -> None:
    store.state_path.write_text("{not json")
    with pytest.raises(StoreError):
        store.load_state()


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
