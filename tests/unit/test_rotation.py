"""Key rotation in the pure parts: key ids, several signatures, the per-key map, the config.

The origin's side (signing existing releases with an added key) and the whole procedure
through replicas and a squid are tested in tests/replica/test_rotation.py.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from codecache.core.config import load_config
from codecache.core.errors import ConfigError, IntegrityError, SignatureNotFound
from codecache.core.index import (
    Channel,
    Index,
    Package,
    Release,
    from_payload,
    release_comment,
    to_payload,
)
from codecache.core.pin import svn_pin
from codecache.core.signing import (
    PublicKey,
    SecretKey,
    blake2b_file,
    generate_key,
    normalise_keyid,
    parse_minisig,
    sign_document,
    sign_prehashed,
    verify_document,
    verify_minisig,
)
from codecache.web.catalog import IMMUTABLE, Catalog, Route

DATA = b"pilot tarball\n" * 50


def keys_of(*secrets: SecretKey) -> dict[str, PublicKey]:
    return {s.public.keyid: s.public for s in secrets}


# --- key ids ------------------------------------------------------------------------------


def test_key_ids_are_16_uppercase_hex_digits() -> None:
    for _ in range(200):
        keyid = generate_key().public.keyid
        assert len(keyid) == 16 and keyid == keyid.upper() and int(keyid, 16) >= 1 << 60


def test_a_key_id_with_a_leading_zero_is_padded_and_its_short_form_names_it() -> None:
    secret = SecretKey(bytes.fromhex("3412000000000000"), generate_key().key)
    assert secret.public.keyid == "0000000000001234"
    assert normalise_keyid("1234") == "0000000000001234"   # as minisign 0.11 prints it
    assert normalise_keyid("1234abcd") == "000000001234ABCD"
    for bad in ("", "G1", "1" * 17, "12 34"):
        assert normalise_keyid(bad) is None


def test_an_index_signed_under_a_short_key_id_still_verifies() -> None:
    secret = SecretKey(bytes.fromhex("3412000000000000"), generate_key().key)
    document = sign_document(secret, {"serial": 1})
    document["signatures"][0]["keyid"] = "1234"   # what an older codecache wrote
    assert verify_document(keys_of(secret), document) == {"serial": 1}


# --- several signatures -------------------------------------------------------------------


def test_an_index_signed_by_two_keys_verifies_with_either() -> None:
    old, new, other = generate_key(), generate_key(), generate_key()
    document = sign_document([old, new], {"serial": 7})
    assert [s["keyid"] for s in document["signatures"]] == [old.public.keyid, new.public.keyid]
    assert verify_document(keys_of(old), document) == {"serial": 7}
    assert verify_document(keys_of(new), document) == {"serial": 7}
    with pytest.raises(IntegrityError):
        verify_document(keys_of(other), document)


def _release(version: str, secrets: list[SecretKey]) -> Release:
    sha = "a" * 64
    comment = release_comment("pilot", version, sha, len(DATA), svn_pin("svn://h/pilot/tags/x", 3))
    prehash = blake2b_file(io.BytesIO(DATA))
    sigs = {s.public.keyid: sign_prehashed(s, prehash, comment) for s in secrets}
    return Release(version=version, sha256=sha, size=len(DATA), tar_sha256="b" * 64,
                   source=svn_pin("svn://h/pilot/tags/x", 3), author="rm", date=1000,
                   minisig=sigs[secrets[0].public.keyid],
                   signatures=sigs if len(sigs) > 1 else {})


def _index(*releases: Release) -> Index:
    pkg = Package(releases={r.version: r for r in releases},
                  channels={"latest": Channel(releases[-1].version, 2000)})
    return Index(serial=5, generated=3000, expires=9000, packages={"pilot": pkg})


def test_one_key_keeps_the_release_record_as_it_always_was() -> None:
    key = generate_key()
    payload = to_payload(_index(_release("1.0", [key])))
    record = payload["packages"]["pilot"]["releases"]["1.0"]
    assert "signatures" not in record
    parsed = from_payload(payload).release("pilot", "1.0")
    assert parsed.all_signatures() == {key.public.keyid: record["minisig"]}
    assert parsed.signature_by(key.public.keyid) == record["minisig"]


def test_two_keys_carry_a_signature_map_that_round_trips() -> None:
    old, new = generate_key(), generate_key()
    release = _release("1.0", [new, old])
    payload = to_payload(_index(release))
    record = payload["packages"]["pilot"]["releases"]["1.0"]
    assert set(record["signatures"]) == {old.public.keyid, new.public.keyid}
    assert record["minisig"] == record["signatures"][new.public.keyid]
    parsed = from_payload(payload).release("pilot", "1.0")
    assert parsed == release
    for key in (old, new):   # each signature verifies with its own key, over the same bytes
        text = parsed.signature_by(key.public.keyid)
        assert text is not None
        verify_minisig(keys_of(key), parse_minisig(text), io.BytesIO(DATA))


@pytest.mark.parametrize("damage", ["keyid_of_other", "lowercase", "primary_missing", "type"])
def test_a_malformed_signature_map_is_refused(damage: str) -> None:
    old, new = generate_key(), generate_key()
    # A key id of digits only lowercases to itself (1 key in ~1,850): that one could not
    # be damaged this way, so draw another.
    while damage == "lowercase" and old.public.keyid.lower() == old.public.keyid:
        old = generate_key()
    payload = to_payload(_index(_release("1.0", [new, old])))
    record = payload["packages"]["pilot"]["releases"]["1.0"]
    sigs = record["signatures"]
    if damage == "keyid_of_other":   # old's slot holds new's signature
        sigs[old.public.keyid] = sigs[new.public.keyid]
    elif damage == "lowercase":
        sigs[old.public.keyid.lower()] = sigs.pop(old.public.keyid)
    elif damage == "primary_missing":
        del sigs[new.public.keyid]
    else:
        record["signatures"] = ["not", "a", "map"]
    with pytest.raises(IntegrityError):
        from_payload(payload)


# --- the URLs -----------------------------------------------------------------------------


@pytest.fixture
def rotated() -> tuple[Catalog, SecretKey, SecretKey, Release]:
    old, new = generate_key(), generate_key()
    release = _release("1.0", [new, old])
    return Catalog(_index(release), b"{}", channel_max_age=60), old, new, release


def test_the_primary_signature_of_a_release_is_cached_briefly(
        rotated: tuple[Catalog, SecretKey, SecretKey, Release]) -> None:
    catalog, _, _, release = rotated
    route, rep = catalog.lookup("/pilot/releases/1.0.tar.gz.minisig")
    assert route is Route.SIGNATURE and rep is not None
    assert rep.inline == release.minisig.encode()
    assert rep.cache_control == "public, max-age=60"   # it changes when the primary rotates


def test_each_keys_signature_has_an_immutable_url(
        rotated: tuple[Catalog, SecretKey, SecretKey, Release]) -> None:
    catalog, old, new, release = rotated
    for key in (old, new):
        route, rep = catalog.lookup(f"/pilot/releases/1.0.tar.gz.{key.public.keyid}.minisig")
        assert route is Route.SIGNATURE and rep is not None
        assert rep.inline == release.all_signatures()[key.public.keyid].encode()
        assert rep.cache_control == IMMUTABLE
        assert rep.version == "1.0"
        # the channel pointing at it has per-key URLs too, cached like the channel
        _, channel = catalog.lookup(f"/pilot/latest.tar.gz.{key.public.keyid}.minisig")
        assert channel is not None and channel.inline == rep.inline
        assert channel.cache_control == "public, max-age=60"


def test_an_unknown_key_id_is_a_404_naming_the_key(
        rotated: tuple[Catalog, SecretKey, SecretKey, Release]) -> None:
    catalog, *_ = rotated
    stranger = generate_key().public.keyid
    with pytest.raises(SignatureNotFound, match=stranger):
        catalog.lookup(f"/pilot/releases/1.0.tar.gz.{stranger}.minisig")


def test_the_short_key_id_form_names_the_same_signature() -> None:
    short = SecretKey(bytes.fromhex("3412000000000000"), generate_key().key)
    catalog = Catalog(_index(_release("1.0", [short])), b"{}", channel_max_age=60)
    _, padded = catalog.lookup("/pilot/releases/1.0.tar.gz.0000000000001234.minisig")
    _, unpadded = catalog.lookup("/pilot/releases/1.0.tar.gz.1234.minisig")
    assert padded is not None and unpadded is not None and padded.inline == unpadded.inline


# --- config -------------------------------------------------------------------------------


def _config(tmp_path: Path, signing: str) -> Path:
    path = tmp_path / "codecache.toml"
    path.write_text(f"[signing]\n{signing}\n")
    return path


def test_secret_key_may_be_one_path_or_a_list_primary_first(tmp_path: Path) -> None:
    one = load_config(_config(tmp_path, 'secret_key = "a.key"'), env={})
    assert one.signing.secret_keys == (tmp_path / "a.key",)
    assert one.signing.secret_key == tmp_path / "a.key"
    two = load_config(_config(tmp_path, 'secret_key = ["b.key", "a.key"]'), env={})
    assert two.signing.secret_keys == (tmp_path / "b.key", tmp_path / "a.key")
    assert two.signing.secret_key == tmp_path / "b.key"
    none = load_config(_config(tmp_path, ""), env={})
    assert none.signing.secret_keys == () and none.signing.secret_key is None
    env = load_config(_config(tmp_path, ""), env={"CODECACHE_SIGNING_SECRET_KEY": "n.key,o.key"})
    assert [p.name for p in env.signing.secret_keys] == ["n.key", "o.key"]


@pytest.mark.parametrize(("value", "match"), [
    ("[]", "non-empty list"),
    ('["a.key", 3]', "list of paths"),
    ("3", "a path or"),
    ('""', "expected a path"),
    ('["a.key", "a.key"]', "listed twice"),
])
def test_bad_secret_key_values_are_clear_config_errors(tmp_path: Path, value: str,
                                                       match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_config(tmp_path, f"secret_key = {value}"), env={})


def test_release_replace_keeps_the_map_typed() -> None:
    # dataclasses.replace is how the origin switches the primary: the map travels along.
    old, new = generate_key(), generate_key()
    release = _release("1.0", [old, new])
    switched = dataclasses.replace(release, minisig=release.signatures[new.public.keyid])
    assert switched.signature_by(old.public.keyid) == release.minisig


def test_the_primary_signature_is_dated_no_earlier_than_the_primary_switch() -> None:
    old, new = generate_key(), generate_key()
    index = dataclasses.replace(_index(_release("1.0", [new, old])), primary_since=4000)
    assert from_payload(to_payload(index)) == index
    assert to_payload(index)["primary_since"] == "1970-01-01T01:06:40Z"
    assert "primary_since" not in to_payload(_index(_release("1.0", [old])))
    catalog = Catalog(index, b"{}", channel_max_age=60)
    dates = {path: rep.last_modified for path in (
        "/pilot/releases/1.0.tar.gz", "/pilot/releases/1.0.tar.gz.minisig",
        f"/pilot/releases/1.0.tar.gz.{old.public.keyid}.minisig",
        "/pilot/latest.tar.gz.minisig", "/pilot/latest.tar.gz")
        if (rep := catalog.lookup(path)[1]) is not None}
    assert dates == {
        "/pilot/releases/1.0.tar.gz": 1000,              # the tag's commit time
        "/pilot/releases/1.0.tar.gz.minisig": 4000,      # changed at the switch (wget -N)
        f"/pilot/releases/1.0.tar.gz.{old.public.keyid}.minisig": 1000,   # never changes
        "/pilot/latest.tar.gz.minisig": 4000,            # later than the move at 2000
        "/pilot/latest.tar.gz": 2000,
    }
