"""check.assess: every rule of the monitoring judgement, from facts alone (no I/O)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from codecache.core.errors import ConfigError
from codecache.core.readiness import Health, Readiness
from codecache.ops.check import (
    EdgeFacts,
    Facts,
    Limit,
    State,
    Thresholds,
    assess,
    parse_limit,
    parse_percent,
    perfdata,
)

NOW = 1_800_000_000.0
DAY = 86400
LIMITS = Thresholds()
# Nagios plugin guidelines: 'label'=value[UOM];[warn];[crit];[min];[max]
PERF = re.compile(r"^[a-z_]+=-?[0-9.]+(s|%|B|c)?(;[0-9.:@~-]*){0,4}$")


def origin(**changes: object) -> Facts:
    facts = Facts(source="http://origin:8080", now=NOW, role="origin",
                  readiness=Readiness(Health.OK), serial=1_799_999_000,
                  generated=int(NOW) - 600, expires=int(NOW) - 600 + 7 * DAY,
                  verified=2, blobs_unavailable=0, disk_free=60, disk_total=100, elapsed=0.25)
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def replica(**changes: object) -> Facts:
    facts = origin(role="replica", upstream="http://origin:8080", confirmed_at=NOW - 1,
                   upstream_serial=1_799_999_000, upstream_generated=int(NOW) - 600)
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def perf(result_perf: tuple[str, ...], label: str) -> str:
    return next(p for p in result_perf if p.startswith(label + "="))


def test_a_healthy_origin_is_ok_with_perfdata_in_the_nagios_format() -> None:
    result = assess(origin(), LIMITS)
    assert result.state is State.OK
    line = result.line()
    assert line.startswith("CODECACHE OK - http://origin:8080: origin serving serial ")
    assert line.count(" | ") == 1 and "\n" not in line
    for item in result.perfdata:
        assert PERF.match(item), item
    assert perf(result.perfdata, "index_age") == "index_age=600s;;;0"
    assert perf(result.perfdata, "expires_in").startswith("expires_in=604200s;")
    assert perf(result.perfdata, "disk_free") == "disk_free=60%;10:;5:;0;100"
    assert perf(result.perfdata, "mutated_tags") == "mutated_tags=0;0;;0"
    assert perf(result.perfdata, "time") == "time=0.25s;;;0"
    assert not any(p.startswith("lag=") for p in result.perfdata)   # an origin has no lag


def test_a_healthy_replica_is_ok_with_lag_and_serial_behind() -> None:
    result = assess(replica(), LIMITS)
    assert result.state is State.OK, result.line()
    assert perf(result.perfdata, "lag") == "lag=1s;30;300;0"
    assert perf(result.perfdata, "serial_behind") == "serial_behind=0;;;0"
    assert perf(result.perfdata, "refusals_conflict") == "refusals_conflict=0c;;;0"
    assert "confirmed by http://origin:8080 1s ago" in result.message


@pytest.mark.parametrize(("left", "state"), [
    (7 * DAY - 600, State.OK),
    (int(3.6 * DAY), State.OK),          # more than half of the 7 days left
    (int(3.4 * DAY), State.WARNING),
    (60, State.WARNING),
    (1, State.WARNING),
    (0, State.CRITICAL),                 # expires == now: expired (trust.is_expired)
    (-5, State.CRITICAL),
])
def test_index_expiry_warns_before_and_is_critical_after(left: int, state: State) -> None:
    facts = origin(generated=int(NOW) + left - 7 * DAY, expires=int(NOW) + left)
    result = assess(facts, LIMITS)
    assert result.state is state, result.line()
    if state is State.CRITICAL:
        assert "EXPIRED" in result.message


def test_expiry_thresholds_as_durations() -> None:
    facts = origin(generated=int(NOW) - 60, expires=int(NOW) + 3000)
    assert assess(facts, LIMITS).state is State.OK
    hour = Thresholds(expiry_warning=Limit(seconds=3600))
    assert assess(facts, hour).state is State.WARNING
    hard = Thresholds(expiry_warning=Limit(seconds=7200), expiry_critical=Limit(seconds=3600))
    result = assess(facts, hard)
    assert result.state is State.CRITICAL
    assert perf(result.perfdata, "expires_in") == "expires_in=3000s;7200:;3600:"


def test_a_degraded_expired_node_is_judged_by_expiry_once() -> None:
    facts = origin(readiness=Readiness(Health.DEGRADED, ("index expired",)),
                   expires=int(NOW) - 10)
    result = assess(facts, LIMITS)
    assert result.state is State.CRITICAL
    assert "degraded" not in result.message and result.message.count("EXPIRED") == 1


def test_other_degraded_reasons_warn() -> None:
    facts = origin(readiness=Readiness(Health.DEGRADED, ("something odd",)))
    assert assess(facts, LIMITS).state is State.WARNING


def test_not_ready_is_critical_with_the_reason() -> None:
    facts = origin(readiness=Readiness(Health.NOT_READY, ("blob ab12 corrupt on disk",)),
                   blobs_unavailable=1)
    result = assess(facts, LIMITS)
    assert result.state is State.CRITICAL
    assert "not ready: blob ab12 corrupt on disk" in result.message
    assert result.message.count("blob") == 1             # not reported twice
    assert perf(result.perfdata, "blobs_unavailable") == "blobs_unavailable=1;;0;0"


def test_no_index_at_all_is_critical() -> None:
    facts = origin(readiness=Readiness(Health.NOT_READY, ("the store has no index yet",)),
                   serial=None, generated=None, expires=None, verified=0)
    result = assess(facts, LIMITS)
    assert result.state is State.CRITICAL and "no index yet" in result.message


def test_an_unreachable_node_is_critical() -> None:
    result = assess(Facts(source="http://r1:8080", now=NOW, unreachable="connection refused",
                          elapsed=0.01), LIMITS)
    assert result.state is State.CRITICAL
    assert result.line() == "CODECACHE CRITICAL - http://r1:8080: connection refused | " \
        "time=0.01s;;;0"


def test_an_index_that_does_not_verify_is_critical() -> None:
    result = assess(origin(index_problem="bad_signature: no trusted key"), LIMITS)
    assert result.state is State.CRITICAL
    assert "index does not verify: bad_signature" in result.message


def test_a_served_tarball_that_does_not_verify_is_critical() -> None:
    result = assess(origin(served_problems=("pilot/latest: signature does not match",),
                           verified=1), LIMITS)
    assert result.state is State.CRITICAL
    assert "served tarball does not verify: pilot/latest" in result.message
    assert perf(result.perfdata, "tarballs_verified") == "tarballs_verified=1;;;0"


@pytest.mark.parametrize(("since", "state"), [(10, State.OK), (31, State.WARNING),
                                              (301, State.CRITICAL)])
def test_replica_lag_since_confirmed(since: int, state: State) -> None:
    result = assess(replica(confirmed_at=NOW - since, last_error="connect: refused"), LIMITS)
    assert result.state is state, result.line()
    if state is not State.OK:
        assert "replica lags" in result.message and "connect: refused" in result.message


def test_a_replica_behind_a_newer_upstream_index_lags_by_its_age() -> None:
    # Confirmed a second ago (by another upstream, say), but the upstream signed a newer
    # index 40 s ago and the replica does not hold it.
    facts = replica(upstream_serial=1_799_999_500, upstream_generated=int(NOW) - 40)
    result = assess(facts, LIMITS)
    assert result.state is State.WARNING
    assert perf(result.perfdata, "serial_behind") == "serial_behind=500;;;0"
    assert perf(result.perfdata, "lag") == "lag=40s;30;300;0"
    assert "behind 1799999500" in result.message


def test_a_replica_behind_for_a_moment_is_ok() -> None:
    facts = replica(upstream_serial=1_799_999_500, upstream_generated=int(NOW) - 1)
    assert assess(facts, LIMITS).state is State.OK


def test_a_replica_that_never_confirmed_is_critical() -> None:
    result = assess(replica(confirmed_at=None, last_error="no upstream"), LIMITS)
    assert result.state is State.CRITICAL and "never confirmed" in result.message


@pytest.mark.parametrize("reason", ["conflict", "rollback", "history_fork"])
def test_two_writers_seen_recently_are_critical(reason: str) -> None:
    facts = replica(refusals={reason: 3}, refused_at={reason: NOW - 120})
    result = assess(facts, LIMITS)
    assert result.state is State.CRITICAL
    assert "two writers" in result.message and reason in result.message
    assert perf(result.perfdata, f"refusals_{reason}") == f"refusals_{reason}=3c;;;0"


def test_refusals_older_than_the_window_are_history() -> None:
    facts = replica(refusals={"conflict": 3}, refused_at={"conflict": NOW - 7200})
    assert assess(facts, LIMITS).state is State.OK
    assert assess(facts, Thresholds(refusal_window=3 * 3600)).state is State.CRITICAL


def test_other_refusals_warn_and_stale_upstream_is_no_alarm() -> None:
    bad = replica(refusals={"bad_signature": 1}, refused_at={"bad_signature": NOW - 5})
    result = assess(bad, LIMITS)
    assert result.state is State.WARNING and "bad_signature" in result.message
    stale = replica(refusals={"stale_upstream": 9}, refused_at={"stale_upstream": NOW - 5})
    assert assess(stale, LIMITS).state is State.OK


def edge(**changes: object) -> Facts:
    cache = EdgeFacts(cache_bytes=600, cache_limit_bytes=1000, reserved_bytes=200, hits=90,
                      misses=10, upstream_bytes=5000, evictions=3)
    return replica(role="edge", edge=dataclasses.replace(cache, **changes))  # type: ignore[arg-type]


def test_a_healthy_edge_reports_its_cache_and_lag() -> None:
    result = assess(edge(), LIMITS)
    assert result.state is State.OK, result.line()
    assert "edge serving serial" in result.message and "hit ratio 90%" in result.message
    assert perf(result.perfdata, "edge_cache") == "edge_cache=600B;;;0;1000"
    assert perf(result.perfdata, "edge_channel_targets") == "edge_channel_targets=200B;1000;;0"
    assert perf(result.perfdata, "edge_hit_ratio") == "edge_hit_ratio=0.9;;;0;1"
    assert perf(result.perfdata, "edge_upstream_bytes") == "edge_upstream_bytes=5000c;;;0"
    assert perf(result.perfdata, "edge_evictions") == "edge_evictions=3c;;;0"
    assert perf(result.perfdata, "lag") == "lag=1s;30;300;0"
    for item in result.perfdata:
        assert PERF.match(item), item
    # An edge lags like a replica, with the same thresholds; no mutated tags of its own.
    lagging = assess(dataclasses.replace(edge(), confirmed_at=NOW - 31), LIMITS)
    assert lagging.state is State.WARNING and "edge lags 31s" in lagging.message
    assert "mutated_tags" not in " ".join(result.perfdata)


def test_an_edge_whose_channel_targets_exceed_its_cache_size_warns() -> None:
    result = assess(edge(reserved_bytes=1001, cache_bytes=1001), LIMITS)
    assert result.state is State.WARNING
    assert "channel targets take" in result.message and "cache_size" in result.message
    assert assess(edge(reserved_bytes=1000), LIMITS).state is State.OK
    # Before any request, no hit ratio to report.
    idle = assess(edge(hits=0, misses=0), LIMITS)
    assert idle.state is State.OK and not any(p.startswith("edge_hit_ratio=")
                                              for p in idle.perfdata)


def test_mutated_tags_warn_with_their_names() -> None:
    result = assess(origin(mutated_tags=("pilot 1.2.0",)), LIMITS)
    assert result.state is State.WARNING
    assert "1 mutated tag(s): pilot 1.2.0" in result.message
    assert perf(result.perfdata, "mutated_tags") == "mutated_tags=1;0;;0"
    counted = assess(origin(mutated_tags=("?", "?")), LIMITS)
    assert "2 mutated tag(s) (not republished" in counted.message


def test_refused_tags_warn_with_their_names() -> None:
    # A tag whose tree cannot be published: what is served is fine, the tag is not.
    result = assess(origin(refused_tags=("pilot 2.0.0",)), LIMITS)
    assert result.state is State.WARNING
    assert "1 refused tag(s): pilot 2.0.0 (not published; the origin's status says why)" \
        in result.message
    assert perf(result.perfdata, "refused_tags") == "refused_tags=1;0;;0"
    assert perf(assess(origin(), LIMITS).perfdata, "refused_tags") == "refused_tags=0;0;;0"
    counted = assess(replica(refused_tags=("?",)), LIMITS)   # from /metrics: only counted
    assert counted.state is State.WARNING and "1 refused tag(s) (not published" in \
        counted.message


@pytest.mark.parametrize(("free", "state"), [(60, State.OK), (10, State.OK),
                                             (9, State.WARNING), (4, State.CRITICAL)])
def test_disk_space_of_the_store(free: int, state: State) -> None:
    result = assess(origin(disk_free=free, disk_total=100), LIMITS)
    assert result.state is state
    if state is not State.OK:
        assert f"store disk {free:.1f}% free" in result.message


def test_the_worst_finding_decides_and_comes_first() -> None:
    facts = origin(mutated_tags=("pilot 1.0.0",), disk_free=1, disk_total=100)
    result = assess(facts, LIMITS)
    assert result.state is State.CRITICAL
    assert result.message.index("disk") < result.message.index("mutated")


def test_perfdata_formatting() -> None:
    assert perfdata("lag", 0.4, "s", warn="30", crit="300", minimum=0) == "lag=0.4s;30;300;0"
    assert perfdata("x", 3, "") == "x=3"
    assert perfdata("x", 2.0, "%", minimum=0, maximum=100) == "x=2%;;;0;100"


def test_threshold_options() -> None:
    assert parse_limit("50%", "--x") == Limit(fraction=0.5)
    assert parse_limit("6h", "--x") == Limit(seconds=6 * 3600)
    assert parse_limit("0s", "--x") == Limit(seconds=0)
    assert parse_percent("10%", "--x") == 10.0
    for bad in ("soon", "150%", "-1%"):
        with pytest.raises(ConfigError):
            parse_limit(bad, "--x")
    with pytest.raises(ConfigError):
        parse_percent("101", "--x")


def test_the_status_line_stays_one_line_with_one_bar() -> None:
    facts = replica(confirmed_at=NOW - 400, last_error="upstream said: a | b\nsecond line")
    line = assess(facts, LIMITS).line()
    assert "\n" not in line and line.count("|") == 1
    assert "a / b second line" in line


def test_with_deadline_stops_waiting_for_work_that_hangs() -> None:
    import threading

    from codecache.ops.probe import DeadlineExceeded, with_deadline

    release = threading.Event()
    with pytest.raises(DeadlineExceeded, match=r"within 0\.1s"):
        with_deadline(lambda: release.wait(60), 0.1)   # a hung name lookup, say
    release.set()
    assert with_deadline(lambda: 42, 5) == 42
    with pytest.raises(ConfigError, match="boom"):
        with_deadline(lambda: (_ for _ in ()).throw(ConfigError("boom")), 5)
