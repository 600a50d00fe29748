"""Names of packages, channels and versions: their charsets and the natural version order.

Version order (DESIGN.md §2, decided here where the design is silent):

* A version is read as a sequence of tokens: runs of digits (compared as numbers),
  runs of letters (compared as text), and ``+``. The separators ``.``, ``-`` and ``_``
  only separate tokens.
* Where one version is a prefix of the other, what follows decides:
  a number makes it *later* (``1.0`` < ``1.0.1``); letters make it a *pre-release*,
  so it is *earlier* (``1.0.0rc1`` < ``1.0.0``, ``1.0.0-beta2`` < ``1.0.0``);
  ``+`` starts build metadata, which is *later* (``1.0.0`` < ``1.0.0+hotfix1``).
* Pre-release labels compare alphabetically (``a1`` < ``b1`` < ``rc1``), their numbers
  numerically (``rc2`` < ``rc10``).
* Versions that tie under these rules (``1.0`` and ``1-0``) are ordered by their
  text, so the order is total and the same everywhere.
"""

from __future__ import annotations

import re

from codecache.core.errors import InvalidName

PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
CHANNEL_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")

_TOKEN_RE = re.compile(r"\d+|[A-Za-z]+|\+")

# Token ranks: a pre-release label sorts below the end of the version, a number above.
_PRE_RELEASE, _END, _NUMBER, _BUILD = 0, 1, 2, 3

VersionKey = tuple[tuple[tuple[int, int, str], ...], str]


def is_package(name: str) -> bool:
    return PACKAGE_RE.fullmatch(name) is not None


def is_channel(name: str) -> bool:
    return CHANNEL_RE.fullmatch(name) is not None


def is_version(name: str) -> bool:
    return VERSION_RE.fullmatch(name) is not None


def is_sha256(value: str) -> bool:
    return SHA256_RE.fullmatch(value) is not None


# The one spelling of a blob's ETag and URL path (DESIGN.md §4): the server writes them, the
# replica asks for them, the load generator reads the sha256 back out of an answer's ETag.
_ETAG_RE = re.compile(r'(?:W/)?"sha256-([0-9a-f]{64})"')


def etag_for(sha256: str) -> str:
    """The strong ETag of a representation whose bytes hash to ``sha256``."""
    return f'"sha256-{sha256}"'


def sha256_of_etag(etag: str) -> str | None:
    """The sha256 an ETag of ``etag_for``'s form names (weak or strong), else None."""
    match = _ETAG_RE.fullmatch(etag)
    return match[1] if match is not None else None


def blob_url_path(sha256: str) -> str:
    """The URL path of a blob, content-addressed: ``/blobs/sha256/<hex>``."""
    return f"/blobs/sha256/{sha256}"


def check_package(name: str) -> str:
    """Return ``name`` if it is a valid package name.

    Raises:
        InvalidName: otherwise.
    """
    if not is_package(name):
        raise InvalidName("package", name)
    return name


def check_channel(name: str) -> str:
    """Return ``name`` if it is a valid channel name.

    Raises:
        InvalidName: otherwise.
    """
    if not is_channel(name):
        raise InvalidName("channel", name)
    return name


def check_version(name: str) -> str:
    """Return ``name`` if it is a valid version.

    Raises:
        InvalidName: otherwise.
    """
    if not is_version(name):
        raise InvalidName("version", name)
    return name


def version_key(version: str) -> VersionKey:
    """Sort key giving the natural version order described in the module docstring."""
    tokens: list[tuple[int, int, str]] = []
    for part in _TOKEN_RE.findall(version):
        if part.isdigit():
            tokens.append((_NUMBER, int(part), ""))
        elif part == "+":
            tokens.append((_BUILD, 0, ""))
        else:
            tokens.append((_PRE_RELEASE, 0, part))
    tokens.append((_END, 0, ""))
    return (tuple(tokens), version)


def highest(versions: list[str]) -> str | None:
    """The highest version in natural order, or None for an empty list."""
    return max(versions, key=version_key, default=None)
