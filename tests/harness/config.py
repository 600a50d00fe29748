"""Config files for tests and benchmarks, rendered from the product's config dataclasses.

The TOML keys are the dataclasses' fields (``codecache.core.config``), walked here, so a new
key exists for tests once it exists in the product. Only values that differ from the
dataclass default are written: a file states what the test chose, the product's defaults
stay the product's. Values may be given as the dataclass types (``Path``, seconds as
``float``) or as the file's own spelling (``"store"``, ``"1s"``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from codecache.core.config_schema import (
    Config,
    PackageConfig,
    RedirectConfig,
    RedirectSite,
    Role,
)

# Field -> key where the file's spelling differs (one key, one or several paths).
_KEY_OF_FIELD = {"secret_keys": "secret_key"}
_FIELD_OF_KEY = {key: name for name, key in _KEY_OF_FIELD.items()}
# Each [section]'s dataclass, from Config itself: a new section needs no line here.
_SECTION_TYPES: dict[str, type[Any]] = {
    f.name: type(getattr(Config(), f.name)) for f in dataclasses.fields(Config)
    if dataclasses.is_dataclass(getattr(Config(), f.name))}


def _value(value: object) -> str:
    """One TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Enum):
        return _value(value.value)
    if isinstance(value, re.Pattern):
        return _value(value.pattern)
    if isinstance(value, Path):
        return _value(str(value))
    if isinstance(value, str):
        return json.dumps(value)     # a TOML basic string is a JSON string
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML spelling for {value!r}")


def _same(value: object, default: object) -> bool:
    if isinstance(value, re.Pattern) and isinstance(default, re.Pattern):
        return bool(value.pattern == default.pattern)
    return value == default


def _table(instance: object, default: object) -> list[str]:
    """``key = value`` lines of a dataclass's fields that differ from ``default``'s."""
    lines = []
    for f in dataclasses.fields(instance):   # type: ignore[arg-type]
        value = getattr(instance, f.name)
        if value is None or _same(value, getattr(default, f.name)):
            continue
        if f.name == "sites":
            continue   # [[redirect.sites]] tables: written after the section by render
        if f.name == "secret_keys" and isinstance(value, tuple | list) and len(value) == 1:
            value = value[0]         # one key is written as one path, as the docs show it
        lines.append(f"{_KEY_OF_FIELD.get(f.name, f.name)} = {_value(value)}")
    return lines


def render(config: Config) -> str:
    """The TOML text of ``config`` (defaults left out)."""
    lines = [f"role = {_value(config.role)}"]
    for f in dataclasses.fields(config):
        if f.name in ("role", "packages"):
            continue
        section = getattr(config, f.name)
        body = _table(section, type(section)())
        if body:
            lines += [f"[{f.name}]", *body]
        if isinstance(section, RedirectConfig):
            for site in section.sites:
                lines += ["[[redirect.sites]]", *_table(site, RedirectSite("", (), ()))]
    for package in config.packages:
        # name and the source URL (svn_url or git_url) differ from "": always written.
        lines += ["[[packages]]", *_table(package, PackageConfig(""))]
    return "\n".join(lines) + "\n"


def build(*, role: str | Role = Role.ORIGIN,
          packages: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]] = (),
          **sections: Mapping[str, Any]) -> Config:
    """A ``Config`` from section tables in the file's spelling.

    ``build(role="replica", store={"path": "store"}, replica={"upstreams": [url]})``; a key
    the dataclasses do not have is a TypeError here, as it is an error in the product.
    """
    values: dict[str, Any] = {"role": Role(role)}
    for name, table in sections.items():
        kind = _SECTION_TYPES[name]
        fields = {_FIELD_OF_KEY.get(k, k): _tuple(v) for k, v in table.items()}
        if kind is RedirectConfig and "sites" in fields:
            fields["sites"] = tuple(RedirectSite(**{k: _tuple(v) for k, v in site.items()})
                                    for site in table["sites"])
        values[name] = kind(**fields)
    values["packages"] = tuple(_package(p) for p in packages)
    return Config(**values)


def _package(table: Mapping[str, Any]) -> PackageConfig:
    values: dict[str, Any] = dict(table)
    if "tag_pattern" in values:
        values["tag_pattern"] = re.compile(values["tag_pattern"])
    return PackageConfig(**values)


def _tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def write(path: Path, config: Config, *, extra: str = "") -> Path:
    """Write ``config`` to ``path`` (``extra``: raw TOML appended, for a test of bad input)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(config) + extra)
    return path
