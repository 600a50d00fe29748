"""The readiness verdict of a node: ok, degraded (with reasons) or not ready (with reasons).

One rule for every role, mapped to HTTP by the server (``/readyz``: 200 unless not ready)
and to monitoring states by ``codecache check``. Readiness is about what this node can
serve: upstream trouble (a refused or unreachable upstream) never makes it not ready
(DESIGN.md §5); it is reported beside the verdict, in the log and in ``/metrics``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from codecache.core.index import Index
from codecache.core.trust import is_expired


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


def judge(*, index: Index | None, now: float, index_problem: str | None,
          blob_problems: Mapping[str, str]) -> Readiness:
    """The verdict from what the node holds.

    ``index`` is None when no verified index is held; ``index_problem`` says why
    (no index yet, or the one on disk is refused); ``blob_problems`` maps each listed blob
    that is missing or corrupt on disk to the reason.
    """
    if index is None:
        return Readiness(Health.NOT_READY, (index_problem or "no index",))
    if blob_problems:
        reasons = tuple(f"blob {sha256} {reason}"
                        for sha256, reason in sorted(blob_problems.items()))
        return Readiness(Health.NOT_READY, reasons)
    if index_problem:
        return Readiness(Health.NOT_READY, (index_problem,))
    if is_expired(index, now):
        # Pilots must not stop because the origin is away: keep serving, say so.
        return Readiness(Health.DEGRADED, ("index expired",))
    return Readiness(Health.OK)
