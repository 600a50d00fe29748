"""Which site a request through the front tier is for, as nginx must know it (DESIGN.md §5).

The replicas redirect a site's clients (``web.redirect``); the front tier's cache must then
keep one site's answers from every other client and hold them at most ~1 s, while direct
clients keep the long cache. This module renders the part of the nginx config that says which
site a request is for, from the replicas' own ``[[redirect.sites]]`` (never a hand-kept copy):

* ``geo $codecache_site_net``: client network -> site name (nginx's radix tree: the longest
  matching prefix wins, as in the redirector);
* ``map $arg_site $codecache_site_arg``: ``?site=NAME`` for the names that exist (nginx
  compares them ignoring case: two names that differ only in case are refused), and ``-``
  for any other value: the redirector then decides on the URL alone (its own decoding of
  the last ``site``: an unknown name is served directly), so such answers are kept apart
  too, rather than under a direct client's long-lived key where a 200 for a URL the
  redirector might redirect later would outlive the 1 s rule;
* ``map "$codecache_site:$scheme" $codecache_site_key``: the cache-key prefix of a site's
  answers, per scheme (an https request is redirected only to an https target, so its
  answer differs), of one fixed width so the replica can still page-align the cached body
  (``web.cachealign``: the offset before the request target is then one constant).

``nginx/codecache.conf`` ships this block with no site (every client direct) between its
``# cluster:sites begin`` and ``# cluster:sites end`` lines; ``render_front`` replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codecache.core.config import RedirectSite, load_config
from codecache.core.errors import ConfigError

BEGIN = "# cluster:sites begin"
END = "# cluster:sites end"
# "site0001h ": "site", the site's position in the config (4 digits), h(ttp) or s (https), a
# space before the request target. nginx/codecache.conf adds KEY_WIDTH to the cache offset.
KEY_WIDTH = 10
MAX_SITES = 9999
# $codecache_site of a request whose ?site= names no site (key "site0000h ").
OTHER = "-"


def site_key(index: int, scheme: str) -> str:
    """The cache-key prefix of site number ``index`` (1 to MAX_SITES; 0: OTHER) for
    ``scheme``."""
    return f"site{index:04d}{'s' if scheme == 'https' else 'h'} "


def render_sites(sites: Sequence[RedirectSite]) -> list[str]:
    """The lines between the begin and end markers: geo and maps for ``sites``.

    Site names and networks are plain nginx tokens already (``core.config_sites`` allows
    letters, digits, ``._-`` in a name and normalises the networks).

    Raises:
        ConfigError: more sites than the key prefix can number.
    """
    if len(sites) > MAX_SITES:
        raise ConfigError(f"{len(sites)} redirect sites: the front tier numbers at most "
                          f"{MAX_SITES}")
    # nginx's map compares strings ignoring case: two such names would be one key there.
    folded = [site.name.lower() for site in sites]
    for name in folded:
        if folded.count(name) > 1:
            raise ConfigError(f"redirect sites whose names differ only in case ({name!r}) "
                              f"cannot be told apart by the front tier")
    lines = ["geo $codecache_site_net {", '    default "";']
    lines += [f"    {network} {site.name};" for site in sites for network in site.networks]
    lines += ["}", "map $arg_site $codecache_site_arg {", '    default "";']
    if sites:
        # Any other ?site= value: the redirector reads its own (decoded, the last one) and
        # then decides on the URL alone; its answers are kept apart 1 s too. An exact
        # match first: the usual request, with no ?site=, costs no regex.
        lines += ['    "" "";', *(f"    {site.name} {site.name};" for site in sites),
                  f'    ~. "{OTHER}";']
    lines += ["}", 'map "$codecache_site:$scheme" $codecache_site_key {', '    default "";']
    numbered = [(index, site.name) for index, site in enumerate(sites, 1)]
    for index, name in numbered + ([(0, OTHER)] if sites else []):
        lines += [f'    "{name}:{scheme}" "{site_key(index, scheme)}";'
                  for scheme in ("http", "https")]
    return [*lines, "}"]


def read_sites(configs: Sequence[Path]) -> tuple[RedirectSite, ...]:
    """The ``[[redirect.sites]]`` of the replicas' config files, which must agree on every
    site's name and networks (what nginx needs; targets are the replicas' business).

    The files are read as they are (no ``CODECACHE_*`` overrides: sites are tables, which the
    environment cannot set, and the renderer's own environment is not the replicas').

    Raises:
        ConfigError: a file that does not load, or two files whose sites differ.
    """
    found: tuple[RedirectSite, ...] | None = None
    first = ""
    for path in configs:
        sites = load_config(path, env={}).redirect.sites
        if found is None:
            found, first = sites, str(path)
        elif _networks(sites) != _networks(found):
            raise ConfigError(f"{path} and {first} name different redirect sites or networks; "
                              f"the front tier needs one list")
    return found or ()


def _networks(sites: Sequence[RedirectSite]) -> list[tuple[str, tuple[str, ...]]]:
    return [(site.name, site.networks) for site in sites]

