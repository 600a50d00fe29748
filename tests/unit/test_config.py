"""Unit tests for codecache.core.config: TOML, durations, env overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from codecache.core.config import (
    DEFAULT_TAG_PATTERN,
    Role,
    load_config,
    parse_duration,
    split_listen,
)
from codecache.core.errors import ConfigError

MINIMAL = """\
role = "origin"
[store]
path = "store"
[signing]
secret_key = "keys/codecache.key"
trusted_keys = ["keys/codecache.pub"]
[[packages]]
name = "pilot"
svn_url = "svn://svn.example.org/repo/pilot/"
auto_channel = "latest"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "codecache.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("7d", 604800.0), ("2d", 172800.0),
    (" 1s ", 1.0), (45, 45.0), (0.5, 0.5), ("0.5s", 0.5), ("250ms", 0.25), ("1.5h", 5400.0),
])
def test_durations_accept_units_and_plain_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text, "k") == seconds


@pytest.mark.parametrize("text", ["", "30", "0s", "-1s", ".5s", "1.s", "1w", "1h30m",
                                  "7 days", "0ms", "s", True, 0, -5, None, [30]])
def test_bad_durations_are_config_errors_naming_the_key(text: object) -> None:
    with pytest.raises(ConfigError, match=r"sync\.interval"):
        parse_duration(text, "sync.interval")


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.role is Role.ORIGIN
    assert config.signing.index_expiry == 7 * 86400
    assert config.signing.resign_interval == 3600
    assert config.server.channel_max_age == 60
    assert config.sync.interval == 30
    (pkg,) = config.packages
    assert pkg.name == "pilot"
    assert pkg.svn_url == "svn://svn.example.org/repo/pilot"  # trailing slash dropped
    assert pkg.tag_url("1.0") == "svn://svn.example.org/repo/pilot/tags/1.0"
    assert pkg.prefix == "pilot"
    assert pkg.tag_pattern.pattern == DEFAULT_TAG_PATTERN
    assert pkg.auto_channel == "latest"
    assert config.package("pilot") is pkg
    assert config.package("other") is None


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    config = load_config(path, env={})
    assert config.store.path == tmp_path / "conf" / "store"
    assert config.signing.secret_key == tmp_path / "conf" / "keys" / "codecache.key"
    assert config.signing.trusted_keys == (tmp_path / "conf" / "keys" / "codecache.pub",)


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    text = MINIMAL.replace('path = "store"', f'path = "{tmp_path / "elsewhere"}"')
    assert load_config(write(tmp_path, text), env={}).store.path == tmp_path / "elsewhere"


def test_all_duration_keys_parse_units(tmp_path: Path) -> None:
    text = MINIMAL.replace("[signing]\n", '[signing]\nindex_expiry = "2d"\n'
                           'resign_interval = "5m"\n') + '[sync]\ninterval = "1h"\n'
    config = load_config(write(tmp_path, text), env={})
    assert config.signing.index_expiry == 172800
    assert config.signing.resign_interval == 300
    assert config.sync.interval == 3600


def test_env_overrides_scalar_keys(tmp_path: Path) -> None:
    env = {
        "CODECACHE_STORE_PATH": str(tmp_path / "moved"),
        "CODECACHE_SIGNING_INDEX_EXPIRY": "2d",
        "CODECACHE_SERVER_CHANNEL_MAX_AGE": "120",
        "CODECACHE_SYNC_INTERVAL": "5m",
        "CODECACHE_ROLE": "replica",
        "CODECACHE_REPLICA_UPSTREAMS": "http://origin:8080",
        "CODECACHE_SIGNING_TRUSTED_KEYS": "a.pub",
        "CODECACHE_CONFIG": "/ignored/because/it/names/the/file",
        "CODECACHE_ACTOR": "alice",   # not a config key, but codecache's own (DESIGN.md §9)
    }
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.store.path == tmp_path / "moved"
    assert config.signing.index_expiry == 172800
    assert config.server.channel_max_age == 120
    assert config.sync.interval == 300
    assert config.role is Role.REPLICA


@pytest.mark.parametrize(("value", "expected"), [
    ("false", False), ("0", False), ("No", False), ("off", False),
    ("true", True), ("1", True), (" yes ", True), ("ON", True),
])
def test_env_sets_a_boolean_key(tmp_path: Path, value: str, expected: bool) -> None:
    config = load_config(write(tmp_path, MINIMAL),
                         env={"CODECACHE_SERVER_FAST_ANSWERS": value})
    assert config.server.fast_answers is expected


@pytest.mark.parametrize("value", ["1", "0", '"maybe"', '[]'])
def test_a_boolean_key_in_toml_is_not_a_number_or_a_word(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.fast_answers"):
        load_config(write(tmp_path, MINIMAL + f"[server]\nfast_answers = {value}\n"), env={})


def test_env_overrides_list_keys_with_commas(tmp_path: Path) -> None:
    env = {"CODECACHE_SIGNING_TRUSTED_KEYS": "a.pub, /abs/b.pub",
           "CODECACHE_SERVER_LISTEN": "127.0.0.1:9000,[::1]:9001",
           "CODECACHE_REPLICA_UPSTREAMS": "http://a:8080/,https://b"}
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.signing.trusted_keys == (tmp_path / "conf" / "a.pub", Path("/abs/b.pub"))
    assert config.server.listen == ("127.0.0.1:9000", "[::1]:9001")
    assert config.replica.upstreams == ("http://a:8080", "https://b")


@pytest.mark.parametrize(("env", "missing"), [
    ({"CODECACHE_SIGNING_TRUSTED_KEYS": "a.pub"}, "upstreams"),
    ({"CODECACHE_REPLICA_UPSTREAMS": "http://o:8080"}, "trusted_keys"),
])
def test_a_replica_needs_upstreams_and_trusted_keys(tmp_path: Path, env: dict[str, str],
                                                     missing: str) -> None:
    with pytest.raises(ConfigError, match=missing):
        load_config(None, env={"CODECACHE_ROLE": "replica", **env})


def test_env_override_without_a_file(tmp_path: Path) -> None:
    config = load_config(None, env={"CODECACHE_STORE_PATH": str(tmp_path)})
    assert config.store.path == tmp_path
    assert config.packages == ()


@pytest.mark.parametrize("name", ["CODECACHE_STORE_PAHT", "CODECACHE_STORE", "CODECACHE_FOO",
                                  "CODECACHE_PACKAGES_NAME", "CODECACHE_SIGNING_SECRETKEY"])
def test_unknown_env_variable_is_an_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config(write(tmp_path, MINIMAL), env={name: "x"})


@pytest.mark.parametrize(("env", "key"), [
    ({"CODECACHE_SIGNING_INDEX_EXPIRY": "2 days"}, "signing.index_expiry"),
    ({"CODECACHE_SERVER_CHANNEL_MAX_AGE": "soon"}, "server.channel_max_age"),
    ({"CODECACHE_ROLE": "primary"}, "role"),
    ({"CODECACHE_REPLICA_UPSTREAMS": "ftp://x"}, "replica.upstreams"),
    ({"CODECACHE_SERVER_LISTEN": "localhost"}, "server.listen"),
    ({"CODECACHE_SERVER_FAST_ANSWERS": "maybe"}, "server.fast_answers"),
])
def test_bad_env_values_are_config_errors(tmp_path: Path, env: dict[str, str],
                                          key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, MINIMAL), env=env)


@pytest.mark.parametrize(("text", "where"), [
    ('stor = "x"\n' + MINIMAL, "stor"),
    (MINIMAL.replace('path = "store"', 'paht = "store"'), "store.'paht'"),
    (MINIMAL.replace("[signing]\n", '[signing]\nexpiry = "1d"\n'), "signing.'expiry'"),
    (MINIMAL + 'tagpattern = "x"\n', "packages[0].'tagpattern'"),
    (MINIMAL + '[server]\nmax_age = 5\n', "server.'max_age'"),
])
def test_unknown_keys_are_errors(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError, match="unknown key") as info:
        load_config(write(tmp_path, text), env={})
    assert where in str(info.value)


@pytest.mark.parametrize(("text", "match"), [
    (MINIMAL + "[store\n", "not valid TOML"),
    (MINIMAL.replace('name = "pilot"', 'name = "Pilot"'), "invalid package name"),
    (MINIMAL.replace('name = "pilot"', 'name = "pi/lot"'), "invalid package name"),
    (MINIMAL + "tag_pattern = '^[0-9'\n", "tag_pattern"),
    (MINIMAL.replace('auto_channel = "latest"', 'auto_channel = "Latest"'), "auto_channel"),
    (MINIMAL + 'tar_prefix = "a/b"\n', "tar_prefix"),
    (MINIMAL + 'tar_prefix = ".."\n', "tar_prefix"),
    (MINIMAL + '[[packages]]\nname = "pilot"\nsvn_url = "svn://x/y"\n', "configured twice"),
    (MINIMAL.replace('svn_url = "svn://svn.example.org/repo/pilot/"\n', ""), "svn_url"),
    (MINIMAL.replace('role = "origin"', 'role = "master"'), "role"),
    (MINIMAL.replace("[signing]\n", "[signing]\nindex_expiry = 7\nresign_interval = -1\n"),
     "signing.resign_interval"),
    (MINIMAL.replace("[signing]\n", '[signing]\nindex_expiry = "7days"\n'),
     "signing.index_expiry"),
    (MINIMAL.replace('trusted_keys = ["keys/codecache.pub"]', 'trusted_keys = "k.pub"'),
     "trusted_keys"),
    (MINIMAL + '[server]\nchannel_max_age = -1\n', "channel_max_age"),
    ('store = "x"\n' + MINIMAL.replace("[store]\npath = \"store\"\n", ""), r"\[store\]"),
])
def test_invalid_values_are_config_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text), env={})


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_package_options(tmp_path: Path) -> None:
    text = MINIMAL + "tag_pattern = '^v[0-9]+$'\ntar_prefix = \"pilot-code\"\n"
    (pkg,) = load_config(write(tmp_path, text), env={}).packages
    assert pkg.prefix == "pilot-code"
    assert pkg.tag_pattern.search("v12")
    assert not pkg.tag_pattern.search("1.0")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    with pytest.raises(AttributeError):
        config.role = Role.REPLICA  # type: ignore[misc]


@pytest.mark.parametrize(("address", "parsed"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)),
    ("localhost:65535", ("localhost", 65535)),
])
def test_split_listen(address: str, parsed: tuple[str, int]) -> None:
    assert split_listen(address) == parsed


@pytest.mark.parametrize("address", ["8080", ":8080", "host:", "host:http", "host:70000"])
def test_split_listen_refuses_malformed_addresses(address: str) -> None:
    with pytest.raises(ConfigError):
        split_listen(address)


def test_svn_client_defaults_to_auto_and_takes_only_known_clients(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL), env={}).svn.client == "auto"
    path = write(tmp_path, MINIMAL + '[svn]\nclient = "cli"\n')
    assert load_config(path, env={}).svn.client == "cli"
    env = {"CODECACHE_SVN_CLIENT": "pysvn"}
    assert load_config(write(tmp_path, MINIMAL), env=env).svn.client == "pysvn"
    with pytest.raises(ConfigError, match=r"svn\.client must be one of auto, cli, pysvn"):
        load_config(write(tmp_path, MINIMAL + '[svn]\nclient = "subvertpy"\n'), env={})
