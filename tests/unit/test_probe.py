"""probe: the facts of a store on disk, and the rule a served tarball must pass.

Real keys, real signatures, a real store in a temp directory (files only: no sockets, no
subprocesses). The HTTP side is exercised against real servers in tests/check/.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import pytest

from codecache.core.config import (
    Config,
    ReplicaConfig,
    Role,
    SigningConfig,
    StoreConfig,
    load_config,
)
from codecache.core.errors import ConfigError, HashMismatch, SignatureError
from codecache.core.index import Channel, Index, Package, Release, release_comment
from codecache.core.pin import svn_pin
from codecache.core.signing import PublicKey, SecretKey, generate_key, sign_prehashed
from codecache.core.trust import sign_index
from codecache.ops.check import State, Thresholds, assess
from codecache.ops.local import probe_store
from codecache.ops.targets import Target, check_tarball
from codecache.store.state import PullStatus
from codecache.store.store import Store
from codecache.web.storeview import StoreView

DATA = b"pilot tarball bytes " * 500
SVN = "svn://svn.example.org/pilot/tags/1.0.0"


def signature(secret: SecretKey, data: bytes, version: str = "1.0.0") -> str:
    sha256 = hashlib.sha256(data).hexdigest()
    comment = release_comment("pilot", version, sha256, len(data), svn_pin(SVN, 7))
    return sign_prehashed(secret, hashlib.blake2b(data, digest_size=64).digest(), comment)


def release(secret: SecretKey, data: bytes = DATA, **changes: object) -> Release:
    made = Release("1.0.0", hashlib.sha256(data).hexdigest(), len(data), "0" * 64, svn_pin(SVN, 7),
                   "releasemgr", 1_700_000_000, signature(secret, data))
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


def index_of(rel: Release, *, expires_in: int = 3600) -> Index:
    now = int(time.time())
    return Index(serial=now, generated=now - 60, expires=now + expires_in,
                 packages={"pilot": Package(releases={rel.version: rel},
                                            channels={"latest": Channel(rel.version, now)})})


def make_store(root: Path, secret: SecretKey, *, expires_in: int = 3600) -> Store:
    store = Store(root)
    store.init()
    rel = release(secret)
    store.blob_path(rel.sha256).write_bytes(DATA)
    store.install(sign_index(secret, index_of(rel, expires_in=expires_in)))
    return store


def config_for(root: Path, role: Role = Role.ORIGIN) -> Config:
    return Config(role=role, store=StoreConfig(path=root),
                  replica=ReplicaConfig(upstreams=("http://127.0.0.1:9",)),
                  signing=SigningConfig())


@pytest.fixture
def secret() -> SecretKey:
    return generate_key()


def keys(*secrets: SecretKey) -> dict[str, PublicKey]:
    return {s.public.keyid: s.public for s in secrets}


def test_a_good_store_is_ok(tmp_path: Path, secret: SecretKey) -> None:
    make_store(tmp_path / "store", secret)
    facts = probe_store(config_for(tmp_path / "store"), keys(secret), timeout=10)
    assert (facts.verified, facts.blobs_unavailable, facts.served_problems) == (1, 0, ())
    assert facts.disk_total and facts.disk_free is not None
    assert assess(facts, Thresholds()).state is State.OK


def test_a_flipped_byte_in_a_channel_blob_is_a_corrupt_blob(tmp_path: Path,
                                                            secret: SecretKey) -> None:
    store = make_store(tmp_path / "store", secret)
    blob = store.blob_path(release(secret).sha256)
    data = bytearray(blob.read_bytes())
    data[10] ^= 1
    blob.write_bytes(bytes(data))
    facts = probe_store(config_for(store.root), keys(secret), timeout=10)
    result = assess(facts, Thresholds())
    assert result.state is State.CRITICAL
    assert f"blob {blob.name} corrupt on disk" in result.message


def test_off_channel_damage_needs_deep(tmp_path: Path, secret: SecretKey) -> None:
    store = make_store(tmp_path / "store", secret)
    blob = store.blob_path(release(secret).sha256)
    blob.write_bytes(b"X" + blob.read_bytes()[1:])
    config = config_for(store.root)
    none = probe_store(config, keys(secret), timeout=10, targets=())
    assert assess(none, Thresholds()).state is State.OK      # sizes only
    deep = probe_store(config, keys(secret), timeout=10, targets=(), deep=True)
    assert assess(deep, Thresholds()).state is State.CRITICAL


def test_a_missing_store_is_the_checks_own_failure(tmp_path: Path, secret: SecretKey) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        probe_store(config_for(tmp_path / "nope"), keys(secret), timeout=10)


def test_a_store_without_index_is_not_ready(tmp_path: Path, secret: SecretKey) -> None:
    Store(tmp_path / "store").init()
    facts = probe_store(config_for(tmp_path / "store"), keys(secret), timeout=10)
    result = assess(facts, Thresholds())
    assert result.state is State.CRITICAL and "no index yet" in result.message


def test_an_index_signed_by_an_untrusted_key_is_not_ready(tmp_path: Path,
                                                          secret: SecretKey) -> None:
    make_store(tmp_path / "store", secret)
    facts = probe_store(config_for(tmp_path / "store"), keys(generate_key()),
                        timeout=10)
    result = assess(facts, Thresholds())
    assert result.state is State.CRITICAL and "bad_signature" in result.message


def test_an_expired_store_index_is_critical(tmp_path: Path, secret: SecretKey) -> None:
    make_store(tmp_path / "store", secret, expires_in=-5)
    facts = probe_store(config_for(tmp_path / "store"), keys(secret), timeout=10)
    assert "EXPIRED" in assess(facts, Thresholds()).message


def test_a_replicas_pull_facts(tmp_path: Path, secret: SecretKey) -> None:
    store = make_store(tmp_path / "store", secret)
    now = time.time()
    store.save_pull_status(PullStatus(upstream="http://o:8080", serial=1, confirmed_at=now - 400,
                                      last_error="http://o:8080: connect", refusals={"conflict": 2},
                                      refused_at={"conflict": now - 10}))
    facts = probe_store(config_for(store.root, Role.REPLICA), keys(secret), timeout=10,
                        upstream=False)
    result = assess(facts, Thresholds())
    assert result.state is State.CRITICAL
    assert "replica lags" in result.message and "two writers" in result.message
    assert "last error: http://o:8080: connect" in result.message


def test_check_tarball_accepts_the_release_as_signed(secret: SecretKey) -> None:
    rel = release(secret)
    check_tarball(index_of(rel), "pilot", "1.0.0", DATA, rel.minisig, keys(secret))


def test_check_tarball_refuses_other_bytes(secret: SecretKey) -> None:
    rel = release(secret)
    with pytest.raises(HashMismatch):
        check_tarball(index_of(rel), "pilot", "1.0.0", DATA + b"x", rel.minisig,
                      keys(secret))


def test_check_tarball_refuses_a_valid_signature_of_another_release(secret: SecretKey) -> None:
    # The same bytes, signed as version 9.9.9: the signature verifies, its comment lies.
    rel = release(secret, minisig=signature(secret, DATA, version="9.9.9"))
    with pytest.raises(SignatureError, match="another release"):
        check_tarball(index_of(rel), "pilot", "1.0.0", DATA, rel.minisig, keys(secret))


def test_check_tarball_refuses_a_served_signature_the_index_does_not_list(
        secret: SecretKey) -> None:
    rel = release(secret)
    other = signature(generate_key(), DATA)
    with pytest.raises(SignatureError, match="not the signature the signed index lists"):
        check_tarball(index_of(rel), "pilot", "1.0.0", DATA, other, keys(secret))


def test_check_tarball_refuses_an_untrusted_key(secret: SecretKey) -> None:
    rel = release(secret)
    with pytest.raises(SignatureError, match="not trusted"):
        check_tarball(index_of(rel), "pilot", "1.0.0", DATA, rel.minisig,
                      keys(generate_key()))


def test_check_tarball_during_a_key_rotation_uses_a_trusted_signature(
        secret: SecretKey) -> None:
    new = generate_key()
    old_sig, new_sig = signature(secret, DATA), signature(new, DATA)
    rel = release(secret, minisig=old_sig,
                  signatures={secret.public.keyid: old_sig, new.public.keyid: new_sig})
    check_tarball(index_of(rel), "pilot", "1.0.0", DATA, old_sig, keys(new))


def test_targets_name_a_channel() -> None:
    from codecache.ops.targets import parse_target
    assert parse_target("pilot/latest") == Target("pilot", "latest")
    for bad in ("pilot", "/latest", "pilot/", "a/b/c"):
        with pytest.raises(ConfigError):
            parse_target(bad)


@pytest.mark.parametrize("state", ["refused", "empty"])
def test_a_store_gets_the_servers_readiness_reasons(tmp_path: Path, secret: SecretKey,
                                                    state: str) -> None:
    """One builder of readiness inputs: ``check --store`` and ``/readyz`` of the same
    store give the same verdict in the same words."""
    if state == "refused":
        make_store(tmp_path / "store", secret)   # signed by a key the node does not trust
    else:
        Store(tmp_path / "store").init()
    other = generate_key()
    (tmp_path / "key.pub").write_text(other.public.to_minisign())
    config = load_config(None, env={"CODECACHE_STORE_PATH": str(tmp_path / "store"),
                                    "CODECACHE_SIGNING_TRUSTED_KEYS": str(tmp_path / "key.pub")})
    served = StoreView(config)
    served.refresh()
    checked = probe_store(config, keys(other), timeout=10).readiness
    assert checked is not None and not checked.ready
    assert checked == served.verdict()
