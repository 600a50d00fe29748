"""The one error hierarchy of codecache.

Every failure a user can see is one of these. Each class carries a stable ``code``
(used verbatim in HTTP error bodies and logs). The mapping to HTTP status lives here
(``HTTP_STATUS``, ``error_status``: every error code an HTTP client can be sent, the front
tier's included), the mapping to exit codes too (``Exit``, ``exit_code``);
nothing else decides either.

    CodecacheError
    ├── ConfigError            bad config file, key or value; bad command-line input
    ├── BadRequest             an HTTP request that is not even well-formed
    ├── InvalidName            a package/channel/version name outside its charset
    ├── NotFound               unknown package, release, channel or blob
    │   ├── PackageNotFound
    │   ├── ReleaseNotFound
    │   ├── ChannelNotFound
    │   ├── SignatureNotFound  no signature of a release by the key a URL names
    │   └── BlobNotFound
    ├── IntegrityError         never retried: the bytes are not what was signed
    │   ├── SignatureError     bad, missing or untrusted signature
    │   ├── HashMismatch       content does not match its sha256/size
    │   ├── UpstreamInvalid    an edge's fill: the upstream's bytes fail the check (502)
    │   ├── AuditMismatch      a release rebuilt from Subversion is not what was signed
    │   ├── IndexRefused       a signed index this node will not accept; ``reason`` is one
    │   │                      of ``Refusal`` (DESIGN.md §5's names)
    │   └── HistoryError       a release history that is malformed or does not verify
    │                          against the signed index (DESIGN.md §9)
    ├── Refused                valid request, but the state or environment refuses it
    │   ├── ReleaseYanked      publishing a withdrawn release
    │   ├── ChannelInUse       yanking a release a channel still points to
    │   ├── InsecureKeyFile    secret key readable by group/world
    │   ├── UnsupportedFile    an exported tree holds a device, fifo or socket
    │   ├── UnsafeTree         a tag's tree has an entry unsafe to extract (``..``, ``.git``)
    │   ├── StoreError         the store cannot be read/written (disk full, permissions)
    │   │   └── CacheFull      an edge's cache cannot take a blob (disk full)
    │   ├── BlobUnavailable    a blob the index lists is missing or corrupt on disk
    │   ├── NoIndex            the store holds no index yet
    │   └── StoreBusy          another writer holds the store lock
    └── UpstreamError          retryable: Subversion or an upstream is unreachable
        ├── UpstreamFailure    an HTTP upstream did not answer usably; ``reason`` says how
        ├── UpstreamUnavailable  an edge's fill: no upstream answered (503)
        ├── SourceNotFound     the source answered: no such path, revision or commit
        ├── SvnError
        │   └── SvnNotFound    (also a SourceNotFound)
        └── GitError           git failed, timed out or answered garbage
            └── GitNotFound    (also a SourceNotFound)
"""

from __future__ import annotations

import enum
from types import MappingProxyType


class CodecacheError(Exception):
    """Base of every codecache error; ``str(err)`` is a one-line message for users.

    ``http_status``: the status of an error whose class rule (``error_status``) does not
    fit; ``retry_after``: seconds an HTTP client is told to wait (``Retry-After``), for an
    error that passes by itself.
    """

    code = "error"
    http_status: int | None = None
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(CodecacheError):
    code = "config_error"


class BadRequest(CodecacheError):
    """A request path that is not even well-formed (bad encoding, NUL, too long)."""

    code = "bad_request"


class InvalidName(CodecacheError):
    code = "invalid_name"

    def __init__(self, kind: str, value: str) -> None:
        super().__init__(f"invalid {kind} name {value!r}")
        self.kind = kind
        self.value = value


class NotFound(CodecacheError):
    code = "not_found"


class PackageNotFound(NotFound):
    code = "package_not_found"

    def __init__(self, package: str) -> None:
        super().__init__(f"unknown package {package!r}")
        self.package = package


class ReleaseNotFound(NotFound):
    code = "release_not_found"

    def __init__(self, package: str, version: str) -> None:
        super().__init__(f"package {package!r} has no release {version!r}")
        self.package = package
        self.version = version


class ChannelNotFound(NotFound):
    code = "channel_not_found"

    def __init__(self, package: str, channel: str) -> None:
        super().__init__(f"package {package!r} has no channel {channel!r}")
        self.package = package
        self.channel = channel


class SignatureNotFound(NotFound):
    code = "signature_not_found"

    def __init__(self, package: str, version: str, keyid: str) -> None:
        super().__init__(f"release {package} {version} has no signature by key {keyid}")
        self.package = package
        self.version = version
        self.keyid = keyid


class BlobNotFound(NotFound):
    code = "blob_not_found"

    def __init__(self, sha256: str) -> None:
        super().__init__(f"no blob sha256:{sha256}")
        self.sha256 = sha256


class IntegrityError(CodecacheError):
    code = "integrity_error"


class SignatureError(IntegrityError):
    code = "bad_signature"


class HashMismatch(IntegrityError):
    code = "hash_mismatch"


class UpstreamInvalid(IntegrityError):
    """An edge's fill whose bytes from upstream fail the check (size, sha256): nothing is
    cached or served, and the next request tries again (DESIGN.md §5)."""

    code = "upstream_invalid"
    http_status = 502

    def __init__(self, sha256: str, message: str) -> None:
        super().__init__(message)
        self.sha256 = sha256


class AuditMismatch(IntegrityError):
    """Releases whose signed hashes are not what their Subversion tag rebuilds to."""

    code = "audit_mismatch"

    def __init__(self, releases: list[str]) -> None:
        super().__init__(f"{len(releases)} release(s) do not match their source: "
                         + ", ".join(releases))
        self.releases = releases


class Refusal(enum.Enum):
    """Why a signed index was refused: the names logged and counted (DESIGN.md §5)."""

    MALFORMED = "malformed"                     # not a signed index document at all
    BAD_SIGNATURE = "bad_signature"             # no signature by a trusted key verifies
    UNSUPPORTED_FORMAT = "unsupported_format"   # a ``format`` this version does not know
    EXPIRED = "expired"                         # past ``expires`` (freeze protection)
    ROLLBACK = "rollback"                       # lower than this source offered before
    CONFLICT = "conflict"                       # same serial, other signed payload
    STALE_UPSTREAM = "stale_upstream"           # merely behind what this node holds
    BLOB_MISMATCH = "blob_mismatch"             # a blob it names has other bytes
    TOO_LARGE = "too_large"                     # a body over its cap
    BAD_ENCODING = "bad_encoding"               # a Content-Encoding we never decode
    HISTORY_FORK = "history_fork"               # rewrites history entries already held


class IndexRefused(IntegrityError):
    """A signed index (or what an upstream sent in its place) that is not accepted."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = reason.value


class HistoryError(IntegrityError):
    """The release history is malformed, or its chain does not reach the signed head."""

    code = "history_invalid"

    def __init__(self, seq: int | None, message: str) -> None:
        super().__init__(message)
        self.seq = seq           # the first entry found wrong, where one is to blame


class Refused(CodecacheError):
    code = "refused"


class ReleaseYanked(Refused):
    code = "release_yanked"

    def __init__(self, package: str, version: str) -> None:
        super().__init__(f"release {package} {version} is yanked; no channel may point to it")
        self.package = package
        self.version = version


class ChannelInUse(Refused):
    code = "channel_in_use"

    def __init__(self, package: str, version: str, channels: list[str]) -> None:
        names = ", ".join(channels)
        super().__init__(
            f"release {package} {version} is still published on channel(s) {names}; "
            "move them to another release first"
        )
        self.package = package
        self.version = version
        self.channels = channels


class InsecureKeyFile(Refused):
    code = "insecure_key_file"


class UnsupportedFile(Refused):
    code = "unsupported_file"


class UnsafeTree(Refused):
    """A tag's tree holds an entry unsafe to extract (DESIGN.md §3): not published."""

    code = "unsafe_tree"


class StoreError(Refused):
    code = "store_error"


class CacheFull(StoreError):
    """An edge's cache cannot take a blob: the disk is full. The fill leaves no partial
    file and the node keeps serving what it holds."""

    code = "cache_full"
    retry_after = 30


class BlobUnavailable(Refused):
    code = "blob_unavailable"

    def __init__(self, sha256: str, reason: str) -> None:
        super().__init__(f"blob {sha256} is unavailable: {reason}")
        self.sha256 = sha256
        self.reason = reason


class NoIndex(Refused):
    code = "no_index"


class StoreBusy(Refused):
    code = "store_busy"


class UpstreamError(CodecacheError):
    code = "upstream_error"


class UpstreamFailure(UpstreamError):
    """One HTTP upstream failed in transport (retryable, on it again or on the next one).

    ``reason`` is the name counted and logged: ``connect``, ``timeout``, ``http_5xx``,
    ``http_status``, ``redirect`` (never followed), ``history_behind``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UpstreamUnavailable(UpstreamError):
    """An edge cannot fill a blob it does not hold: no upstream answered usably."""

    code = "upstream_unavailable"
    http_status = 503
    retry_after = 5


class SourceNotFound(UpstreamError):
    """The source was reached and says what was asked for is not there (``audit``: MISSING)."""

    code = "source_not_found"


class SvnError(UpstreamError):
    code = "svn_error"


class SvnNotFound(SvnError, SourceNotFound):
    """Subversion was reached and says the path (or revision) does not exist."""

    code = "svn_not_found"


class GitError(UpstreamError):
    code = "git_error"


class GitNotFound(GitError, SourceNotFound):
    """git reached the repository and no ref reaches the commit (or the tag is gone)."""

    code = "git_not_found"


# --- errors to HTTP -----------------------------------------------------------------------

#: Every error code an HTTP client can be sent, with its status: the server's own
#: (docs/http.md, "Errors") and those of the nginx front tier (nginx/README.md; the bodies are
#: written in nginx/codecache.conf). tests/unit/test_http_errors.py holds this table to both
#: documents and to the conf.
HTTP_STATUS = MappingProxyType({
    "bad_request": 400,
    "not_found": 404,
    "package_not_found": 404,
    "channel_not_found": 404,
    "release_not_found": 404,
    "signature_not_found": 404,
    "blob_not_found": 404,
    "method_not_allowed": 405,           # anything but GET/HEAD
    "precondition_failed": 412,          # If-Match / If-Unmodified-Since
    "payload_too_large": 413,            # nginx: a body over client_max_body_size
    "range_not_satisfiable": 416,
    "internal_error": 500,               # a bug (or a failure of nginx itself)
    "upstream_invalid": 502,             # an edge's fill: the upstream's bytes fail the check
    "blob_unavailable": 503,
    "cache_full": 503,                   # an edge's fill: the disk is full (Retry-After)
    "no_index": 503,
    "upstream_unavailable": 503,         # no upstream could be reached (Retry-After on an
                                         # edge); nginx: no replica could be reached
    "upstream_timeout": 504,             # nginx: no replica answered in time
})


def error_status(err: CodecacheError) -> int:
    """The HTTP status of ``err``: its class's ``http_status``, else by its class (a refusal
    or an integrity failure 503, anything unforeseen 500); ``HTTP_STATUS`` lists the same
    status for every documented code an error carries (``tests/unit/test_http_errors.py``
    holds them together)."""
    if err.http_status is not None:
        return err.http_status
    if isinstance(err, BadRequest):
        return 400
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, Refused | IntegrityError):
        return 503
    return 500


# --- errors to exit codes -----------------------------------------------------------------


class Exit(enum.IntEnum):
    """The command line's exit codes (DESIGN.md §6)."""

    OK = 0
    INVALID = 1         # verification or a check failed: bad signature, expired index
    USAGE = 2           # the request itself is wrong: usage, config, unknown name
    REFUSED = 3         # valid, but the state or environment refuses it
    SOFTWARE = 70       # a bug: an unexpected exception (EX_SOFTWARE, sysexits.h)
    INTERRUPTED = 130   # Ctrl-C: 128 + SIGINT, as a shell reports it


#: Nagios plugin conventions (``codecache check`` only): every failure of the plugin itself,
#: a usage error or a bug, is UNKNOWN (``ops.check.State.UNKNOWN``).
NAGIOS_UNKNOWN = 3


def exit_code(err: BaseException, *, nagios: bool = False) -> int:
    """The exit code of a command that raised ``err``; ``nagios``: of ``codecache check``."""
    if isinstance(err, KeyboardInterrupt):
        return int(Exit.INTERRUPTED)
    if nagios:
        return NAGIOS_UNKNOWN
    if isinstance(err, IntegrityError):
        return int(Exit.INVALID)
    if isinstance(err, ConfigError | InvalidName | NotFound):
        return int(Exit.USAGE)
    if isinstance(err, CodecacheError):  # Refused, UpstreamError, BadRequest
        return int(Exit.REFUSED)
    return int(Exit.SOFTWARE)
