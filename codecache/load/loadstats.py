"""What a load run measured, and its report (``codecache loadgen``): pure, no I/O.

Owns the tally of one run (``Tally``: latencies, statuses, errors, corrupted bodies and bytes,
overall and per kind of request), the percentiles, and the two renderings of the result: a
JSON-able dict (``--json``, its schema is documented in docs/loadgen.md) and a text table.
It does not make requests (``loadgen`` does) and does not print (``cli`` does).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "codecache-loadgen/1"


def percentile(ordered: list[float] | array[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


@dataclass
class KindTally:
    """One kind of request (``full``, ``inm``, ...): what happened to each one."""

    latencies: array[float] = field(default_factory=lambda: array("d"))   # seconds, answered
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    corrupted: int = 0
    bytes: int = 0

    @property
    def requests(self) -> int:
        """Requests that finished: answered (with a latency) or failed without an answer."""
        return len(self.latencies) + sum(v for k, v in self.errors.items()
                                         if k in _UNANSWERED)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "requests": self.requests,
            "bytes": self.bytes,
            "latency_ms": latency_summary(ordered),
            "statuses": dict(sorted(self.statuses.items())),
            "errors": dict(sorted(self.errors.items())),
            "corrupted": self.corrupted,
        }


# Errors without any HTTP answer (so no latency was recorded for them).
_UNANSWERED = frozenset({"connect", "timeout", "disconnected", "cancelled", "overload",
                         "protocol"})


def latency_summary(ordered: list[float] | array[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of ascending latencies in seconds."""
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    return {"p50": round(percentile(ordered, 0.50) * 1000, 3),
            "p90": round(percentile(ordered, 0.90) * 1000, 3),
            "p99": round(percentile(ordered, 0.99) * 1000, 3),
            "max": round((ordered[-1] if ordered else 0.0) * 1000, 3),
            "mean": round(mean * 1000, 3)}


@dataclass
class Tally:
    """Everything one run recorded, by kind; updated by the load generator as it goes."""

    kinds: dict[str, KindTally] = field(default_factory=dict)
    in_flight: int = 0
    peak_in_flight: int = 0
    slow_open: int = 0
    slow_peak_open: int = 0

    def merge(self, other: Tally) -> None:
        """Add another process's tally of the same run to this one."""
        for name, theirs in other.kinds.items():
            mine = self.kind(name)
            mine.latencies.extend(theirs.latencies)
            mine.statuses.update(theirs.statuses)
            mine.errors.update(theirs.errors)
            mine.corrupted += theirs.corrupted
            mine.bytes += theirs.bytes
        self.peak_in_flight += other.peak_in_flight     # an upper bound: peaks may not meet
        self.slow_peak_open += other.slow_peak_open

    def kind(self, name: str) -> KindTally:
        tally = self.kinds.get(name)
        if tally is None:
            tally = self.kinds[name] = KindTally()
        return tally

    def answered(self, kind: str, status: int, seconds: float, body_bytes: int) -> None:
        tally = self.kind(kind)
        tally.latencies.append(seconds)
        tally.statuses[str(status)] += 1
        tally.bytes += body_bytes

    def error(self, kind: str, reason: str) -> None:
        self.kind(kind).errors[reason] += 1

    def corrupted(self, kind: str) -> None:
        tally = self.kind(kind)
        tally.corrupted += 1
        tally.errors["corrupted"] += 1

    def started(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def finished(self) -> None:
        self.in_flight -= 1

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.kinds.values())

    @property
    def errors(self) -> int:
        return sum(sum(t.errors.values()) for t in self.kinds.values())

    @property
    def corrupted_total(self) -> int:
        return sum(t.corrupted for t in self.kinds.values())

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.kinds.values())


def report(tally: Tally, *, seconds: float, settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able result of a run (``--json`` prints exactly this)."""
    everything: list[float] = sorted(x for t in tally.kinds.values() for x in t.latencies)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for t in tally.kinds.values():
        statuses.update(t.statuses)
        errors.update(t.errors)
    seconds = max(seconds, 1e-9)
    return {
        "schema": SCHEMA,
        "settings": settings,
        "seconds": round(seconds, 3),
        "requests": tally.requests,
        "requests_per_s": round(tally.requests / seconds, 1),
        "bytes": tally.bytes,
        "mb_per_s": round(tally.bytes / seconds / 1e6, 3),
        "latency_ms": latency_summary(everything),
        "statuses": dict(sorted(statuses.items())),
        "errors": dict(sorted(errors.items())),
        "errors_total": sum(errors.values()),
        "corrupted": tally.corrupted_total,
        "peak_in_flight": tally.peak_in_flight,
        "slow_peak_open": tally.slow_peak_open,
        "kinds": {name: t.summary() for name, t in sorted(tally.kinds.items())},
    }


def table(result: dict[str, Any]) -> str:
    """The human-readable report: totals, then one row per kind of request."""
    lat = result["latency_ms"]
    lines = [
        f"{result['requests']:,} requests in {result['seconds']:.1f} s: "
        f"{result['requests_per_s']:,.1f} req/s, {result['mb_per_s']:,.2f} MB/s; "
        f"latency ms p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  "
        f"max {lat['max']:.1f}",
        "statuses: " + (", ".join(f"{k} x{v:,}" for k, v in result["statuses"].items())
                        or "none"),
        f"errors: {result['errors_total']:,}"
        + (" (" + ", ".join(f"{k} x{v:,}" for k, v in result["errors"].items()) + ")"
           if result["errors"] else "")
        + f"; corrupted bodies: {result['corrupted']:,}"
        + f"; peak in flight {result['peak_in_flight']:,}"
        + (f"; slow connections held at once: {result['slow_peak_open']:,}"
           if result["slow_peak_open"] else ""),
        "",
        f"{'kind':<10} {'requests':>9} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
        f"{'max ms':>9} {'MB':>9} {'errors':>7} {'corrupt':>7}  statuses",
    ]
    for name, kind in result["kinds"].items():
        k = kind["latency_ms"]
        errors = sum(kind["errors"].values())
        statuses = " ".join(f"{s}:{n}" for s, n in kind["statuses"].items())
        lines.append(f"{name:<10} {kind['requests']:>9,} {k['p50']:>9.1f} {k['p90']:>9.1f} "
                     f"{k['p99']:>9.1f} {k['max']:>9.1f} {kind['bytes'] / 1e6:>9.2f} "
                     f"{errors:>7,} {kind['corrupted']:>7,}  {statuses}")
    return "\n".join(lines)
