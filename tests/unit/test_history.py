"""Unit tests for codecache.core.history (the chain) and trust.accept_history (the fork rule)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from codecache.core.errors import HistoryError, IndexRefused, Refusal
from codecache.core.history import (
    EMPTY_HISTORY,
    HEADER,
    Action,
    Actor,
    Change,
    History,
    diff,
    encode,
    entry_hash,
    import_history,
    verify,
)
from codecache.core.history_parse import load, parse_document, parse_tail
from codecache.core.index import (
    EMPTY,
    HistoryHead,
    Index,
    Release,
    add_release,
    from_payload,
    move_channel,
    to_payload,
    yank,
)
from codecache.core.pin import git_pin, svn_pin
from codecache.core.signing import canonical_json
from codecache.core.trust import accept_history

NOW = 1_800_000_000
RM = Actor("alice", 1001)


def release(version: str, author: str = "bob") -> Release:
    return Release(version=version, sha256="a" * 64, size=1, tar_sha256="b" * 64,
                   source=svn_pin(f"svn://x/p/tags/{version}", 3), author=author,
                   date=NOW - 100, minisig="sig\n")


def sample(n: int = 5) -> History:
    history = EMPTY_HISTORY
    for i in range(n):
        history = history.append([Change(Action.RELEASE, "pilot", f"1.{i}", svn_author="bob")],
                                 time=NOW + i, actor=RM, serial=100 + i)
    return history


def rechained(entries: list[dict[str, object]]) -> History:
    """A consistent chain of edited entries: what a writer rewriting history would sign."""
    parsed = parse_document(json.dumps({"entries": entries}).encode())
    history = EMPTY_HISTORY
    for position, entry in enumerate(parsed):
        history = history.extended([dataclasses.replace(
            entry, seq=position, prev=history.hashes[-1] if history.hashes else None)])
    return history


def dicts(history: History) -> list[dict[str, object]]:
    return [e.to_json() for e in history.entries]


# --- the chain ------------------------------------------------------------------------------


def test_every_entry_has_every_field_and_chains_to_the_previous() -> None:
    history = sample(3)
    doc = json.loads(history.render())
    assert [e["seq"] for e in doc["entries"]] == [0, 1, 2]
    assert set(doc["entries"][0]) == {"seq", "time", "actor", "uid", "action", "package",
                                      "version", "channel", "from", "reason", "svn_author",
                                      "serial", "prev"}
    assert doc["entries"][0]["prev"] is None
    assert doc["entries"][0]["time"] == "2027-01-15T08:00:00Z"
    for before, after in zip(doc["entries"], doc["entries"][1:], strict=False):
        assert after["prev"] == entry_hash(canonical_json(before))
    assert history.head == HistoryHead(3, entry_hash(canonical_json(doc["entries"][2])))


def test_render_parse_verify_round_trip() -> None:
    history = sample()
    assert verify(parse_document(history.render()), history.head) == history


def test_appends_keep_every_earlier_byte_in_place() -> None:
    short, long = sample(3), sample(5)
    raw = long.render()
    for seq in range(3):
        start = short.line_offset(seq)
        assert long.line_offset(seq) == start
        assert raw[start:start + len(short.lines[seq])] == short.lines[seq]
    assert raw.startswith(short.render()[:-len(b"\n]}\n")])


def test_load_reads_the_line_layout_fast_and_any_other_layout_alike() -> None:
    history = sample(4)
    assert load(history.render()) == history
    assert load(EMPTY_HISTORY.render()) == EMPTY_HISTORY
    pretty = json.dumps(json.loads(history.render()), indent=2).encode()
    assert load(pretty) == history


@pytest.mark.parametrize("layout", ["lines", "pretty"])
def test_load_refuses_a_broken_link_in_either_layout(layout: str) -> None:
    entries = dicts(sample(4))
    entries[1]["actor"] = "mallory"     # entry 2's prev no longer matches
    raw = EMPTY_HISTORY.render() if layout == "lines" else b""
    if layout == "lines":
        raw = raw.replace(b"\n\n", b"\n" + b",\n".join(canonical_json(e) for e in entries)
                          + b"\n", 1)
    else:
        raw = json.dumps({"entries": entries}, indent=2).encode()
    with pytest.raises(HistoryError, match="entry #2 does not follow"):
        load(raw)


def test_an_empty_history_is_valid_json_with_no_head() -> None:
    assert json.loads(EMPTY_HISTORY.render()) == {"entries": []}
    assert EMPTY_HISTORY.head == HistoryHead(0, None)
    assert EMPTY_HISTORY.line_offset(0) == len(HEADER)


def test_a_longer_history_verifies_its_first_length_entries() -> None:
    history = sample(5)
    assert verify(parse_document(history.render()), sample(3).head) == sample(3)


@pytest.mark.parametrize("tamper", ["edit", "remove", "reorder", "truncate", "edit_last"])
def test_a_tampered_history_does_not_verify(tamper: str) -> None:
    history = sample(5)
    entries = dicts(history)
    if tamper == "edit":
        entries[2]["actor"] = "mallory"
    elif tamper == "remove":
        del entries[2]
    elif tamper == "reorder":
        entries[1], entries[2] = entries[2], entries[1]
    elif tamper == "truncate":
        del entries[4]
    else:
        entries[4]["version"] = "9.9"
    with pytest.raises(HistoryError):
        verify(parse_document(json.dumps({"entries": entries}).encode()), history.head)


@pytest.mark.parametrize("raw", [b"[]", b'{"entries": {}}', b'{"entries": [], "x": 1}',
                                 b"not json", b'{"entries": [{"seq": 0}]}'])
def test_malformed_documents_are_refused(raw: bytes) -> None:
    with pytest.raises(HistoryError):
        parse_document(raw)


@pytest.mark.parametrize(("field", "value"), [
    ("time", "2027-01-15T08:00:00+00:00"), ("action", "delete"), ("package", "../x"),
    ("uid", -1), ("seq", True), ("prev", "zz"), ("channel", "production"), ("extra", 1),
    ("actor", ""), ("actor", "a\nb")])
def test_malformed_entries_are_refused(field: str, value: object) -> None:
    entry = dicts(sample(1))[0]
    entry[field] = value
    with pytest.raises(HistoryError):
        parse_document(json.dumps({"entries": [entry]}).encode())


def test_parse_tail_reads_what_follows_the_overlap_line() -> None:
    short, long = sample(3), sample(5)
    raw = long.render()[short.line_offset(2):]
    assert parse_tail(raw, short.lines[2]) == list(long.entries[3:])
    same = short.render()[short.line_offset(2):]
    assert parse_tail(same, short.lines[2]) == []


def test_parse_tail_gives_up_when_the_bytes_do_not_line_up() -> None:
    short, long = sample(3), sample(5)
    raw = long.render()
    assert parse_tail(raw[short.line_offset(1):], short.lines[2]) is None   # shifted
    assert parse_tail(raw[short.line_offset(2):-1], short.lines[2]) is None  # cut short
    spaced = raw[short.line_offset(2):].replace(b'","', b'", "', 1)
    assert parse_tail(spaced, short.lines[2]) is None   # not canonical: re-read in full


# --- what a change records ------------------------------------------------------------------


def base() -> Index:
    index = add_release(EMPTY, "pilot", release("1.0"))
    return move_channel(index, "pilot", "latest", "1.0", NOW)


def test_diff_records_a_release_and_its_auto_move_in_that_order() -> None:
    old = base()
    new = move_channel(add_release(old, "pilot", release("1.1", "carol")), "pilot", "latest",
                       "1.1", NOW + 1)
    assert diff(old, new) == [
        Change(Action.RELEASE, "pilot", "1.1", svn_author="carol"),
        Change(Action.MOVE, "pilot", "1.1", channel="latest", from_="1.0")]


def test_diff_records_a_yank_with_its_reason_and_a_new_channel_without_from() -> None:
    old = add_release(base(), "pilot", release("1.1"))
    assert diff(old, yank(old, "pilot", "1.1", "broken")) == [
        Change(Action.YANK, "pilot", "1.1", reason="broken")]
    assert diff(old, move_channel(old, "pilot", "rc", "1.1", NOW)) == [
        Change(Action.MOVE, "pilot", "1.1", channel="rc")]


def test_a_git_release_is_recorded_with_its_commit_author_as_svn_author() -> None:
    """DESIGN.md §9: the field keeps its name (old histories still verify); for a git
    package it holds the tag commit's author, ``Name <email>`` as the index records it."""
    author = "Ann Example <ann@example.org>"
    git = dataclasses.replace(release("2.0", author),
                              source=git_pin("https://git.example.org/p.git", "ab" * 20))
    old = base()
    new = add_release(old, "pilot", git)
    assert to_payload(new)["format"] == 2 and to_payload(old)["format"] == 1
    assert diff(old, new) == [Change(Action.RELEASE, "pilot", "2.0", svn_author=author)]
    history = sample(1).append(diff(old, new), time=NOW + 5, actor=RM, serial=200)
    entry = json.loads(history.render())["entries"][-1]
    assert entry["svn_author"] == author and set(entry) == set(
        json.loads(history.render())["entries"][0])     # no new field: same shape as svn
    assert verify(parse_document(history.render()), history.head) == history
    imported = import_history(dataclasses.replace(new, serial=9), 0)
    assert [(e.change.version, e.change.svn_author) for e in imported.entries
            if e.change.action is Action.RELEASE] == [("1.0", "bob"), ("2.0", author)]


def test_resigning_records_nothing() -> None:
    old = base()
    assert diff(old, dataclasses.replace(old, serial=9, generated=NOW + 60)) == []


def test_import_starts_a_history_in_time_order_with_actor_import() -> None:
    index = add_release(base(), "pilot", dataclasses.replace(release("0.9"), date=NOW - 500))
    index = yank(index, "pilot", "0.9", "old")
    index = dataclasses.replace(index, serial=77, generated=NOW + 10)
    history = import_history(index, 1000)
    got = [(e.change.action, e.change.version, e.time, e.actor, e.serial)
           for e in history.entries]
    assert got == [(Action.RELEASE, "0.9", NOW - 500, "import", 77),
                   (Action.RELEASE, "1.0", NOW - 100, "import", 77),
                   (Action.MOVE, "1.0", NOW, "import", 77),
                   (Action.YANK, "0.9", NOW + 10, "import", 77)]
    assert import_history(EMPTY, 0) == EMPTY_HISTORY


def test_the_index_payload_carries_the_head_and_round_trips() -> None:
    head = sample(2).head
    index = dataclasses.replace(base(), history=head)
    payload = to_payload(index)
    assert payload["history"] == {"length": 2, "head": head.head}
    assert from_payload(payload) == index
    assert "history" not in to_payload(base())   # an index from before history, unchanged
    assert from_payload(to_payload(base())).history is None


@pytest.mark.parametrize("bad", [{"length": 1, "head": None}, {"length": 0, "head": "a" * 64},
                                 {"length": -1, "head": None}, {"length": 1, "head": "xyz"}])
def test_a_malformed_head_makes_the_index_malformed(bad: dict[str, object]) -> None:
    payload = to_payload(base())
    payload["history"] = bad
    with pytest.raises(Exception, match="malformed index"):
        from_payload(payload)


# --- the fork rule (trust) ------------------------------------------------------------------


def test_a_history_that_extends_the_one_held_is_taken() -> None:
    held, new = sample(3), sample(5)
    assert accept_history(new.head, new.entries, held.head, local=held) == new
    assert accept_history(held.head, held.entries, held.head) == held


def test_a_first_history_is_taken_when_it_verifies() -> None:
    new = sample(2)
    assert accept_history(new.head, new.entries, None) == new
    assert accept_history(new.head, new.entries, HistoryHead(0, None)) == new


def fork_reason(candidate: History, held: History, **kw: object) -> str:
    with pytest.raises(IndexRefused) as info:
        accept_history(candidate.head, candidate.entries, held.head, local=held,
                       **kw)  # type: ignore[arg-type]
    assert info.value.reason is Refusal.HISTORY_FORK
    return str(info.value)


@pytest.mark.parametrize(("tamper", "named"), [
    ("edit", "entry #2"), ("reorder", "entry #1"), ("remove_then_grow", "entry #2")])
def test_a_resigned_history_that_rewrites_held_entries_is_a_fork(tamper: str,
                                                                  named: str) -> None:
    held = sample(5)
    entries = dicts(sample(6))
    if tamper == "edit":
        entries[2]["actor"] = "mallory"
    elif tamper == "reorder":
        entries[1], entries[2] = entries[2], entries[1]
    else:
        del entries[2]
    assert named in fork_reason(rechained(entries), held)


def test_fewer_entries_than_held_is_a_fork() -> None:
    assert "removed" in fork_reason(sample(3), sample(5))


def test_an_index_without_history_is_a_fork_only_where_one_is_held() -> None:
    held = sample(2)
    with pytest.raises(IndexRefused) as info:
        accept_history(None, None, held.head)
    assert info.value.reason is Refusal.HISTORY_FORK
    assert accept_history(None, None, None) is None
    assert accept_history(None, None, HistoryHead(0, None)) is None


def test_a_history_that_does_not_reach_its_signed_head_is_refused() -> None:
    held, new = sample(3), sample(5)
    entries = dicts(new)
    entries[4]["actor"] = "mallory"   # not re-chained: the signed head no longer matches
    offered = parse_document(json.dumps({"entries": entries}).encode())
    with pytest.raises(IndexRefused) as info:
        accept_history(new.head, offered, held.head, local=held)
    assert info.value.reason is Refusal.HISTORY_FORK
    assert "does not verify" in str(info.value)


def test_the_operator_override_takes_a_forked_history_once() -> None:
    held = sample(5)
    forked = rechained(dicts(sample(3)))
    assert accept_history(forked.head, forked.entries, held.head, allow_lower=True) == forked
    assert accept_history(None, None, held.head, allow_lower=True) is None


def test_an_entry_hash_covers_its_canonical_bytes() -> None:
    entry = sample(1).entries[0]
    assert encode(entry) == canonical_json(entry.to_json())
