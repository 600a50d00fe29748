"""An edge serves the blobs it does not pin from its bounded cache, verified before the
first byte, fetched once however many ask (DESIGN.md §5, edge).

Real processes: a served origin of several releases with incompressible payloads (the
upstream, its access log the count of what crossed the "WAN"), edges (``codecache serve``
with ``role = "edge"``), real curl and wget. Each test starts its own edge on an empty
store; the origin is shared by the module and never changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SvnRepo, copy_origin
from tests.edge.conftest import start_edge
from tests.edge.serving import (
    blob_bytes_on_disk,
    cached_files,
    curl_at_once,
    edge_facts,
    fetches,
    payload_origin,
    release,
    seed_from_env,
)
from tests.harness.binaries import require
from tests.harness.clients import curl, wget
from tests.http.helpers import Server, running

pytestmark = pytest.mark.timeout(180)

BIG = "0.1.0"                                   # never a channel target
STREAM = [f"1.{n}.0" for n in range(6)]         # 1.5.0 is latest: pinned
TARGET = STREAM[-1]
SIZES = {BIG: 3_000_000, **{v: 150_000 for v in STREAM}}


@pytest.fixture(scope="module")
def upstream(svn_server: SvnRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require("curl")
    origin = payload_origin(svn_server, tmp_path_factory.mktemp("edge-serving") / "origin",
                            SIZES, seed=19)
    with running(origin) as server:
        yield server


def test_many_concurrent_requests_for_a_never_seen_release_make_one_upstream_fetch(
        upstream: Server, tmp_path: Path) -> None:
    sha256, size = release(upstream, BIG)
    edge = start_edge(tmp_path / "edge", upstream.origin, [upstream.base],
                      env={"CODECACHE_SERVER_WORKERS": "2"})
    try:
        url = edge.url(f"/{upstream.package}/releases/{BIG}.tar.gz")
        clients = 48
        answers = curl_at_once(url, clients, tmp_path)
        assert {(status, hashlib.sha256(got).hexdigest()) for status, got in answers} == \
            {("200", sha256)}
        assert fetches(upstream, sha256) == 1
        facts: dict[str, int] = {}

        def counted() -> bool:   # by both workers (each writes its counts every tick)
            facts.update(edge_facts(edge))
            return facts["hits"] + facts["misses"] == clients

        edge.wait_for("both workers counted their answers", counted, 10)
        print(f"{clients} clients: {facts['misses']} waited for the fill, {facts['hits']} hits")
        # The one fill, and the channel target the pull loop fetched.
        assert facts["upstream_bytes"] == size + release(upstream, TARGET)[1]
    finally:
        edge.stop()


def test_head_and_range_of_a_never_seen_blob_are_answered_after_its_fill(
        upstream: Server, tmp_path: Path) -> None:
    edge = start_edge(tmp_path / "edge", upstream.origin, [upstream.base])
    try:
        head_sha, head_size = release(upstream, STREAM[0])
        head = curl(edge.url(f"/{upstream.package}/releases/{STREAM[0]}.tar.gz"), "-I",
                    cwd=tmp_path)
        assert (head.status, head.header("content-length")) == (200, str(head_size))
        assert head.header("etag") == f'"sha256-{head_sha}"'
        assert fetches(upstream, head_sha) == 1          # filled (and checked) first
        range_sha, _ = release(upstream, STREAM[1])
        part = curl(edge.url(f"/{upstream.package}/releases/{STREAM[1]}.tar.gz"),
                    "-H", "Range: bytes=100-199", cwd=tmp_path)
        whole = upstream.request(f"/{upstream.package}/releases/{STREAM[1]}.tar.gz").body
        assert (part.status, part.body) == (206, whole[100:200])
        assert fetches(upstream, range_sha) == 1
    finally:
        edge.stop()


def test_a_small_cached_blob_is_answered_from_memory_and_a_rotten_one_fetched_again(
        upstream: Server, tmp_path: Path) -> None:
    """After its first hit, a small blob is answered from memory, as a replica's: its bytes
    hashed as they were read. Made visible by rot that keeps its file's identity (only the
    scrub would find it): a blob still sent from its file would send the rotten bytes. Once
    the file changes, the next watch tick drops the copy; the file is hashed again, found
    rotten, dropped and fetched again."""
    sha256, size = release(upstream, STREAM[0])
    url_path = f"/{upstream.package}/releases/{STREAM[0]}.tar.gz"
    good = upstream.request(url_path).body
    edge = start_edge(tmp_path / "edge", upstream.origin, [upstream.base])
    try:
        before = fetches(upstream, sha256)
        assert curl(edge.url(url_path), cwd=tmp_path).body == good   # filled, then read
        (cached,) = cached_files(edge)
        identity = cached.stat()
        with cached.open("r+b") as fh:
            fh.seek(size // 2)
            byte = fh.read(1)
            fh.seek(size // 2)
            fh.write(bytes([byte[0] ^ 0x01]))
        os.utime(cached, ns=(identity.st_atime_ns, identity.st_mtime_ns))
        kept = cached.stat()
        assert (kept.st_mtime_ns, kept.st_size, kept.st_ino) == \
            (identity.st_mtime_ns, identity.st_size, identity.st_ino)
        assert curl(edge.url(url_path), cwd=tmp_path).body == good   # the fast path
        part = curl(edge.url(url_path), "-H", "Range: bytes=0-", cwd=tmp_path)
        assert (part.status, part.body) == (206, good)               # the handler
        head = curl(edge.url(url_path), "-I", cwd=tmp_path)
        assert (head.status, head.header("content-length")) == (200, str(size))
        assert fetches(upstream, sha256) == before + 1

        cached.touch()   # the file changes (mtime): hashed again at its next request

        def fetched_again() -> bool:
            got = wget("-O", "pilot.tar.gz", edge.url(url_path), cwd=tmp_path)
            assert got.returncode == 0, got.stderr
            assert (tmp_path / "pilot.tar.gz").read_bytes() == good
            return fetches(upstream, sha256) == before + 2

        edge.wait_for("the edge fetches the rotten blob again", fetched_again, 10)
        assert "dropped" in edge.log_text()
    finally:
        edge.stop()


def test_a_blob_evicted_is_not_answered_from_memory(upstream: Server, tmp_path: Path) -> None:
    (first, first_size), (second, second_size) = (release(upstream, v) for v in STREAM[:2])
    bound = release(upstream, TARGET)[1] + max(first_size, second_size) + 1000
    edge = start_edge(tmp_path / "edge", upstream.origin, [upstream.base], cache_size=bound)
    try:
        paths = [f"/{upstream.package}/releases/{v}.tar.gz" for v in STREAM[:2]]
        assert hashlib.sha256(edge.request(paths[0]).body).hexdigest() == first
        before = fetches(upstream, first)
        assert hashlib.sha256(edge.request(paths[1]).body).hexdigest() == second  # evicts
        assert [p.stat().st_size for p in cached_files(edge)] == [second_size]
        assert hashlib.sha256(edge.request(paths[0]).body).hexdigest() == first
        assert fetches(upstream, first) == before + 1   # fetched again: not from memory
    finally:
        edge.stop()


def test_the_bound_holds_under_a_stream_of_releases(upstream: Server, tmp_path: Path) -> None:
    target_sha, target_size = release(upstream, TARGET)
    sizes = [release(upstream, v)[1] for v in STREAM[:-1]]
    # Room for the channel target and two more releases: the stream is twice that.
    bound = target_size + sizes[0] + sizes[1] + 1000
    assert sum(sizes) + target_size > 2 * bound - target_size
    edge = start_edge(tmp_path / "edge", upstream.origin, [upstream.base], cache_size=bound)
    try:
        for _ in range(2):
            for version in STREAM[:-1]:
                sha256, _ = release(upstream, version)
                reply = edge.request(f"/{upstream.package}/releases/{version}.tar.gz")
                assert hashlib.sha256(reply.body).hexdigest() == sha256
                assert blob_bytes_on_disk(edge) <= bound
                # The channel target is never evicted.
                assert (edge.origin.store / "blobs" / "sha256" / target_sha).exists()
        # What /readyz reports (read every watch tick) is what is on disk.
        edge.wait_for("the edge reports the bytes it holds",
                      lambda: edge_facts(edge)["cache_bytes"] == blob_bytes_on_disk(edge), 10)
        facts = edge_facts(edge)
        assert facts["cache_limit_bytes"] == bound
        assert facts["reserved_bytes"] == target_size
        assert facts["evictions"] >= 2 * len(sizes) - 2
        reply = edge.request(f"/{upstream.package}/latest.tar.gz")
        assert hashlib.sha256(reply.body).hexdigest() == target_sha
    finally:
        edge.stop()


def test_a_release_larger_than_the_cache_is_served_verified_and_not_kept(
        upstream: Server, tmp_path: Path) -> None:
    sha256, size = release(upstream, BIG)
    bound = release(upstream, TARGET)[1] + release(upstream, STREAM[0])[1] + 1000
    assert size > bound
    edge = start_edge(tmp_path / "edge", upstream.origin, [upstream.base], cache_size=bound)
    try:
        held = f"/{upstream.package}/releases/{STREAM[0]}.tar.gz"
        assert edge.request(held).status == 200
        before = fetches(upstream, sha256)
        answers = curl_at_once(edge.url(f"/{upstream.package}/releases/{BIG}.tar.gz"), 8,
                               tmp_path)
        assert {(status, hashlib.sha256(got).hexdigest()) for status, got in answers} == \
            {("200", sha256)}
        assert fetches(upstream, sha256) == before + 1   # one fill for the eight
        # Not kept, and it evicted nothing: the bound holds.
        assert [p.stat().st_size for p in cached_files(edge)] == [release(upstream,
                                                                          STREAM[0])[1]]
        assert list((edge.origin.store / "edge-cache" / "tmp").iterdir()) == []
        assert blob_bytes_on_disk(edge) <= bound
    finally:
        edge.stop()


def test_with_its_upstream_gone_an_edge_serves_what_it_holds(
        upstream: Server, tmp_path: Path) -> None:
    with running(copy_origin(upstream.origin, tmp_path / "origin")) as gone:
        edge = start_edge(tmp_path / "edge", gone.origin, [gone.base])
        try:
            held = f"/{gone.package}/releases/{STREAM[0]}.tar.gz"
            assert edge.request(held).status == 200
            gone.stop()
            for path in (held, f"/{gone.package}/latest.tar.gz"):
                got = curl(edge.url(path), cwd=tmp_path)
                assert got.status == 200, path
            missing = curl(edge.url(f"/{gone.package}/releases/{STREAM[1]}.tar.gz"),
                           cwd=tmp_path)
            assert missing.status == 503
            assert b'"upstream_unavailable"' in missing.body
            assert missing.header("retry-after") == "5"
            assert missing.header("cache-control") == "no-store"
            assert edge.request("/healthz").status == 200
        finally:
            edge.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real small file system (tmpfs, 8 MiB) at ``tmp_path/edge/store``."""
    mount = tmp_path / "edge" / "store"
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill_disk(mount: Path, leave: int) -> Path:
    """Write a file that leaves about ``leave`` bytes free on ``mount``."""
    filler = mount / "filler"
    free = shutil.disk_usage(mount).free
    with filler.open("wb") as fh, contextlib.suppress(OSError):   # ENOSPC: that full
        fh.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_fails_the_fill_not_the_edge(upstream: Server, small_disk: Path,
                                                 tmp_path: Path) -> None:
    edge = start_edge(tmp_path / "edge", upstream.origin, [upstream.base],
                      cache_size=100_000_000, env={"CODECACHE_SERVER_WORKERS": "2"})
    try:
        held = f"/{upstream.package}/releases/{STREAM[0]}.tar.gz"
        good = upstream.request(held).body
        assert edge.request(held).body == good
        before = cached_files(edge)
        filler = fill_disk(small_disk, leave=SIZES[BIG] // 3)
        big = curl(edge.url(f"/{upstream.package}/releases/{BIG}.tar.gz"), cwd=tmp_path)
        assert big.status == 503 and b'"cache_full"' in big.body
        assert big.header("retry-after") == "30"
        # No partial file, and what the edge holds is still served, by either worker.
        assert list((small_disk / "edge-cache" / "tmp").iterdir()) == []
        assert cached_files(edge) == before
        fill_disk(small_disk, leave=0)
        for _ in range(4):
            assert curl(edge.url(held), cwd=tmp_path).body == good
            latest = curl(edge.url(f"/{upstream.package}/latest.tar.gz"), cwd=tmp_path)
            assert latest.status == 200
        assert edge.request("/readyz").status == 200
        filler.unlink()   # room again: the next request is filled
        big = curl(edge.url(f"/{upstream.package}/releases/{BIG}.tar.gz"), cwd=tmp_path)
        assert big.status == 200
        assert hashlib.sha256(big.body).hexdigest() == release(upstream, BIG)[0]
    finally:
        edge.stop()


def test_kill_9_during_fills_leaves_no_partial_blob(upstream: Server, tmp_path: Path) -> None:
    seed = seed_from_env("EDGE_KILL_SEED")
    rng = random.Random(seed)  # noqa: S311 - a replayable fault schedule
    for round_ in range(3):
        directory = tmp_path / f"edge{round_}"
        edge = start_edge(directory, upstream.origin, [upstream.base],
                          env={"CODECACHE_SERVER_WORKERS": "2"})
        try:
            delay = _kill_during_fills(edge, upstream, rng)
            print(f"round {round_}: kill -9 after {delay:.3f} s")
        finally:
            edge.stop()
        edge = start_edge(directory, upstream.origin, [upstream.base],
                          env={"CODECACHE_SERVER_WORKERS": "2"}, port=edge.port)
        try:
            _check_after_restart(edge, upstream, seed)
        finally:
            edge.stop()


def _kill_during_fills(edge: Server, upstream: Server, rng: random.Random) -> float:
    """Ask for every release the edge does not pin at once, kill -9 the edge a random
    moment later; the delay."""
    versions = [BIG, *STREAM[:-1]]
    args = [require("curl"), "-s", "-Z", "--parallel-immediate"]
    for version in rng.sample(versions, len(versions)):
        args += ["-o", "/dev/null", edge.url(f"/{upstream.package}/releases/{version}.tar.gz")]
    clients = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    delay = rng.uniform(0.0, 0.2)
    time.sleep(delay)
    edge.process.kill()   # its workers die with it (their parent-death signal)
    edge.process.wait(10)
    clients.wait(30)
    return delay


def _check_after_restart(edge: Server, upstream: Server, seed: int) -> None:
    """Nothing a killed fill left is kept or served; the accounting is the disk's."""
    assert list((edge.origin.store / "edge-cache" / "tmp").iterdir()) == []
    for version in [BIG, *STREAM[:-1]]:
        sha256, _ = release(upstream, version)
        got = edge.request(f"/{upstream.package}/releases/{version}.tar.gz")
        assert got.status == 200
        assert hashlib.sha256(got.body).hexdigest() == sha256, (seed, version)
    edge.wait_for("the edge reports the bytes it holds",
                  lambda: edge_facts(edge)["cache_bytes"] == blob_bytes_on_disk(edge), 10)
