"""The HTTP front end (``codecache serve``): aiohttp glue around storeview, catalog, conditional.

Owns: the application factory, the one middleware that maps errors to HTTP status and the
documented JSON error body, the request handler, the background tasks that keep the
``StoreView`` current (every ``server.watch_interval``) and scrub it, and the access log.
Read-only: GET and HEAD, anything else 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote

import aiofiles
from aiohttp import HttpVersion10, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from codecache.config import Config, Role, split_listen
from codecache.errors import (
    BadRequest,
    CodecacheError,
    IntegrityError,
    NoIndex,
    NotFound,
    Refused,
)
from codecache.metrics import CONTENT_TYPE
from codecache.notify import Notifier
from codecache.replica import Replica
from codecache.web.catalog import Representation, Route, service_route
from codecache.web.conditional import Outcome, evaluate, format_http_date
from codecache.web.statuspage import render_status_page
from codecache.web.storeview import StoreView

log = logging.getLogger("codecache.web.server")
access_log = logging.getLogger("codecache.access")

_NO_STORE = "no-store"
_METHODS = ("GET", "HEAD")  # read-only
_ROUTE = "codecache.route"  # request-local: the route label for metrics
_SERIAL = "codecache.serial"  # request-local: the index serial the answer came from
_REQUEST_ID = "codecache.request_id"
# A client's (or nginx's) X-Request-ID is reused only if it is short and plain: it goes
# into every log line of the request and back into the response.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")
# Routes whose path starts with the package name.
_PACKAGE_ROUTES = frozenset({"channel", "release", "signature", "checksum"})
_STREAM_CHUNK = 256 * 1024
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 408: "request_timeout", 412: "precondition_failed",
               413: "payload_too_large", 414: "uri_too_long", 416: "range_not_satisfiable",
               431: "request_header_fields_too_large", 500: "internal_error",
               503: "unavailable"}


STATE = web.AppKey("state", StoreView)


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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        # Checked here, before routing: a CONNECT's authority-form target matches no
        # route and would otherwise be a 404 (DESIGN.md §4: anything but GET/HEAD is 405).
        if request.method not in _METHODS:
            raise web.HTTPMethodNotAllowed(request.method, list(_METHODS))
        return await handler(request)
    except CodecacheError as err:
        return error_response(error_status(err), err.code, err.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"),
                              exc.reason, headers)
    except Exception:
        log.exception("internal error serving %s", request.raw_path,
                      extra={"request_id": request_id(request), "status": 500})
        return error_response(500, "internal_error", "internal server error")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[STATE].metrics
    metrics.in_flight.inc()
    try:
        response = await handler(request)
    finally:
        metrics.in_flight.dec()
    route = request.get(_ROUTE, "other")
    metrics.count(route, response.status)
    # Body bytes; a Response is not sent yet here, so body_length would still be 0.
    if request.method == "GET" and response.content_length:
        metrics.response_bytes.labels(route).inc(response.content_length)
    return response


def request_id(request: web.BaseRequest) -> str:
    """The request's id: its ``X-Request-ID`` if acceptable, else a new one (kept per request).

    nginx/codecache.conf passes the client's id or its own ``$request_id``, so one id
    follows a download from the front tier's access log into the replica's.
    """
    rid = request.get(_REQUEST_ID)
    if rid is None:
        given = request.headers.get("X-Request-ID", "")
        rid = given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
        request[_REQUEST_ID] = rid
    return str(rid)


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, errors included, carries the request's id (before headers go out)."""
    response.headers["X-Request-ID"] = request_id(request)


# --- handlers -----------------------------------------------------------------------------


async def handle(request: web.Request) -> web.StreamResponse:
    if request.version < HttpVersion10:
        # RFC 9112 §2.3: an HTTP/0.9 response has no status line or headers, so such a
        # client would take ours for body bytes (a corrupt tarball): refuse, never serve.
        raise BadRequest("HTTP/0.9 requests are not supported")
    state = request.app[STATE]
    if state.catalog is None:
        route, rep = _catalogless_route(request.raw_path)
    else:
        route, rep = state.catalog.lookup(request.raw_path)
    request[_ROUTE] = route.value
    if state.catalog is not None:
        request[_SERIAL] = state.catalog.index.serial
    return await _dispatch(request, state, route, rep)


def _catalogless_route(raw_path: str) -> tuple[Route, None]:
    route = service_route(raw_path)
    if route is None:
        raise NoIndex("the server holds no verified index yet")
    return route, None


async def _dispatch(request: web.Request, state: StoreView, route: Route,
                    rep: Representation | None) -> web.StreamResponse:
    if rep is not None:
        return await serve_representation(request, state, rep)
    if route is Route.HISTORY:
        return await serve_representation(request, state, state.history())
    if route is Route.HEALTHZ:
        return web.json_response({"status": "ok"}, headers={"Cache-Control": _NO_STORE})
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


async def serve_representation(request: web.Request, state: StoreView,
                               rep: Representation) -> web.StreamResponse:
    h = request.headers
    decision = evaluate(method=request.method, etag=rep.etag, last_modified=rep.last_modified,
                        size=rep.size, if_match=h.get("If-Match"),
                        if_none_match=h.get("If-None-Match"),
                        if_modified_since=h.get("If-Modified-Since"),
                        if_unmodified_since=h.get("If-Unmodified-Since"),
                        range_header=h.get("Range"), if_range=h.get("If-Range"))
    headers = {"ETag": rep.etag, "Last-Modified": format_http_date(rep.last_modified),
               "Cache-Control": rep.cache_control}
    if rep.version is not None:
        headers["X-Codecache-Version"] = rep.version
    if decision.outcome is Outcome.NOT_MODIFIED:
        return web.Response(status=304, headers=headers)
    if decision.outcome is Outcome.PRECONDITION_FAILED:
        return error_response(412, "precondition_failed", "a precondition failed")
    if decision.outcome is Outcome.NOT_SATISFIABLE:
        # An error must not be cached like the file (an "immutable" 416 in a squid).
        return error_response(416, "range_not_satisfiable",
                              f"range not satisfiable for {rep.size} bytes",
                              {"Content-Range": decision.content_range(rep.size) or "",
                               "Accept-Ranges": "bytes"})
    headers["Accept-Ranges"] = "bytes"
    body = await _body(state, rep)
    start, end, status = 0, rep.size - 1, 200
    if decision.outcome is Outcome.PARTIAL:
        start, end, status = decision.start, decision.end, 206
        headers["Content-Range"] = decision.content_range(rep.size) or ""
    headers["Content-Type"] = rep.content_type
    if isinstance(body, Path):
        return await _stream_file(request, body, start, end, status, headers)
    return web.Response(status=status, body=body[start:end + 1] if status == 206 else body,
                        headers=headers)


async def _body(state: StoreView, rep: Representation) -> bytes | Path:
    if rep.inline is not None:
        return rep.inline
    assert rep.blob is not None  # noqa: S101 - a Representation holds inline bytes or a blob
    cached = state.blobs.cached(rep.blob)
    if cached is not None:
        return cached
    return await asyncio.to_thread(state.blobs.load, rep.blob, rep.size)


async def _stream_file(request: web.Request, path: Path, start: int, end: int, status: int,
                       headers: dict[str, str]) -> web.StreamResponse:
    """Send a large verified blob with sendfile(2); chunked reads where that is impossible."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = count = end - start + 1
    async with aiofiles.open(path, "rb") as fh:
        writer = await response.prepare(request)
        if request.method == "HEAD" or writer is None:
            return response
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        try:
            await writer.drain()
            await asyncio.get_running_loop().sendfile(transport, fh.raw, start, count)
        except NotImplementedError:  # e.g. a TLS transport
            await fh.seek(start)
            while count > 0 and (chunk := await fh.read(min(_STREAM_CHUNK, count))):
                await response.write(chunk)
                count -= len(chunk)
    await response.write_eof()
    return response


# --- background work ----------------------------------------------------------------------


def _periodic(interval: float, work: Callable[[], Awaitable[None]], name: str) -> Callable[
        [web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    await work()
                except Exception:
                    log.exception("%s failed", name)
                await asyncio.sleep(interval)

        task = asyncio.create_task(loop(), name=name)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


def create_app(config: Config) -> web.Application:
    """The aiohttp application for ``config`` (no globals; state under ``STATE``)."""
    app = web.Application(middlewares=[metrics_middleware, error_middleware],
                          client_max_size=1024)
    state = StoreView(config)
    app[STATE] = state
    state.refresh()  # serve at once what the store holds
    app.on_response_prepare.append(_echo_request_id)
    app.cleanup_ctx.append(_periodic(config.server.watch_interval,
                                     lambda: asyncio.to_thread(state.refresh), "store-watch"))
    app.cleanup_ctx.append(_periodic(config.store.scrub_interval,
                                     lambda: asyncio.to_thread(state.scrub), "scrub"))
    if config.role is Role.REPLICA:
        app.cleanup_ctx.append(_pull_loop(config, state))
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _pull_loop(config: Config, state: StoreView) -> Callable[
        [web.Application], AsyncIterator[None]]:
    """A replica's server runs its pull loop in-process (one per server)."""
    async def context(app: web.Application) -> AsyncIterator[None]:
        replica = Replica(config, suspects=lambda: tuple(state.blob_problems),
                          installed=lambda: asyncio.to_thread(state.refresh))
        stop = asyncio.Event()
        task = asyncio.create_task(replica.run(stop), name="replica-pull")
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


class AccessLogger(AbstractAccessLogger):
    """One line per request: what was asked, what was served (version, index serial), the id.

    The facts are ``extra=`` fields (JSON keys with ``--log-format json``); the text
    message spells the same facts for a human.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = request.get(_ROUTE, "other")
        path = request.raw_path
        package = None
        if route in _PACKAGE_ROUTES:
            package = unquote(path.split("?", 1)[0].split("/")[1])
        # The body's declared length: aiohttp's body_length counts the headers too and
        # misses what sendfile(2) sent.
        body = response.content_length or 0
        if request.method == "HEAD" or response.status in (204, 304):
            body = 0
        fields = {
            "remote": request.remote, "method": request.method, "path": path,
            "status": response.status, "bytes": body, "route": route,
            "package": package, "version": response.headers.get("X-Codecache-Version"),
            "serial": request.get(_SERIAL), "ms": round(time * 1000, 2),
            "agent": request.headers.get("User-Agent"), "request_id": request_id(request),
        }
        self.logger.info(
            '%s "%s %s" %d %d %.2fms version=%s serial=%s request_id=%s agent="%s"',
            fields["remote"], fields["method"], path, response.status, body,
            fields["ms"], fields["version"] or "-", fields["serial"] or "-",
            fields["request_id"], fields["agent"] or "-", extra=fields)


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


async def run(config: Config, stop: asyncio.Event, notifier: Notifier | None = None) -> None:
    """Serve until ``stop`` is set; tell ``notifier`` (systemd) when ready and while alive."""
    notifier = notifier or Notifier(None, None)
    logging.getLogger("aiohttp.server").addFilter(_QuietParseErrors())
    runner = web.AppRunner(create_app(config), access_log_class=AccessLogger,
                           access_log=access_log, max_line_size=4096, max_field_size=8190,
                           handler_cancellation=True)
    await runner.setup()
    watchdog: asyncio.Task[None] | None = None
    try:
        for address in config.server.listen:
            host, port = split_listen(address)
            await web.TCPSite(runner, host, port, shutdown_timeout=5.0).start()
            log.info("listening on http://%s", address)
        notifier.ready(f"serving on {', '.join(config.server.listen)}")
        if notifier.watchdog_interval is not None:
            watchdog = asyncio.create_task(_watchdog(notifier, notifier.watchdog_interval),
                                           name="watchdog")
        await stop.wait()
        notifier.stopping("stopping: finishing requests in flight")
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await runner.cleanup()


async def _watchdog(notifier: Notifier, interval: float) -> None:
    """``WATCHDOG=1`` from the event loop itself: a blocked loop stops the pings."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


def serve(config: Config) -> None:
    """Run the front end until SIGINT/SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(config, stop, Notifier.from_env())

    asyncio.run(main())
