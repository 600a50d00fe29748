"""Packaging: ``python -m build`` makes a wheel and an sdist; the wheel, installed into a
fresh virtualenv, is a working ``codecache`` (version, keygen, sync from a real svnserve,
verify).

Offline on purpose: the build runs ``--no-isolation`` with the backend already in the test
venv (pyproject's test extras), and the fresh venv installs with ``--no-index`` from
``.venv/wheelhouse``, the runtime dependencies ``scripts/bootstrap`` downloaded. That also
proves the wheel declares every dependency it needs: the fresh venv holds nothing else.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import codecache
from tests.conftest import SvnRepo, cli_env, tag_sample_releases, write_config

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / ".venv" / "wheelhouse"
# What an sdist is built from: the files a clean checkout holds (no .venv, no build dirs).
SOURCES = ("pyproject.toml", "README.md", "MANIFEST.in", "codecache", "docs", "nginx",
           "systemd", "scripts")


def run(*argv: str | Path, cwd: Path, timeout: float = 240) -> str:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=cli_env(), check=False)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout}\n" \
                                   f"{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the source tree built with ``python -m build`` into ``dist/``."""
    pytest.importorskip("build")
    tree = tmp_path_factory.mktemp("source") / "codecache"
    tree.mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            shutil.copy2(source, tree / name)
    out = tree / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ".", cwd=tree)
    return out


def test_build_gives_a_wheel_and_an_sdist_of_the_one_version(dist: Path) -> None:
    version = codecache.__version__
    wheel = dist / f"codecache-{version}-py3-none-any.whl"
    sdist = dist / f"codecache-{version}.tar.gz"
    assert sorted(p.name for p in dist.iterdir()) == sorted([wheel.name, sdist.name])
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"codecache-{version}.dist-info/entry_points.txt").decode()
        metadata = zf.read(f"codecache-{version}.dist-info/METADATA").decode()
    assert {"codecache/cli/main.py", "codecache/cli/parser.py", "codecache/web/server.py",
            "codecache/telemetry/notify.py"} <= names
    assert not any(n.startswith("tests/") for n in names)
    assert "codecache = codecache.cli.main:main" in entry_points
    assert f"Version: {version}\n" in metadata
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md", "codecache/__init__.py", "docs/admin.md",
            "nginx/codecache.conf", "systemd/codecache-serve.service",
            "systemd/codecache-sync.service", "scripts/fetch-pilot"} <= members


def test_the_wheel_in_a_fresh_venv_is_a_working_codecache(
        dist: Path, tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> None:
    if not WHEELHOUSE.is_dir():
        pytest.fail(f"{WHEELHOUSE} is missing: scripts/bootstrap downloads it")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    (wheel,) = dist.glob("*.whl")
    run(venv / "bin" / "pip", "install", "-q", "--no-index", "--find-links", WHEELHOUSE,
        wheel, cwd=tmp_path)
    installed = venv / "bin" / "codecache"
    assert run(installed, "--version", cwd=tmp_path).strip() == \
        f"codecache {codecache.__version__}"
    # It is the installed copy that runs, not this checkout.
    where = run(venv / "bin" / "python", "-c", "import codecache; print(codecache.__file__)",
                cwd=tmp_path)
    assert where.startswith(str(venv)), where

    # keygen, a real sync from svnserve, verify: all with the installed command.
    repo, name, url = svn_package
    tag_sample_releases(repo, name)
    home = tmp_path / "origin"
    (home / "keys").mkdir(parents=True)
    run(installed, "keygen", "--secret-key", "keys/codecache.key", "--public-key",
        "keys/codecache.pub", cwd=home)
    assert (home / "keys" / "codecache.key").stat().st_mode & 0o777 == 0o600
    config = write_config(home, name, url)
    run(installed, "--config", config, "sync", "--once", cwd=home)
    run(installed, "--config", config, "publish", name, "1.0.0", "--channel", "production",
        cwd=home)
    payload = run(installed, "--config", config, "status", "--json", cwd=home)
    assert '"production"' in payload
    sha256 = json.loads(payload)["packages"][name]["releases"]["1.0.0"]["sha256"]
    release = home / "pilot.tar.gz"
    shutil.copy(home / "store" / "blobs" / "sha256" / sha256, release)
    shutil.copy(home / "store" / "signatures" / name / "1.0.0.minisig",
                home / "pilot.tar.gz.minisig")
    verify = [str(installed), "verify", str(release), "--key",
              str(home / "keys" / "codecache.pub")]
    ok = run(*verify, cwd=home)
    assert ok.startswith(f"OK {release}: package={name} version=1.0.0 sha256={sha256} ")
    # A flipped byte: exit 1.
    data = bytearray(release.read_bytes())
    data[len(data) // 2] ^= 1
    release.write_bytes(bytes(data))
    result = subprocess.run(verify, cwd=home, capture_output=True, text=True, env=cli_env(),
                            check=False, timeout=60)
    assert result.returncode == 1, result.stderr
