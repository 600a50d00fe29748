"""What a replica asks its upstreams for (DESIGN.md §5), behind a small interface.

``Fetcher`` is the seam between the pull (``puller``: what to accept, what to install) and
the network: the index (conditional on the one held), the release history from a byte
on, and a blob by hash into a file. ``HttpFetcher`` is it over ``upstream.client`` (the
rules of talking to an upstream live there); a unit test gives the puller a fake, and the
edge role can reuse it. A fetcher checks what the transport can (sizes, deadlines); what
the bytes mean (a signature, a hash against the index) is the puller's.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import aiofiles

from codecache.core.config import ReplicaConfig
from codecache.core.errors import IndexRefused, Refusal
from codecache.core.names import blob_url_path, etag_for
from codecache.core.trust import SignedIndex
from codecache.upstream.client import Client, session

_BLOB_SECONDS_PER_MIB = 1.0       # a blob fetch may take timeout + this per MiB


class Fetcher(Protocol):
    """An upstream's documents and blobs. Every method may raise ``UpstreamFailure`` (try
    the next upstream) or ``IndexRefused`` (what it sent is refused: too large, encoded)."""

    async def index(self, upstream: str, held: SignedIndex | None) -> bytes | None:
        """``/index.json``; None when it is exactly ``held`` (a 304)."""

    async def history(self, upstream: str, start: int | None) -> tuple[bytes, bool]:
        """``/history.json`` from byte ``start`` on (None: whole): ``history_mirror.Fetch``."""

    async def blob(self, upstream: str, sha256: str, size: int, dest: Path) -> tuple[int, str]:
        """Blob ``sha256`` written to ``dest``, at most ``size`` bytes (``blob_mismatch``
        beyond): (bytes received, their sha256)."""


# Opens a fetcher for one pull loop (its connections live as long as the context).
Connect = Callable[[], AbstractAsyncContextManager[Fetcher]]


class HttpFetcher:
    """``Fetcher`` over HTTP: one session for all upstreams, one ``Client`` per upstream."""

    def __init__(self, config: ReplicaConfig, clients: Callable[[str], Client]) -> None:
        self._config = config
        self._clients = clients

    @classmethod
    def connect(cls, config: ReplicaConfig) -> Connect:
        @contextlib.asynccontextmanager
        async def opened() -> AsyncIterator[Fetcher]:
            async with session(timeout=config.timeout, agent="codecache-replica") as http:
                yield cls(config, lambda upstream: Client(http, upstream))

        return opened

    async def index(self, upstream: str, held: SignedIndex | None) -> bytes | None:
        headers = {}
        if held is not None:
            headers["If-None-Match"] = etag_for(hashlib.sha256(held.document).hexdigest())
        statuses = (200, 304) if held is not None else (200,)
        async with self._clients(upstream).open(
                "/index.json", seconds=self._config.timeout * 3, what="index", headers=headers,
                statuses=statuses) as response:
            if response.status == 304:
                return None
            return await response.read(self._config.max_index_size, "index")

    async def history(self, upstream: str, start: int | None) -> tuple[bytes, bool]:
        headers = {} if start is None else {"Range": f"bytes={start}-"}
        statuses = (200,) if start is None else (200, 206, 416)
        cap = self._config.max_index_size
        async with self._clients(upstream).open(
                "/history.json", seconds=self._config.timeout * 3, what="history",
                headers=headers, statuses=statuses) as response:
            if response.status == 416:
                return b"", True     # shorter than what is held: read it whole
            if response.status == 206:
                # A 206 must be the range asked for; then it is checked byte for byte.
                if not response.headers.get("Content-Range", "").startswith(
                        f"bytes {start}-"):
                    return b"", True
                return await response.read(cap, "history"), True
            return await response.read(cap, "history"), False

    async def blob(self, upstream: str, sha256: str, size: int, dest: Path) -> tuple[int, str]:
        deadline = self._config.timeout + size / (1 << 20) * _BLOB_SECONDS_PER_MIB
        digest = hashlib.sha256()
        received = 0
        # A blob is immutable, named by its hash: a cache on the way may answer it.
        async with self._clients(upstream).open(blob_url_path(sha256), seconds=deadline,
                                                what=f"blob {sha256}",
                                                bypass_caches=False) as response:
            body = response.chunks()   # refuses an encoded body first, as every read does
            declared = response.content_length
            if declared is not None and declared != size:
                raise IndexRefused(Refusal.BLOB_MISMATCH, f"blob {sha256}: upstream "
                                   f"announces {declared} bytes, the index {size}")
            async with aiofiles.open(dest, "wb") as out:
                async for chunk in body:
                    received += len(chunk)
                    if received > size:
                        raise IndexRefused(Refusal.BLOB_MISMATCH, f"blob {sha256} is longer "
                                           f"than the {size} bytes the index lists")
                    digest.update(chunk)
                    await out.write(chunk)
        return received, digest.hexdigest()
