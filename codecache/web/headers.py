"""What a response carries besides its representation's own headers.

Owns the request id (reused from ``X-Request-ID`` when acceptable, else made), the pad that
starts a body on a page of the front tier's cache file (``cachealign``) with the prediction
of the header bytes around it, and the ``Server`` value; both ways of answering
(``server.Front`` through aiohttp, ``fastpath``) take them from here.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

from aiohttp.http import SERVER_SOFTWARE

from codecache.web.cachealign import MIN_BODY, OFFSET_HEADER, PAD_HEADER, header_start, pad
from codecache.web.conditional import format_http_date

SERVER = SERVER_SOFTWARE
DATE_SHAPE = format_http_date(0)  # an IMF-fixdate is always this wide (aiohttp's Date too)
# A client's (or nginx's) X-Request-ID is reused only if it is short and plain: it goes
# into every log line of the request and back into the response.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")


def request_id_from(given: str | None) -> str:
    """``given`` (the request's ``X-Request-ID``) if acceptable, else a new id.

    nginx/codecache.conf passes the client's id or its own ``$request_id``, so one id
    follows a download from the front tier's access log into the replica's.
    """
    if given and _REQUEST_ID_RE.fullmatch(given):
        return given
    # 128 random bits as 32 hex digits, like nginx's $request_id. A correlation id, not a
    # secret: the interpreter's generator (seeded from os.urandom in every process) costs
    # a fraction of a getrandom(2) call per request.
    return f"{random.getrandbits(128):032x}"


def cache_pad(request_headers: Mapping[str, str], target: str, keep_alive_11: bool,
              headers: Mapping[str, str], size: int, rid: str) -> str | None:
    """The ``X-Codecache-Pad`` value for a full 200 of ``size`` bytes with ``headers``, or
    None. Only for a body of at least ``cachealign.MIN_BODY``, when the request says where
    the header will start in the front tier's cache file (``cachealign``) and the connection
    is kept-alive HTTP/1.1 (else aiohttp would add a Connection header, not worth
    predicting)."""
    if size < MIN_BODY:
        return None
    start = header_start(request_headers.get(OFFSET_HEADER), target)
    if start is None or not keep_alive_11:
        return None
    # The headers written besides these (aiohttp's web_response._prepare_headers, and
    # fastpath the same): the request id, Content-Length, a Date (fixed width), Server.
    sent = [*headers.items(), ("X-Request-ID", rid), ("Content-Length", str(size)),
            ("Date", DATE_SHAPE), ("Server", SERVER)]
    return pad(start, "HTTP/1.1 200 OK", sent)


__all__ = ["DATE_SHAPE", "PAD_HEADER", "SERVER", "cache_pad", "request_id_from"]
