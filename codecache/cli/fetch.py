"""The command line's GET of a file a server publishes (``history --url``, ``audit --url``)."""

from __future__ import annotations

from codecache.core.config import Config


def fetch_index(url: str, config: Config, name: str = "index.json") -> bytes:
    """``URL/index.json`` (or ``URL/{name}``) through the upstream client, capped at
    ``replica.max_index_size`` as a replica's pull is.

    Raises:
        ConfigError: ``url`` is not an http(s) URL.
        UpstreamError: the server cannot be reached or does not answer 200.
        IndexRefused: the body is larger than ``replica.max_index_size``.
    """
    from codecache.upstream.client import base_url, fetch  # aiohttp: only when fetching

    target = base_url(url) + "/" + name
    return fetch(target, timeout=config.replica.timeout * 3,
                 cap=config.replica.max_index_size, agent="codecache").body
