"""The rules of the one upstream client (codecache.upstream.client), against a real server.

An aiohttp server on a loopback port answers as a misbehaving upstream might (a redirect,
an encoded body, a body over the cap, a body that stalls); the client must refuse each
the same way whoever calls it (the replica, ``check``, ``history --url``, ``audit --url``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from codecache.core.errors import ConfigError, IndexRefused, Refusal, UpstreamFailure
from codecache.upstream.client import Client, Reply, base_url, fetch, session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def redirect(_: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("http://127.0.0.1:9/elsewhere")


async def gzipped(_: web.Request) -> web.StreamResponse:
    return web.Response(body=b"\x1f\x8b junk", headers={"Content-Encoding": "gzip"})


async def large(_: web.Request) -> web.StreamResponse:
    return web.Response(body=b"x" * 5000)


async def chunked_large(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()     # no Content-Length: the cap counts what arrives
    await response.prepare(request)
    for _ in range(5):
        await response.write(b"x" * 1000)
    return response


async def stalled(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"a beginning")
    await asyncio.sleep(30)
    return response


async def echo(request: web.Request) -> web.StreamResponse:
    return web.json_response({k: v for k, v in request.headers.items()
                              if k in ("Cache-Control", "Accept-Encoding", "User-Agent")})


async def unavailable(_: web.Request) -> web.StreamResponse:
    return web.Response(status=503, body=b"busy")


ROUTES: dict[str, Handler] = {"/redirect": redirect, "/gzipped": gzipped, "/large": large,
                              "/chunked": chunked_large, "/stalled": stalled, "/echo": echo,
                              "/unavailable": unavailable}


async def get(path: str, *, cap: int = 4096, seconds: float = 5.0) -> Reply:
    app = web.Application()
    for route, handler in ROUTES.items():
        app.router.add_get(route, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)   # a stalled handler is cut short
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with session(timeout=None, agent="codecache-test") as http:
            return await Client(http, f"http://127.0.0.1:{port}/").get(
                path, seconds=seconds, cap=cap, what="document")
    finally:
        await runner.cleanup()


def test_a_plain_answer_is_read_with_the_headers_that_bypass_caches_and_encodings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment is never taken: this one does not exist.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    reply = asyncio.run(get("/echo"))
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert b'"Cache-Control": "no-cache"' in reply.body
    assert b'"Accept-Encoding": "identity"' in reply.body
    assert b'"User-Agent": "codecache-test"' in reply.body


def test_a_redirect_is_not_followed() -> None:
    with pytest.raises(UpstreamFailure, match=r"HTTP 302 to http://127\.0\.0\.1:9/elsewhere") \
            as err:
        asyncio.run(get("/redirect"))
    assert err.value.reason == "redirect"


def test_a_5xx_is_an_upstream_failure() -> None:
    with pytest.raises(UpstreamFailure, match="HTTP 503") as err:
        asyncio.run(get("/unavailable"))
    assert err.value.reason == "http_5xx"


def test_an_encoded_body_is_refused() -> None:
    with pytest.raises(IndexRefused) as err:
        asyncio.run(get("/gzipped"))
    assert err.value.reason is Refusal.BAD_ENCODING


@pytest.mark.parametrize("path", ["/large", "/chunked"])
def test_a_body_over_the_cap_is_refused(path: str) -> None:
    with pytest.raises(IndexRefused, match="over the 4096-byte cap") as err:
        asyncio.run(get(path))
    assert err.value.reason is Refusal.TOO_LARGE
    assert asyncio.run(get(path, cap=5000)).body == b"x" * 5000


def test_a_stalled_body_fails_within_the_one_deadline() -> None:
    with pytest.raises(UpstreamFailure, match="no complete document within 1s") as err:
        asyncio.run(get("/stalled", seconds=1.0))
    assert err.value.reason == "timeout"


def test_a_refused_connection_says_so_and_names_the_url() -> None:
    with socket.socket() as sock:       # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/index.json"
    with pytest.raises(UpstreamFailure, match=f"GET {url}: .*Connection refused") as err:
        fetch(url, timeout=5, cap=1024, agent="codecache-test")
    assert err.value.reason == "connect"


@pytest.mark.parametrize("url", ["ftp://host/x", "http://", "http://host:port/", "host:80",
                                 "http://[::1", "http://[::1/x"])
def test_only_an_http_url_is_taken(url: str) -> None:
    with pytest.raises(ConfigError, match="--url"):
        base_url(url)
