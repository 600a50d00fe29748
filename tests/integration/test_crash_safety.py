"""kill -9 at any point of a sync leaves a consistent store; the next run completes (§8)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Origin, SvnRepo, cli_command, cli_env, make_origin

TAGS = [f"3.{i}.0" for i in range(8)]
ITERATIONS = 18
HEX64 = re.compile(r"[0-9a-f]{64}")


def summary(payload: dict[str, Any], package: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(release records, channel → version): what must match an uninterrupted sync."""
    pkg = payload["packages"].get(package, {"releases": {}, "channels": {}})  # first commit
    return pkg["releases"], {c: ch["version"] for c, ch in pkg["channels"].items()}


def assert_consistent(origin: Origin, expected: dict[str, Any]) -> int:
    """Check the store a killed writer left; return how many releases its index lists."""
    blob_dir = origin.store / "blobs" / "sha256"
    if blob_dir.exists():
        for blob in blob_dir.iterdir():
            assert HEX64.fullmatch(blob.name), f"temp file visible as a blob: {blob.name}"
            assert blob.is_file()
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    if origin.index_bytes() is None:
        return 0
    releases, channels = summary(origin.status_json(), origin.package)  # verifies (exit 0)
    for version, record in releases.items():
        assert record == expected[version]  # identical to the uninterrupted run's release
        data = (blob_dir / record["sha256"]).read_bytes()
        assert len(data) == record["size"]
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        signature = origin.store / "signatures" / origin.package / f"{version}.minisig"
        assert signature.read_text() == record["minisig"]
    for version in channels.values():
        assert version in releases
    # The history verifies against the index (exit 0) and records every release it lists.
    history = json.loads(origin.cli("history", "--json", check=True).stdout)["entries"]
    assert sorted(e["version"] for e in history if e["action"] == "release") == \
        sorted(releases)
    return len(releases)


def history_summary(origin: Origin) -> list[tuple[Any, ...]]:
    entries = json.loads(origin.cli("history", "--json", check=True).stdout)["entries"]
    return [(e["action"], e["version"], e["channel"], e["from"], e["actor"]) for e in entries]


def kill_sync_after(origin: Origin, delay: float) -> int | None:
    """Start ``sync --once``, SIGKILL it after ``delay`` s; its return code (None: killed)."""
    process = subprocess.Popen(cli_command("sync", "--once", config=origin.config),
                               env=cli_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)
    code = process.wait(timeout=30)
    # The svn child of a killed writer may live on as an orphan: end it too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return None if code == -signal.SIGKILL else code


@pytest.mark.slow
def test_kill_9_during_sync_never_leaves_a_broken_store(
        tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, url = svn_package
    for i, tag in enumerate(TAGS):
        repo.change(name, f"lib/pilot/data{i}.py", f"DATA = {i!r}\n" * (2000 * (i + 1)))
        repo.tag(name, tag)
    reference = make_origin(tmp_path / "reference", name, url)
    start = time.monotonic()
    reference.cli("sync", "--once", check=True)
    typical = time.monotonic() - start
    expected_releases, expected_channels = summary(reference.status_json(), name)
    assert set(expected_releases) == set(TAGS)
    assert expected_channels == {"latest": TAGS[-1]}

    seed = random.randrange(1 << 32)  # noqa: S311 - timing jitter, not crypto
    rng = random.Random(seed)  # noqa: S311
    killed = partial = 0
    for iteration in range(ITERATIONS):
        victim = make_origin(tmp_path / f"victim{iteration}", name, url,
                             keys_from=tmp_path / "reference")
        # Two kills before recovering: the second starts from the first one's debris.
        for _ in range(2):
            delay = rng.uniform(0, typical)
            code = kill_sync_after(victim, delay)
            assert code in (None, 0), f"seed {seed}: sync exited {code} after {delay:.3f}s"
            killed += code is None
            listed = assert_consistent(victim, expected_releases)
            partial += 0 < listed < len(TAGS)
        victim.cli("sync", "--once", check=True)
        assert summary(victim.status_json(), name) == (expected_releases, expected_channels), \
            f"seed {seed}, iteration {iteration}"
        # Killed and resumed, the history tells the same story as an uninterrupted sync.
        assert history_summary(victim) == history_summary(reference), \
            f"seed {seed}, iteration {iteration}"
    assert killed >= ITERATIONS // 2, f"seed {seed}: {killed} kills landed ({typical=:.2f}s)"
    assert partial >= 1, f"seed {seed}: no kill landed in the middle of publishing"
