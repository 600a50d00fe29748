"""The rules of the one upstream client (codecache.upstream.client), against a real server.

An aiohttp server on a loopback port answers as a misbehaving upstream might (a redirect,
an encoded body, a body over the cap, a body that stalls); the client must refuse each
the same way whoever calls it (the replica, ``check``, ``history --url``, ``audit --url``).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


async def not_modified_encoded(_: web.Request) -> web.StreamResponse:
    return web.Response(status=304, headers={"Content-Encoding": "gzip"})


ROUTES["/not-modified"] = not_modified_encoded


async def serving(work: Callable[[Client], Awaitable[Reply]]) -> Reply:
    """``work`` done with a client of a real server that answers ``ROUTES``."""
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
            return await work(Client(http, f"http://127.0.0.1:{port}/"))
    finally:
        await runner.cleanup()


async def get(path: str, *, cap: int = 4096, seconds: float = 5.0,
              bypass_caches: bool = True) -> Reply:
    async def one(client: Client) -> Reply:
        async with client.open(path, seconds=seconds, what="document",
                               bypass_caches=bypass_caches) as response:
            return response.reply(await response.read(cap, "document"))

    return await serving(one)


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


def test_an_immutable_blob_may_come_from_a_cache() -> None:
    # Blobs are asked without Cache-Control: a cache on the way may answer them.
    assert b"Cache-Control" not in asyncio.run(get("/echo", bypass_caches=False)).body


def test_an_answer_without_a_body_to_read_is_not_judged_by_its_encoding() -> None:
    async def not_modified(client: Client) -> Reply:
        async with client.open("/not-modified", seconds=5, what="index",
                               statuses=(200, 304)) as response:
            return response.reply(b"")

    assert asyncio.run(serving(not_modified)).status == 304


def test_a_certificate_that_does_not_verify_is_named(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def attempt() -> None:
        app = web.Application()
        app.router.add_get("/index.json", large)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        port = runner.addresses[0][1]
        try:
            await asyncio.to_thread(fetch, f"https://127.0.0.1:{port}/index.json", timeout=5,
                                    cap=1 << 20, agent="codecache-test")
        finally:
            await runner.cleanup()

    with pytest.raises(UpstreamFailure, match="certificate verify failed") as err:
        asyncio.run(attempt())
    assert err.value.reason == "connect"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (no client trusts it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
