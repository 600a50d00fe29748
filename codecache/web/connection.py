"""A connection of the server: aiohttp's connection handler, with two additions.

Owns: the bound on the arrival of a request header (``server.header_timeout``, against
slowloris) and handing the requests ``fastpath`` answers to it before aiohttp's request
handling sees them (``[server] fast_answers``).

Depends on aiohttp internals (pyproject pins aiohttp's minor series; check them on an
upgrade): ``RequestHandler``'s queue of parsed requests (``_messages``), the future its
loop ``start`` waits on (``_waiter``), ``_request_in_progress``, ``_buffer_paused``, its
parser (``_parser``, ``message_consumed``), ``_manager.requests_count``,
``_next_keepalive_close_time``/``_keepalive_timeout``, ``_loop``, and ``web.Server``'s
``_kwargs``/``_loop``. tests/http/test_fast_answers.py holds the bytes to those of
aiohttp's own answers; tests/http/test_hostile_requests.py the header bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from codecache.web.fastpath import FastPath


class Connection(RequestHandler):
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


class LowLevelServer(web.Server):
    """``web.Server`` making ``Connection`` handlers."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
                 *, header_timeout: float, fast: FastPath | None = None,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout
        self._fast = fast

    def __call__(self) -> RequestHandler:
        return Connection(self, loop=self._loop, header_timeout=self._header_timeout,
                           fast=self._fast, **self._kwargs)
