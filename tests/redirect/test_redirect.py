"""The redirector with real clients: a site's pilot is sent to its edge, everyone else served.

DESIGN.md §4 (the 302) and §5 (redirect): by network (loopback addresses, IPv6 too) or
``?site=``; X-Forwarded-For and X-Forwarded-Proto believed from the trusted proxy only;
a target is named only while usable (an edge, ready, confirmed within 30 s, not behind the
history served here); wget, ``curl -L`` and the PanDA wrapper's own line follow it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest

from codecache.core.names import version_key
from tests.harness.binaries import require
from tests.harness.clients import curl, wget
from tests.harness.timing import scaled, wait_until
from tests.http.helpers import release_bytes
from tests.redirect.conftest import CLIENT, PROXY, UNTRUSTED, World

LATEST = "/{package}/latest.tar.gz"
RELEASE = "/{package}/releases/1.2.0.tar.gz"


def _path(world: World, template: str) -> str:
    return template.format(package=world.package)


@pytest.fixture(scope="module", autouse=True)
def probed(world: World) -> None:
    """Both workers of the redirector have found the edges that follow it ready (each
    worker logs it once)."""
    lines = [f"redirect target {edge.base} is ready" for edge in (world.good, world.mortal)]
    world.redirector.wait_for("both workers found the edges ready", lambda: all(
        world.redirector.log_text().count(line) >= 2 for line in lines), 15)


def _from(site: str) -> tuple[str, ...]:
    return ("--interface", CLIENT[site])


def test_a_site_client_gets_a_302_to_its_edge(world: World, workdir: Path) -> None:
    path = _path(world, LATEST)
    got = curl(world.redirector.url(path), *_from("near"), cwd=workdir)
    assert got.status == 302, got
    location = world.good.base + path
    assert got.header("location") == location
    assert got.header("cache-control") == "private, no-store"
    assert got.header("x-codecache-version") == "1.2.0"   # what the redirector serves
    assert json.loads(got.body) == {"redirect": {"site": "near", "target": world.good.base,
                                                 "location": location}}


def test_curl_follows_the_redirect_and_gets_the_edges_bytes(world: World,
                                                            workdir: Path) -> None:
    for template, version in ((LATEST, "1.2.0"), (RELEASE, "1.2.0")):
        got = curl(world.redirector.url(_path(world, template)), "-L", *_from("near"),
                   cwd=workdir)
        assert got.status == 200, got
        assert got.body == release_bytes(world.redirector.origin, version)
        assert got.header("x-codecache-version") == version


def test_wget_follows_the_redirect(world: World, workdir: Path) -> None:
    url = world.redirector.url(_path(world, LATEST))
    result = wget("-S", f"--bind-address={CLIENT['near']}", url, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "HTTP/1.1 302 Found" in result.stderr
    assert f"Location: {world.good.base}{_path(world, LATEST)}" in result.stderr
    saved = workdir / "latest.tar.gz"
    assert saved.read_bytes() == release_bytes(world.redirector.origin, "1.2.0")


def test_checksums_and_signatures_are_redirected_too(world: World, workdir: Path) -> None:
    for suffix in (".sha256", ".minisig"):
        for template in (LATEST, RELEASE):
            path = _path(world, template) + suffix
            got = curl(world.redirector.url(path), *_from("near"), cwd=workdir)
            assert (got.status, got.header("location")) == (302, world.good.base + path)
    keyid = _keyid(world, workdir)
    path = _path(world, RELEASE) + f".{keyid}.minisig"
    got = curl(world.redirector.url(path), *_from("near"), cwd=workdir)
    assert (got.status, got.header("location")) == (302, world.good.base + path)
    followed = curl(world.redirector.url(path), "-L", *_from("near"), cwd=workdir)
    assert followed.status == 200 and b"untrusted comment" in followed.body


def _keyid(world: World, workdir: Path) -> str:
    """The signing key's id as minisign prints it (from the public key file)."""
    raw = base64.b64decode(world.redirector.origin.public_key.read_text().splitlines()[1])
    return f"{struct.unpack('<Q', raw[2:10])[0]:X}"


def test_head_gets_the_302_headers_without_a_body(world: World, workdir: Path) -> None:
    got = curl(world.redirector.url(_path(world, LATEST)), "-I", *_from("near"), cwd=workdir)
    assert got.status == 302
    assert got.header("location") == world.good.base + _path(world, LATEST)
    assert got.header("cache-control") == "private, no-store"
    # With -I curl writes the header block as its output: nothing may follow it.
    assert got.body.startswith(b"HTTP/1.1 302 ") and got.body.count(b"\r\n\r\n") == 1
    assert got.body.endswith(b"\r\n\r\n")
    assert int(got.header("content-length") or 0) > 0   # the GET's body, not sent


def test_other_urls_of_a_site_client_are_served_here(world: World, workdir: Path) -> None:
    sha256 = hashlib.sha256(release_bytes(world.redirector.origin, "1.2.0")).hexdigest()
    for path in (f"/blobs/sha256/{sha256}", "/index.json", "/history.json", "/readyz",
                 "/healthz", "/metrics", "/"):
        got = curl(world.redirector.url(path), *_from("near"), cwd=workdir)
        assert got.status == 200, (path, got.status)


def test_a_direct_client_is_served_here(world: World, workdir: Path) -> None:
    path = _path(world, LATEST)
    # Twice on one connection: the fast path's answer, then the cached one.
    got = curl(world.redirector.url(path), "-o", "/dev/null", "--next", "-sS",
               world.redirector.url(path), cwd=workdir)
    assert got.status == 200
    assert got.body == release_bytes(world.redirector.origin, "1.2.0")


def test_a_site_client_is_never_answered_by_the_fast_path(world: World,
                                                          workdir: Path) -> None:
    """Plain GETs on one kept-alive connection: each one a 302 (the fast path answers a
    plain GET from memory before the handler sees it; it must leave these to it)."""
    got = _curl_many(world.redirector.url(_path(world, RELEASE)), 3, *_from("near"))
    assert [line.split()[0] for line in got] == ["302"] * 3, got


def test_site_parameter_redirects_any_client_and_the_query_is_dropped(
        world: World, workdir: Path) -> None:
    path = _path(world, LATEST)
    got = curl(world.redirector.url(path) + "?site=near&x=1", cwd=workdir)
    assert (got.status, got.header("location")) == (302, world.good.base + path)
    # An unknown site: served directly, even to a client inside a site's network.
    for args in ((), _from("near")):
        unknown = curl(world.redirector.url(path) + "?site=nowhere", *args, cwd=workdir)
        assert unknown.status == 200


def test_the_longest_matching_network_wins(world: World, workdir: Path) -> None:
    path = _path(world, LATEST)
    narrow = curl(world.redirector.url(path), *_from("narrow"), cwd=workdir)
    assert (narrow.status, narrow.header("location")) == (302, world.good.base + path)
    wide = curl(world.redirector.url(path), *_from("wide"), cwd=workdir)   # a dead target
    assert wide.status == 200


def test_an_ipv6_client_in_a_site_network_is_redirected(world: World, workdir: Path) -> None:
    if not world.ipv6:
        pytest.skip("no IPv6 loopback on this machine")
    url = f"http://[::1]:{world.redirector.port}{_path(world, LATEST)}"
    got = curl(url, "-g", cwd=workdir)
    assert (got.status, got.header("location")) == (302, world.good.base +
                                                     _path(world, LATEST))


def test_forwarded_for_is_believed_from_the_trusted_proxy_only(world: World,
                                                               workdir: Path) -> None:
    url = world.redirector.url(_path(world, LATEST))
    forwarded = ("-H", f"X-Forwarded-For: 198.51.100.7, {CLIENT['near']}")
    proxied = curl(url, "--interface", PROXY, *forwarded, cwd=workdir)
    assert proxied.status == 302
    assert curl(url, "--interface", UNTRUSTED, *forwarded, cwd=workdir).status == 200
    # Only the last hop (the one the proxy added) counts: a client cannot claim a site.
    claimed = ("-H", f"X-Forwarded-For: {CLIENT['near']}, 198.51.100.7")
    assert curl(url, "--interface", PROXY, *claimed, cwd=workdir).status == 200
    # A site client behind an untrusted one is the untrusted one; a site client's own
    # X-Forwarded-For does not take it out of its site.
    assert curl(url, *_from("near"), "-H", "X-Forwarded-For: 198.51.100.7",
                cwd=workdir).status == 302


def test_an_https_client_goes_only_to_an_https_target(world: World, workdir: Path) -> None:
    """The trusted proxy says the client spoke https: the site's only target is http, so
    the client is served directly (never sent from https to plain http)."""
    url = world.redirector.url(_path(world, LATEST))
    forwarded = ("-H", f"X-Forwarded-For: {CLIENT['near']}")
    https = curl(url, "--interface", PROXY, *forwarded, "-H", "X-Forwarded-Proto: https",
                 cwd=workdir)
    assert https.status == 200
    http = curl(url, "--interface", PROXY, *forwarded, "-H", "X-Forwarded-Proto: http",
                cwd=workdir)
    assert http.status == 302
    # From anyone else the header means nothing.
    assert curl(url, *_from("near"), "-H", "X-Forwarded-Proto: https",
                cwd=workdir).status == 302


def test_each_unusable_edge_fails_one_rule(world: World) -> None:
    """What the targets below say of themselves: each ready, each missing one thing."""
    served = json.loads(world.redirector.request("/readyz").body)["history_length"]
    facts = {name: (server.request("/readyz").status,
                    json.loads(server.request("/readyz").body))
             for name, server in (("good", world.good), ("behind", world.behind),
                                  ("stale", world.stale), ("replica", world.replica))}
    assert all(status == 200 for status, _ in facts.values()), facts
    assert [facts[n][1]["role"] for n in ("good", "behind", "stale", "replica")] == \
        ["edge", "edge", "edge", "replica"]
    assert facts["good"][1]["history_length"] == served
    assert facts["behind"][1]["history_length"] == served - 1
    assert facts["behind"][1]["seconds_since_confirmed"] <= 10   # fresh: far from 30 s
    assert facts["stale"][1]["history_length"] == served
    assert facts["stale"][1]["seconds_since_confirmed"] > 30
    assert world.unready.request("/readyz").status == 503
    assert world.slow.probes > 0   # asked, and it would have said it is a perfect edge
    # The redirector's /readyz says the same of them, as one of its workers sees them.
    view = json.loads(world.redirector.request("/readyz").body)["redirect"]
    assert view["near"] == {world.good.base: "usable"}
    assert view["behind"] == {world.behind.base: f"behind: history_length {served - 1} "
                                                 f"< {served}"}
    assert view["stale"][world.stale.base].startswith("not ready: index confirmed ")
    assert view["replica"][world.replica.base] == "not ready: role is 'replica', not 'edge'"
    assert view["unready"][world.unready.base].startswith("not ready: HTTP 503")
    assert view["slow"][world.slow.base].startswith("not ready: no complete readyz within")
    assert view["dead"][world.dead].startswith("not ready: cannot connect")


@pytest.mark.parametrize("site", ["dead", "replica", "behind", "stale", "unready", "slow"])
def test_an_unusable_target_is_never_named(world: World, workdir: Path, site: str) -> None:
    """Dead (nothing listens), not an edge (a ready replica), behind (an edge one history
    entry short of what the redirector serves), stale (an edge whose upstream is gone: its
    index never confirmed since it started), unready (its /readyz says 503), slow (its
    /readyz comes after the probe bound): served here."""
    path = _path(world, LATEST)
    for args in (_from(site), ("-H", "X-Unused: 1")):
        url = world.redirector.url(path) + ("" if args[0] == "--interface" else f"?site={site}")
        got = curl(url, *args, cwd=workdir)
        assert got.status == 200, (site, got.status, got.header("location"))
        assert got.body == release_bytes(world.redirector.origin, "1.2.0")


def test_only_the_usable_target_of_several_is_named(world: World, workdir: Path) -> None:
    got = _curl_many(world.redirector.url(_path(world, LATEST)), 20, *_from("mixed"))
    assert set(got) == {f"302 {world.good.base}{_path(world, LATEST)}"}


def _curl_many(url: str, times: int, *args: str) -> list[str]:
    """One curl asking ``url`` ``times`` times on one kept-alive connection: a line
    ``STATUS REDIRECT_URL`` for each answer."""
    outputs = [arg for _ in range(times) for arg in (url, "-o", "/dev/null")]
    result = subprocess.run([require("curl"), "-sS", "--max-time", str(scaled(30)), *args,
                             "-w", "%{http_code} %{redirect_url}\\n", *outputs],
                            capture_output=True, text=True, timeout=scaled(40), check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_metrics_count_redirects_and_direct_answers(world: World, workdir: Path) -> None:
    url = world.redirector.url(_path(world, RELEASE))
    before = _metrics(world, workdir)
    for site in ("near", "near", "dead", "behind", "replica", "stale", "unready", "slow"):
        curl(url, *_from(site), cwd=workdir)
    curl(url, cwd=workdir)   # a direct client: counted nowhere here
    after = _metrics(world, workdir)

    def grew(sample: str) -> float:
        return after.get(sample, 0.0) - before.get(sample, 0.0)

    good = world.good.base
    assert grew(f'codecache_redirects_total{{site="near",target="{good}"}}') == 2
    assert grew('codecache_redirect_direct_total{reason="target_not_ready",site="dead"}') == 1
    assert grew('codecache_redirect_direct_total{reason="target_not_ready",'
                'site="replica"}') == 1
    assert grew('codecache_redirect_direct_total{reason="target_behind",site="behind"}') == 1
    for site in ("stale", "unready", "slow"):
        assert grew(f'codecache_redirect_direct_total{{reason="target_not_ready",'
                    f'site="{site}"}}') == 1


def _metrics(world: World, workdir: Path) -> dict[str, float]:
    text = curl(world.redirector.url("/metrics"), cwd=workdir).body.decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("codecache_redirect"):
            name, _, value = line.rpartition(" ")
            samples[_sorted_labels(name)] = float(value)
    return samples


def _sorted_labels(sample: str) -> str:
    name, _, labels = sample.partition("{")
    if not labels:
        return name
    pairs = sorted(re.findall(r'(\w+="[^"]*")', labels))
    return f"{name}{{{','.join(pairs)}}}"


def test_the_panda_wrapper_line_from_a_site_address(world: World, workdir: Path) -> None:
    """The PanDA wrapper's own line (a site worker node: its address is the site's)."""
    url = world.redirector.url(_path(world, LATEST))
    line = (f"curl --interface {CLIENT['near']} --connect-timeout 30 --max-time 180 -sSL "
            f"{url} | tar -xzf -")
    before = _metrics(world, workdir)
    result = subprocess.run(["sh", "-c", f"set -e; {line}"], cwd=workdir, capture_output=True,
                            text=True, timeout=scaled(60), check=False)
    assert result.returncode == 0, result.stderr
    assert (workdir / world.package / "bin" / "pilot.sh").exists()
    after = _metrics(world, workdir)
    sample = f'codecache_redirects_total{{site="near",target="{world.good.base}"}}'
    assert after[sample] - before.get(sample, 0.0) == 1


def test_a_target_that_dies_is_named_at_most_one_check_interval_longer(
        world: World) -> None:
    """DESIGN.md §5: a dead target can still be named until the next probe sees it. Every
    worker stops naming it within check_interval (1 s) plus the probe bound (1 s)."""
    url = world.redirector.url(_path(world, RELEASE))
    assert {line.split()[0] for line in _curl_many(url, 4, *_from("mortal"))} == {"302"}
    world.mortal.stop()
    stopped = time.monotonic()

    def served_here() -> bool:
        # Fresh connections: the kernel spreads them over both workers.
        return all(_curl_many(url, 1, *_from("mortal"))[0].split()[0] == "200"
                   for _ in range(8))

    wait_until(served_here, 10, "the redirector stops naming the dead edge")
    took = time.monotonic() - stopped
    print(f"dead edge no longer named after {took:.2f} s")
    assert took <= scaled(1 + 1 + 2), took   # interval + probe bound + margin (8 curls)


def _versions(url: str, *args: str) -> list[tuple[int, str | None]]:
    """(status, X-Codecache-Version) of every answer ``curl -L`` got, in order."""
    result = subprocess.run([require("curl"), "-sS", "-L", "-D", "-", "-o", "/dev/null",
                             "--max-time", str(scaled(10)), *args, url],
                            capture_output=True, text=True, timeout=scaled(20), check=False)
    assert result.returncode == 0, result.stderr
    answers = []
    for block in result.stdout.replace("\r\n", "\n").split("\n\n"):
        lines = block.strip().splitlines()
        if lines:
            version = next((line.split(":", 1)[1].strip() for line in lines[1:]
                            if line.lower().startswith("x-codecache-version:")), None)
            answers.append((int(lines[0].split()[1]), version))
    return answers


def test_after_a_publish_no_pilot_is_sent_to_an_older_version(world: World) -> None:
    """Last in the module (it moves a channel). Each worker of the redirector serves the
    move within a watch tick; its edge pulls it a second or so later and was last probed
    up to a second before: in between, the history compared on each request keeps the
    site's pilots here. Every redirect leads to the version the worker that answered it
    would have served (named in its X-Codecache-Version) or a newer one, never an older one."""
    url = world.redirector.url(_path(world, "/{package}/stable.tar.gz"))
    assert _versions(url, *_from("near"))[-1] == (200, "1.0.0")
    world.redirector.origin.cli("publish", world.package, "1.2.0", "--channel", "stable",
                                check=True)
    seen: list[list[tuple[int, str | None]]] = []

    def sample() -> bool:
        seen.append(_versions(url, *_from("near")))
        return seen[-1] == [(302, "1.2.0"), (200, "1.2.0")]

    wait_until(sample, 15, "the site's pilots are redirected to the edge again")
    for answers in seen:
        if answers[0][0] == 302:
            # The same version or a newer one (DESIGN.md §5): a worker still a watch tick
            # behind the move may name 1.0.0 while its edge, which follows the worker that
            # already serves the move, hands out 1.2.0.
            served, named = answers[-1][1], answers[0][1]
            assert served is not None and named is not None, (answers, seen)
            assert version_key(served) >= version_key(named), (answers, seen)
    print(f"{len(seen)} samples: "
          f"{sum(a == [(200, '1.2.0')] for a in seen)} served 1.2.0 here (the edge behind), "
          f"{sum(a[0] == (302, '1.0.0') for a in seen)} redirected before the redirector "
          f"served the move, {sum(a[0] == (302, '1.2.0') for a in seen)} after")
