"""The config's shape: one frozen dataclass per section, with its defaults (DESIGN.md §7).

``config`` builds these from the file and the environment; everything else reads them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

DEFAULT_TAG_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
SVN_CLIENTS = ("auto", "cli", "pysvn")   # svn.client


class Role(Enum):
    ORIGIN = "origin"
    REPLICA = "replica"
    EDGE = "edge"

    @property
    def pulls(self) -> bool:
        """A replica and an edge follow an upstream's signed index (DESIGN.md §5)."""
        return self is not Role.ORIGIN


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path = Path("/var/lib/codecache")
    # How often the server re-hashes every blob it serves (periodic scrub).
    scrub_interval: float = 3600.0


@dataclass(frozen=True, slots=True)
class SigningConfig:
    # One path, or several during a key rotation: the first is the primary (its signature
    # is a release's ``.minisig``); every one signs the index and every release.
    secret_keys: tuple[Path, ...] = ()
    trusted_keys: tuple[Path, ...] = ()
    index_expiry: float = 7 * 86400.0
    resign_interval: float = 3600.0

    @property
    def secret_key(self) -> Path | None:
        """The primary secret key, None where none is configured (a replica)."""
        return self.secret_keys[0] if self.secret_keys else None


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: tuple[str, ...] = ("127.0.0.1:8080",)
    channel_max_age: int = 60
    # Blobs up to this size are held in memory after one verified read.
    # Larger ones are sent from their file with sendfile(2): no copy per connection (a
    # large body written from memory is copied into each slow client's send buffer).
    memory_blob_max: int = 1024 * 1024
    memory_total_max: int = 512 * 1024 * 1024
    # How often the server looks for a new index or a changed/missing blob.
    watch_interval: float = 0.25
    # Worker processes sharing the listening port; 0 = one per CPU (DESIGN.md §7).
    workers: int = 0
    # A request header must be complete this long after the connection opened or the
    # request's first byte arrived (slow clients: a half-sent header is closed after it).
    header_timeout: float = 10.0
    # An idle keep-alive connection is closed after this; longer than the front tier's
    # upstream keepalive_timeout (nginx/codecache.conf: 60 s), so nginx closes first.
    keepalive_timeout: float = 75.0
    # On SIGTERM/SIGINT, in-flight responses get this long to finish.
    shutdown_timeout: float = 10.0
    # A plain GET of a file held in memory, and a revalidation that ends in 304, are
    # answered from bytes made once per representation (web/fastpath.py); false: every
    # request goes through aiohttp's request handling (same bytes, more CPU).
    fast_answers: bool = True

    def worker_count(self) -> int:
        """Worker processes to run (``workers = 0``: one per CPU)."""
        return self.workers or len(os.sched_getaffinity(0)) or 1


@dataclass(frozen=True, slots=True)
class SyncConfig:
    interval: float = 30.0
    max_backoff: float = 600.0


@dataclass(frozen=True, slots=True)
class SvnConfig:
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    timeout: float = 300.0
    # "auto": pysvn (in a worker process) where a Python with pysvn is found, else the
    # svn command; "cli" or "pysvn" force one (docs/decisions.md).
    client: str = "auto"


@dataclass(frozen=True, slots=True)
class GitConfig:
    # Bound on each network step of git (listing the tags, one fetch): a server that
    # accepts and never answers cannot hang a sync pass (DESIGN.md §7).
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class PackageConfig:
    """One ``[[packages]]``: exactly one of ``svn_url`` and ``git_url`` is set."""

    name: str
    svn_url: str = ""
    tag_pattern: re.Pattern[str] = re.compile(DEFAULT_TAG_PATTERN)
    auto_channel: str | None = None
    tar_prefix: str = ""
    git_url: str = ""                      # exactly as configured (signed into the index)
    git_token_file: Path | None = None     # https only: the password of ``git_user``
    git_user: str = "git"
    git_ssh_key: Path | None = None        # ssh only

    @property
    def prefix(self) -> str:
        return self.tar_prefix or self.name

    @property
    def kind(self) -> str:
        """``git`` or ``svn``: which source holds the package (``core.pin``'s kinds)."""
        return "git" if self.git_url else "svn"

    @property
    def source_url(self) -> str:
        return self.git_url or self.svn_url

    def tag_url(self, tag: str) -> str:
        return f"{self.svn_url.rstrip('/')}/tags/{tag}"


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    upstreams: tuple[str, ...] = ()
    # Poll period; with the server's 0.25 s watch a publish is served within ~1.5 s.
    interval: float = 1.0
    # Bound on connecting, and on any stall of a response body; an index fetch as a whole
    # gets three times this, a blob this plus one second per MiB.
    timeout: float = 10.0
    # An index larger than this is refused (``too_large``) without being read further.
    max_index_size: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    # Bound on the blob bytes an edge holds, channel targets included (DESIGN.md §5).
    cache_size: int = 10 * 1000**3


@dataclass(frozen=True, slots=True)
class RedirectSite:
    """One ``[[redirect.sites]]``: its client networks (normalised CIDRs) and edges."""

    name: str
    networks: tuple[str, ...]
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RedirectConfig:
    # How often each target's /readyz is read (a probe slower than this, or 2 s, fails).
    check_interval: float = 5.0
    # Whose X-Forwarded-For (and X-Forwarded-Proto) is believed: the front tier (CIDRs).
    trusted_proxies: tuple[str, ...] = ()
    sites: tuple[RedirectSite, ...] = ()


class LogFormat(Enum):
    TEXT = "text"    # one human line per record
    JSON = "json"    # one JSON object per line; ``extra=`` fields become keys


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: LogFormat = LogFormat.TEXT
    # The access log of ``serve`` writes one in this many answered requests (every error,
    # 4xx or 5xx, always); 0 writes none. Each line costs more than answering a 304.
    access_sample: int = 1


@dataclass(frozen=True, slots=True)
class Config:
    role: Role = Role.ORIGIN
    store: StoreConfig = field(default_factory=StoreConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    svn: SvnConfig = field(default_factory=SvnConfig)
    git: GitConfig = field(default_factory=GitConfig)
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    log: LogConfig = field(default_factory=LogConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    redirect: RedirectConfig = field(default_factory=RedirectConfig)
    packages: tuple[PackageConfig, ...] = ()

    def package(self, name: str) -> PackageConfig | None:
        return next((p for p in self.packages if p.name == name), None)
