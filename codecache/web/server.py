"""The HTTP front end of one server process: aiohttp glue around storeview, catalog, conditional.

Owns: the request handler and the one place that maps errors to HTTP status and the
documented JSON error body, the slow-client bounds of a connection (``header_timeout``,
``keepalive_timeout``), the background tasks that keep the ``StoreView`` current (every
``server.watch_interval``, or at once on SIGUSR1) and scrub it, and the access log.
Read-only: GET and HEAD, anything else 405. How many such processes run and who binds the
port is ``supervisor``'s business.

aiohttp's low-level ``web.Server`` calls ``Front`` directly: no router, middleware chain
or application signals on the hot path (docs/benchmark.md, "server hot path"). Before
that, each connection (``_Connection``) hands the requests ``fastpath`` can answer to it
(``[server] fast_answers``); ``Front`` stays the reference for their bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import HttpVersion10, HttpVersion11, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from codecache.core.config import Config
from codecache.core.errors import (
    BadRequest,
    CodecacheError,
    IntegrityError,
    NoIndex,
    NotFound,
    Refused,
)
from codecache.telemetry.logs import AccessLog
from codecache.telemetry.metrics import CONTENT_TYPE
from codecache.telemetry.notify import Notifier
from codecache.web.catalog import Representation, Route, package_of, service_route
from codecache.web.conditional import Outcome, evaluate, plain_outcome
from codecache.web.fastpath import FastPath
from codecache.web.headers import PAD_HEADER, cache_pad, request_id_from
from codecache.web.statuspage import render_status_page
from codecache.web.storeview import StoreView

if TYPE_CHECKING:   # aiohttp's header type (multidict comes with aiohttp)
    from multidict import CIMultiDictProxy

log = logging.getLogger("codecache.web.server")
access_log = logging.getLogger("codecache.access")

_NO_STORE = "no-store"
_METHODS = ("GET", "HEAD")  # read-only
_ROUTE = "codecache.route"  # request-local: the route label for the access log
_SERIAL = "codecache.serial"  # request-local: the index serial the answer came from
_REQUEST_ID = "codecache.request_id"
_STREAM_CHUNK = 256 * 1024
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 408: "request_timeout", 412: "precondition_failed",
               413: "payload_too_large", 414: "uri_too_long", 416: "range_not_satisfiable",
               431: "request_header_fields_too_large", 500: "internal_error",
               503: "unavailable"}


# --- errors: the one mapping to HTTP ------------------------------------------------------


def error_status(err: CodecacheError) -> int:
    if isinstance(err, BadRequest):
        return 400
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, Refused | IntegrityError):
        return 503
    return 500


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"status": status, "code": code, "message": message}}
    return web.json_response(body, status=status,
                             headers={"Cache-Control": _NO_STORE, **(headers or {})})


def request_id(request: web.BaseRequest) -> str:
    """The request's id (``headers.request_id_from``), kept with the request."""
    rid = request.get(_REQUEST_ID)
    return str(rid) if rid is not None else _assign_request_id(request)


def _assign_request_id(request: web.BaseRequest) -> str:
    """Take or make the id (``Front`` does, first thing: a ``get`` of an absent key of an
    aiohttp request costs a KeyError)."""
    rid = request[_REQUEST_ID] = request_id_from(request.headers.get("X-Request-ID"))
    return rid


class Front:
    """The request handler of one server process, over its ``StoreView``."""

    def __init__(self, state: StoreView) -> None:
        self.state = state

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request; every error becomes the documented JSON body here."""
        metrics = self.state.metrics
        metrics.in_flight_now += 1
        route = "other"
        rid = _assign_request_id(request)
        try:
            if request.method not in _METHODS:
                # Before routing: a CONNECT's authority-form target matches no route and
                # would otherwise be a 404 (DESIGN.md §4: anything but GET/HEAD is 405).
                response: web.StreamResponse = error_response(
                    405, "method_not_allowed", "Method Not Allowed",
                    {"Allow": ",".join(_METHODS)})
            else:
                found, rep = self._route(request)
                route = request[_ROUTE] = found.value
                if self.state.catalog is not None:
                    request[_SERIAL] = self.state.catalog.index.serial
                response = await self._dispatch(request, found, rep)
        except CodecacheError as err:
            response = error_response(error_status(err), err.code, err.message)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("internal error serving %s", request.raw_path,
                          extra={"request_id": rid, "status": 500})
            response = error_response(500, "internal_error", "internal server error")
        finally:
            metrics.in_flight_now -= 1
        if not response.prepared:  # a streamed file carried it in its headers already
            response.headers["X-Request-ID"] = rid
        # Body bytes: a Response is not sent yet here, so body_length would still be 0.
        metrics.count(route, response.status, response.content_length or 0
                      if request.method == "GET" else 0)
        return response

    def _route(self, request: web.BaseRequest) -> tuple[Route, Representation | None]:
        if request.version < HttpVersion10:
            # RFC 9112 §2.3: an HTTP/0.9 response has no status line or headers, so such
            # a client would take ours for body bytes (a corrupt tarball): refuse it.
            raise BadRequest("HTTP/0.9 requests are not supported")
        catalog = self.state.catalog
        if catalog is not None:
            return catalog.lookup(request.raw_path)
        route = service_route(request.raw_path)
        if route is None:
            raise NoIndex("the server holds no verified index yet")
        return route, None

    async def _dispatch(self, request: web.BaseRequest, route: Route,
                        rep: Representation | None) -> web.StreamResponse:
        state = self.state
        if rep is not None:
            return await serve_representation(request, state, rep)
        if route is Route.HISTORY:
            return await serve_representation(request, state, state.history())
        if route is Route.HEALTHZ:
            return web.json_response({"status": "ok", "pid": os.getpid()},
                                     headers={"Cache-Control": _NO_STORE})
        if route is Route.READYZ:
            verdict, body = state.readiness()
            return web.json_response(body, status=200 if verdict.ready else 503,
                                     headers={"Cache-Control": _NO_STORE})
        if route is Route.METRICS:
            return web.Response(body=state.metrics.render(), headers={
                "Cache-Control": _NO_STORE, "Content-Type": CONTENT_TYPE})
        html = render_status_page(state.catalog.index if state.catalog else None,
                                  state.readiness()[1], state.blob_problems, now=time.time())
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "public, max-age=5"})


async def serve_representation(request: web.BaseRequest, state: StoreView,
                               rep: Representation) -> web.StreamResponse:
    h = request.headers
    outcome = plain_outcome(h, rep.etag)
    start, end = 0, rep.size - 1
    if outcome is Outcome.NOT_MODIFIED:
        return web.Response(status=304, headers=rep.validators)
    if outcome is None:
        decision = evaluate(method=request.method, etag=rep.etag,
                            last_modified=rep.last_modified, size=rep.size,
                            if_match=_list_field(h, "If-Match"),
                            if_none_match=_list_field(h, "If-None-Match"),
                            if_modified_since=h.get("If-Modified-Since"),
                            if_unmodified_since=h.get("If-Unmodified-Since"),
                            range_header=h.get("Range"), if_range=h.get("If-Range"))
        outcome = decision.outcome
        if outcome is Outcome.PARTIAL:
            start, end = decision.start, decision.end
        if outcome is Outcome.NOT_MODIFIED:
            return web.Response(status=304, headers=rep.validators)
        if outcome is Outcome.PRECONDITION_FAILED:
            return error_response(412, "precondition_failed", "a precondition failed")
        if outcome is Outcome.NOT_SATISFIABLE:
            # An error must not be cached like the file (an "immutable" 416 in a squid).
            return error_response(416, "range_not_satisfiable",
                                  f"range not satisfiable for {rep.size} bytes",
                                  {"Content-Range": decision.content_range(rep.size) or "",
                                   "Accept-Ranges": "bytes"})
    body = await _body(state, rep)
    status, headers = 200, rep.headers
    if outcome is Outcome.FULL:
        headers = _cache_padded(request, headers, rep.size)
    if outcome is Outcome.PARTIAL:
        status = 206
        headers = {**rep.headers, "Content-Range": f"bytes {start}-{end}/{rep.size}"}
    if isinstance(body, Path):
        return await _stream_file(request, body, start, end, status, headers)
    return web.Response(status=status, body=body[start:end + 1] if status == 206 else body,
                        headers=headers)


def _list_field(headers: CIMultiDictProxy[str], name: str) -> str | None:
    """A list-valued field sent on several lines, as one comma-separated value (RFC 9110
    §5.3), or None when absent."""
    values = headers.getall(name, ())
    return ", ".join(values) if values else None


def _cache_padded(request: web.BaseRequest, headers: dict[str, str],
                  size: int) -> dict[str, str]:
    """``headers`` and the pad that starts the body on a page in the front tier's cache
    file (``headers.cache_pad``), when there is one."""
    padding = cache_pad(request.headers, request.raw_path,
                        request.version == HttpVersion11 and request.keep_alive,
                        headers, size, request_id(request))
    return headers if padding is None else {**headers, PAD_HEADER: padding}


async def _body(state: StoreView, rep: Representation) -> bytes | Path:
    if rep.inline is not None:
        return rep.inline
    assert rep.blob is not None  # noqa: S101 - a Representation holds inline bytes or a blob
    cached = state.blobs.cached(rep.blob)
    if cached is not None:
        return cached
    path = state.blobs.verified_path(rep.blob, rep.size)
    if path is not None:
        return path
    return await asyncio.to_thread(state.blobs.load, rep.blob, rep.size)


async def _stream_file(request: web.BaseRequest, path: Path, start: int, end: int,
                       status: int, headers: dict[str, str]) -> web.StreamResponse:
    """Send a large verified blob with sendfile(2); chunked reads where that is impossible."""
    response = web.StreamResponse(status=status, headers=headers)
    response.headers["X-Request-ID"] = request_id(request)
    response.content_length = count = end - start + 1
    # Opened on the loop: a verified file of the local store, its inode cached; a thread
    # hop costs a hundred times the open (docs/benchmark.md, "server hot path").
    with path.open("rb") as fh, _corked(request.transport):
        writer = await response.prepare(request)
        if request.method == "HEAD" or writer is None:
            return response
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        try:
            await writer.drain()
            await asyncio.get_running_loop().sendfile(transport, fh, start, count)
        except NotImplementedError:  # e.g. a TLS transport
            fh.seek(start)
            while count > 0 and (chunk := fh.read(min(_STREAM_CHUNK, count))):
                await response.write(chunk)
                count -= len(chunk)
    await response.write_eof()
    return response


@contextlib.contextmanager
def _corked(transport: asyncio.BaseTransport | None) -> Iterator[None]:
    """Only full TCP segments while the header and the file go out, the rest at the end
    (TCP_CORK, nginx's ``tcp_nopush``). The socket has TCP_NODELAY (aiohttp), so each
    sendfile(2) as the send buffer drains went out in segments of whatever fitted: a 3 MB
    body took ~100 segments instead of ~60, and the client's CPU per body doubled
    (docs/benchmark.md, "server hot path")."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    cork = getattr(socket, "TCP_CORK", None)   # Linux
    if sock is None or cork is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        yield
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):   # the client went away: nothing to flush
            sock.setsockopt(socket.IPPROTO_TCP, cork, 0)


# --- slow clients -------------------------------------------------------------------------


class _Connection(RequestHandler):
    """aiohttp's connection handler with a bound on the arrival of a request header, and
    the requests ``fastpath`` answers taken before aiohttp's request handling sees them.

    aiohttp closes a connection that stays idle ``keepalive_timeout`` but has no bound of
    its own on a header that trickles in (slowloris): a timer starts when the connection
    opens, and again when the first byte of a later request arrives; a complete request
    stops it; if it fires first the connection is closed (nginx: client_header_timeout).

    Built on aiohttp 3.14's handler (pyproject pins the minor series): its queue of parsed
    requests (``_messages``), the future its loop waits on (``_waiter``), the parser's
    queue slots and the keep-alive deadline; tests/http/test_fast_answers.py holds the
    bytes to those of aiohttp's own answers.
    """

    __slots__ = ("_fast", "_header_timeout", "_header_timer")

    def __init__(self, *args: Any, header_timeout: float, fast: FastPath | None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._fast = fast

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiter, fast = self._waiter, self._fast
        idle = waiter is not None and not waiter.done() and not self._messages and \
            not self._request_in_progress
        if not idle or fast is None:
            super().data_received(data)
        else:
            # aiohttp's loop (``start``) waits for a request: parse without waking it, so
            # that the requests ``fastpath`` answers never reach it.
            self._waiter = None
            try:
                super().data_received(data)
            finally:
                self._waiter = waiter
            answered = self._answer_fast(fast) if self._messages else False
            if self._messages and waiter is not None and not waiter.done():
                waiter.set_result(None)
            if answered and not self._messages:
                self._disarm()   # complete requests, answered: idle again
                return
        if self._messages or self._request_in_progress:
            self._disarm()
        elif idle and data and self._header_timer is None:
            self._arm()  # the first bytes of a new request on a kept-alive connection

    def _answer_fast(self, fast: FastPath) -> bool:
        """Answer the queued requests that ``fastpath`` can, in order, until one it cannot
        (that one and the rest go aiohttp's way). Not while the socket still holds unsent
        bytes: a client that does not read must meet aiohttp's flow control."""
        transport, parser = self.transport, self._parser
        if transport is None or parser is None or self._buffer_paused:
            return False
        answered = False
        loop = self._loop
        while self._messages and not transport.get_write_buffer_size():
            message, payload = self._messages[0]
            wire = fast.answer(message, payload, self._remote, time.monotonic())
            if wire is None:
                break
            self._messages.popleft()
            parser.message_consumed()
            transport.write(wire)
            answered = True
            if self._manager is not None:
                self._manager.requests_count += 1
        if answered:
            self._next_keepalive_close_time = loop.time() + self._keepalive_timeout
        return answered

    def _remote(self) -> str | None:
        """The peer's address as aiohttp's ``request.remote`` gives it."""
        peer = self.transport.get_extra_info("peername") if self.transport else None
        if isinstance(peer, list | tuple):
            return str(peer[0])
        return str(peer) if peer else None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self._loop.call_later(self._header_timeout, self._late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _late(self) -> None:
        self._header_timer = None
        if not self._messages and not self._request_in_progress:
            self.force_close()


class _LowLevelServer(web.Server):
    """``web.Server`` making ``_Connection`` handlers."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
                 *, header_timeout: float, fast: FastPath | None = None,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout
        self._fast = fast

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, header_timeout=self._header_timeout,
                           fast=self._fast, **self._kwargs)


# --- background work ----------------------------------------------------------------------


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
        route = request.get(_ROUTE, "other")
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
            serial=request.get(_SERIAL), ms=round(time * 1000, 2),
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
              background: Background | None = None,
              notifier: Notifier | None = None) -> None:
    """Serve on ``sockets`` (bound and listening) until ``stop`` is set, then drain.

    ``workers``/``metrics_dir``: this process is one of several (``supervisor``);
    ``background``: work to run beside serving, handed the store view (a replica's pull
    loop, from whoever starts the server: the web side knows nothing of pulling); ``notifier``:
    tell systemd when ready and while alive (the process systemd started).
    """
    notifier = notifier or Notifier(None, None)
    logging.getLogger("aiohttp.server").addFilter(_QuietParseErrors())
    state = StoreView(config, workers=workers, metrics_dir=metrics_dir)
    await asyncio.to_thread(state.refresh)  # serve at once what the store holds
    loop = asyncio.get_running_loop()
    sink = AccessLog(access_log, loop, config.log.access_sample)
    server = _LowLevelServer(
        Front(state), header_timeout=config.server.header_timeout,
        fast=FastPath(state, sink) if config.server.fast_answers else None,
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
