"""The signed index: serial always increases, re-signing, tamper detection (DESIGN.md §3)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from codecache.core.index import parse_time
from tests.conftest import (
    Origin,
    SvnRepo,
    assert_one_line_error,
    copy_origin,
    new_origin,
    write_config,
)


def serial_of(origin: Origin) -> int:
    """The serial ``status`` reports (it verifies the signature) and the file agrees."""
    payload = origin.status_json()
    stored = json.loads(origin.index_bytes() or b"null")
    assert stored["signed"]["serial"] == payload["serial"]
    serial: int = payload["serial"]
    return serial


def test_serial_increases_on_every_change(origin: Origin,
                                          svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, _ = svn_package
    serials = []
    before = int(time.time())
    origin.cli("sync", "--once", check=True)
    serials.append(serial_of(origin))
    repo.tag(name, "1.3.0")
    origin.cli("sync", "--once", check=True)  # publishes a new tag
    serials.append(serial_of(origin))
    origin.cli("publish", name, "1.0.0", "--channel", "production", check=True)
    serials.append(serial_of(origin))
    origin.cli("yank", name, "1.2.0", "--reason", "broken", check=True)
    serials.append(serial_of(origin))
    assert serials == sorted(set(serials)), serials
    # Time-based (DESIGN.md §5): max(highest + 1, now), so never below the clock.
    assert serials[0] >= before


def test_sync_without_changes_leaves_the_index_untouched(store_copy: Origin) -> None:
    before = store_copy.index_bytes()
    result = store_copy.cli("sync", "--once", check=True)
    assert "published" not in result.stdout
    assert store_copy.index_bytes() == before


def test_index_is_resigned_after_resign_interval_even_without_changes(origin: Origin) -> None:
    write_config(origin.dir, origin.package, origin.svn_url, signing={"resign_interval": "1s"})
    origin.cli("sync", "--once", check=True)
    first = origin.status_json()
    time.sleep(1.2)
    result = origin.cli("sync", "--once", check=True)
    assert "published" not in result.stdout
    second = origin.status_json()
    assert second["serial"] > first["serial"]
    assert parse_time(second["generated"]) > parse_time(first["generated"])
    assert parse_time(second["expires"]) > parse_time(first["expires"])
    assert second["packages"] == first["packages"]


def _change_sha256_digit(text: str) -> str:
    match = re.search(r'"sha256":\s*"([0-9a-f]{64})"', text)
    assert match is not None
    position = match.start(1) + 10
    digit = "1" if text[position] != "1" else "2"
    return text[:position] + digit + text[position + 1:]


def _flip_signature_char(text: str) -> str:
    match = re.search(r'"sig":\s*"([0-9a-f]{128})"', text)
    assert match is not None
    position = match.start(1) + 5
    return text[:position] + ("a" if text[position] != "a" else "b") + text[position + 1:]


def _bump_serial(text: str) -> str:
    return re.sub(r'"serial":\s*(\d+)', lambda m: f'"serial":{int(m.group(1)) + 1}', text)


def _extend_expiry(text: str) -> str:
    return re.sub(r'"expires":\s*"(\d)', lambda m: f'"expires":"{int(m.group(1)) + 1}', text)


def _roll_channel_back(text: str) -> str:
    document = json.loads(text)
    for package in document["signed"]["packages"].values():
        package["channels"]["latest"]["version"] = "1.0.0"
    return json.dumps(document, sort_keys=True, indent=1) + "\n"


def _change_minisig(text: str) -> str:
    return text.replace("trusted comment: codecache", "trusted comment: codecachE", 1)


def _unyank_via_true(text: str) -> str:
    return re.sub(r'"yanked":\s*false', '"yanked":true', text, count=1)


def _truncate(text: str) -> str:
    return text[: len(text) // 2]


TAMPER: dict[str, Callable[[str], str]] = {
    "sha256 digit": _change_sha256_digit,
    "signature char": _flip_signature_char,
    "serial": _bump_serial,
    "expires": _extend_expiry,
    "channel version": _roll_channel_back,
    "release minisig": _change_minisig,
    "yanked flag": _unyank_via_true,
    "truncated": _truncate,
}


@pytest.fixture(scope="module")
def pending_template(svn_server: SvnRepo, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    """A synced origin (1.0.0, 1.2.0) of its own package, with tag 1.3.0 waiting in svn."""
    template = new_origin(svn_server, tmp_path_factory.mktemp("pending") / "origin")
    svn_server.tag(template.package, "1.3.0")
    return template


@pytest.mark.parametrize("tamper", TAMPER.values(), ids=TAMPER.keys())
def test_edited_index_is_detected_and_never_overwritten(
        pending_template: Origin, tmp_path: Path, tamper: Callable[[str], str]) -> None:
    origin = copy_origin(pending_template, tmp_path / "copy")
    name = origin.package
    index = origin.store / "index.json"
    tampered = tamper(index.read_text())
    assert tampered != index.read_text()
    index.write_text(tampered)

    line = assert_one_line_error(origin.cli("status"), 1)
    assert "index" in line
    assert_one_line_error(origin.cli("status", "--json"), 1)
    assert_one_line_error(origin.cli("sync", "--once"), 1)  # 1.3.0 is waiting in svn
    assert index.read_text() == tampered
    assert_one_line_error(origin.cli("publish", name, "1.0.0", "--channel", "prod"), 1)
    assert_one_line_error(origin.cli("yank", name, "1.0.0", "--reason", "x"), 1)
    assert index.read_text() == tampered
    assert not list((origin.store / "signatures" / name).glob("1.3.0*"))


def test_untampered_copy_of_the_pending_template_does_publish(pending_template: Origin,
                                                               tmp_path: Path) -> None:
    """The control for the test above: without the edit, sync publishes 1.3.0."""
    origin = copy_origin(pending_template, tmp_path / "copy")
    result = origin.cli("sync", "--once", check=True)
    assert f"published {origin.package} 1.3.0" in result.stdout
