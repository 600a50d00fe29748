"""Reading a release history strictly (DESIGN.md §9): a whole ``history.json`` (line by line
in ``history``'s layout, else as any JSON document), the entries after a byte range's
overlap, and the time of the last entry.

Every entry is checked field by field (``parse_entry``): what is read comes from a disk or an
upstream, so nothing is taken on trust until the chain is checked against a signed head
(``history.verify``).
"""

from __future__ import annotations

import json

from codecache.core.errors import HistoryError
from codecache.core.history import (
    EMPTY_HISTORY,
    HEADER,
    SEPARATOR,
    TRAILER,
    Action,
    Change,
    Entry,
    History,
    encode,
    entry_hash,
    is_actor,
)
from codecache.core.index import format_time, parse_time
from codecache.core.names import is_channel, is_package, is_sha256, is_version

_FIELDS = frozenset({"seq", "time", "actor", "uid", "action", "package", "version", "channel",
                     "from", "reason", "svn_author", "serial", "prev"})


def parse_document(raw: bytes) -> list[Entry]:
    """The entries of a ``/history.json`` document (any JSON layout), parsed strictly.

    Raises:
        HistoryError: not ``{"entries": [...]}`` or an entry is malformed.
    """
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise HistoryError(None, f"history is not valid JSON: {err}") from None
    if not isinstance(document, dict) or set(document) != {"entries"} \
            or not isinstance(document["entries"], list):
        raise HistoryError(None, 'history is not a {"entries": [...]} document')
    return [parse_entry(item, position) for position, item in enumerate(document["entries"])]


def load(raw: bytes) -> History:
    """A whole ``history.json``, parsed strictly and chained (not yet checked against a head).

    A file in this module's layout is read line by line and each entry hashed as the bytes
    of its line, without re-encoding it (a line that is not the canonical JSON of its entry
    cannot hash to the ``prev`` the writer computed, so that shortcut cannot let a change
    through); a file in any other layout, or one whose chain breaks, is read the slow way,
    which names what is wrong.

    Raises:
        HistoryError: malformed, or a link that does not follow.
    """
    fast = _load_lines(raw)
    return fast if fast is not None else EMPTY_HISTORY.extended(parse_document(raw))


def _load_lines(raw: bytes) -> History | None:
    if not raw.startswith(HEADER) or not raw.endswith(TRAILER):
        return None
    body = raw[len(HEADER):-len(TRAILER)]
    lines = tuple(body.split(SEPARATOR)) if body else ()
    entries, hashes = [], []
    previous: str | None = None
    for seq, line in enumerate(lines):
        try:
            entry = parse_entry(json.loads(line), seq)
        except (ValueError, UnicodeDecodeError, HistoryError):
            return None
        if entry.seq != seq or entry.prev != previous:
            return None
        previous = entry_hash(line)
        entries.append(entry)
        hashes.append(previous)
    return History(tuple(entries), lines, tuple(hashes))


def parse_tail(raw: bytes, overlap: bytes) -> list[Entry] | None:
    """The entries after ``overlap`` in a byte range of the file that starts at its line.

    None when the bytes do not line up with this module's layout (the caller then fetches
    the whole document): a fork, another layout, or a file that changed under the range.
    """
    if not raw.startswith(overlap) or not raw.endswith(TRAILER):
        return None
    rest = raw[len(overlap):-len(TRAILER)]
    if not rest:
        return []
    if not rest.startswith(SEPARATOR):
        return None
    entries = []
    for line in rest[len(SEPARATOR):].split(SEPARATOR):
        try:
            entry = parse_entry(json.loads(line), None)
        except (ValueError, UnicodeDecodeError, HistoryError):
            return None
        if encode(entry) != line:
            return None
        entries.append(entry)
    return entries


def last_time(raw: bytes) -> int | None:
    """The time of the last entry of a file in this layout, read from its last line only.

    None for an empty history or another layout (the server then dates it otherwise).
    """
    if not raw.endswith(TRAILER):
        return None
    end = len(raw) - len(TRAILER)
    line = raw[raw.rfind(b"\n", 0, end) + 1:end]
    try:
        return parse_entry(json.loads(line), None).time
    except (ValueError, UnicodeDecodeError, HistoryError):
        return None


def parse_entry(item: object, position: int | None) -> Entry:
    """One entry, strictly: every field present, nothing else, values well-formed.

    Raises:
        HistoryError: anything malformed.
    """
    where = f"entry #{position}" if position is not None else "entry"
    try:
        return _parse_entry(item)
    except (KeyError, TypeError, ValueError) as err:
        raise HistoryError(position, f"malformed history {where}: {err}") from None


def _parse_entry(item: object) -> Entry:
    if not isinstance(item, dict):
        raise TypeError("not an object")
    if set(item) != _FIELDS:
        raise ValueError(f"fields {sorted(set(item) ^ _FIELDS)} missing or unknown")
    action = Action(item["action"])
    package, version = _text(item["package"]), _text(item["version"])
    if not is_package(package) or not is_version(version):
        raise ValueError(f"bad package or version {package!r} {version!r}")
    channel, from_ = _opt_text(item["channel"]), _opt_text(item["from"])
    if (channel is None) != (action is not Action.MOVE) or (
            channel is not None and not is_channel(channel)):
        raise ValueError(f"bad channel {channel!r} for a {action.value}")
    if from_ is not None and (action is not Action.MOVE or not is_version(from_)):
        raise ValueError(f"bad from {from_!r}")
    time_text = _text(item["time"])
    when = parse_time(time_text)
    if format_time(when) != time_text:  # the hash covers the text: one spelling only
        raise ValueError(f"time {time_text!r} is not RFC 3339 UTC with seconds and Z")
    prev = _opt_text(item["prev"])
    if prev is not None and not is_sha256(prev):
        raise ValueError(f"bad prev {prev!r}")
    uid = item["uid"]
    if uid is not None:
        uid = _count(uid)
    change = Change(action, package, version, channel, from_, _opt_text(item["reason"]),
                    _opt_text(item["svn_author"]))
    actor = _text(item["actor"])
    if not is_actor(actor):
        raise ValueError(f"bad actor {actor!r}")
    return Entry(_count(item["seq"]), when, actor, uid, change, _count(item["serial"]), prev)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _opt_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value
