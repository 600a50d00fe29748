"""docs/admin.md's configuration reference cannot drift from codecache/core/config.py.

Both ways: every key the config code accepts has a row, every row names a key it accepts;
and every default the table gives, written into a config file, loads into exactly the
config the code builds without that key (so a changed default fails here).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from codecache.core import config as config_module
from codecache.core.config import load_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "admin.md"
ROW = re.compile(r"^\| `(?P<key>[a-z_.\[\]]+)` \| (?P<default>.+?) \| (?P<meaning>.+) \|$")
PACKAGE = '[[packages]]\nname = "pilot"\nsvn_url = "svn://svn.example.org/pilot"\n'
GIT_PACKAGE = '[[packages]]\nname = "pilot3"\ngit_url = "https://git.example.org/pilot3.git"\n'


def documented() -> dict[str, str]:
    text = DOC.read_text()
    section = text[text.index("### Reference"):]
    section = section[:section.index("\n## ")]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            assert match["key"] not in rows, f"{match['key']} documented twice"
            default = match["default"].strip()
            rows[match["key"]] = default[1:-1] if default.startswith("`") else default
    return rows


def accepted() -> set[str]:
    """Every key config.py accepts, as the table names them."""
    keys = {"role"}
    keys |= {f"{section}.{key}" for section, names in config_module._SECTIONS.items()
             for key in names}
    keys |= {f"packages[].{key}" for key in config_module._PACKAGE_KEYS}
    return keys


def test_every_accepted_key_is_documented_and_nothing_else() -> None:
    rows = set(documented())
    assert sorted(accepted() - rows) == [], "keys missing from docs/admin.md"
    assert sorted(rows - accepted()) == [], "docs/admin.md documents keys config.py refuses"


def test_the_top_level_tables_are_the_sections() -> None:
    tops = set(config_module._TOP_KEYS)
    assert tops == {"role", "packages", *config_module._SECTIONS}


def _toml(key: str, literal: str | None) -> str:
    """A config with the key set to ``literal`` (None: without it)."""
    if key == "role":
        return (f"role = {literal}\n" if literal else "") + PACKAGE
    if key.startswith("packages[]."):
        name = key.removeprefix("packages[].")
        table = GIT_PACKAGE if name.startswith("git_") else PACKAGE
        return table + (f"{name} = {literal}\n" if literal else "")
    section, name = key.split(".")
    return f"[{section}]\n" + (f"{name} = {literal}\n" if literal else "") + PACKAGE


@pytest.mark.parametrize(("key", "default"),
                         sorted((k, d) for k, d in documented().items() if d != "—"))
def test_the_documented_default_is_the_codes_default(key: str, default: str,
                                                     tmp_path: Path) -> None:
    tomllib.loads(f"v = {default}")  # the table gives a TOML literal
    with_default, without = tmp_path / "with.toml", tmp_path / "without.toml"
    with_default.write_text(_toml(key, default))
    without.write_text(_toml(key, None))
    assert load_config(with_default, env={}) == load_config(without, env={})


def test_the_comparison_would_see_another_default(tmp_path: Path) -> None:
    changed, without = tmp_path / "changed.toml", tmp_path / "without.toml"
    changed.write_text(_toml("sync.interval", '"31s"'))
    without.write_text(_toml("sync.interval", None))
    assert load_config(changed, env={}) != load_config(without, env={})
