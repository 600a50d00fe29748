"""A real Subversion repository behind a real svnserve on a free loopback port.

Used by the tests' ``svn_server`` fixture and by ``scripts/bench.py``.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.harness.binaries import require
from tests.harness.timing import free_port, scaled, wait_for_port


@contextlib.contextmanager
def served_repository(repo: Path, *, anon_access: str, user: str,
                      password: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``svnadmin create`` a repository and serve it with svnserve on a free loopback port.

    Yields the repository root URL and the svnserve process; stops it afterwards.
    """
    subprocess.run([require("svnadmin"), "create", str(repo)], check=True)
    (repo / "conf" / "svnserve.conf").write_text(
        f"[general]\nanon-access = {anon_access}\nauth-access = write\npassword-db = passwd\n")
    (repo / "conf" / "passwd").write_text(f"[users]\n{user} = {password}\n")
    port = free_port()
    process = subprocess.Popen(
        [require("svnserve"), "--daemon", "--foreground", "--listen-host", "127.0.0.1",
         "--listen-port", str(port), "--root", str(repo)])
    try:
        wait_for_port(port)
        yield f"svn://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=scaled(10))
