"""The release history through the real CLI on a real svnserve (DESIGN.md §9).

Publishes, moves, a rollback and a yank by two actors appear in ``codecache history``
exactly, in order, with actors, uids, times and serials; a store whose ``history.json`` has
one entry edited, removed or reordered is detected (exit 1) and the writer refuses to
append to it; a store that predates history starts it with ``import`` entries.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from codecache.core.index import parse_time
from codecache.core.signing import load_secret_key, load_trusted_keys
from codecache.core.trust import sign_index, verify
from codecache.store.store import Store
from tests.conftest import SVN_USER, Origin, assert_one_line_error


def history(origin: Origin, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(origin.cli("history", "--json", *args,
                                                   check=True).stdout)
    return result


def serial_of(output: str) -> int:
    match = re.search(r"index serial (\d+)", output)
    assert match, output
    return int(match.group(1))


def summary(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["actor"], e["action"], e["version"], e["channel"], e["from"], e["reason"])
            for e in entries]


def test_changes_by_two_actors_appear_in_order_with_actors_times_and_serials(
        origin: Origin) -> None:
    name, uid = origin.package, os.getuid()
    steps: list[tuple[int, int, int]] = []   # (before, after, serial) of each command

    def run(*args: str, env: dict[str, str] | None = None) -> None:
        before = int(time.time())
        result = origin.cli(*args, check=True, env=env)
        steps.append((before, int(time.time()), serial_of(result.stdout)))

    run("sync", "--once")
    run("--actor", "alice", "publish", name, "1.2.0", "--channel", "production")
    run("publish", name, "1.0.0", "--channel", "production", env={"CODECACHE_ACTOR": "bob"})
    run("--actor", "alice", "publish", name, "1.0.0", "--channel", "latest")
    run("yank", name, "1.2.0", "--reason", "broken build", env={"CODECACHE_ACTOR": "bob"})

    doc = history(origin)
    entries = doc["entries"]
    assert summary(entries) == [
        ("sync", "release", "1.0.0", None, None, None),
        ("sync", "release", "1.2.0", None, None, None),
        ("sync", "move", "1.2.0", "latest", None, None),
        ("alice", "move", "1.2.0", "production", None, None),
        ("bob", "move", "1.0.0", "production", "1.2.0", None),      # the rollback
        ("alice", "move", "1.0.0", "latest", "1.2.0", None),
        ("bob", "yank", "1.2.0", None, None, "broken build"),
    ]
    assert [e["seq"] for e in entries] == list(range(7))
    assert {e["uid"] for e in entries} == {uid}
    assert [e["svn_author"] for e in entries[:2]] == [SVN_USER, SVN_USER]
    assert all(e["svn_author"] is None for e in entries[2:])
    assert {e["package"] for e in entries} == {name}
    # Each entry names the serial its command printed, within that command's time.
    owners = [0, 0, 0, 1, 2, 3, 4]
    sync_serials = [e["serial"] for e in entries[:3]]
    assert sync_serials[0] < sync_serials[1] == sync_serials[2] == steps[0][2]
    for entry, step in zip(entries, owners, strict=True):
        before, after, serial = steps[step]
        assert before <= parse_time(entry["time"]) <= after
        if step:
            assert entry["serial"] == serial
    assert doc["serial"] == steps[-1][2]
    assert doc["history"]["length"] == 7

    table = origin.cli("history", check=True).stdout.splitlines()
    assert table[0].split()[:3] == ["TIME", "ACTOR", "ACTION"]
    assert len(table) == 8
    assert re.search(r"bob \(uid \d+\)\s+move\s+\S+\s+production\s+1\.2\.0 -> 1\.0\.0\s+"
                     f"{steps[2][2]}", table[5]), table[5]
    assert "reason: broken build" in table[7]

    production = history(origin, name, "--channel", "production")["entries"]
    assert [(e["actor"], e["from"], e["version"]) for e in production] == [
        ("alice", None, "1.2.0"), ("bob", "1.2.0", "1.0.0")]
    assert history(origin, "other")["entries"] == []


def test_resigning_adds_no_entry(synced_origin: Origin) -> None:
    before = history(synced_origin)
    # A resign interval of 1s re-signs on the next pass: a new serial, no new entry.
    config = synced_origin.config
    config.write_text(config.read_text().replace("[signing]",
                                                 '[signing]\nresign_interval = "1s"'))
    time.sleep(2)
    synced_origin.cli("sync", "--once", check=True)
    after = history(synced_origin)
    assert after["serial"] > before["serial"]
    assert after["entries"] == before["entries"]


def rewrite(entries: list[dict[str, Any]], how: str) -> None:
    """The three ways to rewrite a history (the replica's tests forge them too): an entry
    ``edited``, one ``removed``, two ``swapped``."""
    if how == "edited":
        entries[1]["actor"] = "mallory"
    elif how == "removed":
        del entries[1]
    else:
        entries[0], entries[1] = entries[1], entries[0]


def tamper(store: Path, how: str) -> None:
    path = store / "history.json"
    entries = json.loads(path.read_bytes())["entries"]
    rewrite(entries, how)
    path.write_text(json.dumps({"entries": entries}))


@pytest.mark.parametrize("how", ["edited", "removed", "reordered"])
def test_a_tampered_history_is_detected_and_never_appended_to(store_copy: Origin,
                                                              how: str) -> None:
    index_before = store_copy.index_bytes()
    tamper(store_copy.store, how)
    line = assert_one_line_error(store_copy.cli("history"), 1)
    assert "history.json" in line
    assert_one_line_error(store_copy.cli("history", "--json"), 1)
    refused = store_copy.cli("--actor", "alice", "publish", store_copy.package, "1.0.0",
                             "--channel", "production")
    assert_one_line_error(refused, 1)
    assert store_copy.index_bytes() == index_before


def test_a_missing_history_file_is_detected(store_copy: Origin) -> None:
    (store_copy.store / "history.json").unlink()
    assert "missing" in assert_one_line_error(store_copy.cli("history"), 1)


def strip_history(origin: Origin) -> None:
    """Make the store look like one written before history existed (same key, no history)."""
    store = Store(origin.store)
    keys = load_trusted_keys([origin.public_key])
    held = verify(store.read_document() or b"", keys)
    old = sign_index(load_secret_key(origin.secret_key),
                     dataclasses.replace(held.index, history=None))
    (origin.store / "index.json").write_bytes(old.document)
    (origin.store / "history.json").unlink()


def test_a_store_from_before_history_starts_it_with_import_entries(store_copy: Origin) -> None:
    strip_history(store_copy)
    result = store_copy.cli("history")
    assert result.returncode == 0 and "no history yet" in result.stderr
    assert history(store_copy)["entries"] == []
    imported_serial = store_copy.status_json()["serial"]
    store_copy.cli("--actor", "alice", "publish", store_copy.package, "1.0.0", "--channel",
                   "production", check=True)
    entries = history(store_copy)["entries"]
    assert summary(entries) == [
        ("import", "release", "1.0.0", None, None, None),
        ("import", "release", "1.2.0", None, None, None),
        ("import", "move", "1.2.0", "latest", None, None),
        ("alice", "move", "1.0.0", "production", None, None),
    ]
    assert [e["serial"] for e in entries[:3]] == [imported_serial] * 3
    assert entries[3]["serial"] > imported_serial


@pytest.mark.parametrize(("args", "env"), [(["--actor", ""], None),
                                           (["--actor", "a\tb"], None),
                                           ([], {"CODECACHE_ACTOR": ""})])
def test_a_bad_actor_name_is_a_usage_error_and_changes_nothing(
        store_copy: Origin, args: list[str], env: dict[str, str] | None) -> None:
    before = store_copy.index_bytes()
    result = store_copy.cli(*args, "publish", store_copy.package, "1.0.0", "--channel",
                            "production", env=env)
    assert "actor" in assert_one_line_error(result, 2)
    assert store_copy.index_bytes() == before
