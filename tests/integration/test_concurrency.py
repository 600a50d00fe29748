"""Two writers at once: the store lock serialises them; each tag is published once."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

from tests.conftest import Origin, SvnRepo, cli_command, cli_env, copy_origin

ROUNDS = 3


def test_two_syncs_started_together_publish_each_tag_once(
        origin: Origin, svn_package: tuple[SvnRepo, str, str], tmp_path: Path) -> None:
    repo, name, _ = svn_package
    for i in range(4):
        repo.change(name, f"lib/pilot/extra{i}.py", f"X = {i}\n" * 3000)
        repo.tag(name, f"1.{3 + i}.0")
    tags = ["1.0.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0"]
    for round_ in range(ROUNDS):
        store = copy_origin(origin, tmp_path / f"round{round_}")
        started = int(time.time())
        processes = [subprocess.Popen(cli_command("sync", "--once", config=store.config),
                                      env=cli_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=120) for p in processes]
        codes = [p.returncode for p in processes]
        assert 0 in codes, outputs
        for code, (_, err) in zip(codes, outputs, strict=True):
            assert code in (0, 3), err
            if code == 3:
                assert "locked by another writer" in err
        published = sorted(line for out, _ in outputs for line in out.splitlines()
                           if line.startswith("published "))
        assert published == sorted(f"published {name} {tag}" for tag in tags), outputs

        payload = store.status_json()
        releases = payload["packages"][name]["releases"]
        assert sorted(releases) == sorted(tags)
        assert payload["packages"][name]["channels"]["latest"]["version"] == "1.6.0"
        blob_dir = store.store / "blobs" / "sha256"
        assert sorted(p.name for p in blob_dir.iterdir()) == \
            sorted(r["sha256"] for r in releases.values())
        for record in releases.values():
            data = (blob_dir / record["sha256"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record["sha256"]
        # Serials are time-based (DESIGN.md §5): never below the clock at the commit.
        assert payload["serial"] >= started
