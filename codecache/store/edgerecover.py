"""The edge cache after a kill -9: what a dead process left, removed by the next to open it.

Owns the recovery run whenever a process opens the edge cache (``EdgeCache``), under its
init lock: scratch files of fills whose process is dead are never served, so they go; a
blob file renamed into the cache's tree but never recorded (killed between the two) is
found only by comparing the tree with the database, which is safe only while no other
process is filling: the first to open the cache after all others are gone (it gets
``locks/open`` exclusively) does it, then shares the lock like the others. Also the
liveness test of the processes that share the cache.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from codecache.store.edgedisk import Blobs

log = logging.getLogger("codecache.edge")


def recover(blobs: Blobs, tmp_dir: Path, lock_dir: Path) -> int:
    """What a killed process left (a kill -9 during fills) removed; returns the descriptor
    of ``locks/open``, held shared while the caller's handle is open (its to close)."""
    fd = os.open(lock_dir / "open", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        for leftover in tmp_dir.iterdir():
            pid = leftover.name.split(".", 1)[0]
            if alone or not pid.isdigit() or not alive(int(pid)):
                leftover.unlink(missing_ok=True)
        if alone:
            _remove_orphans(blobs)
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_orphans(blobs: Blobs) -> None:
    """Blob files in the cache's tree that its database does not name."""
    named = {filename for _, filename in blobs.held()}
    tree = Path(blobs.directory)
    for path in tree.glob("*/*/*.val"):
        if str(path.relative_to(tree)) not in named:
            log.warning("edge cache: removing %s, a fill's file never recorded", path)
            path.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` may still write (a zombie, killed and never reaped because
    its parent died with it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:   # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
