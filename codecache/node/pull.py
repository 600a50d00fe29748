"""A replica's or an edge's pull loop run beside the server, in the one process that pulls.

The web side serves what the store holds and knows nothing of pulling; whoever starts the
server (the single-process server, or worker 0 of a replica) hands this in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from codecache.core.config import Config
from codecache.web.server import Background
from codecache.web.storeview import StoreView


def pull_loop(config: Config, tell: Callable[[], None] | None) -> Background | None:
    """The pull loop for ``server.run`` of a replica or an edge (None for an origin);
    ``tell`` the other workers of an install."""
    if not config.role.pulls:
        return None

    @contextlib.asynccontextmanager
    async def run(state: StoreView) -> AsyncIterator[None]:
        # Imported here: only the process that pulls (worker 0 of a replica) needs the
        # client side (aiofiles, the history mirror); the other workers stay ~1 MB smaller.
        from codecache.replica.puller import Replica

        async def installed() -> None:
            await asyncio.to_thread(state.refresh)
            if tell is not None:
                tell()

        replica = Replica(config, suspects=lambda: tuple(state.blob_problems),
                          installed=installed)
        stop = asyncio.Event()
        task = asyncio.create_task(replica.run(stop), name="replica-pull")
        try:
            yield
        finally:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return run
