"""Generate a deterministic bare git repository for measuring git sources (docs/gitclients.md).

    .venv/bin/python scripts/gitrepo.py DEST.git [--files 2000] [--commits 2000] [--tags 500]
                                        [--annotated 0.7] [--seed 20] [--no-repack]

Writes one ``git fast-import`` stream (one process, no ``git commit`` per commit), so 2,000
commits and 500 tags build in seconds. The first commit adds ``--files`` text files of 0.5 to
20 KB spread a few directories deep, a few of them executable (100755), one symlink (120000)
and one file whose name holds a space and UTF-8; every later commit edits one to four files
(a few lines each, and now and then adds a file) so packs delta as a real history does.
``--tags`` tags are spread evenly over the history, the last one on the tip, named ``1.M.N``;
a share ``--annotated`` of them are annotated tags, the rest lightweight.

Deterministic: the same arguments give the same commit and tag ids on any machine (a seeded
``random.Random``, author/committer/tagger dates fixed in the stream, which is what
``GIT_AUTHOR_DATE``/``GIT_COMMITTER_DATE`` would fix for ``git commit``). The repository is
repacked (``git repack -a -d``) unless ``--no-repack``, as a served repository would be.

Prints one line: the path, counts, the tip commit id and the seconds it took. Reuse from Python
with ``build(dest, Shape(...)) -> Built`` (``Built.tags`` maps tag name to its commit id).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

#: Second of the first commit (2023-11-14); each later commit is one hour after the previous.
EPOCH = 1_700_000_000
AUTHOR = b"Release Manager <rm@example.invalid>"
BRANCH = "main"
_WORDS = ("pilot", "wrapper", "queue", "job", "payload", "site", "proxy", "token", "retry",
          "stage", "output", "input", "cvmfs", "tarball", "signal", "timeout", "worker",
          "batch", "log", "event", "release", "channel", "checksum", "cache", "origin")


@dataclass(frozen=True)
class Shape:
    """What to generate: sizes, counts and the seed."""

    files: int = 2000
    commits: int = 2000
    tags: int = 500
    annotated: float = 0.7
    seed: int = 20
    repack: bool = True


@dataclass(frozen=True)
class Built:
    """What was generated: the tip commit and every tag's peeled commit id."""

    path: Path
    head: str
    tags: dict[str, str] = field(default_factory=dict)
    annotated: frozenset[str] = frozenset()


def _text(rng: random.Random, size: int) -> bytes:
    """About ``size`` bytes of line-oriented text (code-like, compresses like code)."""
    lines: list[str] = []
    total = 0
    while total < size:
        words = rng.choices(_WORDS, k=rng.randint(2, 10))
        line = "    " * rng.randint(0, 3) + " ".join(words) + f" = {rng.randint(0, 9999)}"
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()


def _size(rng: random.Random) -> int:
    """0.5 to 20 KB, log-uniform: many small files, some large, as in a pilot's tree."""
    return int(512 * (40 ** rng.random()))


def _paths(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct file paths zero to three directories deep."""
    paths = ["README.md", "pilot/launch.sh"]  # fixed names a reader can look for
    while len(paths) < count:
        depth = rng.randint(0, 3)
        parts = [f"{('pkg', 'lib', 'util', 'plugins')[rng.randrange(4)]}{rng.randrange(6)}"
                 for _ in range(depth)]
        suffix = ".sh" if rng.random() < 0.02 else (".py", ".txt", ".cfg")[rng.randrange(3)]
        path = "/".join([*parts, f"mod_{len(paths):04d}{suffix}"])
        paths.append(path)
    paths[-1] = "docs/read me \u00fc.txt"  # a space and UTF-8: quoting must not matter
    return paths


def _data(out: IO[bytes], payload: bytes) -> None:
    out.write(b"data %d\n" % len(payload))
    out.write(payload)
    out.write(b"\n")


def _edit(rng: random.Random, old: bytes) -> bytes:
    """Change a few lines of ``old`` (a realistic small diff, so packs delta)."""
    lines = old.split(b"\n")
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(lines))
        lines[at] = _text(rng, 40).rstrip(b"\n").split(b"\n")[0]
    return b"\n".join(lines)


def _stream(out: IO[bytes], shape: Shape) -> tuple[dict[str, int], frozenset[str]]:
    """Write the fast-import stream; return tag name -> commit mark and the annotated names."""
    rng = random.Random(shape.seed)  # noqa: S311 - reproducible test data, not secrets
    paths = _paths(rng, shape.files)
    content = {p: _text(rng, _size(rng)) for p in paths}
    executable = {p for p in paths if p.endswith(".sh")}
    tag_at = {round((k + 1) * shape.commits / shape.tags) - 1: k for k in range(shape.tags)}
    tags: dict[str, int] = {}
    annotated: set[str] = set()
    for i in range(shape.commits):
        when = b"%d +0000" % (EPOCH + 3600 * i)
        out.write(b"commit refs/heads/%s\nmark :%d\n" % (BRANCH.encode(), i + 1))
        out.write(b"author %s %s\ncommitter %s %s\n" % (AUTHOR, when, AUTHOR, when))
        if i == 0:
            _data(out, b"Initial import\n")
            touched = paths
            out.write(b"M 120000 inline pilot/current\n")
            _data(out, b"launch.sh")
        else:
            touched = rng.sample(paths, rng.randint(1, 4))
            if rng.random() < 0.05:
                new = f"pkg{rng.randrange(6)}/added_{i:05d}.py"
                paths.append(new)
                content[new] = b""
                touched.append(new)
            for path in touched:
                content[path] = _edit(rng, content[path]) if content[path] else _text(rng, 800)
            _data(out, f"Change {i}: {', '.join(touched)}\n".encode())
            out.write(b"from :%d\n" % i)
        for path in touched:
            mode = b"100755" if path in executable else b"100644"
            out.write(b"M %s inline %s\n" % (mode, path.encode()))
            _data(out, content[path])
        out.write(b"\n")
        if i in tag_at:
            k = tag_at[i]
            name = f"1.{k // 100}.{k % 100}"
            tags[name] = i + 1
            if rng.random() < shape.annotated:
                annotated.add(name)
                out.write(b"tag %s\nfrom :%d\ntagger %s %s\n" % (name.encode(), i + 1,
                                                                  AUTHOR, when))
                _data(out, f"Release {name}\n".encode())
            else:
                out.write(b"reset refs/tags/%s\nfrom :%d\n\n" % (name.encode(), i + 1))
    return tags, frozenset(annotated)


def build(dest: Path, shape: Shape) -> Built:
    """Create the bare repository ``dest`` (must not exist) shaped as ``shape``.

    Raises:
        FileExistsError: ``dest`` exists.
        subprocess.CalledProcessError: a git step failed.
    """
    if dest.exists():
        raise FileExistsError(dest)
    git = ["git", "-c", "init.defaultBranch=" + BRANCH]
    subprocess.run([*git, "init", "-q", "--bare", str(dest)], check=True)
    marks = dest / "fast-import.marks"
    with subprocess.Popen([*git, "-C", str(dest), "fast-import", "--quiet",
                           f"--export-marks={marks}"], stdin=subprocess.PIPE) as proc:
        assert proc.stdin is not None  # noqa: S101 - Popen with stdin=PIPE always sets it
        tag_marks, annotated = _stream(proc.stdin, shape)
        proc.stdin.close()
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, "git fast-import")
    by_mark = dict(line.split(" ") for line in marks.read_text().splitlines())
    marks.unlink()
    if shape.repack:
        subprocess.run([*git, "-C", str(dest), "repack", "-a", "-d", "-q"], check=True)
    head = by_mark[f":{shape.commits}"]
    return Built(dest, head, {t: by_mark[f":{m}"] for t, m in tag_marks.items()}, annotated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--files", type=int, default=Shape.files)
    parser.add_argument("--commits", type=int, default=Shape.commits)
    parser.add_argument("--tags", type=int, default=Shape.tags)
    parser.add_argument("--annotated", type=float, default=Shape.annotated)
    parser.add_argument("--seed", type=int, default=Shape.seed)
    parser.add_argument("--no-repack", dest="repack", action="store_false")
    args = parser.parse_args()
    if not 0 < args.tags <= args.commits:
        parser.error("need 0 < --tags <= --commits")
    started = time.monotonic()
    built = build(args.dest, Shape(args.files, args.commits, args.tags, args.annotated,
                                   args.seed, args.repack))
    print(f"{built.path}: {args.files} files, {args.commits} commits, {len(built.tags)} tags "
          f"({len(built.annotated)} annotated), tip {built.head}, "
          f"{time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
