"""BlobCache on real files: verified once, changes noticed, corrupt/missing never served."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from codecache.core.errors import BlobUnavailable
from codecache.store.store import Store
from codecache.web.blobcache import BlobCache


def _put(store: Store, data: bytes) -> str:
    sha256 = hashlib.sha256(data).hexdigest()
    store.blob_path(sha256).write_bytes(data)
    return sha256


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    s.init()
    return s


def test_small_blob_is_loaded_verified_and_cached(store: Store) -> None:
    data = b"pilot tarball" * 10
    sha = _put(store, data)
    cache = BlobCache(store, blob_max=1 << 20, total_max=1 << 20)
    assert cache.cached(sha) is None
    assert cache.load(sha, len(data)) == data
    assert cache.cached(sha) == data
    assert cache.memory_bytes == len(data)


def test_large_blob_is_verified_and_returned_as_path(store: Store) -> None:
    data = os.urandom(5000)
    sha = _put(store, data)
    cache = BlobCache(store, blob_max=1000, total_max=1 << 20)
    assert cache.load(sha, len(data)) == store.blob_path(sha)
    assert cache.cached(sha) is None


def test_corrupt_blob_is_refused_and_evicted(store: Store) -> None:
    data = b"x" * 100
    sha = _put(store, data)
    cache = BlobCache(store, blob_max=1 << 20, total_max=1 << 20)
    assert cache.check({sha: 100}) == {}
    assert cache.cached(sha) == data
    store.blob_path(sha).write_bytes(b"y" + data[1:])
    problems = cache.check({sha: 100})
    assert "corrupt" in problems[sha]
    assert cache.cached(sha) is None
    with pytest.raises(BlobUnavailable):
        cache.load(sha, 100)
    store.blob_path(sha).write_bytes(data)
    assert cache.check({sha: 100}) == {}
    assert cache.load(sha, 100) == data


def test_missing_blob_is_reported_then_recovers(store: Store) -> None:
    data = b"z" * 10
    sha = _put(store, data)
    cache = BlobCache(store, blob_max=1 << 20, total_max=1 << 20)
    cache.check({sha: 10})
    store.blob_path(sha).unlink()
    assert cache.check({sha: 10}) == {sha: "missing from disk"}
    with pytest.raises(BlobUnavailable, match="missing"):
        cache.load(sha, 10)
    _put(store, data)
    assert cache.check({sha: 10}) == {}


def test_wrong_size_in_index_is_a_mismatch(store: Store) -> None:
    sha = _put(store, b"abc")
    cache = BlobCache(store, blob_max=1 << 20, total_max=1 << 20)
    with pytest.raises(BlobUnavailable):
        cache.load(sha, 4)


def test_scrub_rehashes_even_when_file_identity_is_unchanged(store: Store) -> None:
    data = b"q" * 64
    sha = _put(store, data)
    cache = BlobCache(store, blob_max=10, total_max=1 << 20)  # path mode: no bytes kept
    cache.check({sha: 64})
    path = store.blob_path(sha)
    st = path.stat()
    with path.open("r+b") as fh:  # same size, then restore the mtime: check() can't see it
        fh.write(b"Q")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.check({sha: 64}) == {}
    assert "corrupt" in cache.scrub({sha: 64})[sha]


def test_memory_is_bounded_least_recently_used_first(store: Store) -> None:
    blobs = [os.urandom(400) for _ in range(3)]
    shas = [_put(store, b) for b in blobs]
    cache = BlobCache(store, blob_max=1000, total_max=1000)
    for sha, data in zip(shas, blobs, strict=True):
        cache.load(sha, len(data))
    assert cache.memory_bytes <= 1000
    assert cache.cached(shas[0]) is None
    assert cache.cached(shas[2]) == blobs[2]


def test_blobs_leaving_the_index_are_forgotten(store: Store) -> None:
    sha = _put(store, b"old")
    cache = BlobCache(store, blob_max=1 << 20, total_max=1 << 20)
    cache.load(sha, 3)
    cache.check({})
    assert cache.cached(sha) is None
    assert cache.memory_bytes == 0


def test_verified_path_only_for_a_large_blob_unchanged_since_it_hashed_right(
        store: Store) -> None:
    data = b"x" * 100
    sha = hashlib.sha256(data).hexdigest()
    path = store.blob_path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    cache = BlobCache(store, blob_max=10, total_max=1000)
    assert cache.verified_path(sha, 100) is None          # not hashed yet
    assert cache.load(sha, 100) == path
    assert cache.verified_path(sha, 100) == path
    path.write_bytes(b"y" * 100)                            # changed on disk
    os.utime(path, ns=(1, 1))
    assert cache.verified_path(sha, 100) is None            # the request path re-hashes
    small = BlobCache(store, blob_max=1000, total_max=1000)
    assert small.verified_path(sha, 100) is None            # held in memory instead


def test_bytes_kept_for_a_caller_share_the_budget_and_stay_until_forgotten(
        store: Store) -> None:
    """An edge's cached blob (its bytes hashed by the edge) held beside the store's."""
    data = b"x" * 100
    sha = _put(store, data)
    cache = BlobCache(store, blob_max=1 << 20, total_max=250)
    cache.keep("e" * 64, b"e" * 100)
    assert cache.check({sha: 100}) == {}     # the store's blob loaded: the kept one stays
    assert cache.cached("e" * 64) == b"e" * 100 and cache.cached(sha) == data
    assert cache.kept() == {"e" * 64}
    cache.keep("f" * 64, b"f" * 100)         # over the budget: the least recent goes
    assert cache.memory_bytes == 200 and cache.kept() == {"f" * 64}
    cache.forget(["f" * 64])
    assert cache.cached("f" * 64) is None and cache.kept() == set()
    assert cache.memory_bytes == 100
