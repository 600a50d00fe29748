"""Where a release came from, pinned: the one mapping of a source location to what the
index records and what the trusted comment says (DESIGN.md §3).

A **pin** is a source kind, a URL and an id that names exactly one tree for ever:

* Subversion: the tag's URL and its last-changed revision. The index says ``svn_url`` and
  ``revision`` (a number); the trusted comment ``svn=URL@REV``.
* git: the package's ``git_url`` exactly as configured and the full commit id (40 lowercase
  hex digits). The index says ``git_url`` and ``commit``; the comment ``git=URL@COMMIT``
  (the commit is what follows the last ``@``, so a URL with a user part stays readable).

An index that holds a git release says ``"format": 2`` (older replicas refuse it rather than
misread it); one with Subversion releases only stays format 1, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SVN = "svn"
GIT = "git"

_COMMIT = re.compile(r"[0-9a-f]{40}")

# The release record's fields that say where it came from, per kind (the index's keys).
PIN_FIELDS = {SVN: ("svn_url", "revision"), GIT: ("git_url", "commit")}


@dataclass(frozen=True, slots=True)
class Pin:
    kind: str   # SVN or GIT
    url: str
    id: str     # Subversion: the revision as decimal text; git: the full commit id

    def __post_init__(self) -> None:
        if self.kind == SVN:
            valid = self.id.isascii() and self.id.isdigit()
        elif self.kind == GIT:
            valid = _COMMIT.fullmatch(self.id) is not None
        else:
            valid = False
        if not valid or not self.url:
            raise ValueError(f"not a source pin: {self.kind} {self.url!r}@{self.id!r}")

    @property
    def location(self) -> str:
        """``URL@REV`` or ``URL@COMMIT`` (what ``audit``'s findings name)."""
        return f"{self.url}@{self.id}"

    @property
    def label(self) -> str:
        """``svn=URL@REV`` or ``git=URL@COMMIT``: the trusted comment's field, also what
        ``verify`` and ``status`` print."""
        return f"{self.kind}={self.location}"

    @property
    def revision(self) -> int:
        """The Subversion revision.

        Raises:
            ValueError: a git pin (a caller that should have looked at ``kind``).
        """
        if self.kind != SVN:
            raise ValueError(f"not a Subversion pin: {self.label}")
        return int(self.id)

    def short(self) -> str:
        """For people: ``r123`` or the commit's first 12 digits."""
        return short_id(self.kind, self.id)

    def record(self) -> dict[str, Any]:
        """The release record's source fields (the index, ``status --json``)."""
        if self.kind == SVN:
            return {"svn_url": self.url, "revision": int(self.id)}
        return {"git_url": self.url, "commit": self.id}


def short_id(kind: str, ident: str) -> str:
    """An id of ``kind`` for people: ``r123``, or a commit's first 12 digits."""
    return f"r{ident}" if kind == SVN else ident[:12]


def svn_pin(url: str, revision: int) -> Pin:
    return Pin(SVN, url, str(revision))


def git_pin(url: str, commit: str) -> Pin:
    return Pin(GIT, url, commit)


def pin_of_record(record: Mapping[str, Any]) -> Pin:
    """The pin a release record names: exactly one kind's fields, well-typed.

    Raises:
        ValueError, TypeError: fields of neither or both kinds, or of the wrong type.
    """
    kinds = [kind for kind, keys in PIN_FIELDS.items() if any(k in record for k in keys)]
    if len(kinds) != 1:
        raise ValueError("a release must name exactly one source (svn_url and revision, "
                         "or git_url and commit)")
    if kinds == [SVN]:
        url, revision = record["svn_url"], record["revision"]
        if not isinstance(url, str) or type(revision) is not int or revision < 0:
            raise TypeError(f"bad Subversion source {url!r}@{revision!r}")
        return svn_pin(url, revision)
    url, commit = record["git_url"], record["commit"]
    if not isinstance(url, str) or not isinstance(commit, str):
        raise TypeError(f"bad git source {url!r}@{commit!r}")
    return git_pin(url, commit)
