"""Unit tests for codecache.core.index: release-manager rules and the signed payload."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from codecache.core.errors import (
    ChannelInUse,
    IntegrityError,
    PackageNotFound,
    ReleaseNotFound,
    ReleaseYanked,
)
from codecache.core.index import (
    EMPTY,
    Channel,
    Index,
    Release,
    add_release,
    format_time,
    from_payload,
    move_channel,
    parse_time,
    release_comment,
    to_payload,
    yank,
)
from codecache.core.pin import git_pin, svn_pin

NOW = 1_800_000_000


def release(version: str, digit: str = "a") -> Release:
    return Release(version=version, sha256=digit * 64, size=100, tar_sha256="f" * 64,
                   source=svn_pin(f"svn://svn/pilot/tags/{version}", 7), author="rm",
                   date=NOW - 3600, minisig="untrusted comment: x\nsig\ntrusted comment: y\nz\n")


@pytest.fixture
def index() -> Index:
    """pilot with 1.0.0, 1.2.0 (latest -> 1.2.0) and 1.1.0."""
    idx = dataclasses.replace(EMPTY, serial=5, generated=NOW - 10, expires=NOW + 86400)
    for version, digit in (("1.0.0", "a"), ("1.2.0", "b"), ("1.1.0", "c")):
        idx = add_release(idx, "pilot", release(version, digit))
    return move_channel(idx, "pilot", "latest", "1.2.0", NOW - 5)


# --- rules ------------------------------------------------------------------------------------


def test_add_release_never_replaces_an_existing_version(index: Index) -> None:
    assert add_release(index, "pilot", release("1.0.0", "d")) is index
    assert index.release("pilot", "1.0.0").sha256 == "a" * 64


def test_rules_do_not_mutate_the_original_index(index: Index) -> None:
    before = to_payload(index)
    add_release(index, "pilot", release("2.0"))
    move_channel(index, "pilot", "production", "1.0.0", NOW)
    yank(index, "pilot", "1.1.0", "broken")
    assert to_payload(index) == before


def test_move_channel_creates_and_moves_a_channel(index: Index) -> None:
    moved = move_channel(index, "pilot", "production", "1.2.0", NOW)
    assert moved.packages["pilot"].channels["production"] == Channel("1.2.0", NOW)
    pointer, rel = moved.channel("pilot", "production")
    assert (pointer.version, rel.version) == ("1.2.0", "1.2.0")


def test_rollback_to_an_older_release_is_allowed(index: Index) -> None:
    moved = move_channel(index, "pilot", "latest", "1.0.0", NOW)
    assert moved.packages["pilot"].channels["latest"] == Channel("1.0.0", NOW)


def test_moved_at_always_advances_even_within_one_second(index: Index) -> None:
    first = move_channel(index, "pilot", "latest", "1.0.0", NOW)
    second = move_channel(first, "pilot", "latest", "1.1.0", NOW)
    third = move_channel(second, "pilot", "latest", "1.2.0", NOW - 100)  # clock went back
    times = [i.packages["pilot"].channels["latest"].moved_at for i in (first, second, third)]
    assert times == [NOW, NOW + 1, NOW + 2]


def test_moving_a_channel_to_its_current_version_changes_nothing(index: Index) -> None:
    assert move_channel(index, "pilot", "latest", "1.2.0", NOW) is index


def test_publishing_a_yanked_release_is_refused(index: Index) -> None:
    yanked = yank(index, "pilot", "1.1.0", "broken")
    with pytest.raises(ReleaseYanked) as info:
        move_channel(yanked, "pilot", "production", "1.1.0", NOW)
    assert (info.value.package, info.value.version) == ("pilot", "1.1.0")


def test_publishing_unknown_names_is_refused(index: Index) -> None:
    with pytest.raises(ReleaseNotFound):
        move_channel(index, "pilot", "production", "9.9", NOW)
    with pytest.raises(PackageNotFound):
        move_channel(index, "other", "production", "1.0.0", NOW)


def test_yank_marks_the_release_and_keeps_it(index: Index) -> None:
    yanked = yank(index, "pilot", "1.1.0", "broken build")
    rel = yanked.release("pilot", "1.1.0")
    assert rel.yanked
    assert rel.yanked_reason == "broken build"
    assert rel.sha256 == "c" * 64
    assert yanked.blob_sizes() == index.blob_sizes()  # still downloadable by its exact version


def test_yank_is_idempotent(index: Index) -> None:
    yanked = yank(index, "pilot", "1.1.0", "broken")
    assert yank(yanked, "pilot", "1.1.0", "again") is yanked


def test_yanking_a_release_a_channel_points_to_names_the_channels(index: Index) -> None:
    both = move_channel(index, "pilot", "production", "1.2.0", NOW)
    with pytest.raises(ChannelInUse) as info:
        yank(both, "pilot", "1.2.0", "broken")
    assert info.value.channels == ["latest", "production"]
    assert "latest" in str(info.value)
    assert "production" in str(info.value)


def test_yank_works_after_the_channel_moved_away(index: Index) -> None:
    moved = move_channel(index, "pilot", "latest", "1.0.0", NOW)
    assert yank(moved, "pilot", "1.2.0", "broken").release("pilot", "1.2.0").yanked


def test_yanking_unknown_names_is_refused(index: Index) -> None:
    with pytest.raises(ReleaseNotFound):
        yank(index, "pilot", "9.9", "x")
    with pytest.raises(PackageNotFound):
        yank(index, "other", "1.0.0", "x")


def test_highest_live_skips_yanked_releases(index: Index) -> None:
    assert index.packages["pilot"].highest_live() == "1.2.0"
    moved = move_channel(index, "pilot", "latest", "1.0.0", NOW)
    assert yank(moved, "pilot", "1.2.0", "x").packages["pilot"].highest_live() == "1.1.0"


def test_release_comment_binds_every_field() -> None:
    rel = release("1.2.0")
    assert rel.trusted_comment("pilot") == (
        f"codecache package=pilot version=1.2.0 sha256={'a' * 64} size=100 "
        "svn=svn://svn/pilot/tags/1.2.0@7")
    assert release_comment("pilot", "1.2.0", "a" * 64, 100,
                           svn_pin("svn://svn/pilot/tags/1.2.0", 7)) == rel.trusted_comment("pilot")


# --- payload ----------------------------------------------------------------------------------


def test_payload_round_trip(index: Index) -> None:
    index = yank(index, "pilot", "1.1.0", "broken")
    index = move_channel(index, "pilot", "production", "1.0.0", NOW)
    payload = to_payload(index)
    assert from_payload(payload) == index
    assert from_payload(copy.deepcopy(payload)) == index
    assert to_payload(from_payload(payload)) == payload


def test_payload_shape_matches_the_design(index: Index) -> None:
    payload = to_payload(index)
    assert payload["serial"] == 5
    assert payload["generated"] == format_time(NOW - 10)
    assert payload["expires"] == format_time(NOW + 86400)
    pilot = payload["packages"]["pilot"]
    assert pilot["channels"]["latest"] == {"version": "1.2.0", "moved_at": format_time(NOW - 5)}
    rel = pilot["releases"]["1.0.0"]
    assert {"sha256", "size", "tar_sha256", "svn_url", "revision", "author", "date", "yanked",
            "minisig"} <= set(rel)
    assert rel["yanked"] is False


def test_times_are_rfc3339_utc_seconds() -> None:
    assert format_time(0) == "1970-01-01T00:00:00Z"
    assert format_time(NOW) == "2027-01-15T08:00:00Z"
    assert parse_time("2027-01-15T08:00:00Z") == NOW
    assert parse_time("2027-01-15T09:00:00+01:00") == NOW
    assert parse_time("2027-01-15T08:00:00.999999Z") == NOW
    with pytest.raises(ValueError):
        parse_time("2027-01-15T08:00:00")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets the payload item at a slash-separated path."""
    *parents, last = path.split("/")

    def edit(payload: dict[str, Any]) -> None:
        target = payload
        for key in parents:
            target = target[key]
        target[last] = value
    return edit


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split("/")

    def edit(payload: dict[str, Any]) -> None:
        target = payload
        for key in parents:
            target = target[key]
        del target[last]
    return edit


REL = "packages/pilot/releases/1.0.0"
MALFORMED = {
    "format 2 without git": _set("format", 2),
    "serial missing": _delete("serial"),
    "serial string": _set("serial", "5"),
    "serial bool": _set("serial", True),
    "serial negative": _set("serial", -1),
    "expires not a time": _set("expires", "tomorrow"),
    "generated without zone": _set("generated", "2027-01-15T08:00:00"),
    "packages list": _set("packages", []),
    "bad package name": lambda p: p["packages"].update({"Bad/Name": p["packages"]["pilot"]}),
    "releases missing": _delete("packages/pilot/releases"),
    "sha256 short": _set(f"{REL}/sha256", "a" * 63),
    "sha256 upper": _set(f"{REL}/sha256", "A" * 64),
    "sha256 number": _set(f"{REL}/sha256", 12),
    "tar_sha256 bad": _set(f"{REL}/tar_sha256", "x" * 64),
    "size string": _set(f"{REL}/size", "100"),
    "revision float": _set(f"{REL}/revision", 7.5),
    "version mismatch": _set(f"{REL}/version", "1.0.1"),
    "bad version key": lambda p: p["packages"]["pilot"]["releases"].update(
        {"-x": p["packages"]["pilot"]["releases"]["1.0.0"]}),
    "minisig missing": _delete(f"{REL}/minisig"),
    "minisig number": _set(f"{REL}/minisig", 1),
    "yanked string": _set(f"{REL}/yanked", "false"),
    "yanked number": _set(f"{REL}/yanked", 0),
    "yanked missing": _delete(f"{REL}/yanked"),
    "date bad": _set(f"{REL}/date", "yesterday"),
    "release not an object": _set(REL, "1.0.0"),
    "dangling channel": _set("packages/pilot/channels/latest/version", "9.9"),
    "bad channel name": lambda p: p["packages"]["pilot"]["channels"].update(
        {"Latest": p["packages"]["pilot"]["channels"]["latest"]}),
    "moved_at bad": _set("packages/pilot/channels/latest/moved_at", 5),
    "payload list": lambda p: p.clear(),
}


@pytest.mark.parametrize("edit", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_payload_is_an_integrity_error(index: Index,
                                                 edit: Callable[[dict[str, Any]], None]) -> None:
    payload = to_payload(index)
    edit(payload)
    with pytest.raises(IntegrityError, match="malformed index"):
        from_payload(payload)


@pytest.mark.parametrize("payload", [None, [], "index", 5])
def test_payload_that_is_not_an_object_is_an_integrity_error(payload: object) -> None:
    with pytest.raises(IntegrityError):
        from_payload(payload)


@pytest.mark.parametrize(("field", "value"), [
    ("size", True), ("size", 100.0), ("revision", True), ("yanked", 0), ("sha256", "A" * 64),
    ("date", "2027-01-15T08:00:00"), ("version", "other"),
])
def test_a_record_parsed_before_does_not_let_a_near_copy_pass(index: Index, field: str,
                                                              value: object) -> None:
    """Releases seen before are reused (thousands per verification); never a different one."""
    payload = to_payload(index)
    assert from_payload(copy.deepcopy(payload)) == from_payload(payload)  # cached: equal
    bad = copy.deepcopy(payload)
    bad["packages"]["pilot"]["releases"]["1.0.0"][field] = value
    with pytest.raises(IntegrityError):
        from_payload(bad)


# --- git releases: format 2 (DESIGN.md §3) --------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"
GIT_URL = "https://git.example.org/pilot3.git"


def git_release(version: str) -> Release:
    return dataclasses.replace(release(version, "d"), source=git_pin(GIT_URL, COMMIT),
                               author="A Dev <dev@example.org>")


def test_an_index_of_subversion_releases_stays_format_1(index: Index) -> None:
    payload = to_payload(index)
    assert payload["format"] == 1
    rel = payload["packages"]["pilot"]["releases"]["1.0.0"]
    assert "git_url" not in rel and "commit" not in rel


def test_a_git_release_records_its_url_and_commit_and_makes_the_index_format_2(
        index: Index) -> None:
    mixed = add_release(index, "pilot3", git_release("3.0"))
    payload = to_payload(mixed)
    assert payload["format"] == 2
    rel = payload["packages"]["pilot3"]["releases"]["3.0"]
    assert (rel["git_url"], rel["commit"]) == (GIT_URL, COMMIT)
    assert "svn_url" not in rel and "revision" not in rel
    assert "svn_url" in payload["packages"]["pilot"]["releases"]["1.0.0"]
    assert from_payload(copy.deepcopy(payload)) == mixed
    assert git_release("3.0").trusted_comment("pilot3").endswith(f" git={GIT_URL}@{COMMIT}")


GIT_REL = "packages/pilot3/releases/3.0"
MALFORMED_GIT = {
    "format 1 with a git release": _set("format", 1),
    "format 3": _set("format", 3),
    "format string": _set("format", "2"),
    "both sources": _set(f"{GIT_REL}/svn_url", "svn://x"),
    "svn half": _set(f"{GIT_REL}/revision", 7),
    "no source": lambda p: [_delete(f"{GIT_REL}/git_url")(p), _delete(f"{GIT_REL}/commit")(p)],
    "commit short": _set(f"{GIT_REL}/commit", COMMIT[:12]),
    "commit upper": _set(f"{GIT_REL}/commit", COMMIT.upper()),
    "commit missing": _delete(f"{GIT_REL}/commit"),
    "git_url number": _set(f"{GIT_REL}/git_url", 5),
    "git_url empty": _set(f"{GIT_REL}/git_url", ""),
}


@pytest.mark.parametrize("edit", MALFORMED_GIT.values(), ids=MALFORMED_GIT.keys())
def test_a_malformed_git_release_is_an_integrity_error(
        index: Index, edit: Callable[[dict[str, Any]], None]) -> None:
    payload = to_payload(add_release(index, "pilot3", git_release("3.0")))
    from_payload(copy.deepcopy(payload))   # the unedited one parses
    edit(payload)
    with pytest.raises(IntegrityError, match="malformed index"):
        from_payload(payload)


def test_format_2_without_a_git_release_is_refused(index: Index) -> None:
    payload = to_payload(index)
    payload["format"] = 2
    with pytest.raises(IntegrityError, match="does not match its releases"):
        from_payload(payload)
