"""Ed25519 keys and signatures in minisign's formats, and signing of canonical JSON.

Owns: key generation and key files (minisign public and unencrypted secret key formats,
so the stock ``minisign`` tool can use both; ``keyfiles`` reads a public key file's text),
detached release signatures (``.minisig``, prehashed ``ED``: Ed25519 over BLAKE2b-512 of
the file), and the embedded signature of the index (pure Ed25519 over canonical JSON).
Does not own what is signed or where it is kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from codecache.core.errors import ConfigError, InsecureKeyFile, SignatureError
from codecache.core.keyfiles import SIG_ALG as _SIG_ALG
from codecache.core.keyfiles import decode_key_line as _decode_key_line
from codecache.core.keyfiles import read_public_key, read_trusted_keys

_PREHASHED_ALG = b"ED"     # signature over BLAKE2b-512 of the file
_KDF_NONE = b"\0\0"
_CHECKSUM_ALG = b"B2"
_SECRET_KEY_LEN = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32
_CHUNK = 1 << 20
UNTRUSTED_SIGNATURE_COMMENT = "signature from codecache secret key"


@dataclass(frozen=True, slots=True)
class PublicKey:
    key_id: bytes  # 8 bytes, as in minisign
    key: Ed25519PublicKey

    @property
    def keyid(self) -> str:
        """The key id as minisign prints it: 16 uppercase hex digits (the little-endian integer)."""
        return format_keyid(self.key_id)

    def to_minisign(self) -> str:
        raw = self.key.public_bytes_raw()
        line = base64.b64encode(_SIG_ALG + self.key_id + raw).decode()
        return f"untrusted comment: minisign public key {self.keyid}\n{line}\n"


@dataclass(frozen=True, slots=True)
class SecretKey:
    key_id: bytes
    key: Ed25519PrivateKey

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key_id, self.key.public_key())

    def to_minisign(self) -> str:
        seed = self.key.private_bytes_raw()
        public = self.key.public_key().public_bytes_raw()
        secret = seed + public  # libsodium's 64-byte secret key layout
        checksum = hashlib.blake2b(_SIG_ALG + self.key_id + secret, digest_size=32).digest()
        blob = (_SIG_ALG + _KDF_NONE + _CHECKSUM_ALG + bytes(32) + bytes(16)
                + self.key_id + secret + checksum)
        return f"untrusted comment: minisign secret key\n{base64.b64encode(blob).decode()}\n"


def format_keyid(key_id: bytes) -> str:
    """8 key-id bytes as 16 uppercase hex digits (minisign >= 0.12 prints ``%016X``)."""
    return f"{struct.unpack('<Q', key_id)[0]:016X}"


def normalise_keyid(text: str) -> str | None:
    """A key id as given by a user or an older index, in the 16-digit form; None if not one.

    minisign 0.11 printed the id without leading zeros (``%X``); both forms name one key.
    """
    if not 1 <= len(text) <= 16 or not all(c in "0123456789ABCDEFabcdef" for c in text):
        return None
    return f"{int(text, 16):016X}"


def generate_key() -> SecretKey:
    """A new key pair; its id never starts with a zero digit, so every minisign prints it alike."""
    key_id = bytearray(os.urandom(8))
    key_id[7] |= 0x10 if key_id[7] < 0x10 else 0  # the most significant byte (little-endian)
    return SecretKey(bytes(key_id), Ed25519PrivateKey.generate())


def write_key_pair(secret: SecretKey, secret_path: Path, public_path: Path) -> None:
    """Write both key files; the secret one is created 0600 and never overwritten.

    Raises:
        ConfigError: a file already exists or cannot be created.
    """
    for path in (secret_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} already exists; refusing to overwrite a key")
    try:
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret.to_minisign())
            fh.flush()
            os.fsync(fh.fileno())
        public_path.write_text(secret.public.to_minisign())
    except OSError as err:
        raise ConfigError(f"cannot write key file: {err}") from err


def load_secret_key(path: Path) -> SecretKey:
    """Read an unencrypted minisign secret key, refusing one others can read.

    Raises:
        ConfigError: missing or malformed file.
        InsecureKeyFile: group/world-readable or unreadable file.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"secret key {path} does not exist") from None
    except OSError as err:
        raise InsecureKeyFile(f"cannot read secret key {path}: {err.strerror}") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureKeyFile(
            f"secret key {path} is accessible by group/others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}")
    try:
        text = path.read_text()
    except OSError as err:
        raise InsecureKeyFile(f"cannot read secret key {path}: {err.strerror}") from err
    blob = _decode_key_line(text, path, "secret")
    if (len(blob) != _SECRET_KEY_LEN or blob[:2] != _SIG_ALG or blob[4:6] != _CHECKSUM_ALG):
        raise ConfigError(f"{path} is not a minisign secret key")
    if blob[2:4] != _KDF_NONE:
        raise ConfigError(f"{path} is password-protected; codecache needs an unencrypted key")
    key_id, secret, checksum = blob[54:62], blob[62:126], blob[126:158]
    expected = hashlib.blake2b(_SIG_ALG + key_id + secret, digest_size=32).digest()
    # minisign itself writes an all-zero checksum for unencrypted keys (-W); accept that too.
    if checksum not in (expected, bytes(32)):
        raise ConfigError(f"{path}: secret key checksum mismatch (corrupted key file)")
    return SecretKey(key_id, Ed25519PrivateKey.from_private_bytes(secret[:32]))


def load_public_key(path: Path) -> PublicKey:
    """Read a minisign public key file.

    Raises:
        ConfigError: missing, unreadable or malformed file.
    """
    key_id, raw = read_public_key(path)
    return PublicKey(key_id, Ed25519PublicKey.from_public_bytes(raw))


def load_trusted_keys(paths: Iterable[Path]) -> dict[str, PublicKey]:
    """Trusted keys by key id; several are allowed so keys can be rotated.

    Raises:
        ConfigError: no key configured, or a key file is bad.
    """
    keys = (PublicKey(key_id, Ed25519PublicKey.from_public_bytes(raw))
            for key_id, raw in read_trusted_keys(paths))
    return {key.keyid: key for key in keys}


# --- detached release signatures (.minisig) -------------------------------------------------


def blake2b_file(stream: BinaryIO) -> bytes:
    """BLAKE2b-512 of a stream, read in chunks (minisign's prehash)."""
    digest = hashlib.blake2b(digest_size=64)
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.digest()


def sign_prehashed(secret: SecretKey, prehash: bytes, trusted_comment: str) -> str:
    """A minisign signature (text) of a file whose BLAKE2b-512 is ``prehash``."""
    if "\n" in trusted_comment or "\r" in trusted_comment:
        raise ValueError("trusted comment must be one line")
    signature = secret.key.sign(prehash)
    global_signature = secret.key.sign(signature + trusted_comment.encode())
    return (
        f"untrusted comment: {UNTRUSTED_SIGNATURE_COMMENT}\n"
        f"{base64.b64encode(_PREHASHED_ALG + secret.key_id + signature).decode()}\n"
        f"trusted comment: {trusted_comment}\n"
        f"{base64.b64encode(global_signature).decode()}\n"
    )


@dataclass(frozen=True, slots=True)
class Minisig:
    algorithm: bytes
    key_id: bytes
    signature: bytes
    trusted_comment: str
    global_signature: bytes

    @property
    def keyid(self) -> str:
        return format_keyid(self.key_id)


def parse_minisig(text: str) -> Minisig:
    """Parse the four lines of a minisign signature.

    Raises:
        SignatureError: malformed signature.
    """
    lines = text.splitlines()
    if len(lines) < 4 or not lines[0].startswith("untrusted comment:") \
            or not lines[2].startswith("trusted comment: "):
        raise SignatureError("malformed minisign signature")
    try:
        sig = base64.b64decode(lines[1].strip(), validate=True)
        global_sig = base64.b64decode(lines[3].strip(), validate=True)
    except binascii.Error:
        raise SignatureError("malformed minisign signature (bad base64)") from None
    if len(sig) != 74 or sig[:2] not in (_PREHASHED_ALG, _SIG_ALG) or len(global_sig) != 64:
        raise SignatureError("malformed minisign signature")
    comment = lines[2].removeprefix("trusted comment: ")
    return Minisig(sig[:2], sig[2:10], sig[10:], comment, global_sig)


def load_minisig(path: Path) -> Minisig:
    """Read and parse a ``.minisig`` file.

    Raises:
        ConfigError: the file does not exist.
        SignatureError: unreadable or malformed signature.
    """
    try:
        return parse_minisig(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"signature file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SignatureError(f"cannot read signature {path}: {err}") from err


def verify_minisig(keys: Mapping[str, PublicKey], minisig: Minisig, stream: BinaryIO) -> None:
    """Verify a parsed signature over the bytes of ``stream`` with one of ``keys``.

    Raises:
        SignatureError: unknown key, or the file or trusted comment does not match.
    """
    key = keys.get(minisig.keyid)
    if key is None:
        raise SignatureError(f"signature was made by key {minisig.keyid}, which is not trusted")
    # "Ed" is minisign's legacy non-prehashed signature; we only write "ED".
    message = blake2b_file(stream) if minisig.algorithm == _PREHASHED_ALG else stream.read()
    try:
        key.key.verify(minisig.signature, message)
    except InvalidSignature:
        raise SignatureError("signature does not match the file") from None
    try:
        key.key.verify(minisig.global_signature,
                       minisig.signature + minisig.trusted_comment.encode())
    except InvalidSignature:
        raise SignatureError("trusted comment signature is invalid") from None


# --- embedded signatures over canonical JSON ------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the exact bytes an index signature covers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def sign_document(secrets: SecretKey | Sequence[SecretKey], signed: Mapping[str, Any], *,
                  message: bytes | None = None) -> dict[str, Any]:
    """Wrap ``signed`` as ``{"signed": ..., "signatures": [{"keyid", "sig"}, ...]}``.

    One signature per key, in the order given (the primary first): during a key rotation
    a verifier that trusts either key accepts the document. ``message``:
    ``canonical_json(signed)`` where the caller has it already.
    """
    keys = [secrets] if isinstance(secrets, SecretKey) else list(secrets)
    if not keys:
        raise ValueError("no signing key")
    if message is None:
        message = canonical_json(signed)
    return {"signed": dict(signed),
            "signatures": [{"keyid": k.public.keyid, "sig": k.key.sign(message).hex()}
                           for k in keys]}


def verify_document(keys: Mapping[str, PublicKey], document: object, *,
                    message: bytes | None = None) -> dict[str, Any]:
    """Return the ``signed`` part if any signature verifies with a trusted key.

    ``message``: ``canonical_json`` of the ``signed`` part where the caller has it already.

    Raises:
        SignatureError: malformed document or no valid trusted signature.
    """
    if not isinstance(document, dict) or not isinstance(document.get("signed"), dict) \
            or not isinstance(document.get("signatures"), list):
        raise SignatureError("index is not a signed document")
    signed: dict[str, Any] = document["signed"]
    if message is None:
        message = canonical_json(signed)
    for entry in document["signatures"]:
        if not isinstance(entry, dict):
            continue
        keyid = normalise_keyid(str(entry.get("keyid")))
        key = keys.get(keyid) if keyid is not None else None
        if key is None:
            continue
        try:
            key.key.verify(bytes.fromhex(str(entry.get("sig"))), message)
        except (InvalidSignature, ValueError):
            continue
        return signed
    raise SignatureError("index signature does not verify with any trusted key")
