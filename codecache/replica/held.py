"""What a replica's own store holds, as its pull sees it: the index, the floor, the marks.

Owns the puller's view of its store (DESIGN.md §5): the signed index held, re-read and
verified only when its file changed; the rollback floor, finished after an install killed
between the index swap and the state write; the marks each upstream left (``trust.offered``);
and the store's writers' lock, taken without blocking the event loop. The trust decision
is ``trust.decide``'s; the files are ``Store``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping

from codecache.core.errors import IndexRefused, StoreBusy, StoreError
from codecache.core.signing import PublicKey
from codecache.core.trust import Mark, SignedIndex, TrustState
from codecache.store.files import FileIdentity, file_identity
from codecache.store.state import LocalState
from codecache.store.store import Store

log = logging.getLogger("codecache.replica")


class Held:
    """The index one replica store holds and what it accepted before. One per pull loop."""

    def __init__(self, store: Store, keys: Mapping[str, PublicKey]) -> None:
        self._store = store
        self._keys = keys
        self.index: SignedIndex | None = None
        self._identity: FileIdentity | None = None

    def trust_state(self) -> TrustState:
        """What this store accepted before; the held index is re-read only when it changed.

        Blocking (reads files): run it in a thread.
        """
        local = self._store.state.load()
        identity = file_identity(self._store.index_path)
        if identity != self._identity:
            self._identity = identity
            try:
                self.index = self._store.read_signed(self._keys)
            except (IndexRefused, StoreError) as err:
                log.error("index on disk refused, will take the upstream's again: %s", err)
                self.index = None
        if self.index is not None and local.highest_serial < self.index.serial:
            local = self._raise_floor(self.index.serial)
        return TrustState(local.highest_serial, self.index, local.marks)

    def installed(self, candidate: SignedIndex) -> None:
        """``candidate`` was just swapped in, verified already (under the writers' lock, so
        no other writer came in between): not read and verified again."""
        self.index, self._identity = candidate, file_identity(self._store.index_path)

    def _raise_floor(self, serial: int) -> LocalState:
        """Finish an install killed between the index swap and the state write.

        ``Store.install`` swaps ``index.json`` first, then records the serial; a kill in
        between left the rollback floor below the index served, and a confirmation (304)
        never writes the state again.
        """
        try:
            with self._store.locked(wait=1.0):
                local = self._store.state.load()
                if local.highest_serial < serial:
                    log.warning("highest serial accepted was %d, below the index held (%d): "
                                "an install was interrupted; recording %d",
                                local.highest_serial, serial, serial)
                    local = self._store.state.record_serial(serial)
        except StoreBusy:
            local = self._store.state.load()   # another writer is at work: next pull
        return local

    async def save_marks(self, marks: Mapping[str, Mark]) -> None:
        async with self.writer_lock():
            await asyncio.to_thread(self._store.state.record_marks, marks)

    @contextlib.asynccontextmanager
    async def writer_lock(self) -> AsyncIterator[None]:
        """The store's writers' lock, taken without blocking the event loop."""
        fd = await asyncio.to_thread(self._store.acquire_lock)
        try:
            yield
        finally:
            os.close(fd)
