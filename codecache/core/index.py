"""The index model: releases, channels and the rules that change them.

Pure values and pure functions: parsing the signed payload (strictly, so a malformed index
is refused, not half-read), serialising it, and the release-manager rules (a yanked release
cannot be published, a release a channel points to cannot be yanked, a channel move always
advances ``moved_at``). Signing and files live in ``signing`` and ``store``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from codecache.core.errors import (
    ChannelInUse,
    ChannelNotFound,
    IntegrityError,
    PackageNotFound,
    ReleaseNotFound,
    ReleaseYanked,
    SignatureError,
)
from codecache.core.names import highest, is_channel, is_package, is_sha256, is_version
from codecache.core.pin import GIT, PIN_FIELDS, Pin, pin_of_record
from codecache.core.signing import normalise_keyid, parse_minisig

FORMAT_VERSION = 1          # an index of Subversion releases only (byte for byte as ever)
FORMAT_WITH_GIT = 2         # an index that holds a git release (DESIGN.md §3)
FORMATS = (FORMAT_VERSION, FORMAT_WITH_GIT)   # what this version reads


def format_read(payload: dict[str, Any]) -> int | None:
    """The format a signed payload says, if this version reads it (None: it does not)."""
    form = payload.get("format", FORMAT_VERSION)
    return form if type(form) is int and form in FORMATS else None


def format_of(packages: dict[str, Package]) -> int:
    """The format an index of ``packages`` says: 2 if and only if it holds a git release."""
    has_git = any(r.source.kind == GIT for pkg in packages.values() for r in pkg.releases.values())
    return FORMAT_WITH_GIT if has_git else FORMAT_VERSION


def format_time(seconds: int) -> str:
    """RFC 3339 UTC with second precision, e.g. ``2026-11-25T20:51:31Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    """Seconds since the epoch of an RFC 3339 timestamp.

    Raises:
        ValueError: not a timestamp with a time zone.
    """
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without time zone: {text!r}")
    return int(parsed.timestamp())


@dataclass(frozen=True, slots=True)
class Release:
    version: str
    sha256: str
    size: int
    tar_sha256: str
    source: Pin          # Subversion URL@REV or git URL@COMMIT (``pin``)
    author: str
    date: int            # commit time of the tag (Subversion: its last-changed revision)
    minisig: str         # the signature by the primary key
    yanked: bool = False
    yanked_reason: str | None = None
    # Every signature of the release by key id (16 hex digits), the primary's included;
    # empty means "only ``minisig``" (an index signed by one key, or older than rotation).
    signatures: dict[str, str] = field(default_factory=dict)

    def trusted_comment(self, package: str) -> str:
        return release_comment(package, self.version, self.sha256, self.size, self.source)

    def all_signatures(self) -> dict[str, str]:
        """Key id → minisig text of every signature this release carries."""
        if self.signatures:
            return dict(self.signatures)
        return {minisig_keyid(self.minisig): self.minisig}

    def signature_by(self, keyid: str) -> str | None:
        """The release's signature by key ``keyid`` (any form minisign prints), if any."""
        wanted = normalise_keyid(keyid)
        return None if wanted is None else self.all_signatures().get(wanted)


@functools.lru_cache(maxsize=1 << 16)  # asked for every release at every commit
def minisig_keyid(text: str) -> str:
    """The key id (16 hex digits) a minisig text names, or "" if it is malformed."""
    try:
        return parse_minisig(text).keyid
    except SignatureError:
        return ""


def release_comment(package: str, version: str, sha256: str, size: int, source: Pin) -> str:
    """The trusted comment that binds a signature to exactly one release (DESIGN.md §3)."""
    return (f"codecache package={package} version={version} sha256={sha256} size={size} "
            f"{source.label}")


def parse_release_comment(comment: str) -> dict[str, str]:
    """The ``key=value`` fields of a trusted comment ``release_comment`` wrote; {} for a
    comment that is not codecache's (a signature made by hand with minisign)."""
    words = comment.split()
    if not words or words[0] != "codecache":
        return {}
    return dict(w.split("=", 1) for w in words[1:] if "=" in w)


@dataclass(frozen=True, slots=True)
class Channel:
    version: str
    moved_at: int


@dataclass(frozen=True, slots=True)
class Package:
    releases: dict[str, Release] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)

    def highest_live(self) -> str | None:
        """The highest version in natural order that is not yanked."""
        return highest([v for v, r in self.releases.items() if not r.yanked])


@dataclass(frozen=True, slots=True)
class HistoryHead:
    """What the signed index says about the release history (DESIGN.md §9).

    ``head`` is the sha256 hex of the canonical JSON of entry ``length - 1`` (None while
    the history is empty), so the index signature covers every entry through the chain.
    """

    length: int
    head: str | None


@dataclass(frozen=True, slots=True)
class Index:
    serial: int
    generated: int
    expires: int
    packages: dict[str, Package] = field(default_factory=dict)
    # None: an index written before history existed (or by an origin that predates it).
    history: HistoryHead | None = None
    # When the primary signing key last changed (a key rotation; docs/keys.md): the
    # ``.minisig`` of every release and channel changed then. None: never.
    primary_since: int | None = None

    def package(self, name: str) -> Package:
        try:
            return self.packages[name]
        except KeyError:
            raise PackageNotFound(name) from None

    def release(self, package: str, version: str) -> Release:
        try:
            return self.package(package).releases[version]
        except KeyError:
            raise ReleaseNotFound(package, version) from None

    def channel(self, package: str, channel: str) -> tuple[Channel, Release]:
        try:
            pointer = self.package(package).channels[channel]
        except KeyError:
            raise ChannelNotFound(package, channel) from None
        return pointer, self.release(package, pointer.version)

    def blob_sizes(self) -> dict[str, int]:
        """Every blob the index lists (sha256 → size)."""
        return {r.sha256: r.size for p in self.packages.values() for r in p.releases.values()}

    def channel_target_sizes(self) -> dict[str, int]:
        """The blobs the channels point to (sha256 → size): what an edge holds at all times."""
        return {r.sha256: r.size for p in self.packages.values()
                for ch in p.channels.values() if (r := p.releases.get(ch.version)) is not None}


EMPTY = Index(serial=0, generated=0, expires=0)


# --- rules ----------------------------------------------------------------------------------


def _with_package(index: Index, name: str, package: Package) -> Index:
    return dataclasses.replace(index, packages={**index.packages, name: package})


def add_release(index: Index, package: str, release: Release) -> Index:
    """The index with ``release`` added (an existing version is never replaced)."""
    current = index.packages.get(package, Package())
    if release.version in current.releases:
        return index
    updated = dataclasses.replace(current, releases={**current.releases,
                                                     release.version: release})
    return _with_package(index, package, updated)


def move_channel(index: Index, package: str, channel: str, version: str, now: int) -> Index:
    """Point ``channel`` at ``version``; a rollback to an older release is allowed.

    ``moved_at`` always advances by at least a second, so HTTP date validators
    (``wget -N``, ``If-Modified-Since``) see every move, even two in one second.

    Raises:
        ReleaseNotFound, ReleaseYanked.
    """
    release = index.release(package, version)
    if release.yanked:
        raise ReleaseYanked(package, version)
    current = index.package(package)
    previous = current.channels.get(channel)
    if previous is not None and previous.version == version:
        return index
    moved_at = max(now, previous.moved_at + 1) if previous else now
    channels = {**current.channels, channel: Channel(version, moved_at)}
    return _with_package(index, package, dataclasses.replace(current, channels=channels))


def yank(index: Index, package: str, version: str, reason: str) -> Index:
    """Withdraw a release; refused while any channel points to it. Idempotent.

    Raises:
        ReleaseNotFound, ChannelInUse.
    """
    release = index.release(package, version)
    current = index.package(package)
    using = sorted(name for name, ch in current.channels.items() if ch.version == version)
    if using:
        raise ChannelInUse(package, version, using)
    if release.yanked:
        return index
    yanked = dataclasses.replace(release, yanked=True, yanked_reason=reason)
    updated = dataclasses.replace(current, releases={**current.releases, version: yanked})
    return _with_package(index, package, updated)


# --- (de)serialisation ----------------------------------------------------------------------


def to_payload(index: Index) -> dict[str, Any]:
    """The ``signed`` part of the index document (DESIGN.md §3, ``status --json``).

    ``history`` is present only when the index has one, so an index of a store that
    predates history round-trips to the very payload that was signed.
    """
    payload: dict[str, Any] = {
        "format": format_of(index.packages),
        "serial": index.serial,
        "generated": format_time(index.generated),
        "expires": format_time(index.expires),
        "packages": {
            name: {
                "releases": {v: _release_payload(r) for v, r in pkg.releases.items()},
                "channels": {c: {"version": ch.version, "moved_at": format_time(ch.moved_at)}
                             for c, ch in pkg.channels.items()},
            }
            for name, pkg in index.packages.items()
        },
    }
    if index.history is not None:
        payload["history"] = {"length": index.history.length, "head": index.history.head}
    if index.primary_since is not None:
        payload["primary_since"] = format_time(index.primary_since)
    return payload


def _release_payload(r: Release) -> dict[str, Any]:
    payload = {
        "version": r.version, "sha256": r.sha256, "size": r.size, "tar_sha256": r.tar_sha256,
        **r.source.record(), "author": r.author,
        "date": format_time(r.date), "yanked": r.yanked, "yanked_reason": r.yanked_reason,
        "minisig": r.minisig,
    }
    # Only while a release is signed by several keys (a rotation): with one key the
    # record stays what it always was, byte for byte.
    if set(r.signatures) - {minisig_keyid(r.minisig)}:
        payload["signatures"] = dict(sorted(r.signatures.items()))
    return payload


def from_payload(payload: object) -> Index:
    """Parse a signed payload strictly.

    Raises:
        IntegrityError: anything malformed (wrong type, bad name, bad hash, dangling channel).
    """
    try:
        return _parse(payload)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise IntegrityError(f"malformed index: {err}") from err


def _parse(payload: object) -> Index:
    if not isinstance(payload, dict):
        raise TypeError("payload is not an object")
    form = format_read(payload)
    if form is None:
        raise ValueError(f"unsupported index format {payload.get('format')!r}")
    packages = {}
    for name, pkg in _dict(payload["packages"]).items():
        if not is_package(name):
            raise ValueError(f"bad package name {name!r}")
        releases = {v: _parse_release(v, r) for v, r in _dict(pkg["releases"]).items()}
        channels = {c: _parse_channel(c, ch, releases) for c, ch in _dict(pkg["channels"]).items()}
        packages[name] = Package(releases, channels)
    if form != format_of(packages):
        raise ValueError(f"index format {form} does not match its releases (format "
                         f"{FORMAT_WITH_GIT} if and only if it holds a git release)")
    return Index(serial=_int(payload["serial"]), generated=parse_time(payload["generated"]),
                 expires=parse_time(payload["expires"]), packages=packages,
                 history=_parse_history(payload.get("history")),
                 primary_since=None if payload.get("primary_since") is None
                 else parse_time(_str(payload["primary_since"])))


def _parse_history(value: object) -> HistoryHead | None:
    if value is None:
        return None
    d = _dict(value)
    length, head = _int(d["length"]), d["head"]
    well_formed = head is None or (isinstance(head, str) and is_sha256(head))
    if not well_formed or (head is None) != (length == 0):
        raise ValueError(f"bad history head {head!r} for length {length}")
    return HistoryHead(length, head)


def _dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


_RELEASE_FIELDS = ("version", "sha256", "size", "tar_sha256", "author", "date", "minisig",
                   "yanked")
_SOURCE_FIELDS = tuple(key for keys in PIN_FIELDS.values() for key in keys)
_ABSENT = object()   # a source field the record does not have (not the same as null)


def _parse_release(version: str, r: object) -> Release:
    """One release record, validated, or the same Release as the last time it was.

    Every verification of an index parses every release, and a long-running node
    verifies thousands of unchanged ones on each change (the pull loop, every server
    worker). A record whose values (and their types: ``true`` is not ``1``) are exactly
    those of one that passed before is that Release again; any other goes through
    every check.
    """
    d = _dict(r)
    signatures = d.get("signatures")
    values = (version, *(d[f] for f in _RELEASE_FIELDS),
              *(d.get(f, _ABSENT) for f in _SOURCE_FIELDS), d.get("yanked_reason"),
              tuple(sorted(signatures.items())) if isinstance(signatures, dict) else signatures)
    return _checked_release((*values, *map(type, values)))


@functools.lru_cache(maxsize=1 << 15)
def _checked_release(key: tuple[Any, ...]) -> Release:
    values = key[:len(key) // 2]
    d: dict[str, Any] = dict(zip(_RELEASE_FIELDS, values[1:], strict=False))
    sources = values[1 + len(_RELEASE_FIELDS):1 + len(_RELEASE_FIELDS) + len(_SOURCE_FIELDS)]
    d.update((f, v) for f, v in zip(_SOURCE_FIELDS, sources, strict=True) if v is not _ABSENT)
    d["yanked_reason"], signatures = values[-2], values[-1]
    d["signatures"] = dict(signatures) if isinstance(signatures, tuple) else signatures
    return _new_release(values[0], d)


def _new_release(version: str, d: dict[str, Any]) -> Release:
    if not is_version(version) or d["version"] != version:
        raise ValueError(f"bad version {version!r}")
    if not is_sha256(d["sha256"]) or not is_sha256(d["tar_sha256"]):
        raise ValueError(f"bad sha256 in release {version!r}")
    reason = d.get("yanked_reason")
    minisig = _str(d["minisig"])
    return Release(
        version=version, sha256=d["sha256"], size=_int(d["size"]),
        tar_sha256=d["tar_sha256"], source=pin_of_record(d),
        author=_str(d["author"]), date=parse_time(d["date"]), minisig=minisig,
        yanked=_bool(d["yanked"]), yanked_reason=None if reason is None else _str(reason),
        signatures=_parse_signatures(version, minisig, d.get("signatures")),
    )


def _parse_signatures(version: str, minisig: str, value: object) -> dict[str, str]:
    """The per-key map of a release (absent in older indexes: only ``minisig``)."""
    if value is None:
        return {}
    signatures = {}
    for keyid, text in _dict(value).items():
        if normalise_keyid(keyid) != keyid or minisig_keyid(_str(text)) != keyid:
            raise ValueError(f"bad signature of key {keyid!r} in release {version!r}")
        signatures[keyid] = text
    if signatures.get(minisig_keyid(minisig)) != minisig:
        raise ValueError(f"release {version!r}: minisig is not among its signatures")
    return signatures


def _parse_channel(name: str, ch: object, releases: dict[str, Release]) -> Channel:
    d = _dict(ch)
    if not is_channel(name) or d["version"] not in releases:
        raise ValueError(f"bad channel {name!r}")
    return Channel(version=_str(d["version"]), moved_at=parse_time(d["moved_at"]))
