"""StoreView on real files: only verified, never older indexes; readiness follows the blobs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from codecache.core.config import load_config
from codecache.core.index import EMPTY, Index, Release, add_release, move_channel
from codecache.core.pin import svn_pin
from codecache.core.signing import SecretKey, generate_key
from codecache.core.trust import sign_index
from codecache.store.store import Store
from codecache.web.storeview import StoreView

BLOB = b"pilot tarball bytes"
SHA = hashlib.sha256(BLOB).hexdigest()


@pytest.fixture
def secret() -> SecretKey:
    return generate_key()


@pytest.fixture
def store(tmp_path: Path, secret: SecretKey) -> Store:
    (tmp_path / "key.pub").write_text(secret.public.to_minisign())
    store = Store(tmp_path / "store")
    store.init()
    store.blob_path(SHA).write_bytes(BLOB)
    return store


@pytest.fixture
def view(tmp_path: Path, store: Store) -> StoreView:
    config = load_config(None, env={"CODECACHE_STORE_PATH": str(store.root),
                                    "CODECACHE_SIGNING_TRUSTED_KEYS": str(tmp_path / "key.pub")})
    return StoreView(config)


def _index(serial: int, expires_in: int = 3600) -> Index:
    now = int(time.time())
    release = Release(version="1.0", sha256=SHA, size=len(BLOB), tar_sha256="b" * 64,
                      source=svn_pin("svn://x/pilot/tags/1.0", 4), author="rm", date=now,
                      minisig="sig\n")
    index = dataclasses.replace(EMPTY, serial=serial, generated=now, expires=now + expires_in)
    return move_channel(add_release(index, "pilot", release), "pilot", "latest", "1.0", now)


def install(store: Store, secret: SecretKey, index: Index) -> None:
    store.install(sign_index(secret, index))


def status_of(view: StoreView) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body ``/readyz`` would give."""
    verdict, body = view.readiness()
    return (200 if verdict.ready else 503), body


def test_no_index_is_not_ready(view: StoreView) -> None:
    view.refresh()
    status, body = status_of(view)
    assert status == 503
    assert body["status"] == "the store has no index yet"


def test_verified_index_with_its_blobs_is_ready(view: StoreView, store: Store,
                                                secret: SecretKey) -> None:
    install(store, secret, _index(5))
    view.refresh()
    status, body = status_of(view)
    assert (status, body["status"], body["serial"]) == (200, "ok", 5)
    assert view.blobs.cached(SHA) == BLOB  # verified and held at once
    assert view.metrics.registry.get_sample_value("codecache_index_serial") == 5


def test_tampered_index_is_refused_and_the_last_good_one_kept(
        view: StoreView, store: Store, secret: SecretKey) -> None:
    install(store, secret, _index(5))
    view.refresh()
    document = json.loads(store.index_path.read_bytes())
    document["signed"]["serial"] = 99
    store.index_path.write_text(json.dumps(document))
    view.refresh()
    status, body = status_of(view)
    assert status == 503 and "refused" in str(body["status"])
    assert view.catalog is not None and view.catalog.index.serial == 5


def test_older_index_is_refused(view: StoreView, store: Store, secret: SecretKey) -> None:
    install(store, secret, _index(7))
    view.refresh()
    install(store, secret, _index(6))
    view.refresh()
    assert view.catalog is not None and view.catalog.index.serial == 7
    assert "older than the 7 already accepted" in str(status_of(view)[1]["status"])
    install(store, secret, _index(8))
    view.refresh()
    assert status_of(view)[0] == 200 and view.catalog.index.serial == 8


def test_expired_index_is_served_but_degraded(view: StoreView, store: Store,
                                              secret: SecretKey) -> None:
    install(store, secret, _index(5, expires_in=-10))
    view.refresh()
    status, body = status_of(view)
    assert (status, body["status"], body["ready"]) == (200, "degraded: index expired", True)


def test_missing_blob_is_not_ready_until_restored(view: StoreView, store: Store,
                                                  secret: SecretKey) -> None:
    install(store, secret, _index(5))
    view.refresh()
    store.blob_path(SHA).unlink()
    view.refresh()
    status, body = status_of(view)
    assert status == 503 and f"blob {SHA} missing from disk" == body["status"]
    assert view.metrics.registry.get_sample_value("codecache_blobs_unavailable") == 1
    store.blob_path(SHA).write_bytes(BLOB)
    view.refresh()
    assert status_of(view)[0] == 200
