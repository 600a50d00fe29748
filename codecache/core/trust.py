"""The one home of the trust decision about a signed index (DESIGN.md §5).

Pure: bytes, keys, what this node accepted before and the time go in; a verified index or a
typed refusal (``IndexRefused`` with a ``Refusal`` reason) comes out. No files, no network:
the server reading its own store, ``codecache status``, the origin's writer and the replica's
pull loop all decide here, so the rules cannot drift apart (python-tuf keeps its
``TrustedMetadataSet`` the same way).

The rules, in the order they are applied:
1. the document parses and one signature by a trusted key verifies (any one suffices, so
   keys can rotate); its ``format`` is one this version knows; its payload is well-formed;
2. per source (an upstream URL): a lower serial than that source offered before is
   ``rollback``, the same serial with another payload ``conflict``. A source that is a
   pool (an edge's upstream, usually the VIP: members may answer a lower serial after a
   higher one while they catch up) offering a lower serial whose release history is a
   prefix of the one held is only behind, and goes on to rule 4 (``stale_upstream``); a
   forked history stays ``rollback``;
3. the same serial as the index held: the same payload is ``CURRENT`` (a confirmation),
   another payload is ``conflict``;
4. lower than the highest serial ever accepted: ``stale_upstream`` from an upstream (it is
   merely behind, normal in a chain), ``rollback`` from the local store;
5. where freshness is required (anything fetched from an upstream), past ``expires`` is
   ``expired``: a frozen index cannot be replayed.
6. for an index that is taken, its release history (``accept_history``, DESIGN.md §9): the
   first ``length`` entries offered must chain to the signed head, and must keep every
   entry this node already holds: fewer entries, another entry in their place, or no
   history at all where one is held, is ``history_fork``.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from codecache.core.errors import (
    HistoryError,
    IndexRefused,
    IntegrityError,
    Refusal,
    SignatureError,
)
from codecache.core.history import Entry, History, first_difference
from codecache.core.history import verify as verify_history
from codecache.core.index import (
    FORMATS,
    HistoryHead,
    Index,
    format_read,
    from_payload,
    to_payload,
)
from codecache.core.signing import (
    PublicKey,
    SecretKey,
    canonical_json,
    sign_document,
    verify_document,
)


@dataclass(frozen=True, slots=True)
class SignedIndex:
    """An index whose signature verified, with the exact document bytes it came in."""

    index: Index
    document: bytes
    digest: str          # sha256 of the canonical signed payload: what "same index" means
    signed_by: tuple[str, ...] = ()   # key ids of its signatures, in document order

    @property
    def serial(self) -> int:
        return self.index.serial


@dataclass(frozen=True, slots=True)
class Mark:
    """The highest serial one source has offered, and the payload it offered under it."""

    serial: int
    digest: str


@dataclass(frozen=True, slots=True)
class TrustState:
    """What this node has accepted before: the input of every decision."""

    highest_serial: int = 0
    held: SignedIndex | None = None
    marks: Mapping[str, Mark] = field(default_factory=dict)
    # The release history of the index held, verified; only a pool's lower serial is
    # compared with it (rule 2). None: not given, or none held.
    history: History | None = None

    @property
    def floor(self) -> int:
        return max(self.highest_serial, self.held.serial if self.held else 0)


class Outcome(enum.Enum):
    NEW = "new"            # accept: install it
    CURRENT = "current"    # the index already held: a confirmation, nothing to install


def verify(raw: bytes, keys: Mapping[str, PublicKey]) -> SignedIndex:
    """Parse a signed index document and check its signature, format and payload.

    Raises:
        IndexRefused: ``malformed``, ``bad_signature`` or ``unsupported_format``.
    """
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise IndexRefused(Refusal.MALFORMED, f"index is not valid JSON: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("signed"), dict):
        raise IndexRefused(Refusal.MALFORMED, "index is not a signed document")
    message = _signed_bytes(raw, document)
    try:
        payload = verify_document(keys, document, message=message)
    except SignatureError as err:
        raise IndexRefused(Refusal.BAD_SIGNATURE, str(err)) from None
    # Both formats (DESIGN.md §3: 2 = it holds a git release); whether the format
    # matches the releases is the payload's own consistency (``from_payload``: malformed).
    if format_read(payload) is None:
        raise IndexRefused(Refusal.UNSUPPORTED_FORMAT,
                           f"index format {payload.get('format')!r} is not supported (this "
                           f"version reads formats {' and '.join(map(str, FORMATS))}); "
                           "upgrade this node")
    try:
        index = from_payload(payload)
    except IntegrityError as err:
        raise IndexRefused(Refusal.MALFORMED, str(err)) from None
    signed_by = tuple(str(s.get("keyid")) for s in document.get("signatures", [])
                      if isinstance(s, dict))
    return SignedIndex(index, raw, hashlib.sha256(message).hexdigest(), signed_by)


def _signed_bytes(raw: bytes, document: dict[str, Any]) -> bytes:
    """The canonical bytes of ``signed``: what the signature covers and the digest hashes.

    ``sign_index`` writes the document as ``{"signatures":...,"signed":<canonical>}``, so
    in that layout the bytes are taken from ``raw`` as they are instead of serialising the
    parsed payload again (a quarter of a verification at thousands of releases). The
    prefix is rebuilt from the parsed signatures, so only a document that is exactly
    ``prefix + signed + "}"`` takes this path; a signature that verifies over the slice then
    covers exactly the payload parsed from it (a canonical object, followed only by the
    closing brace). Anything else (an older indented document, other spacing or key
    order) is serialised again.

    Raises:
        IndexRefused: ``malformed`` (a payload JSON cannot express canonically, e.g. NaN).
    """
    signatures = document.get("signatures")
    if isinstance(signatures, list):
        try:
            prefix = b'{"signatures":' + canonical_json(signatures) + b',"signed":'
        except ValueError:
            prefix = b""
        body = raw[:-1] if raw.endswith(b"\n") else raw
        if prefix and body.startswith(prefix) and body.endswith(b"}"):
            return body[len(prefix):-1]
    try:
        return canonical_json(document["signed"])
    except ValueError as err:  # NaN or Infinity
        raise IndexRefused(Refusal.MALFORMED, f"index is not canonical JSON: {err}") from None


def decide(candidate: SignedIndex, state: TrustState, *, now: int, source: str | None = None,
           fresh_required: bool = True, allow_lower: bool = False,
           pool: bool = False) -> Outcome:
    """Whether ``candidate`` (from upstream ``source``, or None: the local store) is taken.

    ``allow_lower`` is the operator's explicit override after a restore or a key
    compromise: the serial floor and the source's mark are ignored once. ``pool``: the
    source is a pool of nodes behind one name (an edge's upstream, DESIGN.md §5), judged
    against ``state.history``.

    Raises:
        IndexRefused: ``rollback``, ``conflict``, ``stale_upstream`` or ``expired``.
    """
    serial = candidate.serial
    mark = state.marks.get(source) if source is not None else None
    if mark is not None and not allow_lower:
        if serial < mark.serial and not (pool and is_prefix(candidate.index.history,
                                                           state.history)):
            raise IndexRefused(Refusal.ROLLBACK, f"{source} offers serial {serial}, lower "
                               f"than the {mark.serial} it offered before")
        if serial == mark.serial and candidate.digest != mark.digest:
            raise IndexRefused(Refusal.CONFLICT, f"{source} offers serial {serial} again "
                               "with another signed payload")
    held = state.held
    if held is not None and serial == held.serial:
        if candidate.digest == held.digest:
            return Outcome.CURRENT
        raise IndexRefused(Refusal.CONFLICT, f"serial {serial} is held with another signed "
                           "payload (two writers?)")
    if serial < state.floor and not allow_lower:
        if source is None:
            raise IndexRefused(Refusal.ROLLBACK, f"serial {serial} is older than the "
                               f"{state.floor} already accepted")
        raise IndexRefused(Refusal.STALE_UPSTREAM, f"{source} offers serial {serial}, behind "
                           f"the {state.floor} held")
    if fresh_required and is_expired(candidate.index, now):
        raise IndexRefused(Refusal.EXPIRED, f"serial {serial} expired at "
                           f"{candidate.index.expires} (now {now})")
    return Outcome.NEW


def is_prefix(head: HistoryHead | None, held: History | None) -> bool:
    """Whether the history ``head`` signs is ``held`` or a prefix of it: what a pool member
    that has not caught up yet offers. No history on either side proves nothing (False)."""
    if head is None or held is None or head.length > len(held):
        return False
    return head.length == 0 or held.hashes[head.length - 1] == head.head


def evaluate(raw: bytes, keys: Mapping[str, PublicKey], state: TrustState, *, now: int,
             source: str | None = None, fresh_required: bool = True,
             allow_lower: bool = False, pool: bool = False) -> tuple[Outcome, SignedIndex]:
    """``verify`` then ``decide``: the whole trust decision about one document.

    Raises:
        IndexRefused: for any reason of ``Refusal`` the two steps name.
    """
    candidate = verify(raw, keys)
    return decide(candidate, state, now=now, source=source, fresh_required=fresh_required,
                  allow_lower=allow_lower, pool=pool), candidate


def accept_history(candidate: HistoryHead | None, entries: Sequence[Entry] | History | None,
                   held: HistoryHead | None, *, local: History | None = None,
                   allow_lower: bool = False) -> History | None:
    """The verified history of an index that is taken; refused where it forks the one held.

    ``candidate`` is what the new index signs, ``entries`` the history offered with it (at
    least ``candidate.length`` entries; more are ignored), ``held`` what the index held
    signs, ``local`` this node's entries (only to name the first one rewritten).
    ``allow_lower`` (the operator's override) takes a forked history once.

    Raises:
        IndexRefused: ``history_fork``.
    """
    keep = held is not None and held.length > 0 and not allow_lower
    if candidate is None:
        if keep and held is not None:
            raise IndexRefused(Refusal.HISTORY_FORK, "the index carries no history; this node "
                               f"holds {held.length} signed entries")
        return None
    if keep and held is not None and candidate.length < held.length:
        raise IndexRefused(Refusal.HISTORY_FORK, f"the index signs {candidate.length} history "
                           f"entries; this node holds {held.length}: entries were removed")
    try:
        history = verify_history(entries or (), candidate)
    except HistoryError as err:
        raise IndexRefused(Refusal.HISTORY_FORK, "the history offered does not verify "
                           f"against its signed index: {err}") from None
    if keep and held is not None and history.hashes[held.length - 1] != held.head:
        seq = first_difference(local, history) if local is not None else None
        where = f"entry #{seq}" if seq is not None else f"entries before #{held.length}"
        raise IndexRefused(Refusal.HISTORY_FORK, f"the history rewrites {where} that this "
                           "node already holds")
    return history


def offered(state: TrustState, source: str, candidate: SignedIndex) -> Mapping[str, Mark]:
    """The marks after ``source`` offered ``candidate`` (verified, accepted or not)."""
    mark = state.marks.get(source)
    if mark is not None and mark.serial >= candidate.serial:
        return state.marks
    return {**state.marks, source: Mark(candidate.serial, candidate.digest)}


def sign_index(secret: SecretKey | Sequence[SecretKey], index: Index) -> SignedIndex:
    """The origin's side: sign ``index`` (by every key given) into the document nodes verify."""
    payload = to_payload(index)
    message = canonical_json(payload)
    document = sign_document(secret, payload, message=message)
    # The document is the canonical JSON of {"signatures", "signed"} (keys in that order),
    # built around the bytes just signed: serialised once, with the C encoder (an
    # indented dump took the pure-Python one, most of a commit's time at thousands of
    # releases). One line; ``jq .`` or ``python3 -m json.tool`` shows it indented.
    data = (b'{"signatures":' + canonical_json(document["signatures"]) + b',"signed":'
            + message + b"}\n")
    signed_by = tuple(str(s["keyid"]) for s in document["signatures"])
    return SignedIndex(index, data, hashlib.sha256(message).hexdigest(), signed_by)


def past_expiry(expires: float, now: float) -> bool:
    """The one expiry rule: an index signed to ``expires`` is expired at ``now``."""
    return expires <= now


def is_expired(index: Index, now: float) -> bool:
    """Past ``expires``: refused from an upstream, served but degraded once held."""
    return past_expiry(index.expires, now)

