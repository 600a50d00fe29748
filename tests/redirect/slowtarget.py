"""A fake redirect target that answers ``/readyz`` too slowly, named as such.

A real edge answers its ``/readyz`` in a millisecond; one slower than the redirector's
probe bound (``check_interval``, at most 2 s) is a fault a test cannot make of a real node
on demand. This tiny real aiohttp server (a thread of the test process, a real loopback
port) waits ``delay`` seconds and then answers what a perfect edge would say.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from tests.harness.timing import free_port


class SlowTarget:
    """``GET /readyz``: after ``delay`` seconds, 200 with a ready, current edge's facts."""

    def __init__(self, delay: float, history_length: int) -> None:
        self.delay = delay
        self.facts = {"ready": True, "status": "ok", "role": "edge",
                      "history_length": history_length, "seconds_since_confirmed": 0}
        self.port = free_port()
        self.probes = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _readyz(self, request: web.Request) -> web.Response:
        self.probes += 1
        await asyncio.sleep(self.delay)
        return web.json_response(self.facts)

    @contextmanager
    def serving(self) -> Iterator[SlowTarget]:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        thread = threading.Thread(target=loop.run_forever, name="slow target", daemon=True)
        thread.start()
        async def stop() -> None:
            await runner.cleanup()
            # A probe still waiting in its delay: cancelled here, not left to a closed loop.
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
