"""The one check of a release tarball against a signature and its trusted comment.

``verify``, ``check``'s probe of what a node serves and ``audit``'s rebuilt archives all
ask the same question: do these bytes carry a signature by a trusted key whose trusted
comment (``index.release_comment``) names exactly them? Signing only binds the comment to
the signature; this module binds it to the bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO, cast

from codecache.core.errors import SignatureError
from codecache.core.index import parse_release_comment
from codecache.core.signing import Minisig, PublicKey, verify_minisig


@dataclass(frozen=True, slots=True)
class VerifiedTarball:
    minisig: Minisig
    fields: Mapping[str, str]   # the trusted comment's fields ({} if not codecache's)
    sha256: str                 # of the bytes verified
    size: int


def verify_tarball(keys: Mapping[str, PublicKey], minisig: Minisig, stream: BinaryIO, *,
                   comment: str | None = None,
                   digest: tuple[str, int] | None = None) -> VerifiedTarball:
    """The bytes of ``stream`` against ``minisig``: made by one of ``keys``, over these
    bytes, and the ``sha256`` and ``size`` its trusted comment names are theirs. Where the
    caller knows the release (from a signed index), the comment must be exactly
    ``comment``, so a valid signature of another release cannot pass for this one.
    ``digest``: the bytes' (sha256, size) where the caller hashed them already (``check``,
    ``audit``), so they are not hashed twice.

    Raises:
        SignatureError: an untrusted key, a signature that does not verify, or a trusted
            comment that names other content.
    """
    if digest is None:
        hashing = _Hashing(stream)
        # Only ``read`` is asked of the stream; the cast says so to the type checker.
        verify_minisig(keys, minisig, cast(BinaryIO, hashing))   # reads it to its end
        sha256, size = hashing.digest.hexdigest(), hashing.size
    else:
        verify_minisig(keys, minisig, stream)
        sha256, size = digest
    fields = parse_release_comment(minisig.trusted_comment)
    if comment is not None and minisig.trusted_comment != comment:
        raise SignatureError("the signature's trusted comment names another release: "
                             f"{minisig.trusted_comment!r}")
    if fields.get("sha256", sha256) != sha256 or fields.get("size", str(size)) != str(size):
        raise SignatureError("the signature's trusted comment names other content: "
                             f"{minisig.trusted_comment!r}")
    return VerifiedTarball(minisig, fields, sha256, size)


class _Hashing:
    """A reader that hashes what is read through it: the bytes are read once."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._stream.read(n)
        self.digest.update(chunk)
        self.size += len(chunk)
        return chunk
