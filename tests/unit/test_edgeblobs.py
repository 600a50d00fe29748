"""EdgeBlobs over a real EdgeCache: one fill per blob in a process however many ask, an
evicted file looked for again, a failed fill tried again, a small blob kept in memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from codecache.core.errors import UpstreamInvalid
from codecache.store.edgecache import EdgeCache
from codecache.store.store import Store
from codecache.web.blobcache import BlobCache
from codecache.web.edgeblobs import EdgeBlobs


class Upstream:
    """A fill from memory (the unit's stand-in for ``replica.edgefill``): counts its calls,
    takes a while, and can be told to fail."""

    def __init__(self, cache: EdgeCache, blobs: dict[str, bytes]) -> None:
        self.cache = cache
        self.blobs = blobs
        self.calls: list[str] = []
        self.fail = False

    async def fill(self, sha256: str, size: int) -> None:
        self.calls.append(sha256)
        await asyncio.sleep(0.05)
        if self.fail:
            raise UpstreamInvalid(sha256, "bad bytes")
        scratch = self.cache.scratch(sha256)
        scratch.write_bytes(self.blobs[sha256])
        await asyncio.to_thread(self.cache.adopt, sha256, scratch, size)


async def read(blobs: EdgeBlobs, sha256: str, size: int) -> bytes:
    with await blobs.open(sha256, size) as fh:
        return fh.read()


@pytest.fixture
def world(tmp_path: Path) -> tuple[EdgeCache, Upstream, str, bytes]:
    data = os.urandom(50_000)
    sha256 = hashlib.sha256(data).hexdigest()
    cache = EdgeCache(tmp_path / "store", 1_000_000)
    return cache, Upstream(cache, {sha256: data}), sha256, data


def test_a_thousand_requests_make_one_fill(
        world: tuple[EdgeCache, Upstream, str, bytes]) -> None:
    cache, upstream, sha256, data = world
    blobs = EdgeBlobs(cache, upstream.fill)

    async def burst() -> list[bytes]:
        return await asyncio.gather(*(read(blobs, sha256, len(data)) for _ in range(1000)))

    assert set(asyncio.run(burst())) == {data}
    assert upstream.calls == [sha256]
    cache.flush()
    stats = cache.stats()
    assert (stats.misses, stats.hits) == (1000, 0)


def test_a_failed_fill_is_tried_again_by_the_next_request(
        world: tuple[EdgeCache, Upstream, str, bytes]) -> None:
    cache, upstream, sha256, data = world
    blobs = EdgeBlobs(cache, upstream.fill)
    upstream.fail = True

    async def burst() -> list[object]:
        return await asyncio.gather(*(blobs.open(sha256, len(data)) for _ in range(10)),
                                    return_exceptions=True)

    answers = asyncio.run(burst())
    assert all(isinstance(a, UpstreamInvalid) for a in answers)
    assert upstream.calls == [sha256]       # the ten waited for the one fill
    upstream.fail = False
    assert asyncio.run(read(blobs, sha256, len(data))) == data
    assert upstream.calls == [sha256, sha256]


def test_a_blob_evicted_after_its_fill_is_filled_again(
        world: tuple[EdgeCache, Upstream, str, bytes]) -> None:
    cache, upstream, sha256, data = world
    blobs = EdgeBlobs(cache, upstream.fill)
    assert asyncio.run(read(blobs, sha256, len(data))) == data
    cache.set_reserved(1_000_000)           # the channel targets take the whole bound
    assert cache.path(sha256) is None
    cache.set_reserved(0)
    assert asyncio.run(read(blobs, sha256, len(data))) == data
    assert upstream.calls == [sha256, sha256]


def test_a_blob_the_cache_cannot_keep_is_served_to_those_who_waited_and_removed(
        world: tuple[EdgeCache, Upstream, str, bytes]) -> None:
    cache, upstream, sha256, data = world
    beside: list[Path] = []

    async def fill_beside(sha: str, size: int) -> Path:
        upstream.calls.append(sha)
        await asyncio.sleep(0.05)
        scratch = cache.scratch(sha)
        scratch.write_bytes(data)
        beside.append(scratch)
        return scratch

    blobs = EdgeBlobs(cache, fill_beside)

    async def burst() -> list[bytes]:
        return await asyncio.gather(*(read(blobs, sha256, len(data)) for _ in range(10)))

    assert asyncio.run(burst()) == [data] * 10
    assert upstream.calls == [sha256]
    assert not beside[0].exists() and cache.path(sha256) is None


def test_a_small_blob_is_read_once_into_memory_and_leaves_with_its_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(50_000)
    sha256 = hashlib.sha256(data).hexdigest()
    memory = BlobCache(Store(tmp_path / "store"), blob_max=len(data), total_max=1_000_000)
    cache = EdgeCache(tmp_path / "store", 1_000_000, gone=memory.forget)
    upstream = Upstream(cache, {sha256: data})
    blobs = EdgeBlobs(cache, upstream.fill, memory)
    reads: list[str] = []
    read = cache.verified.read

    def counted_read(fh: BinaryIO, sha: str, size: int) -> tuple[bytes, bool]:
        reads.append(sha)
        return read(fh, sha, size)

    monkeypatch.setattr(cache.verified, "read", counted_read)

    async def burst() -> list[object]:
        return await asyncio.gather(*(blobs.body(sha256, len(data)) for _ in range(20)))

    assert asyncio.run(burst()) == [data] * 20
    assert (upstream.calls, reads) == ([sha256], [sha256])   # one fill, one read
    assert memory.cached(sha256) == data and memory.kept() == {sha256}
    cache.set_reserved(1_000_000)           # evicted in this process: out of memory at once
    assert memory.cached(sha256) is None and memory.kept() == set()


def test_a_blob_over_memory_blob_max_is_served_from_its_file(
        world: tuple[EdgeCache, Upstream, str, bytes], tmp_path: Path) -> None:
    cache, upstream, sha256, data = world
    memory = BlobCache(Store(tmp_path / "store"), blob_max=len(data) - 1,
                       total_max=1_000_000)
    got = asyncio.run(EdgeBlobs(cache, upstream.fill, memory).body(sha256, len(data)))
    assert not isinstance(got, bytes)
    with got:
        assert got.read() == data
    assert memory.cached(sha256) is None
