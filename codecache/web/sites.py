"""Who is asking, for the redirector: the client's address and scheme, and the client's site.

Owns (DESIGN.md §5): the client address (the connection's, or the last ``X-Forwarded-For``
hop when the connection comes from ``[redirect] trusted_proxies``), the scheme (``https``
only from a trusted proxy's ``X-Forwarded-Proto``: the Python server speaks plain http), and
the site a request selects: ``?site=NAME`` whatever the address, else the site whose network
is the longest prefix of the address. Pure: no I/O, no aiohttp; ``redirect`` takes what it
says. The site list is valid already (``core.config_sites``: no network in two sites).

A lookup costs one dict probe per distinct prefix length of the address's family, however
many networks the sites list (they are grouped by length once, at start).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import parse_qsl

from codecache.core.config_schema import RedirectSite

T = TypeVar("T")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class PrefixTable(Generic[T]):
    """Networks (IPv4 and IPv6) with a value each; ``longest`` finds the most specific.

    Per family: for each prefix length present, a dict from network address (an int) to
    value, probed longest length first.
    """

    def __init__(self, entries: Iterable[tuple[str, T]]) -> None:
        by_family: dict[int, dict[int, dict[int, T]]] = {4: {}, 6: {}}
        for text, value in entries:
            network = ipaddress.ip_network(text, strict=True)
            table = by_family[network.version].setdefault(network.prefixlen, {})
            table[int(network.network_address)] = value
        self._probes: dict[int, tuple[tuple[int, dict[int, T]], ...]] = {}
        for version, tables in by_family.items():
            bits = 32 if version == 4 else 128
            full = (1 << bits) - 1
            self._probes[version] = tuple(
                (full ^ ((1 << (bits - length)) - 1), tables[length])
                for length in sorted(tables, reverse=True))

    def __bool__(self) -> bool:
        return any(self._probes.values())

    def longest(self, address: Address) -> T | None:
        """The value of the longest network holding ``address``, or None."""
        number = int(address)
        for mask, table in self._probes[address.version]:
            found = table.get(number & mask)
            if found is not None:
                return found
        return None


def parse_address(text: str | None) -> Address | None:
    """An address as a connection or a proxy gives it; an IPv4-mapped IPv6 address (a
    dual-stack socket's view of an IPv4 client) as the IPv4 address it is; None if none."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def last_hop(forwarded_for: Sequence[str]) -> str | None:
    """The last ``X-Forwarded-For`` hop (the one the trusted proxy itself added: the earlier
    ones are whatever the client wrote); several header lines are one list, in order."""
    for line in reversed(forwarded_for):
        hops = [hop.strip() for hop in line.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return None


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, as far as the redirector believes it."""

    address: Address | None
    https: bool
    site: RedirectSite | None    # the site whose network holds ``address`` (longest prefix)


@dataclass(frozen=True, slots=True)
class _Known:
    as_client: Requester         # this address as the client, over plain http
    trusted: bool                # a trusted proxy


#: Addresses remembered with what they are (parsing one costs 2.5 us, more than the rest of
#: the fast path's site check); the memo is dropped whole when it reaches this size.
_KNOWN_MAX = 16384
#: Longer than any address's text (an IPv6 address with an embedded IPv4 one: 45).
_ADDRESS_MAX = 64
_NOBODY = _Known(Requester(None, False, None), trusted=False)


class SiteMap:
    """The sites of one node: by name and by client network; and whose forwarding headers
    are believed."""

    def __init__(self, sites: Sequence[RedirectSite], trusted_proxies: Sequence[str]) -> None:
        self.sites = {site.name: site for site in sites}
        self._networks: PrefixTable[RedirectSite] = PrefixTable(
            (network, site) for site in sites for network in site.networks)
        self._trusted: PrefixTable[bool] = PrefixTable((p, True) for p in trusted_proxies)
        self._known: dict[str | None, _Known] = {}

    def _lookup(self, text: str | None) -> _Known:
        known = self._known.get(text)
        if known is None:
            if text is not None and len(text) > _ADDRESS_MAX:
                return _NOBODY     # not an address: nothing to parse, nothing to remember
            address = parse_address(text)
            site = None if address is None else self._networks.longest(address)
            known = _Known(Requester(address, False, site),
                           address is not None and bool(self._trusted.longest(address)))
            if len(self._known) >= _KNOWN_MAX:
                self._known.clear()
            self._known[text] = known
        return known

    def client(self, peer: str | None, headers: Mapping[str, str]) -> Requester:
        """The client behind a connection from ``peer`` that sent ``headers`` (read only
        from a trusted proxy: ``X-Forwarded-For``, all its lines, and
        ``X-Forwarded-Proto``)."""
        known = self._lookup(peer)
        if not known.trusted:
            return known.as_client
        getall = getattr(headers, "getall", None)
        forwarded = getall("X-Forwarded-For", ()) if getall is not None else \
            [v for v in (headers.get("X-Forwarded-For"),) if v]
        hop = last_hop(forwarded)
        # No hop: the proxy itself asked. An unparsable hop is nobody's (no site).
        behind = known.as_client if hop is None else self._lookup(hop).as_client
        proto = (headers.get("X-Forwarded-Proto") or "").rsplit(",", 1)[-1].strip().lower()
        if proto != "https":
            return behind
        return Requester(behind.address, True, behind.site)

    def site_of(self, query_site: str | None, requester: Requester) -> RedirectSite | None:
        """The site a request selects: ``?site=`` (an unknown name selects none: served
        directly, DESIGN.md §5), else the site of the requester's network."""
        if query_site is not None:
            return self.sites.get(query_site)
        return requester.site


def site_parameter(raw_path: str) -> str | None:
    """The ``site`` query parameter of a raw request target (the last one if repeated), or
    None when there is none."""
    _, mark, query = raw_path.partition("?")
    if not mark or "site" not in query:
        return None
    found = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "site":
            found = value
    return found
