"""What a replica holds of the release history, and how it takes an upstream's (DESIGN.md §9).

Owns the replica's side of ``history.json``: the history held (verified against the index
held, kept in memory while its file is unchanged, so a pull re-reads nothing), what to ask
an upstream for when a new index arrives, and reading the answer. The trust decision is
``trust.accept_history``; the transport is the caller's ``Fetch`` (the replica's HTTP
client), so this module does no network I/O itself and is tested without sockets.

Growth: the file is one canonical-JSON entry per line (``history``), so an append never
moves an earlier byte. A replica holding ``n`` entries asks for the bytes from the start of
its own entry ``n-1`` on and takes them only if they start with exactly that entry's bytes
and the new entries chain on from it: one overlap entry plus what is new. Anything else (a
whole file, a 416, other bytes there, a link that does not follow) is read whole, and
``accept_history`` names what differs. ``If-Range`` is not used: the file's ETag changes
with every append, so it would turn every such request into a whole download; the overlap
entry is the validator instead (through the hash chain it pins the whole prefix).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from codecache.core.errors import HistoryError, IndexRefused, Refusal, StoreError
from codecache.core.history import Entry, History
from codecache.core.history_parse import parse_document, parse_tail
from codecache.core.index import HistoryHead
from codecache.core.trust import accept_history
from codecache.store.files import FileIdentity, file_identity
from codecache.store.store import Store

log = logging.getLogger("codecache.replica")

# GET /history.json from byte ``start`` on (None: all of it) -> (body, partial). A partial
# answer whose bytes are not that range (a 416, another Content-Range) is (b"", True).
Fetch = Callable[[int | None], Awaitable[tuple[bytes, bool]]]


class HistoryBehind(Exception):
    """The upstream's file is shorter than the index it served signs.

    Not a refusal: nothing is wrong with what it signed; its history has not caught up
    (a cache in between, a pool of replicas behind one name). The caller treats it as an
    upstream failure and tries again (or the next upstream).
    """


class HistoryMirror:
    """The history one replica store holds. Construct once per pull loop."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._history: History | None = None
        self._identity: FileIdentity | None = None

    def held(self, head: HistoryHead) -> History | None:
        """The history on disk verified against ``head``; None if it does not verify.

        Blocking (reads the file when it changed): run it in a thread.
        """
        identity = file_identity(self._store.history_path)
        if identity == self._identity and (self._history is None
                                           or self._history.head == head):
            return self._history   # None: this very file failed before (not re-read)
        self._identity = identity
        try:
            self._history = self._store.load_history(head)
        except (HistoryError, StoreError) as err:
            log.error("history on disk does not verify against the index held (%s): it is "
                      "fetched whole from the upstream", err)
            self._history = None
        return self._history

    def installed(self, history: History) -> None:
        """``history`` is now the store's file (after ``Store.install``)."""
        self._history = history
        self._identity = file_identity(self._store.history_path)

    async def take(self, fetch: Fetch, upstream: str, want: HistoryHead | None,
                   held: HistoryHead | None, *, allow_fork: bool = False) -> History | None:
        """The history a new index signs (``want``), verified against the one held.

        None where the store's file stays as it is (the same history, or none).

        Raises:
            IndexRefused: ``history_fork`` (``trust.accept_history``), ``malformed``,
                ``too_large``; the caller's ``Fetch`` errors.
        """
        local = await asyncio.to_thread(self.held, held) if held is not None else None
        if want is not None and local is not None and want == local.head:
            return None   # a re-sign: the history held is the one signed
        offered: History | list[Entry] | None = None
        # A shorter history than the one held is a fork whatever the upstream's file says.
        if want is not None and (allow_fork or held is None or want.length >= held.length):
            offered = await self._offered(fetch, upstream, local, want)
            if len(offered) < want.length:
                raise HistoryBehind(f"{upstream}/history.json has {len(offered)} entries, its "
                                    f"index signs {want.length}")
        return await asyncio.to_thread(accept_history, want, offered, held, local=local,
                                       allow_lower=allow_fork)

    async def repair(self, fetch: Fetch, upstream: str, head: HistoryHead) -> History | None:
        """The history held, fetched whole again, when the file no longer verifies on disk.

        None when the file is fine.

        Raises:
            IndexRefused: the upstream's history is not the one held; the ``Fetch`` errors.
        """
        if await asyncio.to_thread(self.held, head) is not None:
            return None
        raw, _ = await fetch(None)
        entries = await asyncio.to_thread(_parse, raw, upstream)
        return await asyncio.to_thread(accept_history, head, entries, head)

    async def _offered(self, fetch: Fetch, upstream: str, local: History | None,
                       want: HistoryHead) -> History | list[Entry]:
        """What the upstream offers: the entries held plus its tail, or its whole file."""
        if local is not None and len(local) and want.length > len(local):
            raw, partial = await fetch(local.line_offset(len(local) - 1))
            if not partial:
                return await asyncio.to_thread(_parse, raw, upstream)
            tail = parse_tail(raw, local.lines[-1])
            if tail is not None:
                try:
                    extended = await asyncio.to_thread(local.extended, tail)
                except HistoryError:
                    pass
                else:
                    log.debug("history: %d new entries in %d bytes from %s", len(tail),
                              len(raw), upstream)
                    return extended
            log.info("history from %s does not continue the %d entries held byte for byte: "
                     "reading it whole", upstream, len(local))
        raw, _ = await fetch(None)
        return await asyncio.to_thread(_parse, raw, upstream)


def _parse(raw: bytes, upstream: str) -> list[Entry]:
    try:
        return parse_document(raw)
    except HistoryError as err:
        raise IndexRefused(Refusal.MALFORMED, f"history from {upstream}: {err}") from None
