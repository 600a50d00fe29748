"""/metrics counts requests by route and status and exposes the served index serial."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.harness.clients import curl_fetch
from tests.http.helpers import Server

_SAMPLE = re.compile(r'^codecache_http_requests_total\{route="([^"]*)",status="([0-9]+)"\} '
                     r"([0-9.e+]+)$", re.MULTILINE)


def _requests(site: Server, workdir: Path) -> dict[tuple[str, str], float]:
    got = curl_fetch(site.url("/metrics"), cwd=workdir)
    assert got.status == 200
    assert got.headers["content-type"].startswith("text/plain")
    return {(route, status): float(n) for route, status, n in _SAMPLE.findall(got.body.decode())}


def _delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float],
           key: tuple[str, str]) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_requests_total_counts_requests_by_route_and_status(site: Server,
                                                            workdir: Path) -> None:
    pkg = site.package
    before = _requests(site, workdir)
    for _ in range(3):
        assert curl_fetch(site.url(f"/{pkg}/latest.tar.gz"), cwd=workdir).status == 200
    etag = curl_fetch(site.url(f"/{pkg}/releases/1.0.0.tar.gz"), cwd=workdir).headers["etag"]
    for _ in range(2):
        got = curl_fetch(site.url(f"/{pkg}/releases/1.0.0.tar.gz"), "-H",
                         f"If-None-Match: {etag}", cwd=workdir)
        assert got.status == 304
    assert curl_fetch(site.url(f"/{pkg}/releases/1.0.0.tar.gz"), "-r", "0-9",
                      cwd=workdir).status == 206
    for _ in range(4):
        assert curl_fetch(site.url(f"/{pkg}/releases/9.9.tar.gz"), cwd=workdir).status == 404
    assert curl_fetch(site.url("/index.json"), cwd=workdir).status == 200
    after = _requests(site, workdir)

    assert _delta(before, after, ("channel", "200")) == 3
    assert _delta(before, after, ("release", "200")) == 1
    assert _delta(before, after, ("release", "304")) == 2
    assert _delta(before, after, ("release", "206")) == 1
    assert _delta(before, after, ("index", "200")) == 1
    assert sum(_delta(before, after, key) for key in after if key[1] == "404") == 4
    assert _delta(before, after, ("metrics", "200")) == 1  # the first scrape itself


def test_index_serial_gauge_equals_the_index_serial(site: Server, workdir: Path) -> None:
    metrics = curl_fetch(site.url("/metrics"), cwd=workdir).body.decode()
    match = re.search(r"^codecache_index_serial ([0-9.e+]+)$", metrics, re.MULTILINE)
    assert match is not None
    serial = site.origin.status_json()["serial"]
    assert float(match[1]) == serial
    assert json.loads(curl_fetch(site.url("/index.json"), cwd=workdir).body)["signed"][
        "serial"] == serial
    assert json.loads(curl_fetch(site.url("/readyz"), cwd=workdir).body)["serial"] == serial


def test_index_serial_gauge_follows_a_publish(fresh_site: Server, workdir: Path) -> None:
    site = fresh_site
    old = site.origin.status_json()["serial"]
    site.origin.cli("publish", site.package, "1.0.0", "--channel", "latest", check=True)
    new = site.origin.status_json()["serial"]
    assert new > old

    def gauge() -> float:
        text = site.request("/metrics").body.decode()
        match = re.search(r"^codecache_index_serial ([0-9.e+]+)$", text, re.MULTILINE)
        return float(match[1]) if match else -1.0

    site.wait_for("codecache_index_serial follows the publish", lambda: gauge() == new, 1.5)


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match is not None, f"{name} missing"
    return float(match[1])


def test_bytes_sent_and_304_ratio(fresh_site: Server, workdir: Path) -> None:
    site = fresh_site
    url = site.url(f"/{site.package}/releases/1.2.0.tar.gz")
    full = curl_fetch(url, cwd=workdir)
    assert full.status == 200
    for _ in range(3):
        assert curl_fetch(url, "-H", f"If-None-Match: {full.headers['etag']}",
                          cwd=workdir).status == 304
    text = curl_fetch(site.url("/metrics"), cwd=workdir).body.decode()
    assert _sample(text, 'codecache_http_response_bytes_total{route="release"}') == len(
        full.body)
    assert _sample(text, "codecache_http_not_modified_ratio") == 0.75
    assert _sample(text, "codecache_http_in_flight_requests") == 1  # this scrape
