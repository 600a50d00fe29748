"""Dependencies point one way (STYLE.md): the folders are the architecture.

An ast walk over every ``codecache/**/*.py`` file (function-level imports included). Every
package has a rank and may import only from packages of a strictly lower rank, or from its
own package; inside a package every module has a rank of its own and may import only
modules ranked before it. So ``core -> store`` fails here, and so does ``web -> replica``;
a new package or module must be given its rank.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "codecache"

# Packages, lower first. Packages on one line are peers: neither imports the other.
PACKAGES: tuple[tuple[str, ...], ...] = (
    ("core",),               # pure: names, config, keys, signing, tarball, index, history, trust
    ("telemetry",),          # logs, metrics, the service manager's notify
    ("store",),              # files on disk: blobs, the signed index, history, state
    ("upstream",),           # the one HTTP client that talks to an upstream
    # The writer (sources, build, sync, audit); the puller; the HTTP answers; check; the
    # load generator: peers, none imports another.
    ("origin", "replica", "web", "ops", "load"),
    ("node",),               # a server's processes, handed the pull loop
    ("cli",),                # argv to verbs, errors to exit codes
)
# Modules inside a package, lower first; a module not listed ranks after those listed.
MODULES: dict[str, tuple[tuple[str, ...], ...]] = {
    "core": (("errors",), ("keyfiles",),
             ("names", "signing", "tarball", "config_schema", "config_values", "pin"),
             ("config_sites", "config_git"), ("config", "index"), ("history", "verify"),
             ("history_parse",),
             ("trust",), ("readiness",)),
    "telemetry": (("metrics", "notify"), ("logs",)),
    "store": (("files",), ("state", "edgestats", "edgedisk", "edgeverified"), ("edgerecover",),
              ("edgecache",), ("store",), ("trusted",)),
    "origin": (("sources.base", "sources.pysvn_worker", "ahead"),
               ("sources.svn_access", "sources.git_access", "sources.git_tree"),
               ("sources.svn_cli", "sources.pysvn", "sources.git"), ("sources.svn",),
               ("sources.chooser",),
               ("build", "audit_git"),
               ("signer",), ("writer",), ("syncer", "audit"), ("service",), ("sync",)),
    "replica": (("history_mirror", "fetcher", "record", "held", "edgekeep"),
                ("puller", "edgefill")),
    "web": (("conditional", "cachealign", "sites"), ("catalog", "statuspage", "headers"),
            ("blobcache",), ("edgeblobs",), ("storeview",), ("redirect",), ("fastpath",),
            ("respond",), ("front",),
            ("connection",), ("server",)),
    "ops": (("check", "nginx_sites"), ("nginx",), ("targets",), ("probe",), ("local",)),
    "load": (("loadstats", "profile"), ("targets",), ("request",), ("loadgen",), ("loadpool",)),
    "node": (("pull", "fill"), ("supervisor",), ("worker",)),
    # Exit codes and what verbs share; one module per verb group (peers); the parser that
    # names them; the entry point.
    "cli": (("common", "fetch"),
            ("store_verbs", "serve", "check", "history", "keys", "loadgen", "audit"),
            ("parser",), ("main",)),
}
PACKAGE_RANK = {p: rank for rank, line in enumerate(PACKAGES) for p in line}
TOP_LEVEL = {"__init__", "__main__"}  # the package's face; __main__ may import cli


def module_path(module: str) -> Path:
    """``web.server`` -> ``codecache/web/server.py``."""
    return PACKAGE_DIR.joinpath(*module.split(".")).with_suffix(".py")


def all_modules() -> list[str]:
    return sorted(
        ".".join(p.relative_to(PACKAGE_DIR).with_suffix("").parts)
        for p in PACKAGE_DIR.rglob("*.py")
        if p.stem != "__init__" or p.parent == PACKAGE_DIR
    )


def _module_of(name: str) -> str:
    """The codecache module an import names, without ``codecache.``:
    ``codecache.web.server.serve`` -> ``web.server``; ``codecache.web`` -> ``web``."""
    parts = name.split(".")[1:]
    for depth in range(len(parts), 0, -1):
        candidate = ".".join(parts[:depth])
        if module_path(candidate).exists() or (PACKAGE_DIR / Path(*parts[:depth])).is_dir():
            return candidate
    return ""  # a name of codecache/__init__ (__version__): the package's face


def _normalise(name: str) -> str:
    parts = name.split(".")
    if parts[0] != "codecache":
        return parts[0]
    inner = _module_of(name)
    return f"codecache.{inner}" if inner else "codecache"


def _imports(module: str, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(module_path(module).read_text(), f"{module}.py")
    package = "codecache." + module.rpartition(".")[0] if "." in module else "codecache"
    package = package.rstrip(".")
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(_normalise(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: "from . import x" / "from .x import y"
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            if base.startswith("codecache"):
                # "from codecache.web import server": the module server, or a name of the
                # package's __init__, which is the package itself.
                found.update(_normalise(f"{base}.{alias.name}") for alias in node.names)
            else:
                found.add(_normalise(base))
    return found


def imports_of(module: str) -> set[str]:
    """Names imported by a module: ``aiohttp``, ``codecache.core.errors``, ``codecache.web``."""
    return _imports(module, top_level_only=False)


def module_level_imports_of(module: str) -> set[str]:
    """Like ``imports_of``, but only the imports run when the module is imported: none
    inside a function (``if TYPE_CHECKING:`` blocks are not run either)."""
    return _imports(module, top_level_only=True)


def rank_of(module: str) -> tuple[int, int]:
    """(package rank, module rank inside the package)."""
    package, _, name = module.partition(".")
    inner = MODULES.get(package, ())
    ranks = {m: r for r, line in enumerate(inner) for m in line}
    return PACKAGE_RANK[package], ranks.get(name, len(inner))


def may_import(importer: str, imported: str) -> bool:
    if importer in TOP_LEVEL or imported in ("", "codecache"):  # __init__: the version
        return True
    if imported in PACKAGE_RANK:  # the package itself: its __init__
        return PACKAGE_RANK[imported] < PACKAGE_RANK[importer.partition(".")[0]] or \
            imported == importer.partition(".")[0]
    mine, theirs = rank_of(importer), rank_of(imported)
    if importer.partition(".")[0] == imported.partition(".")[0]:
        return theirs[1] < mine[1]
    return theirs[0] < mine[0]


def test_every_package_has_a_rank_and_the_top_level_is_only_the_face() -> None:
    packages = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(PACKAGE_RANK)
    assert {m for m in all_modules() if "." not in m} == TOP_LEVEL


def test_every_ranked_module_exists() -> None:
    listed = {f"{p}.{m}" for p, lines in MODULES.items() for line in lines for m in line}
    assert listed <= set(all_modules())


@pytest.mark.parametrize("module", sorted(set(all_modules()) - TOP_LEVEL))
def test_imports_point_only_downward(module: str) -> None:
    wrong = sorted(name for name in imports_of(module)
                   if name.startswith("codecache.")
                   and not may_import(module, name.removeprefix("codecache.")))
    assert wrong == [], f"{module} (rank {rank_of(module)}) imports {wrong}"


def test_the_rule_refuses_an_upward_import() -> None:
    assert not may_import("core.index", "store.store")
    assert not may_import("web.server", "replica.puller")
    assert not may_import("origin.sync", "replica.puller")  # peers
    assert not may_import("core.errors", "core.index")      # inside a package: ranked too
    assert may_import("node.worker", "replica.puller")


def test_the_walk_sees_function_level_imports() -> None:
    # cli imports each verb's implementation lazily, inside the verb's function; the
    # ranks above still hold for those imports.
    assert "codecache.node.supervisor" in imports_of("cli.serve")
    assert "codecache.origin.sync" in imports_of("cli.store_verbs")
    assert "argparse" in imports_of("cli.parser")
    assert "codecache.origin.sync" not in module_level_imports_of("cli.store_verbs")


def startup_imports(module: str) -> set[str]:
    """What importing ``module`` runs: its module-level imports and, for those inside
    codecache, theirs, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in module_level_imports_of(todo.pop()):
            if name not in seen:
                seen.add(name)
                inner = name.removeprefix("codecache.")
                if name.startswith("codecache.") and module_path(inner).exists():
                    todo.append(inner)
    return seen


def test_cli_imports_no_verb_implementation_when_it_starts() -> None:
    # `codecache serve`'s parent and short verbs load only what parsing argv needs: none of
    # aiohttp, cryptography (signing), prometheus_client, the store, svn or sync. The parser
    # names every verb module, so what they import at module level counts too.
    found = startup_imports("cli.main")
    assert {m for m in found if m.startswith("codecache.") and not m.startswith("codecache.cli.")
            } <= {"codecache", "codecache.core.config", "codecache.core.config_schema",
                  "codecache.core.config_sites", "codecache.core.config_values",
                  "codecache.core.config_git", "codecache.core.errors", "codecache.core.names",
                  "codecache.telemetry.logs"}
    assert {"codecache.cli.parser", "codecache.cli.serve"} <= found  # the walk follows them
    assert found.isdisjoint({"aiohttp", "cryptography", "prometheus_client"})
    # logs batches serve's access lines on the event loop it is handed, without asyncio.
    assert module_level_imports_of("telemetry.logs").isdisjoint({"asyncio", "aiohttp"})


def test_the_parent_of_workers_loads_no_serving_code_nor_cryptography() -> None:
    # `codecache serve`'s parent supervises and serves nothing: no event loop, no HTTP, no
    # signing (it checks the trusted keys as text with keyfiles).
    found = module_level_imports_of("node.supervisor")
    assert {m for m in found if m.startswith("codecache.")} <= {
        "codecache.core.config", "codecache.core.errors", "codecache.core.keyfiles",
        "codecache.telemetry.notify", "codecache.core.config_sites",
        "codecache.core.config_git"}
    assert found.isdisjoint({"asyncio", "aiohttp", "cryptography", "prometheus_client"})
    assert "cryptography" not in imports_of("core.keyfiles")


@pytest.mark.parametrize("module", [m for m in all_modules() if m.startswith("core.")])
def test_core_modules_import_no_io_library(module: str) -> None:
    assert imports_of(module).isdisjoint({"aiohttp", "aiofiles", "prometheus_client",
                                          "urllib", "http", "subprocess", "socket"})


@pytest.mark.parametrize("module", [m for m in all_modules() if m.startswith("origin.")])
def test_the_origin_imports_neither_aiohttp_nor_the_http_edges(module: str) -> None:
    assert "aiohttp" not in imports_of(module)
    assert not {m for m in imports_of(module)
                if m.startswith(("codecache.web", "codecache.replica", "codecache.cli"))}


def test_only_the_http_edges_import_aiohttp() -> None:
    users = {m for m in all_modules() if "aiohttp" in imports_of(m)}
    assert users and all(m.startswith(("web.", "replica.", "upstream.", "load.")) for m in users)


def test_only_cli_parses_argv() -> None:
    users = [m for m in all_modules() if "argparse" in imports_of(m)]
    assert users and all(m.startswith("cli.") for m in users)


def test_nothing_but_the_entry_point_imports_cli() -> None:
    users = [m for m in all_modules() if any(i.startswith("codecache.cli") for i in imports_of(m))
             and not m.startswith("cli.")]
    assert users == ["__main__"]
