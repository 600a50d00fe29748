"""A tag changed after publishing is reported, never republished (DESIGN.md §2, §6)."""

from __future__ import annotations

from tests.conftest import Origin, SvnRepo


def test_commit_to_a_published_tag_is_reported_and_not_republished(
        synced_origin: Origin, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, _ = svn_package
    origin = synced_origin
    before = origin.status_json()
    published = before["packages"][name]["releases"]["1.2.0"]
    index_before = origin.index_bytes()
    blobs_before = sorted(p.name for p in (origin.store / "blobs" / "sha256").iterdir())
    assert before["mutated_tags"] == []

    repo.commit_to_tag(name, "1.2.0", "etc/pilot.cfg", "[pilot]\nretries = 99\n")
    result = origin.cli("sync", "--once")
    assert result.returncode == 0, result.stderr
    assert f"MUTATED {name} 1.2.0" in result.stdout
    assert "MUTATED TAG" in result.stderr and "version=1.2.0" in result.stderr

    after = origin.status_json()
    assert after["packages"][name]["releases"]["1.2.0"] == published  # same sha256, revision
    assert origin.index_bytes() == index_before
    assert sorted(p.name for p in (origin.store / "blobs" / "sha256").iterdir()) == blobs_before
    (mutation,) = after["mutated_tags"]
    assert mutation["package"] == name
    assert mutation["version"] == "1.2.0"
    assert mutation["published_revision"] == published["revision"]
    assert mutation["current_revision"] > published["revision"]
    assert "1.2.0" in origin.cli("status", check=True).stdout.split("WARNING", 1)[1]

    # Still exit 0 next time, still one report, still not republished.
    assert origin.cli("sync", "--once").returncode == 0
    again = origin.status_json()
    assert again["mutated_tags"] == after["mutated_tags"]
    assert again["packages"][name]["releases"]["1.2.0"] == published


def test_a_mutated_tag_does_not_stop_new_tags(
        synced_origin: Origin, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, _ = svn_package
    origin = synced_origin
    repo.commit_to_tag(name, "1.0.0", "etc/pilot.cfg", "mutated\n")
    repo.tag(name, "1.3.0")
    result = origin.cli("sync", "--once")
    assert result.returncode == 0, result.stderr
    assert f"published {name} 1.3.0" in result.stdout
    payload = origin.status_json()
    assert payload["packages"][name]["channels"]["latest"]["version"] == "1.3.0"
    assert [m["version"] for m in payload["mutated_tags"]] == ["1.0.0"]
