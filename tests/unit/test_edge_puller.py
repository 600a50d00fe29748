"""An edge's pull (codecache.replica.puller with ``role = "edge"``, replica.edgekeep).

The seam is the fetcher, as in test_puller: ``HistoryFetcher`` hands out documents,
histories and blobs the test holds and records what was asked. The store, the edge's cache
(``store.edgecache``, a real diskcache on disk), the keys, the signatures and the trust
rules are the real ones; tests/edge runs the same pull loop against real servers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path

import pytest

from codecache.core.config import (
    EdgeConfig,
    Role,
)
from codecache.core.history import EMPTY_HISTORY, Action, Actor, Change, History
from codecache.core.index import Channel, Index, Package, Release
from codecache.core.pin import svn_pin
from codecache.core.signing import SecretKey, generate_key
from codecache.core.trust import SignedIndex, sign_index
from codecache.replica.fetcher import Fetcher
from codecache.replica.puller import Replica
from codecache.store.edgecache import EdgeCache
from codecache.store.store import Store
from tests.unit.test_puller import A, FakeFetcher, replica

NOW = int(time.time())
DATA = {version: f"release {version} ".encode() * (100 + n)
        for n, version in enumerate(("1.0", "2.0", "3.0"))}
SHA = {version: hashlib.sha256(data).hexdigest() for version, data in DATA.items()}


class HistoryFetcher(FakeFetcher):
    """``FakeFetcher`` with a release history per upstream (served whole)."""

    def __init__(self) -> None:
        super().__init__()
        self.histories: dict[str, History] = {}
        self.blobs[A] = {SHA[v]: data for v, data in DATA.items()}

    async def history(self, upstream: str, start: int | None) -> tuple[bytes, bool]:
        self._reach(upstream, "history")
        return self.histories[upstream].render(), False

    def offer(self, index: SignedIndex, history: History) -> None:
        self.documents[A], self.histories[A] = index.document, history

    def blobs_asked(self) -> list[str]:
        return [what.removeprefix("blob ") for _, what in self.asked
                if what.startswith("blob ")]


def history(*moves: str) -> History:
    """A history of the releases, then ``latest`` moved to each of ``moves`` in turn."""
    changes = [Change(Action.RELEASE, "pilot", v) for v in DATA]
    changes += [Change(Action.MOVE, "pilot", v, channel="latest") for v in moves]
    return EMPTY_HISTORY.append(changes, time=NOW, actor=Actor("rm", 1), serial=1)


def signed(secret: SecretKey, serial: int, latest: str, hist: History) -> SignedIndex:
    """An index of every release of ``DATA`` with ``latest`` -> ``latest``."""
    releases = {v: Release(v, SHA[v], len(data), "0" * 64, svn_pin(f"svn://s/pilot/tags/{v}", 7),
                           "rm", NOW, "") for v, data in DATA.items()}
    return sign_index(secret, Index(
        serial=serial, generated=NOW, expires=NOW + 3600, history=hist.head,
        packages={"pilot": Package(releases=releases,
                                   channels={"latest": Channel(latest, NOW)})}))


@pytest.fixture
def secret() -> SecretKey:
    return generate_key()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.init()
    return store


@pytest.fixture
def fake() -> HistoryFetcher:
    return HistoryFetcher()


def puller(store: Store, secret: SecretKey, fake: Fetcher, *, role: Role = Role.EDGE,
           cache_size: int = 10_000_000) -> Replica:
    return replica(store, secret, fake, role=role, edge=EdgeConfig(cache_size))


def pull(replica: Replica) -> bool:
    return asyncio.run(replica.pull_once())


def in_store(store: Store) -> list[str]:
    return sorted(p.name for p in store.blob_dir.iterdir())


def test_an_edge_holds_its_channel_targets_and_its_cache_the_former_ones(
        store: Store, secret: SecretKey, fake: HistoryFetcher) -> None:
    edge = puller(store, secret, fake)
    fake.offer(signed(secret, 100, "1.0", history("1.0")), history("1.0"))
    assert pull(edge)
    assert fake.blobs_asked() == [SHA["1.0"]]          # the channel target alone
    assert in_store(store) == [SHA["1.0"]]
    cache = EdgeCache(store.root, 10_000_000)
    assert cache.stats().reserved_bytes == len(DATA["1.0"])
    assert cache.stats().upstream_bytes == len(DATA["1.0"])   # the prefetch counts

    fake.asked.clear()
    fake.offer(signed(secret, 200, "2.0", history("1.0", "2.0")), history("1.0", "2.0"))
    assert pull(edge)
    assert fake.blobs_asked() == [SHA["2.0"]]
    assert in_store(store) == [SHA["2.0"]]              # the former target left the store
    held = cache.path(SHA["1.0"])                      # ... for the cache
    assert held is not None and held.read_bytes() == DATA["1.0"]
    assert cache.stats().reserved_bytes == len(DATA["2.0"])

    # A move back (a rollback of the channel): taken from the cache, not the upstream.
    fake.asked.clear()
    fake.offer(signed(secret, 300, "1.0", history("1.0", "2.0", "1.0")),
               history("1.0", "2.0", "1.0"))
    assert pull(edge)
    assert fake.blobs_asked() == []
    assert in_store(store) == [SHA["1.0"]]
    assert store.blob_path(SHA["1.0"]).read_bytes() == DATA["1.0"]
    assert cache.stats().upstream_bytes == len(DATA["1.0"]) + len(DATA["2.0"])


def test_a_corrupt_cached_copy_is_fetched_from_upstream_instead(
        store: Store, secret: SecretKey, fake: HistoryFetcher) -> None:
    edge = puller(store, secret, fake)
    fake.offer(signed(secret, 100, "1.0", history("1.0")), history("1.0"))
    assert pull(edge)
    fake.offer(signed(secret, 200, "2.0", history("1.0", "2.0")), history("1.0", "2.0"))
    assert pull(edge)
    cached = EdgeCache(store.root, 10_000_000).path(SHA["1.0"])
    assert cached is not None
    cached.write_bytes(b"X" + DATA["1.0"][1:])         # rotten on disk, the same size
    fake.asked.clear()
    fake.offer(signed(secret, 300, "1.0", history("1.0", "2.0", "1.0")),
               history("1.0", "2.0", "1.0"))
    assert pull(edge)
    assert fake.blobs_asked() == [SHA["1.0"]]
    assert store.blob_path(SHA["1.0"]).read_bytes() == DATA["1.0"]


def test_blobs_a_store_holds_beside_the_targets_go_to_the_cache_on_the_first_pull(
        store: Store, secret: SecretKey, fake: HistoryFetcher) -> None:
    """A replica's store turned into an edge, or an edge killed between its install and
    the move: the first pull (a confirmation) settles the store."""
    fake.offer(signed(secret, 100, "1.0", history("1.0")), history("1.0"))
    assert pull(puller(store, secret, fake, role=Role.REPLICA))
    assert in_store(store) == sorted(SHA.values())       # a replica holds every blob
    fake.asked.clear()
    assert pull(puller(store, secret, fake))
    assert fake.asked == [(A, "index")]                 # a confirmation, nothing fetched
    assert in_store(store) == [SHA["1.0"]]
    cache = EdgeCache(store.root, 10_000_000)
    assert cache.path(SHA["2.0"]) is not None and cache.path(SHA["3.0"]) is not None


def test_channel_targets_beyond_the_cache_size_are_kept_and_logged(
        store: Store, secret: SecretKey, fake: HistoryFetcher,
        caplog: pytest.LogCaptureFixture) -> None:
    bound = len(DATA["1.0"]) - 1
    with caplog.at_level(logging.WARNING, logger="codecache.replica"):
        fake.offer(signed(secret, 100, "1.0", history("1.0")), history("1.0"))
        assert pull(puller(store, secret, fake, cache_size=bound))
    assert in_store(store) == [SHA["1.0"]]
    stats = EdgeCache(store.root, bound).stats()
    assert stats.reserved_bytes > stats.limit_bytes == bound
    assert "more than [edge] cache_size" in caplog.text


def test_a_pool_behind_is_stale_upstream_and_a_forked_history_still_a_rollback(
        store: Store, secret: SecretKey, fake: HistoryFetcher) -> None:
    held = history("1.0", "2.0")
    newer = signed(secret, 200, "2.0", held)
    for role, behind_is in ((Role.EDGE, "stale_upstream"), (Role.REPLICA, "rollback")):
        node_store = Store(store.root.parent / role.value)
        node = puller(node_store, secret, fake, role=role)
        fake.offer(newer, held)
        assert pull(node)
        # A pool member that has not caught up: a lower serial, a prefix of the history.
        fake.offer(signed(secret, 100, "1.0", history("1.0")), history("1.0"))
        assert not pull(node)
        status = node_store.load_pull_status()
        assert status is not None and status.refusals == {behind_is: 1}, role
        assert node_store.read_document() == newer.document
    # A lower serial whose history is not a prefix (a restored origin wrote other
    # entries): a rollback, from a pool too.
    edge_store = Store(store.root.parent / "edge")
    forked = history("1.0", "3.0")
    fake.offer(signed(secret, 150, "3.0", forked), forked)
    assert not pull(puller(edge_store, secret, fake))
    status = edge_store.load_pull_status()
    assert status is not None and status.refusals == {"rollback": 1}
    assert edge_store.read_document() == newer.document
