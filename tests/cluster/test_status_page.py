"""The status page at ``/`` in a real headless Chromium at a phone's size (390x844): it
renders, shows the channels' current versions, the node's role, upstream and lag, does not
scroll sideways, and a screenshot is kept as an artifact (``tests/artifacts/``, ignored by
git; each test prints the path it wrote)."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest

from codecache.core.index import Channel, Index, Package, Release
from codecache.core.pin import svn_pin
from codecache.web.statuspage import render_status_page
from tests.cluster.helpers import REPO, Cluster, get, status_json
from tests.conftest import require

ARTIFACTS = REPO / "tests" / "artifacts"
WIDTH, HEIGHT = 390, 844


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium as the issue describes it (a private profile: runs may overlap)."""
    command = [require("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
               "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               f"--window-size={WIDTH},{HEIGHT}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])   # the IHDR chunk comes first
    return width, height


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    return tmp_path / "chromium-profile"


@pytest.mark.parametrize("node", ["replica", "origin", "vip"])
def test_status_page_renders_the_current_channel_versions_in_chromium(
        cluster: Cluster, profile: Path, node: str) -> None:
    base = {"replica": cluster.replicas[0], "origin": cluster.origin, "vip": cluster.vip}[node]
    channels = status_json(cluster)["packages"]["pilot"]["channels"]
    result = chromium("--dump-dom", f"{base}/", profile=profile)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "<title>codecache" in dom
    for channel, pointer in channels.items():
        row = (f'<b>{channel}</b></a></td><td class="channel-version">{pointer["version"]}'
               "</td>")
        assert row in dom, (channel, dom[:3000])
    role = "origin" if node == "origin" else "replica"   # the VIP answers from a replica
    assert f"role</th><td><b>{role}</b>" in dom
    if role == "replica":
        assert f"upstream</th><td><code>{cluster.origin}</code>" in dom
        assert re.search(r"lag</th><td>\d+s ago", dom), dom[:3000]
    assert re.search(r"index serial</th><td><b>\d+</b>", dom)


def test_status_page_fits_a_phone_and_a_screenshot_is_kept(cluster: Cluster,
                                                           profile: Path,
                                                           tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"status-page-replica-{WIDTH}x{HEIGHT}.png"
    shot.unlink(missing_ok=True)
    result = chromium(f"--screenshot={shot}", f"{cluster.replicas[0]}/", profile=profile)
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"\nstatus page screenshot: {shot}")
    assert png_size(shot) == (WIDTH, HEIGHT)
    assert shot.stat().st_size > 5000          # something was drawn, not a blank page

    # Layout: the page itself must not scroll sideways at a phone's width (wide tables
    # scroll inside their own box). The served page has no scripts, so a copy of it with
    # one measuring script added is loaded from a file.
    status, _, body = get(cluster.replicas[0], "/")
    assert status == 200
    page = body.decode()
    assert "<script" not in page
    probe = ("<script>document.body.setAttribute('data-overflow', String("
             "document.documentElement.scrollWidth - window.innerWidth))</script>")
    copy = tmp_path / "status.html"
    copy.write_text(page.replace("</body>", probe + "</body>"))
    result = chromium("--dump-dom", copy.as_uri(), profile=profile)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'data-overflow="(-?\d+)"', result.stdout)
    assert match, result.stdout[:2000]
    assert int(match[1]) <= 0, f"the page is {match[1]} px wider than a {WIDTH} px screen"


def test_a_status_page_of_5000_releases_stays_small_and_fits_a_phone(profile: Path,
                                                                     tmp_path: Path) -> None:
    """The renderer's page for a package with 5,000 releases, in the same browser."""
    releases = {f"1.0.{n}": Release(f"1.0.{n}", f"{n:064x}", 1000 + n, "0" * 64,
                                    svn_pin(f"svn://svn.example.org/repo/pilot/tags/1.0.{n}", n),
                                    "rm", 1_700_000_000 + n, "")
                for n in range(5000)}
    channels = {"latest": Channel("1.0.4999", 1_700_010_000),
                "production": Channel("1.0.12", 1_700_010_000)}
    index = Index(serial=1_700_010_000, generated=1_700_010_000, expires=1_700_610_000,
                  packages={"pilot": Package(releases, channels)})
    readiness = {"status": "ok", "role": "replica", "seconds_since_confirmed": 1,
                 "replica": {"upstream": "http://origin.example.org:8080", "serial": 1,
                             "last_pull": 1_700_010_000, "last_error": None}}
    page = render_status_page(index, readiness, {}, now=1_700_010_001)
    assert len(page) < 20_000
    probe = ("<script>document.body.setAttribute('data-overflow', String("
             "document.documentElement.scrollWidth - window.innerWidth))</script>")
    copy = tmp_path / "status-5000.html"
    copy.write_text(page.replace("</body>", probe + "</body>"))
    result = chromium("--dump-dom", copy.as_uri(), profile=profile)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '<td class="channel-version">1.0.12</td>' in result.stdout
    assert "5000 releases; the newest 21 shown" in result.stdout
    match = re.search(r'data-overflow="(-?\d+)"', result.stdout)
    assert match and int(match[1]) <= 0, result.stdout[:2000]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"status-page-5000-releases-{WIDTH}x{HEIGHT}.png"
    (tmp_path / "plain.html").write_text(page)
    result = chromium(f"--screenshot={shot}", (tmp_path / "plain.html").as_uri(),
                      profile=profile)
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"\nstatus page screenshot (5,000 releases): {shot}")
    assert png_size(shot) == (WIDTH, HEIGHT)
