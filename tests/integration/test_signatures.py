"""Release signatures interoperate with the stock minisign tool; ``verify`` and ``keygen``."""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import (
    Origin,
    SvnRepo,
    assert_one_line_error,
    require,
    run_cli,
    write_config,
)


def minisign(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require("minisign"), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30, check=False, cwd=cwd)


def export_release(origin: Origin, version: str, directory: Path) -> tuple[Path, Path]:
    """Copy a release's blob and its signature (from ``status --json``) out of the store."""
    record = origin.status_json()["packages"][origin.package]["releases"][version]
    directory.mkdir(parents=True, exist_ok=True)
    tarball = directory / f"{origin.package}-{version}.tar.gz"
    shutil.copyfile(origin.store / "blobs" / "sha256" / record["sha256"], tarball)
    sig = directory / f"{tarball.name}.minisig"
    sig.write_text(record["minisig"])
    return tarball, sig


def keygen(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    secret, public = directory / "k.key", directory / "k.pub"
    run_cli("keygen", "--secret-key", str(secret), "--public-key", str(public), check=True)
    return secret, public


# --- stock minisign verifies what we write --------------------------------------------------


def test_stock_minisign_verifies_every_release_signature(store_copy: Origin,
                                                          tmp_path: Path) -> None:
    origin = store_copy
    releases = origin.status_json()["packages"][origin.package]["releases"]
    assert set(releases) == {"1.0.0", "1.2.0"}
    for version, record in releases.items():
        tarball, sig = export_release(origin, version, tmp_path / "out")
        result = minisign("-V", "-p", str(origin.public_key), "-m", str(tarball), "-x", str(sig))
        assert result.returncode == 0, result.stderr
        assert f"version={version} " in result.stdout
        # The plain .minisig file in the store is the same signature.
        stored = origin.store / "signatures" / origin.package / f"{version}.minisig"
        assert stored.read_text() == record["minisig"]
        result = minisign("-V", "-p", str(origin.public_key), "-m", str(tarball),
                          "-x", str(stored))
        assert result.returncode == 0, result.stderr


def test_trusted_comment_binds_package_version_hash_size_and_svn(store_copy: Origin,
                                                                  tmp_path: Path) -> None:
    origin = store_copy
    releases = origin.status_json()["packages"][origin.package]["releases"]
    for version, record in releases.items():
        tarball, sig = export_release(origin, version, tmp_path / "out")
        data = tarball.read_bytes()
        url = f"{origin.svn_url}/tags/{version}"
        assert record["svn_url"] == url
        expected = (f"codecache package={origin.package} version={version} "
                    f"sha256={hashlib.sha256(data).hexdigest()} size={len(data)} "
                    f"svn={url}@{record['revision']}")
        assert sig.read_text().splitlines()[2] == f"trusted comment: {expected}"
        result = minisign("-V", "-p", str(origin.public_key), "-m", str(tarball), "-x", str(sig))
        assert f"Trusted comment: {expected}\n" in result.stdout


def test_stock_minisign_rejects_a_changed_byte(store_copy: Origin, tmp_path: Path) -> None:
    tarball, sig = export_release(store_copy, "1.2.0", tmp_path / "out")
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0x01
    tarball.write_bytes(bytes(data))
    result = minisign("-V", "-p", str(store_copy.public_key), "-m", str(tarball),
                      "-x", str(sig))
    assert result.returncode != 0


# --- codecache verify -------------------------------------------------------------------------


def test_verify_accepts_the_release_and_names_it(store_copy: Origin, tmp_path: Path) -> None:
    origin = store_copy
    tarball, _ = export_release(origin, "1.2.0", tmp_path / "out")
    # default signature path FILE.minisig; explicit key; no config needed
    result = run_cli("verify", str(tarball), "--key", str(origin.public_key))
    assert result.returncode == 0, result.stderr
    assert f"package={origin.package}" in result.stdout
    assert "version=1.2.0" in result.stdout


def test_verify_without_key_uses_the_configured_trusted_keys(store_copy: Origin,
                                                             tmp_path: Path) -> None:
    origin = store_copy
    tarball, sig = export_release(origin, "1.0.0", tmp_path / "out")
    result = origin.cli("verify", str(tarball), "--sig", str(sig))
    assert result.returncode == 0, result.stderr
    assert "version=1.0.0" in result.stdout
    # A config that trusts another key refuses the same file.
    other = tmp_path / "other"
    keygen(other / "keys")
    (other / "keys" / "k.pub").rename(other / "keys" / "codecache.pub")
    config = write_config(other, origin.package, origin.svn_url)
    assert_one_line_error(run_cli("verify", str(tarball), config=config), 1)


def test_verify_rejects_a_one_byte_change(store_copy: Origin, tmp_path: Path) -> None:
    tarball, _ = export_release(store_copy, "1.2.0", tmp_path / "out")
    data = bytearray(tarball.read_bytes())
    data[-1] ^= 0x01
    tarball.write_bytes(bytes(data))
    result = run_cli("verify", str(tarball), "--key", str(store_copy.public_key))
    line = assert_one_line_error(result, 1)
    assert "does not match" in line
    assert result.stdout == ""


def test_verify_rejects_a_wrong_key(store_copy: Origin, tmp_path: Path) -> None:
    tarball, _ = export_release(store_copy, "1.2.0", tmp_path / "out")
    _, other_public = keygen(tmp_path / "other")
    result = run_cli("verify", str(tarball), "--key", str(other_public))
    assert "not trusted" in assert_one_line_error(result, 1)


def test_verify_rejects_the_signature_of_another_release(store_copy: Origin,
                                                         tmp_path: Path) -> None:
    tarball, _ = export_release(store_copy, "1.2.0", tmp_path / "new")
    _, other_sig = export_release(store_copy, "1.0.0", tmp_path / "old")
    result = run_cli("verify", str(tarball), "--sig", str(other_sig),
                     "--key", str(store_copy.public_key))
    assert_one_line_error(result, 1)


def test_verify_rejects_a_garbled_signature_file(store_copy: Origin, tmp_path: Path) -> None:
    tarball, sig = export_release(store_copy, "1.2.0", tmp_path / "out")
    sig.write_text("untrusted comment: x\nnot base64!\ntrusted comment: y\nAAAA\n")
    result = run_cli("verify", str(tarball), "--key", str(store_copy.public_key))
    assert_one_line_error(result, 1)


def test_verify_of_a_missing_signature_is_a_usage_error(tmp_path: Path) -> None:
    _, public = keygen(tmp_path / "keys")
    (tmp_path / "file.tar.gz").write_bytes(b"x")
    result = run_cli("verify", str(tmp_path / "file.tar.gz"), "--key", str(public))
    assert "file.tar.gz.minisig" in assert_one_line_error(result, 2)


# --- keygen and interoperability with minisign keys ------------------------------------------


def test_keygen_creates_an_owner_only_secret_key_even_with_umask_000(tmp_path: Path) -> None:
    secret, public = tmp_path / "k.key", tmp_path / "k.pub"
    result = run_cli("keygen", "--secret-key", str(secret), "--public-key", str(public),
                     umask=0o000)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    first, second = public.read_text().splitlines()
    assert first.startswith("untrusted comment: minisign public key ")
    assert first.split()[-1] in result.stdout  # the key id is reported
    assert len(second) == 56  # base64 of 42 bytes


def test_keygen_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    secret, public = keygen(tmp_path)
    before = secret.read_bytes(), public.read_bytes()
    result = run_cli("keygen", "--secret-key", str(secret), "--public-key", str(public))
    assert "already exists" in assert_one_line_error(result, 2)
    assert (secret.read_bytes(), public.read_bytes()) == before


def test_stock_minisign_signs_with_our_secret_key(tmp_path: Path) -> None:
    secret, public = keygen(tmp_path / "keys")
    message = tmp_path / "message.txt"
    message.write_text("signed by the stock tool\n")
    result = minisign("-S", "-s", str(secret), "-m", str(message), "-t", "stock comment")
    assert result.returncode == 0, result.stderr
    assert minisign("-V", "-p", str(public), "-m", str(message)).returncode == 0
    result = run_cli("verify", str(message), "--key", str(public))
    assert result.returncode == 0, result.stderr
    message.write_text("signed by the stock tool!\n")
    assert_one_line_error(run_cli("verify", str(message), "--key", str(public)), 1)


def test_an_origin_can_sign_with_a_key_made_by_minisign(
        tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, url = svn_package
    repo.tag(name, "1.0.0")
    directory = tmp_path / "origin"
    (directory / "keys").mkdir(parents=True)
    secret, public = directory / "keys" / "codecache.key", directory / "keys" / "codecache.pub"
    result = minisign("-G", "-W", "-s", str(secret), "-p", str(public))
    assert result.returncode == 0, result.stderr
    secret.chmod(0o600)
    config = write_config(directory, name, url)
    origin = Origin(directory, config, directory / "store", secret, public, name, url)
    origin.cli("sync", "--once", check=True)
    tarball, sig = export_release(origin, "1.0.0", tmp_path / "out")
    result = minisign("-V", "-p", str(public), "-m", str(tarball), "-x", str(sig))
    assert result.returncode == 0, result.stderr
    assert run_cli("verify", str(tarball), "--key", str(public)).returncode == 0


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_sync_refuses_a_secret_key_others_can_read(store_copy: Origin, mode: int) -> None:
    store_copy.secret_key.chmod(mode)
    before = store_copy.index_bytes()
    line = assert_one_line_error(store_copy.cli("sync", "--once"), 3)
    assert "group/others" in line
    assert "chmod 600" in line
    assert store_copy.index_bytes() == before


def test_verify_of_a_directory_is_a_usage_error(store_copy: Origin, tmp_path: Path) -> None:
    _, sig = export_release(store_copy, "1.2.0", tmp_path / "out")
    (tmp_path / "adir").mkdir()
    result = run_cli("verify", str(tmp_path / "adir"), "--sig", str(sig),
                     "--key", str(store_copy.public_key))
    line = assert_one_line_error(result, 2)
    assert "internal error" not in line
    assert "adir" in line
