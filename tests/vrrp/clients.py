"""Pilots on the LAN: real ``wget`` and ``curl`` downloading through the VIP, retrying.

Each client runs in the LAN namespace, writes to its own file and is judged by the sha256
of what it wrote against the signed index, so a download that "succeeded" with the wrong
bytes (a truncated body, a mangled resume) is caught as surely as one that failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import require
from tests.harness.timing import scaled
from tests.vrrp.netns import Lan

_names = itertools.count()

# How the test's pilots retry, as pilot scripts do: wget's default 20 tries with a short
# pause, a dead peer noticed within 2 s (connect and read timeouts), refused connections
# retried too (a node whose nginx died still holds the VIP for ~2 s and refuses).
WGET_RETRY = ("--tries=20", "--waitretry=1", "--retry-connrefused", "--timeout=2")
CURL_RETRY = ("--retry", "20", "--retry-all-errors", "--retry-delay", "1",
              "--connect-timeout", "2", "--speed-limit", "1", "--speed-time", "2",
              "--max-time", "40")


@dataclass
class Download:
    tool: str
    url: str
    started: float
    ended: float = 0.0
    returncode: int | None = None
    sha256: str = ""
    output: str = ""

    @property
    def retried(self) -> bool:
        """The client's own output shows it had to try again."""
        return "Retrying" in self.output or "Will retry" in self.output


def fetch(lan: Lan, tool: str, url: str, target: Path, *extra: str) -> Download:
    """Download ``url`` once with ``tool`` (retrying as configured) in the LAN namespace."""
    if tool == "wget":
        argv = [require("wget"), "--no-config", "--progress=dot:mega", *WGET_RETRY, *extra,
                "-O", str(target), url]
    else:
        argv = [require("curl"), "-fS", "--no-progress-meter", *CURL_RETRY, *extra,
                "-o", str(target), url]
    download = Download(tool, url, time.monotonic())
    result = lan.run(lan.ns, *argv, timeout=60)
    download.ended = time.monotonic()
    download.returncode = result.returncode
    download.output = result.stdout + result.stderr
    if target.exists():
        download.sha256 = hashlib.sha256(target.read_bytes()).hexdigest()
        target.unlink()
    return download


@dataclass
class Stream:
    """Clients downloading in a loop, each right after the last, until ``stop()``."""

    lan: Lan
    workdir: Path
    jobs: list[tuple[str, str, tuple[str, ...]]]     # (tool, url, extra args) per thread
    loop: bool = True
    name: str = "dl"             # output files are workdir/{name}{job}-{n}
    pause: float = 0.05          # between one client's downloads: spare a shared CI machine
    downloads: list[Download] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Stream:
        for job, (tool, url, extra) in enumerate(self.jobs):
            thread = threading.Thread(target=self._run, args=(job, tool, url, extra),
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, job: int, tool: str, url: str, extra: tuple[str, ...]) -> None:
        # Also ends when the LAN is being torn down (a test that failed before stop()).
        while True:
            target = self.workdir / f"{self.name}{job}-{next(_names)}"
            download = fetch(self.lan, tool, url, target, *extra)
            with self._lock:
                self.downloads.append(download)
                with (self.lan.logs / "clients.log").open("a") as log:
                    log.write(f"=== {tool} {url} {' '.join(extra)} "
                              f"{download.started:.3f}..{download.ended:.3f} "
                              f"exit {download.returncode} sha256 {download.sha256}\n"
                              f"{download.output}\n")
            if not self.loop or self._stop.is_set() or self.lan.closed:
                return
            time.sleep(self.pause)

    def receiving(self, minimum: int) -> bool:
        """Every job is writing a download that has at least ``minimum`` bytes so far."""
        sizes: dict[str, int] = {}
        for path in self.workdir.glob(f"{self.name}*-*"):
            job = path.name.removeprefix(self.name).partition("-")[0]
            with contextlib.suppress(OSError):
                sizes[job] = max(sizes.get(job, 0), path.stat().st_size)
        return len(sizes) == len(self.jobs) and min(sizes.values()) >= minimum

    def stop(self, timeout: float) -> None:
        """Let every running download finish (they retry on their own), then return."""
        self._stop.set()
        deadline = time.monotonic() + scaled(timeout)
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        alive = sum(t.is_alive() for t in self._threads)
        assert not alive, f"{alive} clients still downloading after {scaled(timeout):g}s"
