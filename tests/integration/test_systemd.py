"""The systemd units in systemd/: ``systemd-analyze verify`` finds nothing to say, the
sandbox scores low in ``systemd-analyze security --offline``, and the sysusers/tmpfiles
snippets, applied to a scratch root by the real ``systemd-sysusers``/``systemd-tmpfiles``,
make the dedicated user, the store and a secret key only that user can read.

Test machines boot without systemd, so nothing here starts a unit; the protocol the units
rely on (``Type=notify``, ``WatchdogSec``) is tested against the real commands in
tests/integration/test_notify.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted(p.name for p in (REPO / "systemd").glob("*.service"))
INSTALLED = "/opt/codecache/bin/codecache"


def installed_copy(unit: str, directory: Path, change: tuple[str, str] | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's real ``codecache`` (verify checks
    that the command exists), optionally with one text change (a deliberate mistake)."""
    codecache = Path(sys.executable).parent / "codecache"
    assert codecache.exists(), codecache
    text = (REPO / "systemd" / unit).read_text().replace(INSTALLED, str(codecache))
    if change is not None:
        assert change[0] in text
        text = text.replace(*change)
    path = directory / unit
    path.write_text(text)
    return path


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require("systemd-analyze"), *map(str, args)], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "LC_ALL": "C"})


def directives(unit: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (REPO / "systemd" / unit).read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def test_there_are_serve_and_sync_units() -> None:
    assert UNITS == ["codecache-serve.service", "codecache-sync.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_finds_nothing(unit: str, tmp_path: Path) -> None:
    result = analyze("verify", "--man=no", installed_copy(unit, tmp_path))
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings ("ignoring"): any output is a failure.
    assert result.stdout + result.stderr == ""


@pytest.mark.parametrize(("mistake", "message"), [
    (("ProtectSystem=strict", "ProtectSystem=strictt"), "protect system value"),
    (("WatchdogSec=", "WatchdgSec="), "Unknown key"),
    (("Type=notify", "Type=notifyy"), "service type"),
])
def test_verify_would_catch_a_mistake(mistake: tuple[str, str], message: str,
                                      tmp_path: Path) -> None:
    result = analyze("verify", "--man=no",
                     installed_copy("codecache-serve.service", tmp_path, mistake))
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_the_sandbox_exposure_is_low(unit: str, tmp_path: Path) -> None:
    # systemd's own score, 0 (locked down) to 10; 2.0 or less is "OK".
    result = analyze("security", "--offline=true", "--no-pager", "--threshold=20",
                     installed_copy(unit, tmp_path))
    assert result.returncode == 0, result.stdout[-2000:]
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score and float(score[1]) <= 2.0, result.stdout[-300:]


@pytest.mark.parametrize("unit", UNITS)
def test_units_restart_notify_and_run_sandboxed_as_codecache(unit: str) -> None:
    d = directives(unit)
    assert d["Type"] == "notify" and d["NotifyAccess"] == "main"
    assert d["Restart"] == "on-failure"
    assert re.fullmatch(r"\d+(s|min)", d["WatchdogSec"])
    assert d["User"] == d["Group"] == "codecache"
    assert d["ProtectSystem"] == "strict"
    assert d["ReadWritePaths"] == "/var/lib/codecache"   # the store, nothing else
    assert d["NoNewPrivileges"] == d["PrivateTmp"] == "yes"
    assert d["CapabilityBoundingSet"] == ""
    # 10,000 pilot connections, each a socket and maybe an open blob file.
    assert int(d["LimitNOFILE"]) >= 2 * 10_000
    assert d["ExecStart"].startswith(f"{INSTALLED} --config /etc/codecache/codecache.toml ")


def test_serve_cannot_read_the_secret_key_sync_can() -> None:
    assert directives("codecache-serve.service")["InaccessiblePaths"] == \
        "-/etc/codecache/codecache.key"
    assert "InaccessiblePaths" not in directives("codecache-sync.service")
    assert directives("codecache-sync.service")["ExecStart"].endswith(" sync")
    assert directives("codecache-serve.service")["ExecStart"].endswith(" serve")


def test_sysusers_and_tmpfiles_make_the_user_the_store_and_a_private_key(
        tmp_path: Path) -> None:
    sysusers, tmpfiles = require("systemd-sysusers"), require("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles needs root to give files to another user")
    root = tmp_path / "root"
    for kind, name in (("sysusers.d", "codecache.sysusers"), ("tmpfiles.d", "codecache.tmpfiles")):
        (root / "usr" / "lib" / kind).mkdir(parents=True)
        shutil.copy(REPO / "systemd" / name, root / "usr" / "lib" / kind / "codecache.conf")
    key = root / "etc" / "codecache" / "codecache.key"
    key.parent.mkdir(parents=True)
    key.write_text("a key someone copied in with the wrong mode\n")
    key.chmod(0o644)
    for tool in (sysusers, tmpfiles):
        args = [tool, f"--root={root}", "codecache.conf"]
        if tool == tmpfiles:
            args.insert(2, "--create")
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line.split(":")
             for line in (root / "etc" / "passwd").read_text().splitlines()}
    uid, gid, home, shell = (int(users["codecache"][2]), int(users["codecache"][3]),
                             users["codecache"][5], users["codecache"][6])
    assert uid != 0 and home == "/var/lib/codecache" and shell.endswith("nologin")
    store = root / "var" / "lib" / "codecache"
    assert (store.stat().st_uid, store.stat().st_mode & 0o777) == (uid, 0o750)
    assert (key.stat().st_uid, key.stat().st_gid, key.stat().st_mode & 0o777) == (uid, gid,
                                                                                   0o600)
    config_dir = key.parent
    assert (config_dir.stat().st_uid, config_dir.stat().st_gid,
            config_dir.stat().st_mode & 0o777) == (0, gid, 0o750)
