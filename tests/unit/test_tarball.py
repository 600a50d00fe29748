"""Unit tests for codecache.core.tarball: byte-for-byte reproducible archives (DESIGN.md §3)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from codecache.core.errors import CodecacheError, UnsupportedFile
from codecache.core.tarball import DIRECTORY, Entry, TarballInfo, build_tarball, write_tarball

MTIME = 1_700_000_000
FILES = {
    "bin/pilot.sh": b"#!/bin/sh\necho pilot\n",
    "lib/pilot/__init__.py": b"",
    "lib/pilot/main.py": b"print('pilot')\n" * 200,
    "lib/pilot/plugins/zeta.py": b"Z = 1\n",
    "lib/pilot/plugins/alpha.py": b"A = 1\n",
    "lib-extra/x.py": b"X = 1\n",
    "lib.cfg": b"[lib]\n",
    "etc/pilot.cfg": b"[pilot]\nretries = 3\n",
    "empty/.keep": b"",
    "caf\u00e9/r\u00e9sum\u00e9.txt": b"non-ASCII name\n",
    "deep/" + "d" * 60 + "/" + "f" * 80 + ".txt": b"long path needs a PAX record\n",
}
EXECUTABLE = "bin/pilot.sh"
SYMLINKS = {"run": "bin/pilot.sh", "lib/pilot/up": "../.."}


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def make_tree(root: Path, *, reverse: bool, file_mode: int, dir_mode: int, exec_mode: int,
              mtime: int, umask: int) -> Path:
    """The same tree every time, created in a chosen order with chosen modes and mtimes."""
    old = os.umask(umask)
    try:
        order = sorted(FILES, reverse=reverse)
        for relative in order:
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(FILES[relative])
            path.chmod(exec_mode if relative == EXECUTABLE else file_mode)
        for link, target in sorted(SYMLINKS.items(), reverse=reverse):
            (root / link).symlink_to(target)
        for path in [root, *root.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(dir_mode)
            os.utime(path, (mtime, mtime), follow_symlinks=False)
    finally:
        os.umask(old)
    return root


def archive(tree: Path, prefix: str = "pilot",
            mtime: int = MTIME) -> tuple[bytes, TarballInfo]:
    out = io.BytesIO()
    info = build_tarball(tree, prefix, mtime, out)
    return out.getvalue(), info


@pytest.fixture
def tree(tmp_path: Path, umask: None) -> Path:
    return make_tree(tmp_path / "a", reverse=False, file_mode=0o644, dir_mode=0o755,
                     exec_mode=0o755, mtime=1_000_000_000, umask=0o022)


def test_same_tree_gives_identical_bytes_regardless_of_order_mtime_and_umask(
        tmp_path: Path, tree: Path) -> None:
    other = make_tree(tmp_path / "b", reverse=True, file_mode=0o600, dir_mode=0o700,
                      exec_mode=0o700, mtime=1_500_000_000, umask=0o077)
    first, first_info = archive(tree)
    second, second_info = archive(other)
    assert first == second
    assert first_info == second_info


def test_info_hashes_the_compressed_and_the_uncompressed_bytes(tree: Path) -> None:
    data, info = archive(tree)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    tar_sha = hashlib.sha256(gzip.decompress(data)).hexdigest()
    assert info.tar_sha256 == tar_sha


def test_archive_changes_with_content_prefix_and_mtime(tmp_path: Path, tree: Path) -> None:
    base, _ = archive(tree)
    assert archive(tree, prefix="other")[0] != base
    assert archive(tree, mtime=MTIME + 1)[0] != base
    (tree / "lib.cfg").write_bytes(b"[lib]\n#\n")
    assert archive(tree)[0] != base


def test_gzip_header_has_no_name_and_zero_mtime(tree: Path) -> None:
    data, _ = archive(tree)
    assert data[:3] == b"\x1f\x8b\x08"   # gzip, deflate
    assert data[3] == 0                   # FLG: no FNAME, FCOMMENT, FEXTRA, FHCRC
    assert data[4:8] == bytes(4)          # MTIME 0


def test_entries_follow_the_archive_rules(tree: Path) -> None:
    data, _ = archive(tree)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        contents = {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in members if m.isfile()}
    names = [m.name for m in members]
    assert names[0] == "pilot"
    assert all(n == "pilot" or n.startswith("pilot/") for n in names)
    assert names == sorted(names, key=os.fsencode)
    expected = {"pilot", *(f"pilot/{p}" for p in FILES), *(f"pilot/{p}" for p in SYMLINKS)}
    for relative in FILES:
        parts = relative.split("/")
        expected.update("pilot/" + "/".join(parts[:i]) for i in range(1, len(parts)))
    assert set(names) == expected
    assert len(names) == len(expected)
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (MTIME, 0, 0, "", ""), m.name
        assert "atime" not in m.pax_headers and "ctime" not in m.pax_headers
        if m.isdir():
            assert m.mode == 0o755, m.name
        elif m.issym():
            assert m.mode == 0o777
            assert m.linkname == SYMLINKS[m.name.removeprefix("pilot/")]
        else:
            assert m.isfile(), m.name
            assert m.mode == (0o755 if m.name == f"pilot/{EXECUTABLE}" else 0o644), m.name
            assert contents[m.name] == FILES[m.name.removeprefix("pilot/")]


def test_byte_order_puts_dot_and_dash_siblings_before_the_directory_contents(
        tree: Path) -> None:
    data, _ = archive(tree)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = tar.getnames()
    # '-' (0x2d) < '.' (0x2e) < '/' (0x2f): byte order of the full path.
    assert names.index("pilot/lib") < names.index("pilot/lib-extra") \
        < names.index("pilot/lib.cfg") < names.index("pilot/lib/pilot")


def test_archive_is_pax_format(tree: Path) -> None:
    raw = gzip.decompress(archive(tree)[0])
    assert raw[257:265] == b"ustar\x0000"
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        members = tar.getmembers()
    long_name = next(m for m in members if m.name.endswith(".txt") and "deep" in m.name)
    assert long_name.pax_headers == {"path": long_name.name}


def test_a_fifo_is_refused(tree: Path) -> None:
    os.mkfifo(tree / "lib" / "pipe")
    with pytest.raises(UnsupportedFile, match="pipe") as info:
        archive(tree)
    assert isinstance(info.value, CodecacheError)


def test_an_empty_tree_is_just_the_top_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    data, _ = archive(tmp_path / "empty", prefix="p")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        (member,) = tar.getmembers()
    assert member.name == "p"
    assert member.isdir()


def large_tree(root: Path) -> Path:
    """Several MiB of barely compressible files: the tar stream passes the compressor thread
    in many chunks, and a file ends in the middle of one."""
    seed = hashlib.sha256(b"large tree").digest()
    for n in range(7):
        block = b"".join(hashlib.sha256(seed + bytes([n, i % 256, i // 256])).digest()
                         for i in range(700_000 // 32 + 64))
        path = root / f"part{n}" / "data.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(block[: 700_000 + 1234 * n])
    return root


def test_compressed_bytes_are_one_serial_deflate_of_the_tar_stream(tmp_path: Path) -> None:
    # The compressor runs in a thread of its own; the deflate data it writes must be exactly
    # one level-9 deflate of the whole tar stream, or releases built before would change.
    data, info = archive(large_tree(tmp_path / "big"))
    tar_stream = gzip.decompress(data)
    assert len(tar_stream) > 4 << 20
    assert hashlib.sha256(tar_stream).hexdigest() == info.tar_sha256
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert data[10:-8] == deflate.compress(tar_stream) + deflate.flush()


class FailingOutput(io.RawIOBase):
    """An output whose disk fills up after ``room`` bytes: a stand-in, because a real full
    disk needs a tmpfs mount, which an unprivileged container cannot make (the full-disk
    case with a real tmpfs is tests/check, where it skips if it cannot mount)."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.room -= len(data)
        if self.room < 0:
            raise OSError(28, "No space left on device")
        return len(data)


def test_a_failing_output_raises_from_the_compressor_and_leaves_no_thread(
        tmp_path: Path) -> None:
    big = large_tree(tmp_path / "big")
    with pytest.raises(OSError, match="No space left"):
        build_tarball(big, "p", MTIME, FailingOutput(room=1 << 20))  # type: ignore[arg-type]
    assert not [t for t in threading.enumerate() if t.name == "gzip"]


def test_a_refused_entry_after_large_files_leaves_no_thread(tmp_path: Path) -> None:
    big = large_tree(tmp_path / "big")
    os.mkfifo(big / "zz-pipe")
    with pytest.raises(UnsupportedFile, match="zz-pipe"):
        archive(big)
    assert not [t for t in threading.enumerate() if t.name == "gzip"]


@pytest.mark.parametrize("paths", [["", "b", "a"], ["", "a", "a"], ["a"], ["", "a", "", "b"]])
def test_entries_out_of_archive_order_are_refused(paths: list[str]) -> None:
    # A source hands its entries in the archive's order, top directory first (git_tree
    # sorts them); anything else is a bug that would change the bytes: refused, no thread.
    entries = [Entry(p, DIRECTORY) for p in paths]
    with pytest.raises(ValueError, match="out of order"):
        write_tarball(entries, "p", MTIME, io.BytesIO())
    assert not [t for t in threading.enumerate() if t.name == "gzip"]
