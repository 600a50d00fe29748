"""Unit tests for codecache.core.names: name charsets and the natural version order."""

from __future__ import annotations

import random

import pytest

from codecache.core.errors import InvalidName
from codecache.core.names import (
    blob_url_path,
    check_channel,
    check_package,
    check_version,
    etag_for,
    highest,
    is_channel,
    is_package,
    is_sha256,
    is_version,
    sha256_of_etag,
    version_key,
)

# Each list is in ascending natural order (names.py docstring).
ORDERED = [
    ["1.9.2", "1.10.0"],
    ["1.0", "1.0.1"],                                   # a number after a prefix is later
    ["1.0.0rc1", "1.0.0"],                              # letters after a prefix: pre-release
    ["1.0.0-beta2", "1.0.0"],
    ["1.0.0", "1.0.0+hotfix1"],                         # build metadata is later
    ["1.0.0a1", "1.0.0b1", "1.0.0rc1", "1.0.0"],        # labels alphabetically
    ["1.0.0rc2", "1.0.0rc10"],                          # label numbers numerically
    ["1.0.0rc10", "1.0.0", "1.0.1rc1", "1.0.1"],
    ["1-0", "1.0"],                                     # a tie is broken by the text
    ["0.9", "0.10", "0.99", "1.0", "2", "10"],
]


@pytest.mark.parametrize("ascending", ORDERED, ids=" < ".join)
def test_versions_sort_in_natural_order(ascending: list[str]) -> None:
    shuffled = list(reversed(ascending))
    assert sorted(shuffled, key=version_key) == ascending
    assert highest(shuffled) == ascending[-1]


def test_version_order_is_total_and_independent_of_input_order() -> None:
    versions = ["1.10.0", "1.9.2", "1.0.1", "1.0.0rc1", "1.0.0", "1.0.0+hotfix1", "1.0",
                "1-0", "1_0", "2.0.0-beta2", "2.0.0b2", "10", "1.10"]
    expected = sorted(versions, key=version_key)
    rng = random.Random(7)  # noqa: S311 - shuffles test input, not crypto
    for _ in range(20):
        rng.shuffle(versions)
        assert sorted(versions, key=version_key) == expected
    keys = [version_key(v) for v in versions]
    assert len(set(keys)) == len(keys)


def test_late_hotfix_is_not_the_highest_version() -> None:
    assert highest(["1.9.2", "1.10.0", "1.0.1"]) == "1.10.0"


def test_highest_of_no_versions_is_none() -> None:
    assert highest([]) is None


@pytest.mark.parametrize("name", ["pilot", "p", "0pilot", "pilot-ng_2.x", "a" * 64])
def test_valid_package_names(name: str) -> None:
    assert is_package(name)
    assert check_package(name) == name


@pytest.mark.parametrize("name", ["", "Pilot", "-pilot", ".pilot", "_pilot", "a" * 65,
                                  "pi lot", "pi/lot", "..", "pilot\n", "pilöt"])
def test_invalid_package_names(name: str) -> None:
    assert not is_package(name)
    with pytest.raises(InvalidName) as info:
        check_package(name)
    assert info.value.kind == "package"
    assert info.value.value == name


@pytest.mark.parametrize("name", ["latest", "production", "rc", "a", "prod-2", "a" * 32])
def test_valid_channel_names(name: str) -> None:
    assert is_channel(name)
    assert check_channel(name) == name


@pytest.mark.parametrize("name", ["", "2prod", "Prod", "prod_2", "prod.2", "-prod", "a" * 33,
                                  "latest\n"])
def test_invalid_channel_names(name: str) -> None:
    assert not is_channel(name)
    with pytest.raises(InvalidName):
        check_channel(name)


@pytest.mark.parametrize("name", ["1.0.0", "1.0.0rc1", "1.0.0-beta2", "1.0.0+hotfix1",
                                  "bad_tag", "V1", "a" * 128])
def test_valid_versions(name: str) -> None:
    assert is_version(name)
    assert check_version(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".1", "+1", "_1", "1 0", "1/0", "..", "1.0\n",
                                  "a" * 129, "1.0~rc1"])
def test_invalid_versions(name: str) -> None:
    assert not is_version(name)
    with pytest.raises(InvalidName):
        check_version(name)


def test_sha256_must_be_64_lowercase_hex() -> None:
    assert is_sha256("0123456789abcdef" * 4)
    assert not is_sha256("0123456789ABCDEF" * 4)
    assert not is_sha256("0" * 63)
    assert not is_sha256("0" * 65)
    assert not is_sha256("g" * 64)


def test_the_etag_and_blob_url_forms_read_back() -> None:
    sha = "ab" * 32
    assert etag_for(sha) == f'"sha256-{sha}"'
    assert blob_url_path(sha) == f"/blobs/sha256/{sha}"
    assert sha256_of_etag(etag_for(sha)) == sha
    assert sha256_of_etag("W/" + etag_for(sha)) == sha   # a cache may weaken it
    for other in ['"sha256-ab12"', f"sha256-{sha}", f'"md5-{sha}"', etag_for(sha) + "x", ""]:
        assert sha256_of_etag(other) is None, other
