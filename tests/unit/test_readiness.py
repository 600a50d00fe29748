"""The readiness verdict: not ready only for what this node cannot serve."""

from __future__ import annotations

import dataclasses

import pytest

from codecache.core.config import Role
from codecache.core.errors import IndexRefused, Refusal
from codecache.core.index import EMPTY, Release, add_release, move_channel
from codecache.core.pin import svn_pin
from codecache.core.readiness import (
    INDEX_EXPIRED,
    Health,
    IndexProblem,
    IndexTrouble,
    Readiness,
    judge,
    must_hold,
)

NOW = 1_800_000_000
FRESH = dataclasses.replace(EMPTY, serial=5, generated=NOW, expires=NOW + 60)


def test_a_fresh_index_with_every_blob_is_ok() -> None:
    verdict = judge(index=FRESH, now=NOW, index_problem=None, blob_problems={})
    assert (verdict.health, verdict.ready, verdict.status) == (Health.OK, True, "ok")


def test_no_index_is_not_ready_with_the_reason() -> None:
    verdict = judge(index=None, now=NOW, index_problem=IndexProblem(IndexTrouble.ABSENT),
                    blob_problems={})
    assert (verdict.ready, verdict.status) == (False, "the store has no index yet")


def test_a_missing_blob_is_not_ready_even_when_expired() -> None:
    expired = dataclasses.replace(FRESH, expires=NOW - 1)
    verdict = judge(index=expired, now=NOW, index_problem=None,
                    blob_problems={"b" * 64: "missing from disk", "a" * 64: "corrupt"})
    assert verdict.health is Health.NOT_READY
    assert verdict.status == f"blob {'a' * 64} corrupt"
    assert len(verdict.reasons) == 2


def test_expired_is_degraded_but_ready() -> None:
    expired = dataclasses.replace(FRESH, expires=NOW)
    verdict = judge(index=expired, now=NOW, index_problem=None, blob_problems={})
    assert (verdict.health, verdict.ready, verdict.status) == \
        (Health.DEGRADED, True, "degraded: index expired")


def test_a_refused_index_on_disk_is_not_ready() -> None:
    verdict = judge(index=FRESH, now=NOW,
                    index_problem=IndexProblem.refused(IndexRefused(Refusal.ROLLBACK, "x")),
                    blob_problems={})
    assert not verdict.ready and verdict.status == "index on disk refused: rollback: x"


@pytest.mark.parametrize(("problem", "text"), [
    (IndexProblem(IndexTrouble.ABSENT), "the store has no index yet"),
    (IndexProblem(IndexTrouble.DISAPPEARED), "index.json disappeared from the store"),
    (IndexProblem.refused(IndexRefused(Refusal.ROLLBACK, "serial 3 is older than the 5 "
                                       "already accepted")),
     "index on disk refused: rollback: serial 3 is older than the 5 already accepted"),
])
def test_an_index_problem_is_one_reason_whoever_builds_it(problem: IndexProblem,
                                                          text: str) -> None:
    verdict = judge(index=None, now=NOW, index_problem=problem, blob_problems={})
    assert verdict.reasons == (text,)


def test_a_refused_index_keeps_its_refusal_typed() -> None:
    problem = IndexProblem.refused(IndexRefused(Refusal.CONFLICT, "two writers?"))
    assert (problem.trouble, problem.refusal) == (IndexTrouble.REFUSED, Refusal.CONFLICT)


def test_the_reasons_besides_an_expired_index() -> None:
    verdict = Readiness(Health.DEGRADED, (INDEX_EXPIRED, "something else"))
    assert verdict.besides_expiry() == ("something else",)
    assert Readiness(Health.DEGRADED, (INDEX_EXPIRED,)).besides_expiry() == ()


def test_an_edge_must_hold_its_channel_targets_and_a_replica_every_blob() -> None:
    index = FRESH
    for version, digit in (("1.0", "a"), ("2.0", "b"), ("3.0", "c")):
        release = Release(version, digit * 64, 10 + len(digit), "f" * 64,
                          svn_pin("svn://s/p", 1), "rm", NOW, "")
        index = add_release(index, "pilot", release)
    index = move_channel(index, "pilot", "stable", "1.0", NOW)
    index = move_channel(index, "pilot", "latest", "3.0", NOW)
    index = move_channel(index, "pilot", "testing", "3.0", NOW)   # one blob, two channels
    assert must_hold(index, Role.EDGE) == {"a" * 64: 11, "c" * 64: 11}
    assert must_hold(index, Role.REPLICA) == must_hold(index, Role.ORIGIN) \
        == {"a" * 64: 11, "b" * 64: 11, "c" * 64: 11}
