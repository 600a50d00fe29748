"""The one HTTP client that talks to an upstream: a replica's, ``check``'s, ``history``'s and
``audit``'s (and next the edge's and the redirector's probes).

Owns the rules of asking another node for something, so no caller writes them again:
no proxies, ``.netrc`` or cookies from the environment; redirects never followed (an
upstream must not send us elsewhere); nothing inflated (``Accept-Encoding: identity``,
an encoded body refused as ``bad_encoding``: a gzip bomb stays a few bytes of junk);
caches bypassed (``Cache-Control: no-cache``); bodies read in pieces under a size cap
(``too_large``); one deadline over a whole request, body included; and every foreign
exception (aiohttp's, a timeout) translated here, once, into ``UpstreamFailure``.

It is aiohttp's (already the server's): the replica keeps one session for its loop, and a
synchronous caller (``check``, ``history --url``, ``audit --url``) runs one request in a
loop of its own through ``fetch`` (a session per request: a plugin asks a handful of
things). What an answer means (an index, a history, a blob) is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Collection, Mapping
from urllib.parse import urlsplit

import aiohttp

from codecache.core.errors import ConfigError, IndexRefused, Refusal, UpstreamFailure

CHUNK = 256 * 1024
OK = (200,)
# Every status but a redirect: for callers that judge the status themselves (``check``).
ANY_ANSWER = frozenset(range(100, 300)) | frozenset(range(400, 600))


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]     # lower-case names
    body: bytes


def session(*, timeout: float | None, agent: str, connections: int = 8) -> aiohttp.ClientSession:
    """A session that cannot be pushed around; ``timeout`` bounds connecting and any stall
    of a body (None: only each request's deadline does)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
        auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
        headers={"Accept-Encoding": "identity", "User-Agent": agent},
        connector=aiohttp.TCPConnector(limit=connections, ttl_dns_cache=10))


def base_url(url: str, what: str = "--url") -> str:
    """``url`` without its trailing slash, if it is ``http(s)://HOST[:PORT][/PATH]``.

    Raises:
        ConfigError: anything else.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket: "http://[::1"
        raise ConfigError(f"{what}: expected http://HOST[:PORT][/PATH], got {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}: expected http://HOST[:PORT][/PATH], got {url!r}")
    try:
        parts.port  # noqa: B018 - parsed for its ValueError
    except ValueError:
        raise ConfigError(f"{what}: bad port in {url!r}") from None
    return url.rstrip("/")


class Response:
    """An answer being read: its status and headers, its body read capped or streamed."""

    def __init__(self, raw: aiohttp.ClientResponse, base: str) -> None:
        self._raw = raw
        self.base = base       # the upstream that answered
        self.status = raw.status
        self.headers = raw.headers
        self.content_length = raw.content_length

    async def read(self, cap: int, what: str) -> bytes:
        """The whole body, refused (``too_large``) once over ``cap`` bytes.

        Raises:
            IndexRefused: encoded (``bad_encoding``); over the cap (``too_large``).
        """
        body = self.chunks()
        if self.content_length is not None and self.content_length > cap:
            raise IndexRefused(Refusal.TOO_LARGE, f"{what} of {self.content_length} bytes is "
                               f"over the {cap}-byte cap")
        data = bytearray()
        async for chunk in body:
            data += chunk
            if len(data) > cap:
                raise IndexRefused(Refusal.TOO_LARGE, f"{what} is over the {cap}-byte cap")
        return bytes(data)

    def chunks(self) -> AsyncIterator[bytes]:
        """The body in pieces, as it comes.

        Raises:
            IndexRefused: an encoded body (``bad_encoding``).
        """
        # Checked where a body is read, not for an answer the caller reads none of (a 304,
        # a 416): nothing is inflated, and an encoded body is refused, never decoded.
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise IndexRefused(Refusal.BAD_ENCODING, f"{self.base} sent Content-Encoding "
                               f"{encoding!r}; only identity is accepted")
        return self._raw.content.iter_chunked(CHUNK)

    def reply(self, body: bytes) -> Reply:
        return Reply(self.status, {k.lower(): v for k, v in self.headers.items()}, body)


class Client:
    """Requests to one upstream (``base``, no trailing slash) over a shared session."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self._http = http
        self.base = base.rstrip("/")

    @contextlib.asynccontextmanager
    async def open(self, path: str, *, seconds: float, what: str,
                   headers: Mapping[str, str] | None = None,
                   statuses: Collection[int] = OK,
                   bypass_caches: bool = True) -> AsyncIterator[Response]:
        """GET ``base + path``, everything inside within ``seconds``; bypassing caches
        (``Cache-Control: no-cache``) unless told: an immutable blob may come from one.

        Raises:
            UpstreamFailure: no answer in time or at all, a redirect, a status outside
                ``statuses`` (``http_5xx``, ``http_status``).
        """
        url = self.base + path
        sent = {"Cache-Control": "no-cache"} if bypass_caches else {}
        try:
            async with asyncio.timeout(seconds), self._http.get(
                    url, headers={**sent, **(headers or {})}, allow_redirects=False) as raw:
                response = Response(raw, self.base)
                check_status(response, statuses)
                yield response
        except TimeoutError:
            raise UpstreamFailure("timeout", f"no complete {what} within {seconds:.0f}s") \
                from None
        except aiohttp.ClientSSLError as err:   # before its base: name the TLS failure
            raise UpstreamFailure("connect", one_line(err)) from None
        except aiohttp.ClientConnectorError as err:
            # asyncio words a refused connection "Connect call failed": name the errno.
            errno = err.os_error.errno
            cause = os.strerror(errno) if errno and errno > 0 else \
                err.os_error.strerror or one_line(err.os_error)
            raise UpstreamFailure("connect", f"cannot connect to {err.host}:{err.port}: "
                                  f"{cause}") from None
        except aiohttp.ClientError as err:
            raise UpstreamFailure("connect", one_line(err)) from None

    async def get(self, path: str, *, seconds: float, cap: int, what: str,
                  headers: Mapping[str, str] | None = None,
                  statuses: Collection[int] = OK) -> Reply:
        """``open`` and read the body whole, capped."""
        async with self.open(path, seconds=seconds, what=what, headers=headers,
                             statuses=statuses) as response:
            return response.reply(await response.read(cap, what))


def check_status(response: Response, statuses: Collection[int]) -> None:
    """Only a status the caller reads (a plain 200 unless told) is read; an upstream's
    failure otherwise.

    Raises:
        UpstreamFailure: redirect, 5xx or another status.
    """
    status = response.status
    if status not in statuses:
        if 300 <= status < 400:
            # Not followed: an upstream must not send us elsewhere.
            raise UpstreamFailure("redirect", f"HTTP {status} to "
                                  f"{response.headers.get('Location')} not followed")
        if status >= 500:
            raise UpstreamFailure("http_5xx", f"HTTP {status}")
        raise UpstreamFailure("http_status", f"HTTP {status}")


def fetch(url: str, *, timeout: float, cap: int, agent: str, what: str | None = None,
          statuses: Collection[int] = OK) -> Reply:
    """One GET of ``url`` from synchronous code, in an event loop of its own; a failure's
    message names the URL (``GET URL: ...``).

    Raises:
        ConfigError: ``url`` is not an http(s) URL.
        UpstreamFailure, IndexRefused: as ``Client.open``.
    """
    base_url(url)
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    path = url[len(base):] or "/"

    async def one() -> Reply:
        async with session(timeout=None, agent=agent, connections=1) as http:
            return await Client(http, base).get(path, seconds=timeout, cap=cap,
                                                what=what or url, statuses=statuses)

    try:
        return asyncio.run(one())
    except UpstreamFailure as err:
        raise UpstreamFailure(err.reason, f"GET {url}: {err}") from None


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
