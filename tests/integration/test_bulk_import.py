"""A first sync of many tags (a bulk import) commits in batches: same result, crash-safe."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import (
    Origin,
    SvnRepo,
    cli_command,
    cli_env,
    make_origin,
    new_package,
    write_config,
)
from tests.harness.timing import poll
from tests.integration.test_crash_safety import assert_consistent, summary

TAGS = [f"1.{i}.0" for i in range(30)]


@pytest.fixture(scope="module")
def many_tags(svn_server: SvnRepo) -> tuple[SvnRepo, str, str]:
    """A package with 30 tags, each with content of its own (one commit per tag)."""
    name, url = new_package(svn_server)
    for i, tag in enumerate(TAGS):
        svn_server.change(name, "lib/pilot/version.py", f"VERSION = {tag!r}\n" * (i + 1))
        svn_server.tag(name, tag)
    return svn_server, name, url


@pytest.fixture(scope="module")
def reference(many_tags: tuple[SvnRepo, str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Origin:
    """An origin that imported all 30 tags in one uninterrupted ``sync --once``."""
    _, name, url = many_tags
    origin = make_origin(tmp_path_factory.mktemp("bulk") / "reference", name, url)
    origin.cli("sync", "--once", check=True)
    return origin


def listed(origin: Origin) -> int:
    """How many releases the index on disk lists (0 before the first commit)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        document = json.loads((origin.store / "index.json").read_bytes())
        return len(document["signed"]["packages"].get(origin.package, {}).get("releases", {}))
    return 0


def test_bulk_import_publishes_every_tag_like_a_tag_by_tag_sync(
        reference: Origin, tmp_path: Path) -> None:
    payload = reference.status_json()
    releases, channels = summary(payload, reference.package)
    assert set(releases) == set(TAGS)
    assert channels == {"latest": TAGS[-1]}
    assert assert_consistent(reference, releases) == len(TAGS)
    # Another origin with the same key that saw the tags in three goes (its own batches)
    # holds the very same release records: batching changes when, never what.
    stepwise = make_origin(tmp_path / "stepwise", reference.package, reference.svn_url,
                           keys_from=reference.dir)
    for last in (0, 9, 29):
        pattern = "|".join(t.replace(".", r"\.") for t in TAGS[:last + 1])
        write_config(stepwise.dir, stepwise.package, stepwise.svn_url,
                     package_keys={"tag_pattern": f"^({pattern})$"})
        stepwise.cli("sync", "--once", check=True)
        assert listed(stepwise) == last + 1
    assert summary(stepwise.status_json(), reference.package) == (releases, channels)


def test_kill_9_in_the_middle_of_a_bulk_import_leaves_a_valid_store_and_the_next_run_completes(
        reference: Origin, tmp_path: Path) -> None:
    expected = summary(reference.status_json(), reference.package)
    victim = make_origin(tmp_path / "victim", reference.package, reference.svn_url,
                         keys_from=reference.dir)
    process = subprocess.Popen(cli_command("sync", "--once", config=victim.config),
                               env=cli_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    # Kill as soon as a commit is on disk that lists some but not all tags.
    seen = 0

    def partly_committed_or_done() -> bool:
        nonlocal seen
        seen = listed(victim)
        return 0 < seen < len(TAGS) or process.poll() is not None

    poll(partly_committed_or_done, 120, interval=0.01)   # the assertions below judge it
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert 0 < seen < len(TAGS), f"no partial import seen ({seen}, {process.returncode})"
    partial = assert_consistent(victim, expected[0])
    assert 0 < partial < len(TAGS)
    # What the killed run built but did not commit is debris in tmp/ or an unlisted blob;
    # the next run clears the one, reuses the other and publishes the rest.
    victim.cli("sync", "--once", check=True)
    assert summary(victim.status_json(), reference.package) == expected
    assert assert_consistent(victim, expected[0]) == len(TAGS)
    assert not list((victim.store / "tmp").iterdir())
