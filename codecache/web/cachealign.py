"""Page-aligned bodies in the front tier's proxy cache.

nginx keeps a cached response as one file: a header of its own, the cache key, the response
header exactly as the replica sent it, then the body; a cache hit sends the body with
sendfile(2) from where it starts in that file. From an offset that is not a multiple of the
page size, sendfile(2) costs about twice the CPU (measured on loopback with nginx: a 205 KB
body 36 -> 75 us; 64 KB bodies stalled; nginx/README.md, "Cost per request"). So the front
tier says where the response header will start in its cache file (request header
``X-Codecache-Cache-Offset``: the bytes before the key, which is the request target), and the
replica pads its response header with ``X-Codecache-Pad`` (hidden from clients by nginx) so
that the body begins on a page boundary. A wrong or missing offset costs speed, never
correctness: the pad is one more header line.
"""

from __future__ import annotations

from collections.abc import Iterable

PAGE = 4096
# nginx parses the whole cached header on every hit, pad included (about 1.2 ns a byte: a
# 304 from the cache costs ~4 us more). A 32 KB body gains nothing from alignment, 64 KB does.
MIN_BODY = 64 * 1024
OFFSET_HEADER = "X-Codecache-Cache-Offset"
PAD_HEADER = "X-Codecache-Pad"
# Far above what nginx writes before the key (342 bytes since nginx 1.7.8 on 64-bit Linux); a
# larger value is a mistake, not a layout, and is ignored.
_MAX_OFFSET = 2 * PAGE


def header_start(offset: str | None, target: str) -> int | None:
    """Where the response header starts in the front tier's cache file, or None to not pad.

    ``offset`` is the ``X-Codecache-Cache-Offset`` request header: the bytes before the
    cache key. The key is the request target (nginx: ``proxy_cache_key $request_uri``),
    followed by a newline.
    """
    if offset is None or not (offset.isascii() and offset.isdigit()) or not target.isascii():
        return None
    before = int(offset)
    return before + len(target) + 1 if before <= _MAX_OFFSET else None


def pad(start: int, status_line: str, headers: Iterable[tuple[str, str]]) -> str:
    """The ``X-Codecache-Pad`` value that puts the first body byte on a page boundary, when
    the response header (status line, ``headers``, the pad itself, the blank line) is
    written as HTTP/1.1 serialises it, starting at ``start`` bytes into the file."""
    size = start + len(status_line) + 2
    size += sum(len(name) + len(value) + 4 for name, value in headers)   # "N: V\r\n"
    size += len(PAD_HEADER) + 4 + 2                                       # the pad, "\r\n"
    return "." * (-size % PAGE)
