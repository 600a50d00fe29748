"""Real git repositories for tests, written object by object, and ``git daemon`` serving them.

``GitRepo`` writes loose objects (zlib-compressed ``TYPE SIZE\\0DATA`` files under
``objects/``, git's own format, read by the real git) and loose refs, so a repository with
a few commits and tags costs no git process, and any tree can be made: the well-formed
ones ``git`` would make (``tree``: entries in git's order) and crafted ones no porcelain
makes (``raw_tree``: names like ``..`` or ``.git``, duplicates, in the given order).
``served`` runs ``git daemon --export-all`` over a directory on a free loopback port.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.harness.binaries import require
from tests.harness.timing import free_port, scaled, wait_for_port

TREE, FILE, EXECUTABLE, SYMLINK, GITLINK = "040000", "100644", "100755", "120000", "160000"
AUTHOR = "Release Manager <rm@example.org>"
TIME = 1_700_000_000


class GitRepo:
    """A bare repository at ``path`` (created), changed by writing objects and refs."""

    def __init__(self, path: Path) -> None:
        subprocess.run([require("git"), "init", "--quiet", "--bare", str(path)], check=True)
        self.path = path

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def git(self, *args: str, input: bytes | None = None) -> bytes:
        return subprocess.run(["git", *args], cwd=self.path, input=input, check=True,
                              capture_output=True, env=_GIT_ENV).stdout

    def put(self, kind: str, data: bytes) -> str:
        """Write one object; its id."""
        raw = f"{kind} {len(data)}\0".encode() + data
        oid = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
        path = self.path / "objects" / oid[:2] / oid[2:]
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(zlib.compress(raw))
        return oid

    def raw_tree(self, entries: list[tuple[str, bytes, str]]) -> str:
        """A tree of ``(mode, name, object id)`` entries exactly as given (any name, any
        order, repeats): what a crafted repository may hold."""
        return self.put("tree", b"".join(mode.encode() + b" " + name + b"\0" + bytes.fromhex(oid)
                                         for mode, name, oid in entries))

    def tree(self, files: Mapping[str, tuple[str, bytes | str]],
             empty: tuple[str, ...] = ()) -> str:
        """A well-formed tree: ``files`` maps a path to (mode, content) (a symlink's
        content is its target, a gitlink's the commit id); ``empty`` are empty
        directories."""
        nested: dict[str, object] = {}
        for directory in empty:
            _place(nested, directory.split("/"), {})
        for path, (mode, content) in files.items():
            _place(nested, path.split("/"), (mode, content))
        return self._write_tree(nested)

    def _write_tree(self, nested: Mapping[str, object]) -> str:
        entries = []
        for name, value in nested.items():
            if isinstance(value, dict):
                entries.append((TREE, name.encode(), self._write_tree(value)))
                continue
            mode, content = value  # type: ignore[misc]
            oid = content if mode == GITLINK else self.put(
                "blob", content if isinstance(content, bytes) else content.encode())
            entries.append((mode, name.encode(), oid))
        # git's order: by name, a tree's name compared as if it ended with '/'
        entries.sort(key=lambda e: e[1] + (b"/" if e[0] == TREE else b""))
        return self.raw_tree(entries)

    def commit(self, tree: str, parents: tuple[str, ...] = (), *, time: int = TIME,
               author: str = AUTHOR, committer: str = AUTHOR, message: str = "commit",
               author_time: int | None = None) -> str:
        lines = [f"tree {tree}", *(f"parent {p}" for p in parents),
                 f"author {author} {author_time or time} +0200",
                 f"committer {committer} {time} -0500", "", message, ""]
        return self.put("commit", "\n".join(lines).encode())

    def tag(self, name: str, target: str, *, annotated: bool = False, kind: str = "commit",
            time: int = TIME) -> str:
        """Point ``refs/tags/NAME`` at ``target`` (through a tag object if ``annotated``);
        the tag's own id."""
        if annotated:
            target = self.put("tag", f"object {target}\ntype {kind}\ntag {name}\n"
                                     f"tagger {AUTHOR} {time} +0000\n\ntag {name}\n".encode())
        ref = self.path / "refs" / "tags" / name
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(f"{target}\n")
        return target

    def delete_tag(self, name: str) -> None:
        (self.path / "refs" / "tags" / name).unlink()

    def branch(self, name: str, commit: str) -> None:
        (self.path / "refs" / "heads" / name).write_text(f"{commit}\n")


def _place(nested: dict[str, object], parts: list[str], value: object) -> None:
    for part in parts[:-1]:
        nested = nested.setdefault(part, {})  # type: ignore[assignment]
    if parts[-1] not in nested:
        nested[parts[-1]] = value


# git run by tests: no user or system config of the machine running them.
_GIT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null", "LC_ALL": "C"}


@contextlib.contextmanager
def served(base: Path, *, v0_only: bool = False) -> Iterator[str]:
    """``git daemon --export-all`` over ``base`` on a free loopback port: the URL prefix
    (``git://127.0.0.1:PORT``; a repository ``base/NAME`` is ``PREFIX/NAME``).

    ``v0_only``: the daemon's ``upload-pack`` never hears the client ask for protocol v2
    (a ``git`` first on the daemon's PATH unsets ``GIT_PROTOCOL``), as a server before git
    2.18 or with v2 off: it then refuses any commit that no ref points to, where v2 hands
    out any object it has. The daemon runs as ``git-daemon`` itself there: started as
    ``git daemon`` it would find git's own directory first on its PATH.
    """
    env, daemon = dict(_GIT_ENV), [require("git"), "daemon"]
    if v0_only:
        shim = base.parent / f"{base.name}-v0-shim"
        shim.mkdir(exist_ok=True)
        (shim / "git").write_text(f'#!/bin/sh\nunset GIT_PROTOCOL\nexec {require("git")} "$@"\n')
        (shim / "git").chmod(0o755)
        env["PATH"] = f"{shim}:{env['PATH']}"
        exec_path = subprocess.run([require("git"), "--exec-path"], capture_output=True,
                                   text=True, check=True).stdout.strip()
        daemon = [f"{exec_path}/git-daemon"]
    port = free_port()
    process = subprocess.Popen(
        [*daemon, "--export-all", "--reuseaddr", "--informative-errors",
         f"--base-path={base}", "--listen=127.0.0.1", f"--port={port}"],
        env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"git://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=scaled(10))
