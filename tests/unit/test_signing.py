"""Unit tests for codecache.core.signing: minisign key/signature formats, canonical JSON."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from codecache.core.errors import ConfigError, InsecureKeyFile, SignatureError
from codecache.core.keyfiles import parse_public_key
from codecache.core.signing import (
    PublicKey,
    SecretKey,
    blake2b_file,
    canonical_json,
    generate_key,
    load_public_key,
    load_secret_key,
    load_trusted_keys,
    parse_minisig,
    sign_document,
    sign_prehashed,
    verify_document,
    verify_minisig,
    write_key_pair,
)

DATA = b"pilot tarball bytes\n" * 100
COMMENT = "codecache package=pilot version=1.0 sha256=00 size=1 svn=svn://x/pilot/tags/1.0@3"


@pytest.fixture
def secret() -> SecretKey:
    return generate_key()


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def keys_of(*secrets: SecretKey) -> dict[str, PublicKey]:
    return {s.public.keyid: s.public for s in secrets}


def signed(secret: SecretKey, data: bytes = DATA, comment: str = COMMENT) -> str:
    return sign_prehashed(secret, blake2b_file(io.BytesIO(data)), comment)


# --- keys -------------------------------------------------------------------------------------


def test_key_pair_files_round_trip(tmp_path: Path, secret: SecretKey) -> None:
    write_key_pair(secret, tmp_path / "k.key", tmp_path / "k.pub")
    loaded = load_secret_key(tmp_path / "k.key")
    public = load_public_key(tmp_path / "k.pub")
    assert loaded.key_id == secret.key_id
    assert loaded.to_minisign() == secret.to_minisign()
    assert public.keyid == secret.public.keyid
    assert public.to_minisign() == secret.public.to_minisign()
    # A signature by the loaded secret verifies with the loaded public key.
    verify_minisig({public.keyid: public}, parse_minisig(signed(loaded)), io.BytesIO(DATA))


def test_public_key_file_is_minisign_format(secret: SecretKey, tmp_path: Path) -> None:
    first, second = secret.public.to_minisign().splitlines()
    assert first == f"untrusted comment: minisign public key {secret.public.keyid}"
    blob = base64.b64decode(second)
    assert len(blob) == 42
    assert blob[:2] == b"Ed"
    assert blob[2:10] == secret.key_id
    (tmp_path / "k.pub").write_text(secret.public.to_minisign())
    assert load_public_key(tmp_path / "k.pub").keyid == secret.public.keyid


def test_secret_key_file_is_created_0600_even_with_a_permissive_umask(
        tmp_path: Path, secret: SecretKey, permissive_umask: None) -> None:
    write_key_pair(secret, tmp_path / "k.key", tmp_path / "k.pub")
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600


def test_key_files_are_never_overwritten(tmp_path: Path, secret: SecretKey) -> None:
    write_key_pair(secret, tmp_path / "k.key", tmp_path / "k.pub")
    before = (tmp_path / "k.key").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        write_key_pair(generate_key(), tmp_path / "k.key", tmp_path / "other.pub")
    with pytest.raises(ConfigError, match="already exists"):
        write_key_pair(generate_key(), tmp_path / "other.key", tmp_path / "k.pub")
    assert (tmp_path / "k.key").read_bytes() == before
    assert not (tmp_path / "other.key").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o610, 0o601])
def test_group_or_world_accessible_secret_key_is_refused(tmp_path: Path, secret: SecretKey,
                                                         mode: int) -> None:
    write_key_pair(secret, tmp_path / "k.key", tmp_path / "k.pub")
    (tmp_path / "k.key").chmod(mode)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        load_secret_key(tmp_path / "k.key")


def test_owner_only_secret_key_modes_are_accepted(tmp_path: Path, secret: SecretKey) -> None:
    write_key_pair(secret, tmp_path / "k.key", tmp_path / "k.pub")
    (tmp_path / "k.key").chmod(0o400)
    assert load_secret_key(tmp_path / "k.key").key_id == secret.key_id


def test_missing_key_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_secret_key(tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="does not exist"):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(ConfigError, match="no trusted public key"):
        load_trusted_keys([])


def test_corrupted_secret_key_fails_its_checksum(tmp_path: Path, secret: SecretKey) -> None:
    comment, line = secret.to_minisign().splitlines()
    blob = bytearray(base64.b64decode(line))
    blob[100] ^= 0x01  # inside the 64-byte secret
    path = tmp_path / "k.key"
    path.write_text(f"{comment}\n{base64.b64encode(bytes(blob)).decode()}\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="checksum"):
        load_secret_key(path)


def test_unencrypted_minisign_key_with_zero_checksum_is_accepted(tmp_path: Path,
                                                                 secret: SecretKey) -> None:
    # ``minisign -G -W`` writes unencrypted keys with an all-zero checksum.
    comment, line = secret.to_minisign().splitlines()
    blob = base64.b64decode(line)[:-32] + bytes(32)
    path = tmp_path / "k.key"
    path.write_text(f"{comment}\n{base64.b64encode(blob).decode()}\n")
    path.chmod(0o600)
    assert load_secret_key(path).to_minisign() == secret.to_minisign()


def test_password_protected_secret_key_is_refused_clearly(tmp_path: Path,
                                                          secret: SecretKey) -> None:
    comment, line = secret.to_minisign().splitlines()
    blob = base64.b64decode(line)
    blob = blob[:2] + b"Sc" + blob[4:]  # scrypt KDF, as minisign writes by default
    path = tmp_path / "k.key"
    path.write_text(f"{comment}\n{base64.b64encode(blob).decode()}\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="password"):
        load_secret_key(path)


@pytest.mark.parametrize("text", ["", "untrusted comment: x\n", "untrusted comment: x\n!!!\n",
                                  "no comment\nRWQ=\n",
                                  "untrusted comment: x\n" + base64.b64encode(b"Ed" + bytes(
                                      30)).decode() + "\n"])
def test_malformed_public_keys_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_public_key(text)


def test_trusted_keys_are_indexed_by_key_id(tmp_path: Path) -> None:
    a, b = generate_key(), generate_key()
    (tmp_path / "a.pub").write_text(a.public.to_minisign())
    (tmp_path / "b.pub").write_text(b.public.to_minisign())
    keys = load_trusted_keys([tmp_path / "a.pub", tmp_path / "b.pub"])
    assert set(keys) == {a.public.keyid, b.public.keyid}


# --- detached signatures ----------------------------------------------------------------------


def test_minisig_round_trip(secret: SecretKey) -> None:
    text = signed(secret)
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("untrusted comment: ")
    assert lines[2] == f"trusted comment: {COMMENT}"
    minisig = parse_minisig(text)
    assert minisig.algorithm == b"ED"  # prehashed, BLAKE2b-512
    assert minisig.keyid == secret.public.keyid
    assert minisig.trusted_comment == COMMENT
    verify_minisig(keys_of(secret), minisig, io.BytesIO(DATA))


def test_prehash_is_blake2b_512(secret: SecretKey) -> None:
    prehash = blake2b_file(io.BytesIO(DATA))
    assert prehash == hashlib.blake2b(DATA, digest_size=64).digest()
    minisig = parse_minisig(signed(secret))
    secret.public.key.verify(minisig.signature, prehash)  # raises if not over the prehash


def test_signatures_are_deterministic(secret: SecretKey) -> None:
    assert signed(secret) == signed(secret)


@pytest.mark.parametrize("position", [0, 7, len(DATA) // 2, len(DATA) - 1])
def test_one_changed_byte_fails_verification(secret: SecretKey, position: int) -> None:
    tampered = bytearray(DATA)
    tampered[position] ^= 0x01
    with pytest.raises(SignatureError, match="does not match the file"):
        verify_minisig(keys_of(secret), parse_minisig(signed(secret)), io.BytesIO(tampered))


def test_appended_byte_fails_verification(secret: SecretKey) -> None:
    with pytest.raises(SignatureError):
        verify_minisig(keys_of(secret), parse_minisig(signed(secret)),
                       io.BytesIO(DATA + b"\0"))


def test_edited_trusted_comment_fails_verification(secret: SecretKey) -> None:
    text = signed(secret).replace("version=1.0 ", "version=2.0 ")
    minisig = parse_minisig(text)
    assert "version=2.0" in minisig.trusted_comment
    with pytest.raises(SignatureError, match="trusted comment"):
        verify_minisig(keys_of(secret), minisig, io.BytesIO(DATA))


def test_signature_by_an_untrusted_key_is_refused(secret: SecretKey) -> None:
    other = generate_key()
    with pytest.raises(SignatureError, match="not trusted"):
        verify_minisig(keys_of(other), parse_minisig(signed(secret)), io.BytesIO(DATA))


def test_signature_claiming_a_trusted_key_id_is_refused(secret: SecretKey) -> None:
    forger = SecretKey(secret.key_id, generate_key().key)  # same id, different key
    with pytest.raises(SignatureError):
        verify_minisig(keys_of(secret), parse_minisig(signed(forger)), io.BytesIO(DATA))


def test_trusted_comment_must_be_one_line(secret: SecretKey) -> None:
    with pytest.raises(ValueError, match="one line"):
        signed(secret, comment="codecache\ninjected line")


@pytest.mark.parametrize("text", ["", "a\nb\nc\n", "untrusted comment: x\n!!\n"
                                  "trusted comment: c\nAAAA\n",
                                  "untrusted comment: x\nAAAA\ntrusted comment: c\nAAAA\n"])
def test_malformed_signatures_are_signature_errors(text: str) -> None:
    with pytest.raises(SignatureError):
        parse_minisig(text)


# --- canonical JSON and the embedded index signature ------------------------------------------


def test_canonical_json_sorts_keys_without_spaces_in_utf8() -> None:
    value = {"b": 1, "a": [1, {"d": None, "c": True}], "é": "ü", "n": "x y"}
    assert canonical_json(value) == '{"a":[1,{"c":true,"d":null}],"b":1,"n":"x y","é":"ü"}' \
        .encode()


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_document_signature_round_trip(secret: SecretKey) -> None:
    payload = {"serial": 3, "packages": {"pilot": {"x": "ü"}}}
    document = sign_document(secret, payload)
    assert document["signatures"][0]["keyid"] == secret.public.keyid
    assert verify_document(keys_of(secret), document) == payload


def test_document_signature_covers_content_not_formatting(secret: SecretKey) -> None:
    document = sign_document(secret, {"b": 1, "a": 2})
    reordered = {"signatures": document["signatures"], "signed": {"a": 2, "b": 1}}
    assert verify_document(keys_of(secret), reordered) == {"a": 2, "b": 1}


@pytest.mark.parametrize("edit", ["value", "key", "type", "signature", "keyid"])
def test_edited_document_is_refused(secret: SecretKey, edit: str) -> None:
    document = sign_document(secret, {"serial": 3, "sha256": "ab" * 32})
    if edit == "value":
        document["signed"]["serial"] = 4
    elif edit == "key":
        document["signed"]["serial2"] = document["signed"].pop("serial")
    elif edit == "type":
        document["signed"]["serial"] = "3"
    elif edit == "signature":
        sig = document["signatures"][0]["sig"]
        document["signatures"][0]["sig"] = ("1" if sig[0] != "1" else "2") + sig[1:]
    else:
        document["signatures"][0]["keyid"] = generate_key().public.keyid
    with pytest.raises(SignatureError):
        verify_document(keys_of(secret), document)


def test_document_signed_by_an_untrusted_key_is_refused(secret: SecretKey) -> None:
    document = sign_document(generate_key(), {"serial": 1})
    with pytest.raises(SignatureError):
        verify_document(keys_of(secret), document)


def test_any_trusted_signature_suffices_for_key_rotation(secret: SecretKey) -> None:
    old, new = generate_key(), secret
    document = sign_document(new, {"serial": 9})
    document["signatures"].insert(0, {"keyid": old.public.keyid, "sig": "00" * 64})
    assert verify_document(keys_of(old, new), document) == {"serial": 9}


@pytest.mark.parametrize("document", [
    None, [], {}, {"signed": {}}, {"signed": [], "signatures": []},
    {"signed": {}, "signatures": {}}, {"signed": {}, "signatures": ["x", {"sig": "zz"}]},
])
def test_malformed_documents_are_refused(secret: SecretKey, document: object) -> None:
    with pytest.raises(SignatureError):
        verify_document(keys_of(secret), document)
