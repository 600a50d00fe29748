"""Pilots behind a real site proxy: squid between wget/curl and ``codecache serve``.

DESIGN.md §1: pilots often fetch through a squid. These tests run the Debian squid on a
loopback port and read its access log to see what it did (MISS, HIT, REFRESH_UNMODIFIED).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Origin, copy_origin
from tests.harness.clients import curl_fetch, wget
from tests.http.helpers import Server, release_bytes, running
from tests.squid import Squid, running_squid

# channel_max_age of the servers here: short, so revalidation happens within a test, but
# long enough that a second request right after the first is a cache hit on a loaded machine.
MAX_AGE = 3


@pytest.fixture(scope="module")
def squid() -> Iterator[Squid]:
    with running_squid() as proxy:
        yield proxy


@pytest.fixture
def proxied_site(template_origin: Origin, tmp_path: Path) -> Iterator[Server]:
    env = {"CODECACHE_SERVER_CHANNEL_MAX_AGE": str(MAX_AGE)}
    with running(copy_origin(template_origin, tmp_path / "origin"), env=env) as site:
        yield site


def _via(squid: Squid, url: str, cwd: Path, *args: str) -> bytes:
    # --noproxy "": a NO_PROXY=127.0.0.1 in the environment must not bypass the squid.
    fetched = curl_fetch(url, "-x", squid.proxy, "--noproxy", "", *args, cwd=cwd)
    assert fetched.status in (200, 206), fetched
    return fetched.body


def test_squid_caches_the_channel_and_revalidates_it_with_a_304(
        squid: Squid, proxied_site: Server, workdir: Path) -> None:
    site = proxied_site
    url = site.url(f"/{site.package}/latest.tar.gz")
    expected = release_bytes(site.origin, "1.2.0")
    assert _via(squid, url, workdir) == expected
    assert _via(squid, url, workdir) == expected
    first, second = squid.wait_logged(url, 2)
    assert first.startswith("TCP_MISS/200")
    assert "HIT/200" in second  # from squid's cache, within max-age
    time.sleep(MAX_AGE + 1.2)
    assert _via(squid, url, workdir) == expected
    assert squid.wait_logged(url, 3)[2].startswith("TCP_REFRESH_UNMODIFIED")
    # The revalidation cost no body. The server logs a request after answering it, so
    # squid's own log line may come first: wait for the server's.
    # (The access line is text by default, JSON with --log-format json.)
    site.wait_for("the server logged the 304",
                  lambda: any(mark in site.log_text() for mark in ('" 304 ', '"status":304')),
                  10)


def test_rollback_reaches_wget_N_behind_squid_after_max_age(
        squid: Squid, proxied_site: Server, workdir: Path) -> None:
    site, origin = proxied_site, proxied_site.origin
    url = site.url(f"/{site.package}/latest.tar.gz")
    proxy_args = ("-e", "use_proxy=yes", "-e", f"http_proxy={squid.proxy}", "-e", "no_proxy=")
    assert wget("-N", *proxy_args, url, cwd=workdir).returncode == 0
    assert (workdir / "latest.tar.gz").read_bytes() == release_bytes(origin, "1.2.0")

    origin.cli("publish", site.package, "1.0.0", "--channel", "latest", check=True)
    site.wait_for("the rollback is served",
                  lambda: site.request(f"/{site.package}/latest.tar.gz").headers.get(
                      "x-codecache-version") == "1.0.0", 2.0)
    time.sleep(MAX_AGE + 1.2)  # squid's copy is stale now
    result = wget("-N", *proxy_args, url, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "latest.tar.gz").read_bytes() == release_bytes(origin, "1.0.0")


def test_release_urls_are_served_from_squid_and_ranges_work(
        squid: Squid, proxied_site: Server, workdir: Path) -> None:
    site = proxied_site
    url = site.url(f"/{site.package}/releases/1.0.0.tar.gz")
    expected = release_bytes(site.origin, "1.0.0")
    assert _via(squid, url, workdir) == expected
    assert _via(squid, url, workdir, "-r", "0-99") == expected[:100]
    assert _via(squid, url, workdir, "-r", "100-") == expected[100:]
    results = squid.wait_logged(url, 3)
    assert results[0].startswith("TCP_MISS/200")
    assert all("HIT" in r for r in results[1:]), results
