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
from pathlib import Path
from typing import Any

from codecache.core.config_git import GIT_KEYS, GIT_PACKAGE_KEYS, git_config, git_package
from codecache.core.config_schema import (
    DEFAULT_TAG_PATTERN,
    SVN_CLIENTS,
    Config,
    EdgeConfig,
    GitConfig,
    LogConfig,
    LogFormat,
    PackageConfig,
    RedirectConfig,
    RedirectSite,
    ReplicaConfig,
    Role,
    ServerConfig,
    SigningConfig,
    StoreConfig,
    SvnConfig,
    SyncConfig,
)
from codecache.core.config_sites import EDGE_KEYS, REDIRECT_KEYS, edge_config, redirect_config
from codecache.core.config_values import (
    as_bool,
    as_choice,
    as_int,
    as_path,
    as_str,
    as_str_list,
    parse_duration,
    split_listen,
)
from codecache.core.errors import ConfigError
from codecache.core.names import is_channel, is_package

# The names callers import from here: the schema, the loader, and the value parsers the
# command line uses too.
__all__ = [
    "DEFAULT_TAG_PATTERN",
    "SVN_CLIENTS",
    "Config",
    "EdgeConfig",
    "GitConfig",
    "LogConfig",
    "LogFormat",
    "PackageConfig",
    "RedirectConfig",
    "RedirectSite",
    "ReplicaConfig",
    "Role",
    "ServerConfig",
    "SigningConfig",
    "StoreConfig",
    "SvnConfig",
    "SyncConfig",
    "load_config",
    "parse_duration",
    "split_listen",
]

# Variables that are not config keys but belong to codecache.
_ENV_NOT_KEYS = frozenset({"CODECACHE_CONFIG", "CODECACHE_ACTOR"})


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
              ("replica", "upstreams"), ("redirect", "trusted_proxies")}
_SECTIONS: dict[str, tuple[str, ...]] = {
    "store": ("path", "scrub_interval"),
    "signing": ("secret_key", "trusted_keys", "index_expiry", "resign_interval"),
    "server": ("listen", "channel_max_age", "memory_blob_max", "memory_total_max",
               "watch_interval", "workers", "header_timeout", "keepalive_timeout",
               "shutdown_timeout", "fast_answers"),
    "sync": ("interval", "max_backoff"),
    "svn": ("username", "password", "password_file", "timeout", "client"),
    "git": GIT_KEYS,
    "replica": ("upstreams", "interval", "timeout", "max_index_size"),
    "log": ("format", "access_sample"),
    "edge": EDGE_KEYS,
    "redirect": REDIRECT_KEYS,
}
_PACKAGE_KEYS = ("name", "svn_url", "tag_pattern", "auto_channel", "tar_prefix",
                 *GIT_PACKAGE_KEYS)
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
        raise ConfigError("role must be 'origin', 'replica' or 'edge', "
                          f"got {role_text!r}") from None
    _check_role_sections(role, raw)
    packages = _packages(raw.get("packages", []), base)
    server = _server(_table(raw, "server"))
    config = Config(
        role=role,
        store=_store(_table(raw, "store"), base),
        signing=_signing(_table(raw, "signing"), base),
        server=server,
        sync=_sync(_table(raw, "sync")),
        svn=_svn(_table(raw, "svn"), base),
        git=git_config(_table(raw, "git")),
        replica=_replica(_table(raw, "replica")),
        log=_log(_table(raw, "log")),
        edge=edge_config(_table(raw, "edge")),
        redirect=redirect_config(_table(raw, "redirect"), server.listen),
        packages=packages,
    )
    if role.pulls:
        _check_replica(config)
    return config


def _check_role_sections(role: Role, raw: Mapping[str, Any]) -> None:
    """An edge never redirects (a loop), DESIGN.md §5. (``[edge]`` elsewhere is unused.)"""
    if "redirect" in raw and role is Role.EDGE:
        raise ConfigError("[redirect] in an edge's config: an edge never redirects (only "
                          "the nodes in front of it do)")


def _check_replica(config: Config) -> None:
    """A replica (or edge) must know where to pull from and whom to trust."""
    role = config.role.value
    if not config.replica.upstreams:
        raise ConfigError(f"role = \"{role}\" needs [replica] upstreams (at least one URL)")
    if not config.signing.trusted_keys:
        raise ConfigError(f"role = \"{role}\" needs [signing] trusted_keys (it verifies "
                          "every index it pulls)")


def _store(t: Mapping[str, Any], base: Path) -> StoreConfig:
    d = StoreConfig()
    return StoreConfig(
        path=as_path(t["path"], "store.path", base) if "path" in t else d.path,
        scrub_interval=parse_duration(t.get("scrub_interval", d.scrub_interval),
                                      "store.scrub_interval"),
    )


def _signing(t: Mapping[str, Any], base: Path) -> SigningConfig:
    d = SigningConfig()
    keys = as_str_list(t.get("trusted_keys", []), "signing.trusted_keys")
    return SigningConfig(
        secret_keys=_secret_keys(t.get("secret_key"), base),
        trusted_keys=tuple(as_path(k, "signing.trusted_keys", base) for k in keys),
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
        return (as_path(value, "signing.secret_key", base),)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v
                                                           for v in value):
        raise ConfigError("signing.secret_key: expected a path or a non-empty list of paths "
                          f"(the first is the primary key), got {value!r}")
    paths = tuple(as_path(v, "signing.secret_key", base) for v in value)
    duplicates = sorted({str(p) for p in paths if paths.count(p) > 1})
    if duplicates:
        raise ConfigError(f"signing.secret_key: {duplicates[0]} is listed twice")
    return paths


def _server(t: Mapping[str, Any]) -> ServerConfig:
    d = ServerConfig()
    listen = as_str_list(t.get("listen", list(d.listen)), "server.listen")
    for address in listen:
        split_listen(address)
    return ServerConfig(
        listen=listen,
        channel_max_age=as_int(t.get("channel_max_age", d.channel_max_age),
                             "server.channel_max_age"),
        memory_blob_max=as_int(t.get("memory_blob_max", d.memory_blob_max),
                             "server.memory_blob_max"),
        memory_total_max=as_int(t.get("memory_total_max", d.memory_total_max),
                              "server.memory_total_max"),
        watch_interval=parse_duration(t.get("watch_interval", d.watch_interval),
                                      "server.watch_interval"),
        workers=as_int(t.get("workers", d.workers), "server.workers"),
        header_timeout=parse_duration(t.get("header_timeout", d.header_timeout),
                                      "server.header_timeout"),
        keepalive_timeout=parse_duration(t.get("keepalive_timeout", d.keepalive_timeout),
                                         "server.keepalive_timeout"),
        shutdown_timeout=parse_duration(t.get("shutdown_timeout", d.shutdown_timeout),
                                        "server.shutdown_timeout"),
        fast_answers=as_bool(t.get("fast_answers", d.fast_answers), "server.fast_answers"),
    )


def _sync(t: Mapping[str, Any]) -> SyncConfig:
    d = SyncConfig()
    return SyncConfig(
        interval=parse_duration(t.get("interval", d.interval), "sync.interval"),
        max_backoff=parse_duration(t.get("max_backoff", d.max_backoff), "sync.max_backoff"),
    )


def _svn(t: Mapping[str, Any], base: Path) -> SvnConfig:
    d = SvnConfig()
    return SvnConfig(
        username=as_str(t["username"], "svn.username") if "username" in t else None,
        password=as_str(t["password"], "svn.password") if "password" in t else None,
        password_file=as_path(t["password_file"], "svn.password_file", base)
        if "password_file" in t else None,
        timeout=parse_duration(t.get("timeout", d.timeout), "svn.timeout"),
        client=as_choice(t.get("client", d.client), "svn.client", SVN_CLIENTS),
    )


def _replica(t: Mapping[str, Any]) -> ReplicaConfig:
    d = ReplicaConfig()
    upstreams = as_str_list(t.get("upstreams", []), "replica.upstreams")
    for url in upstreams:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"replica.upstreams: expected an http(s) URL, got {url!r}")
    return ReplicaConfig(
        upstreams=tuple(u.rstrip("/") for u in upstreams),
        interval=parse_duration(t.get("interval", d.interval), "replica.interval"),
        timeout=parse_duration(t.get("timeout", d.timeout), "replica.timeout"),
        max_index_size=as_int(t.get("max_index_size", d.max_index_size),
                            "replica.max_index_size", minimum=1024),
    )


def _log(t: Mapping[str, Any]) -> LogConfig:
    d = LogConfig()
    text = t.get("format", d.format.value)
    try:
        fmt = LogFormat(text)
    except ValueError:
        raise ConfigError(f"log.format: expected 'text' or 'json', got {text!r}") from None
    return LogConfig(format=fmt, access_sample=as_int(t.get("access_sample", d.access_sample),
                                                    "log.access_sample"))


def _packages(value: object, base: Path) -> tuple[PackageConfig, ...]:
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise ConfigError("packages: expected [[packages]] tables")
    packages = tuple(_package(p, i, base) for i, p in enumerate(value))
    names = [p.name for p in packages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"package {duplicates[0]!r} is configured twice")
    return packages


def _package(t: Mapping[str, Any], index: int, base: Path) -> PackageConfig:
    where = f"packages[{index}]."
    _check_keys(t, _PACKAGE_KEYS, where)
    if "name" not in t:
        raise ConfigError(f"{where}name is required")
    if ("svn_url" in t) == ("git_url" in t):
        raise ConfigError(f"{where}: exactly one of svn_url and git_url is required")
    if "svn_url" in t and (stray := sorted(set(GIT_PACKAGE_KEYS) & set(t))):
        raise ConfigError(f"{where}{stray[0]}: only for a git package (git_url)")
    name = as_str(t["name"], where + "name")
    if not is_package(name):
        raise ConfigError(f"{where}name: invalid package name {name!r}")
    pattern_text = as_str(t.get("tag_pattern", DEFAULT_TAG_PATTERN), where + "tag_pattern")
    try:
        pattern = re.compile(pattern_text)
    except re.error as err:
        raise ConfigError(f"{where}tag_pattern: invalid regular expression: {err}") from err
    auto = t.get("auto_channel")
    if auto is not None and (not isinstance(auto, str) or not is_channel(auto)):
        raise ConfigError(f"{where}auto_channel: invalid channel name {auto!r}")
    prefix = as_str(t.get("tar_prefix", name), where + "tar_prefix")
    if "/" in prefix or prefix in (".", "..") or "\0" in prefix:
        raise ConfigError(f"{where}tar_prefix: must be a single directory name, got {prefix!r}")
    source: dict[str, Any] = git_package(t, where, base) if "git_url" in t else {
        "svn_url": as_str(t["svn_url"], where + "svn_url").rstrip("/")}
    return PackageConfig(name=name, tag_pattern=pattern, auto_channel=auto, tar_prefix=prefix,
                         **source)
