"""Unit tests for codecache.core.verify: a tarball against a signature and its comment."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from codecache.core.errors import SignatureError
from codecache.core.index import parse_release_comment, release_comment
from codecache.core.pin import Pin, git_pin, svn_pin
from codecache.core.signing import (
    SecretKey,
    blake2b_file,
    generate_key,
    parse_minisig,
    sign_prehashed,
)
from codecache.core.verify import verify_tarball
from tests.conftest import run_cli

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


@pytest.mark.parametrize("pin", [
    svn_pin("svn://svn.example.org/repo/pilot/tags/1.0", 7),
    git_pin("https://git.example.org/pilot.git", "0123456789abcdef" * 2 + "01234567")],
    ids=["svn", "git"])
def test_the_verify_command_prints_the_source_it_was_signed_with(
        pin: Pin, tmp_path: Path) -> None:
    """``codecache verify`` (the real command) names the source exactly as signed: the
    Subversion URL@REV or the git URL@COMMIT with the full commit id (DESIGN.md §6)."""
    secret = generate_key()
    tarball = tmp_path / "pilot-1.0.tar.gz"
    tarball.write_bytes(DATA)
    comment = release_comment("pilot", "1.0", SHA, len(DATA), pin)
    (tmp_path / "pilot-1.0.tar.gz.minisig").write_text(signed(secret, comment))
    public = tmp_path / "codecache.pub"
    public.write_text(secret.public.to_minisign())
    result = run_cli("verify", str(tarball), "--key", str(public), check=True)
    assert result.stdout == (f"OK {tarball}: package=pilot version=1.0 sha256={SHA} "
                             f"{pin.kind}={pin.url}@{pin.id} key={secret.public.keyid}\n")
