"""Which channel tarballs ``check`` downloads, and what makes one the release the index lists.

Owns ``--verify PACKAGE/CHANNEL`` (``Target``), the default choice (``Targets``), and the
check of a tarball and its ``.minisig`` against the signed index (``check_tarball``, the
signature through ``verify.verify_tarball``), the same whether the bytes came over HTTP
(``probe``) or from the store (``local``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Literal

from codecache.core.errors import ConfigError, HashMismatch, SignatureError
from codecache.core.index import Index
from codecache.core.signing import PublicKey, parse_minisig
from codecache.core.verify import verify_tarball


@dataclass(frozen=True, slots=True)
class Target:
    """A channel whose tarball is downloaded and verified."""

    package: str
    channel: str


def parse_target(text: str) -> Target:
    """``PACKAGE/CHANNEL``.

    Raises:
        ConfigError: anything else.
    """
    package, sep, channel = text.partition("/")
    if not sep or not package or not channel or "/" in channel:
        raise ConfigError(f"--verify: expected PACKAGE/CHANNEL, got {text!r}")
    return Target(package, channel)


# Which channel tarballs to download: the given ones, every channel ("all"), or None: the
# channel moved last (one download per check: the key, the signature path and the front
# tier are proven by any one; blob corruption is the server's to see, on /readyz).
Targets = tuple[Target, ...] | Literal["all"] | None


def chosen(index: Index, targets: Targets) -> tuple[Target, ...]:
    if targets == "all":
        return channel_targets(index)
    if targets is None:
        moves = [(pkg.channels[c].moved_at, p, c) for p, pkg in index.packages.items()
                 for c in pkg.channels]
        return (Target(*max(moves)[1:]),) if moves else ()
    return targets


def channel_targets(index: Index) -> tuple[Target, ...]:
    """Every channel of every package, one per release they point to."""
    seen: set[str] = set()
    targets = []
    for package in sorted(index.packages):
        pkg = index.packages[package]
        for channel in sorted(pkg.channels):
            release = pkg.releases.get(pkg.channels[channel].version)
            if release is not None and release.sha256 not in seen:
                seen.add(release.sha256)
                targets.append(Target(package, channel))
    return tuple(targets)


def check_tarball(index: Index, package: str, version: str, data: bytes, minisig: str,
                  keys: Mapping[str, PublicKey]) -> None:
    """``data`` and its ``.minisig`` are the release the signed index lists.

    ``data`` must hash to the release's sha256; the ``.minisig`` served must be the one
    the index lists (the primary key's); and a signature of the release by a trusted key
    (the served one, or during a key rotation another the index carries) must verify over
    ``data`` with exactly the trusted comment the index names for this release (package,
    version, sha256, size, svn URL@REV), so a valid signature of another release cannot
    pass for this one.

    Raises:
        IntegrityError: any of it does not hold (``SignatureError``, ``HashMismatch``).
    """
    release = index.release(package, version)
    digest = hashlib.sha256(data).hexdigest()
    if digest != release.sha256 or len(data) != release.size:
        raise HashMismatch(f"{len(data)} bytes hashing to {digest}, the index lists "
                           f"{release.size} bytes {release.sha256}")
    if minisig != release.minisig:
        raise SignatureError("the .minisig served is not the signature the signed index "
                             "lists for this release")
    trusted = [text for keyid, text in release.all_signatures().items() if keyid in keys]
    verify_tarball(keys, parse_minisig(trusted[0] if trusted else minisig), BytesIO(data),
                   comment=release.trusted_comment(package),  # an untrusted key is refused
                   digest=(digest, len(data)))
