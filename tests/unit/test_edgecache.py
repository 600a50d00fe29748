"""EdgeCache on real files: bounded by blob bytes, LRU, verified, shared between processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codecache.core.errors import BlobUnavailable, CacheFull, StoreError
from codecache.store.edgecache import EdgeCache


def _blob(tmp_path: Path, data: bytes) -> tuple[str, Path]:
    sha256 = hashlib.sha256(data).hexdigest()
    source = tmp_path / f"src-{sha256[:8]}"
    source.write_bytes(data)
    return sha256, source


def _blob_bytes(cache: EdgeCache) -> int:
    """Bytes of blob files on disk under the cache (its databases excluded)."""
    return sum(p.stat().st_size for p in (cache.dir / "blobs").rglob("*.val"))


@pytest.fixture
def cache(tmp_path: Path) -> EdgeCache:
    return EdgeCache(tmp_path / "store", 10_000)


def test_put_then_path_and_verify(cache: EdgeCache, tmp_path: Path) -> None:
    data = os.urandom(3000)
    sha, source = _blob(tmp_path, data)
    assert cache.path(sha) is None
    cache.put(sha, source, len(data))
    held = cache.path(sha)
    assert held is not None and held.read_bytes() == data
    assert source.exists()    # put copies
    assert cache.verify(sha, len(data))
    fh = cache.verified.open(sha)
    assert fh is not None
    with fh:
        assert fh.read() == data
    assert cache.stats().cache_bytes == len(data)


def test_put_refuses_a_file_that_is_not_the_blob(cache: EdgeCache, tmp_path: Path) -> None:
    sha, source = _blob(tmp_path, b"good bytes")
    source.write_bytes(b"bad! bytes")
    with pytest.raises(StoreError):
        cache.put(sha, source, 10)
    assert cache.path(sha) is None
    assert list(cache.tmp_dir.iterdir()) == []


def test_bound_is_on_blob_bytes_least_recently_used_first(cache: EdgeCache,
                                                          tmp_path: Path) -> None:
    blobs = [_blob(tmp_path, os.urandom(3000)) for _ in range(5)]
    for sha, source in blobs[:3]:
        cache.put(sha, source, 3000)
    cache.path(blobs[0][0])   # a use: blob 1 is now the least recently used
    for sha, source in blobs[3:]:
        cache.put(sha, source, 3000)
        assert _blob_bytes(cache) <= 10_000
    held = {sha for sha, _ in blobs if cache.path(sha) is not None}
    assert held == {blobs[0][0], blobs[3][0], blobs[4][0]}
    stats = cache.stats()
    assert (stats.evictions, stats.cache_bytes, stats.limit_bytes) == (2, 9000, 10_000)


def test_reserved_bytes_shrink_the_lru_part(cache: EdgeCache, tmp_path: Path) -> None:
    for _ in range(3):
        sha, source = _blob(tmp_path, os.urandom(3000))
        cache.put(sha, source, 3000)
    cache.set_reserved(6000)
    stats = cache.stats()
    assert (stats.reserved_bytes, stats.cache_bytes) == (6000, 6000 + 3000)
    assert _blob_bytes(cache) == 3000


def test_a_changed_file_is_hashed_again_and_dropped(cache: EdgeCache, tmp_path: Path) -> None:
    data = os.urandom(3000)
    sha, source = _blob(tmp_path, data)
    cache.put(sha, source, len(data))
    held = cache.path(sha)
    assert held is not None
    rotten = bytearray(data)
    rotten[100] ^= 1
    held.write_bytes(bytes(rotten))
    assert cache.verified.open(sha) is None      # its identity changed: not served as known
    assert not cache.verify(sha, len(data))   # hashed, failed, dropped
    assert cache.path(sha) is None


def test_scrub_finds_rot_that_kept_the_files_identity(cache: EdgeCache,
                                                      tmp_path: Path) -> None:
    data = os.urandom(3000)
    sha, source = _blob(tmp_path, data)
    cache.put(sha, source, len(data))
    held = cache.path(sha)
    assert held is not None
    _rot_keeping_identity(held, 7)
    assert cache.verify(sha, len(data))       # the tag still matches: not hashed
    assert cache.counters.scrub_due(3600) and not cache.counters.scrub_due(3600)
    assert cache.scrub({sha: len(data)}) == [sha]
    assert cache.path(sha) is None and cache.verified.open(sha) is None


def _rot_keeping_identity(path: Path, offset: int) -> None:
    """Flip a byte of ``path`` in place, its identity (mtime, size, inode) kept: only a
    hash finds it."""
    before = path.stat()
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x40]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_copy_for_memory_is_hashed_as_read_and_its_blob_told_gone(tmp_path: Path) -> None:
    gone: list[str] = []
    cache = EdgeCache(tmp_path / "store", 10_000, gone=gone.extend)
    data = os.urandom(3000)
    sha, source = _blob(tmp_path, data)
    cache.put(sha, source, len(data))
    fh = cache.verified.open(sha)
    assert fh is not None
    with fh:
        assert cache.verified.read(fh, sha, len(data)) == (data, True)
    assert cache.verified.unchanged([sha, "0" * 64]) == {sha}
    held = cache.path(sha)
    assert held is not None
    _rot_keeping_identity(held, 7)
    assert cache.verified.unchanged([sha]) == {sha}    # nothing to see without hashing
    fh = cache.verified.open(sha)
    assert fh is not None
    with fh, pytest.raises(BlobUnavailable):
        cache.verified.read(fh, sha, len(data))        # the copy's hash finds it
    assert gone == [sha] and cache.path(sha) is None
    assert cache.verified.unchanged([sha]) == set()
    other, source = _blob(tmp_path, os.urandom(3000))
    cache.put(other, source, 3000)
    cache.set_reserved(9_000)                 # evicts it
    assert gone == [sha, other]


def test_a_file_changed_or_evicted_elsewhere_is_not_unchanged(tmp_path: Path) -> None:
    here = EdgeCache(tmp_path / "store", 10_000)
    there = EdgeCache(tmp_path / "store", 10_000)   # another process's handle
    blobs = [_blob(tmp_path, os.urandom(3000)) for _ in range(2)]
    for sha, source in blobs:
        here.put(sha, source, 3000)
    (changed, _), (evicted, _) = blobs
    held = here.path(changed)
    assert held is not None
    assert here.verified.unchanged([changed, evicted]) == {changed, evicted}
    held.write_bytes(held.read_bytes())       # a new identity, same bytes
    there.set_reserved(7_000)                 # room for one: evicts the least recent
    assert here.verified.unchanged([changed, evicted]) == set()


def test_counters_are_shared_between_processes(cache: EdgeCache, tmp_path: Path) -> None:
    cache.counters.count(hits=3, misses=1)
    cache.counters.add_upstream_bytes(1234)
    cache.counters.refused("blob_mismatch")
    cache.flush()
    other = tmp_path / "other.py"
    other.write_text(
        "import sys\nfrom pathlib import Path\n"
        "from codecache.store.edgecache import EdgeCache\n"
        "c = EdgeCache(Path(sys.argv[1]), 10_000)\n"
        "c.counters.count(hits=2)\nc.close()\n", encoding="utf-8")
    subprocess.run([sys.executable, str(other), str(tmp_path / "store")], check=True)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.upstream_bytes) == (5, 1, 1234)
    assert stats.refusals == {"blob_mismatch": 1}
    assert stats.hit_ratio == pytest.approx(5 / 6)


def test_scratch_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    cache = EdgeCache(tmp_path / "store", 10_000)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          check=True, capture_output=True, text=True)
    leftover = cache.tmp_dir / f"{dead.stdout.strip()}.{'0' * 64}.abcd"
    leftover.write_bytes(b"partial")
    mine = cache.scratch("1" * 64)
    mine.write_bytes(b"in flight")
    EdgeCache(tmp_path / "store", 10_000)
    assert not leftover.exists() and mine.exists()


def test_a_blob_larger_than_the_bound_is_refused_and_evicts_nothing(
        cache: EdgeCache, tmp_path: Path) -> None:
    sha, source = _blob(tmp_path, os.urandom(3000))
    cache.put(sha, source, 3000)
    big, big_source = _blob(tmp_path, os.urandom(12_000))
    with pytest.raises(CacheFull):
        cache.put(big, big_source, 12_000)
    assert cache.path(sha) is not None and cache.path(big) is None
    assert list(cache.tmp_dir.iterdir()) == []
