"""The origin's side of a key rotation, through the real CLI and the stock minisign.

Adding a key to ``signing.secret_key`` makes the next ``sync --once`` sign the index and
every existing release with it; putting it first switches every ``minisig``; removing the
old key drops its signatures. The walk through replicas, pilots and a squid is
tests/replica/test_rotation.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import Origin, assert_one_line_error, require, run_cli


def _use_keys(origin: Origin, secret: list[str], trusted: list[str]) -> None:
    text = origin.config.read_text()
    text = re.sub(r"secret_key = .*", f"secret_key = {json.dumps(secret)}", text)
    text = re.sub(r"trusted_keys = .*", f"trusted_keys = {json.dumps(trusted)}", text)
    origin.config.write_text(text)


def _document(origin: Origin) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((origin.store / "index.json").read_bytes())
    return data


def _keyid(public: Path) -> str:
    return public.read_text().splitlines()[0].rsplit(" ", 1)[1]


def _minisign_ok(origin: Origin, version: str, sig: str, public: Path, tmp: Path) -> bool:
    release = _document(origin)["signed"]["packages"][origin.package]["releases"][version]
    (tmp / "sig").write_text(sig)
    blob = origin.store / "blobs" / "sha256" / release["sha256"]
    return subprocess.run([require("minisign"), "-Vm", str(blob), "-x", str(tmp / "sig"),
                           "-p", str(public)], capture_output=True, check=False).returncode == 0


def test_add_switch_and_drop_a_key(store_copy: Origin, tmp_path: Path) -> None:
    origin = store_copy
    keys = origin.dir / "keys"
    run_cli("keygen", "--secret-key", str(keys / "new.key"), "--public-key",
            str(keys / "new.pub"), check=True)
    old_id, new_id = _keyid(origin.public_key), _keyid(keys / "new.pub")
    before = _document(origin)["signed"]["packages"][origin.package]["releases"]
    assert all("signatures" not in r for r in before.values())

    # sign with both (old still primary): nothing new in svn, yet sync commits
    _use_keys(origin, ["keys/codecache.key", "keys/new.key"],
              ["keys/codecache.pub", "keys/new.pub"])
    origin.cli("sync", "--once", check=True)
    document = _document(origin)
    assert [s["keyid"] for s in document["signatures"]] == [old_id, new_id]
    releases = document["signed"]["packages"][origin.package]["releases"]
    for version, release in releases.items():
        assert release["minisig"] == before[version]["minisig"]   # Ed25519 is deterministic
        assert set(release["signatures"]) == {old_id, new_id}
        assert _minisign_ok(origin, version, release["signatures"][new_id], keys / "new.pub",
                            tmp_path)
        assert not _minisign_ok(origin, version, release["signatures"][new_id],
                                origin.public_key, tmp_path)
    assert "primary_since" not in document["signed"]   # the primary did not change
    status = origin.status_json()["local"]
    assert status["signed_by"] == [old_id, new_id]
    assert status["trusted_keys"] == sorted([old_id, new_id])
    assert f"signed by {old_id}, {new_id}\n" in origin.cli("status", check=True).stdout
    serial = document["signed"]["serial"]
    origin.cli("sync", "--once", check=True)   # nothing changed: no new commit
    assert _document(origin)["signed"]["serial"] == serial

    # the new key becomes the primary: every minisig (and the stored .minisig files) switch
    _use_keys(origin, ["keys/new.key", "keys/codecache.key"],
              ["keys/codecache.pub", "keys/new.pub"])
    origin.cli("sync", "--once", check=True)
    document = _document(origin)
    assert [s["keyid"] for s in document["signatures"]] == [new_id, old_id]
    switched = document["signed"]["primary_since"]
    assert switched == document["signed"]["generated"]   # dates every .minisig from now on
    for version, release in document["signed"]["packages"][origin.package]["releases"].items():
        assert release["minisig"] == releases[version]["signatures"][new_id]
        stored = origin.store / "signatures" / origin.package / f"{version}.minisig"
        assert stored.read_text() == release["minisig"]

    # the old key is dropped: its signatures go, the records are single-key again
    _use_keys(origin, ["keys/new.key"], ["keys/new.pub"])
    origin.cli("sync", "--once", check=True)
    document = _document(origin)
    assert [s["keyid"] for s in document["signatures"]] == [new_id]
    assert document["signed"]["primary_since"] == switched   # dropping a key is no switch
    for release in document["signed"]["packages"][origin.package]["releases"].values():
        assert "signatures" not in release
    assert origin.cli("status").returncode == 0


def test_the_same_key_twice_is_a_clear_config_error(store_copy: Origin) -> None:
    origin = store_copy
    copy = origin.dir / "keys" / "copy.key"
    copy.write_bytes(origin.secret_key.read_bytes())
    copy.chmod(0o600)
    _use_keys(origin, ["keys/codecache.key", "keys/copy.key"], ["keys/codecache.pub"])
    line = assert_one_line_error(origin.cli("sync", "--once"), 2)
    assert "are the same key" in line
    _use_keys(origin, [], ["keys/codecache.pub"])
    line = assert_one_line_error(origin.cli("sync", "--once"), 2)
    assert "signing.secret_key" in line
