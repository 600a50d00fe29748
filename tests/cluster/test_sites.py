"""The VIP in front of redirecting replicas, a site with its edge, and TLS at the VIP.

One ``scripts/cluster up --site bnl=127.0.0.2/32 --tls-cert ... --tls-ca ...`` for the module
(``site_cluster``): real nginx (the VIP, and the edge's https front rendered by the same
code), replicas, an edge, real curl and wget; a site's client is a client bound to
127.0.0.2 (``curl --interface``, ``wget --bind-address``), a direct client is 127.0.0.1.
DESIGN.md §5 ("redirect", "front tier"): the VIP keeps coalescing a site's burst, never hands
a site's redirect to anyone else nor a direct client's cached answer to a site's client, and
keeps a site's answer at most ~1 s.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
from pathlib import Path

import pytest

from tests.cluster.conftest import SITE_CLIENT
from tests.cluster.helpers import SiteCluster, cluster_cmd, publish, requests_by_route, status_json
from tests.harness.clients import Response, curl, wget
from tests.harness.timing import scaled, wait_until

LATEST = "/pilot/latest.tar.gz"
RELEASE = "/pilot/releases/1.1.0.tar.gz"
SITE = ("--interface", SITE_CLIENT)
TARBALL_ROUTES = ("channel", "release")
_fresh = itertools.count()


def _ca(cluster: SiteCluster) -> tuple[str, str]:
    return ("--cacert", str(cluster.tls.ca))


def _sound(response: Response) -> bool:
    """A complete 200 whose body hashes to its ETag."""
    digest = hashlib.sha256(response.body).hexdigest()
    return response.status == 200 and response.header("etag") == f'"sha256-{digest}"'


def _fresh_key(path: str) -> str:
    """``path`` with a query no other request used: an object of its own in the VIP's cache
    (the replica ignores the query, a redirect drops it)."""
    return f"{path}?t={next(_fresh)}"


# --- TLS at the VIP -------------------------------------------------------------------------


def test_curl_over_https_and_http2_through_the_vip(site_cluster: SiteCluster,
                                                   tmp_path: Path) -> None:
    url = site_cluster.vip_https + RELEASE
    full = curl(url, "--http2", "-w", "%{http_version}", *_ca(site_cluster), cwd=tmp_path)
    assert full.exit_code == 0, full.stderr
    assert _sound(full) and full.stdout == "2"       # HTTP/2, offered by ALPN
    etag = full.header("etag") or ""
    again = curl(url, "--http2", "-H", f"If-None-Match: {etag}", *_ca(site_cluster),
                 cwd=tmp_path)
    assert (again.status, again.body) == (304, b"")
    part = curl(url, "--http2", "-r", "0-99", *_ca(site_cluster), cwd=tmp_path)
    assert part.status == 206 and part.body == full.body[:100]
    assert part.header("content-range") == f"bytes 0-99/{len(full.body)}"
    # The same bytes as over plain http, with the same validators.
    plain = curl(site_cluster.vip + RELEASE, cwd=tmp_path)
    assert plain.body == full.body and plain.header("etag") == etag


def test_wget_over_https_through_the_vip(site_cluster: SiteCluster, tmp_path: Path) -> None:
    url = site_cluster.vip_https + RELEASE
    ca = f"--ca-certificate={site_cluster.tls.ca}"
    first = wget("-S", ca, url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "HTTP/1.1 200 OK" in first.stderr
    saved = (tmp_path / "1.1.0.tar.gz").read_bytes()
    again = wget("-S", "-N", ca, url, cwd=tmp_path)          # If-Modified-Since
    assert again.returncode == 0, again.stderr
    assert "HTTP/1.1 304 Not Modified" in again.stderr
    (tmp_path / "1.1.0.tar.gz").write_bytes(saved[:100])      # an interrupted download
    resumed = wget("-S", "-c", ca, url, cwd=tmp_path)          # Range: bytes=100-
    assert resumed.returncode == 0, resumed.stderr
    assert "HTTP/1.1 206 Partial Content" in resumed.stderr
    assert (tmp_path / "1.1.0.tar.gz").read_bytes() == saved


# --- a site's clients through the VIP -----------------------------------------------------


def _redirected(cluster: SiteCluster, base: str, tmp_path: Path) -> Response:
    """A site client's answer for the latest channel, once the replicas see the edge usable
    (they read its /readyz every second)."""
    args = (*SITE, *_ca(cluster))
    wait_until(lambda: curl(base + _fresh_key(LATEST), *args, cwd=tmp_path).status == 302,
               scaled(15), "the replicas redirect the site's clients", interval=0.2)
    return curl(base + LATEST, *args, cwd=tmp_path)


def test_an_https_site_client_is_sent_to_the_https_edge(site_cluster: SiteCluster,
                                                        tmp_path: Path) -> None:
    edge = site_cluster.edge
    answer = _redirected(site_cluster, site_cluster.vip_https, tmp_path)
    assert answer.header("location") == edge["https"] + LATEST
    assert answer.header("cache-control") == "private, no-store"   # unchanged by nginx
    followed = curl(site_cluster.vip_https + LATEST, "-L", "--http2", "-w",
                    "%{url_effective} %{http_version}", *SITE, *_ca(site_cluster),
                    cwd=tmp_path)
    assert _sound(followed), followed.stderr
    assert followed.stdout == f"{edge['https']}{LATEST} 2"
    fetched = wget("-S", f"--bind-address={SITE_CLIENT}",
                   f"--ca-certificate={site_cluster.tls.ca}", site_cluster.vip_https + LATEST,
                   cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    assert f"Location: {edge['https']}{LATEST}" in fetched.stderr
    assert (tmp_path / "latest.tar.gz").read_bytes() == followed.body
    # Over plain http the site is sent to the plain edge (http preferred).
    plain = _redirected(site_cluster, site_cluster.vip, tmp_path)
    assert plain.header("location") == edge["url"] + LATEST


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("path", [LATEST, RELEASE], ids=["channel", "release"])
def test_no_answer_crosses_between_direct_and_site_clients(site_cluster: SiteCluster,
                                                           tmp_path: Path, scheme: str,
                                                           path: str) -> None:
    base = site_cluster.vip_https if scheme == "https" else site_cluster.vip
    _redirected(site_cluster, base, tmp_path)

    def status(url: str, *args: str) -> int:
        response = curl(url, *args, *_ca(site_cluster), cwd=tmp_path)
        assert response.status in (200, 302), response.stderr
        return response.status

    def holds(order: list[bool], extra: bool = False) -> bool:
        """Requests for a fresh URL, from the site (True) or directly (False), in ``order``:
        each gets its own kind's answer (the site a 302, a direct client a 200), whatever
        the other kind left in the VIP's cache. A crossing would repeat on every try; a
        site answered directly because a loaded replica's probe of the edge timed out just
        then (it counts as not ready) would not: three tries."""
        url = base + _fresh_key(path)
        got = [status(url, *SITE) if site else status(url) for site in order]
        if extra:   # ?site= makes any client the site's, and not a direct client's either
            got += [status(f"{url}&site=bnl"), status(url)]
        return got == [302 if site else 200 for site in order] + ([302, 200] if extra else [])

    # A direct client fills the cache first (a release: cached for a year), then a site's;
    # the other way round; ?site= from the direct address.
    for order, extra in (([False, True, False, True], False),
                         ([True, False, True, False], False), ([False], True)):
        assert any(holds(order, extra) for _ in range(3)), (order, extra)


def _vip_log_lines(cluster: SiteCluster, needle: str) -> int:
    return sum(needle in line for line in cluster.access_log.read_text().splitlines())


def test_a_burst_of_1000_site_pilots_after_a_publish(site_cluster: SiteCluster,
                                                     tmp_path: Path) -> None:
    """1,000 pilots of the site, at once, for a channel just moved to a release the edge
    never held: none fails, all get the new version, the edge fetches its blob once, the
    replicas see a handful of requests (the VIP coalesces the site's 302s)."""
    version = "1.0.0"
    blob = status_json(site_cluster)["packages"]["pilot"]["releases"][version]["sha256"]
    _redirected(site_cluster, site_cluster.vip, tmp_path)
    publish(site_cluster, version, "production")
    url = site_cluster.vip + "/pilot/production.tar.gz"

    wait_until(lambda: curl(url, "-L", *SITE, cwd=tmp_path).header("x-codecache-version")
               == version, scaled(15), "a site client gets the new version", interval=0.2)
    wait_until(lambda: curl(url, *SITE, cwd=tmp_path).status == 302, scaled(15),
               "the site is redirected for the new version", interval=0.2)
    before = {base: requests_by_route(base) for base in site_cluster.replicas}
    pilots = 1000
    outputs = tmp_path / "pilots"
    outputs.mkdir()
    config = tmp_path / "burst.curl"
    config.write_text("".join(f'url = "{url}"\noutput = "{outputs / str(n)}"\n'
                              for n in range(pilots)))
    burst = subprocess.run(
        ["curl", "--parallel", "--parallel-max", "250", "-sS", "-L", *SITE, "--max-time",
         str(scaled(60)), "-w", "%{http_code} %header{x-codecache-version} %header{etag} "
         "%{filename_effective}\n", "-K", str(config)],
        capture_output=True, text=True, timeout=scaled(120), check=False)
    assert burst.returncode == 0, burst.stderr[-2000:]
    answers = [line.split(" ") for line in burst.stdout.splitlines()]
    assert len(answers) == pilots
    assert {(code, got) for code, got, _, _ in answers} == {("200", version)}
    assert all(etag == f'"sha256-{hashlib.sha256(Path(name).read_bytes()).hexdigest()}"'
               for _, _, etag, name in answers)
    assert {etag for _, _, etag, _ in answers} == {f'"sha256-{blob}"'}
    # The edge asked the VIP for the new blob once (its prefetch), however many pilots.
    assert _vip_log_lines(site_cluster, f"GET /blobs/sha256/{blob} ") <= 1
    after = {base: requests_by_route(base) for base in site_cluster.replicas}
    seen = sum(after[b].get(r, 0.0) - before[b].get(r, 0.0)
               for b in site_cluster.replicas for r in TARBALL_ROUTES)
    assert seen <= 10, seen


def test_the_panda_line_from_a_site_address_through_the_vip(site_cluster: SiteCluster,
                                                            tmp_path: Path) -> None:
    """The PanDA wrapper's own line, run on a worker node of the site (its address)."""
    _redirected(site_cluster, site_cluster.vip, tmp_path)
    before = _vip_log_lines(site_cluster, " 302 ")
    line = (f"curl --interface {SITE_CLIENT} --connect-timeout 30 --max-time 180 -sSL "
            f"{site_cluster.vip}{LATEST} | tar -xzf -")
    result = subprocess.run(["sh", "-c", f"set -e; {line}"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=scaled(60), check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pilot" / "bin" / "pilot.sh").exists()
    assert _vip_log_lines(site_cluster, " 302 ") == before + 1   # sent to the edge


def test_status_covers_the_edge_and_its_front(site_cluster: SiteCluster) -> None:
    result = cluster_cmd("status", "--dir", str(site_cluster.dir), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["healthy"]
    for name in ("edge-bnl", "nginx-edge-bnl"):
        assert report["processes"][name]["up"]
        assert report["nodes"][name]["readyz"] == 200


def test_a_site_whose_edge_dies_or_returns_is_answered_accordingly_within_seconds(
        site_cluster: SiteCluster, tmp_path: Path) -> None:
    """A site's answer lives about a second at the VIP: the edge killed, its clients are
    served directly within a check_interval (1 s, plus a probe's 1 s bound) plus that
    second; started again, they are redirected again as soon (waits of 10 s: margin for a
    loaded machine, where a cached answer kept for long would still fail them). (Last in
    the module: it stops the edge.)"""
    _redirected(site_cluster, site_cluster.vip, tmp_path)
    url = site_cluster.vip + LATEST
    killed = cluster_cmd("kill", "--dir", str(site_cluster.dir), "--node", "edge-bnl")
    assert killed.returncode == 0, killed.stderr
    wait_until(lambda: _sound(curl(url, *SITE, cwd=tmp_path)), scaled(10),
               "the site's clients are served directly")
    started = cluster_cmd("start", "--dir", str(site_cluster.dir), "--node", "edge-bnl")
    assert started.returncode == 0, started.stderr
    wait_until(lambda: curl(url, *SITE, cwd=tmp_path).status == 302, scaled(10),
               "the site's clients are redirected again")
