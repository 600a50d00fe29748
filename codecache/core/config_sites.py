"""The ``[edge]`` and ``[redirect]`` sections: an edge's cache bound, the redirector's sites.

Owns what makes a site list valid (DESIGN.md §5, §7): every site has a name, networks
(IPv4 and IPv6 CIDRs, normalised) and targets (http or https base URLs); no network is in
two sites; no target is one of the node's own ``[server] listen`` addresses (a redirect to
itself would loop); an edge never redirects. The redirector itself (``web.redirect``) takes
these as given.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from codecache.core.config_schema import EdgeConfig, RedirectConfig, RedirectSite
from codecache.core.config_values import (
    as_str,
    as_str_list,
    parse_duration,
    parse_size,
    split_listen,
)
from codecache.core.errors import ConfigError

REDIRECT_KEYS = ("check_interval", "trusted_proxies", "sites")
EDGE_KEYS = ("cache_size",)
_SITE_KEYS = ("name", "networks", "targets")
# A site's name is a metric label and a ``?site=`` value: plain characters only.
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A target's base URL: scheme, host (a name, IPv4 or [IPv6]), optional port and path; no
# user, query or fragment (core stays free of urllib: its request half does I/O).
_TARGET = re.compile(r"(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
                     r"(?::(?P<port>[0-9]{1,5}))?(?P<path>/[^?#\s]*)?")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str, key: str) -> Network:
    """A CIDR (or one address) as a network; host bits set are an error (a typo's sign)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as err:
        raise ConfigError(f"{key}: expected a network like 10.0.0.0/24 or 2001:db8::/48, "
                          f"got {text!r} ({err})") from None


def edge_config(t: Mapping[str, Any]) -> EdgeConfig:
    d = EdgeConfig()
    return EdgeConfig(cache_size=parse_size(t.get("cache_size", d.cache_size),
                                            "edge.cache_size"))


def redirect_config(t: Mapping[str, Any], listen: tuple[str, ...]) -> RedirectConfig:
    d = RedirectConfig()
    proxies = as_str_list(t.get("trusted_proxies", []), "redirect.trusted_proxies")
    sites_raw = t.get("sites", [])
    if not isinstance(sites_raw, list) or not all(isinstance(s, dict) for s in sites_raw):
        raise ConfigError("redirect.sites: expected [[redirect.sites]] tables")
    sites = tuple(_site(s, i, listen) for i, s in enumerate(sites_raw))
    _check_distinct(sites)
    return RedirectConfig(
        check_interval=parse_duration(t.get("check_interval", d.check_interval),
                                      "redirect.check_interval"),
        trusted_proxies=tuple(str(parse_network(p, "redirect.trusted_proxies"))
                              for p in proxies),
        sites=sites,
    )


def _site(t: Mapping[str, Any], index: int, listen: tuple[str, ...]) -> RedirectSite:
    where = f"redirect.sites[{index}]."
    unknown = sorted(set(t) - set(_SITE_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {where}{unknown[0]!r} in config")
    if "name" not in t:
        raise ConfigError(f"{where}name is required")
    name = as_str(t["name"], where + "name")
    if not _SITE_NAME.fullmatch(name):
        raise ConfigError(f"{where}name: a site name is letters, digits, '.', '_' and '-' "
                          f"(at most 64), got {name!r}")
    networks = as_str_list(t.get("networks", []), where + "networks")
    targets = as_str_list(t.get("targets", []), where + "targets")
    if not networks:
        raise ConfigError(f"redirect site {name!r} has no networks")
    if not targets:
        raise ConfigError(f"redirect site {name!r} has no targets")
    return RedirectSite(
        name=name,
        networks=tuple(str(parse_network(n, where + "networks")) for n in networks),
        targets=tuple(_target(url, where + "targets", listen) for url in targets),
    )


def _target(url: str, key: str, listen: tuple[str, ...]) -> str:
    match = _TARGET.fullmatch(url.strip())
    if match is None or int(match["port"] or 1) > 65535:
        raise ConfigError(f"{key}: expected an http(s) base URL like http://edge.example:8080, "
                          f"got {url!r}")
    port = int(match["port"] or (443 if match["scheme"] == "https" else 80))
    target_host = match["host"].removeprefix("[").removesuffix("]").lower()
    for address in listen:
        host, own_port = split_listen(address)
        if own_port == port and host.lower() == target_host:
            raise ConfigError(f"{key}: {url} is this node's own address ({address}): a "
                              "redirect to itself would loop")
    return url.strip().rstrip("/")


def _check_distinct(sites: tuple[RedirectSite, ...]) -> None:
    names: set[str] = set()
    owner: dict[str, str] = {}
    for site in sites:
        if site.name in names:
            raise ConfigError(f"redirect site {site.name!r} is configured twice")
        names.add(site.name)
        for network in site.networks:
            if network in owner and owner[network] != site.name:
                raise ConfigError(f"network {network} is in two redirect sites: "
                                  f"{owner[network]!r} and {site.name!r}")
            owner[network] = site.name
