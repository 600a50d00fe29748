"""The request handler of one server process: route, dispatch, and every error as HTTP.

Owns: which method is allowed (GET and HEAD, anything else 405), the route of a request
(``catalog``) and its answer (a representation through ``respond``, or a service route:
``/healthz``, ``/readyz``, ``/metrics``, ``/``; a site's tarball request may be a 302 from
``redirect`` instead), and turning every error into its status
(``errors.error_status``) and the documented JSON body (``respond.error_response``).
aiohttp's low-level ``web.Server`` calls ``Front`` directly: no router, middleware chain
or application signals on the hot path (docs/benchmark.md, "server hot path").
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from aiohttp import HttpVersion10, web

from codecache.core.errors import BadRequest, CodecacheError, NoIndex, error_status
from codecache.telemetry.metrics import CONTENT_TYPE
from codecache.web.catalog import Representation, Route, service_route
from codecache.web.redirect import Redirector
from codecache.web.respond import (
    NO_STORE,
    assign_request_id,
    error_response,
    serve_representation,
)
from codecache.web.statuspage import render_status_page
from codecache.web.storeview import StoreView

log = logging.getLogger("codecache.web.server")

METHODS = ("GET", "HEAD")  # read-only
ROUTE_KEY = "codecache.route"    # request-local: the route label for the access log
SERIAL_KEY = "codecache.serial"  # request-local: the index serial the answer came from


class Front:
    """The request handler of one server process, over its ``StoreView``; with a
    ``Redirector`` when the node has ``[[redirect.sites]]``."""

    def __init__(self, state: StoreView, redirector: Redirector | None = None) -> None:
        self.state = state
        self.redirector = redirector

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request; every error becomes the documented JSON body here."""
        metrics = self.state.metrics
        metrics.in_flight_now += 1
        route = "other"
        rid = assign_request_id(request)
        try:
            if request.method not in METHODS:
                # Before routing: a CONNECT's authority-form target matches no route and
                # would otherwise be a 404 (DESIGN.md §4: anything but GET/HEAD is 405).
                response: web.StreamResponse = error_response(
                    "method_not_allowed", "Method Not Allowed", {"Allow": ",".join(METHODS)})
            else:
                found, rep = self._route(request)
                route = request[ROUTE_KEY] = found.value
                if self.state.catalog is not None:
                    request[SERIAL_KEY] = self.state.catalog.index.serial
                response = await self._dispatch(request, found, rep)
        except CodecacheError as err:
            # An error that passes by itself (an edge's upstream away, its disk full) says
            # when to ask again.
            wait = {"Retry-After": str(err.retry_after)} if err.retry_after is not None \
                else None
            response = error_response(err.code, err.message, wait, status=error_status(err))
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("internal error serving %s", request.raw_path,
                          extra={"request_id": rid, "status": 500})
            response = error_response("internal_error", "internal server error")
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
            if self.redirector is not None:
                moved = self.redirector.answer(request, route, rep)
                if moved is not None:
                    return moved
            return await serve_representation(request, state, rep)
        if route is Route.HISTORY:
            return await serve_representation(request, state, state.history())
        if route is Route.HEALTHZ:
            return web.json_response({"status": "ok", "pid": os.getpid()},
                                     headers={"Cache-Control": NO_STORE})
        if route is Route.READYZ:
            verdict, body = state.readiness()
            if self.redirector is not None:
                body["redirect"] = self.redirector.view()
            return web.json_response(body, status=200 if verdict.ready else 503,
                                     headers={"Cache-Control": NO_STORE})
        if route is Route.METRICS:
            return web.Response(body=state.metrics.render(), headers={
                "Cache-Control": NO_STORE, "Content-Type": CONTENT_TYPE})
        html = render_status_page(state.catalog.index if state.catalog else None,
                                  state.readiness()[1], state.blob_problems, now=time.time(),
                                  refused=state.refused_tags)
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "public, max-age=5"})
