"""The readiness verdict of a node: ok, degraded (with reasons) or not ready (with reasons).

One rule for every role, mapped to HTTP by the server (``/readyz``: 200 unless not ready)
and to monitoring states by ``codecache check``; what each role must hold on disk to be
ready (every blob listed, or an edge's channel targets) is ``must_hold``. Readiness is
about what this node can serve: upstream trouble (a refused or unreachable upstream)
never makes it not ready (DESIGN.md §5); it is reported beside the verdict, in the log
and in ``/metrics``.

Owns the inputs too, typed: why no index (or not the one on disk) is served
(``IndexProblem``), built alike by the server (``web.storeview``) and by ``check --store``
(``ops.local``), and the reason an expired index gives (``INDEX_EXPIRED``), which ``check``
judges against its own thresholds. A blob's reason is the words of the check that found it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from codecache.core.config import Role
from codecache.core.errors import IndexRefused, Refusal
from codecache.core.index import Index
from codecache.core.trust import is_expired

#: The reason of a node that serves an index past ``expires`` (DESIGN.md §5:
#: ``degraded: index expired``).
INDEX_EXPIRED = "index expired"


class IndexTrouble(enum.Enum):
    """Why no index, or not the one on disk, is served; the value is the reason's text."""

    ABSENT = "the store has no index yet"
    DISAPPEARED = "index.json disappeared from the store"   # after one was served
    REFUSED = "index on disk refused"                        # the trust rules refuse it


@dataclass(frozen=True, slots=True)
class IndexProblem:
    """An input of ``judge``: the trouble, and for a refused index why (``refusal``, with
    the refusal's message in ``detail``). ``str()`` is the reason ``/readyz`` shows."""

    trouble: IndexTrouble
    refusal: Refusal | None = None
    detail: str = ""

    @classmethod
    def refused(cls, err: IndexRefused) -> IndexProblem:
        return cls(IndexTrouble.REFUSED, err.reason, err.message)

    def __str__(self) -> str:
        """``index on disk refused: rollback: serial 3 is older than ...``: the refusal's
        name (DESIGN.md §5) and its message."""
        if self.refusal is not None:
            return f"{self.trouble.value}: {self.refusal.value}: {self.detail}"
        return str(self.trouble.value)


class Health(enum.Enum):
    OK = "ok"
    DEGRADED = "degraded"       # serving, but someone should look (still 200)
    NOT_READY = "not_ready"     # cannot serve what it lists: the balancer must skip it


@dataclass(frozen=True, slots=True)
class Readiness:
    health: Health
    reasons: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.health is not Health.NOT_READY

    @property
    def status(self) -> str:
        """One line: ``ok``, ``degraded: index expired`` or the first reason not ready."""
        if self.health is Health.OK:
            return "ok"
        if self.health is Health.DEGRADED:
            return "degraded: " + ", ".join(self.reasons)
        return self.reasons[0]

    def besides_expiry(self) -> tuple[str, ...]:
        """The reasons other than an expired index."""
        return tuple(reason for reason in self.reasons if reason != INDEX_EXPIRED)


def must_hold(index: Index, role: Role) -> dict[str, int]:
    """The blobs (sha256 → size) a node of ``role`` holds on disk before it serves ``index``:
    every blob it lists, or on an edge only the channel targets (DESIGN.md §5; any other
    blob is filled on demand). The pull loop fetches these before it swaps the index in,
    and readiness requires them: one rule, so ``/readyz`` cannot disagree with the swap."""
    return index.channel_target_sizes() if role is Role.EDGE else index.blob_sizes()


def judge(*, index: Index | None, now: float, index_problem: IndexProblem | None,
          blob_problems: Mapping[str, str]) -> Readiness:
    """The verdict from what the node holds.

    ``index`` is None when no verified index is held; ``index_problem`` says why
    (no index yet, or the one on disk is refused); ``blob_problems`` maps each listed blob
    that is missing or corrupt on disk to the reason.
    """
    if index is None:
        return Readiness(Health.NOT_READY, (str(index_problem or "no index"),))
    if blob_problems:
        reasons = tuple(f"blob {sha256} {reason}"
                        for sha256, reason in sorted(blob_problems.items()))
        return Readiness(Health.NOT_READY, reasons)
    if index_problem is not None:
        return Readiness(Health.NOT_READY, (str(index_problem),))
    if is_expired(index, now):
        # Pilots must not stop because the origin is away: keep serving, say so.
        return Readiness(Health.DEGRADED, (INDEX_EXPIRED,))
    return Readiness(Health.OK)
