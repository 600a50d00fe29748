"""The replica's pull (codecache.replica.puller) with a fake fetcher.

The ``Fetcher`` is the seam: ``FakeFetcher`` hands out documents and blobs the test holds,
per upstream, and fails an upstream when told, so what the puller takes, refuses and
records is checked without sockets. The store, the keys, the signatures and the trust
rules are the real ones; tests/replica runs the same puller against real servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from codecache.core.config import (
    Config,
    EdgeConfig,
    ReplicaConfig,
    Role,
    SigningConfig,
    StoreConfig,
)
from codecache.core.errors import UpstreamFailure
from codecache.core.index import Channel, Index, Package, Release
from codecache.core.pin import svn_pin
from codecache.core.signing import SecretKey, generate_key, write_key_pair
from codecache.core.trust import SignedIndex, sign_index
from codecache.replica.fetcher import Fetcher
from codecache.replica.puller import Replica
from codecache.store.store import Store

A, B = "http://a.example:8080", "http://b.example:8080"


class FakeFetcher:
    """A ``Fetcher`` over bytes the test holds: ``documents[upstream]`` is its index,
    ``blobs[upstream]`` its blobs by sha256; an upstream in ``down`` fails to connect."""

    def __init__(self) -> None:
        self.documents: dict[str, bytes] = {}
        self.blobs: dict[str, dict[str, bytes]] = {A: {}, B: {}}
        self.down: set[str] = set()
        self.asked: list[tuple[str, str]] = []

    def _reach(self, upstream: str, what: str) -> None:
        self.asked.append((upstream, what))
        if upstream in self.down:
            raise UpstreamFailure("connect", f"cannot connect to {upstream}")

    async def index(self, upstream: str, held: SignedIndex | None) -> bytes | None:
        self._reach(upstream, "index")
        document = self.documents[upstream]
        return None if held is not None and held.document == document else document

    async def history(self, upstream: str, start: int | None) -> tuple[bytes, bool]:
        self._reach(upstream, "history")
        raise AssertionError("these indexes carry no history")

    async def blob(self, upstream: str, sha256: str, size: int, dest: Path) -> tuple[int, str]:
        self._reach(upstream, f"blob {sha256}")
        data = self.blobs[upstream][sha256][:size]
        await asyncio.to_thread(dest.write_bytes, data)
        return len(data), hashlib.sha256(data).hexdigest()


def signed(secret: SecretKey, serial: int, data: bytes) -> SignedIndex:
    """An index of one release (its blob ``data``) at ``serial``."""
    now = int(time.time())
    release = Release("1.0.0", hashlib.sha256(data).hexdigest(), len(data), "0" * 64,
                      svn_pin("svn://svn.example.org/pilot/tags/1.0.0", 7), "releasemgr", now, "")
    return sign_index(secret, Index(
        serial=serial, generated=now, expires=now + 3600,
        packages={"pilot": Package(releases={"1.0.0": release},
                                   channels={"latest": Channel("1.0.0", now)})}))


@pytest.fixture
def secret() -> SecretKey:
    return generate_key()


@pytest.fixture
def fake() -> FakeFetcher:
    return FakeFetcher()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.init()
    return store


def replica(store: Store, secret: SecretKey, fake: Fetcher,
            upstreams: tuple[str, ...] = (A,), *, role: Role = Role.REPLICA,
            edge: EdgeConfig | None = None) -> Replica:
    """The pull of ``store`` through ``fake`` (an edge's too: ``role``, ``edge``)."""
    public = store.root.parent / "codecache.pub"
    if not public.exists():
        write_key_pair(secret, store.root.parent / "codecache.key", public)
    config = Config(role=role, store=StoreConfig(path=store.root),
                    replica=ReplicaConfig(upstreams=upstreams), edge=edge or EdgeConfig(),
                    signing=SigningConfig(trusted_keys=(public,)))

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Fetcher]:
        yield fake

    return Replica(config, connect=connect)


def pull(replica: Replica) -> bool:
    return asyncio.run(replica.pull_once())


def test_a_newer_index_is_installed_with_its_blob_then_confirmed(
        store: Store, secret: SecretKey, fake: FakeFetcher) -> None:
    first, second = b"release one" * 100, b"release two" * 100
    for serial, data in ((100, first), (200, second)):
        index = signed(secret, serial, data)
        fake.documents[A] = index.document
        fake.blobs[A][index.index.release("pilot", "1.0.0").sha256] = data
        assert pull(replica(store, secret, fake))
        assert store.read_document() == index.document
        assert store.blob_path(hashlib.sha256(data).hexdigest()).read_bytes() == data
    again = replica(store, secret, fake)
    fake.asked.clear()
    assert pull(again)                          # the same index: a confirmation
    assert fake.asked == [(A, "index")]         # nothing fetched again
    status = store.load_pull_status()
    assert status is not None
    assert (status.upstream, status.serial, status.last_error) == (A, 200, None)
    assert status.pulls == {"confirmed": 1}


def test_a_rollback_is_refused_and_the_index_held_kept(
        store: Store, secret: SecretKey, fake: FakeFetcher) -> None:
    data = b"release" * 100
    newer, older = signed(secret, 200, data), signed(secret, 100, data)
    fake.blobs[A][hashlib.sha256(data).hexdigest()] = data
    puller = replica(store, secret, fake)
    fake.documents[A] = newer.document
    assert pull(puller)
    fake.documents[A] = older.document
    assert not pull(puller)
    assert store.read_document() == newer.document
    status = store.load_pull_status()
    assert status is not None
    assert status.refusals == {"rollback": 1}
    assert status.last_error is not None and "refused (rollback)" in status.last_error
    assert status.serial == 200


def test_a_failed_upstream_fails_over_to_the_next(
        store: Store, secret: SecretKey, fake: FakeFetcher) -> None:
    data = b"release" * 100
    index = signed(secret, 100, data)
    fake.documents[B] = index.document
    fake.blobs[B][hashlib.sha256(data).hexdigest()] = data
    fake.down.add(A)
    assert pull(replica(store, secret, fake, upstreams=(A, B)))
    assert store.read_document() == index.document
    status = store.load_pull_status()
    assert status is not None
    assert (status.upstream, status.errors, status.last_error) == (B, {"connect": 1}, None)
    fake.down.add(B)
    assert not pull(replica(store, secret, fake, upstreams=(A, B)))
    assert store.read_document() == index.document     # the last good index stays
    status = store.load_pull_status()
    assert status is not None and status.last_error is not None
    assert A in status.last_error and B in status.last_error


def test_a_blob_whose_bytes_do_not_hash_to_its_name_is_refused(
        store: Store, secret: SecretKey, fake: FakeFetcher) -> None:
    data = b"release" * 100
    index = signed(secret, 100, data)
    sha256 = hashlib.sha256(data).hexdigest()
    fake.documents[A] = index.document
    fake.blobs[A][sha256] = b"X" + data[1:]            # the right size, other bytes
    assert not pull(replica(store, secret, fake))
    assert store.read_document() is None               # nothing installed
    assert not store.blob_path(sha256).exists()
    status = store.load_pull_status()
    assert status is not None and status.refusals == {"blob_mismatch": 1}
    fake.blobs[A][sha256] = data                       # the upstream repaired: taken
    assert pull(replica(store, secret, fake))
    assert store.blob_path(sha256).read_bytes() == data
