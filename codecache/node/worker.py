"""One worker process of a server (``python -m codecache.node.worker``, started by supervisor).

Owns only the start of a worker: its spec from stdin (pickled by the parent), its logging,
its signals, and the watch on its parent (a worker whose parent is gone stops, so a
SIGKILLed server never leaves workers holding its port). Serving is ``server.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import socket
import sys

from codecache.node.fill import edge_fill
from codecache.node.pull import pull_loop
from codecache.node.supervisor import WorkerSpec
from codecache.telemetry.logs import LogHandler
from codecache.web import server

_PARENT_CHECK = 1.0   # seconds between looks at the parent
_PR_SET_PDEATHSIG = 1  # prctl(2)


def main() -> None:
    _die_with_parent()
    spec = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - from our parent, by pipe
    if not isinstance(spec, WorkerSpec):
        raise SystemExit("codecache worker: expected a WorkerSpec on stdin")
    if os.getppid() != spec.parent:
        # The parent died before the death signal was set (while this one started up).
        raise SystemExit("codecache worker: the server that started it is gone")
    handler = LogHandler(sys.stderr)  # batches the access lines (logs.AccessLog)
    if spec.log_formatter is not None:
        handler.setFormatter(spec.log_formatter)
    logging.basicConfig(level=spec.log_level, handlers=[handler])
    sockets = [socket.socket(fileno=fd) for fd in spec.fds]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(spec, sockets))


def _die_with_parent() -> None:
    """A server killed with SIGKILL takes its workers along at once (Linux: the parent-death
    signal), so nothing, a pull loop least of all, outlives it: ``kill -9`` of the server
    must stop every write to its store. Elsewhere the watch in ``_run`` stops a worker
    within a second."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def _run(spec: WorkerSpec, sockets: list[socket.socket]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    parent = spec.parent

    async def watch_parent() -> None:
        while os.getppid() == parent:  # noqa: ASYNC110 - nothing signals a parent's death
            await asyncio.sleep(_PARENT_CHECK)
        logging.getLogger("codecache.web.worker").error("parent gone: stopping")
        stop.set()

    background = pull_loop(spec.config, lambda: os.kill(parent, signal.SIGUSR1)) \
        if spec.pull else None
    watcher = asyncio.create_task(watch_parent())
    try:
        await server.run(spec.config, sockets, stop, workers=spec.workers,
                         metrics_dir=spec.metrics_dir, background=background,
                         fill=edge_fill(spec.config))
    finally:
        watcher.cancel()


if __name__ == "__main__":
    main()
