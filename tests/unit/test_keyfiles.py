"""keyfiles: public key files read as text, as signing (with cryptography) reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from codecache.core.errors import ConfigError
from codecache.core.keyfiles import parse_public_key, read_public_key, read_trusted_keys
from codecache.core.signing import generate_key, load_trusted_keys


def test_a_public_key_file_reads_as_the_key_signing_loads(tmp_path: Path) -> None:
    secret = generate_key()
    path = tmp_path / "k.pub"
    path.write_text(secret.public.to_minisign())
    key_id, raw = read_public_key(path)
    assert key_id == secret.key_id
    assert load_trusted_keys([path])[secret.public.keyid].to_minisign() == path.read_text()
    assert read_trusted_keys([path]) == [(key_id, raw)]
    assert len(raw) == 32


@pytest.mark.parametrize(("text", "message"), [
    ("", "is not a minisign public key file"),
    ("untrusted comment: x\nnot base64!\n", r"\(bad base64\)"),
    ("untrusted comment: x\nRWQAAAA=\n", "is not a minisign Ed25519 public key"),
])
def test_a_bad_public_key_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_public_key(text, "k.pub")


def test_a_missing_key_file_and_no_key_at_all_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_trusted_keys([tmp_path / "absent.pub"])
    with pytest.raises(ConfigError, match="no trusted public key"):
        read_trusted_keys([])
