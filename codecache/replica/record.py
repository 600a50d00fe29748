"""The pull record: what a replica tells of its pulls (``replica.json``, DESIGN.md §5).

Owns the counters since the process started (refusals and transport errors by name,
pulls by result, blobs fetched, when each refusal was last seen) and turning one pull's
outcome into the ``PullStatus`` the store persists, which ``/readyz``, ``/metrics``,
``status`` and ``check`` read. It decides nothing; the puller reports to it.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

from codecache.core.errors import IndexRefused, UpstreamFailure
from codecache.store.state import PullStatus


@dataclasses.dataclass
class PullRecord:
    refusals: Counter[str] = dataclasses.field(default_factory=Counter)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    pulls: Counter[str] = dataclasses.field(default_factory=Counter)
    blobs_fetched: int = 0
    refused_at: dict[str, float] = dataclasses.field(default_factory=dict)
    status: PullStatus = dataclasses.field(default_factory=PullStatus)

    def failed(self, err: UpstreamFailure) -> None:
        self.errors[err.reason] += 1

    def refused(self, err: IndexRefused) -> None:
        self.refusals[err.reason.value] += 1
        self.refused_at[err.reason.value] = time.time()

    def pulled(self, *, started: float, confirmed_from: str | None, errors: list[str],
               serial: int) -> PullStatus:
        """The status after one pull (``serial``: the index held now, 0 for none)."""
        previous = self.status
        self.pulls["confirmed" if confirmed_from else "failed"] += 1
        self.status = PullStatus(
            upstream=confirmed_from or previous.upstream,
            serial=serial,
            confirmed_at=started if confirmed_from else previous.confirmed_at,
            attempted_at=started,
            last_error=None if confirmed_from else "; ".join(errors) or "no upstream",
            refusals=dict(self.refusals), errors=dict(self.errors),
            pulls=dict(self.pulls), blobs_fetched=self.blobs_fetched,
            refused_at=dict(self.refused_at))
        return self.status
