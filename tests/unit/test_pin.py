"""Unit tests for codecache.core.pin: a release's source and how it is written down."""

from __future__ import annotations

import pytest

from codecache.core.pin import GIT, SVN, Pin, git_pin, pin_of_record, svn_pin

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def test_a_subversion_pin_is_written_as_it_always_was() -> None:
    pin = svn_pin("svn://h/repo/pilot/tags/1.0", 42)
    assert (pin.kind, pin.id, pin.revision) == (SVN, "42", 42)
    assert pin.label == "svn=svn://h/repo/pilot/tags/1.0@42"
    assert pin.record() == {"svn_url": "svn://h/repo/pilot/tags/1.0", "revision": 42}
    assert pin.short() == "r42"


def test_a_git_pin_names_the_url_as_configured_and_the_full_commit() -> None:
    pin = git_pin("ssh://git@host:2222/pilot.git", COMMIT)
    assert pin.kind == GIT
    # The commit is what follows the last "@": a user part in the URL stays readable.
    assert pin.label == f"git=ssh://git@host:2222/pilot.git@{COMMIT}"
    assert pin.label.rpartition("@")[2] == COMMIT
    assert pin.record() == {"git_url": "ssh://git@host:2222/pilot.git", "commit": COMMIT}
    assert pin.short() == COMMIT[:12]
    with pytest.raises(ValueError, match="not a Subversion pin"):
        _ = pin.revision


@pytest.mark.parametrize(("kind", "url", "ident"), [
    (GIT, "https://h/r.git", COMMIT[:39]), (GIT, "https://h/r.git", COMMIT.upper()),
    (GIT, "https://h/r.git", "g" * 40), (GIT, "", COMMIT), (SVN, "svn://h/r", "-1"),
    (SVN, "svn://h/r", "7a"), (SVN, "svn://h/r", "٣"), ("hg", "https://h/r", "1"),
])
def test_a_malformed_pin_cannot_be_made(kind: str, url: str, ident: str) -> None:
    with pytest.raises(ValueError, match="not a source pin"):
        Pin(kind, url, ident)


def test_a_record_names_exactly_one_source() -> None:
    assert pin_of_record({"git_url": "file:///r.git", "commit": COMMIT}) == \
        git_pin("file:///r.git", COMMIT)
    assert pin_of_record({"svn_url": "svn://h/r", "revision": 3}) == svn_pin("svn://h/r", 3)
    with pytest.raises(ValueError, match="exactly one source"):
        pin_of_record({"svn_url": "svn://h/r", "revision": 3, "commit": COMMIT})
    with pytest.raises(ValueError, match="exactly one source"):
        pin_of_record({})
    with pytest.raises(TypeError):
        pin_of_record({"svn_url": "svn://h/r", "revision": True})
    with pytest.raises(KeyError):
        pin_of_record({"git_url": "file:///r.git"})
