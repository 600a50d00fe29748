"""What the HTTP front end can serve: a read-only routing table built from a verified index.

Owns the URL space of DESIGN.md §4 and the validators of every representation: which
path names which bytes, their strong ETag (from the sha256, so every replica agrees),
Last-Modified, Cache-Control and the version served. Paths are parsed segment by segment
from the raw request path, each segment percent-decoded once and then matched against
the name patterns; a path never becomes a file name, so nothing outside the store can be
named, encoded or not. No I/O and no aiohttp here.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from codecache.core.errors import BadRequest, BlobNotFound, NotFound, SignatureNotFound
from codecache.core.history_parse import last_time
from codecache.core.index import Index, Release
from codecache.core.names import etag_for, is_channel, is_package, is_sha256, is_version
from codecache.web.conditional import format_http_date

IMMUTABLE = "public, max-age=31536000, immutable"
_RAW_PATHS_KEPT = 4096
MAX_PATH_LENGTH = 1024
_SUFFIXES = {".tar.gz": "tarball", ".tar.gz.minisig": "minisig", ".tar.gz.sha256": "sha256"}
# ``{name}.tar.gz.{KEYID}.minisig``: the signature by one key (KEYID as minisign prints it;
# the 16-digit form, or minisign 0.11's without leading zeros). Lower-case "gz" before
# ".minisig" is never a key id, so a version can never be mistaken for one.
_KEYED_SIGNATURE = re.compile(r"(?P<name>.+)\.tar\.gz\.(?P<keyid>[0-9A-F]{1,16})\.minisig")
_ABSOLUTE_FORM = re.compile(r"https?://[^/]*", re.IGNORECASE)   # scheme://authority


class Route(enum.Enum):
    """What a path names; also the ``route`` label of the request metrics."""

    STATUS_PAGE = "status_page"
    HEALTHZ = "healthz"
    READYZ = "readyz"
    METRICS = "metrics"
    INDEX = "index"
    HISTORY = "history"
    BLOB = "blob"
    CHANNEL = "channel"
    RELEASE = "release"
    SIGNATURE = "signature"
    CHECKSUM = "checksum"


@dataclass(frozen=True, slots=True)
class Representation:
    """One servable body: either a blob (by sha256) or bytes held inline."""

    route: Route
    etag: str
    last_modified: int
    size: int
    content_type: str
    cache_control: str
    version: str | None = None
    blob: str | None = None        # sha256 of the blob holding the body
    inline: bytes | None = None    # the body itself (signatures, checksums, index)
    # Built once when the index loads, not per request: what a 304 repeats (RFC 9110
    # §15.4.5), and the headers of a 200 (ranges add Content-Range).
    validators: dict[str, str] = field(init=False, repr=False, compare=False)
    headers: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validators = {"ETag": self.etag, "Last-Modified": format_http_date(self.last_modified),
                      "Cache-Control": self.cache_control}
        if self.version is not None:
            validators["X-Codecache-Version"] = self.version
        object.__setattr__(self, "validators", validators)
        object.__setattr__(self, "headers", {**validators, "Accept-Ranges": "bytes",
                                             "Content-Type": self.content_type})


# Routes (their labels) whose path starts with the package name.
_PACKAGE_ROUTES = frozenset({Route.CHANNEL.value, Route.RELEASE.value, Route.SIGNATURE.value,
                             Route.CHECKSUM.value})


def package_of(route: str, raw_path: str) -> str | None:
    """The package named by ``raw_path``, a path of the route labelled ``route`` (for the
    access line), or None for a route that names none."""
    if route not in _PACKAGE_ROUTES:
        return None
    return unquote(origin_form(raw_path).split("/")[1])


def _inline(route: Route, body: bytes, last_modified: int, content_type: str,
            cache_control: str, version: str | None) -> Representation:
    return Representation(route, etag_for(hashlib.sha256(body).hexdigest()), last_modified,
                          len(body), content_type, cache_control, version, inline=body)


class Catalog:
    """Every representation of one index, looked up by parsed path."""

    def __init__(self, index: Index, document: bytes, channel_max_age: int) -> None:
        self.index = index
        self._channel_cache = f"public, max-age={channel_max_age}"
        self.document = _inline(Route.INDEX, document, index.generated, "application/json",
                                "no-cache", None)
        # sha256 → (Last-Modified, size); the first release holding a blob dates it.
        self._blobs: dict[str, tuple[int, int]] = {}
        for pkg in index.packages.values():
            for r in pkg.releases.values():
                self._blobs.setdefault(r.sha256, (r.date, r.size))
        # Built once: the watcher asks for it several times a second.
        self._blob_sizes = {sha256: size for sha256, (_, size) in self._blobs.items()}
        # Representations built on first use and kept with this index (bounded by what it
        # lists: only names that resolved are remembered), so a request allocates none.
        self._memo: dict[tuple[str, str, str], tuple[Route, Representation]] = {}
        # Raw request paths seen to name a file (the pilots' few hot URLs skip parsing);
        # capped, so distinct spellings or query strings cannot grow it without bound.
        self._by_raw_path: dict[str, tuple[Route, Representation]] = {}

    def blob_sizes(self) -> dict[str, int]:
        """Every blob the index lists, with its size (do not modify)."""
        return self._blob_sizes

    def lookup(self, raw_path: str) -> tuple[Route, Representation | None]:
        """The route a raw request path names, with its representation if it has one.

        Raises:
            BadRequest: malformed path.
            NotFound: well-formed but names nothing (or an unknown package/version).
        """
        known = self._by_raw_path.get(raw_path)
        if known is not None:
            return known
        found = self._lookup(raw_path)
        if found[1] is not None and len(self._by_raw_path) < _RAW_PATHS_KEPT:
            self._by_raw_path[raw_path] = found  # type: ignore[assignment]
        return found

    def _lookup(self, raw_path: str) -> tuple[Route, Representation | None]:
        segments = split_path(raw_path)
        service = _service_route(segments)
        if service is not None:
            return service, None
        if segments == ["index.json"]:
            return Route.INDEX, self.document
        if segments == ["history.json"]:
            return Route.HISTORY, None   # the file changes apart from the index: StoreView
        if len(segments) == 3:
            key = (segments[0], segments[1], segments[2])
        elif len(segments) == 2:
            key = (segments[0], "/", segments[1])  # no decoded segment holds a "/"
        else:
            raise NotFound("no such path")
        found = self._memo.get(key)
        if found is None:
            found = self._resolve(key)
            self._memo[key] = found
        return found

    def _resolve(self, key: tuple[str, str, str]) -> tuple[Route, Representation]:
        first, middle, last = key
        if first == "blobs" and middle == "sha256":
            return Route.BLOB, self._blob(last)
        if middle == "releases" and is_package(first):
            return self._release_file(first, last)
        if middle == "/" and is_package(first):
            return self._channel_file(first, last)
        raise NotFound("no such path")

    def _blob(self, sha256: str) -> Representation:
        if not is_sha256(sha256) or sha256 not in self._blobs:
            raise BlobNotFound(sha256 if is_sha256(sha256) else "(malformed)")
        release_date, size = self._blobs[sha256]
        return Representation(Route.BLOB, etag_for(sha256), release_date, size,
                              "application/octet-stream", IMMUTABLE, blob=sha256)

    def _release_file(self, package: str, name: str) -> tuple[Route, Representation]:
        version, kind, keyid = _split_suffix(name)
        if not is_version(version):
            raise NotFound("no such path")
        release = self.index.release(package, version)
        # The primary's signature changes when the primary key rotates: cached briefly
        # like a channel (DESIGN.md §4); a given key's signature never changes.
        cache = self._channel_cache if kind == "minisig" and keyid is None else IMMUTABLE
        return self._file(kind, release, f"{version}.tar.gz", release.date, cache,
                          Route.RELEASE, package, keyid)

    def _channel_file(self, package: str, name: str) -> tuple[Route, Representation]:
        channel, kind, keyid = _split_suffix(name)
        if not is_channel(channel):
            raise NotFound("no such path")
        pointer, release = self.index.channel(package, channel)
        return self._file(kind, release, f"{channel}.tar.gz", pointer.moved_at,
                          self._channel_cache, Route.CHANNEL, package, keyid)

    def _file(self, kind: str, release: Release, file_name: str, last_modified: int,
              cache_control: str, route: Route, package: str,
              keyid: str | None) -> tuple[Route, Representation]:
        if kind == "minisig":
            text = release.minisig if keyid is None else release.signature_by(keyid)
            if text is None:
                raise SignatureNotFound(package, release.version, keyid or "")
            if keyid is None and self.index.primary_since is not None:
                # The primary's signature changed when the primary key did: a client
                # revalidating by date alone (wget -N) must see a newer Last-Modified.
                last_modified = max(last_modified, self.index.primary_since)
            return Route.SIGNATURE, _inline(Route.SIGNATURE, text.encode(),
                                            last_modified, "text/plain; charset=utf-8",
                                            cache_control, release.version)
        if kind == "sha256":
            # A `sha256sum -c` line naming the URL's own file, so a plain wget of the
            # channel URL (saved as latest.tar.gz) checks against it.
            line = f"{release.sha256}  {file_name}\n".encode()
            return Route.CHECKSUM, _inline(Route.CHECKSUM, line, last_modified,
                                           "text/plain; charset=utf-8", cache_control,
                                           release.version)
        return route, Representation(route, etag_for(release.sha256), last_modified,
                                     release.size, "application/gzip", cache_control,
                                     release.version, blob=release.sha256)


def history_representation(body: bytes, index: Index) -> Representation:
    """``/history.json`` as on disk: ``no-cache`` like the index it is signed through.

    Last-Modified is the time of its last entry (the same on every replica), or when the
    index was signed where there is none.
    """
    return _inline(Route.HISTORY, body, last_time(body) or index.generated, "application/json",
                   "no-cache", None)


_SERVICE_ROUTES = {"": Route.STATUS_PAGE, "healthz": Route.HEALTHZ, "readyz": Route.READYZ,
                   "metrics": Route.METRICS}


def _service_route(segments: list[str]) -> Route | None:
    return _SERVICE_ROUTES.get(segments[0]) if len(segments) == 1 else None


def service_route(raw_path: str) -> Route | None:
    """The route of a path that needs no index (status page, health, readiness, metrics).

    Raises:
        BadRequest: malformed path.
    """
    return _service_route(split_path(raw_path))


def _split_suffix(name: str) -> tuple[str, str, str | None]:
    """(name, kind, key id of a per-key signature or None)."""
    for suffix in (".tar.gz.minisig", ".tar.gz.sha256", ".tar.gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)], _SUFFIXES[suffix], None
    keyed = _KEYED_SIGNATURE.fullmatch(name)
    if keyed is not None:
        return keyed["name"], "minisig", keyed["keyid"]
    raise NotFound("no such path")


def origin_form(raw_path: str) -> str:
    """The path of a request target, without its query; of an absolute-form target too.

    RFC 9112 §3.2.2: a server MUST accept the absolute-form (what a client sends when it
    takes this server for its proxy). One store answers whatever the authority names.
    """
    path = raw_path.split("?", 1)[0]
    absolute = _ABSOLUTE_FORM.match(path)
    return path if absolute is None else path[absolute.end():] or "/"


def split_path(raw_path: str) -> list[str]:
    """Decoded segments of a raw request path ('/' → ['']), origin- or absolute-form.

    Each segment is percent-decoded exactly once; a decoded segment holding a slash,
    backslash or control character, or one that is not UTF-8, is refused.

    Raises:
        BadRequest: neither an absolute path nor an http(s) URI, too long, bad encoding,
            NUL or control chars.
    """
    path = origin_form(raw_path)
    if len(path) > MAX_PATH_LENGTH:
        raise BadRequest("request path too long")
    if not path.startswith("/"):
        raise BadRequest("request target must be an absolute path")
    segments = []
    for raw in path[1:].split("/"):
        try:
            segment = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest("request path is not UTF-8") from None
        if any(ch in segment for ch in "/\\") or any(ord(ch) < 0x20 or ord(ch) == 0x7F
                                                     for ch in segment):
            raise BadRequest("request path holds a forbidden character")
        segments.append(segment)
    return segments
