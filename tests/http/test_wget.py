"""Pilots' classic client: real ``wget`` against a real ``codecache serve``.

DESIGN.md §1 and §4: ``wget -N`` must transfer nothing when the channel did not move, and
must fetch again after a rollback (the channel's Last-Modified is when it moved, not the
release date) or a new release; ``wget -c`` resumes; what wget saves verifies with the stock
``sha256sum -c`` and ``minisign -V``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import SvnRepo, new_origin, require
from tests.harness.clients import wget
from tests.http.helpers import (
    Server,
    http_date,
    release_bytes,
    release_info,
    rfc3339_seconds,
    running,
)

FILE = "latest.tar.gz"


def _channel_url(site: Server) -> str:
    return site.url(f"/{site.package}/{FILE}")


def _wget_N(site: Server, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = wget("-N", "--server-response", _channel_url(site), cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def _wait_for_version(site: Server, version: str) -> None:
    site.wait_for(f"the channel URL serves {version}", lambda: site.request(
        f"/{site.package}/{FILE}", "HEAD").headers.get("x-codecache-version") == version, 2.0)


def test_wget_downloads_the_channel_tarball(site: Server, workdir: Path) -> None:
    result = wget("-q", _channel_url(site), cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / FILE).read_bytes() == release_bytes(site.origin, "1.2.0")
    assert [p.name for p in workdir.iterdir()] == [FILE]


def test_wget_N_second_time_transfers_nothing(site: Server, workdir: Path) -> None:
    first = _wget_N(site, workdir)
    assert "200 OK" in first.stderr
    saved = workdir / FILE
    before = saved.stat()
    body = saved.read_bytes()
    moved_at = rfc3339_seconds(
        site.origin.status_json()["packages"][site.package]["channels"]["latest"]["moved_at"])
    # wget dates the file by Last-Modified: the channel's move, not the tag's commit.
    assert int(before.st_mtime) == moved_at
    assert moved_at != rfc3339_seconds(release_info(site.origin, "1.2.0")["date"])

    second = _wget_N(site, workdir)
    assert "304 Not Modified" in second.stderr
    assert "not modified on server. Omitting download." in second.stderr
    assert "saved" not in second.stderr
    after = saved.stat()
    assert after.st_mtime_ns == before.st_mtime_ns
    assert after.st_ino == before.st_ino
    assert saved.read_bytes() == body


def test_wget_N_fetches_again_after_rollback(fresh_site: Server, workdir: Path) -> None:
    site, saved = fresh_site, workdir / FILE
    _wget_N(site, workdir)
    assert saved.read_bytes() == release_bytes(site.origin, "1.2.0")
    old_mtime = saved.stat().st_mtime

    site.origin.cli("publish", site.package, "1.0.0", "--channel", "latest", check=True)
    _wait_for_version(site, "1.0.0")
    result = _wget_N(site, workdir)
    assert "200 OK" in result.stderr
    assert f"'{FILE}' saved" in result.stderr
    assert saved.read_bytes() == release_bytes(site.origin, "1.0.0")
    moved_at = rfc3339_seconds(
        site.origin.status_json()["packages"][site.package]["channels"]["latest"]["moved_at"])
    assert saved.stat().st_mtime == moved_at > old_mtime
    assert f"Last-Modified: {http_date(moved_at)}" in result.stderr

    assert "304 Not Modified" in _wget_N(site, workdir).stderr


def test_wget_N_fetches_a_newly_synced_release(svn_server: SvnRepo, tmp_path: Path,
                                              workdir: Path) -> None:
    # Its own svn package: tagging 1.3.0 must not leak into the shared template's package.
    origin = new_origin(svn_server, tmp_path / "origin")
    with running(origin) as site:
        _wget_N(site, workdir)
        assert (workdir / FILE).read_bytes() == release_bytes(origin, "1.2.0")

        svn_server.change(origin.package, "lib/pilot/main.py", "print('pilot 1.3')\n")
        svn_server.tag(origin.package, "1.3.0")
        origin.cli("sync", "--once", check=True)
        _wait_for_version(site, "1.3.0")
        result = _wget_N(site, workdir)
        assert "200 OK" in result.stderr
        assert "X-Codecache-Version: 1.3.0" in result.stderr
        new = (workdir / FILE).read_bytes()
        assert new == release_bytes(origin, "1.3.0")
        assert new != release_bytes(origin, "1.2.0")


def test_wget_c_resumes_a_partial_download(site: Server, workdir: Path) -> None:
    full = release_bytes(site.origin, "1.2.0")
    half = len(full) // 2
    (workdir / FILE).write_bytes(full[:half])

    result = wget("-c", "--server-response", _channel_url(site), cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "206 Partial Content" in result.stderr
    assert f"Content-Range: bytes {half}-{len(full) - 1}/{len(full)}" in result.stderr
    assert (workdir / FILE).read_bytes() == full


def test_wget_download_passes_sha256sum_and_minisign(site: Server, workdir: Path) -> None:
    minisign, sha256sum = require("minisign"), require("sha256sum")
    for suffix in ("", ".sha256", ".minisig"):
        result = wget("-q", _channel_url(site) + suffix, cwd=workdir)
        assert result.returncode == 0, result.stderr
    line = (workdir / f"{FILE}.sha256").read_text()
    assert line == f"{release_info(site.origin, '1.2.0')['sha256']}  {FILE}\n"

    check = subprocess.run([sha256sum, "-c", f"{FILE}.sha256"], cwd=workdir,
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout == f"{FILE}: OK\n"
    verify = subprocess.run([minisign, "-Vm", FILE, "-p", str(site.origin.public_key)],
                            cwd=workdir, capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "Signature and comment signature verified" in verify.stdout
    assert f"package={site.package} version=1.2.0 " in verify.stdout

    # The same tools reject one flipped byte, so the checks above can fail.
    data = bytearray((workdir / FILE).read_bytes())
    data[100] ^= 0x01
    (workdir / FILE).write_bytes(bytes(data))
    assert subprocess.run([sha256sum, "--quiet", "-c", f"{FILE}.sha256"], cwd=workdir,
                          capture_output=True, check=False).returncode == 1
    assert subprocess.run([minisign, "-Vm", FILE, "-p", str(site.origin.public_key)],
                          cwd=workdir, capture_output=True, check=False).returncode != 0
