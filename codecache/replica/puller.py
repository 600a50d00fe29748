"""The pull loop of a replica or an edge (DESIGN.md §5): a verified index and its blobs.

Owns the pull: the failover order over ``upstreams``, what is taken from the one that
answers (a new index once its blobs, each hashed to its name, and its history are on
disk; a confirmation; a repair of what is bad on disk), and reporting each pull to the
``PullRecord``. What is asked of an upstream goes through a ``Fetcher`` (``fetcher``; the
HTTP rules live in ``upstream.client``); what the store holds and accepted before is
``held``'s. It decides nothing about trust itself (``trust`` does) and writes the store only
through ``Store.install`` / ``Store.add_blob``, under the writers' lock, the index swapped
last.

One pull: ``GET /index.json`` from the first upstream with ``Cache-Control: no-cache`` and
``If-None-Match`` of the index held (an unchanged index costs a 304). A 304, or the same
index again, confirms the one held. A new index that ``trust`` accepts is installed once
every blob it lists is on disk and hashed right, and its release history (``/history.json``,
fetched after the index, only what is new: ``history_mirror``) verifies against it and
keeps every entry held (``history_fork`` otherwise; ``trust.accept_history`` decides).
A network error, a timeout, a 5xx, a redirect or a refused index moves on to the next
upstream; when none answers, the last good index keeps being served.

An edge pulls alike, with two differences (``Role.EDGE``): what it must hold before the
swap is only the channel targets (``readiness.must_hold``; the rest is its cache's, and
``edgekeep`` moves blobs between the two around an install), and its upstream is a pool
(``trust.decide(pool=True)``: a lower serial with a prefix of the history held is
``stale_upstream``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping

from codecache.core.config import Config, Role
from codecache.core.errors import (
    CodecacheError,
    IndexRefused,
    Refusal,
    UpstreamFailure,
)
from codecache.core.index import Index
from codecache.core.readiness import must_hold
from codecache.core.signing import PublicKey, load_trusted_keys
from codecache.core.trust import (
    Mark,
    Outcome,
    SignedIndex,
    TrustState,
    decide,
    offered,
    verify,
)
from codecache.replica.edgekeep import EdgeKeep
from codecache.replica.fetcher import Connect, Fetcher, HttpFetcher
from codecache.replica.held import Held
from codecache.replica.history_mirror import Fetch, HistoryBehind, HistoryMirror
from codecache.replica.record import PullRecord
from codecache.store.files import FileIdentity, check_blob, file_identity
from codecache.store.store import Store

log = logging.getLogger("codecache.replica")
_PARALLEL_BLOBS = 4


class Replica:
    """The pull loop of one replica store. Construct once per process; ``run`` or ``pull``."""

    def __init__(self, config: Config, *, suspects: Callable[[], Collection[str]] = frozenset,
                 installed: Callable[[], Awaitable[None]] | None = None,
                 connect: Connect | None = None, edge_keep: EdgeKeep | None = None) -> None:
        self._config = config
        self._store = Store(config.store.path)
        self._keys: dict[str, PublicKey] = load_trusted_keys(config.signing.trusted_keys)
        # Blobs the server found bad on disk (its scrub), so the next pull fetches them again.
        self._suspects = suspects
        # Called after an install, so a server in this process serves it without waiting
        # for its next look at the store.
        self._installed = installed
        self._connect = connect or HttpFetcher.connect(config.replica)
        self._new_install = False
        self._held = Held(self._store, self._keys)   # the index held, the floor, the marks
        self._verified: dict[str, FileIdentity] = {}
        self._history = HistoryMirror(self._store)   # the release history held
        self._record = PullRecord()
        # An edge holds only its channel targets in the store (the rest is its cache's),
        # and its upstream is a pool (DESIGN.md §5).
        self._edge = config.role is Role.EDGE
        self._keep = edge_keep if edge_keep is not None or not self._edge else \
            EdgeKeep.open(self._store, config.edge.cache_size)

    # --- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Pull every ``replica.interval`` until ``stop`` is set."""
        async with self._connect() as fetcher:
            while not stop.is_set():
                try:
                    await self.pull(fetcher)
                except CodecacheError as err:  # store full or busy, a blob gone meanwhile
                    log.error("pull failed: %s", err)
                except Exception:
                    # A bug must not stop a replica from trying again: it keeps serving.
                    log.exception("pull failed unexpectedly")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._config.replica.interval)

    async def pull_once(self, *, allow_lower: bool = False) -> bool:
        """One pull with connections of its own (``codecache replicate --once``)."""
        async with self._connect() as fetcher:
            return await self.pull(fetcher, allow_lower=allow_lower)

    async def pull(self, fetcher: Fetcher, *, allow_lower: bool = False) -> bool:
        """Try each upstream in order until one confirms or updates the index held.

        ``allow_lower`` is the operator's explicit override (logged): accept a lower serial
        once, after a restore or a key compromise.

        Returns True when the index held is now confirmed current.
        """
        started = time.time()
        errors: list[str] = []
        confirmed_from: str | None = None
        for upstream in self._config.replica.upstreams:
            try:
                if await self._pull_from(fetcher, upstream, allow_lower=allow_lower):
                    confirmed_from = upstream
                    break
            except UpstreamFailure as err:
                self._record.failed(err)
                errors.append(f"{upstream}: {err}")
                log.warning("upstream failed upstream=%s reason=%s: %s", upstream, err.reason,
                            err, extra={"upstream": upstream, "reason": err.reason})
            except IndexRefused as err:
                self._record.refused(err)
                errors.append(f"{upstream}: refused ({err.reason.value}): {err}")
                level = logging.INFO if err.reason is Refusal.STALE_UPSTREAM else logging.ERROR
                log.log(level, "index refused upstream=%s reason=%s: %s", upstream,
                        err.reason.value, err,
                        extra={"upstream": upstream, "reason": err.reason.value})
        await asyncio.to_thread(self._save_status, started, confirmed_from, errors)
        if self._new_install and self._installed is not None:
            # After replica.json: the server then tells the whole story at once.
            self._new_install = False
            await self._installed()
        return confirmed_from is not None

    # --- one upstream ---------------------------------------------------------------------

    async def _pull_from(self, fetcher: Fetcher, upstream: str, *, allow_lower: bool) -> bool:
        state = await asyncio.to_thread(self._held.trust_state)
        raw = await fetcher.index(upstream, state.held)
        if raw is None:  # 304: the upstream has exactly the index held
            await self._repair(fetcher, upstream, state.held)
            return True
        candidate = verify(raw, self._keys)
        marks = offered(state, upstream, candidate)
        if self._edge and state.held is not None and state.held.index.history is not None:
            # What a lower serial from the pool is compared with (trust rule 2).
            state = dataclasses.replace(state, history=await asyncio.to_thread(
                self._history.held, state.held.index.history))
        try:
            outcome = decide(candidate, state, now=int(time.time()), source=upstream,
                             allow_lower=allow_lower, pool=self._edge)
        except IndexRefused:
            if marks is not state.marks:
                await self._held.save_marks(marks)
            raise
        if outcome is Outcome.CURRENT:
            if marks is not state.marks:
                await self._held.save_marks(marks)
            await self._repair(fetcher, upstream, state.held)
            return True
        if allow_lower:
            if candidate.serial < state.floor:
                log.warning("OPERATOR OVERRIDE: accepting serial %d from %s below the highest "
                            "serial accepted before (%d)", candidate.serial, upstream,
                            state.floor)
            # The override starts the record afresh: the old marks would refuse it again.
            marks = {upstream: offered(TrustState(), upstream, candidate)[upstream]}
        await self._install(fetcher, upstream, candidate, state.held, marks, allow_lower)
        log.info("index installed serial=%d upstream=%s", candidate.serial, upstream,
                 extra={"serial": candidate.serial, "upstream": upstream})
        self._new_install = True
        return True

    async def _install(self, fetcher: Fetcher, upstream: str, candidate: SignedIndex,
                       held: SignedIndex | None, marks: Mapping[str, Mark],
                       reset_serial: bool) -> None:
        async with self._held.writer_lock():
            # The history first: it is small, and a fork refuses the index before any blob.
            try:
                history = await self._history.take(
                    self._history_fetch(fetcher, upstream), upstream, candidate.index.history,
                    held.index.history if held is not None else None, allow_fork=reset_serial)
            except HistoryBehind as err:
                raise UpstreamFailure("history_behind", str(err)) from None
            sizes = self._must_hold(candidate.index)
            missing = await asyncio.to_thread(self._bad_blobs, sizes)
            if self._keep is not None and missing:
                # A rollback's target, or a release a pilot asked for: no WAN transfer.
                missing -= await asyncio.to_thread(self._keep.seed,
                                                   {s: sizes[s] for s in missing})
            await self._fetch(fetcher, upstream, {s: sizes[s] for s in missing})
            await asyncio.to_thread(
                self._store.install, candidate, previous=held.index if held else None,
                history=history, marks=marks, reset_serial=reset_serial, required=sizes)
            self._held.installed(candidate)
            if history is not None:
                self._history.installed(history)
            if self._keep is not None:
                await asyncio.to_thread(self._keep.settle, sizes)

    # --- repairs: what the index held lists, bad on disk ------------------------------------

    @staticmethod
    def _history_fetch(fetcher: Fetcher, upstream: str) -> Fetch:
        return functools.partial(fetcher.history, upstream)

    async def _repair_history(self, fetcher: Fetcher, upstream: str,
                              held: SignedIndex) -> None:
        """Fetch the history held again when the file no longer verifies on disk.

        A failure here is logged, never a refusal: the index itself was just confirmed.
        """
        head = held.index.history
        if head is None or await asyncio.to_thread(self._history.held, head) is not None:
            return
        try:
            async with self._held.writer_lock():
                history = await self._history.repair(self._history_fetch(fetcher, upstream),
                                                     upstream, head)
                if history is None:
                    return
                await asyncio.to_thread(self._store.install, held, previous=held.index,
                                        history=history)
                self._history.installed(history)
                self._new_install = True   # the server in this process serves it at once
        except (UpstreamFailure, IndexRefused) as err:
            log.error("cannot repair the history from %s: %s", upstream, err)
            return
        log.warning("history.json repaired from %s (%d entries)", upstream, len(history))

    async def _repair(self, fetcher: Fetcher, upstream: str,
                      held: SignedIndex | None) -> None:
        """Fetch again any held blob, or the history, that is missing or bad on disk."""
        if held is None:
            return
        await self._repair_history(fetcher, upstream, held)
        sizes = self._must_hold(held.index)
        bad = await asyncio.to_thread(self._bad_blobs, sizes)
        if self._keep is not None and self._keep.unsettled:
            # The first pull of an edge: what an earlier run (killed between its install
            # and the move) or a replica's store left in the store goes to the cache.
            async with self._held.writer_lock():
                await asyncio.to_thread(self._keep.settle, sizes)
        if not bad:
            return
        log.warning("fetching %d blob(s) again that are missing or corrupt on disk", len(bad))
        async with self._held.writer_lock():
            await self._fetch(fetcher, upstream, {s: sizes[s] for s in bad}, replace=True)

    def _must_hold(self, index: Index) -> dict[str, int]:
        return must_hold(index, self._config.role)

    # --- blobs ----------------------------------------------------------------------------

    async def _fetch(self, fetcher: Fetcher, upstream: str, wanted: dict[str, int], *,
                     replace: bool = False) -> None:
        limit = asyncio.Semaphore(_PARALLEL_BLOBS)

        async def one(sha256: str, size: int) -> None:
            async with limit:
                await self._fetch_blob(fetcher, upstream, sha256, size, replace=replace)

        await asyncio.gather(*(one(s, n) for s, n in sorted(wanted.items())))

    async def _fetch_blob(self, fetcher: Fetcher, upstream: str, sha256: str, size: int, *,
                          replace: bool) -> None:
        """One blob into the store, taken only if its bytes hash to its name and size."""
        scratch = await asyncio.to_thread(self._store.scratch_dir, "blob-")
        part = scratch / sha256
        received, digest = await fetcher.blob(upstream, sha256, size, part)
        if received != size or digest != sha256:
            raise IndexRefused(Refusal.BLOB_MISMATCH, f"blob {sha256} from {upstream}: got "
                               f"{received} bytes hashing to {digest}")
        await asyncio.to_thread(self._store.add_blob, part, sha256, replace=replace)
        self._verified[sha256] = file_identity(self._store.blob_path(sha256)) or (0, 0, 0)
        self._record.blobs_fetched += 1
        if self._keep is not None:
            await asyncio.to_thread(self._keep.fetched, size)

    def _bad_blobs(self, sizes: dict[str, int]) -> set[str]:
        """Blobs missing, of the wrong size, reported by the server, or re-hashed wrong."""
        suspects = set(self._suspects())
        bad = set()
        blob_dir = str(self._store.blob_dir)   # a str path: this runs per blob, every install
        for sha256, size in sizes.items():
            identity = file_identity(f"{blob_dir}/{sha256}")
            if identity is None or identity[1] != size or sha256 in suspects:
                bad.add(sha256)
                continue
            if self._verified.get(sha256) == identity:
                continue
            if check_blob(self._store.blob_path(sha256), sha256, size) is None:
                self._verified[sha256] = identity
            else:
                log.error("blob corrupt on disk sha256=%s: fetching it again", sha256)
                bad.add(sha256)
        return bad

    def _save_status(self, started: float, confirmed_from: str | None,
                     errors: list[str]) -> None:
        held = self._held.index
        # The held index may just have been installed: read what is on disk now.
        self._held.trust_state()
        held = self._held.index or held
        self._store.save_pull_status(self._record.pulled(
            started=started, confirmed_from=confirmed_from, errors=errors,
            serial=held.serial if held is not None else 0))


def replicate(config: Config, *, once: bool, allow_lower: bool = False) -> bool:
    """``codecache replicate``: the pull loop on its own, until SIGINT/SIGTERM (or once)."""
    import signal

    replica = Replica(config)
    if once:
        return asyncio.run(replica.pull_once(allow_lower=allow_lower))

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await replica.run(stop)
        return True

    return asyncio.run(main())
