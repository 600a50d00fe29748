"""``[edge]`` and ``[redirect]``: what a valid site list is, and an edge never redirects."""

from __future__ import annotations

from pathlib import Path

import pytest

from codecache.core.config import load_config
from codecache.core.config_values import parse_size
from codecache.core.errors import ConfigError

REPLICA = ('role = "replica"\n[server]\nlisten = ["127.0.0.1:8080", "[::1]:8081"]\n'
           '[replica]\nupstreams = ["http://origin:8080"]\n[signing]\ntrusted_keys = ["k.pub"]\n')
SITE = ('[[redirect.sites]]\nname = "bnl"\nnetworks = ["130.199.0.0/16", "2620:0:200::/48"]\n'
        'targets = ["http://edge1.bnl:8080/", "https://edge2.bnl"]\n')



def test_a_site_is_read_with_its_networks_normalised(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, REPLICA + '[redirect]\ncheck_interval = "1s"\n'
                                'trusted_proxies = ["10.0.0.0/24"]\n' + SITE), env={})
    site = config.redirect.sites[0]
    assert (site.name, site.networks, site.targets) == (
        "bnl", ("130.199.0.0/16", "2620:0:200::/48"), ("http://edge1.bnl:8080",
                                                         "https://edge2.bnl"))
    assert config.redirect.check_interval == 1.0
    assert config.redirect.trusted_proxies == ("10.0.0.0/24",)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "codecache.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("site", "message"), [
    ('[[redirect.sites]]\nname = "a"\ntargets = ["http://e:1"]\n', "has no networks"),
    ('[[redirect.sites]]\nname = "a"\nnetworks = ["10.0.0.0/8"]\n', "has no targets"),
    ('[[redirect.sites]]\nname = "a b"\nnetworks = ["10.0.0.0/8"]\ntargets = ["http://e:1"]\n',
     "site name"),
    ('[[redirect.sites]]\nname = "a"\nnetworks = ["10.0.0.1/8"]\ntargets = ["http://e:1"]\n',
     "expected a network"),
    ('[[redirect.sites]]\nname = "a"\nnetworks = ["10.0.0.0/8"]\ntargets = ["ftp://e:1"]\n',
     "base URL"),
    ('[[redirect.sites]]\nname = "a"\nnetworks = ["10.0.0.0/8"]\ntargets = ["http://e:1?x"]\n',
     "base URL"),
    ('[[redirect.sites]]\nname = "a"\nnetworks = ["10.0.0.0/8"]\ntargets = ["http://e:1"]\n'
     'colour = "red"\n', "unknown key"),
    ('[[redirect.sites]]\nname = "a"\nnetworks = ["10.0.0.0/8"]\ntargets = ["http://e:1"]\n'
     '[[redirect.sites]]\nname = "b"\nnetworks = ["10.0.0.0/8"]\ntargets = ["http://f:1"]\n',
     "in two redirect sites"),
    ('[[redirect.sites]]\nname = "a"\nnetworks = ["10.0.0.0/8"]\ntargets = ["http://e:1"]\n'
     '[[redirect.sites]]\nname = "a"\nnetworks = ["11.0.0.0/8"]\ntargets = ["http://f:1"]\n',
     "configured twice"),
    ('[[redirect.sites]]\nname = "a"\nnetworks = ["10.0.0.0/8"]\n'
     'targets = ["http://127.0.0.1:8080"]\n', "own address"),
    ('[[redirect.sites]]\nname = "a"\nnetworks = ["10.0.0.0/8"]\ntargets = ["http://[::1]:8081"]\n',
     "own address"),
])
def test_a_bad_site_is_a_config_error(tmp_path: Path, site: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, REPLICA + site), env={})


def test_nested_networks_in_two_sites_are_allowed(tmp_path: Path) -> None:
    text = REPLICA + ('[[redirect.sites]]\nname = "a"\nnetworks = ["10.0.0.0/8"]\n'
                      'targets = ["http://e:1"]\n[[redirect.sites]]\nname = "b"\n'
                      'networks = ["10.1.0.0/16"]\ntargets = ["http://f:1"]\n')
    assert len(load_config(_write(tmp_path, text), env={}).redirect.sites) == 2


def test_an_edge_never_redirects(tmp_path: Path) -> None:
    text = REPLICA.replace('"replica"', '"edge"')
    assert load_config(_write(tmp_path, text + '[edge]\ncache_size = "2GiB"\n'),
                       env={}).edge.cache_size == 2 << 30
    with pytest.raises(ConfigError, match="never redirects"):
        load_config(_write(tmp_path, text + SITE), env={})


def test_an_edge_needs_upstreams_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='role = "edge" needs \\[replica\\] upstreams'):
        load_config(_write(tmp_path, 'role = "edge"\n'), env={})


def test_the_environment_sets_the_scalar_keys(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, REPLICA.replace('"replica"', '"edge"')), env={
        "CODECACHE_EDGE_CACHE_SIZE": "500MB"})
    assert config.edge.cache_size == 500_000_000
    config = load_config(_write(tmp_path, REPLICA), env={
        "CODECACHE_REDIRECT_TRUSTED_PROXIES": "10.0.0.0/24, ::1/128",
        "CODECACHE_REDIRECT_CHECK_INTERVAL": "2s"})
    assert config.redirect.trusted_proxies == ("10.0.0.0/24", "::1/128")
    assert config.redirect.check_interval == 2.0


@pytest.mark.parametrize(("text", "size"), [("500MB", 500_000_000), ("10GB", 10 * 1000**3),
                                             ("512MiB", 512 << 20), ("2GiB", 2 << 30),
                                             ("1234", 1234), (4096, 4096)])
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text, "k") == size


@pytest.mark.parametrize("text", ["0", "10 XB", "-1", "1.5GB", True, ""])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ConfigError, match="expected a size"):
        parse_size(text, "k")
