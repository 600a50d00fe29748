"""Dependencies point one way (STYLE.md): a pure core, I/O at the edges, argv only in cli.

An ast walk over every ``codecache/*.py`` file (function-level imports included). Every
module has a layer rank and may import only modules of a strictly lower rank, so an
``index -> store`` import fails here; a new module must be given its rank.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "codecache"
# Lower layers first; a module may import only from layers before its own.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "conditional", "metrics"),             # no codecache imports at all
    ("names", "signing", "tarball"),
    ("config", "index"),
    ("trust",),                                       # the trust decision (pure)
    ("store", "readiness", "catalog", "statuspage"),
    ("blobcache", "svn"),
    ("storeview", "sync"),                            # a server's view; the origin's writer
    ("replica",),                                     # the pull loop (aiohttp client)
    ("server",),                                      # HTTP front end; runs a replica's loop
    ("cli",),
    ("__main__",),
)
RANK = {module: rank for rank, layer in enumerate(LAYERS) for module in layer}
CORE = ("errors", "config", "names", "conditional", "signing", "tarball", "index", "trust",
        "store", "readiness", "catalog", "blobcache", "metrics", "statuspage", "storeview")
WORKERS = ("svn", "sync")
EDGES = ("server", "replica", "loadgen", "cli")


def imports_of(module: str) -> set[str]:
    """Top-level names imported by ``codecache/<module>.py``: ``aiohttp``, ``codecache.svn``."""
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text(), f"{module}.py")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(_normalise(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: "from . import x" / "from .x import y"
                base = f"codecache.{node.module}" if node.module else "codecache"
            else:
                base = node.module or ""
            if base == "codecache":
                found.update(f"codecache.{alias.name}" for alias in node.names)
            else:
                found.add(_normalise(base))
    return found


def _normalise(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "codecache" else parts[0]


def all_modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE_DIR.glob("*.py"))


def test_the_core_and_worker_modules_exist() -> None:
    assert set(CORE) | set(WORKERS) | {"cli"} <= set(all_modules())


def test_every_module_has_a_layer() -> None:
    assert set(all_modules()) - {"__init__"} <= set(RANK)


@pytest.mark.parametrize("module", sorted(RANK))
def test_imports_point_only_to_lower_layers(module: str) -> None:
    if not (PACKAGE_DIR / f"{module}.py").exists():
        pytest.skip(f"{module} is not written yet")
    upward = sorted(name for name in imports_of(module)
                    if name.startswith("codecache.")
                    and RANK.get(name.removeprefix("codecache."), 99) >= RANK[module])
    assert upward == [], f"{module} (layer {RANK[module]}) imports {upward}"


def test_the_walk_sees_function_level_imports() -> None:
    # cli imports the HTTP server lazily, inside a function.
    assert "codecache.server" in imports_of("cli")
    assert "argparse" in imports_of("cli")


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_neither_aiohttp_nor_io_edges(module: str) -> None:
    forbidden = {"aiohttp", *(f"codecache.{m}" for m in (*WORKERS, *EDGES))}
    assert imports_of(module) & forbidden == set()


@pytest.mark.parametrize("module", WORKERS)
def test_svn_and_sync_do_not_import_the_http_or_cli_edges(module: str) -> None:
    forbidden = {"aiohttp", *(f"codecache.{m}" for m in EDGES)}
    assert imports_of(module) & forbidden == set()


def test_only_the_http_edges_import_aiohttp() -> None:
    users = {m for m in all_modules() if "aiohttp" in imports_of(m)}
    assert users and users <= {"server", "replica", "loadgen"}


def test_only_cli_parses_argv() -> None:
    users = [m for m in all_modules() if "argparse" in imports_of(m)]
    assert users == ["cli"]


def test_nothing_but_the_entry_point_imports_cli() -> None:
    users = [m for m in all_modules() if "codecache.cli" in imports_of(m)]
    assert users == ["__main__"]
