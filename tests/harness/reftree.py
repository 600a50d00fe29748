"""The reference tree of DESIGN.md §3 (docs/sources.md, "Reference tree"): one small tree
whose archive's ``tar_sha256`` and ``sha256`` are fixed constants, built from a directory
(what a Subversion export gives) and from a git commit to the same bytes.

It holds what the archive rules must get right: byte order of sibling names (``lib``,
``lib-extra``, ``lib.cfg``, ``lib/...``), an empty directory, an executable, symlinks (one
leaving its directory), a name with a space and UTF-8, a path past 100 bytes (a PAX record),
CRLF and binary bytes kept as they are, and a ``.gitattributes`` that asks git for
``eol``/``export-ignore``/``export-subst``, which the archive ignores (an ordinary file).
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "ref"
MTIME = 1_700_000_000    # the commit time: every entry's mtime
# The archive of the tree, as docs/sources.md gives it.
TAR_SHA256 = "49892bd0eb5a17b045744a8f503d0832e1a221c6e316f3c6e180abffee260c1f"
SHA256 = "d71558a0b27becb2358b6b13c01f0f10c4ff9b29a39dd722248e96c526aa71a6"

FILE, EXECUTABLE, SYMLINK = "file", "executable", "symlink"

# path -> (kind, bytes: a file's content or a symlink's target)
ENTRIES: dict[str, tuple[str, bytes]] = {
    ".gitattributes": (FILE, b"crlf.txt eol=crlf\n*.bin export-ignore\n"
                             b"README export-subst\n"),
    "README": (FILE, b"reference tree $Format:%H$\n"),
    "bin/run pilot.sh": (EXECUTABLE, b"#!/bin/sh\nexec python3 \"$@\"\n"),
    "caf\u00e9/na\u00efve r\u00e9sum\u00e9.txt": (FILE, "UTF-8 \u00e9\n".encode()),
    "crlf.txt": (FILE, b"line one\r\nline two\r\n"),
    "data.bin": (FILE, bytes(range(256)) * 3),
    "deep/" + "d" * 60 + "/" + "f" * 80 + ".txt": (FILE, b"a path past 100 bytes\n"),
    "lib-extra/x.py": (FILE, b"X = 1\n"),
    "lib.cfg": (FILE, b"[lib]\n"),
    "lib/pilot/__init__.py": (FILE, b""),
    "lib/pilot/up": (SYMLINK, b"../.."),
    "run": (SYMLINK, b"bin/run pilot.sh"),
}
EMPTY_DIRECTORIES = ("empty",)


def write_directory(root: Path) -> Path:
    """The reference tree as files on disk below ``root`` (created)."""
    root.mkdir(parents=True)
    for directory in EMPTY_DIRECTORIES:
        (root / directory).mkdir()
    for relative, (kind, data) in ENTRIES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == SYMLINK:
            path.symlink_to(os.fsdecode(data))
        else:
            path.write_bytes(data)
            path.chmod(0o755 if kind == EXECUTABLE else 0o644)
    return root
