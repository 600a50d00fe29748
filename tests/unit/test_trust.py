"""The trust decision about a signed index: every refusal reason of DESIGN.md §5, in order."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from codecache.core.errors import IndexRefused, Refusal
from codecache.core.history import EMPTY_HISTORY, Action, Actor, Change, History
from codecache.core.index import EMPTY, Index, Release, add_release
from codecache.core.pin import svn_pin
from codecache.core.signing import SecretKey, canonical_json, generate_key, sign_document
from codecache.core.trust import (
    Mark,
    Outcome,
    SignedIndex,
    TrustState,
    decide,
    evaluate,
    offered,
    sign_index,
    verify,
)

NOW = 1_800_000_000
UP = "http://origin-a:8080"


@pytest.fixture
def key() -> SecretKey:
    return generate_key()


def index(serial: int, *, author: str = "rm", expires: int = NOW + 3600) -> Index:
    release = Release(version="1.0", sha256="a" * 64, size=3, tar_sha256="b" * 64,
                      source=svn_pin("svn://x/p/tags/1.0", 4), author=author, date=NOW,
                      minisig="sig\n")
    base = dataclasses.replace(EMPTY, serial=serial, generated=NOW, expires=expires)
    return add_release(base, "pilot", release)


def signed(key: SecretKey, serial: int, **kw: object) -> SignedIndex:
    return sign_index(key, index(serial, **kw))  # type: ignore[arg-type]


def keys(*secrets: SecretKey) -> dict[str, object]:
    return {s.public.keyid: s.public for s in secrets}


def reason(raw: bytes, key_set: dict[str, object], state: TrustState, **kw: object) -> Refusal:
    with pytest.raises(IndexRefused) as info:
        evaluate(raw, key_set, state, now=NOW, **kw)  # type: ignore[arg-type]
    return info.value.reason


def test_a_first_good_index_is_new_and_round_trips(key: SecretKey) -> None:
    doc = signed(key, 5)
    outcome, got = evaluate(doc.document, keys(key), TrustState(), now=NOW,  # type: ignore[arg-type]
                            source=UP)
    assert outcome is Outcome.NEW
    assert got.index == index(5) and got.digest == doc.digest


@pytest.mark.parametrize(("raw", "expected"), [
    (b"<html>502 Bad Gateway</html>", Refusal.MALFORMED),
    (b'{"signed": {"serial": 1', Refusal.MALFORMED),
    (b"\x1f\x8b\x08\x00", Refusal.MALFORMED),
    (b'{"signed": {}, "signatures": []}', Refusal.BAD_SIGNATURE),
])
def test_garbage_in_place_of_an_index(key: SecretKey, raw: bytes, expected: Refusal) -> None:
    assert reason(raw, keys(key), TrustState()) is expected


def test_tampered_payload_and_untrusted_key_are_bad_signatures(key: SecretKey) -> None:
    doc = json.loads(signed(key, 5).document)
    doc["signed"]["serial"] = 6
    assert reason(json.dumps(doc).encode(), keys(key), TrustState()) is Refusal.BAD_SIGNATURE
    other = generate_key()
    assert reason(signed(other, 5).document, keys(key), TrustState()) is Refusal.BAD_SIGNATURE


def test_any_one_trusted_signature_suffices(key: SecretKey) -> None:
    old, new = generate_key(), key
    payload = json.loads(signed(new, 5).document)["signed"]
    both = sign_document(old, payload)
    both["signatures"] += sign_document(new, payload)["signatures"]
    raw = json.dumps(both).encode()
    for trusted in (keys(old), keys(new)):
        assert verify(raw, trusted).serial == 5  # type: ignore[arg-type]
    assert reason(raw, keys(generate_key()), TrustState()) is Refusal.BAD_SIGNATURE


def test_an_unknown_format_is_unsupported(key: SecretKey) -> None:
    payload = json.loads(signed(key, 5).document)["signed"]
    for unknown in (3, "2", 2.0):
        payload["format"] = unknown
        raw = json.dumps(sign_document(key, payload)).encode()
        assert reason(raw, keys(key), TrustState()) is Refusal.UNSUPPORTED_FORMAT, unknown
    # Format 2 is known (an index that holds a git release); one without any is malformed.
    payload["format"] = 2
    raw = json.dumps(sign_document(key, payload)).encode()
    assert reason(raw, keys(key), TrustState()) is Refusal.MALFORMED


def test_expired_is_refused_from_an_upstream_but_read_from_the_store(key: SecretKey) -> None:
    doc = signed(key, 5, expires=NOW - 1)
    assert reason(doc.document, keys(key), TrustState(), source=UP) is Refusal.EXPIRED
    assert decide(doc, TrustState(), now=NOW, fresh_required=False) is Outcome.NEW


def test_the_index_held_again_is_current_even_when_expired(key: SecretKey) -> None:
    doc = signed(key, 5, expires=NOW - 1)
    state = TrustState(5, doc)
    assert decide(doc, state, now=NOW, source=UP) is Outcome.CURRENT


def test_same_serial_other_payload_is_a_conflict(key: SecretKey) -> None:
    held = signed(key, 5)
    other = signed(key, 5, author="someone else")
    assert reason(other.document, keys(key), TrustState(5, held), source=UP) is Refusal.CONFLICT
    marks = {UP: Mark(7, signed(key, 7).digest)}
    assert reason(signed(key, 7, author="x").document, keys(key),
                  TrustState(5, held, marks), source=UP) is Refusal.CONFLICT


def test_lower_than_the_source_offered_is_rollback_else_stale(key: SecretKey) -> None:
    held = signed(key, 9)
    marks = {UP: Mark(9, held.digest)}
    old = signed(key, 8).document
    assert reason(old, keys(key), TrustState(9, held, marks), source=UP) is Refusal.ROLLBACK
    assert reason(old, keys(key), TrustState(9, held, marks), source="http://b") \
        is Refusal.STALE_UPSTREAM
    assert reason(old, keys(key), TrustState(9, held)) is Refusal.ROLLBACK  # local store


def _history(*versions: str) -> History:
    changes = [Change(Action.RELEASE, "pilot", v) for v in versions]
    return EMPTY_HISTORY.append(changes, time=NOW, actor=Actor("rm", 1), serial=1)


def with_history(key: SecretKey, serial: int, history: History) -> SignedIndex:
    return sign_index(key, dataclasses.replace(index(serial), history=history.head))


def test_a_pool_behind_with_a_prefix_history_is_stale_not_rollback(key: SecretKey) -> None:
    """An edge's upstream is a pool (the VIP): a member that has not caught up answers a
    lower serial after a higher one (DESIGN.md §5); a replica's upstream may not."""
    held_history = _history("1.0", "1.1")
    held = with_history(key, 9, held_history)
    state = TrustState(9, held, {UP: Mark(9, held.digest)}, history=held_history)
    for lower in (with_history(key, 8, held_history),          # a re-sign before it
                  with_history(key, 7, held_history.prefix(1)),  # an entry behind
                  with_history(key, 6, EMPTY_HISTORY)):
        assert reason(lower.document, keys(key), state, source=UP, pool=True) \
            is Refusal.STALE_UPSTREAM
        assert reason(lower.document, keys(key), state, source=UP) is Refusal.ROLLBACK
    # A lower serial whose history is not the one held (a restored origin wrote other
    # entries; or one more than held: two writers) stays a rollback from a pool too.
    for forked in (_history("1.0", "2.0"), _history("1.0", "1.1", "1.2")):
        doc = with_history(key, 8, forked).document
        assert reason(doc, keys(key), state, source=UP, pool=True) is Refusal.ROLLBACK
    # Without the held history to compare with (none held, or none given), no proof.
    doc = with_history(key, 8, held_history).document
    assert reason(doc, keys(key), dataclasses.replace(state, history=None), source=UP,
                  pool=True) is Refusal.ROLLBACK
    assert reason(signed(key, 8).document, keys(key), state, source=UP, pool=True) \
        is Refusal.ROLLBACK
    # The same serial with another payload is still a conflict from a pool.
    other = with_history(key, 9, _history("1.0", "2.0")).document
    assert reason(other, keys(key), state, source=UP, pool=True) is Refusal.CONFLICT


def test_the_floor_is_the_highest_serial_ever_accepted(key: SecretKey) -> None:
    # A wiped index but a remembered serial: a lower one is still refused ...
    assert reason(signed(key, 8).document, keys(key), TrustState(9), source=UP) \
        is Refusal.STALE_UPSTREAM
    # ... the same serial is taken again (repair), a higher one is new.
    assert decide(signed(key, 9), TrustState(9), now=NOW, source=UP) is Outcome.NEW
    assert decide(signed(key, 10), TrustState(9), now=NOW, source=UP) is Outcome.NEW


def test_the_operator_override_accepts_a_lower_serial_once(key: SecretKey) -> None:
    held = signed(key, 9)
    state = TrustState(9, held, {UP: Mark(9, held.digest)})
    assert decide(signed(key, 3), state, now=NOW, source=UP, allow_lower=True) is Outcome.NEW


def test_offers_raise_the_sources_mark_only(key: SecretKey) -> None:
    state = TrustState(marks={UP: Mark(5, "d")})
    assert offered(state, UP, signed(key, 4)) == {UP: Mark(5, "d")}
    higher = signed(key, 6)
    assert offered(state, UP, higher) == {UP: Mark(6, higher.digest)}


def test_the_signed_bytes_are_read_from_the_document_in_the_layout_sign_index_writes(
        key: SecretKey) -> None:
    doc = signed(key, 5)
    payload = json.loads(doc.document)["signed"]
    assert doc.document == (b'{"signatures":' + canonical_json(
        json.loads(doc.document)["signatures"]) + b',"signed":' + canonical_json(payload)
        + b"}\n")
    got = verify(doc.document, keys(key))  # type: ignore[arg-type]
    assert got.digest == doc.digest == hashlib.sha256(canonical_json(payload)).hexdigest()
    # The same document in another layout (indented, as older versions wrote it) is
    # serialised again: same payload, same digest.
    indented = json.dumps(json.loads(doc.document), indent=1, sort_keys=True).encode()
    assert verify(indented, keys(key)).digest == doc.digest  # type: ignore[arg-type]
    assert verify(indented, keys(key)).index == got.index  # type: ignore[arg-type]


def test_a_second_signed_member_after_the_signed_bytes_is_refused(key: SecretKey) -> None:
    """json.loads keeps the last of duplicate keys: the payload read must be the one signed."""
    doc = signed(key, 5)
    evil = dataclasses.replace(index(6), expires=NOW + 10 ** 6)
    evil_payload = canonical_json(json.loads(sign_index(key, evil).document)["signed"])
    forged = doc.document.rstrip(b"\n")[:-1] + b',"signed":' + evil_payload + b"}\n"
    assert json.loads(forged)["signed"]["serial"] == 6
    with pytest.raises(IndexRefused) as info:
        verify(forged, keys(key))  # type: ignore[arg-type]
    assert info.value.reason is Refusal.BAD_SIGNATURE
    # Nor does a payload swapped under the original signatures pass.
    swapped = doc.document.replace(canonical_json(json.loads(doc.document)["signed"]),
                                   evil_payload)
    with pytest.raises(IndexRefused) as info:
        verify(swapped, keys(key))  # type: ignore[arg-type]
    assert info.value.reason is Refusal.BAD_SIGNATURE
