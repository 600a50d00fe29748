"""Reproducible releases (DESIGN.md §3, §8): same tag → same bytes and signatures anywhere."""

from __future__ import annotations

import gzip
import hashlib
import stat
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codecache.core.index import format_time, parse_time
from tests.conftest import Origin, SvnRepo, make_origin, run_cli, write_config

BLOCK = 512


@dataclass
class RawEntry:
    """One tar member as its header bytes say it, PAX records applied."""

    name: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    typeflag: bytes
    linkname: str
    uname: bytes
    gname: bytes
    pax: dict[str, str]
    data: bytes


def _octal(field: bytes) -> int:
    return int(field.strip(b"\0 ") or b"0", 8)


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    while data:
        length = int(data.split(b" ", 1)[0])
        key, _, value = data[:length].split(b" ", 1)[1].rstrip(b"\n").partition(b"=")
        records[key.decode()] = value.decode()
        data = data[length:]
    return records


def raw_entries(tar: bytes) -> list[RawEntry]:
    """Parse a tar stream by hand, so nothing is normalised away (trailing '/', modes)."""
    entries: list[RawEntry] = []
    pax: dict[str, str] = {}
    offset = 0
    while offset + BLOCK <= len(tar) and tar[offset:offset + BLOCK] != bytes(BLOCK):
        header = tar[offset:offset + BLOCK]
        assert header[257:265] == b"ustar\x0000", "not a POSIX (ustar/PAX) header"
        size = _octal(header[124:136])
        data = tar[offset + BLOCK:offset + BLOCK + size]
        offset += BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK
        typeflag = header[156:157]
        if typeflag in (b"x", b"g"):
            pax.update(_pax_records(data))
            continue
        prefix = header[345:500].rstrip(b"\0").decode()
        name = header[0:100].rstrip(b"\0").decode()
        entries.append(RawEntry(
            name=pax.get("path", f"{prefix}/{name}" if prefix else name),
            mode=_octal(header[100:108]), uid=_octal(header[108:116]),
            gid=_octal(header[116:124]), size=size, mtime=_octal(header[136:148]),
            typeflag=typeflag, linkname=header[157:257].rstrip(b"\0").decode(),
            uname=header[265:297], gname=header[297:329], pax=pax, data=data))
        pax = {}
    return entries


def commit_time(repo: SvnRepo, url: str) -> tuple[int, int]:
    """(last-changed revision, its commit time) of ``url``, as svn reports them."""
    info = repo.svn("info", "--xml", url)
    commit = ET.fromstring(info).find("entry/commit")  # noqa: S314 - our own svn client
    assert commit is not None
    return int(commit.get("revision", "")), parse_time(commit.findtext("date") or "")


def release_files(origin: Origin, version: str) -> tuple[dict[str, Any], bytes, bytes]:
    """(index record, blob bytes, signature file bytes) of one release."""
    record = origin.status_json()["packages"][origin.package]["releases"][version]
    blob = (origin.store / "blobs" / "sha256" / record["sha256"]).read_bytes()
    sig = (origin.store / "signatures" / origin.package / f"{version}.minisig").read_bytes()
    return record, blob, sig


def tag_with_keywords(repo: SvnRepo, name: str) -> None:
    """Tags 1.0.0 and 1.2.0; 1.2.0 expands $Date$ (local time unless svn runs with TZ=UTC)."""
    repo.tag(name, "1.0.0")
    script = repo.wc / name / "bin" / "pilot.sh"
    script.write_text(script.read_text() + "# $Date$\n")
    repo.svn("propset", "-q", "svn:keywords", "Date Id", str(script))
    (repo.wc / name / "etc" / "windows.bat").write_bytes(b"@echo off\r\nrem crlf kept\r\n")
    repo.svn("add", "-q", str(repo.wc / name / "etc" / "windows.bat"))
    repo.svn("commit", "-q", "-m", "keywords", str(repo.wc / name))
    repo.tag(name, "1.2.0")


def test_same_tag_in_two_stores_gives_identical_tarballs_and_signatures(
        tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, url = svn_package
    tag_with_keywords(repo, name)
    first = make_origin(tmp_path / "a", name, url)
    second = make_origin(tmp_path / "b", name, url, keys_from=tmp_path / "a")
    first.cli("sync", "--once", check=True)
    time.sleep(1.1)  # another wall-clock second must not leak into any byte
    result = run_cli("sync", "--once", config=second.config, umask=0o077,
                     env={"TZ": "Asia/Tokyo", "LC_ALL": "C"})
    assert result.returncode == 0, result.stderr
    # The umask really applied: the lock file is created 0644 & ~umask (the store's
    # directories and published files are chmod-ed explicitly, so they can't show it).
    assert stat.S_IMODE((second.store / ".lock").stat().st_mode) == 0o600

    for version in ("1.0.0", "1.2.0"):
        record_a, blob_a, sig_a = release_files(first, version)
        record_b, blob_b, sig_b = release_files(second, version)
        assert blob_a == blob_b
        assert sig_a == sig_b
        assert record_a == record_b  # sha256, size, tar_sha256, minisig, date, revision ...
        assert sig_a.decode() == record_a["minisig"]
        assert hashlib.sha256(blob_a).hexdigest() == record_a["sha256"]
        assert len(blob_a) == record_a["size"]
    # The keyword really was expanded, in UTC: the bytes depend on svn running with TZ=UTC.
    _, blob, _ = release_files(second, "1.2.0")
    script = next(e for e in raw_entries(gzip.decompress(blob)) if e.name.endswith("pilot.sh"))
    assert b"$Date: " in script.data
    assert b" +0000 (" in script.data


def test_tarball_follows_the_archive_rules_exactly(
        tmp_path: Path, svn_package: tuple[SvnRepo, str, str]) -> None:
    repo, name, url = svn_package
    tag_with_keywords(repo, name)
    origin = make_origin(tmp_path / "o", name, url)
    origin.cli("sync", "--once", check=True)
    record, blob, _ = release_files(origin, "1.2.0")
    revision, committed = commit_time(repo, f"{url}/tags/1.2.0")
    assert record["revision"] == revision
    assert record["date"] == format_time(committed)
    assert record["svn_url"] == f"{url}/tags/1.2.0"

    # gzip header: magic, deflate, FLG 0 (no FNAME/FCOMMENT/FEXTRA), MTIME 0.
    assert blob[:4] == b"\x1f\x8b\x08\x00"
    assert blob[4:8] == bytes(4)
    tar = gzip.decompress(blob)
    assert record["tar_sha256"] == hashlib.sha256(tar).hexdigest()

    entries = raw_entries(tar)
    p = name
    assert [(e.name, e.typeflag, e.mode) for e in entries] == [
        (f"{p}/", b"5", 0o755),
        (f"{p}/bin/", b"5", 0o755),
        (f"{p}/bin/pilot.sh", b"0", 0o755),            # svn:executable
        (f"{p}/etc/", b"5", 0o755),
        (f"{p}/etc/pilot.cfg", b"0", 0o644),
        (f"{p}/etc/windows.bat", b"0", 0o644),
        (f"{p}/lib/", b"5", 0o755),
        (f"{p}/lib/pilot/", b"5", 0o755),
        (f"{p}/lib/pilot/__init__.py", b"0", 0o644),
        (f"{p}/lib/pilot/main.py", b"0", 0o644),
        (f"{p}/lib/pilot/plugins/", b"5", 0o755),
        (f"{p}/lib/pilot/plugins/alpha.py", b"0", 0o644),
        (f"{p}/lib/pilot/plugins/zeta.py", b"0", 0o644),
        (f"{p}/run", b"2", 0o777),                     # symlink stored as symlink
    ]
    names = [e.name.rstrip("/") for e in entries]
    assert names == sorted(names, key=str.encode)
    for e in entries:
        assert (e.mtime, e.uid, e.gid) == (committed, 0, 0), e.name
        assert e.uname == bytes(32) and e.gname == bytes(32), e.name
        assert not {"atime", "ctime"} & set(e.pax), e.name
    by_name = {e.name: e for e in entries}
    assert by_name[f"{p}/run"].linkname == "bin/pilot.sh"
    assert by_name[f"{p}/etc/pilot.cfg"].data == b"[pilot]\nretries = 3\n"  # native eol → LF
    assert by_name[f"{p}/etc/windows.bat"].data == b"@echo off\r\nrem crlf kept\r\n"
    # The standard library reads it back the same way.
    with tarfile.open(origin.store / "blobs" / "sha256" / record["sha256"], "r:gz") as tf:
        assert tf.getnames() == names


def test_tar_prefix_names_the_top_directory(tmp_path: Path, origin: Origin) -> None:
    write_config(origin.dir, origin.package, origin.svn_url, package_keys={"tar_prefix": "code"})
    origin.cli("sync", "--once", check=True)
    _, blob, _ = release_files(origin, "1.2.0")
    names = [e.name for e in raw_entries(gzip.decompress(blob))]
    assert names[0] == "code/"
    assert all(n.startswith("code/") for n in names)


def test_export_ignores_externals_and_keeps_non_ascii_names_under_any_locale(
        tmp_path: Path, svn_package: tuple[SvnRepo, str, str], svn_server: SvnRepo) -> None:
    repo, name, url = svn_package
    trunk = repo.wc / name
    repo.svn("update", "-q", str(trunk))  # a property change needs an up-to-date directory
    (trunk / "lib" / "caf\u00e9.py").write_text("# non-ASCII file name\n")
    repo.svn("add", "-q", str(trunk / "lib" / "caf\u00e9.py"))
    repo.svn("propset", "-q", "svn:externals", f"vendored {svn_server.url}/{name}/trunk/etc",
             str(trunk))
    repo.svn("commit", "-q", "-m", "externals and a non-ASCII name", str(trunk))
    repo.tag(name, "1.0.0")
    origin = make_origin(tmp_path / "o", name, url)
    result = origin.cli("sync", "--once", env={"LC_ALL": "C", "LANG": "C"})
    assert result.returncode == 0, result.stderr
    _, blob, _ = release_files(origin, "1.0.0")
    names = [e.name for e in raw_entries(gzip.decompress(blob))]
    assert f"{name}/lib/caf\u00e9.py" in names
    assert not [n for n in names if "vendored" in n]
