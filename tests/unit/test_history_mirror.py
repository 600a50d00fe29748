"""The replica's side of the history (codecache.replica.history_mirror), with a fake transport.

The ``Fetch`` here is a seam, not a server: it hands out slices of bytes the test holds, so
every answer an upstream can give (the range asked for, the whole file, a 416, other bytes)
is checked without sockets; tests/replica runs the same code against real servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from codecache.core.errors import IndexRefused, Refusal
from codecache.core.history import EMPTY_HISTORY, Action, Actor, Change, History
from codecache.core.history_parse import parse_document
from codecache.replica.history_mirror import Fetch, HistoryBehind, HistoryMirror
from codecache.store.store import Store

NOW = 1_800_000_000


def sample(n: int) -> History:
    history = EMPTY_HISTORY
    for i in range(n):
        history = history.append([Change(Action.RELEASE, "pilot", f"1.{i}", svn_author="bob")],
                                 time=NOW + i, actor=Actor("sync", 0), serial=100 + i)
    return history


def forked(n: int) -> History:
    """``sample(n)`` with entry 1 edited and the chain made consistent again."""
    entries: list[dict[str, Any]] = [e.to_json() for e in sample(n).entries]
    entries[1]["actor"] = "mallory"
    history = EMPTY_HISTORY
    for entry in parse_document(json.dumps({"entries": entries}).encode()):
        history = history.extended([dataclasses.replace(
            entry, prev=history.hashes[-1] if history.hashes else None)])
    return history


class Upstream:
    """Serves ``body`` as an upstream would; records what was asked."""

    def __init__(self, body: bytes, *, ranges: bool = True) -> None:
        self.body, self.ranges = body, ranges
        self.asked: list[int | None] = []

    async def fetch(self, start: int | None) -> tuple[bytes, bool]:
        self.asked.append(start)
        if start is None or not self.ranges:
            return self.body, False
        if start >= len(self.body):
            return b"", True      # a 416
        return self.body[start:], True


def holding(tmp_path: Path, history: History | None) -> HistoryMirror:
    store = Store(tmp_path / "store")
    store.init()
    if history is not None:
        store.history_path.write_bytes(history.render())
    return HistoryMirror(store)


def take(mirror: HistoryMirror, fetch: Fetch, want: History | None, held: History | None,
         **kw: bool) -> History | None:
    return asyncio.run(mirror.take(fetch, "http://up", want.head if want else None,
                                   held.head if held else None, **kw))


def test_a_first_history_is_read_whole(tmp_path: Path) -> None:
    up = Upstream(sample(3).render())
    assert take(holding(tmp_path, None), up.fetch, sample(3), None) == sample(3)
    assert up.asked == [None]


def test_growth_asks_only_for_the_bytes_from_the_last_entry_held(tmp_path: Path) -> None:
    held, new = sample(3), sample(5)
    up = Upstream(new.render())
    assert take(holding(tmp_path, held), up.fetch, new, held) == new
    assert up.asked == [held.line_offset(2)]


def test_a_longer_file_than_the_index_signs_gives_the_signed_length(tmp_path: Path) -> None:
    held = sample(3)
    up = Upstream(sample(6).render())    # appended again after the index was fetched
    assert take(holding(tmp_path, held), up.fetch, sample(5), held) == sample(5)


def test_an_upstream_that_ignores_ranges_is_read_whole(tmp_path: Path) -> None:
    held, new = sample(3), sample(5)
    up = Upstream(new.render(), ranges=False)
    assert take(holding(tmp_path, held), up.fetch, new, held) == new
    assert up.asked == [held.line_offset(2)]


def test_a_resign_fetches_nothing(tmp_path: Path) -> None:
    held = sample(3)
    up = Upstream(b"")
    assert take(holding(tmp_path, held), up.fetch, held, held) is None
    assert up.asked == []


def test_a_fork_is_read_whole_then_refused_naming_the_entry(tmp_path: Path) -> None:
    held = sample(3)
    up = Upstream(forked(5).render())
    with pytest.raises(IndexRefused) as info:
        take(holding(tmp_path, held), up.fetch, forked(5), held)
    assert info.value.reason is Refusal.HISTORY_FORK
    assert "entry #1" in str(info.value)
    assert up.asked == [held.line_offset(2), None]


def test_a_shorter_history_is_a_fork_without_asking(tmp_path: Path) -> None:
    held = sample(5)
    up = Upstream(sample(3).render())
    with pytest.raises(IndexRefused) as info:
        take(holding(tmp_path, held), up.fetch, sample(3), held)
    assert info.value.reason is Refusal.HISTORY_FORK
    assert up.asked == []


def test_the_override_takes_a_fork(tmp_path: Path) -> None:
    held = sample(5)
    up = Upstream(forked(4).render())
    assert take(holding(tmp_path, held), up.fetch, forked(4), held, allow_fork=True) == \
        forked(4)


def test_a_file_damaged_on_disk_is_replaced_by_the_whole_upstream_copy(tmp_path: Path) -> None:
    held, new = sample(3), sample(5)
    mirror = holding(tmp_path, forked(3))     # not the history the index held signs
    up = Upstream(new.render())
    assert take(mirror, up.fetch, new, held) == new
    assert up.asked == [None]


def test_repair_fetches_only_when_the_file_does_not_verify(tmp_path: Path) -> None:
    held = sample(3)
    mirror = holding(tmp_path, held)
    up = Upstream(held.render())
    assert asyncio.run(mirror.repair(up.fetch, "http://up", held.head)) is None
    assert up.asked == []
    mirror._store.history_path.write_bytes(forked(3).render())
    assert asyncio.run(mirror.repair(up.fetch, "http://up", held.head)) == held
    assert up.asked == [None]


def test_a_body_that_is_not_a_history_is_malformed(tmp_path: Path) -> None:
    up = Upstream(b"<html>not found</html>")
    with pytest.raises(IndexRefused) as info:
        take(holding(tmp_path, None), up.fetch, sample(2), None)
    assert info.value.reason is Refusal.MALFORMED


@pytest.mark.parametrize("held_length", [0, 3])
def test_an_upstream_file_shorter_than_its_index_signs_is_behind_not_a_fork(
        tmp_path: Path, held_length: int) -> None:
    held = sample(held_length) if held_length else None
    up = Upstream(sample(4).render())     # a cache or a pool member not caught up yet
    with pytest.raises(HistoryBehind):
        take(holding(tmp_path, held), up.fetch, sample(6), held)
