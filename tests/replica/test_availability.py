"""Availability over freshness (DESIGN.md §5): origin away, index expired, a blob rotting."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

from tests.conftest import Origin
from tests.harness.timing import scaled
from tests.http.helpers import Server, blob_path, release_info, rfc3339_seconds, start_server
from tests.replica.conftest import readyz, replica_status, start_replica


def set_signing(origin: Origin, **values: str) -> None:
    """Rewrite ``[signing]`` keys of the origin's config (e.g. a short index_expiry)."""
    text = origin.config.read_text()
    for key, value in values.items():
        text = re.sub(rf"(?m)^{key} = .*\n", "", text)
        text = text.replace("[signing]\n", f'[signing]\n{key} = "{value}"\n')
    origin.config.write_text(text)


def serial_of(server: Server) -> int:
    serial: int = json.loads(server.request("/index.json").body)["signed"]["serial"]
    return serial


# Long enough for the replica to pull the short-lived index before it expires on a loaded
# 2-core machine (the replica runs already; a pull is due every 0.5 s), short for the test.
EXPIRY = max(6, round(scaled(10)))


def test_replica_keeps_serving_through_origin_loss_and_expiry_then_catches_up(
        served_origin: Server, tmp_path: Path) -> None:
    origin = served_origin
    store = origin.origin
    replica = start_replica(tmp_path / "replica", store, [origin.base], interval="0.5s")
    try:
        # An index that expires soon: re-signed now with an EXPIRY s expiry.
        set_signing(store, index_expiry=f"{EXPIRY}s", resign_interval="1s")
        time.sleep(1.1)  # the re-sign is due
        store.cli("sync", "--once", check=True)

        def lifetime() -> int:
            signed = json.loads(origin.request("/index.json").body)["signed"]
            return rfc3339_seconds(signed["expires"]) - rfc3339_seconds(signed["generated"])

        origin.wait_for("the origin serves the short-lived index",
                        lambda: lifetime() == EXPIRY, 10)
        held = serial_of(origin)
        replica.wait_for("the replica holds the short-lived index",
                         lambda: serial_of(replica) == held, 10)
        tarball = replica.request(f"/{store.package}/latest.tar.gz").body
        origin.stop()  # origin (and with it every upstream) gone

        replica.wait_for("the held index expires and the replica says so",
                         lambda: readyz(replica)["status"] == "degraded: index expired",
                         EXPIRY + 14)
        reply = replica.request("/readyz")
        assert reply.status == 200  # the balancer keeps it: pilots must not stop
        body = json.loads(reply.body)
        assert body["seconds_since_confirmed"] >= 3
        assert body["replica"]["last_error"]
        assert replica.request(f"/{store.package}/latest.tar.gz").body == tarball
        lag = replica_status(replica.origin.dir)["local"]["replica"]["seconds_since_confirmed"]
        assert lag >= 3
        metrics = replica.request("/metrics").body.decode()
        assert 'codecache_replica_upstream_errors_total{reason="connect"}' in metrics

        # The origin comes back, re-signs with a normal expiry: the replica catches up.
        set_signing(store, index_expiry="7d", resign_interval="1h")
        store.cli("sync", "--once", check=True)
        back = start_server(store, port=origin.port)
        try:
            replica.wait_for("the replica catches up",
                             lambda: serial_of(replica) == serial_of(back)
                             and readyz(replica)["status"] == "ok", 15)
        finally:
            back.stop()
    finally:
        replica.stop()


def test_a_blob_that_rots_on_the_replica_is_fetched_again(served_origin: Server,
                                                          tmp_path: Path) -> None:
    origin = served_origin
    replica = start_replica(tmp_path / "replica", origin.origin, [origin.base], interval="0.5s")
    try:
        sha256 = release_info(origin.origin, "1.2.0")["sha256"]
        path = blob_path(replica.origin, sha256)
        good = path.read_bytes()
        with path.open("r+b") as fh:  # one flipped byte, same size
            fh.seek(len(good) // 2)
            fh.write(bytes([good[len(good) // 2] ^ 0xFF]))
        replica.wait_for("the rotten blob is replaced by a good copy",
                         lambda: hashlib.sha256(path.read_bytes()).hexdigest() == sha256, 15)
        replica.wait_for("ready again", lambda: replica.request("/readyz").status == 200, 10)
        reply = replica.request(f"/{origin.package}/latest.tar.gz")
        assert hashlib.sha256(reply.body).hexdigest() == sha256
        path.unlink()  # and a missing one
        replica.wait_for("the missing blob is back",
                         lambda: path.exists() and path.read_bytes() == good, 15)
    finally:
        replica.stop()


def test_operator_lets_a_replica_accept_a_lower_serial_once(served_origin: Server,
                                                            tmp_path: Path) -> None:
    origin = served_origin
    store = origin.origin
    backup = tmp_path / "backup"
    shutil.copytree(store.store, backup)
    replica = start_replica(tmp_path / "replica", store, [origin.base], interval="0.5s")
    try:
        store.cli("publish", store.package, "1.0.0", "--channel", "latest", check=True)
        newer = store.status_json()["serial"]
        replica.wait_for("replica has the newer index", lambda: serial_of(replica) == newer, 10)
        # The origin's store is restored from the older backup: a lower serial.
        origin.stop()
        shutil.rmtree(store.store)
        shutil.copytree(backup, store.store)
        restored = start_server(store, port=origin.port)
        try:
            older = json.loads((backup / "index.json").read_bytes())["signed"]["serial"]
            assert older < newer
            replica.wait_for("the lower serial is refused as a rollback", lambda: re.search(
                r'codecache_replica_refusals_total\{reason="rollback"\} [1-9]',
                replica.request("/metrics").body.decode()) is not None, 10)
            assert serial_of(replica) == newer and replica.request("/readyz").status == 200
            result = replica.origin.cli("replicate", "--accept-lower-serial")
            assert result.returncode == 0, result.stderr
            assert "override" in result.stderr.lower()
            replica.wait_for("the replica serves the restored index",
                             lambda: serial_of(replica) == older, 10)
            assert replica.request("/readyz").status == 200
        finally:
            restored.stop()
    finally:
        replica.stop()
