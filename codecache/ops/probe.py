"""Gathering the facts ``codecache check`` judges from a node over HTTP.

Owns the monitoring side's questions to a node: ``/readyz``, ``/metrics``, ``/index.json``
(through ``trust.verify`` with the trusted keys, capped at ``replica.max_index_size`` as a
replica's pull is), the channel tarballs (``targets.check_tarball``), an edge's cache (its
``/readyz`` body's ``edge``), and for a replica or an edge what its upstream serves now.
The judgement is ``check.assess`` (pure); the store on disk is ``local``'s. Every request
goes through ``upstream.client`` (no proxies, no redirects, caps) under one overall
deadline shared by every request: each gets the time left. ``with_deadline`` bounds what a
request's deadline cannot (a hanging name lookup) by running the gathering in a thread it
stops waiting for.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import fields, replace
from typing import TypeVar
from urllib.parse import quote

from prometheus_client.parser import text_string_to_metric_families

from codecache.core.config import ReplicaConfig
from codecache.core.errors import (
    CodecacheError,
    ConfigError,
    IndexRefused,
    IntegrityError,
    UpstreamFailure,
)
from codecache.core.index import Index
from codecache.core.readiness import Health, Readiness
from codecache.core.signing import PublicKey
from codecache.core.trust import verify
from codecache.ops.check import EdgeFacts, Facts
from codecache.ops.targets import Targets, check_tarball, chosen
from codecache.upstream.client import ANY_ANSWER, Reply, base_url, fetch, one_line

_SMALL = 4 * 1024 * 1024          # /readyz, /metrics, .minisig
INDEX_CAP = ReplicaConfig().max_index_size   # without a config: the replica's default
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


class Client:
    """GETs against one base URL under an overall deadline (``time.monotonic``)."""

    def __init__(self, base: str, deadline: float) -> None:
        self.base = base_url(base)
        self.deadline = deadline

    def get(self, path: str, cap: int = _SMALL, statuses: Collection[int] = (200,),
            budget: float | None = None, *, refuse: bool = False) -> Reply:
        """GET ``path``; a status outside ``statuses``, a body over ``cap`` or no answer in
        time is ``Unanswered``.

        ``budget`` bounds this request below the overall deadline. ``refuse``: a body over
        ``cap`` or encoded is the ``IndexRefused`` it is (an index), not ``Unanswered``.
        """
        deadline = self.deadline if budget is None else \
            min(self.deadline, time.monotonic() + budget)
        url = self.base + path
        left = deadline - time.monotonic()
        if left <= 0:
            raise Unanswered(f"GET {url}: no complete answer within the deadline")
        try:
            reply = fetch(url, timeout=left, cap=cap, agent="codecache-check", what="body",
                          statuses=ANY_ANSWER)
        except UpstreamFailure as err:
            raise Unanswered(str(err)) from None
        except IndexRefused as err:
            if refuse:
                raise
            raise Unanswered(f"GET {url}: {err}") from None
        if reply.status not in statuses:
            raise Unanswered(f"GET {url}: HTTP {reply.status}{_error_code(reply.body)}")
        return reply


def _error_code(body: bytes) -> str:
    """`` (code: message)`` of a codecache JSON error body, else nothing."""
    try:
        error = json.loads(body)["error"]
        return f" ({error['code']}: {error['message']})"
    except (ValueError, KeyError, TypeError):
        return ""


# --- a node over HTTP ----------------------------------------------------------------------------


def probe_url(base: str, keys: Mapping[str, PublicKey], *, timeout: float,
              targets: Targets = None, upstream: bool = True, index_cap: int = INDEX_CAP,
              clock: Callable[[], float] = time.time) -> Facts:
    """The facts about the node at ``base``: ``/readyz``, ``/index.json``, ``/metrics``, the
    channel tarballs (``targets``, see ``Targets``; () none), and for a replica or an edge
    what its upstream serves now. An index over ``index_cap`` bytes (``replica.max_index_size``)
    is refused (``too_large``), as a replica's pull refuses it.

    Raises:
        ConfigError: a malformed URL or target.
    """
    started = time.monotonic()
    client = Client(base, started + timeout)
    facts = Facts(source=client.base, now=clock())
    try:
        facts = _ask(client, keys, facts, targets, upstream, timeout, index_cap)
    except Unanswered as err:
        facts = replace(facts, unreachable=str(err))
    return replace(facts, elapsed=time.monotonic() - started)


def _ask(client: Client, keys: Mapping[str, PublicKey], facts: Facts,
         targets: Targets, upstream: bool, timeout: float, index_cap: int) -> Facts:
    ready = client.get("/readyz", statuses=(200, 503))
    try:
        body = json.loads(ready.body)
        verdict = Readiness(Health(body["health"]), tuple(str(r) for r in body["reasons"]))
    except (ValueError, KeyError, TypeError) as err:
        raise Unanswered(f"GET {client.base}/readyz: not a codecache readiness body "
                         f"({one_line(err)})") from None
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
    facts = replace(facts, edge=_edge(body.get("edge")))
    metrics = _metrics(client.get("/metrics").body)
    mutated = int(metrics.get("codecache_mutated_tags", 0))
    refused = int(metrics.get("codecache_refused_tags", 0))
    facts = replace(facts, mutated_tags=("?",) * mutated, refused_tags=("?",) * refused)
    if "codecache_store_free_bytes" in metrics:
        free, total = metrics["codecache_store_free_bytes"], \
            metrics.get("codecache_store_filesystem_size_bytes", 0.0)
        if free == free and total == total:   # NaN: the store is not there
            facts = replace(facts, disk_free=int(free), disk_total=int(total))
    try:
        index_reply = client.get("/index.json", cap=index_cap, statuses=(200, 503),
                                 refuse=True)
        if index_reply.status != 200:
            return facts   # no index served: readiness already says why
        signed = verify(index_reply.body, keys)
    except IndexRefused as err:
        return replace(facts, index_problem=f"{err.reason.value}: {err}")
    index = signed.index
    facts = replace(facts, serial=index.serial, generated=index.generated,
                    expires=index.expires)
    facts = _verify_tarballs(client, keys, index, facts, targets)
    if upstream and facts.upstream:
        facts = ask_upstream(facts, keys, client.deadline, timeout, index_cap)
    return facts


def _edge(body: object) -> EdgeFacts | None:
    """An edge's cache facts from its ``/readyz`` body's ``edge`` object (None: not an
    edge, or not told)."""
    if not isinstance(body, dict):
        return None
    try:
        return EdgeFacts(**{f.name: int(body[f.name]) for f in fields(EdgeFacts)})
    except (KeyError, TypeError, ValueError):
        return None


def _metrics(text: bytes) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page by name."""
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                if not sample.labels:
                    found[sample.name] = sample.value
    except (ValueError, UnicodeDecodeError) as err:
        raise Unanswered(f"/metrics is not Prometheus text: {one_line(err)}") from None
    return found


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


def ask_upstream(facts: Facts, keys: Mapping[str, PublicKey], deadline: float,
                 timeout: float, index_cap: int) -> Facts:
    """What the replica's upstream serves now (for ``serial_behind``); never fatal."""
    upstream = facts.upstream or ""
    try:
        other = Client(upstream, deadline)
        reply = other.get("/index.json", cap=index_cap, budget=max(1.0, timeout / 3))
        index = verify(reply.body, keys).index
    except (Unanswered, ConfigError, IndexRefused) as err:
        return replace(facts, upstream_problem=f"upstream {upstream}: {one_line(err)}")
    return replace(facts, upstream_serial=index.serial, upstream_generated=index.generated)
