"""The replica's pull loop (DESIGN.md §5): mirror a verified index and its blobs from upstreams.

Owns the network side of replication: the HTTP client that cannot be pushed around
(timeouts on connect and on a stalled body, a size cap, no transparent decompression, no
redirects, no proxies or cookies from the environment), the failover order over
``upstreams``, fetching blobs by hash with the index's size as a hard cap, and the lag
facts in ``replica.json``. It decides nothing about trust itself (``trust`` does) and
writes the store only through ``Store.install`` / ``Store.add_blob``, under the writers'
lock, the index swapped last.

One pull: ``GET /index.json`` from the first upstream with ``Cache-Control: no-cache`` and
``If-None-Match`` of the index held (an unchanged index costs a 304). A 304, or the same
index again, confirms the one held. A new index that ``trust`` accepts is installed once
every blob it lists is on disk and hashed right, and its release history (``/history.json``,
fetched after the index, only what is new: ``history_mirror``) verifies against it and
keeps every entry held (``history_fork`` otherwise; ``trust.accept_history`` decides).
A network error, a timeout, a 5xx, a redirect or a refused index moves on to the next
upstream; when none answers, the last good index keeps being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from pathlib import Path

import aiofiles
import aiohttp

from codecache.core.config import Config
from codecache.core.errors import (
    CodecacheError,
    IndexRefused,
    Refusal,
    StoreBusy,
    StoreError,
)
from codecache.core.names import blob_url_path, etag_for
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
from codecache.replica.history_mirror import Fetch, HistoryBehind, HistoryMirror
from codecache.store.files import FileIdentity, check_blob, file_identity
from codecache.store.state import LocalState, PullStatus
from codecache.store.store import Store

log = logging.getLogger("codecache.replica")
_CHUNK = 256 * 1024
_BLOB_SECONDS_PER_MIB = 1.0       # a blob fetch may take timeout + this per MiB
_PARALLEL_BLOBS = 4


class UpstreamFailure(Exception):
    """A transport-level failure of one upstream (retryable on the next one)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason     # connect, timeout, http_5xx, http_status, redirect, ...


@dataclasses.dataclass
class _Counters:
    refusals: Counter[str] = dataclasses.field(default_factory=Counter)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    pulls: Counter[str] = dataclasses.field(default_factory=Counter)
    blobs_fetched: int = 0
    refused_at: dict[str, float] = dataclasses.field(default_factory=dict)


class Replica:
    """The pull loop of one replica store. Construct once per process; ``run`` or ``pull``."""

    def __init__(self, config: Config, *, suspects: Callable[[], Collection[str]] = frozenset,
                 installed: Callable[[], Awaitable[None]] | None = None) -> None:
        self._config = config
        self._store = Store(config.store.path)
        self._keys: dict[str, PublicKey] = load_trusted_keys(config.signing.trusted_keys)
        # Blobs the server found bad on disk (its scrub), so the next pull fetches them again.
        self._suspects = suspects
        # Called after an install, so a server in this process serves it without waiting
        # for its next look at the store.
        self._installed = installed
        self._new_install = False
        self._held: SignedIndex | None = None
        self._held_id: FileIdentity | None = None
        self._verified: dict[str, FileIdentity] = {}
        self._history = HistoryMirror(self._store)   # the release history held
        self._counters = _Counters()
        self._status = PullStatus()

    # --- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Pull every ``replica.interval`` until ``stop`` is set."""
        async with self._session() as session:
            while not stop.is_set():
                try:
                    await self.pull(session)
                except CodecacheError as err:  # store full or busy, a blob gone meanwhile
                    log.error("pull failed: %s", err)
                except Exception:
                    # A bug must not stop a replica from trying again: it keeps serving.
                    log.exception("pull failed unexpectedly")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._config.replica.interval)

    async def pull_once(self, *, allow_lower: bool = False) -> bool:
        """One pull with a session of its own (``codecache replicate --once``)."""
        async with self._session() as session:
            return await self.pull(session, allow_lower=allow_lower)

    async def pull(self, session: aiohttp.ClientSession, *, allow_lower: bool = False) -> bool:
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
                if await self._pull_from(session, upstream, allow_lower=allow_lower):
                    confirmed_from = upstream
                    break
            except UpstreamFailure as err:
                self._counters.errors[err.reason] += 1
                errors.append(f"{upstream}: {err}")
                log.warning("upstream failed upstream=%s reason=%s: %s", upstream, err.reason,
                            err, extra={"upstream": upstream, "reason": err.reason})
            except IndexRefused as err:
                self._counters.refusals[err.reason.value] += 1
                self._counters.refused_at[err.reason.value] = time.time()
                errors.append(f"{upstream}: refused ({err.reason.value}): {err}")
                level = logging.INFO if err.reason is Refusal.STALE_UPSTREAM else logging.ERROR
                log.log(level, "index refused upstream=%s reason=%s: %s", upstream,
                        err.reason.value, err,
                        extra={"upstream": upstream, "reason": err.reason.value})
        result = "confirmed" if confirmed_from else "failed"
        self._counters.pulls[result] += 1
        await asyncio.to_thread(self._save_status, started, confirmed_from, errors)
        if self._new_install and self._installed is not None:
            # After replica.json: the server then tells the whole story at once.
            self._new_install = False
            await self._installed()
        return confirmed_from is not None

    # --- one upstream ---------------------------------------------------------------------

    async def _pull_from(self, session: aiohttp.ClientSession, upstream: str, *,
                         allow_lower: bool) -> bool:
        state = await asyncio.to_thread(self._trust_state)
        raw = await self._fetch_index(session, upstream, state.held)
        if raw is None:  # 304: the upstream has exactly the index held
            await self._repair(session, upstream, state.held)
            return True
        candidate = verify(raw, self._keys)
        marks = offered(state, upstream, candidate)
        try:
            outcome = decide(candidate, state, now=int(time.time()), source=upstream,
                             allow_lower=allow_lower)
        except IndexRefused:
            if marks is not state.marks:
                await self._save_marks(marks)
            raise
        if outcome is Outcome.CURRENT:
            if marks is not state.marks:
                await self._save_marks(marks)
            await self._repair(session, upstream, state.held)
            return True
        if allow_lower:
            if candidate.serial < state.floor:
                log.warning("OPERATOR OVERRIDE: accepting serial %d from %s below the highest "
                            "serial accepted before (%d)", candidate.serial, upstream,
                            state.floor)
            # The override starts the record afresh: the old marks would refuse it again.
            marks = {upstream: offered(TrustState(), upstream, candidate)[upstream]}
        await self._install(session, upstream, candidate, state.held, marks, allow_lower)
        log.info("index installed serial=%d upstream=%s", candidate.serial, upstream,
                 extra={"serial": candidate.serial, "upstream": upstream})
        self._new_install = True
        return True

    async def _fetch_index(self, session: aiohttp.ClientSession, upstream: str,
                           held: SignedIndex | None) -> bytes | None:
        headers = {}
        if held is not None:
            headers["If-None-Match"] = etag_for(hashlib.sha256(held.document).hexdigest())
        async with self._get_document(session, upstream, "index", headers) as response:
            if response.status == 304 and held is not None:
                return None
            _check_response(response, upstream)
            return await _read_capped(response, self._config.replica.max_index_size, "index")

    @contextlib.asynccontextmanager
    async def _get_document(self, session: aiohttp.ClientSession, upstream: str, what: str,
                            headers: Mapping[str, str]) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``/{what}.json`` bypassing caches, read within one deadline; a timeout or a
        network error becomes an ``UpstreamFailure``."""
        deadline = self._config.replica.timeout * 3
        try:
            # allow_redirects=False: aiohttp follows redirects unless told not to, and an
            # upstream must not send the replica elsewhere (``_check_response``).
            async with asyncio.timeout(deadline), session.get(
                    f"{upstream}/{what}.json", headers={"Cache-Control": "no-cache", **headers},
                    allow_redirects=False) as response:
                yield response
        except TimeoutError:
            raise UpstreamFailure("timeout", f"no complete {what} within {deadline:.0f}s") \
                from None
        except aiohttp.ClientError as err:
            raise UpstreamFailure("connect", _one_line(err)) from None

    # --- blobs ----------------------------------------------------------------------------

    async def _install(self, session: aiohttp.ClientSession, upstream: str,
                       candidate: SignedIndex, held: SignedIndex | None,
                       marks: Mapping[str, Mark], reset_serial: bool) -> None:
        async with self._writer_lock():
            # The history first: it is small, and a fork refuses the index before any blob.
            try:
                history = await self._history.take(
                    self._history_fetch(session, upstream), upstream, candidate.index.history,
                    held.index.history if held is not None else None, allow_fork=reset_serial)
            except HistoryBehind as err:
                raise UpstreamFailure("history_behind", str(err)) from None
            sizes = candidate.index.blob_sizes()
            missing = await asyncio.to_thread(self._bad_blobs, sizes)
            await self._fetch(session, upstream, {s: sizes[s] for s in missing})
            await asyncio.to_thread(
                self._store.install, candidate, previous=held.index if held else None,
                history=history, marks=marks, reset_serial=reset_serial)
            # What was just swapped in is the candidate, verified already (under the lock,
            # so no other writer came in between): not read and verified again.
            self._held, self._held_id = candidate, file_identity(self._store.index_path)
            if history is not None:
                self._history.installed(history)

    # --- history --------------------------------------------------------------------------

    def _history_fetch(self, session: aiohttp.ClientSession, upstream: str) -> Fetch:
        return functools.partial(self._get_history, session, upstream)

    async def _repair_history(self, session: aiohttp.ClientSession, upstream: str,
                              held: SignedIndex) -> None:
        """Fetch the history held again when the file no longer verifies on disk.

        A failure here is logged, never a refusal: the index itself was just confirmed.
        """
        head = held.index.history
        if head is None or await asyncio.to_thread(self._history.held, head) is not None:
            return
        try:
            async with self._writer_lock():
                history = await self._history.repair(self._history_fetch(session, upstream),
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

    async def _get_history(self, session: aiohttp.ClientSession, upstream: str,
                           start: int | None) -> tuple[bytes, bool]:
        """GET ``/history.json`` bypassing caches, from byte ``start`` on; (body, partial)."""
        headers = {} if start is None else {"Range": f"bytes={start}-"}
        cap = self._config.replica.max_index_size
        async with self._get_document(session, upstream, "history", headers) as response:
            if start is not None and response.status == 416:
                return b"", True     # shorter than what is held: read it whole
            if start is not None and response.status == 206:
                # A 206 must be the range asked for; then it is checked byte for byte.
                if not response.headers.get("Content-Range", "").startswith(
                        f"bytes {start}-"):
                    return b"", True
                _check_response(response, upstream, partial=True)
                return await _read_capped(response, cap, "history"), True
            _check_response(response, upstream)
            return await _read_capped(response, cap, "history"), False

    async def _repair(self, session: aiohttp.ClientSession, upstream: str,
                      held: SignedIndex | None) -> None:
        """Fetch again any held blob, or the history, that is missing or bad on disk."""
        if held is None:
            return
        await self._repair_history(session, upstream, held)
        sizes = held.index.blob_sizes()
        bad = await asyncio.to_thread(self._bad_blobs, sizes)
        if not bad:
            return
        log.warning("fetching %d blob(s) again that are missing or corrupt on disk", len(bad))
        async with self._writer_lock():
            await self._fetch(session, upstream, {s: sizes[s] for s in bad}, replace=True)

    async def _fetch(self, session: aiohttp.ClientSession, upstream: str,
                     wanted: dict[str, int], *, replace: bool = False) -> None:
        limit = asyncio.Semaphore(_PARALLEL_BLOBS)

        async def one(sha256: str, size: int) -> None:
            async with limit:
                await self._fetch_blob(session, upstream, sha256, size, replace=replace)

        await asyncio.gather(*(one(s, n) for s, n in sorted(wanted.items())))

    async def _fetch_blob(self, session: aiohttp.ClientSession, upstream: str, sha256: str,
                          size: int, *, replace: bool) -> None:
        scratch = await asyncio.to_thread(self._store.scratch_dir, "blob-")
        part = scratch / sha256
        deadline = self._config.replica.timeout + size / (1 << 20) * _BLOB_SECONDS_PER_MIB
        digest = hashlib.sha256()
        try:
            async with asyncio.timeout(deadline), session.get(
                    upstream + blob_url_path(sha256), allow_redirects=False) as response:
                _check_response(response, upstream)
                declared = response.content_length
                if declared is not None and declared != size:
                    raise IndexRefused(Refusal.BLOB_MISMATCH, f"blob {sha256}: upstream "
                                       f"announces {declared} bytes, the index {size}")
                received = await _stream_to(response, part, digest, size)
        except TimeoutError:
            raise UpstreamFailure("timeout", f"blob {sha256} not complete within "
                                  f"{deadline:.0f}s") from None
        except aiohttp.ClientError as err:
            raise UpstreamFailure("connect", _one_line(err)) from None
        if received != size or digest.hexdigest() != sha256:
            raise IndexRefused(Refusal.BLOB_MISMATCH, f"blob {sha256} from {upstream}: got "
                               f"{received} bytes hashing to {digest.hexdigest()}")
        await asyncio.to_thread(self._store.add_blob, part, sha256, replace=replace)
        self._verified[sha256] = file_identity(self._store.blob_path(sha256)) or (0, 0, 0)
        self._counters.blobs_fetched += 1

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

    # --- local state ----------------------------------------------------------------------

    def _trust_state(self) -> TrustState:
        """What this store accepted before; the held index is re-read only when it changed."""
        local = self._store.state.load()
        identity = file_identity(self._store.index_path)
        if identity != self._held_id:
            self._held_id = identity
            try:
                self._held = self._store.read_signed(self._keys)
            except (IndexRefused, StoreError) as err:
                log.error("index on disk refused, will take the upstream's again: %s", err)
                self._held = None
        if self._held is not None and local.highest_serial < self._held.serial:
            local = self._raise_floor(self._held.serial)
        return TrustState(local.highest_serial, self._held, local.marks)

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

    async def _save_marks(self, marks: Mapping[str, Mark]) -> None:
        async with self._writer_lock():
            await asyncio.to_thread(self._store.state.record_marks, marks)

    @contextlib.asynccontextmanager
    async def _writer_lock(self) -> AsyncIterator[None]:
        """The store's writers' lock, taken without blocking the event loop."""
        fd = await asyncio.to_thread(self._store.acquire_lock)
        try:
            yield
        finally:
            os.close(fd)

    def _save_status(self, started: float, confirmed_from: str | None,
                     errors: list[str]) -> None:
        previous = self._status
        held = self._held
        self._status = PullStatus(
            upstream=confirmed_from or previous.upstream,
            serial=held.serial if held is not None else 0,
            confirmed_at=started if confirmed_from else previous.confirmed_at,
            attempted_at=started,
            last_error=None if confirmed_from else "; ".join(errors) or "no upstream",
            refusals=dict(self._counters.refusals), errors=dict(self._counters.errors),
            pulls=dict(self._counters.pulls), blobs_fetched=self._counters.blobs_fetched,
            refused_at=dict(self._counters.refused_at))
        # The held index may just have been installed: read what is on disk now.
        self._trust_state()
        if self._held is not None:
            self._status = dataclasses.replace(self._status, serial=self._held.serial)
        self._store.save_pull_status(self._status)

    def _session(self) -> aiohttp.ClientSession:
        timeout = self._config.replica.timeout
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
            # Never inflate what an upstream sends (a gzip bomb stays a few bytes of junk),
            # never take proxies, .netrc or cookies from the environment.
            auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
            headers={"Accept-Encoding": "identity", "User-Agent": "codecache-replica"},
            connector=aiohttp.TCPConnector(limit=8, ttl_dns_cache=10))


# --- response checks ----------------------------------------------------------------------


def _check_response(response: aiohttp.ClientResponse, upstream: str, *,
                    partial: bool = False) -> None:
    """Only a plain 200 (or, asked for, a 206) is read; else this upstream's failure.

    Raises:
        UpstreamFailure: redirect, 5xx or another status.
        IndexRefused: an encoded body (``bad_encoding``).
    """
    status = response.status
    if 300 <= status < 400:
        # Not followed: an upstream must not send the replica elsewhere.
        raise UpstreamFailure("redirect", f"HTTP {status} to {response.headers.get('Location')}"
                              " not followed")
    if status >= 500:
        raise UpstreamFailure("http_5xx", f"HTTP {status}")
    if status != (206 if partial else 200):
        raise UpstreamFailure("http_status", f"HTTP {status}")
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise IndexRefused(Refusal.BAD_ENCODING, f"{upstream} sent Content-Encoding "
                           f"{encoding!r}; only identity is accepted")


async def _read_capped(response: aiohttp.ClientResponse, cap: int, what: str) -> bytes:
    declared = response.content_length
    if declared is not None and declared > cap:
        raise IndexRefused(Refusal.TOO_LARGE, f"{what} of {declared} bytes is over the "
                           f"{cap}-byte cap")
    data = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        data += chunk
        if len(data) > cap:
            raise IndexRefused(Refusal.TOO_LARGE, f"{what} is over the {cap}-byte cap")
    return bytes(data)


async def _stream_to(response: aiohttp.ClientResponse, path: Path,
                     digest: hashlib._Hash, cap: int) -> int:
    received = 0
    async with aiofiles.open(path, "wb") as out:
        async for chunk in response.content.iter_chunked(_CHUNK):
            received += len(chunk)
            if received > cap:
                raise IndexRefused(Refusal.BLOB_MISMATCH, f"blob {path.name} is longer than "
                                   f"the {cap} bytes the index lists")
            digest.update(chunk)
            await out.write(chunk)
    return received


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


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
