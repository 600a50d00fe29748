"""``scripts/cluster up``/``status``/``down`` leave nothing running; a bad
``--origin-config`` is one line on stderr and starts nothing."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.cluster.helpers import cluster_cmd, get
from tests.conftest import Origin, SvnRepo, new_origin, require
from tests.harness import config as harness_config
from tests.harness.timing import poll


def _gone(pid: int, patience: float = 10.0) -> bool:
    """Not running (a zombie awaiting its reaper counts as gone)."""

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")

    return bool(poll(gone, patience))


def _closed(url: str) -> bool:
    parts = urlsplit(url)
    family = socket.AF_INET6 if parts.hostname and ":" in parts.hostname else socket.AF_INET
    with socket.socket(family) as s:
        return s.connect_ex((parts.hostname or "", parts.port or 80)) != 0


def test_up_status_down_with_an_origin_config_leaves_nothing_running(
        svn_server: SvnRepo, tmp_path: Path) -> None:
    require("nginx")
    origin: Origin = new_origin(svn_server, tmp_path / "origin")
    directory = tmp_path / "cluster"
    up = cluster_cmd("up", "--dir", str(directory), "--replicas", "2", "--origin-config",
                     str(origin.config))
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)   # stdout is exactly one JSON object
    try:
        assert set(info) >= {"vip", "origin", "replicas", "svn_url", "config", "pids"}
        for url in [info["vip"], info["origin"], *info["replicas"]]:
            assert url.startswith("http://127.0.0.1:") and not url.endswith("/")
        assert len(info["replicas"]) == 2
        assert info["config"]["origin"] == str(origin.config)
        assert info["svn_url"] == origin.svn_url
        assert set(info["pids"]) == {"origin", "replica-1", "replica-2", "nginx"}  # no svn, sync
        status, headers, _ = get(info["vip"], f"/{origin.package}/latest.tar.gz")
        assert status == 200 and headers["x-codecache-version"] == "1.2.0"

        report = cluster_cmd("status", "--dir", str(directory), "--json")
        assert report.returncode == 0, report.stdout + report.stderr
        state = json.loads(report.stdout)
        assert all(p["up"] for p in state["processes"].values())
        assert {n: v["readyz"] for n, v in state["nodes"].items()} == {
            "origin": 200, "replica-1": 200, "replica-2": 200, "vip": 200}
        cache_dir = Path(info["nginx"]["cache_dir"])
        assert cache_dir.is_dir()
    finally:
        down = cluster_cmd("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert all(_gone(pid) for pid in info["pids"].values()), info["pids"]
    assert all(_closed(u) for u in [info["vip"], info["origin"], *info["replicas"]])
    if info.get("vip6"):
        assert _closed(info["vip6"])
    if cache_dir != directory / "nginx" / "cache":
        assert not cache_dir.exists()   # the private cache directory went with nginx
    after = cluster_cmd("status", "--dir", str(directory), "--json")
    assert after.returncode == 3
    assert not any(p["up"] for p in json.loads(after.stdout)["processes"].values())
    again = cluster_cmd("down", "--dir", str(directory))
    assert again.returncode == 0, again.stderr


def _bad_configs(tmp_path: Path) -> dict[str, Path]:
    invalid = tmp_path / "invalid.toml"
    invalid.write_text('role = "origin"\n[store\n')
    replica = tmp_path / "replica.toml"
    harness_config.write(replica, harness_config.build(
        role="replica", store={"path": "store"}, signing={"trusted_keys": ["k.pub"]},
        replica={"upstreams": ["http://127.0.0.1:9"]}))
    return {"missing": tmp_path / "nowhere.toml", "invalid": invalid, "replica": replica}


@pytest.mark.parametrize("kind", ["missing", "invalid", "replica"])
def test_a_bad_origin_config_is_one_line_and_starts_nothing(tmp_path: Path,
                                                           kind: str) -> None:
    config = _bad_configs(tmp_path)[kind]
    directory = tmp_path / "cluster"
    result = cluster_cmd("up", "--dir", str(directory), "--origin-config", str(config))
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0] and "Traceback" not in result.stderr
    # Nothing was started: no state recorded, no process names the directory.
    assert not (directory / "cluster.json").exists()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert str(directory).encode() not in cmdline.read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue


@pytest.mark.parametrize("args", [
    ["--site", "bnl"], ["--site", "bnl=10.0.0.1/8"], ["--site", "b@d=10.0.0.0/8"],
    ["--site", "a=10.0.0.0/8", "--site", "b=10.0.0.0/8"],
    ["--tls-cert", "CERT"], ["--tls-cert", "CERT", "--tls-key", "MISSING"],
    ["--tls-ca", "CERT"],
], ids=["no-networks", "host-bits", "bad-name", "network-twice", "cert-alone", "key-missing",
        "ca-alone"])
def test_bad_site_or_tls_arguments_are_one_line_and_start_nothing(tmp_path: Path,
                                                                  args: list[str]) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not checked before the key is\n")
    args = [str(cert) if a == "CERT" else str(tmp_path / "missing.pem") if a == "MISSING"
            else a for a in args]
    directory = tmp_path / "cluster"
    result = cluster_cmd("up", "--dir", str(directory), *args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (directory / "cluster.json").exists()
