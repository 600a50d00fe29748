"""The one configuration object: loaded from TOML, overridden from ``CODECACHE_*``, validated once.

Nothing else reads the environment or the config file. Relative paths in the file are
resolved against the file's directory, so a config can travel with its store and keys.

Environment overrides: every scalar key as ``CODECACHE_<SECTION>_<KEY>`` (``CODECACHE_ROLE``
for the top-level ``role``); list keys (``signing.trusted_keys``, ``signing.secret_key``,
``server.listen``, ``replica.upstreams``) take a comma-separated value. An unknown
``CODECACHE_*`` variable is an error, like an unknown key in the file, except
``CODECACHE_CONFIG`` (the file) and ``CODECACHE_ACTOR`` (who a release manager's change
is recorded as; ``cli`` reads both).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from codecache.core.errors import ConfigError
from codecache.core.names import is_channel, is_package

DEFAULT_TAG_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Variables that are not config keys but belong to codecache.
_ENV_NOT_KEYS = frozenset({"CODECACHE_CONFIG", "CODECACHE_ACTOR"})


class Role(Enum):
    ORIGIN = "origin"
    REPLICA = "replica"


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
class PackageConfig:
    name: str
    svn_url: str
    tag_pattern: re.Pattern[str] = re.compile(DEFAULT_TAG_PATTERN)
    auto_channel: str | None = None
    tar_prefix: str = ""

    @property
    def prefix(self) -> str:
        return self.tar_prefix or self.name

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
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    log: LogConfig = field(default_factory=LogConfig)
    packages: tuple[PackageConfig, ...] = ()

    def package(self, name: str) -> PackageConfig | None:
        return next((p for p in self.packages if p.name == name), None)


def parse_duration(value: object, key: str) -> float:
    """``30s``/``5m``/``1h``/``7d``, ``0.5s``/``250ms`` (or a number of seconds) as seconds.

    Raises:
        ConfigError: for anything else.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like 30s, 5m, 1h or 7d, got {value!r}")
    if isinstance(value, int | float) and value > 0:
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match and float(match.group(1)) > 0:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ConfigError(f"{key}: expected a duration like 30s, 5m, 1h or 7d, got {value!r}")


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (None: no file, defaults only), apply env overrides, validate.

    Raises:
        ConfigError: unreadable or malformed file, unknown key, invalid value.
    """
    environ = os.environ if env is None else env
    raw: dict[str, Any] = _read_toml(path) if path is not None else {}
    _apply_env(raw, environ)
    base = path.parent if path is not None else Path.cwd()
    return _build(raw, base)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err


_LIST_KEYS = {("signing", "trusted_keys"), ("signing", "secret_key"), ("server", "listen"),
              ("replica", "upstreams")}
_SECTIONS: dict[str, tuple[str, ...]] = {
    "store": ("path", "scrub_interval"),
    "signing": ("secret_key", "trusted_keys", "index_expiry", "resign_interval"),
    "server": ("listen", "channel_max_age", "memory_blob_max", "memory_total_max",
               "watch_interval", "workers", "header_timeout", "keepalive_timeout",
               "shutdown_timeout", "fast_answers"),
    "sync": ("interval", "max_backoff"),
    "svn": ("username", "password", "password_file", "timeout", "client"),
    "replica": ("upstreams", "interval", "timeout", "max_index_size"),
    "log": ("format", "access_sample"),
}
_PACKAGE_KEYS = ("name", "svn_url", "tag_pattern", "auto_channel", "tar_prefix")
_TOP_KEYS = ("role", "packages", *_SECTIONS)


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith("CODECACHE_") or name in _ENV_NOT_KEYS:
            continue
        section, key = _env_target(name)
        if section is None:
            raw["role"] = value
            continue
        parsed: object = value
        if (section, key) in _LIST_KEYS:
            parsed = [item.strip() for item in value.split(",") if item.strip()]
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"[{section}] must be a table")
        raw[section][key] = parsed


def _env_target(name: str) -> tuple[str | None, str]:
    rest = name.removeprefix("CODECACHE_").lower()
    if rest == "role":
        return None, "role"
    for section, keys in _SECTIONS.items():
        if rest.startswith(section + "_") and rest[len(section) + 1:] in keys:
            return section, rest[len(section) + 1:]
    raise ConfigError(f"unknown environment variable {name} (no such config key)")


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key {where}{unknown[0]!r} in config")


def _table(raw: Mapping[str, Any], section: str) -> Mapping[str, Any]:
    value = raw.get(section, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{section}] must be a table")
    _check_keys(value, _SECTIONS[section], f"{section}.")
    return value


def _build(raw: dict[str, Any], base: Path) -> Config:
    _check_keys(raw, _TOP_KEYS, "")
    role_text = raw.get("role", "origin")
    try:
        role = Role(role_text)
    except ValueError:
        raise ConfigError(f"role must be 'origin' or 'replica', got {role_text!r}") from None
    packages = _packages(raw.get("packages", []))
    config = Config(
        role=role,
        store=_store(_table(raw, "store"), base),
        signing=_signing(_table(raw, "signing"), base),
        server=_server(_table(raw, "server")),
        sync=_sync(_table(raw, "sync")),
        svn=_svn(_table(raw, "svn"), base),
        replica=_replica(_table(raw, "replica")),
        log=_log(_table(raw, "log")),
        packages=packages,
    )
    if role is Role.REPLICA:
        _check_replica(config)
    return config


def _check_replica(config: Config) -> None:
    """A replica must know where to pull from and whom to trust; nothing else is implied."""
    if not config.replica.upstreams:
        raise ConfigError("role = \"replica\" needs [replica] upstreams (at least one URL)")
    if not config.signing.trusted_keys:
        raise ConfigError("role = \"replica\" needs [signing] trusted_keys (it verifies "
                          "every index it pulls)")


def _path(value: object, key: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    return base / Path(value).expanduser()


def _str(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _int(value: object, key: str, minimum: int = 0) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _bool(value: object, key: str) -> bool:
    """A TOML boolean, or from the environment one of true/yes/on/1, false/no/off/0."""
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _str_list(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    return tuple(value)


def _store(t: Mapping[str, Any], base: Path) -> StoreConfig:
    d = StoreConfig()
    return StoreConfig(
        path=_path(t["path"], "store.path", base) if "path" in t else d.path,
        scrub_interval=parse_duration(t.get("scrub_interval", d.scrub_interval),
                                      "store.scrub_interval"),
    )


def _signing(t: Mapping[str, Any], base: Path) -> SigningConfig:
    d = SigningConfig()
    keys = _str_list(t.get("trusted_keys", []), "signing.trusted_keys")
    return SigningConfig(
        secret_keys=_secret_keys(t.get("secret_key"), base),
        trusted_keys=tuple(_path(k, "signing.trusted_keys", base) for k in keys),
        index_expiry=parse_duration(t.get("index_expiry", d.index_expiry),
                                    "signing.index_expiry"),
        resign_interval=parse_duration(t.get("resign_interval", d.resign_interval),
                                       "signing.resign_interval"),
    )


def _secret_keys(value: object, base: Path) -> tuple[Path, ...]:
    """``secret_key``: one path, or a list of paths during a rotation (primary first)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (_path(value, "signing.secret_key", base),)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v
                                                           for v in value):
        raise ConfigError("signing.secret_key: expected a path or a non-empty list of paths "
                          f"(the first is the primary key), got {value!r}")
    paths = tuple(_path(v, "signing.secret_key", base) for v in value)
    duplicates = sorted({str(p) for p in paths if paths.count(p) > 1})
    if duplicates:
        raise ConfigError(f"signing.secret_key: {duplicates[0]} is listed twice")
    return paths


def _server(t: Mapping[str, Any]) -> ServerConfig:
    d = ServerConfig()
    listen = _str_list(t.get("listen", list(d.listen)), "server.listen")
    for address in listen:
        split_listen(address)
    return ServerConfig(
        listen=listen,
        channel_max_age=_int(t.get("channel_max_age", d.channel_max_age),
                             "server.channel_max_age"),
        memory_blob_max=_int(t.get("memory_blob_max", d.memory_blob_max),
                             "server.memory_blob_max"),
        memory_total_max=_int(t.get("memory_total_max", d.memory_total_max),
                              "server.memory_total_max"),
        watch_interval=parse_duration(t.get("watch_interval", d.watch_interval),
                                      "server.watch_interval"),
        workers=_int(t.get("workers", d.workers), "server.workers"),
        header_timeout=parse_duration(t.get("header_timeout", d.header_timeout),
                                      "server.header_timeout"),
        keepalive_timeout=parse_duration(t.get("keepalive_timeout", d.keepalive_timeout),
                                         "server.keepalive_timeout"),
        shutdown_timeout=parse_duration(t.get("shutdown_timeout", d.shutdown_timeout),
                                        "server.shutdown_timeout"),
        fast_answers=_bool(t.get("fast_answers", d.fast_answers), "server.fast_answers"),
    )


def split_listen(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port).

    Raises:
        ConfigError: for anything else.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"server.listen: expected host:port, got {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _sync(t: Mapping[str, Any]) -> SyncConfig:
    d = SyncConfig()
    return SyncConfig(
        interval=parse_duration(t.get("interval", d.interval), "sync.interval"),
        max_backoff=parse_duration(t.get("max_backoff", d.max_backoff), "sync.max_backoff"),
    )


def _svn(t: Mapping[str, Any], base: Path) -> SvnConfig:
    d = SvnConfig()
    return SvnConfig(
        username=_str(t["username"], "svn.username") if "username" in t else None,
        password=_str(t["password"], "svn.password") if "password" in t else None,
        password_file=_path(t["password_file"], "svn.password_file", base)
        if "password_file" in t else None,
        timeout=parse_duration(t.get("timeout", d.timeout), "svn.timeout"),
        client=_choice(t.get("client", d.client), "svn.client", SVN_CLIENTS),
    )


SVN_CLIENTS = ("auto", "cli", "pysvn")


def _choice(value: object, key: str, allowed: tuple[str, ...]) -> str:
    text = _str(value, key)
    if text not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, not {text!r}")
    return text


def _replica(t: Mapping[str, Any]) -> ReplicaConfig:
    d = ReplicaConfig()
    upstreams = _str_list(t.get("upstreams", []), "replica.upstreams")
    for url in upstreams:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"replica.upstreams: expected an http(s) URL, got {url!r}")
    return ReplicaConfig(
        upstreams=tuple(u.rstrip("/") for u in upstreams),
        interval=parse_duration(t.get("interval", d.interval), "replica.interval"),
        timeout=parse_duration(t.get("timeout", d.timeout), "replica.timeout"),
        max_index_size=_int(t.get("max_index_size", d.max_index_size),
                            "replica.max_index_size", minimum=1024),
    )


def _log(t: Mapping[str, Any]) -> LogConfig:
    d = LogConfig()
    text = t.get("format", d.format.value)
    try:
        fmt = LogFormat(text)
    except ValueError:
        raise ConfigError(f"log.format: expected 'text' or 'json', got {text!r}") from None
    return LogConfig(format=fmt, access_sample=_int(t.get("access_sample", d.access_sample),
                                                    "log.access_sample"))


def _packages(value: object) -> tuple[PackageConfig, ...]:
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise ConfigError("packages: expected [[packages]] tables")
    packages = tuple(_package(p, i) for i, p in enumerate(value))
    names = [p.name for p in packages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"package {duplicates[0]!r} is configured twice")
    return packages


def _package(t: Mapping[str, Any], index: int) -> PackageConfig:
    where = f"packages[{index}]."
    _check_keys(t, _PACKAGE_KEYS, where)
    for required in ("name", "svn_url"):
        if required not in t:
            raise ConfigError(f"{where}{required} is required")
    name = _str(t["name"], where + "name")
    if not is_package(name):
        raise ConfigError(f"{where}name: invalid package name {name!r}")
    pattern_text = _str(t.get("tag_pattern", DEFAULT_TAG_PATTERN), where + "tag_pattern")
    try:
        pattern = re.compile(pattern_text)
    except re.error as err:
        raise ConfigError(f"{where}tag_pattern: invalid regular expression: {err}") from err
    auto = t.get("auto_channel")
    if auto is not None and (not isinstance(auto, str) or not is_channel(auto)):
        raise ConfigError(f"{where}auto_channel: invalid channel name {auto!r}")
    prefix = _str(t.get("tar_prefix", name), where + "tar_prefix")
    if "/" in prefix or prefix in (".", "..") or "\0" in prefix:
        raise ConfigError(f"{where}tar_prefix: must be a single directory name, got {prefix!r}")
    return PackageConfig(
        name=name,
        svn_url=_str(t["svn_url"], where + "svn_url").rstrip("/"),
        tag_pattern=pattern,
        auto_channel=auto,
        tar_prefix=prefix,
    )
