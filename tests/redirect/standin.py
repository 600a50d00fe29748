"""A stand-in redirect target: a tiny real aiohttp server whose ``/readyz`` says what a test
sets, named as such.

Used only for the state a real node cannot show within a test's time: an edge that has not
confirmed its index for more than 30 s (that takes 30 s of a real edge whose upstream is
gone). It speaks real HTTP on a loopback port, in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from tests.harness.timing import free_port


class StandInTarget:
    """``GET /readyz`` answers ``facts`` (as JSON, status ``status``); anything else 404."""

    def __init__(self, facts: dict[str, Any], status: int = 200) -> None:
        self.facts = facts
        self.status = status
        self.port = free_port()
        self.probes = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _readyz(self, request: web.Request) -> web.Response:
        self.probes += 1
        return web.json_response(self.facts, status=self.status)

    @contextmanager
    def serving(self) -> Iterator[StandInTarget]:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        thread = threading.Thread(target=loop.run_forever, name="stand-in target",
                                  daemon=True)
        thread.start()
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
