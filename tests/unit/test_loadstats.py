"""The load report's arithmetic (``loadstats``) and the mix parser (``loadgen.parse_mix``)."""

from __future__ import annotations

import pytest

from codecache.core.errors import ConfigError
from codecache.load.loadpool import shares, split
from codecache.load.loadstats import Tally, percentile, report, table
from codecache.load.profile import Kind, Profile, parse_mix


def test_percentile_is_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.9) == 7
    assert percentile([], 0.5) == 0


def test_report_counts_answers_errors_and_corrupted_bodies_once() -> None:
    tally = Tally()
    tally.answered("full", 200, 0.010, 1000)
    tally.answered("full", 200, 0.030, 1000)
    tally.corrupted("full")                 # the second body did not match its ETag
    tally.answered("inm", 304, 0.002, 0)
    tally.error("inm", "timeout")           # no answer at all
    result = report(tally, seconds=2.0, settings={"url": "http://x"})
    assert result["requests"] == 4
    assert result["requests_per_s"] == 2.0
    assert result["statuses"] == {"200": 2, "304": 1}
    assert result["errors"] == {"corrupted": 1, "timeout": 1}
    assert result["errors_total"] == 2 and result["corrupted"] == 1
    assert result["bytes"] == 2000 and result["mb_per_s"] == 0.001
    assert result["latency_ms"]["max"] == 30.0
    assert result["kinds"]["inm"]["requests"] == 2
    assert "corrupted bodies: 1" in table(result)


@pytest.mark.parametrize("text", ["full", "bogus=1", "full=x", "full=-1", "full=0,inm=0", ""])
def test_a_bad_mix_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_mix(text)


def test_a_mix_names_kinds_and_weights() -> None:
    assert parse_mix("full=3, range=1") == {Kind.FULL: 3.0, Kind.RANGE: 1.0}


@pytest.mark.parametrize("changes", [{"url": "ftp://x"}, {"concurrency": 0},
                                     {"rate": 1.0, "burst": 2}, {"duration": 0},
                                     {"slow_rate": 0}])
def test_an_impossible_profile_is_a_config_error(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {"url": "http://127.0.0.1:1", **changes}
    with pytest.raises(ConfigError):
        Profile(**fields).validate()  # type: ignore[arg-type]


def test_shares_add_up_and_differ_by_at_most_one() -> None:
    assert shares(10, 3) == [4, 3, 3]
    assert shares(2, 4) == [1, 1, 0, 0]
    assert sum(shares(2001, 2)) == 2001


def test_a_profile_splits_into_shares_of_one_schedule() -> None:
    burst = split(Profile("http://127.0.0.1:1", burst=2001, processes=2, seed=4))
    assert [p.burst for p in burst] == [1001, 1000]
    assert {p.processes for p in burst} == {1} and len({p.seed for p in burst}) == 2
    slow = split(Profile("http://127.0.0.1:1", slow=10, processes=3))
    assert [p.slow for p in slow] == [4, 3, 3] and all(p.schedule == "none" for p in slow)
    tiny = split(Profile("http://127.0.0.1:1", burst=1, processes=2))
    assert [p.burst for p in tiny] == [1]
    rate = split(Profile("http://127.0.0.1:1", rate=100.0, requests=10, processes=2))
    assert [p.rate for p in rate] == [50.0, 50.0] and [p.requests for p in rate] == [5, 5]
