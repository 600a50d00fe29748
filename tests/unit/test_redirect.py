"""The redirector's pure parts: who asks (address, scheme), which site, which target is usable.

No sockets: ``web.sites`` and ``web.redirect``'s rules on values. The real redirects
(real servers, wget, curl) are tests/redirect/.
"""

from __future__ import annotations

import ipaddress
import json
import math
import random

import pytest
from multidict import CIMultiDict

from codecache.core.config_schema import RedirectSite
from codecache.web.catalog import Representation, Route
from codecache.web.redirect import (
    CONFIRMED_WITHIN,
    NOT_PROBED,
    REDIRECTED,
    Direct,
    Probe,
    choose,
    describe,
    read_probe,
    redirect_response,
)
from codecache.web.sites import PrefixTable, SiteMap, last_hop, parse_address, site_parameter

BNL = RedirectSite("bnl", ("130.199.0.0/16", "2620:0:200::/48"), ("http://edge1.bnl:8080",))
# Nested in BNL's /16: the longest prefix wins.
BNL_T3 = RedirectSite("bnl-t3", ("130.199.48.0/24",), ("http://t3.bnl:8080",))
CERN = RedirectSite("cern", ("188.184.0.0/15", "2001:1458::/32", "127.0.0.2/32"),
                    ("https://edge.cern.ch",))
SITES = SiteMap([BNL, BNL_T3, CERN], trusted_proxies=["10.0.0.0/24", "fd00::/64"])


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(("address", "site"), [
    ("130.199.1.1", "bnl"), ("130.199.48.7", "bnl-t3"), ("130.199.49.7", "bnl"),
    ("188.185.255.255", "cern"), ("188.186.0.0", None), ("127.0.0.2", "cern"),
    ("127.0.0.1", None), ("2620:0:200::1", "bnl"), ("2620:0:201::1", None),
    ("2001:1458:ffff::1", "cern"), ("::1", None),
])
def test_the_longest_matching_network_selects_the_site(address: str, site: str | None) -> None:
    found = SITES.site_of(None, SITES.client(address, {}))
    assert (found.name if found else None) == site
    again = SITES.client(address, {}).site   # remembered: the same answer
    assert (again.name if again else None) == site


def test_a_prefix_table_probes_each_length_once_however_many_networks() -> None:
    table = PrefixTable((f"10.{i // 256}.{i % 256}.0/24", i) for i in range(5000))
    assert table.longest(_ip("10.3.7.9")) == 3 * 256 + 7
    assert table.longest(_ip("10.20.0.1")) is None
    assert len(table._probes[4]) == 1   # one length: one dict probe per lookup
    assert table.longest(_ip("::1")) is None


def test_site_parameter_selects_a_site_whatever_the_address() -> None:
    bnl, nobody = SITES.client("130.199.1.1", {}), SITES.client(None, {})
    assert SITES.site_of("cern", bnl).name == "cern"      # type: ignore[union-attr]
    assert SITES.site_of("cern", nobody).name == "cern"   # type: ignore[union-attr]
    # An unknown name selects nothing, even for a client inside a site: served directly.
    assert SITES.site_of("nowhere", bnl) is None


@pytest.mark.parametrize(("raw", "site"), [
    ("/p/latest.tar.gz", None), ("/p/latest.tar.gz?site=bnl", "bnl"),
    ("/p/latest.tar.gz?x=1&site=cern", "cern"), ("/p/latest.tar.gz?site=a&site=b", "b"),
    ("/p/latest.tar.gz?website=bnl", None), ("/p/latest.tar.gz?site=", ""),
    ("/p/latest.tar.gz?site=b%6El", "bnl"),
])
def test_site_parameter_is_read_from_the_query(raw: str, site: str | None) -> None:
    assert site_parameter(raw) == site


def test_an_ipv4_mapped_address_is_the_ipv4_client() -> None:
    assert parse_address("::ffff:130.199.48.1") == _ip("130.199.48.1")
    assert parse_address("not an address") is None
    assert parse_address(None) is None


def _headers(*forwarded_for: str, proto: str | None = None) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for line in forwarded_for:
        headers.add("X-Forwarded-For", line)
    if proto is not None:
        headers["X-Forwarded-Proto"] = proto
    return headers


def test_the_connection_is_the_client_unless_it_is_a_trusted_proxy() -> None:
    direct = SITES.client("130.199.1.1", _headers("188.184.0.1", proto="https"))
    assert (direct.address, direct.https) == (_ip("130.199.1.1"), False)   # nobody's proxy
    proxied = SITES.client("10.0.0.5", _headers("1.2.3.4, 188.184.0.1", proto="https"))
    assert (proxied.address, proxied.https) == (_ip("188.184.0.1"), True)
    assert proxied.site is not None and proxied.site.name == "cern"
    v6 = SITES.client("fd00::7", _headers("2620:0:200::9"))
    assert (v6.address, v6.https) == (_ip("2620:0:200::9"), False)
    # No header: the proxy itself asked (its address is in no site).
    assert SITES.client("10.0.0.5", {}).address == _ip("10.0.0.5")
    # A forged hop the proxy did not add: only the last one (of the last line) counts.
    assert SITES.client("10.0.0.5", _headers("130.199.1.1", "127.0.0.9")).address == \
        _ip("127.0.0.9")
    assert SITES.client("10.0.0.5", _headers("garbage")).address is None
    huge = SITES.client("10.0.0.5", _headers("1" * 5000))
    assert (huge.address, huge.site) == (None, None)
    assert "1" * 5000 not in SITES._known   # never remembered
    # A plain mapping (one line) is read too.
    assert SITES.client("10.0.0.5", {"X-Forwarded-For": "130.199.1.1"}).address == \
        _ip("130.199.1.1")


def test_last_hop_reads_the_last_entry_of_the_last_header_line() -> None:
    assert last_hop(["a, b", "c , d "]) == "d"
    assert last_hop(["a", " , "]) == "a"
    assert last_hop([]) is None


def test_only_tarball_urls_and_their_checksums_and_signatures_are_redirected() -> None:
    assert {Route.CHANNEL, Route.RELEASE, Route.CHECKSUM, Route.SIGNATURE} == REDIRECTED
    for route in (Route.BLOB, Route.INDEX, Route.HISTORY, Route.READYZ, Route.HEALTHZ,
                  Route.METRICS, Route.STATUS_PAGE):
        assert route not in REDIRECTED


def _edge(history: int = 5, age: float = 1.0, role: str = "edge") -> bytes:
    return json.dumps({"ready": True, "role": role, "serial": 99, "history_length": history,
                       "seconds_since_confirmed": age}).encode()


def test_a_readyz_of_an_edge_is_ready_with_its_facts() -> None:
    probe = read_probe(_edge(7, 3), at=100.0)
    assert (probe.ready, probe.history_length, probe.confirmed_age) == (True, 7, 3.0)


@pytest.mark.parametrize("body", [
    _edge(role="replica"), _edge(role="origin"), b"not json", b"[1]", b"\xff\xfe",
    b"[" * 100_000,
    json.dumps({"role": "edge", "history_length": None,
                "seconds_since_confirmed": 1}).encode(),
    json.dumps({"role": "edge", "history_length": 3}).encode(),
    json.dumps({"role": "edge", "history_length": True,
                "seconds_since_confirmed": 1}).encode(),
    json.dumps({"role": "edge", "history_length": -1, "seconds_since_confirmed": 1}).encode(),
])
def test_anything_but_an_edge_with_its_facts_is_not_ready(body: bytes) -> None:
    assert not read_probe(body, at=0.0).ready


def _ready(history: int = 5, age: float = 0.0, at: float = 100.0) -> Probe:
    return Probe(True, history, age, at)


RNG = random.Random(1)  # noqa: S311 - a test's choices, replayable


def test_a_target_is_usable_while_confirmed_within_30_s_counting_since_the_probe() -> None:
    probe = _ready(age=20.0, at=100.0)
    targets = [("http://e", probe)]
    assert choose(targets, https=False, served_history=5, now=110.0, rng=RNG) == "http://e"
    assert choose(targets, https=False, served_history=5, now=110.0 + 0.01, rng=RNG) is \
        Direct.NOT_READY
    assert probe.fresh(100.0 + CONFIRMED_WITHIN - 20.0)


def test_a_target_behind_the_history_served_here_is_not_usable() -> None:
    targets = [("http://a", _ready(history=4)), ("http://b", _ready(history=6))]
    assert choose(targets, https=False, served_history=6, now=100.0, rng=RNG) == "http://b"
    assert choose(targets, https=False, served_history=7, now=100.0, rng=RNG) is Direct.BEHIND
    # A re-sign adds no history entry: an equal length is usable.
    assert choose(targets[:1], https=False, served_history=4, now=100.0, rng=RNG) == "http://a"


def test_not_ready_wins_over_behind_only_when_no_target_is_ready() -> None:
    dead = Probe(False, 0, math.inf, 100.0, "connection refused")
    assert choose([("http://a", dead)], https=False, served_history=1, now=100.0,
                  rng=RNG) is Direct.NOT_READY
    assert choose([("http://a", dead), ("http://b", _ready(history=0))], https=False,
                  served_history=1, now=100.0, rng=RNG) is Direct.BEHIND


def test_https_goes_to_https_targets_only_and_http_prefers_http() -> None:
    both = [("https://s", _ready()), ("http://p", _ready())]
    assert choose(both, https=True, served_history=5, now=100.0, rng=RNG) == "https://s"
    assert choose(both, https=False, served_history=5, now=100.0, rng=RNG) == "http://p"
    assert choose(both[:1], https=False, served_history=5, now=100.0, rng=RNG) == "https://s"
    assert choose(both[1:], https=True, served_history=5, now=100.0, rng=RNG) is \
        Direct.NOT_READY


def test_the_choice_among_usable_targets_is_random() -> None:
    targets = [(f"http://e{i}", _ready()) for i in range(4)]
    rng = random.Random(7)  # noqa: S311 - a test's choices, replayable
    chosen = {choose(targets, https=False, served_history=5, now=100.0, rng=rng)
              for _ in range(200)}
    assert chosen == {url for url, _ in targets}


def test_readyz_describes_each_target_by_the_same_rule() -> None:
    assert describe(_ready(history=5), 5, now=100.0) == "usable"
    assert describe(_ready(history=4), 5, now=100.0) == "behind: history_length 4 < 5"
    assert describe(_ready(age=25.0, at=100.0), 5, now=106.0) == \
        "not ready: index confirmed 31 s ago (more than 30)"
    assert describe(read_probe(_edge(role="replica"), at=1.0), 0, now=1.0) == \
        "not ready: role is 'replica', not 'edge'"
    assert describe(NOT_PROBED, 0, now=1.0) == "not ready: not probed yet"


def test_the_302_names_the_target_and_is_never_stored_by_a_shared_cache() -> None:
    rep = Representation(Route.CHANNEL, '"sha256-ab"', 0, 10, "application/gzip",
                         "public, max-age=60", "1.2.0", blob="ab")
    response = redirect_response("http://edge:8080", "/pilot/latest.tar.gz", "bnl", rep)
    assert response.status == 302
    assert response.headers["Location"] == "http://edge:8080/pilot/latest.tar.gz"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["X-Codecache-Version"] == "1.2.0"
    assert response.text is not None
    assert json.loads(response.text) == {"redirect": {
        "site": "bnl", "target": "http://edge:8080",
        "location": "http://edge:8080/pilot/latest.tar.gz"}}
