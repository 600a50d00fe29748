"""The config's value parsers: durations, listen addresses, paths, strings, integers,
booleans, lists and choices, each raising ``ConfigError`` that names its key.

Used by ``config`` for the file and the environment, and by the command line for option
values (``--timeout 10s``).
"""

from __future__ import annotations

import re
from pathlib import Path

from codecache.core.errors import ConfigError

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


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


_SIZE_RE = re.compile(r"(\d+)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
               "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_size(value: object, key: str) -> int:
    """``500MB``/``10GB`` (powers of 1000), ``512MiB``/``2GiB`` (of 1024), or bytes.

    Raises:
        ConfigError: for anything else, or zero.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        if match and int(match.group(1)) > 0:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    raise ConfigError(f"{key}: expected a size like 500MB, 10GB or 2GiB, got {value!r}")


def split_listen(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port).

    Raises:
        ConfigError: for anything else.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"server.listen: expected host:port, got {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def as_path(value: object, key: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    return base / Path(value).expanduser()


def as_str(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def as_int(value: object, key: str, minimum: int = 0) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def as_bool(value: object, key: str) -> bool:
    """A TOML boolean, or from the environment one of true/yes/on/1, false/no/off/0."""
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def as_str_list(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    return tuple(value)


def as_choice(value: object, key: str, allowed: tuple[str, ...]) -> str:
    text = as_str(value, key)
    if text not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, not {text!r}")
    return text
