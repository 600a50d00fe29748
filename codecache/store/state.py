"""The store's local facts, outside the signed index: ``state.json`` and ``replica.json``.

``StateFile`` is the one owner of ``state.json`` (the highest serial ever accepted, the
marks of each upstream, the mutated tags, the refused tags): every read, change and write
goes through it, so its rules (the serial floor only rises, except by the operator's
override) live here. Changes are made by a writer holding the store's lock; reads never lock.

``replica.json`` holds a replica's lag facts, rewritten by its pull loop after every pull.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from codecache.core.errors import StoreError
from codecache.core.pin import GIT, SVN, short_id
from codecache.core.trust import Mark
from codecache.store.files import atomic_write


@dataclass(frozen=True, slots=True)
class MutatedTag:
    """A published tag that names another tree now (``core.pin`` kinds and ids)."""

    package: str
    version: str
    kind: str          # "svn" or "git"
    published: str     # the id published: a revision (as text) or a commit
    current: str       # the id the tag names now
    detected_at: int

    def fields(self) -> dict[str, int | str]:
        """Its two ids under their names (state.json, ``status --json``, the log):
        ``published_revision``/``current_revision`` (numbers) for Subversion,
        ``published_commit``/``current_commit`` for git."""
        if self.kind == GIT:
            return {"published_commit": self.published, "current_commit": self.current}
        return {"published_revision": int(self.published),
                "current_revision": int(self.current)}

    def change(self) -> str:
        """For people: ``r4 -> r6``, or ``commit`` and the two commits' first 12 digits."""
        change = f"{short_id(self.kind, self.published)} -> {short_id(self.kind, self.current)}"
        return f"commit {change}" if self.kind == GIT else change

    @classmethod
    def from_fields(cls, raw: Mapping[str, object]) -> MutatedTag:
        """The record ``fields`` (with package, version, detected_at) wrote.

        Raises:
            KeyError, TypeError, ValueError: malformed.
        """
        kind, word = (GIT, "commit") if "published_commit" in raw else (SVN, "revision")
        detected = raw["detected_at"]
        if not isinstance(detected, int):
            raise TypeError(f"detected_at: {detected!r}")
        return cls(str(raw["package"]), str(raw["version"]), kind,
                   str(raw[f"published_{word}"]), str(raw[f"current_{word}"]), detected)


@dataclass(frozen=True, slots=True)
class RefusedTag:
    """A new tag that the sync worker cannot publish as it is (DESIGN.md §3): its tree has
    an entry unsafe to extract, or a file it cannot archive. Kept until the tag builds, or
    is deleted, or names another tree that builds; tried again every pass meanwhile."""

    package: str
    version: str
    source: str        # what was refused: ``svn=URL@REV`` or ``git=URL@COMMIT`` (Pin.label)
    code: str          # the error's code: ``unsafe_tree``, ``unsupported_file``, ...
    reason: str        # the error's message
    refused_at: int    # first refused at this source and for this reason

    def record(self) -> dict[str, str | int]:
        """As ``state.json`` holds it (``status --json`` prints the time as RFC 3339)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, raw: Mapping[str, object]) -> RefusedTag:
        """Raises: KeyError, TypeError: malformed."""
        refused_at = raw["refused_at"]
        if not isinstance(refused_at, int):
            raise TypeError(f"refused_at: {refused_at!r}")
        return cls(str(raw["package"]), str(raw["version"]), str(raw["source"]),
                   str(raw["code"]), str(raw["reason"]), refused_at)


@dataclass(frozen=True, slots=True)
class LocalState:
    """Facts about this store that are not part of the signed index."""

    highest_serial: int = 0
    mutated_tags: tuple[MutatedTag, ...] = ()
    marks: Mapping[str, Mark] = field(default_factory=dict)   # per upstream (trust.offered)
    refused_tags: tuple[RefusedTag, ...] = ()


class StateFile:
    """``state.json``: read with ``load``; changed (under the writers' lock) by the rest."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> LocalState:
        """The facts on disk; the defaults before the first write.

        Raises:
            StoreError: the file is malformed.
        """
        try:
            raw = json.loads(self.path.read_bytes())
            mutated = tuple(MutatedTag.from_fields(m) for m in raw.get("mutated_tags", []))
            marks = {url: Mark(int(m["serial"]), str(m["digest"]))
                     for url, m in raw.get("marks", {}).items()}
            # A file written before refusals were kept has none.
            refused = tuple(RefusedTag.from_record(r) for r in raw.get("refused_tags", []))
            return LocalState(int(raw.get("highest_serial", 0)), mutated, marks, refused)
        except FileNotFoundError:
            return LocalState()
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise StoreError(f"{self.path} is malformed: {err}") from err

    def save(self, state: LocalState) -> None:
        data = {
            "highest_serial": state.highest_serial,
            "mutated_tags": [
                {"package": m.package, "version": m.version, **m.fields(),
                 "detected_at": m.detected_at}
                for m in state.mutated_tags
            ],
            "marks": {url: {"serial": m.serial, "digest": m.digest}
                      for url, m in sorted(state.marks.items())},
            "refused_tags": [r.record() for r in state.refused_tags],
            # The file's shape as before (an empty object where it held unused extras).
            "extra": {},
        }
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True).encode())

    def record_serial(self, serial: int, *, reset: bool = False,
                      marks: Mapping[str, Mark] | None = None) -> LocalState:
        """An index of ``serial`` was installed: the floor rises to it (``reset``: is set
        to it, the operator's override); ``marks`` replace the upstreams' when given."""
        state = self.load()
        highest = serial if reset else max(state.highest_serial, serial)
        state = dataclasses.replace(state, highest_serial=highest,
                                    marks=state.marks if marks is None else marks)
        self.save(state)
        return state

    def record_marks(self, marks: Mapping[str, Mark]) -> None:
        """What each upstream offered last (``trust.offered``), accepted or not."""
        self.save(dataclasses.replace(self.load(), marks=marks))

    def record_mutations(self, found: Iterable[MutatedTag],
                         announce: Callable[[list[MutatedTag]], None] | None = None,
                         ) -> list[MutatedTag]:
        """Add the tags found mutated; returns those new or changed since recorded (a
        tag seen again at the same id is not news). ``announce`` is handed the news
        before they are saved, so a save that fails (a full disk) still leaves the report."""
        state = self.load()
        known = {(m.package, m.version): m for m in state.mutated_tags}
        news = []
        for m in found:
            old = known.get((m.package, m.version))
            if old is not None and old.current == m.current:
                continue
            news.append(m)
            known[(m.package, m.version)] = m if old is None else dataclasses.replace(
                old, current=m.current)
        if news:
            if announce is not None:
                announce(news)
            self.save(dataclasses.replace(state, mutated_tags=tuple(known.values())))
        return news

    def settle_refusals(self, outcomes: Mapping[str, tuple[list[RefusedTag], set[str]]],
                        configured: Iterable[str]) -> list[RefusedTag]:
        """A sync pass's refusals: ``outcomes`` maps each package the pass synced to the
        tags it refused and the versions it left untried (still new, not built: a pass that
        ended early). A package's refusals become those found plus those of its untried
        versions; any other of its refusals is settled (published, deleted, or no longer
        a tag to publish). Packages the pass did not reach keep theirs; packages no longer
        configured lose theirs. Returns the news (a tag refused for the first time, or at
        another source or for another reason); saved only when something changed."""
        state = self.load()
        names = set(configured)
        kept: list[RefusedTag] = []
        news: list[RefusedTag] = []
        for r in state.refused_tags:
            if r.package in names and (r.package not in outcomes
                                       or r.version in outcomes[r.package][1]):
                kept.append(r)
        before = {(r.package, r.version): r for r in state.refused_tags}
        for found, _ in outcomes.values():
            for r in found:
                old = before.get((r.package, r.version))
                if old is not None and (old.source, old.code) == (r.source, r.code):
                    # The same refusal: when it was first seen stays.
                    kept.append(dataclasses.replace(r, refused_at=old.refused_at))
                else:
                    news.append(r)
                    kept.append(r)
        kept.sort(key=lambda r: (r.package, r.version))
        if tuple(kept) != state.refused_tags:
            self.save(dataclasses.replace(state, refused_tags=tuple(kept)))
        return news


@dataclass(frozen=True, slots=True)
class PullStatus:
    """A replica's lag facts (``replica.json``), written by its pull loop after every pull.

    Read by the server (``/readyz``, ``/metrics``, the status page) and ``status``, which
    may run in other processes than the pull loop.
    """

    upstream: str | None = None        # the upstream the held index came from
    serial: int = 0                    # the serial held
    confirmed_at: float = 0.0          # last pull that confirmed it current
    attempted_at: float = 0.0          # last pull, whatever its result
    last_error: str | None = None      # why the last pull did not confirm, if it did not
    # Counters since the pull loop started (exposed by /metrics as Prometheus counters).
    refusals: Mapping[str, int] = field(default_factory=dict)   # refusal reason → count
    errors: Mapping[str, int] = field(default_factory=dict)     # upstream error → count
    pulls: Mapping[str, int] = field(default_factory=dict)      # result → count
    blobs_fetched: int = 0
    # When each refusal reason was last seen (Unix time), so a check can tell a refusal of
    # the last hour from one of last week while the counters keep growing.
    refused_at: Mapping[str, float] = field(default_factory=dict)


def load_pull_status(path: Path) -> PullStatus | None:
    """The replica's lag facts, None where no pull loop ever wrote them (an origin).

    Raises:
        StoreError: the file is malformed.
    """
    try:
        raw = json.loads(path.read_bytes())
        return PullStatus(
            upstream=raw.get("upstream"), serial=int(raw.get("serial", 0)),
            confirmed_at=float(raw.get("confirmed_at", 0.0)),
            attempted_at=float(raw.get("attempted_at", 0.0)),
            last_error=raw.get("last_error"),
            refusals=_counts(raw.get("refusals", {})), errors=_counts(raw.get("errors", {})),
            pulls=_counts(raw.get("pulls", {})), blobs_fetched=int(raw.get("blobs_fetched", 0)),
            refused_at={str(k): float(v) for k, v in raw.get("refused_at", {}).items()})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, AttributeError) as err:
        raise StoreError(f"{path} is malformed: {err}") from err


def save_pull_status(path: Path, status: PullStatus) -> None:
    data = {"upstream": status.upstream, "serial": status.serial,
            "confirmed_at": status.confirmed_at, "attempted_at": status.attempted_at,
            "last_error": status.last_error, "refusals": dict(status.refusals),
            "errors": dict(status.errors), "pulls": dict(status.pulls),
            "blobs_fetched": status.blobs_fetched, "refused_at": dict(status.refused_at)}
    # Advisory and rewritten every pull: atomic, but not worth an fsync each second.
    atomic_write(path, json.dumps(data, sort_keys=True).encode(), durable=False)


def _counts(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError("expected an object of counts")
    return {str(k): int(v) for k, v in value.items()}
