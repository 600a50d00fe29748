"""Gathering the facts ``codecache check`` judges: over HTTP from a URL, or from a store on disk.

Owns the monitoring side's I/O; the judgement is ``check.assess`` (pure). The trust rules
are not repeated here: the index served is taken through ``trust.verify`` with the trusted
keys, a tarball through ``verify.verify_tarball`` with the trusted comment the index names
for its release (``Release.trusted_comment``), a store's own index through
``store.trusted.read_trusted_index``, and a store's readiness through
``readiness.judge``, exactly as the server decides ``/readyz``.

The HTTP client is the standard library's on purpose (a plugin must start fast and must
not hang): one overall deadline shared by every request (each socket operation gets the
time left, bodies are read in pieces and capped), no proxies or ``.netrc`` from the
environment, redirects not followed. ``with_deadline`` bounds what a socket timeout cannot
(a hanging name lookup) by running the gathering in a thread it stops waiting for.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Literal, TypeVar
from urllib.parse import quote, urlsplit

from prometheus_client.parser import text_string_to_metric_families

from codecache.core.config import Config, Role
from codecache.core.errors import (
    CodecacheError,
    ConfigError,
    HashMismatch,
    IndexRefused,
    IntegrityError,
    NoIndex,
    SignatureError,
)
from codecache.core.index import Index
from codecache.core.readiness import Health, IndexProblem, IndexTrouble, Readiness, judge
from codecache.core.signing import PublicKey, parse_minisig
from codecache.core.trust import verify
from codecache.core.verify import verify_tarball
from codecache.ops.check import Facts
from codecache.store.files import MISSING, check_blob
from codecache.store.store import Store
from codecache.store.trusted import read_trusted_index

_SMALL = 4 * 1024 * 1024          # /readyz, /metrics, .minisig
_INDEX_CAP = 64 * 1024 * 1024     # as replica.max_index_size
_CHUNK = 64 * 1024
T = TypeVar("T")


class Unanswered(Exception):
    """The node did not give a usable answer (refused, timed out, an unexpected status)."""


class DeadlineExceeded(Exception):
    """The gathering did not finish within ``--timeout``."""


def with_deadline(work: Callable[[], T], seconds: float) -> T:
    """Run ``work`` in a daemon thread; give up waiting after ``seconds`` (+ a grace second).

    Raises:
        DeadlineExceeded: it did not return in time (the thread is abandoned: the plugin
        process exits right after).
        BaseException: whatever ``work`` raised.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as err:  # re-raised in the caller's thread
            failure.append(err)

    thread = threading.Thread(target=run, name="check", daemon=True)
    thread.start()
    thread.join(seconds + 1.0)
    if failure:
        raise failure[0]
    if not outcome:
        raise DeadlineExceeded(f"no complete answer within {seconds:g}s")
    return outcome[0]


# --- HTTP --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]     # lower-case names
    body: bytes


class Client:
    """GET against one base URL with an overall deadline (``time.monotonic``)."""

    def __init__(self, base: str, deadline: float) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--url: expected http://HOST[:PORT][/PATH], got {base!r}")
        self.base = base.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        try:
            self._port = parts.port
        except ValueError:
            raise ConfigError(f"--url: bad port in {base!r}") from None
        self._prefix = parts.path.rstrip("/")
        self.deadline = deadline

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Unanswered(f"no complete answer within the deadline ({self.base})")
        return left

    def get(self, path: str, cap: int = _SMALL, statuses: Iterable[int] = (200,),
            budget: float | None = None) -> Reply:
        """GET ``path``; a status outside ``statuses`` or a body over ``cap`` is ``Unanswered``.

        ``budget`` bounds this request below the overall deadline.
        """
        deadline = self.deadline if budget is None else \
            min(self.deadline, time.monotonic() + budget)
        conn_class = http.client.HTTPSConnection if self._scheme == "https" \
            else http.client.HTTPConnection
        url = self.base + path
        try:
            conn = conn_class(self._host, self._port, timeout=self._left(deadline, url))
            try:
                conn.request("GET", self._prefix + path, headers={
                    "User-Agent": "codecache-check", "Accept-Encoding": "identity",
                    "Cache-Control": "no-cache"})
                response = conn.getresponse()
                body = self._read(conn, response, cap, deadline, url)
                reply = Reply(response.status,
                              {k.lower(): v for k, v in response.getheaders()}, body)
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as err:
            raise Unanswered(f"GET {url}: {_one_line(err)}") from None
        if reply.status not in tuple(statuses):
            raise Unanswered(f"GET {url}: HTTP {reply.status}{_error_code(reply.body)}")
        return reply

    def _read(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
              cap: int, deadline: float, url: str) -> bytes:
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise Unanswered(f"GET {url}: {declared} bytes is over the {cap}-byte cap")
        data = bytearray()
        while True:
            if conn.sock is not None:
                conn.sock.settimeout(self._left(deadline, url))
            chunk = response.read1(_CHUNK)   # one read at most: a drip cannot stretch it
            if not chunk:
                return bytes(data)
            data += chunk
            if len(data) > cap:
                raise Unanswered(f"GET {url}: body over the {cap}-byte cap")

    @staticmethod
    def _left(deadline: float, url: str) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Unanswered(f"GET {url}: no complete answer within the deadline")
        return left


def _error_code(body: bytes) -> str:
    """`` (code: message)`` of a codecache JSON error body, else nothing."""
    try:
        error = json.loads(body)["error"]
        return f" ({error['code']}: {error['message']})"
    except (ValueError, KeyError, TypeError):
        return ""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# --- a node over HTTP ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A channel whose tarball is downloaded and verified."""

    package: str
    channel: str


def parse_target(text: str) -> Target:
    """``PACKAGE/CHANNEL``.

    Raises:
        ConfigError: anything else.
    """
    package, sep, channel = text.partition("/")
    if not sep or not package or not channel or "/" in channel:
        raise ConfigError(f"--verify: expected PACKAGE/CHANNEL, got {text!r}")
    return Target(package, channel)


def probe_url(base: str, keys: Mapping[str, PublicKey], *, timeout: float,
              targets: Targets = None, upstream: bool = True,
              clock: Callable[[], float] = time.time) -> Facts:
    """The facts about the node at ``base``: ``/readyz``, ``/index.json``, ``/metrics``, the
    channel tarballs (``targets``, see ``Targets``; () none), and for a replica what its
    upstream serves now.

    Raises:
        ConfigError: a malformed URL or target.
    """
    started = time.monotonic()
    client = Client(base, started + timeout)
    facts = Facts(source=client.base, now=clock())
    try:
        facts = _ask(client, keys, facts, targets, upstream, timeout)
    except Unanswered as err:
        facts = replace(facts, unreachable=str(err))
    return replace(facts, elapsed=time.monotonic() - started)


def _ask(client: Client, keys: Mapping[str, PublicKey], facts: Facts,
         targets: Targets, upstream: bool, timeout: float) -> Facts:
    ready = client.get("/readyz", statuses=(200, 503))
    try:
        body = json.loads(ready.body)
        verdict = Readiness(Health(body["health"]), tuple(str(r) for r in body["reasons"]))
    except (ValueError, KeyError, TypeError) as err:
        raise Unanswered(f"GET {client.base}/readyz: not a codecache readiness body "
                         f"({_one_line(err)})") from None
    replica = body.get("replica") if isinstance(body.get("replica"), dict) else None
    facts = replace(facts, role=body.get("role"), readiness=verdict,
                    blobs_unavailable=int(body.get("blobs_unavailable", 0)))
    if replica is not None:
        confirmed = body.get("last_confirmed")
        facts = replace(
            facts, upstream=replica.get("upstream"), last_error=replica.get("last_error"),
            confirmed_at=float(confirmed) if confirmed and replica.get("upstream") else None,
            refusals={str(k): int(v) for k, v in replica.get("refusals", {}).items()},
            refused_at={str(k): float(v) for k, v in replica.get("refused_at", {}).items()})
    metrics = _metrics(client.get("/metrics").body)
    mutated = int(metrics.get("codecache_mutated_tags", 0))
    facts = replace(facts, mutated_tags=("?",) * mutated)
    if "codecache_store_free_bytes" in metrics:
        free, total = metrics["codecache_store_free_bytes"], \
            metrics.get("codecache_store_filesystem_size_bytes", 0.0)
        if free == free and total == total:   # NaN: the store is not there
            facts = replace(facts, disk_free=int(free), disk_total=int(total))
    index_reply = client.get("/index.json", cap=_INDEX_CAP, statuses=(200, 503))
    if index_reply.status != 200:
        return facts   # no index served: readiness already says why
    try:
        signed = verify(index_reply.body, keys)
    except IndexRefused as err:
        return replace(facts, index_problem=f"{err.reason.value}: {err}")
    index = signed.index
    facts = replace(facts, serial=index.serial, generated=index.generated,
                    expires=index.expires)
    facts = _verify_tarballs(client, keys, index, facts, targets)
    if upstream and facts.upstream:
        facts = _ask_upstream(facts, keys, client.deadline, timeout)
    return facts


def _metrics(text: bytes) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page by name."""
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                if not sample.labels:
                    found[sample.name] = sample.value
    except (ValueError, UnicodeDecodeError) as err:
        raise Unanswered(f"/metrics is not Prometheus text: {_one_line(err)}") from None
    return found


# Which channel tarballs to download: the given ones, every channel ("all"), or None: the
# channel moved last (one download per check: the key, the signature path and the front
# tier are proven by any one; blob corruption is the server's to see, on /readyz).
Targets = tuple[Target, ...] | Literal["all"] | None


def chosen(index: Index, targets: Targets) -> tuple[Target, ...]:
    if targets == "all":
        return channel_targets(index)
    if targets is None:
        moves = [(pkg.channels[c].moved_at, p, c) for p, pkg in index.packages.items()
                 for c in pkg.channels]
        return (Target(*max(moves)[1:]),) if moves else ()
    return targets


def channel_targets(index: Index) -> tuple[Target, ...]:
    """Every channel of every package, one per release they point to."""
    seen: set[str] = set()
    targets = []
    for package in sorted(index.packages):
        pkg = index.packages[package]
        for channel in sorted(pkg.channels):
            release = pkg.releases.get(pkg.channels[channel].version)
            if release is not None and release.sha256 not in seen:
                seen.add(release.sha256)
                targets.append(Target(package, channel))
    return tuple(targets)


def _verify_tarballs(client: Client, keys: Mapping[str, PublicKey], index: Index,
                     facts: Facts, targets: Targets) -> Facts:
    problems: list[str] = []
    verified = 0
    for target in chosen(index, targets):
        path = f"/{quote(target.package)}/{quote(target.channel)}.tar.gz"
        try:
            _, release = index.channel(target.package, target.channel)
        except CodecacheError as err:
            problems.append(f"{target.package}/{target.channel}: {err}")
            continue
        tarball = client.get(path, cap=release.size)
        signature = client.get(path + ".minisig")
        try:
            check_tarball(index, target.package, release.version, tarball.body,
                          signature.body.decode(errors="replace"), keys)
        except IntegrityError as err:
            problems.append(f"{client.base}{path}: {err}")
            continue
        if tarball.headers.get("x-codecache-version") != release.version:
            problems.append(f"{client.base}{path}: X-Codecache-Version "
                            f"{tarball.headers.get('x-codecache-version')!r}, the index says "
                            f"{release.version!r}")
            continue
        verified += 1
    return replace(facts, verified=verified, served_problems=tuple(problems))


def check_tarball(index: Index, package: str, version: str, data: bytes, minisig: str,
                  keys: Mapping[str, PublicKey]) -> None:
    """``data`` and its ``.minisig`` are the release the signed index lists.

    ``data`` must hash to the release's sha256; the ``.minisig`` served must be the one
    the index lists (the primary key's); and a signature of the release by a trusted key
    (the served one, or during a key rotation another the index carries) must verify over
    ``data`` with exactly the trusted comment the index names for this release (package,
    version, sha256, size, svn URL@REV), so a valid signature of another release cannot
    pass for this one.

    Raises:
        IntegrityError: any of it does not hold (``SignatureError``, ``HashMismatch``).
    """
    release = index.release(package, version)
    digest = hashlib.sha256(data).hexdigest()
    if digest != release.sha256 or len(data) != release.size:
        raise HashMismatch(f"{len(data)} bytes hashing to {digest}, the index lists "
                           f"{release.size} bytes {release.sha256}")
    if minisig != release.minisig:
        raise SignatureError("the .minisig served is not the signature the signed index "
                             "lists for this release")
    trusted = [text for keyid, text in release.all_signatures().items() if keyid in keys]
    verify_tarball(keys, parse_minisig(trusted[0] if trusted else minisig), BytesIO(data),
                   comment=release.trusted_comment(package))  # an untrusted key is refused


def _ask_upstream(facts: Facts, keys: Mapping[str, PublicKey], deadline: float,
                  timeout: float) -> Facts:
    """What the replica's upstream serves now (for ``serial_behind``); never fatal."""
    upstream = facts.upstream or ""
    try:
        other = Client(upstream, deadline)
        reply = other.get("/index.json", cap=_INDEX_CAP, budget=max(1.0, timeout / 3))
        index = verify(reply.body, keys).index
    except (Unanswered, ConfigError, IndexRefused) as err:
        return replace(facts, upstream_problem=f"upstream {upstream}: {_one_line(err)}")
    return replace(facts, upstream_serial=index.serial, upstream_generated=index.generated)


# --- a store on disk (the node itself) -----------------------------------------------------------


def probe_store(config: Config, keys: Mapping[str, PublicKey], *, timeout: float,
                targets: Targets = None, upstream: bool = True,
                deep: bool = False, clock: Callable[[], float] = time.time) -> Facts:
    """The facts about the store ``config`` names, read from disk as its server would.

    Every listed blob must be there with its size; the blobs of the channels checked
    (``targets``, see ``Targets``) are hashed and verified against their signatures,
    and with ``deep`` every listed blob is hashed (the server's scrub does that too).
    A replica's lag comes from its ``replica.json``; its upstream is asked what it serves
    now unless ``upstream`` is False.

    Raises:
        ConfigError: the store directory does not exist (a wrong config: UNKNOWN).
        StoreError: the store cannot be read.
    """
    started = time.monotonic()
    store = Store(config.store.path)
    if not store.root.is_dir():
        raise ConfigError(f"store {store.root} does not exist (wrong --config?)")
    now = clock()
    state = store.state.load()
    facts = Facts(source=str(store.root), now=now, role=config.role.value,
                  mutated_tags=tuple(f"{m.package} {m.version}" for m in state.mutated_tags))
    # A refused index is the readiness verdict's reason (not ready), as on /readyz.
    index, problem = _stored_index(store, keys, state.highest_serial, now)
    blob_problems: dict[str, str] = {}
    if index is not None:
        facts = replace(facts, serial=index.serial, generated=index.generated,
                        expires=index.expires)
        blob_problems = _stored_blobs(store, index, deep=deep)
        facts = _verify_stored(store, keys, index, facts, targets, blob_problems)
    facts = replace(facts, readiness=judge(index=index, now=now, index_problem=problem,
                                           blob_problems=blob_problems),
                    blobs_unavailable=len(blob_problems))
    try:
        disk = shutil.disk_usage(store.root)
        facts = replace(facts, disk_free=disk.free, disk_total=disk.total)
    except OSError:
        pass
    if config.role is Role.REPLICA:
        facts = _stored_pulls(store, config, facts)
        if upstream and facts.upstream:
            facts = _ask_upstream(facts, keys, started + timeout, timeout)
    return replace(facts, elapsed=time.monotonic() - started)


def _stored_index(store: Store, keys: Mapping[str, PublicKey], floor: int,
                  now: float) -> tuple[Index | None, IndexProblem | None]:
    """The index on disk through the trust rules the server applies to it."""
    try:
        signed = read_trusted_index(store, keys, now=now, floor=floor)
    except NoIndex:
        return None, IndexProblem(IndexTrouble.ABSENT)
    except IndexRefused as err:
        return None, IndexProblem.refused(err)
    return signed.index, None


def _stored_blobs(store: Store, index: Index, *, deep: bool) -> dict[str, str]:
    """Listed blobs missing or of the wrong size; with ``deep`` also hashed."""
    problems = {}
    for sha256, size in index.blob_sizes().items():
        fault = check_blob(store.blob_path(sha256), sha256, size, deep=deep)
        if fault is not None:
            problems[sha256] = fault
    return problems


def _verify_stored(store: Store, keys: Mapping[str, PublicKey], index: Index, facts: Facts,
                   targets: Targets, blob_problems: dict[str, str]) -> Facts:
    problems: list[str] = []
    verified = 0
    for target in chosen(index, targets):
        try:
            _, release = index.channel(target.package, target.channel)
            path = store.blob_path(release.sha256)
            if release.sha256 in blob_problems:
                continue   # already reported, and never served as valid
            check_tarball(index, target.package, release.version, path.read_bytes(),
                          release.minisig, keys)
        except FileNotFoundError:
            blob_problems[release.sha256] = MISSING
            continue
        except HashMismatch as err:   # the readiness verdict names the blob
            blob_problems[release.sha256] = f"corrupt on disk ({err})"
            continue
        except IntegrityError as err:
            problems.append(f"{target.package}/{target.channel}: {err}")
            continue
        except CodecacheError as err:
            problems.append(f"{target.package}/{target.channel}: {err}")
            continue
        verified += 1
    return replace(facts, verified=verified, served_problems=tuple(problems))


def _stored_pulls(store: Store, config: Config, facts: Facts) -> Facts:
    pull = store.load_pull_status()
    if pull is None:
        return replace(facts, upstream=config.replica.upstreams[0]
                       if config.replica.upstreams else None,
                       last_error="no pull recorded in replica.json yet")
    return replace(facts, upstream=pull.upstream or (config.replica.upstreams or (None,))[0],
                   confirmed_at=pull.confirmed_at or None, last_error=pull.last_error,
                   refusals=dict(pull.refusals), refused_at=dict(pull.refused_at))
