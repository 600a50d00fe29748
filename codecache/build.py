"""The one build rule of a release: Subversion ``URL@REV`` → reproducible ``tar.gz``.

Owns the step the origin's sync worker publishes with and ``codecache audit`` checks with,
so the two can never build differently: export ``URL@REV`` (``svn export --ignore-externals
--native-eol LF``, ``TZ=UTC``: ``svn.Svn.export``) into a scratch directory, archive it
with ``tarball.build_tarball`` under the package's prefix with the tag's commit time as
every mtime, and return the archive with its hashes (DESIGN.md §3). Where the archive goes
afterwards (the store, or nowhere) is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from codecache.errors import StoreError
from codecache.signing import blake2b_file
from codecache.svn import Svn
from codecache.tarball import TarballInfo, build_tarball


@dataclass(frozen=True, slots=True)
class Built:
    archive: Path        # the .tar.gz, in the caller's scratch directory
    info: TarballInfo    # sha256 and size of the .tar.gz, sha256 of the uncompressed tar
    prehash: bytes       # BLAKE2b-512 of the .tar.gz (what a minisign signature signs)


def build_release(svn: Svn, url: str, revision: int, prefix: str, date: int,
                  scratch: Path) -> Built:
    """Export ``url@revision`` and archive it as ``prefix/`` dated ``date``, in ``scratch``.

    ``scratch`` is an empty private directory; ``tree`` and ``archive.tar.gz`` are made in it.

    Raises:
        SvnError: Subversion unreachable, or (``SvnNotFound``) no such path or revision.
        UnsupportedFile: the tree holds a device, fifo or socket.
        StoreError: the archive cannot be written (disk full).
    """
    tree = scratch / "tree"
    svn.export(url, revision, tree)
    archive = scratch / "archive.tar.gz"
    try:
        with archive.open("wb") as out:
            info = build_tarball(tree, prefix, date, out)
        with archive.open("rb") as fh:
            prehash = blake2b_file(fh)
    except OSError as err:
        raise StoreError(f"cannot write the tarball of {url}@{revision}: "
                         f"{err.strerror}") from err
    return Built(archive, info, prehash)
