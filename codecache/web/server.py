"""The app of one server process: serving on its sockets, and the work beside serving.

Owns: ``run`` (the low-level aiohttp server over ``front.Front`` and ``connection``'s
connections, its slow-client bounds ``header_timeout`` and ``keepalive_timeout``, a drain
on stop), the background tasks that keep the ``StoreView`` current (every
``server.watch_interval``, or at once on SIGUSR1) and scrub it, and the redirector's
probes of its targets (``redirect``, on a node with ``[[redirect.sites]]``), the service manager's
notifications, and the access log. Read-only: GET and HEAD, anything else 405 (``front``).
How many such processes run and who binds the port is ``supervisor``'s business.

The parts: ``front`` (the handler and errors to HTTP), ``respond`` (writing a
representation), ``connection`` (aiohttp's connection handler with the header bound and
``fastpath``: the subclass built on aiohttp's handler internals); on an edge,
``edgeblobs`` (its cache's blobs, filled through the ``fill`` whoever starts the server
hands in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from codecache.core.config import Config
from codecache.telemetry.logs import AccessLog
from codecache.telemetry.notify import Notifier
from codecache.web.catalog import package_of
from codecache.web.connection import LowLevelServer
from codecache.web.edgeblobs import EdgeBlobs, OpenFill
from codecache.web.fastpath import FastPath
from codecache.web.front import ROUTE_KEY, SERIAL_KEY, Front
from codecache.web.redirect import Redirector
from codecache.web.respond import request_id
from codecache.web.storeview import StoreView

log = logging.getLogger("codecache.web.server")
access_log = logging.getLogger("codecache.access")


@contextlib.asynccontextmanager
async def _periodic(interval: float, work: Callable[[], Awaitable[None]],
                    name: str) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            try:
                await work()
            except Exception:
                log.exception("%s failed", name)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


#: Work beside serving (a replica's pull loop), entered once the store view is loaded and
#: left when the server stops.
Background = Callable[[StoreView], contextlib.AbstractAsyncContextManager[None]]


class AccessLogger(AbstractAccessLogger):
    """One line per request: what was asked, what was served (version, index serial), the id.

    The facts are the JSON keys with ``--log-format json``; the text message spells the
    same facts for a human. ``logs.AccessLog`` renders and writes them.
    """

    #: Where the lines go, and which answers get one: one per process (aiohttp makes a
    #: logger per connection), made by ``run``.
    sink: AccessLog

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.sink.due(response.status):
            return
        route = request.get(ROUTE_KEY, "other")
        path = request.raw_path
        # The body's declared length: aiohttp's body_length counts the headers too and
        # misses what sendfile(2) sent.
        body = 0
        if request.method != "HEAD" and response.status not in (204, 304):
            body = response.content_length or 0
        self.sink.write(
            remote=request.remote, method=request.method, path=path, status=response.status,
            nbytes=body, route=route, package=package_of(route, path),
            version=response.headers.get("X-Codecache-Version"),
            serial=request.get(SERIAL_KEY), ms=round(time * 1000, 2),
            agent=request.headers.get("User-Agent"), request_id=request_id(request))


class _QuietParseErrors(logging.Filter):
    """aiohttp logs every unparsable request with a traceback; one line is enough.

    Garbage on the port is the client's fault and must not flood the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "refused unparsable request: %s"
            record.args = (" ".join(str(exc.message).split()),)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


async def run(config: Config, sockets: Sequence[socket.socket], stop: asyncio.Event, *,
              workers: int = 1, metrics_dir: Path | None = None,
              background: Background | None = None, fill: OpenFill | None = None,
              notifier: Notifier | None = None) -> None:
    """Serve on ``sockets`` (bound and listening) until ``stop`` is set, then drain.

    ``workers``/``metrics_dir``: this process is one of several (``supervisor``);
    ``background``: work to run beside serving, handed the store view (a replica's pull
    loop, from whoever starts the server: the web side knows nothing of pulling); ``fill``:
    an edge's fill of the blobs it does not hold (likewise); ``notifier``: tell systemd
    when ready and while alive (the process systemd started).
    """
    notifier = notifier or Notifier(None, None)
    logging.getLogger("aiohttp.server").addFilter(_QuietParseErrors())
    state = StoreView(config, workers=workers, metrics_dir=metrics_dir)
    await asyncio.to_thread(state.refresh)  # serve at once what the store holds
    loop = asyncio.get_running_loop()
    sink = AccessLog(access_log, loop, config.log.access_sample)
    # Each worker reads its redirect targets itself (redirect.py says why).
    redirector = Redirector(config.redirect, state) if config.redirect.sites else None
    server = LowLevelServer(
        Front(state, redirector), header_timeout=config.server.header_timeout,
        fast=FastPath(state, sink, redirector) if config.server.fast_answers else None,
        keepalive_timeout=config.server.keepalive_timeout,
        access_log_class=type("SampledAccessLogger", (AccessLogger,), {"sink": sink}),
        access_log=access_log if config.log.access_sample else None,
        max_line_size=4096, max_field_size=8190, handler_cancellation=True)
    runner = web.ServerRunner(server, shutdown_timeout=config.server.shutdown_timeout)
    await runner.setup()

    async def watch() -> None:
        await asyncio.to_thread(state.refresh)
        state.metrics.flush()  # on the loop: the tallies are not locked

    loop.add_signal_handler(signal.SIGUSR1, lambda: loop.create_task(watch()))
    # A worker starts with SIGUSR1 blocked (supervisor: its default action would kill a
    # worker still starting); one that came meanwhile is delivered now, to the handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(_periodic(config.server.watch_interval, watch,
                                                  "store-watch"))
        await stack.enter_async_context(_periodic(
            config.store.scrub_interval, lambda: asyncio.to_thread(state.scrub), "scrub"))
        if background is not None:
            await stack.enter_async_context(background(state))
        if redirector is not None:
            await stack.enter_async_context(redirector.running())
        if state.edge_cache is not None:
            stack.callback(state.edge_cache.close)   # after the fill: its counts flushed
            if fill is not None:
                state.edge = EdgeBlobs(state.edge_cache,
                                       await stack.enter_async_context(fill(state.edge_cache)),
                                       state.blobs)
        try:
            for sock in sockets:
                await web.SockSite(runner, sock, backlog=1024).start()
            notifier.ready(f"serving on {', '.join(config.server.listen)}")
            if notifier.watchdog_interval is not None:
                await stack.enter_async_context(_periodic(
                    notifier.watchdog_interval, _ping(notifier), "watchdog"))
            await stop.wait()
            notifier.stopping("stopping: finishing requests in flight")
        finally:
            # Stops accepting, lets in-flight responses finish within shutdown_timeout.
            await runner.cleanup()
            for handler in logging.getLogger().handlers:
                handler.flush()  # the access lines of the last requests (LogHandler)


def _ping(notifier: Notifier) -> Callable[[], Awaitable[None]]:
    """``WATCHDOG=1`` from the event loop itself: a blocked loop stops the pings."""
    async def ping() -> None:
        notifier.watchdog()

    return ping
