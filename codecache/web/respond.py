"""Writing one representation (or an error) as an aiohttp response: the one place that does.

Owns, for a ``catalog.Representation``: which answer a request gets (``plan``: 200, 206,
304, 412 or 416, from ``conditional``), where its bytes come from (memory, or a verified
file sent with sendfile(2), ``blobcache``), and the JSON error body every error answer
carries (``error_response``, its status from ``errors.HTTP_STATUS``). Also the request's id
(``headers.request_id_from``), kept with the request. As aiohttp's own
``web_fileresponse.py`` is one place for a file, this is one place for a representation;
``fastpath`` writes the same bytes for its two cases (a test compares them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiohttp import HttpVersion11, web
from multidict import CIMultiDict, CIMultiDictProxy

from codecache.core.errors import HTTP_STATUS, BlobUnavailable
from codecache.web.catalog import Representation
from codecache.web.conditional import Outcome, evaluate, plain_outcome
from codecache.web.headers import PAD_HEADER, cache_pad, request_id_from
from codecache.web.storeview import StoreView

NO_STORE = "no-store"
_REQUEST_ID = "codecache.request_id"   # request-local: the id of the request
_STREAM_CHUNK = 256 * 1024


def error_response(code: str, message: str, headers: Mapping[str, str] | None = None, *,
                   status: int | None = None) -> web.Response:
    """The documented JSON error body, never stored by a cache; ``status`` defaults to the
    code's in ``errors.HTTP_STATUS``."""
    status = HTTP_STATUS[code] if status is None else status
    body = {"error": {"status": status, "code": code, "message": message}}
    return web.json_response(body, status=status,
                             headers={"Cache-Control": NO_STORE, **(headers or {})})


def request_id(request: web.BaseRequest) -> str:
    """The request's id (``headers.request_id_from``), kept with the request."""
    rid = request.get(_REQUEST_ID)
    return str(rid) if rid is not None else assign_request_id(request)


def assign_request_id(request: web.BaseRequest) -> str:
    """Take or make the id (``Front`` does, first thing: a ``get`` of an absent key of an
    aiohttp request costs a KeyError)."""
    rid = request[_REQUEST_ID] = request_id_from(request.headers.get("X-Request-ID"))
    return rid


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer a request gets for a representation, before any byte is read.

    ``span``: the inclusive byte range of the body to send, None for an answer without the
    representation's body (304, or an error); ``error``: the code and message of an error
    answer (``headers`` are then added to the error's). A 200 is the whole body, the one
    answer the front tier's cache pad applies to.
    """

    status: int
    headers: Mapping[str, str]
    span: tuple[int, int] | None = None
    error: tuple[str, str] | None = None


def plan(method: str, headers: CIMultiDictProxy[str] | CIMultiDict[str],
         rep: Representation) -> Plan:
    """Decide the answer from the request's method and header fields."""
    outcome = plain_outcome(headers, rep.etag)
    if outcome is None:
        decision = evaluate(method=method, etag=rep.etag, last_modified=rep.last_modified,
                            size=rep.size, if_match=_list_field(headers, "If-Match"),
                            if_none_match=_list_field(headers, "If-None-Match"),
                            if_modified_since=headers.get("If-Modified-Since"),
                            if_unmodified_since=headers.get("If-Unmodified-Since"),
                            range_header=headers.get("Range"), if_range=headers.get("If-Range"))
        outcome = decision.outcome
        if outcome is Outcome.PARTIAL:
            return Plan(206, {**rep.headers,
                              "Content-Range": f"bytes {decision.start}-{decision.end}/{rep.size}"},
                        span=(decision.start, decision.end))
        if outcome is Outcome.PRECONDITION_FAILED:
            return Plan(412, {}, error=("precondition_failed", "a precondition failed"))
        if outcome is Outcome.NOT_SATISFIABLE:
            # An error must not be cached like the file (an "immutable" 416 in a squid).
            return Plan(416, {"Content-Range": decision.content_range(rep.size) or "",
                              "Accept-Ranges": "bytes"},
                        error=("range_not_satisfiable",
                               f"range not satisfiable for {rep.size} bytes"))
    if outcome is Outcome.NOT_MODIFIED:
        return Plan(304, rep.validators)
    return Plan(200, rep.headers, span=(0, rep.size - 1))


def _list_field(headers: CIMultiDictProxy[str] | CIMultiDict[str], name: str) -> str | None:
    """A list-valued field sent on several lines, as one comma-separated value (RFC 9110
    §5.3), or None when absent."""
    values = headers.getall(name, ())
    return ", ".join(values) if values else None


async def serve_representation(request: web.BaseRequest, state: StoreView,
                               rep: Representation) -> web.StreamResponse:
    """Answer ``request`` for ``rep`` as ``plan`` decides, its body from ``state``'s blobs."""
    decided = plan(request.method, request.headers, rep)
    if decided.error is not None:
        code, message = decided.error
        return error_response(code, message, decided.headers)
    if decided.span is None:
        return web.Response(status=decided.status, headers=decided.headers)
    body = await _body(state, rep)
    headers = _cache_padded(request, decided.headers, rep.size) if decided.status == 200 \
        else decided.headers
    start, end = decided.span
    if not isinstance(body, bytes):
        with body:
            return await _stream_file(request, body, start, end, decided.status, headers)
    return web.Response(status=decided.status, headers=headers,
                        body=body[start:end + 1] if decided.status == 206 else body)


def _cache_padded(request: web.BaseRequest, headers: Mapping[str, str],
                  size: int) -> Mapping[str, str]:
    """``headers`` and the pad that starts the body on a page in the front tier's cache
    file (``headers.cache_pad``), when there is one."""
    padding = cache_pad(request.headers, request.raw_path,
                        request.version == HttpVersion11 and request.keep_alive,
                        headers, size, request_id(request))
    return headers if padding is None else {**headers, PAD_HEADER: padding}


async def _body(state: StoreView, rep: Representation) -> bytes | BinaryIO:
    """The verified body: bytes, or an open verified file (of the store, or of an edge's
    cache)."""
    if rep.inline is not None:
        return rep.inline
    sha256 = rep.blob
    assert sha256 is not None  # noqa: S101 - a Representation holds inline bytes or a blob
    cached = state.cached(sha256)
    if cached is not None:
        return cached
    edge = state.edge
    if edge is None:
        path = state.blobs.verified_path(sha256, rep.size)
        if path is None:
            loaded = await asyncio.to_thread(state.blobs.load, sha256, rep.size)
            if isinstance(loaded, bytes):
                return loaded
            path = loaded
        # Opened on the loop: a verified file of the local store, its inode cached; a thread
        # hop costs a hundred times the open (docs/benchmark.md, "server hot path").
        return path.open("rb")
    # An edge: a blob it pins (a channel target, in the store) as a replica serves it; any
    # other from its cache, filled first if not held, a small one kept in memory from then
    # on (edgeblobs). A pinned file gone meanwhile (a former target handed to the cache)
    # is the cache's then.
    path = state.blobs.verified_path(sha256, rep.size)
    held = _opened(path) if path is not None else None
    if held is not None:
        return held
    if path is None and not edge.cache.verified.knows(sha256):
        pinned = await asyncio.to_thread(_pinned, state, sha256, rep.size)
        if isinstance(pinned, bytes):
            return pinned
        held = _opened(pinned) if pinned is not None else None
        if held is not None:
            return held
    return await edge.body(sha256, rep.size)


def _opened(path: Path) -> BinaryIO | None:
    """``path`` opened (on the loop, as above), or None if it is gone."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _pinned(state: StoreView, sha256: str, size: int) -> bytes | Path | None:
    """On an edge, a blob it holds in the store (a channel target), as a replica serves it;
    None: its cache's business."""
    if not state.store.blob_path(sha256).exists():
        return None
    try:
        return state.blobs.load(sha256, size)
    except BlobUnavailable:   # removed or bad meanwhile: the cache fills it
        return None


async def _stream_file(request: web.BaseRequest, fh: BinaryIO, start: int, end: int,
                       status: int, headers: Mapping[str, str]) -> web.StreamResponse:
    """Send a verified blob's open file with sendfile(2); chunked reads where that is
    impossible. The caller closes ``fh``."""
    response = web.StreamResponse(status=status, headers=headers)
    response.headers["X-Request-ID"] = request_id(request)
    response.content_length = count = end - start + 1
    with _corked(request.transport):
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
