"""``codecache serve``: one server of ``server.workers`` processes on one port.

Owns the processes of a server: the open-files limit (raised to the hard limit at start),
the listening sockets and the workers. The parent binds, for every
``listen`` address, one ``SO_REUSEPORT`` socket per worker slot (the kernel spreads
connections over them evenly) and hands each worker its sockets; it keeps them open, so
connections waiting in a dead worker's queue are served by its replacement. The parent
serves no request and imports no HTTP code (it stays small): it replaces a worker that
dies and passes a SIGUSR1 from a worker on to every worker. On a replica, worker 0 also
runs the pull loop (one per server, not per worker; a replacement of worker 0 takes it
over) and, after an install, sends that SIGUSR1 so every worker looks at the store at
once (they also watch it every ``watch_interval``). SIGTERM/SIGINT: workers stop
accepting and finish in-flight responses within ``shutdown_timeout``, then the parent exits.

Workers are fresh interpreters (``python -m codecache.node.worker``), not forks: the parent
never imports the serving code (aiohttp, the store view, prometheus_client), nor asyncio:
it waits for signals and timers in a plain ``poll`` loop. The config and the socket
numbers reach a worker pickled on its stdin. ``/metrics`` of any worker counts the whole
server through prometheus_client's multiprocess files in a private directory.

``workers = 1`` is the single-process server: the same ``server.run``, pull loop included,
in this process.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from codecache.core.config import Config, split_listen
from codecache.core.errors import ConfigError
from codecache.core.keyfiles import read_trusted_keys
from codecache.telemetry.notify import Notifier

log = logging.getLogger("codecache.web.supervisor")
_RESTART_PAUSE = 1.0      # a worker that dies within this of its start is restarted after it
_KILL_GRACE = 5.0         # beyond shutdown_timeout, before a stuck worker gets SIGKILL
# sd_notify is the parent's (the process systemd started); a worker must not speak for it.
_PARENT_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one worker process is told on its stdin (pickled: parent to child, trusted)."""

    config: Config
    slot: int
    workers: int
    fds: tuple[int, ...]
    metrics_dir: Path
    log_level: int
    log_formatter: logging.Formatter | None
    pull: bool = False     # run a replica's pull loop (worker 0 only)
    parent: int = 0        # the parent's pid: a worker whose parent is another stops


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection holds a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft, hard


def bind(config: Config, slots: int) -> list[list[socket.socket]]:
    """Listening sockets: ``result[slot]`` holds one per ``listen`` address.

    Raises:
        ConfigError: an address cannot be bound (in use, not local, no permission).
    """
    per_slot: list[list[socket.socket]] = [[] for _ in range(slots)]
    try:
        for address in config.server.listen:
            host, port = split_listen(address)
            if slots > 1:
                # SO_REUSEPORT would let a second server (an old one still running) share
                # the port silently: first claim it alone, so that fails as it should.
                with _listening_socket(host, port, reuse_port=False, listen=False) as probe:
                    port = probe.getsockname()[1]
            for slot in range(slots):
                sock = _listening_socket(host, port, reuse_port=slots > 1)
                port = sock.getsockname()[1]  # port 0: every slot on the one chosen
                per_slot[slot].append(sock)
    except OSError as err:
        for sock in (s for slot in per_slot for s in slot):
            sock.close()
        raise ConfigError(f"server.listen: cannot listen on {address}: {err.strerror}") \
            from err
    return per_slot


def _listening_socket(host: str, port: int, *, reuse_port: bool,
                      listen: bool = True) -> socket.socket:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def serve(config: Config) -> None:
    """Run the server until SIGINT/SIGTERM.

    Raises:
        ConfigError: a listen address cannot be bound, a trusted key cannot be read.
    """
    soft, hard = raise_open_files_limit()
    workers = config.server.worker_count()
    log.info("open files limit %d (hard %d); %d worker process%s", soft, hard, workers,
             "" if workers == 1 else "es")
    # A bad key: one clear error, no worker. Read as text: this process never loads
    # cryptography (the workers verify with the keys).
    read_trusted_keys(config.signing.trusted_keys)
    sockets = bind(config, workers)
    for address in config.server.listen:
        log.info("listening on http://%s", address)
    notifier = Notifier.from_env()
    try:
        if workers == 1:
            _single(config, sockets[0], notifier)
        else:
            Supervisor(config, sockets, notifier).run()
    finally:
        for sock in (s for slot in sockets for s in slot):
            sock.close()


def _single(config: Config, sockets: list[socket.socket], notifier: Notifier) -> None:
    # Imported here: the parent of workers serves nothing and stays small (aiohttp's
    # server side, the store view and prometheus_client live in the workers).
    import asyncio

    from codecache.node.fill import edge_fill
    from codecache.node.pull import pull_loop
    from codecache.web import server

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.run(config, sockets, stop, background=pull_loop(config, None),
                         fill=edge_fill(config), notifier=notifier)

    asyncio.run(run())


class Supervisor:
    """The parent of the worker processes.

    One loop without asyncio: it sleeps in ``poll`` on the signal wakeup pipe until a
    signal arrives (a worker died, stop, SIGUSR1) or a timer is due (a restart after a
    pause, the watchdog). The parent serves nothing, and an event loop (asyncio imports
    ssl) would add ~5 MB to its ~18 MB (docs/benchmark.md, Memory).
    """

    def __init__(self, config: Config, sockets: list[list[socket.socket]],
                 notifier: Notifier) -> None:
        self._config = config
        self._sockets = sockets
        self._notifier = notifier
        self._procs: dict[int, subprocess.Popen[bytes]] = {}   # slot -> running worker
        self._started: dict[int, float] = {}                  # slot -> when (monotonic)
        self._restart_at: dict[int, float] = {}               # slot -> when to start again

    def run(self) -> None:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        watched = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD)
        # The handlers do nothing: the C handler writes each signal's number to the wakeup
        # pipe, and the loop reads them from there (as asyncio does).
        previous = {sig: signal.signal(sig, _ignore) for sig in watched}
        previous_wakeup = signal.set_wakeup_fd(wake_write)
        metrics_dir = Path(tempfile.mkdtemp(prefix="codecache-metrics-"))
        try:
            self._loop(_Wakeup(wake_read), metrics_dir)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_read)
            os.close(wake_write)
            shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("stopped")

    def _loop(self, wake: _Wakeup, metrics_dir: Path) -> None:
        for slot in range(len(self._sockets)):
            self._spawn(slot, metrics_dir)
        # sd_notify: READY once every worker is started (the sockets already listen).
        self._notifier.ready(f"serving on {', '.join(self._config.server.listen)} with "
                             f"{len(self._sockets)} workers")
        interval = self._notifier.watchdog_interval
        next_watchdog = time.monotonic()
        stopping = False
        while not stopping:
            now = time.monotonic()
            self._reap(metrics_dir, now)
            for slot, when in list(self._restart_at.items()):
                if when <= now:
                    del self._restart_at[slot]
                    self._spawn(slot, metrics_dir)
            if interval is not None and next_watchdog <= now:
                self._notifier.watchdog()
                next_watchdog = now + interval
            timers = [*self._restart_at.values(), *([next_watchdog] if interval else [])]
            for sig in wake.wait(max(0.0, min(timers) - now) if timers else None):
                if sig == signal.SIGUSR1:
                    self._notify()
                elif sig in (signal.SIGINT, signal.SIGTERM):
                    stopping = True
        self._notifier.stopping("stopping: finishing requests in flight")
        self._stop(wake, metrics_dir)

    def _spawn(self, slot: int, metrics_dir: Path) -> None:
        fds = tuple(sock.fileno() for sock in self._sockets[slot])
        root = logging.getLogger()
        formatter = root.handlers[0].formatter if root.handlers else None
        spec = WorkerSpec(self._config, slot, len(self._sockets), fds, metrics_dir,
                          root.level, formatter, pull=slot == 0, parent=os.getpid())
        env = {k: v for k, v in os.environ.items() if k not in _PARENT_ONLY_ENV}
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        # The worker inherits a blocked SIGUSR1 (the mask survives exec) and unblocks it
        # once it handles it: passed on while it starts, its default action would kill it.
        # Here it is only held back for the moment of the spawn.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            proc = subprocess.Popen([sys.executable, "-m", "codecache.node.worker"],
                                    stdin=subprocess.PIPE, pass_fds=fds, env=env)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        assert proc.stdin is not None  # noqa: S101 - stdin=PIPE above
        with contextlib.suppress(ConnectionError):   # died at once: reaped like any death
            proc.stdin.write(pickle.dumps(spec))
        with contextlib.suppress(ConnectionError):
            proc.stdin.close()
        self._procs[slot] = proc
        self._started[slot] = time.monotonic()
        log.info("worker %d started (pid %d)", slot, proc.pid)

    def _reap(self, metrics_dir: Path, now: float) -> None:
        """Workers that died: replace each, after a pause if it died right after its start."""
        for slot, proc in list(self._procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._procs[slot]
            _mark_dead(proc.pid, metrics_dir)
            log.error("worker %d (pid %d) exited with %s; starting a new one", slot,
                      proc.pid, _describe(code))
            quick = now - self._started[slot] < _RESTART_PAUSE
            self._restart_at[slot] = now + _RESTART_PAUSE if quick else now

    def _stop(self, wake: _Wakeup, metrics_dir: Path) -> None:
        """SIGTERM every worker; each gets ``shutdown_timeout`` (and a grace) before SIGKILL."""
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        grace = self._config.server.shutdown_timeout + _KILL_GRACE
        deadline = time.monotonic() + grace
        while any(proc.poll() is None for proc in self._procs.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for sig in wake.wait(min(left, 0.1)):
                if sig == signal.SIGUSR1:
                    self._notify()
        for proc in self._procs.values():
            if proc.poll() is None:
                log.error("worker pid %d did not stop within %.0f s: killed", proc.pid, grace)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
            _mark_dead(proc.pid, metrics_dir)

    def _notify(self) -> None:
        """Tell every worker to look at the store now (an index was installed)."""
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGUSR1)


def _ignore(signum: int, frame: object) -> None:
    """A Python-level handler that does nothing: the wakeup pipe carries the signal."""


class _Wakeup:
    """The read end of the signal wakeup pipe (``poll``: no FD_SETSIZE limit, unlike select)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def wait(self, timeout: float | None) -> list[int]:
        """The signals that arrived, waiting up to ``timeout`` seconds (None: until one)."""
        self._poll.poll(None if timeout is None else math.ceil(timeout * 1000))
        found: list[int] = []
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self._fd, 512):
                found.extend(data)
        return found


def _mark_dead(pid: int, metrics_dir: Path) -> None:
    """Drop a dead worker's live gauges (in flight, blob memory); its counters stay."""
    for path in metrics_dir.glob(f"gauge_live*_{pid}.db"):
        path.unlink(missing_ok=True)


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"status {code}"
