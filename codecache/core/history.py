"""The release history (DESIGN.md §9): an append-only, hash-chained log of every change.

Pure values and functions: entries and their canonical bytes, the file layout, the chain
check against the ``(length, head)`` a signed index carries, the entries one change
produces (a diff of the index before and after), and the entries that start the history of
a store that predates it (actor ``import``). Files live in ``store``; the trust decision
about an upstream's history (``history_fork``) lives in ``trust``.

File layout of ``history.json``: one entry's canonical JSON per line, so an append leaves
every earlier byte where it was::

    {"entries":[
    {...entry 0...},
    {...entry 1...}
    ]}

That is ``HEADER + b",\\n".join(lines) + TRAILER``. Entry ``i``'s line starts at an offset
that appends never move, so a replica that holds ``n`` entries asks an upstream only for
``Range: bytes=<start of line n-1>-`` and checks that the range starts with the exact bytes
of its own last entry (docs/replication.md, "History"). Any reader may parse it as plain
JSON; ``history_parse.parse_document`` does, so a file in another layout is still read (and
rewritten in this one). Reading a history (strictly: it comes from a disk or an upstream)
is ``history_parse``'s.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from codecache.core.errors import ConfigError, HistoryError
from codecache.core.index import HistoryHead, Index, Package, format_time
from codecache.core.names import version_key
from codecache.core.signing import canonical_json

HEADER = b'{"entries":[\n'
SEPARATOR = b",\n"
TRAILER = b"\n]}\n"
IMPORT_ACTOR = "import"
SYNC_ACTOR = "sync"
_MAX_ACTOR = 128


class Action(enum.Enum):
    RELEASE = "release"   # a new release entered the index
    MOVE = "move"         # a channel moved (``from`` the previous version, None if new)
    YANK = "yank"         # a release was withdrawn (``reason``)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: a self-asserted name and the OS user id that ran the command."""

    name: str
    uid: int | None


@dataclass(frozen=True, slots=True)
class Change:
    """What one change did, before it is stamped with time, actor, serial and chain."""

    action: Action
    package: str
    version: str
    channel: str | None = None
    from_: str | None = None
    reason: str | None = None
    svn_author: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    time: int
    actor: str
    uid: int | None
    change: Change
    serial: int
    prev: str | None

    def to_json(self) -> dict[str, Any]:
        """The entry as served: every field present, ``null`` where it does not apply."""
        c = self.change
        return {"seq": self.seq, "time": format_time(self.time), "actor": self.actor,
                "uid": self.uid, "action": c.action.value, "package": c.package,
                "version": c.version, "channel": c.channel, "from": c.from_,
                "reason": c.reason, "svn_author": c.svn_author, "serial": self.serial,
                "prev": self.prev}


def encode(entry: Entry) -> bytes:
    """The canonical JSON of an entry: its line in the file, and what its hash covers."""
    return canonical_json(entry.to_json())


def entry_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def check_actor(name: str) -> str:
    """An actor name as given (``--actor``, ``$CODECACHE_ACTOR``).

    Raises:
        ConfigError: empty, too long, or holding control characters.
    """
    if not is_actor(name):
        raise ConfigError(f"invalid actor name {name!r} (1-{_MAX_ACTOR} printable characters)")
    return name


def is_actor(name: str) -> bool:
    return 0 < len(name) <= _MAX_ACTOR and name.isprintable()


@dataclass(frozen=True, slots=True)
class History:
    """A chain of entries whose links were checked, with each entry's line and hash."""

    entries: tuple[Entry, ...] = ()
    lines: tuple[bytes, ...] = ()
    hashes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def head(self) -> HistoryHead:
        return HistoryHead(len(self.entries), self.hashes[-1] if self.hashes else None)

    def render(self) -> bytes:
        """The bytes of ``history.json``."""
        return HEADER + SEPARATOR.join(self.lines) + TRAILER

    def line_offset(self, seq: int) -> int:
        """Where entry ``seq``'s line starts in ``render()`` (it never moves on append)."""
        return len(HEADER) + sum(len(line) + len(SEPARATOR) for line in self.lines[:seq])

    def prefix(self, length: int) -> History:
        return History(self.entries[:length], self.lines[:length], self.hashes[:length])

    def append(self, changes: Iterable[Change], *, time: int, actor: Actor,
               serial: int) -> History:
        """The history with one entry per change appended, all stamped alike."""
        entries, lines, hashes = list(self.entries), list(self.lines), list(self.hashes)
        for change in changes:
            entry = Entry(len(entries), time, actor.name, actor.uid, change, serial,
                          hashes[-1] if hashes else None)
            line = encode(entry)
            entries.append(entry)
            lines.append(line)
            hashes.append(entry_hash(line))
        return History(tuple(entries), tuple(lines), tuple(hashes))

    def extended(self, more: Sequence[Entry]) -> History:
        """The history with entries that must continue it (as fetched from an upstream).

        Raises:
            HistoryError: an entry's ``seq`` or ``prev`` does not follow.
        """
        entries, lines, hashes = list(self.entries), list(self.lines), list(self.hashes)
        for entry in more:
            expected = hashes[-1] if hashes else None
            if entry.seq != len(entries):
                raise HistoryError(entry.seq, f"entry #{len(entries)} has seq {entry.seq}")
            if entry.prev != expected:
                raise HistoryError(entry.seq, f"entry #{entry.seq} does not follow entry "
                                   f"#{entry.seq - 1} (prev {entry.prev}, expected {expected})")
            line = encode(entry)
            entries.append(entry)
            lines.append(line)
            hashes.append(entry_hash(line))
        return History(tuple(entries), tuple(lines), tuple(hashes))


EMPTY_HISTORY = History()


def verify(entries: Sequence[Entry] | History, head: HistoryHead) -> History:
    """The first ``head.length`` entries, checked link by link and against the signed head.

    Entries past ``length`` are ignored: a history fetched after its index may be longer.
    A ``History`` is chained already (``append``/``extended`` check every link), so only
    its head is compared: a replica's held entries plus a fetched tail are not re-hashed.

    Raises:
        HistoryError: too short, a broken link, or a head other than the signed one.
    """
    if len(entries) < head.length:
        raise HistoryError(len(entries), f"the history has {len(entries)} entries, the signed "
                           f"index names {head.length}")
    if isinstance(entries, History):
        history = entries.prefix(head.length)
    else:
        history = EMPTY_HISTORY.extended(entries[:head.length])
    if history.head != head:
        raise HistoryError(head.length - 1, f"entry #{head.length - 1} hashes to "
                           f"{history.head.head}, the signed index names {head.head}")
    return history


def first_difference(held: History, other: History) -> int | None:
    """The seq of the first entry ``held`` has that ``other`` lacks or has otherwise."""
    for seq, digest in enumerate(held.hashes):
        if seq >= len(other.hashes) or other.hashes[seq] != digest:
            return seq
    return None


# --- the entries a change produces ----------------------------------------------------------


def diff(old: Index, new: Index) -> list[Change]:
    """What changed from ``old`` to ``new``: releases added, channels moved, releases yanked.

    Per package (sorted): new releases in version order, then moves, then yanks, so a
    release and the auto channel that follows it appear in that order. Re-signing
    (same packages) gives none.
    """
    changes: list[Change] = []
    for name in sorted(new.packages):
        pkg, before = new.packages[name], old.packages.get(name, Package())
        for version in sorted(set(pkg.releases) - set(before.releases), key=version_key):
            changes.append(Change(Action.RELEASE, name, version,
                                  svn_author=pkg.releases[version].author))
        for channel in sorted(pkg.channels):
            pointer, previous = pkg.channels[channel], before.channels.get(channel)
            if previous is None or previous.version != pointer.version:
                changes.append(Change(Action.MOVE, name, pointer.version, channel=channel,
                                      from_=previous.version if previous else None))
        for version in sorted(pkg.releases, key=version_key):
            release, was = pkg.releases[version], before.releases.get(version)
            if release.yanked and (was is None or not was.yanked):
                changes.append(Change(Action.YANK, name, version, reason=release.yanked_reason))
    return changes


def import_history(index: Index, uid: int | None) -> History:
    """The history that starts a store which predates history (DESIGN.md §9, actor ``import``).

    One ``release`` per release (at its tag's commit time), one ``move`` per channel (at
    ``moved_at``) and, beyond DESIGN's list, one ``yank`` per yanked release (at the
    index's ``generated``: the yank time is not recorded), merged in time order; each
    names the serial of the index it was imported from.
    """
    events: list[tuple[int, int, str, str, Change]] = []
    for name in sorted(index.packages):
        pkg = index.packages[name]
        for version, r in pkg.releases.items():
            events.append((r.date, 0, name, version,
                           Change(Action.RELEASE, name, version, svn_author=r.author)))
            if r.yanked:
                events.append((index.generated, 2, name, version,
                               Change(Action.YANK, name, version, reason=r.yanked_reason)))
        for channel, ch in pkg.channels.items():
            events.append((ch.moved_at, 1, name, channel,
                           Change(Action.MOVE, name, ch.version, channel=channel)))
    events.sort(key=lambda e: (e[0], e[1], e[2], version_key(e[3])))
    history = EMPTY_HISTORY
    actor = Actor(IMPORT_ACTOR, uid)
    for when, _, _, _, change in events:
        history = history.append([change], time=when, actor=actor, serial=index.serial)
    return history
