"""A real site proxy for the tests: the Debian squid on a loopback port.

DESIGN.md §1: pilots often fetch through a squid. Tests read its access log to see what it
did (MISS, HIT, REFRESH_UNMODIFIED).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require
from tests.harness.timing import free_port, poll, wait_for_port


@dataclass
class Squid:
    port: int
    access_log: Path

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self, url: str) -> list[str]:
        """Squid's result codes (e.g. TCP_MEM_HIT/200) for ``url``, oldest first."""
        if not self.access_log.exists():
            return []
        return [line.split()[3] for line in self.access_log.read_text().splitlines()
                if len(line.split()) > 6 and line.split()[6] == url]

    def wait_logged(self, url: str, count: int) -> list[str]:
        """Squid writes its log line after the reply: wait until ``count`` are there."""
        poll(lambda: len(self.log_lines(url)) >= count, 5)   # the caller asserts the count
        return self.log_lines(url)


@contextlib.contextmanager
def running_squid() -> Iterator[Squid]:
    """The Debian squid on a free loopback port, caching in memory; stopped afterwards."""
    binary = require("squid")
    # squid drops root for its own user, which must reach and write this directory: pytest's
    # tmp_path lives below a 0700 directory, so use one of our own directly in /tmp.
    directory = Path(tempfile.mkdtemp(prefix="codecache-squid-"))
    directory.chmod(0o777)
    port = free_port()
    config = directory / "squid.conf"
    config.write_text(f"""\
http_port 127.0.0.1:{port}
pid_filename {directory}/squid.pid
cache_log {directory}/cache.log
access_log stdio:{directory}/access.log squid
cache_store_log none
coredump_dir {directory}
cache_mem 32 MB
maximum_object_size_in_memory 16 MB
http_access allow localhost
http_access deny all
visible_hostname codecache-test
shutdown_lifetime 1 seconds
pinger_enable off
""")
    process = subprocess.Popen([binary, "-N", "-f", str(config)], cwd=directory,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=30)
        yield Squid(port, directory / "access.log")
    finally:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
