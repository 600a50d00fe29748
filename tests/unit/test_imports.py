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
    ("errors", "web.conditional", "web.cachealign", "metrics", "notify",  # no codecache
     "loadstats",                                                          # imports
     "pysvn_worker"),                                 # (run as a script by the system Python)
    ("keyfiles",),                                    # public key files as text (no cryptography)
    ("names", "signing", "tarball"),
    ("config", "index"),
    ("history",),                                     # the release history chain (pure)
    ("trust", "logs"),                                # the trust decision (pure); log output
    ("store", "readiness", "web.catalog", "web.statuspage",
     "web.headers"),                                  # what every response carries
    ("check",),                                       # check's judgement of facts (pure)
    ("web.blobcache", "svn", "history_mirror"),       # ...; a replica's history (no I/O)
    ("build",),                                       # the one build rule: svn URL@REV -> tar.gz
    ("web.storeview", "sync", "audit"),               # a server's view; the origin's writer;
                                                      # rebuild and compare (audit)
    ("replica", "loadgen", "probe"),                  # HTTP clients: pull loop, load, check
    ("web.fastpath",),                                # answers beside aiohttp's handling
    ("web.server", "loadpool"),                       # one server process; loadgen processes
    ("web.supervisor",),                              # the server's processes, the pull loop
    ("web.worker",),                                  # a worker process's entry point
    ("cli",),
    ("__main__",),
)
RANK = {module: rank for rank, layer in enumerate(LAYERS) for module in layer}
CORE = ("errors", "config", "names", "keyfiles", "signing", "tarball", "index", "history",
        "trust", "store", "readiness", "metrics", "check")
# The HTTP-facing side lives in codecache/web/; its server, the answers written beside
# aiohttp's handling (fastpath, headers) and storeview touch aiohttp.
WEB = ("web.conditional", "web.cachealign", "web.catalog", "web.blobcache", "web.statuspage",
       "web.headers", "web.storeview", "web.fastpath", "web.server", "web.supervisor",
       "web.worker")
WORKERS = ("svn", "build", "sync", "audit")
EDGES = ("web.server", "replica", "loadgen", "cli")


def module_path(module: str) -> Path:
    """``web.server`` -> ``codecache/web/server.py``."""
    return PACKAGE_DIR.joinpath(*module.split(".")).with_suffix(".py")


def imports_of(module: str) -> set[str]:
    """Names imported by a module: ``aiohttp``, ``codecache.svn``, ``codecache.web.server``."""
    tree = ast.parse(module_path(module).read_text(), f"{module}.py")
    package = "codecache." + module.rpartition(".")[0] if "." in module else "codecache"
    package = package.rstrip(".")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(_normalise(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: "from . import x" / "from .x import y"
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            if base in ("codecache", "codecache.web"):
                # "from codecache import x": module x, or a name of the package's __init__
                # (e.g. __version__), which is the package itself.
                found.update(_normalise(f"{base}.{alias.name}") if _is_module(base, alias.name)
                             else base for alias in node.names)
            else:
                found.add(_normalise(base))
    return found


def _is_module(package: str, name: str) -> bool:
    inner = package.removeprefix("codecache").strip(".")
    return module_path(f"{inner}.{name}" if inner else name).exists() or \
        (PACKAGE_DIR / inner / name).is_dir()


def _normalise(name: str) -> str:
    """The module an import names: ``codecache.web.server.serve`` -> ``codecache.web.server``."""
    parts = name.split(".")
    if parts[0] != "codecache":
        return parts[0]
    depth = 3 if len(parts) > 2 and parts[1] == "web" else 2
    return ".".join(parts[:depth])


def all_modules() -> list[str]:
    return sorted(
        ".".join(p.relative_to(PACKAGE_DIR).with_suffix("").parts)
        for p in PACKAGE_DIR.rglob("*.py")
        if p.stem != "__init__"
    )


def test_the_core_and_worker_modules_exist() -> None:
    assert set(CORE) | set(WEB) | set(WORKERS) | {"cli"} <= set(all_modules())


def test_every_module_has_a_layer() -> None:
    assert set(all_modules()) <= set(RANK)


@pytest.mark.parametrize("module", sorted(RANK))
def test_imports_point_only_to_lower_layers(module: str) -> None:
    if not module_path(module).exists():
        pytest.skip(f"{module} is not written yet")
    upward = sorted(name for name in imports_of(module)
                    if name.startswith("codecache.")
                    and RANK.get(name.removeprefix("codecache."), 99) >= RANK[module])
    assert upward == [], f"{module} (layer {RANK[module]}) imports {upward}"


def module_level_imports_of(module: str) -> set[str]:
    """Like ``imports_of``, but only the imports run when the module is imported: none
    inside a function (``if TYPE_CHECKING:`` blocks are not run either)."""
    tree = ast.parse(module_path(module).read_text(), f"{module}.py")
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(_normalise(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(_normalise(node.module or ""))
    return found


def test_the_walk_sees_function_level_imports() -> None:
    # cli imports each verb's implementation lazily, inside the verb's function; the
    # ranks above still hold for those imports.
    assert "codecache.web.supervisor" in imports_of("cli")
    assert "codecache.sync" in imports_of("cli")
    assert "argparse" in imports_of("cli")
    assert "codecache.sync" not in module_level_imports_of("cli")


def test_cli_imports_no_verb_implementation_when_it_starts() -> None:
    # `codecache serve`'s parent and short verbs load only what parsing argv needs: none of
    # aiohttp, cryptography (signing), prometheus_client, the store, svn or sync.
    found = module_level_imports_of("cli")
    assert {m for m in found if m.startswith("codecache.")} <= {
        "codecache.config", "codecache.errors", "codecache.logs"}
    assert found.isdisjoint({"aiohttp", "cryptography", "prometheus_client"})
    # logs batches serve's access lines on the event loop it is handed, without asyncio.
    assert module_level_imports_of("logs").isdisjoint({"asyncio", "aiohttp"})



def test_the_parent_of_workers_loads_no_serving_code_nor_cryptography() -> None:
    # `codecache serve`'s parent supervises and serves nothing: no event loop, no HTTP, no
    # signing (it checks the trusted keys as text with keyfiles).
    found = module_level_imports_of("web.supervisor")
    assert {m for m in found if m.startswith("codecache.")} <= {
        "codecache.config", "codecache.errors", "codecache.keyfiles", "codecache.notify"}
    assert found.isdisjoint({"asyncio", "aiohttp", "cryptography", "prometheus_client"})
    assert "cryptography" not in imports_of("keyfiles")


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
    assert users and users <= {"web.server", "web.fastpath", "web.headers", "web.storeview",
                               "replica", "loadgen"}


def test_only_cli_parses_argv() -> None:
    users = [m for m in all_modules() if "argparse" in imports_of(m)]
    assert users == ["cli"]


def test_nothing_but_the_entry_point_imports_cli() -> None:
    users = [m for m in all_modules() if "codecache.cli" in imports_of(m)]
    assert users == ["__main__"]
