"""An edge's fill run in each server process: the web side serves, this fetches.

Whoever starts the server (the single-process server, or every worker of an edge) hands
it to ``server.run``: the web side knows nothing of upstreams (``web.edgeblobs.Fill``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from codecache.core.config import Config, Role
from codecache.store.edgecache import EdgeCache
from codecache.web.edgeblobs import Fill, OpenFill


def edge_fill(config: Config) -> OpenFill | None:
    """The fill for ``server.run`` of an edge (None for another role); its upstream
    connections live as long as the server."""
    if config.role is not Role.EDGE:
        return None

    @contextlib.asynccontextmanager
    async def opened(cache: EdgeCache) -> AsyncIterator[Fill]:
        # Imported here: only an edge's processes need the client side.
        from codecache.replica.edgefill import EdgeFill
        from codecache.replica.fetcher import HttpFetcher

        async with HttpFetcher.connect(config.replica)() as fetcher:
            yield EdgeFill(config, cache, fetcher)

    return opened
