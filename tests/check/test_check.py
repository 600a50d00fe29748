"""``codecache check`` against real conditions (issue 8): every state from a real cause.

Real processes throughout: ``codecache serve`` origins and replicas, real svnserve, the
real CLI as a monitoring system runs it. OK: a healthy origin + replica. WARNING: an index
about to expire, a lagging replica, a mutated tag. CRITICAL: an expired index, a replica
whose upstream is gone, a stopped server, a server that never answers, a tampered blob,
the wrong key, two writers, a full disk. UNKNOWN: a missing store, usage errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.check.conftest import check
from tests.conftest import Origin, SvnRepo, copy_origin, run_cli
from tests.http.helpers import Server, blob_path, release_info, running, start_server
from tests.replica.conftest import readyz, start_replica, write_replica_config


def key_args(server: Server) -> tuple[str, ...]:
    return ("--url", server.base, "--key", str(server.origin.public_key))


def set_signing(origin: Origin, **values: str) -> None:
    """Rewrite ``[signing]`` keys of the origin's config (e.g. a short index_expiry)."""
    text = origin.config.read_text()
    for key, value in values.items():
        text = text.replace("[signing]\n", f'[signing]\n{key} = "{value}"\n')
    origin.config.write_text(text)


def resign(origin: Origin) -> None:
    """A new index under the config's current expiry: a channel move commits one."""
    origin.cli("publish", origin.package, "1.0.0", "--channel", "check", check=True)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def replica_of(served: Server, tmp_path: Path) -> Iterator[Server]:
    replica = start_replica(tmp_path / "replica", served.origin, [served.base],
                            interval="0.2s")
    try:
        yield replica
    finally:
        replica.stop()


# --- OK ----------------------------------------------------------------------------------------


def test_a_healthy_origin_and_replica_are_ok_by_url_and_by_config(
        served: Server, replica_of: Server) -> None:
    for args, config in [(key_args(served), None), ((), served.origin.config),
                         (("--url", replica_of.base), replica_of.origin.config),
                         ((), replica_of.origin.config)]:
        result = check(*args, config=config)
        assert (result.code, result.state) == (0, "OK"), result.stdout + result.stderr
        assert result.value("tarballs_verified") == 1       # latest -> 1.2.0
        assert result.value("blobs_unavailable") == 0
        assert result.value("expires_in") > 6 * 86400
        assert result.perfdata["disk_free"].endswith("%")
    replica = check("--url", replica_of.base, config=replica_of.origin.config)
    assert "replica serving serial" in replica.message
    assert replica.value("serial_behind") == 0
    assert replica.value("lag") < 30
    assert replica.perfdata["lag"].endswith("s")
    origin = check(*key_args(served))
    assert "lag" not in origin.perfdata and origin.perfdata["mutated_tags"] == "0"


def test_verify_names_the_channels_to_download(served: Server) -> None:
    store = served.origin
    store.cli("publish", store.package, "1.0.0", "--channel", "production", check=True)
    served.wait_for("the server has the production channel", lambda: served.request(
        f"/{store.package}/production.tar.gz").status == 200, 10)
    moved_last = check(*key_args(served))
    assert moved_last.state == "OK" and moved_last.value("tarballs_verified") == 1
    every = check(*key_args(served), "--verify", "all")
    assert every.state == "OK" and every.value("tarballs_verified") == 2   # 1.0.0 and 1.2.0
    named = check(*key_args(served), "--verify", f"{served.package}/latest", "--no-upstream")
    assert named.state == "OK" and named.value("tarballs_verified") == 1
    assert "tarballs_verified" not in check(*key_args(served), "--no-verify").perfdata
    missing = check(*key_args(served), "--verify", f"{served.package}/nosuch")
    assert missing.state == "CRITICAL" and "no channel 'nosuch'" in missing.message


# --- expiry ------------------------------------------------------------------------------------


def test_an_index_about_to_expire_warns_then_is_critical_below_the_critical_limit(
        served: Server) -> None:
    set_signing(served.origin, index_expiry="1h")
    resign(served.origin)
    served.wait_for("the server serves the 1h index", lambda: json.loads(
        served.request("/readyz").body)["expires"] - time.time() < 3700, 10)
    assert check(*key_args(served)).state == "OK"          # more than 50% of 1h left
    soon = check(*key_args(served), "--expiry-warning", "2h")
    assert (soon.code, soon.state) == (1, "WARNING"), soon.stdout
    assert "index expires in" in soon.message
    assert soon.perfdata["expires_in"].endswith("s") and soon.value("expires_in") <= 3600
    hard = check(*key_args(served), "--expiry-warning", "3h", "--expiry-critical", "2h")
    assert (hard.code, hard.state) == (2, "CRITICAL")
    on_disk = check("--expiry-warning", "2h", config=served.origin.config)
    assert on_disk.state == "WARNING"


def test_an_expired_index_is_critical(served: Server) -> None:
    set_signing(served.origin, index_expiry="2s")
    resign(served.origin)
    served.wait_for("the served index expired", lambda: json.loads(
        served.request("/readyz").body)["status"] == "degraded: index expired", 20)
    assert served.request("/readyz").status == 200       # still served (DESIGN.md §5)
    for args, config in [(key_args(served), None), ((), served.origin.config)]:
        result = check(*args, config=config)
        assert (result.code, result.state) == (2, "CRITICAL"), result.stdout
        assert "EXPIRED" in result.message
        assert result.value("expires_in") <= 0


# --- replica lag -------------------------------------------------------------------------------


def test_a_replica_whose_upstream_stopped_warns_then_goes_critical(
        served: Server, replica_of: Server) -> None:
    served.stop()
    replica_of.wait_for("3 s without a confirmation", lambda: (readyz(replica_of).get(
        "seconds_since_confirmed") or 0) >= 3, 30)
    config = replica_of.origin.config
    warn = check("--url", replica_of.base, "--lag-warning", "2s", "--lag-critical", "1h",
                 config=config)
    assert (warn.code, warn.state) == (1, "WARNING"), warn.stdout
    assert "replica lags" in warn.message and "last error" in warn.message
    assert warn.value("lag") >= 3
    assert "serial_behind" not in warn.perfdata      # the upstream cannot be asked
    crit = check("--url", replica_of.base, "--lag-warning", "1s", "--lag-critical", "2s",
                 config=config)
    assert (crit.code, crit.state) == (2, "CRITICAL")
    local = check("--lag-warning", "2s", config=config)
    assert local.state == "WARNING" and "replica lags" in local.message


def test_a_replica_behind_its_upstream_reports_serial_behind(
        served: Server, tmp_path: Path) -> None:
    # A replica that pulls once an hour: the origin publishes, the replica does not follow.
    slow = start_replica(tmp_path / "slow", served.origin, [served.base], interval="1h")
    try:
        held = readyz(slow)["serial"]
        resign(served.origin)
        served.wait_for("the origin serves the new index",
                        lambda: readyz(served)["serial"] > held, 10)
        time.sleep(2.1)   # the upstream's new index is now over 2 s old
        result = check("--url", slow.base, "--lag-warning", "2s", config=slow.origin.config)
        assert (result.code, result.state) == (1, "WARNING"), result.stdout
        assert result.value("serial_behind") > 0
        assert f"serial {held} behind" in result.message
    finally:
        slow.stop()


# --- CRITICAL: unreachable, damaged, untrusted, two writers --------------------------------


def test_a_stopped_server_is_critical(served: Server) -> None:
    served.stop()
    result = check(*key_args(served))
    assert (result.code, result.state) == (2, "CRITICAL"), result.stdout
    assert "refused" in result.message.lower()


def test_a_server_that_never_answers_is_critical_within_the_timeout(
        served: Server, tmp_path: Path) -> None:
    with socket.socket() as mute:      # accepts connections (backlog), never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        port = mute.getsockname()[1]
        started = time.monotonic()
        result = check("--url", f"http://127.0.0.1:{port}", "--key",
                       str(served.origin.public_key), "-t", "2", timeout=30)
        took = time.monotonic() - started
    assert (result.code, result.state) == (2, "CRITICAL"), result.stdout
    assert "within" in result.message or "timed out" in result.message
    assert took < 25, took    # a deadline, not a measurement: a hang would hit 30 s


def test_check_by_url_refuses_an_index_over_the_configs_max_index_size(
        served: Server) -> None:
    # [replica] max_index_size caps every fetch of an index, check --url's as a replica's.
    served_index = served.request("/index.json").body
    assert len(served_index) > 1024, len(served_index)
    config = served.origin.config.with_name("small-cap.toml")   # its paths are relative
    config.write_text(served.origin.config.read_text() + "\n[replica]\nmax_index_size = 1024\n")
    result = check("--url", served.base, config=config)
    assert (result.code, result.state) == (2, "CRITICAL"), result.stdout + result.stderr
    assert "too_large" in result.message, result.message
    assert check("--url", served.base, config=served.origin.config).state == "OK"


def test_a_tampered_blob_is_critical(served: Server) -> None:
    sha256 = release_info(served.origin, "1.2.0")["sha256"]   # latest
    flip_byte(blob_path(served.origin, sha256))
    served.wait_for("the server notices", lambda: served.request("/readyz").status == 503, 10)
    for args, config in [(key_args(served), None), ((), served.origin.config)]:
        result = check(*args, config=config)
        assert (result.code, result.state) == (2, "CRITICAL"), result.stdout
        assert sha256 in result.message and "corrupt" in result.message


def test_a_tampered_blob_off_every_channel_is_found_by_the_server_or_deep(
        served: Server) -> None:
    sha256 = release_info(served.origin, "1.0.0")["sha256"]   # on no channel
    flip_byte(blob_path(served.origin, sha256))
    served.wait_for("the server notices", lambda: served.request("/readyz").status == 503, 10)
    assert check(*key_args(served)).state == "CRITICAL"
    assert check(config=served.origin.config).state == "OK"   # channels only, by default
    deep = check("--deep", config=served.origin.config)
    assert deep.state == "CRITICAL" and sha256 in deep.message


def test_an_untrusted_key_is_critical(served: Server, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run_cli("keygen", "--secret-key", str(other) + ".key", "--public-key",
            str(other) + ".pub", check=True)
    result = check("--url", served.base, "--key", str(other) + ".pub")
    assert (result.code, result.state) == (2, "CRITICAL"), result.stdout
    assert "index does not verify: bad_signature" in result.message


def test_two_writers_seen_by_a_replica_are_critical(served: Server, tmp_path: Path) -> None:
    """The origin restored from an older backup behind the replica's back: ``rollback``
    refusals, what a second writer looks like too (DESIGN.md §5)."""
    store = served.origin
    backup = tmp_path / "backup"
    shutil.copytree(store.store, backup)
    replica = start_replica(tmp_path / "replica", store, [served.base], interval="0.2s")
    try:
        resign(store)
        newer = store.status_json()["serial"]
        replica.wait_for("the replica has the newer index",
                         lambda: readyz(replica)["serial"] == newer, 10)
        served.stop()
        shutil.rmtree(store.store)
        shutil.copytree(backup, store.store)
        restored = start_server(store, port=served.port)
        try:
            replica.wait_for("the lower serial is refused", lambda: "rollback" in readyz(
                replica)["replica"]["refusals"], 10)
            result = check("--url", replica.base, config=replica.origin.config)
            assert (result.code, result.state) == (2, "CRITICAL"), result.stdout
            assert "two writers" in result.message and "rollback" in result.message
            assert result.value("refusals_rollback") >= 1
            local = check(config=replica.origin.config)
            assert local.state == "CRITICAL" and "rollback" in local.message
            # The runbook's action after a deliberate restore: stop the replica's server (its
            # pull loop would go on refusing and recording it), accept the lower serial once,
            # start it again (its refusal record starts afresh).
            replica.stop()
            override = replica.origin.cli("replicate", "--accept-lower-serial")
            assert override.returncode == 0, override.stderr
            replica = start_server(replica.origin, port=replica.port)
            after = check("--url", replica.base, config=replica.origin.config)
            assert (after.code, after.state) == (0, "OK"), after.stdout
            assert after.value("refusals_rollback") == 0
        finally:
            restored.stop()
    finally:
        replica.stop()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(path)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:   # root without CAP_SYS_ADMIN (a container)
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_store_disk_is_critical(template_origin: Origin, tmp_path: Path) -> None:
    origin = copy_origin(template_origin, tmp_path / "origin")
    with tmpfs(tmp_path / "small", "4m") as mount:
        shutil.copytree(origin.store, mount / "store")
        origin.config.write_text(origin.config.read_text().replace(
            'path = "store"', f'path = "{mount / "store"}"'))
        ok = check(config=origin.config)
        assert ok.state == "OK" and ok.value("disk_free") > 10, ok.stdout
        free = shutil.disk_usage(mount).free
        (mount / "filler").write_bytes(b"\0" * (free - 100 * 1024))
        full = check(config=origin.config)
        assert (full.code, full.state) == (2, "CRITICAL"), full.stdout
        assert "store disk" in full.message and full.value("disk_free") < 5
        with running(origin) as server:
            remote = check(*key_args(server))
            assert remote.state == "CRITICAL" and "store disk" in remote.message


# --- WARNING: mutated tag ------------------------------------------------------------------


def test_a_mutated_tag_warns(synced_origin: Origin,
                             svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, _ = svn_package
    repo.commit_to_tag(name, "1.2.0", "etc/pilot.cfg", "[pilot]\nretries = 99\n")
    synced_origin.cli("sync", "--once", check=True)
    result = check(config=synced_origin.config)
    assert (result.code, result.state) == (1, "WARNING"), result.stdout
    assert f"mutated tag(s): {name} 1.2.0" in result.message
    assert result.value("mutated_tags") == 1
    with running(synced_origin) as server:
        remote = check(*key_args(server))
        assert remote.state == "WARNING" and "1 mutated tag(s)" in remote.message


# --- UNKNOWN: the check's own failures --------------------------------------------------------


def test_a_missing_store_is_unknown(tmp_path: Path, template_origin: Origin) -> None:
    config = write_replica_config(tmp_path / "node", template_origin.public_key,
                                  ["http://127.0.0.1:9"])
    result = check(config=config)
    assert (result.code, result.state) == (3, "UNKNOWN"), result.stdout
    assert "does not exist" in result.message
    assert result.stderr.startswith("codecache: error: ")


def test_usage_and_config_errors_are_unknown_but_other_commands_keep_2(
        tmp_path: Path, served: Server) -> None:
    for args in (["--bogus"], ["--timeout", "soon"], ["--expiry-warning", "150%"],
                 ["--url", "ftp://x"], ["--verify", "no-slash"], ["stray"]):
        result = run_cli("check", *args, config=served.origin.config)
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert result.stdout.startswith("CODECACHE UNKNOWN - "), result.stdout
        assert "Traceback" not in result.stderr
    missing = run_cli("check", config=tmp_path / "nope.toml")
    assert missing.returncode == 3 and "does not exist" in missing.stdout
    no_key = run_cli("check", "--url", served.base, config=tmp_path / "nope.toml")
    assert no_key.returncode == 3 and no_key.stdout.startswith("CODECACHE UNKNOWN")
    assert run_cli("status", "--bogus", config=served.origin.config).returncode == 2
    assert run_cli("--bogus", "status", config=served.origin.config).returncode == 2
