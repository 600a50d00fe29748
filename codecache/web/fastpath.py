"""The answers pilots repeat, written straight to the socket from bytes made once.

A pilot's plain GET of a small tarball and a revalidation that ends in 304 are most of a
replica's requests, and aiohttp's machinery around each (a request object, a task, a
``Response``, header serialisation, the access logger's lookups) cost several times the
work of the answer itself (docs/benchmark.md, "server hot path"). Here a request that
aiohttp's parser has already accepted is answered from header blocks built once per
representation, if it is one of those two cases and nothing about it is unusual;
everything else goes the ordinary way (``front.Front``), which stays the reference: the
bytes here are the ones it sends (a test compares them).

A tarball request whose client selects a redirect site (``redirect``) is left to the
handler too: it may be a 302, and that decision is made in one place. The rules stay in
one place each: which request fields give which outcome
(``conditional.plain_outcome``), the request id and the cache pad (``headers``), whether an
answer gets an access line (``logs.AccessLog``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import HttpVersion11
from aiohttp.streams import EMPTY_PAYLOAD

from codecache.telemetry.logs import AccessLog, PreparedAccess
from codecache.web.catalog import Representation, Route, package_of
from codecache.web.conditional import Outcome, format_http_date, plain_outcome
from codecache.web.headers import PAD_HEADER, SERVER, cache_pad, request_id_from
from codecache.web.redirect import REDIRECTED, Redirector
from codecache.web.storeview import StoreView

_KEPT = 4096   # raw paths remembered per index, like the catalog's own memo
_HEAD_304 = "HTTP/1.1 304 Not Modified\r\n"
_HEAD_200 = "HTTP/1.1 200 OK\r\n"
_SERVER = f"Server: {SERVER}\r\n\r\n"


class _Wire:
    """The header blocks of one representation, without the per-answer lines, and its
    access lines by (method, status) as they are first needed."""

    __slots__ = ("access_lines", "not_modified", "ok", "rep", "route")

    def __init__(self, route: Route, rep: Representation) -> None:
        self.route = route
        self.rep = rep
        self.not_modified = _HEAD_304 + _lines(rep.validators)
        self.ok = _HEAD_200 + _lines(rep.headers)
        self.access_lines: dict[tuple[str, int], PreparedAccess] = {}


def _lines(headers: dict[str, str]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


class FastPath:
    """Answers for one server process, over its ``StoreView``."""

    def __init__(self, state: StoreView, access: AccessLog,
                 redirector: Redirector | None = None) -> None:
        self._state = state
        self._access = access
        self._redirector = redirector
        self._catalog: object = None
        self._wires: dict[str, _Wire | None] = {}
        self._second = -1
        self._date = ""

    def answer(self, message: Any, payload: object, remote: Callable[[], str | None],
               started: float) -> bytes | None:
        """The whole response to ``message``, or None when it is not a case answered here.

        ``message`` and ``payload`` are what aiohttp's parser queued for one request (a
        ``RawRequestMessage``, or its record of a request that failed to parse); ``remote``
        gives the peer's address for the access line; ``started``: ``time.monotonic()``
        when the request's bytes arrived.
        """
        # A request that failed to parse is queued as aiohttp's error record: no version.
        if payload is not EMPTY_PAYLOAD or getattr(message, "version", None) != HttpVersion11 \
                or message.should_close or message.upgrade:
            return None
        method = message.method
        if method != "GET" and method != "HEAD":
            return None
        wire = self._wire(message.path)
        if wire is None:
            return None
        headers = message.headers
        redirector = self._redirector
        if redirector is not None and wire.route in REDIRECTED and \
                redirector.claims(message.path, headers, remote()):
            return None   # a site's client: the handler decides whether to redirect it
        rep = wire.rep
        outcome = plain_outcome(headers, rep.etag)
        if outcome is Outcome.NOT_MODIFIED:
            body, status, head = b"", 304, wire.not_modified
        elif outcome is Outcome.FULL:
            cached = self._body(rep)
            if cached is None:
                return None
            body, status, head = cached, 200, wire.ok
        else:
            return None
        rid = request_id_from(headers.get("X-Request-ID"))
        if status == 304:
            tail = f"X-Request-ID: {rid}\r\nDate: {self._now()}\r\n{_SERVER}"
        else:
            tail = f"X-Request-ID: {rid}\r\nContent-Length: {rep.size}\r\n" \
                   f"Date: {self._now()}\r\n{_SERVER}"
            pad = cache_pad(headers, message.path, True, rep.headers, rep.size, rid)
            if pad is not None:
                head = f"{head}{PAD_HEADER}: {pad}\r\n"
        nbytes = rep.size if status == 200 and method == "GET" else 0
        self._state.metrics.count(wire.route.value, status, nbytes)
        self._log(message, status, nbytes, wire, rid, remote, started)
        data = (head + tail).encode("latin-1")
        return data + body if nbytes else data

    def _wire(self, raw_path: str) -> _Wire | None:
        catalog = self._state.catalog
        if catalog is None:
            return None
        if catalog is not self._catalog:
            self._catalog, self._wires = catalog, {}
        try:
            return self._wires[raw_path]
        except KeyError:
            pass
        try:
            route, rep = catalog.lookup(raw_path)
        except Exception:   # an error answer: aiohttp's way (front.Front) writes it
            return None
        wire = None if rep is None else _Wire(route, rep)   # service routes, history
        if len(self._wires) < _KEPT:
            self._wires[raw_path] = wire
        return wire

    def _body(self, rep: Representation) -> bytes | None:
        if rep.inline is not None:
            return rep.inline
        assert rep.blob is not None  # noqa: S101 - a Representation holds inline bytes or a blob
        return self._state.cached(rep.blob)

    def _now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second, self._date = second, format_http_date(second)
        return self._date

    def _log(self, message: Any, status: int, nbytes: int, wire: _Wire, rid: str,
             remote: Callable[[], str | None], started: float) -> None:
        access = self._access
        if not access.due(status):
            return
        # Everything but who asked, how fast and by which id is the same for every answer
        # of this kind (the wire belongs to one raw path and one index): rendered once.
        kind = (message.method, status)
        line = wire.access_lines.get(kind)
        if line is None:
            catalog = self._state.catalog
            route = wire.route.value
            line = wire.access_lines[kind] = access.prepare(
                method=message.method, path=message.path, status=status, nbytes=nbytes,
                route=route, package=package_of(route, message.path), version=wire.rep.version,
                serial=catalog.index.serial if catalog else None)
        line.write(remote=remote(), ms=round((time.monotonic() - started) * 1000, 2),
                   agent=message.headers.get("User-Agent"), request_id=rid)
