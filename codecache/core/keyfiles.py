"""minisign public key files read as text: checked without loading cryptography.

Owns the public key file format (an ``untrusted comment:`` line, then base64 of ``Ed``, the
8-byte key id and the 32-byte Ed25519 key) and the decoding of a key file's base64 line.
``signing`` builds its keys from what this returns; the parent of a server's workers checks
the trusted keys with it alone, so that process never loads cryptography (~13 MB resident,
docs/benchmark.md, Memory). Every 32 bytes are an Ed25519 public key to cryptography
(``from_public_bytes`` checks the length only), so a key that passes here loads there.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from pathlib import Path

from codecache.core.errors import ConfigError

SIG_ALG = b"Ed"           # key algorithm, and legacy (non-prehashed) signature algorithm
PUBLIC_KEY_LEN = 42       # SIG_ALG, key id (8), Ed25519 public key (32)


def decode_key_line(text: str, path: Path, kind: str) -> bytes:
    """The decoded base64 line of a minisign key file of ``kind`` (public, secret).

    Raises:
        ConfigError: no comment line and key line, or bad base64.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("untrusted comment:"):
        raise ConfigError(f"{path} is not a minisign {kind} key file")
    try:
        return base64.b64decode(lines[1].strip(), validate=True)
    except binascii.Error:
        raise ConfigError(f"{path} is not a minisign {kind} key file (bad base64)") from None


def parse_public_key(text: str, where: str = "public key") -> tuple[bytes, bytes]:
    """The key id (8 bytes) and the raw Ed25519 key (32 bytes) of minisign public-key text.

    Raises:
        ConfigError: malformed key.
    """
    blob = decode_key_line(text, Path(where), "public")
    if len(blob) != PUBLIC_KEY_LEN or blob[:2] != SIG_ALG:
        raise ConfigError(f"{where} is not a minisign Ed25519 public key")
    return blob[2:10], blob[10:]


def read_public_key(path: Path) -> tuple[bytes, bytes]:
    """``parse_public_key`` of a file.

    Raises:
        ConfigError: missing, unreadable or malformed file.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"public key {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read public key {path}: {err}") from err
    return parse_public_key(text, str(path))


def read_trusted_keys(paths: Iterable[Path]) -> list[tuple[bytes, bytes]]:
    """``read_public_key`` of every trusted key file; at least one.

    Raises:
        ConfigError: no key configured, or a key file is bad.
    """
    keys = [read_public_key(path) for path in paths]
    if not keys:
        raise ConfigError("no trusted public key configured (signing.trusted_keys)")
    return keys
