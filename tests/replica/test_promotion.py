"""Standby origin promotion (DESIGN.md §5): a replica switched to ``role = "origin"``.

The standby holds the secret key and the package config while it replicates; promoted, it
continues the serial from the highest it accepted and re-creates, from the same tags,
blobs and signatures identical to the old origin's (reproducible tarballs, deterministic
Ed25519), so pilots and replicas cannot tell which origin made them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import Origin, SvnRepo, new_origin
from tests.http.helpers import release_info, running
from tests.replica.conftest import replica_origin, write_replica_config


def standby_config(directory: Path, active: Origin, upstream: str, role: str) -> Path:
    """A standby: a replica of ``active`` that also holds its key and package config."""
    (directory / "keys").mkdir(parents=True, exist_ok=True)
    shutil.copy2(active.secret_key, directory / "keys" / "codecache.key")
    (directory / "keys" / "codecache.key").chmod(0o600)
    package = {"name": active.package, "svn_url": active.svn_url, "auto_channel": "latest"}
    return write_replica_config(directory, active.public_key, [upstream], interval="0.5s",
                                role=role, signing={"secret_key": "keys/codecache.key"},
                                sync={"interval": "1s"}, packages=[package])


def test_a_promoted_standby_continues_the_serial_and_recreates_identical_blobs(
        svn_server: SvnRepo, tmp_path: Path) -> None:
    active = new_origin(svn_server, tmp_path / "active")
    standby_dir = tmp_path / "standby"
    with running(active) as served:
        standby_config(standby_dir, active, served.base, role="replica")
        standby = replica_origin(standby_dir, active)
        with running(standby) as replica:
            held = active.status_json()["serial"]
            replica.wait_for("the standby holds the active origin's index", lambda: json.loads(
                replica.request("/index.json").body)["signed"]["serial"] == held, 15)
    # The active origin publishes a tag the standby never pulls, then is lost.
    svn_server.change(active.package, "lib/pilot/main.py", "print('pilot 1.3')\n")
    svn_server.tag(active.package, "1.3.0")
    active.cli("sync", "--once", check=True)

    # Promotion: switch the role, run the sync worker.
    standby_config(standby_dir, active, "http://127.0.0.1:9", role="origin")
    result = standby.cli("sync", "--once")
    assert result.returncode == 0, result.stderr
    assert f"published {active.package} 1.3.0" in result.stdout
    status = standby.status_json()
    assert status["serial"] > held
    assert status["packages"][active.package]["channels"]["latest"]["version"] == "1.3.0"
    theirs, mine = release_info(active, "1.3.0"), release_info(standby, "1.3.0")
    for field in ("sha256", "size", "tar_sha256", "minisig", "svn_url", "revision"):
        assert mine[field] == theirs[field], field
    blob = f"blobs/sha256/{theirs['sha256']}"
    assert (standby.store / blob).read_bytes() == (active.store / blob).read_bytes()
    # The releases it replicated are untouched and it serves them all.
    for version in ("1.0.0", "1.2.0"):
        assert release_info(standby, version)["sha256"] == release_info(active, version)["sha256"]
    with running(standby) as promoted:
        assert promoted.request(f"/{active.package}/releases/1.3.0.tar.gz").status == 200
