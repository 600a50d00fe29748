"""Unit tests for the test harness (tests/harness): the config writer and the waits."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codecache.core.config import load_config
from codecache.core.config_schema import (
    Config,
    EdgeConfig,
    GitConfig,
    LogConfig,
    LogFormat,
    PackageConfig,
    RedirectConfig,
    RedirectSite,
    ReplicaConfig,
    Role,
    ServerConfig,
    SigningConfig,
    StoreConfig,
    SvnConfig,
    SyncConfig,
)
from tests.harness import config as harness_config
from tests.harness import timing
from tests.harness.processes import mark_run, marked_processes, restore_signals

EVERY_KEY = Config(
    role=Role.REPLICA,
    store=StoreConfig(path=Path("/srv/store"), scrub_interval=60.0),
    signing=SigningConfig(secret_keys=(Path("/k/new.key"), Path("/k/old.key")),
                          trusted_keys=(Path("/k/new.pub"),), index_expiry=3600.0,
                          resign_interval=30.0),
    server=ServerConfig(listen=("127.0.0.1:1", "[::1]:2"), channel_max_age=5,
                        memory_blob_max=7, memory_total_max=9, watch_interval=0.5,
                        workers=3, header_timeout=2.0, keepalive_timeout=4.0,
                        shutdown_timeout=6.0, fast_answers=False),
    sync=SyncConfig(interval=2.0, max_backoff=8.0),
    svn=SvnConfig(username="u", password="p",  # noqa: S106 (not a secret)
                  password_file=Path("/k/pw"), timeout=3.0,
                  client="cli"),
    replica=ReplicaConfig(upstreams=("http://a", "http://b"), interval=2.5, timeout=1.5,
                          max_index_size=4096),
    log=LogConfig(format=LogFormat.JSON, access_sample=10),
    edge=EdgeConfig(cache_size=12345),
    redirect=RedirectConfig(check_interval=1.0, trusted_proxies=("10.0.0.0/24",),
                            sites=(RedirectSite("bnl", ("127.0.0.2/32", "2001:db8::/48"),
                                                ("http://127.0.0.2:9", "https://e:8443")),)),
    git=GitConfig(timeout=7.0),
    packages=(PackageConfig("pilot", "svn://x/pilot", re.compile("^v[0-9]+$"), "latest",
                            "code"),
              PackageConfig("pilot3", git_url="https://git.example.org/pilot3.git",
                            tar_prefix="pilot3", git_token_file=Path("/k/token"),
                            git_user="ci"),
              PackageConfig("pilot4", git_url="ssh://git@git.example.org/pilot4.git",
                            tar_prefix="pilot4", git_ssh_key=Path("/k/deploy"))),
)


def _fields(instance: object) -> set[str]:
    return {f.name for f in dataclasses.fields(instance)}   # type: ignore[arg-type]


def test_every_config_key_survives_the_writer(tmp_path: Path) -> None:
    # Every field differs from its default here: a key the writer did not walk would be lost.
    for section in _fields(Config()) - {"role", "packages"}:
        value, default = getattr(EVERY_KEY, section), getattr(Config(), section)
        same = {f for f in _fields(value) if getattr(value, f) == getattr(default, f)}
        assert not same, f"give [{section}] {sorted(same)} a value other than the default"
    path = harness_config.write(tmp_path / "codecache.toml", EVERY_KEY)
    assert load_config(path, env={}) == EVERY_KEY


def test_defaults_are_left_to_the_product() -> None:
    assert harness_config.render(Config()) == 'role = "origin"\n'


def test_build_takes_the_file_spelling(tmp_path: Path) -> None:
    config = harness_config.build(
        role="origin", store={"path": "store"},
        signing={"secret_key": "keys/a.key", "trusted_keys": ["keys/a.pub"]},
        sync={"interval": "1s"}, packages=[{"name": "pilot", "svn_url": "svn://x/p",
                                           "tag_pattern": ".*"}])
    text = harness_config.render(config)
    assert 'secret_key = "keys/a.key"' in text     # one key: one path, as the docs write it
    loaded = load_config(harness_config.write(tmp_path / "c.toml", config), env={})
    assert loaded.store.path == tmp_path / "store"
    assert loaded.sync.interval == 1.0
    assert loaded.packages[0].tag_pattern.pattern == ".*"
    with pytest.raises(TypeError):
        harness_config.build(sync={"no_such_key": 1})


def test_wait_until_returns_the_value_or_fails_naming_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert timing.wait_until(lambda: 42, 1, "a value") == 42
    monkeypatch.setattr(timing, "FACTOR", 0.1)
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"not within 0\.1 s: never"):
        timing.wait_until(lambda: False, 1, "never", detail=lambda: "the log")
    assert time.monotonic() - start < 1          # the factor scaled the deadline


# Python installs its KeyboardInterrupt handler only where SIGINT is not ignored at start.
CHILD_SIGINT = ("import signal, sys; "
                "sys.exit(1 if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else 0)")


def test_free_ports_are_outside_the_range_of_outgoing_connections_local_ports() -> None:
    # Inside it, any connection of a parallel test could take the port before the server
    # binds it ("Address already in use" in a two-worker run).
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [timing.free_port() for _ in range(20)]
    assert all(1024 <= port < low for port in ports), (ports, low, high)
    assert len(set(ports)) > 1        # drawn, not one fixed port
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_a_child_gets_sigint_back_even_when_the_run_ignores_it() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)     # as under nohup
    try:
        inherited = subprocess.run([sys.executable, "-c", CHILD_SIGINT], check=False)
        restored = subprocess.run([sys.executable, "-c", CHILD_SIGINT], check=False,
                                  preexec_fn=restore_signals)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert inherited.returncode == 1      # SIG_IGN survives exec: what restore_signals undoes
    assert restored.returncode == 0


def test_a_child_carries_the_run_mark_the_leak_check_finds() -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as sleeper:
        try:
            assert sleeper.pid in {pid for pid, _ in marked_processes(mark_run())}
        finally:
            sleeper.kill()
    assert sleeper.pid not in {pid for pid, _ in marked_processes(mark_run())}


def test_a_child_without_the_mark_is_found_by_the_directory_it_names(tmp_path: Path) -> None:
    # nginx rewrites its title over its environment: the mark is gone, its -p is not.
    code = "import subprocess, sys, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
    with subprocess.Popen([sys.executable, "-c", code, f"{tmp_path}/x"], env={}) as parent:
        found: list[int] = []
        try:
            # Only the parent's own child: in a whole run other marked processes (the
            # session's svnserve, servers) are alive too, and the finally kills what it found.
            found = timing.wait_until(
                lambda: [p for p, _ in marked_processes(mark_run(), (tmp_path,))
                         if _parent_of(p) == parent.pid], 10, "the grandchild")
            assert parent.pid in {p for p, _ in marked_processes(mark_run(), (tmp_path,))}
            assert not {parent.pid, *found} & {p for p, _ in marked_processes(mark_run())}
        finally:
            for pid in {parent.pid, *found}:
                os.kill(pid, signal.SIGKILL)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[1])
