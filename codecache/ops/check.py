"""The judgement of ``codecache check``: facts about a node against thresholds → one state.

Pure: ``Facts`` (gathered by ``probe`` from a URL or from a store on disk) and ``Thresholds``
go in; a ``Result`` (Nagios state, one-line message, performance data) comes out. No
files, no network, no clock (the time is a fact), so every rule can be tested exhaustively.
Readiness itself is decided by ``readiness.judge`` (the server's ``/readyz`` verdict, or the
same function applied to a store on disk); this module only maps it to a state, and an
expired index (``trust.past_expiry``) to one against its own thresholds.

Monitoring states follow the Nagios plugin guidelines: 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN (the check itself could not decide: usage, keys, an unreadable config).
Performance data: ``'label'=value[UOM];[warn];[crit];[min];[max]`` with threshold ranges
as the guidelines define them (``10:`` alerts below 10, ``30`` alerts above 30).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from codecache.core.config import Role, parse_duration
from codecache.core.errors import NAGIOS_UNKNOWN, ConfigError, Refusal
from codecache.core.readiness import Health, Readiness
from codecache.core.trust import past_expiry

# Refusals that mean two origins write at once, or an origin went back in time (a restore
# nobody told the replicas about): DESIGN.md §5. A history fork is the same event seen in the
# release history (a restored or promoted origin wrote new entries), or tampering; either
# way the replica takes no more updates until an operator acts, so it is critical too.
TWO_WRITERS = (Refusal.CONFLICT, Refusal.ROLLBACK, Refusal.HISTORY_FORK)
# A refusal that is normal in a chain of replicas and no alarm.
HARMLESS = (Refusal.STALE_UPSTREAM,)
# The roles that follow an upstream's index, as a node names its role.
PULLING = tuple(role.value for role in Role if role.pulls)


class State(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = NAGIOS_UNKNOWN   # the exit code of check's own failures (core.errors)


@dataclass(frozen=True, slots=True)
class Limit:
    """A threshold on the time left before expiry: seconds, or a share of the validity."""

    seconds: float = 0.0
    fraction: float | None = None     # 0.5: less than half of generated→expires is left

    def seconds_for(self, validity: float) -> float:
        return self.fraction * validity if self.fraction is not None else self.seconds

    def __str__(self) -> str:
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        return _duration(self.seconds)


@dataclass(frozen=True, slots=True)
class Thresholds:
    expiry_warning: Limit = Limit(fraction=0.5)   # WARNING when less than this is left
    expiry_critical: Limit = Limit(seconds=0.0)   # CRITICAL when less than this is left
    lag_warning: float = 30.0                     # a replica's seconds behind its upstream
    lag_critical: float = 300.0
    disk_warning: float = 10.0                    # % of the store's file system free
    disk_critical: float = 5.0
    refusal_window: float = 3600.0                # refusals older than this are history


@dataclass(frozen=True, slots=True)
class EdgeFacts:
    """An edge's cache (DESIGN.md §5): its ``/readyz`` body's ``edge``, or read locally."""

    cache_bytes: int
    cache_limit_bytes: int
    reserved_bytes: int        # the channel targets' bytes (never evicted)
    hits: int
    misses: int
    upstream_bytes: int        # blob bytes read from upstream
    evictions: int

    @property
    def hit_ratio(self) -> float | None:   # None before any request
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else None


@dataclass(frozen=True, slots=True)
class Facts:
    """What was found out about one node. ``None`` where a fact is not known."""

    source: str                          # the URL or the store directory checked
    now: float
    unreachable: str | None = None       # nothing usable answered: why
    role: str | None = None
    readiness: Readiness | None = None
    serial: int | None = None
    generated: int | None = None
    expires: int | None = None
    index_problem: str | None = None     # the index served does not verify
    served_problems: tuple[str, ...] = ()  # tarballs that do not verify
    verified: int = 0                    # tarballs downloaded and verified
    blobs_unavailable: int | None = None
    mutated_tags: tuple[str, ...] = ()   # "package version" (or "?" when only counted)
    refused_tags: tuple[str, ...] = ()   # new tags not published: as mutated_tags
    disk_free: int | None = None         # bytes available on the store's file system
    disk_total: int | None = None
    # A replica's facts (None on an origin).
    upstream: str | None = None
    confirmed_at: float | None = None    # last pull that confirmed the index current
    last_error: str | None = None
    refusals: Mapping[str, int] = field(default_factory=dict)
    refused_at: Mapping[str, float] = field(default_factory=dict)
    upstream_serial: int | None = None   # what the upstream serves now
    upstream_generated: int | None = None
    upstream_problem: str | None = None  # the upstream could not be asked from here
    edge: EdgeFacts | None = None        # an edge's cache
    elapsed: float | None = None         # seconds the check took


@dataclass(frozen=True, slots=True)
class Result:
    state: State
    message: str
    perfdata: tuple[str, ...] = ()

    def line(self) -> str:
        """``CODECACHE OK - message | perfdata``: the one line a monitoring system reads."""
        # One line, and "|" only where the performance data starts (a node's error text
        # could hold either).
        message = " ".join(self.message.split()).replace("|", "/")
        text = f"CODECACHE {self.state.name} - {message}"
        return f"{text} | {' '.join(self.perfdata)}" if self.perfdata else text


def assess(facts: Facts, limits: Thresholds) -> Result:
    """The state of a node: the worst of its findings, the findings in that order."""
    perf: list[str] = []
    if facts.unreachable is not None:
        if facts.elapsed is not None:
            perf.append(perfdata("time", facts.elapsed, "s", minimum=0))
        return Result(State.CRITICAL, f"{facts.source}: {facts.unreachable}", tuple(perf))
    findings: list[tuple[State, str]] = []
    _readiness(facts, findings)
    _index(facts, limits, findings, perf)
    _served(facts, findings, perf)
    _replica(facts, limits, findings, perf)
    _edge(facts, findings, perf)
    _tags(facts, findings, perf)
    _disk(facts, limits, findings, perf)
    if facts.elapsed is not None:
        perf.append(perfdata("time", facts.elapsed, "s", minimum=0))
    state = max((s for s, _ in findings), default=State.OK)
    problems = [text for s, text in sorted(findings, key=lambda f: -f[0]) if s > State.OK]
    return Result(state, f"{facts.source}: " + "; ".join(problems or [_summary(facts)]),
                  tuple(perf))


def _summary(facts: Facts) -> str:
    parts = [f"{facts.role or 'node'} serving serial {facts.serial}"]
    if facts.generated is not None and facts.expires is not None:
        parts.append(f"index {_duration(facts.now - facts.generated)} old, expires in "
                     f"{_duration(facts.expires - facts.now)}")
    if facts.upstream is not None and facts.confirmed_at is not None:
        parts.append(f"confirmed by {facts.upstream} {_duration(facts.now - facts.confirmed_at)}"
                     " ago")
    if facts.edge is not None:
        ratio = facts.edge.hit_ratio
        parts.append(f"cache {_bytes(facts.edge.cache_bytes)} of "
                     f"{_bytes(facts.edge.cache_limit_bytes)}"
                     + (f", hit ratio {ratio:.0%}" if ratio is not None else ""))
    if facts.verified:
        parts.append(f"{facts.verified} tarball(s) verified")
    return ", ".join(parts)


def _readiness(facts: Facts, findings: list[tuple[State, str]]) -> None:
    verdict = facts.readiness
    if verdict is None:
        return
    if verdict.health is Health.NOT_READY:
        findings.append((State.CRITICAL, "not ready: " + ", ".join(verdict.reasons)))
    elif verdict.health is Health.DEGRADED:
        # An expired index is judged below against the expiry thresholds.
        others = verdict.besides_expiry()
        if others:
            findings.append((State.WARNING, "degraded: " + ", ".join(others)))


def _index(facts: Facts, limits: Thresholds, findings: list[tuple[State, str]],
           perf: list[str]) -> None:
    if facts.index_problem is not None:
        findings.append((State.CRITICAL, f"index does not verify: {facts.index_problem}"))
    if facts.generated is None or facts.expires is None:
        if facts.index_problem is None and facts.readiness is None:
            findings.append((State.CRITICAL, "no index"))
        return
    left = facts.expires - facts.now
    validity = max(0.0, facts.expires - facts.generated)
    warn, crit = limits.expiry_warning.seconds_for(validity), \
        limits.expiry_critical.seconds_for(validity)
    perf.append(perfdata("index_age", int(facts.now - facts.generated), "s", minimum=0))
    perf.append(perfdata("expires_in", math.floor(left), "s", warn=f"{_number(warn)}:",
                         crit=f"{_number(crit)}:"))
    if past_expiry(facts.expires, facts.now):
        findings.append((State.CRITICAL, f"index serial {facts.serial} EXPIRED "
                         f"{_duration(-left)} ago (origin not re-signing?)"))
    elif left < crit:
        findings.append((State.CRITICAL, f"index expires in {_duration(left)} "
                         f"(< {limits.expiry_critical})"))
    elif left < warn:
        findings.append((State.WARNING, f"index expires in {_duration(left)} "
                         f"(< {limits.expiry_warning})"))


def _served(facts: Facts, findings: list[tuple[State, str]], perf: list[str]) -> None:
    for problem in facts.served_problems:
        findings.append((State.CRITICAL, f"served tarball does not verify: {problem}"))
    if facts.verified or facts.served_problems:
        perf.append(perfdata("tarballs_verified", facts.verified, "", minimum=0))
    if facts.blobs_unavailable is not None:
        perf.append(perfdata("blobs_unavailable", facts.blobs_unavailable, "", crit="0",
                             minimum=0))
        readiness_said = facts.readiness is not None and \
            facts.readiness.health is Health.NOT_READY
        if facts.blobs_unavailable and not readiness_said:
            findings.append((State.CRITICAL, f"{facts.blobs_unavailable} blob(s) unavailable"))


def _replica(facts: Facts, limits: Thresholds, findings: list[tuple[State, str]],
             perf: list[str]) -> None:
    """A replica's or an edge's lag and refusals (an edge follows its upstream alike)."""
    if facts.role not in PULLING:
        return
    if facts.confirmed_at is None:
        findings.append((State.CRITICAL, f"{facts.role} never confirmed its index with an "
                         "upstream"
                         + (f" (last error: {facts.last_error})" if facts.last_error else "")))
        return
    lag = max(0.0, facts.now - facts.confirmed_at)
    behind = None
    if facts.upstream_serial is not None and facts.serial is not None:
        behind = max(0, facts.upstream_serial - facts.serial)
        if behind and facts.upstream_generated is not None:
            # The upstream has signed something newer that this replica has not taken: it is
            # at least as stale as that index is old.
            lag = max(lag, facts.now - facts.upstream_generated)
    perf.append(perfdata("lag", lag, "s", warn=_number(limits.lag_warning),
                         crit=_number(limits.lag_critical), minimum=0))
    if behind is not None:
        perf.append(perfdata("serial_behind", behind, "", minimum=0))
    state = State.CRITICAL if lag > limits.lag_critical else \
        State.WARNING if lag > limits.lag_warning else State.OK
    if state > State.OK:
        text = f"{facts.role} lags {_duration(lag)}"
        if behind:
            text += f", serial {facts.serial} behind {facts.upstream_serial} of {facts.upstream}"
        else:
            text += f" (last confirmed by {facts.upstream})"
        if facts.last_error:
            text += f"; last error: {facts.last_error}"
        findings.append((state, text))
    recent = {reason: when for reason, when in facts.refused_at.items()
              if facts.now - when <= limits.refusal_window and _refusal(reason) not in HARMLESS}
    for refusal in TWO_WRITERS:
        perf.append(perfdata(f"refusals_{refusal.value}", facts.refusals.get(refusal.value, 0),
                             "c", minimum=0))
    writers = sorted(r for r in recent if _refusal(r) in TWO_WRITERS)
    if writers:
        findings.append((State.CRITICAL, "two writers or a restored origin: upstream index "
                         f"refused ({', '.join(writers)}) within the last "
                         f"{_duration(limits.refusal_window)}"))
    others = sorted(r for r in recent if _refusal(r) not in TWO_WRITERS)
    if others:
        findings.append((State.WARNING, f"upstream index refused ({', '.join(others)}) within "
                         f"the last {_duration(limits.refusal_window)}"))


def _edge(facts: Facts, findings: list[tuple[State, str]], perf: list[str]) -> None:
    """An edge's cache: its bytes against the bound, hits, upstream bytes, evictions."""
    edge = facts.edge
    if edge is None:
        return
    perf += [perfdata("edge_cache", edge.cache_bytes, "B", minimum=0,
                      maximum=edge.cache_limit_bytes),
             perfdata("edge_channel_targets", edge.reserved_bytes, "B",
                      warn=str(edge.cache_limit_bytes), minimum=0),
             *([] if edge.hit_ratio is None else
               [perfdata("edge_hit_ratio", round(edge.hit_ratio, 4), "", minimum=0, maximum=1)]),
             perfdata("edge_upstream_bytes", edge.upstream_bytes, "c", minimum=0),
             perfdata("edge_evictions", edge.evictions, "c", minimum=0)]
    if edge.reserved_bytes > edge.cache_limit_bytes:
        findings.append((State.WARNING, f"the channel targets take "
                         f"{_bytes(edge.reserved_bytes)}, more than the edge cache_size "
                         f"{_bytes(edge.cache_limit_bytes)} (kept, never evicted: the cache "
                         "holds nothing else; raise [edge] cache_size)"))


def _refusal(name: str) -> Refusal | None:
    """The refusal a node reports by name (``replica.json``, ``/readyz``); None for a name
    this version does not know (a newer node's)."""
    try:
        return Refusal(name)
    except ValueError:
        return None


def _tags(facts: Facts, findings: list[tuple[State, str]], perf: list[str]) -> None:
    """Tags the origin's sync will not serve as they are (WARNING: what is served is fine,
    but a release manager's tag is not, and only a new tag mends it)."""
    if facts.role in PULLING and not (facts.mutated_tags or facts.refused_tags):
        return   # only an origin's sync sees tags
    for key, tags, advice in (
            ("mutated_tags", facts.mutated_tags, "not republished; make a new tag"),
            ("refused_tags", facts.refused_tags, "not published; the origin's status says why")):
        perf.append(perfdata(key, len(tags), "", warn="0", minimum=0))
        if tags:
            named = [t for t in tags if t != "?"]
            what = key.replace("_tags", " tag(s)")
            findings.append((State.WARNING, f"{len(tags)} {what}"
                             + (f": {', '.join(named)}" if named else "") + f" ({advice})"))


def _disk(facts: Facts, limits: Thresholds, findings: list[tuple[State, str]],
          perf: list[str]) -> None:
    if facts.disk_free is None or not facts.disk_total:
        return
    free = 100.0 * facts.disk_free / facts.disk_total
    perf.append(perfdata("disk_free", free, "%", warn=f"{_number(limits.disk_warning)}:",
                         crit=f"{_number(limits.disk_critical)}:", minimum=0, maximum=100))
    perf.append(perfdata("disk_free_bytes", facts.disk_free, "B", minimum=0,
                         maximum=facts.disk_total))
    state = State.CRITICAL if free < limits.disk_critical else \
        State.WARNING if free < limits.disk_warning else State.OK
    if state > State.OK:
        findings.append((state, f"store disk {free:.1f}% free ({_bytes(facts.disk_free)} of "
                         f"{_bytes(facts.disk_total)})"))


# --- formatting -----------------------------------------------------------------------------


def perfdata(label: str, value: float, unit: str, *, warn: str = "", crit: str = "",
             minimum: float | None = None, maximum: float | None = None) -> str:
    """One performance value: ``label=value[UOM];[warn];[crit];[min];[max]``."""
    fields = [f"{label}={_number(value)}{unit}", warn, crit,
              "" if minimum is None else _number(minimum),
              "" if maximum is None else _number(maximum)]
    return ";".join(fields).rstrip(";")


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3h05m``, ``6d23h``: what a shifter reads at a glance."""
    s = int(max(0.0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"  # pragma: no cover - the loop always returns


# --- threshold options ----------------------------------------------------------------------


def parse_limit(text: str, option: str) -> Limit:
    """``50%`` (of the index's validity) or a duration (``6h``, ``0s``).

    Raises:
        ConfigError: anything else.
    """
    text = text.strip()
    if text.endswith("%"):
        return Limit(fraction=parse_percent(text, option) / 100)
    if text in ("0", "0s"):
        return Limit(seconds=0.0)
    return Limit(seconds=parse_duration(text, option))


def parse_percent(text: str, option: str) -> float:
    """``10%`` or ``10`` as 10.0, within 0..100.

    Raises:
        ConfigError: anything else.
    """
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise ConfigError(f"{option}: expected a percentage like 10%, got {text!r}") from None
    if not 0 <= value <= 100:
        raise ConfigError(f"{option}: expected a percentage within 0..100, got {text!r}")
    return value
