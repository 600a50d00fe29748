"""A store written before git sources (commit b3f1b7d) keeps verifying unchanged (issue 20).

``tests/fixtures/store-b3f1b7d`` is such a store as that code wrote it (``make-store.sh``
there says how: Subversion releases 1.0.0 (yanked), 1.1.0 and 1.2.0 (mutated after it was
published), channels ``latest`` and ``production``, its history and ``state.json``), with
its public key only. The current code reads it with no migration: ``status``, ``verify``
of a blob, ``history``, a replica pulling it from ``codecache serve``; and it writes the
index payload back byte for byte (format 1, no git keys).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from codecache.core.index import to_payload
from codecache.core.signing import canonical_json, load_trusted_keys
from codecache.core.trust import verify
from tests.conftest import Origin, run_cli
from tests.harness import config as harness_config
from tests.http.helpers import running
from tests.replica.conftest import write_replica_config

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store-b3f1b7d"
SVN_URL = "svn://127.0.0.1:42355/pilot"     # as recorded (the svnserve of that run)


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Origin:
    """A copy of the fixture (the store as an origin left it), configured as an origin
    without a secret key: reading and serving need none."""
    directory = tmp_path_factory.mktemp("old") / "origin"
    shutil.copytree(FIXTURE, directory)
    config = harness_config.write(directory / "codecache.toml", harness_config.build(
        role="origin", store={"path": "store"},
        signing={"trusted_keys": ["keys/codecache.pub"]},
        packages=[{"name": "pilot", "svn_url": SVN_URL, "auto_channel": "latest"}]))
    return Origin(directory, config, directory / "store", directory / "keys" / "none",
                  directory / "keys" / "codecache.pub", "pilot", SVN_URL)


def test_the_current_code_writes_the_old_payload_back_byte_for_byte(old: Origin) -> None:
    raw = (old.store / "index.json").read_bytes()
    signed = verify(raw, load_trusted_keys([old.public_key]))
    payload = json.loads(raw)["signed"]
    assert payload["format"] == 1
    assert canonical_json(to_payload(signed.index)) == canonical_json(payload)
    for release in payload["packages"]["pilot"]["releases"].values():
        assert "git_url" not in release and "commit" not in release


def test_status_reads_the_old_store_and_its_state(old: Origin) -> None:
    payload = old.status_json()
    releases = payload["packages"]["pilot"]["releases"]
    assert sorted(releases) == ["1.0.0", "1.1.0", "1.2.0"]
    assert releases["1.0.0"]["yanked"] is True
    assert releases["1.1.0"]["svn_url"] == f"{SVN_URL}/tags/1.1.0"
    assert payload["packages"]["pilot"]["channels"]["production"]["version"] == "1.1.0"
    (mutated,) = payload["mutated_tags"]   # state.json as that code wrote it
    assert (mutated["version"], mutated["published_revision"], mutated["current_revision"]) \
        == ("1.2.0", 7, 9)
    assert payload["refused_tags"] == []
    text = old.cli("status", check=True).stdout
    assert f"release 1.1.0 sha256={releases['1.1.0']['sha256']} size={releases['1.1.0']['size']} " \
           f"svn={SVN_URL}/tags/1.1.0@5" in text
    assert "WARNING: tag pilot 1.2.0 changed after publishing (r7 -> r9)" in text
    history = old.cli("history", check=True).stdout
    assert "yank" in history and "1.0.0" in history


def test_verify_a_blob_of_the_old_store(old: Origin, tmp_path: Path) -> None:
    release = old.status_json()["packages"]["pilot"]["releases"]["1.1.0"]
    tarball = tmp_path / "1.1.0.tar.gz"
    shutil.copyfile(old.store / "blobs" / "sha256" / release["sha256"], tarball)
    result = old.cli("verify", str(tarball), "--sig",
                     str(old.store / "signatures" / "pilot" / "1.1.0.minisig"), check=True)
    assert f"package=pilot version=1.1.0 sha256={release['sha256']} " \
           f"svn={SVN_URL}/tags/1.1.0@5 " in result.stdout


def test_a_replica_pulls_the_old_store(old: Origin, tmp_path: Path) -> None:
    with running(old) as server:
        config = write_replica_config(tmp_path / "replica", old.public_key, [server.base])
        run_cli("replicate", "--once", config=config, check=True)
    assert (tmp_path / "replica" / "store" / "index.json").read_bytes() == \
        (old.store / "index.json").read_bytes()
    for blob in (old.store / "blobs" / "sha256").iterdir():
        assert (tmp_path / "replica" / "store" / "blobs" / "sha256" / blob.name).read_bytes() \
            == blob.read_bytes()
    assert (tmp_path / "replica" / "store" / "history.json").read_bytes() == \
        (old.store / "history.json").read_bytes()
