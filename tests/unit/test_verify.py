"""Unit tests for codecache.core.verify: a tarball against a signature and its comment."""

from __future__ import annotations

import hashlib
import io

import pytest

from codecache.core.errors import SignatureError
from codecache.core.index import parse_release_comment, release_comment
from codecache.core.pin import svn_pin
from codecache.core.signing import (
    SecretKey,
    blake2b_file,
    generate_key,
    parse_minisig,
    sign_prehashed,
)
from codecache.core.verify import verify_tarball

DATA = b"pilot tarball\n" * 50
SHA = hashlib.sha256(DATA).hexdigest()


def signed(secret: SecretKey, comment: str, data: bytes = DATA) -> str:
    return sign_prehashed(secret, blake2b_file(io.BytesIO(data)), comment)


def comment_of(data: bytes = DATA, version: str = "1.0") -> str:
    return release_comment("pilot", version, hashlib.sha256(data).hexdigest(), len(data),
                           svn_pin("svn://x/pilot/tags/1.0", 7))


def test_the_comment_parser_reads_what_the_builder_writes() -> None:
    assert parse_release_comment(comment_of()) == {
        "package": "pilot", "version": "1.0", "sha256": SHA, "size": str(len(DATA)),
        "svn": "svn://x/pilot/tags/1.0@7"}
    assert parse_release_comment("timestamp:1 file:pilot.tar.gz") == {}


def test_a_good_signature_gives_the_fields_and_the_bytes_digest() -> None:
    secret = generate_key()
    keys = {secret.public.keyid: secret.public}
    minisig = parse_minisig(signed(secret, comment_of()))
    got = verify_tarball(keys, minisig, io.BytesIO(DATA), comment=comment_of())
    assert (got.sha256, got.size, got.fields["version"]) == (SHA, len(DATA), "1.0")
    # A signature made by hand (another comment) still verifies where no release is named.
    assert verify_tarball(keys, parse_minisig(signed(secret, "by hand")),
                          io.BytesIO(DATA)).fields == {}


def test_a_valid_signature_of_another_release_or_other_bytes_is_refused() -> None:
    secret = generate_key()
    keys = {secret.public.keyid: secret.public}
    other = parse_minisig(signed(secret, comment_of(version="2.0")))
    with pytest.raises(SignatureError, match="another release"):
        verify_tarball(keys, other, io.BytesIO(DATA), comment=comment_of())
    # The comment names other bytes than those signed (a signer's mistake or a forgery).
    lying = parse_minisig(signed(secret, comment_of(b"other bytes")))
    with pytest.raises(SignatureError, match="other content"):
        verify_tarball(keys, lying, io.BytesIO(DATA))


def test_an_untrusted_key_or_other_bytes_do_not_verify() -> None:
    secret = generate_key()
    minisig = parse_minisig(signed(secret, comment_of()))
    with pytest.raises(SignatureError, match="not trusted"):
        verify_tarball({}, minisig, io.BytesIO(DATA))
    with pytest.raises(SignatureError, match="does not match"):
        verify_tarball({secret.public.keyid: secret.public}, minisig, io.BytesIO(DATA + b"!"))


def test_a_digest_the_caller_has_stands_for_the_bytes_and_is_held_to_the_comment() -> None:
    secret = generate_key()
    keys = {secret.public.keyid: secret.public}
    minisig = parse_minisig(signed(secret, comment_of()))
    got = verify_tarball(keys, minisig, io.BytesIO(DATA), comment=comment_of(),
                         digest=(SHA, len(DATA)))
    assert (got.sha256, got.size) == (SHA, len(DATA))
    with pytest.raises(SignatureError, match="other content"):
        verify_tarball(keys, minisig, io.BytesIO(DATA), digest=(SHA, len(DATA) + 1))
    with pytest.raises(SignatureError, match="does not match"):   # still over the bytes
        verify_tarball(keys, minisig, io.BytesIO(DATA + b"!"), digest=(SHA, len(DATA)))
