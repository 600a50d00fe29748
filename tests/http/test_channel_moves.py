"""A channel move is served at once (DESIGN.md §4: reflected within 1 s by a running server;
the tests print the measured figure and assert the contract with a margin for load).

``publish`` writes a new signed index into the store; the server's watcher picks it up and
the channel URL, its ``.sha256`` and its validators follow, with no restart.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness.clients import curl_fetch
from tests.harness.timing import scaled
from tests.http.helpers import Server, http_date, release_bytes, release_info, rfc3339_seconds

CONTRACT = 1.0     # DESIGN.md §4
DEADLINE = 3.0     # asserted (scaled): the contract plus a loaded 2-core machine's margin


def test_publish_is_served_on_the_channel_url_within_3_s(fresh_site: Server,
                                                         workdir: Path) -> None:
    site = fresh_site
    path = f"/{site.package}/latest.tar.gz"
    before = curl_fetch(site.url(path), cwd=workdir)
    assert before.headers["x-codecache-version"] == "1.2.0"

    site.origin.cli("publish", site.package, "1.0.0", "--channel", "latest", check=True)
    published = time.monotonic()
    site.wait_for("the channel URL serves 1.0.0", lambda: site.request(path).headers.get(
        "x-codecache-version") == "1.0.0", DEADLINE)
    took = time.monotonic() - published
    print(f"\nchannel move served {took:.2f} s after publish returned (contract {CONTRACT:g} s)")
    assert took <= scaled(DEADLINE)

    after = curl_fetch(site.url(path), cwd=workdir)
    moved_at = rfc3339_seconds(
        site.origin.status_json()["packages"][site.package]["channels"]["latest"]["moved_at"])
    assert after.status == 200
    assert after.body == release_bytes(site.origin, "1.0.0")
    assert after.headers["etag"] == f'"sha256-{release_info(site.origin, "1.0.0")["sha256"]}"'
    assert after.headers["last-modified"] == http_date(moved_at)
    assert after.headers["last-modified"] != before.headers["last-modified"]
    checksum = curl_fetch(site.url(path + ".sha256"), cwd=workdir)
    assert checksum.body.decode() == \
        f"{release_info(site.origin, '1.0.0')['sha256']}  latest.tar.gz\n"
    # A cache holding the old ETag is told to fetch again, not 304.
    stale = curl_fetch(site.url(path), "-H", f"If-None-Match: {before.headers['etag']}",
                       cwd=workdir)
    assert stale.status == 200
    assert stale.body == after.body


def test_publish_to_a_new_channel_creates_its_url(fresh_site: Server, workdir: Path) -> None:
    site = fresh_site
    path = f"/{site.package}/production.tar.gz"
    assert curl_fetch(site.url(path), cwd=workdir).status == 404
    site.origin.cli("publish", site.package, "1.0.0", "--channel", "production", check=True)
    site.wait_for("the new channel URL exists", lambda: site.request(path).status == 200,
                  DEADLINE)
    got = curl_fetch(site.url(path), cwd=workdir)
    assert got.body == release_bytes(site.origin, "1.0.0")
    assert got.headers["x-codecache-version"] == "1.0.0"
    assert curl_fetch(site.url(f"/{site.package}/latest.tar.gz"), cwd=workdir).headers[
        "x-codecache-version"] == "1.2.0"
