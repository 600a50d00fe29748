"""Replicas mirror the release history (DESIGN.md §9) and refuse one that forks it.

Real processes: the origin's ``codecache serve`` on a synced store (real svnserve), the
replica's ``codecache serve`` pulling from it. The forks are made the way a writer holding
the origin's key would make them (an edited, removed or reordered entry, re-chained and
signed under a new serial): the origin itself never appends to a history that does not
verify (tests/integration/test_history.py), so only a key holder can offer one.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from codecache.core.history import EMPTY_HISTORY, Action, Actor, Change, History
from codecache.core.history_parse import parse_document
from codecache.core.index import move_channel
from codecache.core.signing import load_secret_key, load_trusted_keys
from codecache.core.trust import sign_index, verify
from codecache.store.store import Store
from tests.conftest import Origin, run_cli
from tests.http.helpers import Server, start_server
from tests.integration.test_history import rewrite, strip_history
from tests.replica.conftest import start_replica


def serial_of(server: Server) -> int:
    serial: int = json.loads(server.request("/index.json").body)["signed"]["serial"]
    return serial


def history_url(server: Server, config: Path) -> dict[str, Any]:
    result = run_cli("history", "--json", "--url", server.base, config=config, check=True)
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def refusals(server: Server, reason: str) -> int:
    match = re.search(rf'codecache_replica_refusals_total\{{reason="{reason}"\}} ([0-9.]+)',
                      server.request("/metrics").body.decode())
    return int(float(match.group(1))) if match else 0


def test_a_replica_mirrors_the_history_and_fetches_only_what_is_new(
        served_origin: Server, tmp_path: Path) -> None:
    origin, store = served_origin, served_origin.origin
    replica = start_replica(tmp_path / "replica", store, [origin.base], interval="0.5s")
    try:
        assert replica.request("/history.json").body == \
            (store.store / "history.json").read_bytes()
        steps = [("alice", ["publish", store.package, "1.2.0", "--channel", "production"]),
                 ("bob", ["publish", store.package, "1.0.0", "--channel", "production"]),
                 ("alice", ["publish", store.package, "1.0.0", "--channel", "latest"]),
                 ("bob", ["yank", store.package, "1.2.0", "--reason", "broken build"])]
        for actor, args in steps:
            store.cli(*args, check=True, env={"CODECACHE_ACTOR": actor})
            serial = store.status_json()["serial"]
            replica.wait_for(f"the replica has serial {serial}",
                             lambda s=serial: serial_of(replica) == s, 10)   # type: ignore[misc]
        mine = replica.request("/history.json").body
        assert mine == (store.store / "history.json").read_bytes()
        assert (replica.origin.store / "history.json").read_bytes() == mine
        local = json.loads(store.cli("history", "--json", check=True).stdout)
        via_replica = history_url(replica, store.config)
        assert via_replica == local
        assert [(e["actor"], e["action"]) for e in via_replica["entries"][3:]] == [
            ("alice", "move"), ("bob", "move"), ("alice", "move"), ("bob", "yank")]
        # The replica's own store answers `history` too.
        on_replica = run_cli("history", "--json", config=replica.origin.config, check=True)
        assert json.loads(on_replica.stdout)["entries"] == local["entries"]
        # Growth: after its first whole copy, the replica asked only for the new bytes.
        statuses = re.findall(r'"GET /history.json" (\d{3}) ', origin.log_text())
        assert statuses == ["200"] + ["206"] * len(steps), statuses
    finally:
        replica.stop()


def rechained(entries: list[dict[str, Any]]) -> History:
    """Edited entries made into a consistent chain again (seq and prev recomputed)."""
    history = EMPTY_HISTORY
    for position, entry in enumerate(parse_document(json.dumps({"entries": entries}).encode())):
        history = history.extended([dataclasses.replace(
            entry, seq=position, prev=history.hashes[-1] if history.hashes else None)])
    return history


def forge(origin: Origin, how: str) -> int:
    """Rewrite the origin's history with one entry edited/removed/reordered, sign it under a
    new serial with the origin's key (plus one new change), and install it; the new serial."""
    store = Store(origin.store)
    held = verify(store.read_document() or b"", load_trusted_keys([origin.public_key]))
    assert held.index.history is not None
    entries = [e.to_json() for e in store.load_history(held.index.history).entries]
    rewrite(entries, how)
    now = int(time.time())
    serial = max(now, held.serial + 1)
    history = rechained(entries).append(
        [Change(Action.MOVE, origin.package, "1.0.0", channel="rc")], time=now,
        actor=Actor("mallory", 0), serial=serial)
    index = move_channel(held.index, origin.package, "rc", "1.0.0", now)
    index = dataclasses.replace(index, serial=serial, generated=now, expires=now + 3600,
                                history=history.head)
    store.install(sign_index(load_secret_key(origin.secret_key), index),
                  previous=held.index, history=history)
    return serial


@pytest.mark.parametrize("how", ["edited", "removed", "reordered"])
def test_a_replica_refuses_a_history_that_rewrites_entries_it_holds(
        served_origin: Server, tmp_path: Path, how: str) -> None:
    origin, store = served_origin, served_origin.origin
    replica = start_replica(tmp_path / "replica", store, [origin.base], interval="0.5s")
    try:
        good_serial = serial_of(replica)
        good_history = replica.request("/history.json").body
        forged = forge(store, how)
        origin.wait_for("the origin serves the forged index",
                        lambda: serial_of(origin) == forged, 5)
        replica.wait_for("the fork is refused and counted",
                         lambda: refusals(replica, "history_fork") >= 1, 15)
        assert "history_fork" in replica.log_text()
        # The replica keeps serving its last good index and history, and stays ready.
        assert serial_of(replica) == good_serial
        assert replica.request("/history.json").body == good_history
        assert replica.request("/readyz").status == 200
        assert replica.request(f"/{store.package}/latest.tar.gz").status == 200
        assert history_url(replica, store.config)["serial"] == good_serial
        # The forged origin is consistent in itself: only a holder of the old entries,
        # like the replica, can tell that they were rewritten.
        assert history_url(origin, store.config)["serial"] == forged
    finally:
        replica.stop()


def test_a_replica_follows_an_origin_from_before_history(served_origin: Server,
                                                        tmp_path: Path) -> None:
    origin, store = served_origin, served_origin.origin
    strip_history(store)
    origin.wait_for("the origin serves an index without history",
                    lambda: b'"history"' not in origin.request("/index.json").body, 5)
    replica = start_replica(tmp_path / "replica", store, [origin.base], interval="0.5s")
    try:
        assert replica.request("/history.json").status == 404
        # The origin's first change after the upgrade starts the history (import entries).
        store.cli("--actor", "alice", "publish", store.package, "1.0.0", "--channel",
                  "production", check=True)
        serial = store.status_json()["serial"]
        replica.wait_for("the replica takes the first history",
                         lambda: serial_of(replica) == serial, 10)
        entries = history_url(replica, store.config)["entries"]
        assert [e["actor"] for e in entries] == ["import"] * 3 + ["alice"]
        assert replica.request("/history.json").body == \
            (store.store / "history.json").read_bytes()
    finally:
        replica.stop()


def test_a_replica_repairs_a_damaged_history_file_from_its_upstream(
        served_origin: Server, tmp_path: Path) -> None:
    origin, store = served_origin, served_origin.origin
    replica = start_replica(tmp_path / "replica", store, [origin.base], interval="0.5s")
    try:
        good = (store.store / "history.json").read_bytes()
        path = replica.origin.store / "history.json"
        assert path.read_bytes() == good
        path.write_bytes(good.replace(b'"actor":"sync"', b'"actor":"mallory"', 1))
        replica.wait_for("the history file is repaired", lambda: path.read_bytes() == good, 15)
        replica.wait_for("the repair is logged",
                         lambda: "history.json repaired" in replica.log_text(), 5)
        replica.wait_for("the repaired file is served",
                         lambda: replica.request("/history.json").body == good, 5)
        assert refusals(replica, "history_fork") == 0
    finally:
        replica.stop()


def test_an_origin_restored_from_backup_forks_the_history_until_the_operator_override(
        served_origin: Server, tmp_path: Path) -> None:
    """No forging: the real way to a fork. The restored origin lacks an entry the replica
    took, then writes another in its place under a higher serial."""
    origin, store = served_origin, served_origin.origin
    backup = tmp_path / "backup"
    shutil.copytree(store.store, backup)
    replica = start_replica(tmp_path / "replica", store, [origin.base], interval="0.5s")
    try:
        store.cli("--actor", "alice", "publish", store.package, "1.0.0", "--channel",
                  "production", check=True)
        lost = store.status_json()["serial"]
        replica.wait_for("the replica takes alice's move", lambda: serial_of(replica) == lost, 10)
        origin.stop()
        shutil.rmtree(store.store)
        shutil.copytree(backup, store.store)
        time.sleep(1)   # a serial above the lost one (time-based serials)
        store.cli("--actor", "bob", "publish", store.package, "1.2.0", "--channel", "rc",
                  check=True)
        restored = start_server(store, port=origin.port)
        try:
            replica.wait_for("the rewritten history is refused",
                             lambda: refusals(replica, "history_fork") >= 1, 15)
            assert serial_of(replica) == lost
            assert history_url(replica, store.config)["entries"][-1]["actor"] == "alice"
            result = run_cli("replicate", "--accept-lower-serial",
                             config=replica.origin.config)
            assert result.returncode == 0, result.stderr
            replica.wait_for("the replica serves the restored origin's history",
                             lambda: replica.request("/history.json").body ==
                             (store.store / "history.json").read_bytes(), 10)
            assert history_url(replica, store.config)["entries"][-1]["actor"] == "bob"
        finally:
            restored.stop()
    finally:
        replica.stop()


def test_a_history_that_does_not_reach_its_signed_head_is_refused(served_origin: Server,
                                                                  tmp_path: Path) -> None:
    """An upstream's file edited after signing, in entries the replica does not hold yet."""
    origin, store = served_origin, served_origin.origin
    # Pulls at start only; the next pull is the explicit `replicate --once` below.
    replica = start_replica(tmp_path / "replica", store, [origin.base], interval="1h")
    try:
        held = serial_of(replica)
        store.cli("--actor", "alice", "publish", store.package, "1.0.0", "--channel",
                  "production", check=True)
        path = store.store / "history.json"
        path.write_bytes(path.read_bytes().replace(b'"actor":"alice"', b'"actor":"bob"'))
        # The origin's server serves the publish and the edited file within a watch tick;
        # a pull before that is a plain 304 or the honest file (failed once in a full run).
        origin.wait_for("the origin serves the publish with the edited history",
                        lambda: serial_of(origin) > held
                        and b'"actor":"bob"' in origin.request("/history.json").body, 10)
        result = run_cli("replicate", "--once", config=replica.origin.config)
        assert result.returncode == 3, result.stderr
        assert "history_fork" in result.stderr and "does not verify" in result.stderr
        replica.wait_for("the refusal is counted",
                         lambda: refusals(replica, "history_fork") == 1, 10)
        assert serial_of(replica) == held
        assert replica.request("/readyz").status == 200
    finally:
        replica.stop()
