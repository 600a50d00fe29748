"""scripts/fetch-pilot, run by dash with only wget or only curl on PATH, against a running
cluster (origin, replicas, nginx VIP) and a small fake mirror (tests/cluster/mirror.py) for
what a real cluster never does: altered bytes, a replayed release, a channel moving between
two requests of one pilot.

Every test runs twice: with wget alone and with curl alone. The PATH of the script is a
directory of symlinks to exactly the tools it may use (``TOOLS``), so a dependency on
anything else fails here.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.helpers import REPO, Cluster, get, publish, status_json
from tests.cluster.mirror import Mirror, running_mirror
from tests.conftest import require, run_cli
from tests.harness.timing import free_port, wait_until
from tests.squid import Squid, running_squid

SCRIPT = REPO / "scripts" / "fetch-pilot"
# Everything fetch-pilot may run besides the shell and one HTTP client (POSIX tools plus
# sha256sum, gzip and minisign).
TOOLS = ("sha256sum", "awk", "od", "wc", "mv", "rm", "mkdir", "sleep", "tar", "gzip",
         "minisign")
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")


@pytest.fixture(scope="module", params=["wget", "curl"])
def client(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def toolbin(client: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PATH directory with dash as ``sh``, one HTTP client and ``TOOLS``, nothing else."""
    directory = tmp_path_factory.mktemp(f"bin-{client}")
    (directory / "sh").symlink_to(require("dash"))
    for tool in (client, *TOOLS):
        (directory / tool).symlink_to(require(tool))
    return directory


def fetch_pilot(toolbin: Path, *args: str | Path, cwd: Path, timeout: int = 10,
                tries: int = 2, wait: int = 0,
                env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**(env_extra or {}), "PATH": str(toolbin), "HOME": str(cwd), "LC_ALL": "C",
           "FETCH_PILOT_TRIES": str(tries), "FETCH_PILOT_WAIT": str(wait),
           "FETCH_PILOT_TIMEOUT": str(timeout)}
    result = subprocess.run([str(toolbin / "sh"), str(SCRIPT), *map(str, args)], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=180, check=False)
    print(f"fetch-pilot {' '.join(map(str, args))} -> {result.returncode}\n{result.stdout}"
          f"{result.stderr}")
    return result


def public_key(cluster: Cluster) -> Path:
    return cluster.origin_config.parent / "keys" / "codecache.pub"


def keyid(pub: Path) -> str:
    """The key id as minisign prints it, computed independently of the script."""
    raw = base64.b64decode(pub.read_text().splitlines()[1])
    return f"{int.from_bytes(raw[2:10], 'little'):016X}"


@pytest.fixture(scope="module")
def wrong_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wrong-key")
    pub = directory / "other.pub"
    run_cli("keygen", "--secret-key", str(directory / "other.key"), "--public-key", str(pub),
            check=True)
    return pub


def channel_version(cluster: Cluster, channel: str) -> str:
    version: str = status_json(cluster)["packages"]["pilot"]["channels"][channel]["version"]
    return version


def release(cluster: Cluster, version: str, suffix: str = "") -> bytes:
    """A release file as the origin serves it (the tarball checked against the index)."""
    status, _, body = get(cluster.origin, f"/pilot/releases/{version}.tar.gz{suffix}")
    assert status == 200
    if not suffix:
        sha256 = status_json(cluster)["packages"]["pilot"]["releases"][version]["sha256"]
        assert hashlib.sha256(body).hexdigest() == sha256
    return body


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/pilot/latest.tar.gz"


def vip_serves(cluster: Cluster, channel: str, version: str) -> bool:
    status, headers, _ = get(cluster.vip, f"/pilot/{channel}.tar.gz")
    return status == 200 and headers.get("x-codecache-version") == version


def access_log(cluster: Cluster) -> Path:
    return cluster.dir / "nginx" / "logs" / "access.log"


def new_log_lines(path: Path, offset: int) -> list[str]:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace").splitlines()


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


@pytest.fixture
def mirror(cluster: Cluster) -> Iterator[Mirror]:
    with running_mirror(cluster.vip) as running:
        yield running


# --- the good path ------------------------------------------------------------------------


def test_dead_first_url_then_the_vip_verifies_with_the_key_and_extracts(
        cluster: Cluster, toolbin: Path, workdir: Path) -> None:
    version = channel_version(cluster, "latest")
    result = fetch_pilot(toolbin, "-k", public_key(cluster), "-o", "pilot.tar.gz",
                         "-x", "code", dead_url(), f"{cluster.vip}/pilot/latest.tar.gz",
                         cwd=workdir)
    assert result.returncode == 0, result.stderr
    expected = release(cluster, version)
    assert (workdir / "pilot.tar.gz").read_bytes() == expected
    digest = hashlib.sha256(expected).hexdigest()
    assert result.stdout == f"pilot {version} {digest} pilot.tar.gz\n"
    assert (workdir / "code" / "pilot" / "bin" / "pilot.sh").is_file()
    assert "no answer" in result.stderr            # the dead URL was tried first
    # Only the result stays: no partial file, no private work directory.
    assert sorted(p.name for p in workdir.iterdir()) == ["code", "pilot.tar.gz"]


def test_without_key_checks_the_sha256_and_names_the_file_after_the_url(
        cluster: Cluster, toolbin: Path, workdir: Path) -> None:
    version = channel_version(cluster, "production")
    result = fetch_pilot(toolbin, f"{cluster.vip}/pilot/production.tar.gz", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "production.tar.gz").read_bytes() == release(cluster, version)


def test_a_release_url_needs_no_channel_lookup(cluster: Cluster, toolbin: Path,
                                               workdir: Path) -> None:
    result = fetch_pilot(toolbin, "-k", public_key(cluster),
                         f"{cluster.vip}/pilot/releases/1.0.0.tar.gz", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "1.0.0.tar.gz").read_bytes() == release(cluster, "1.0.0")


# --- keys ---------------------------------------------------------------------------------


def test_a_wrong_key_is_refused_and_nothing_is_left(cluster: Cluster, toolbin: Path,
                                                    workdir: Path, wrong_key: Path) -> None:
    result = fetch_pilot(toolbin, "-k", wrong_key, "-x", "code",
                         f"{cluster.vip}/pilot/latest.tar.gz", cwd=workdir)
    assert result.returncode == 1, result.stderr
    assert "signature does not verify" in result.stderr
    assert list(workdir.iterdir()) == []


def test_during_a_key_rotation_any_given_key_may_verify(cluster: Cluster, toolbin: Path,
                                                        workdir: Path, wrong_key: Path,
                                                        tmp_path: Path) -> None:
    # A key path with a space and a glob character is taken as it is.
    odd = tmp_path / "keys dir" / "code*cache.pub"
    odd.parent.mkdir()
    odd.write_bytes(public_key(cluster).read_bytes())
    result = fetch_pilot(toolbin, "-k", wrong_key, "-k", odd,
                         f"{cluster.vip}/pilot/latest.tar.gz", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert f"signed by key {keyid(public_key(cluster))}" in result.stderr


def test_the_per_key_signature_is_used_where_the_server_has_it(
        cluster: Cluster, toolbin: Path, workdir: Path, mirror: Mirror) -> None:
    version = channel_version(cluster, "latest")
    key = public_key(cluster)
    per_key = f"/pilot/releases/{version}.tar.gz.{keyid(key)}.minisig"
    mirror.serve(per_key, release(cluster, version, ".minisig"))
    result = fetch_pilot(toolbin, "-k", key, f"{mirror.base}/pilot/latest.tar.gz",
                         cwd=workdir)
    assert result.returncode == 0, result.stderr
    fetched = [(e.method, e.path) for e in mirror.log]
    assert ("GET", per_key) in fetched
    assert ("GET", f"/pilot/releases/{version}.tar.gz.minisig") not in fetched


def test_the_key_id_in_the_url_keeps_its_leading_zeros(
        cluster: Cluster, toolbin: Path, workdir: Path, mirror: Mirror, tmp_path: Path) -> None:
    """A key whose id starts with zeros (1 key in 16) is named by all 16 digits (minisign
    0.11 prints such an id without them in places; the server accepts both forms)."""
    version = channel_version(cluster, "latest")
    raw = b"Ed" + bytes([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x07, 0x00]) + bytes(range(32))
    key = tmp_path / "zeros.pub"
    key.write_text("untrusted comment: minisign public key 7665544332211\n"
                   f"{base64.b64encode(raw).decode()}\n")
    assert keyid(key) == "0007665544332211"
    result = fetch_pilot(toolbin, "-k", key, f"{mirror.base}/pilot/latest.tar.gz", cwd=workdir)
    assert result.returncode == 1, result.stderr          # not the signing key, of course
    assert ("GET", f"/pilot/releases/{version}.tar.gz.0007665544332211.minisig") in \
        [(e.method, e.path) for e in mirror.log]


def test_a_server_without_per_key_signatures_falls_back_to_the_primary_one(
        cluster: Cluster, toolbin: Path, workdir: Path, mirror: Mirror) -> None:
    """An older server answers 404 for ``.{KEYID}.minisig``: the ``.minisig`` is used."""
    version = channel_version(cluster, "latest")
    key = public_key(cluster)
    per_key = f"/pilot/releases/{version}.tar.gz.{keyid(key)}.minisig"
    mirror.serve(per_key, b'{"error": {"status": 404}}', status=404)
    result = fetch_pilot(toolbin, "-k", key, f"{mirror.base}/pilot/latest.tar.gz",
                         cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert f"{per_key}: 404, using " in result.stderr
    assert ("GET", f"/pilot/releases/{version}.tar.gz.minisig") in \
        [(e.method, e.path) for e in mirror.log]


# --- refusals -----------------------------------------------------------------------------


def test_a_tampered_tarball_is_refused_and_nothing_is_left(
        cluster: Cluster, toolbin: Path, workdir: Path, mirror: Mirror) -> None:
    """The mirror alters the bytes of the release (its .sha256 and .minisig are genuine)."""
    version = channel_version(cluster, "latest")
    genuine = release(cluster, version)
    mirror.serve(f"/pilot/releases/{version}.tar.gz", flip(genuine, len(genuine) // 2),
                 {"Content-Type": "application/gzip", "X-Codecache-Version": version})
    result = fetch_pilot(toolbin, "-x", "code", f"{mirror.base}/pilot/latest.tar.gz",
                         cwd=workdir)
    assert result.returncode == 1, result.stderr
    assert "does not match" in result.stderr
    assert list(workdir.iterdir()) == []
    # With a good mirror after it, the good copy is what ends up in place.
    result = fetch_pilot(toolbin, "-x", "code", f"{mirror.base}/pilot/latest.tar.gz",
                         f"{cluster.vip}/pilot/latest.tar.gz", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "latest.tar.gz").read_bytes() == genuine
    assert (workdir / "code" / "pilot").is_dir()


def test_a_consistent_forgery_passes_the_sha256_but_not_the_key(
        cluster: Cluster, toolbin: Path, workdir: Path, mirror: Mirror) -> None:
    """The mirror controls the tarball and its .sha256: only the signature can tell."""
    version = channel_version(cluster, "latest")
    forged = flip(release(cluster, version), 100)
    mirror.serve(f"/pilot/releases/{version}.tar.gz", forged)
    mirror.serve(f"/pilot/releases/{version}.tar.gz.sha256",
                 f"{hashlib.sha256(forged).hexdigest()}  {version}.tar.gz\n".encode())
    result = fetch_pilot(toolbin, "-k", public_key(cluster), "-x", "code",
                         f"{mirror.base}/pilot/latest.tar.gz", cwd=workdir)
    assert result.returncode == 1, result.stderr
    assert "signature does not verify" in result.stderr
    assert list(workdir.iterdir()) == []


def test_a_replayed_release_with_its_genuine_signature_is_refused(
        cluster: Cluster, toolbin: Path, workdir: Path, mirror: Mirror) -> None:
    """Another release's bytes and valid signature served as this version: minisign -V
    accepts them; the trusted comment names the other version, so fetch-pilot does not."""
    version = channel_version(cluster, "latest")
    other = next(v for v in VERSIONS if v != version)
    old = release(cluster, other)
    base = f"/pilot/releases/{version}.tar.gz"
    mirror.serve(base, old)
    mirror.serve(f"{base}.sha256", f"{hashlib.sha256(old).hexdigest()}  {version}.tar.gz\n"
                 .encode())
    for name in (f"{base}.minisig", f"{base}.{keyid(public_key(cluster))}.minisig"):
        mirror.serve(name, release(cluster, other, ".minisig"))
    result = fetch_pilot(toolbin, "-k", public_key(cluster),
                         f"{mirror.base}/pilot/latest.tar.gz", cwd=workdir)
    assert result.returncode == 1, result.stderr
    assert f"signed something else: 'codecache package=pilot version={other} " \
        in result.stderr
    assert list(workdir.iterdir()) == []


def test_no_url_answering_exits_3(toolbin: Path, workdir: Path) -> None:
    result = fetch_pilot(toolbin, dead_url(), dead_url(), cwd=workdir)
    assert result.returncode == 3, result.stderr
    assert "no URL answered" in result.stderr
    assert result.stderr.count("no answer") == 4      # two URLs, two rounds
    assert list(workdir.iterdir()) == []


def test_a_busy_server_is_tried_again_after_a_jittered_pause(
        cluster: Cluster, toolbin: Path, workdir: Path, mirror: Mirror) -> None:
    """503 on the first request: the next round (pause 1 s + 0..1 s random) succeeds."""
    version = channel_version(cluster, "latest")
    mirror.failures["/pilot/latest.tar.gz"] = 1
    result = fetch_pilot(toolbin, f"{mirror.base}/pilot/latest.tar.gz", cwd=workdir,
                         tries=2, wait=1)
    assert result.returncode == 0, result.stderr
    assert "HTTP 503" in result.stderr
    assert re.search(r"round 1 failed; trying again in [12]s", result.stderr), result.stderr
    assert (workdir / "latest.tar.gz").read_bytes() == release(cluster, version)


def test_a_url_that_failed_verification_is_not_tried_again(
        cluster: Cluster, toolbin: Path, workdir: Path, mirror: Mirror) -> None:
    version = channel_version(cluster, "latest")
    mirror.serve(f"/pilot/releases/{version}.tar.gz", b"not the release")
    result = fetch_pilot(toolbin, f"{mirror.base}/pilot/latest.tar.gz", dead_url(),
                         cwd=workdir, tries=3)
    assert result.returncode == 1, result.stderr
    heads = [e for e in mirror.log if e.path == "/pilot/latest.tar.gz"]
    assert len(heads) == 1                                 # the dead URL got three rounds
    assert result.stderr.count("no answer") == 3


def test_a_failed_extraction_is_a_local_failure_after_verification(
        cluster: Cluster, toolbin: Path, workdir: Path) -> None:
    (workdir / "not-a-dir").write_text("")
    result = fetch_pilot(toolbin, "-x", "not-a-dir/code", f"{cluster.vip}/pilot/latest.tar.gz",
                         cwd=workdir)
    assert result.returncode == 4, result.stderr
    assert "cannot extract" in result.stderr
    assert (workdir / "latest.tar.gz").is_file()          # verified, renamed, not extracted


def test_an_output_directory_that_does_not_exist_is_refused_before_any_request(
        toolbin: Path, workdir: Path, mirror: Mirror) -> None:
    result = fetch_pilot(toolbin, "-o", "missing/pilot.tar.gz",
                         f"{mirror.base}/pilot/latest.tar.gz", cwd=workdir)
    assert result.returncode == 4, result.stderr
    assert mirror.log == []


def test_a_missing_channel_is_not_a_verification_failure(cluster: Cluster, toolbin: Path,
                                                         workdir: Path) -> None:
    result = fetch_pilot(toolbin, f"{cluster.vip}/pilot/nosuchchannel.tar.gz", cwd=workdir)
    assert result.returncode == 3, result.stderr
    assert "HTTP 404" in result.stderr


@pytest.mark.parametrize("args", [
    (), ("ftp://host/pilot/latest.tar.gz",), ("http://host/pilot/latest.zip",),
    ("http://host/latest.tar.gz",), ("http://host/pilot/latest.tar.gz?x=1",),
    ("-k", "/nonexistent.pub", "http://host/pilot/latest.tar.gz"),
    ("-q", "http://host/pilot/latest.tar.gz"),
])
def test_usage_errors_exit_2(toolbin: Path, workdir: Path, args: tuple[str, ...]) -> None:
    result = fetch_pilot(toolbin, *args, cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert "usage: fetch-pilot" in result.stderr
    assert list(workdir.iterdir()) == []


def test_a_file_that_is_not_a_public_key_is_a_usage_error(toolbin: Path,
                                                           workdir: Path) -> None:
    (workdir / "key.pub").write_text("untrusted comment: no key\nbm90IGEga2V5\n")
    result = fetch_pilot(toolbin, "-k", "key.pub", "http://host/pilot/latest.tar.gz",
                         cwd=workdir)
    assert result.returncode == 2
    assert "not a minisign public key" in result.stderr


# --- resume and pinning -------------------------------------------------------------------


def test_a_partial_file_is_resumed_not_restarted(cluster: Cluster, toolbin: Path,
                                                 workdir: Path) -> None:
    version = channel_version(cluster, "latest")
    genuine = release(cluster, version)
    half = len(genuine) // 2
    (workdir / f"pilot.tar.gz.{version}.part").write_bytes(genuine[:half])
    log = access_log(cluster)
    offset = log.stat().st_size
    result = fetch_pilot(toolbin, "-o", "pilot.tar.gz", f"{cluster.vip}/pilot/latest.tar.gz",
                         cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "pilot.tar.gz").read_bytes() == genuine
    assert [p.name for p in workdir.iterdir()] == ["pilot.tar.gz"]
    path = f'"GET /pilot/releases/{version}.tar.gz HTTP/1.1"'
    fetched = [line.split(path, 1)[1].split()[:2] for line in new_log_lines(log, offset)
               if path in line]
    # One request, answered 206 with only the missing bytes (nginx logs body bytes sent).
    assert fetched == [["206", str(len(genuine) - half)]], fetched


def test_a_download_cut_off_midway_is_kept_and_resumed_by_the_next_run(
        cluster: Cluster, toolbin: Path, workdir: Path, mirror: Mirror) -> None:
    """The mirror sends half the tarball and stalls: fetch-pilot gives up (exit 3) keeping
    the half; the next run, against the VIP, asks only for the rest."""
    version = channel_version(cluster, "latest")
    genuine = release(cluster, version)
    half = len(genuine) // 2
    mirror.serve(f"/pilot/releases/{version}.tar.gz", genuine,
                 {"Content-Type": "application/gzip", "Accept-Ranges": "bytes"})
    mirror.stall_after[f"/pilot/releases/{version}.tar.gz"] = half
    result = fetch_pilot(toolbin, f"{mirror.base}/pilot/latest.tar.gz", cwd=workdir,
                         timeout=2, tries=1)
    assert result.returncode == 3, result.stderr
    part = workdir / f"latest.tar.gz.{version}.part"
    assert part.read_bytes() == genuine[:half]
    assert not (workdir / "latest.tar.gz").exists()

    log = access_log(cluster)
    offset = log.stat().st_size
    result = fetch_pilot(toolbin, f"{cluster.vip}/pilot/latest.tar.gz", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "latest.tar.gz").read_bytes() == genuine
    path = f'"GET /pilot/releases/{version}.tar.gz HTTP/1.1"'
    fetched = [line.split(path, 1)[1].split()[:2] for line in new_log_lines(log, offset)
               if path in line]
    assert fetched == [["206", str(len(genuine) - half)]], fetched


def test_a_partial_file_that_does_not_match_is_fetched_again(
        cluster: Cluster, toolbin: Path, workdir: Path) -> None:
    version = channel_version(cluster, "latest")
    genuine = release(cluster, version)
    half = len(genuine) // 2
    (workdir / f"latest.tar.gz.{version}.part").write_bytes(flip(genuine[:half], 10))
    log = access_log(cluster)
    offset = log.stat().st_size
    result = fetch_pilot(toolbin, f"{cluster.vip}/pilot/latest.tar.gz", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "latest.tar.gz").read_bytes() == genuine
    path = f'"GET /pilot/releases/{version}.tar.gz HTTP/1.1"'
    statuses = [line.split(path, 1)[1].split()[0] for line in new_log_lines(log, offset)
                if path in line]
    assert statuses == ["206", "200"], statuses
    assert "downloading it again" in result.stderr


def test_a_partial_file_that_is_a_symlink_is_replaced_not_appended_to(
        cluster: Cluster, toolbin: Path, workdir: Path, tmp_path: Path) -> None:
    version = channel_version(cluster, "latest")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (workdir / f"latest.tar.gz.{version}.part").symlink_to(victim)
    result = fetch_pilot(toolbin, f"{cluster.vip}/pilot/latest.tar.gz", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == b"precious"
    assert (workdir / "latest.tar.gz").read_bytes() == release(cluster, version)
    assert not (workdir / "latest.tar.gz").is_symlink()


def test_the_version_is_pinned_when_the_channel_moves_between_requests(
        cluster: Cluster, toolbin: Path, workdir: Path, mirror: Mirror) -> None:
    """The mirror passes everything to the VIP, but right after answering the channel URL's
    HEAD it moves the channel (a real publish on the origin) and waits until the VIP serves
    the new version. Every later request of the pilot must be for the version it pinned."""
    old = channel_version(cluster, "production")
    new = next(v for v in VERSIONS if v != old)
    moved: list[float] = []

    def move(method: str, path: str) -> None:
        if path == "/pilot/production.tar.gz" and not moved:
            moved.append(publish(cluster, new, "production"))
            wait_until(lambda: vip_serves(cluster, "production", new), 60,
                       f"the VIP serves production {new}", interval=0.1, detail=cluster.logs)

    mirror.after_upstream = move
    result = fetch_pilot(toolbin, "-k", public_key(cluster),
                         f"{mirror.base}/pilot/production.tar.gz", cwd=workdir, timeout=120)
    assert moved, "the channel was never moved"
    assert vip_serves(cluster, "production", new)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["pilot", old]
    assert (workdir / "production.tar.gz").read_bytes() == release(cluster, old)
    paths = [e.path for e in mirror.log]
    assert paths[0] == "/pilot/production.tar.gz"
    assert paths.count("/pilot/production.tar.gz") == 1
    assert all(p.startswith(f"/pilot/releases/{old}.tar.gz") for p in paths[1:]), paths


def _doc_one_liners() -> list[list[str]]:
    """The shell blocks of docs/pilots.md's stock-tools section, split at blank lines."""
    text = (REPO / "docs" / "pilots.md").read_text().split("## With the stock tools only")[1]
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    groups = [[line for line in group.splitlines() if line and not line.startswith("#")]
              for group in block.split("\n\n")]
    return [g for g in groups if g]


@pytest.mark.parametrize("group", range(2))
def test_the_one_liners_in_docs_pilots_md_work(cluster: Cluster, tmp_path: Path,
                                               group: int) -> None:
    lines = _doc_one_liners()[group]
    (tmp_path / "codecache.pub").write_bytes(public_key(cluster).read_bytes())
    script = "set -e\n" + "\n".join(lines).replace("http://vip", cluster.vip) + "\n"
    result = subprocess.run([require("dash"), "-c", script], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, script + result.stdout + result.stderr
    assert (tmp_path / "pilot" / "bin" / "pilot.sh").is_file()


@pytest.fixture(scope="module")
def squid() -> Iterator[Squid]:
    with running_squid() as proxy:
        yield proxy


def test_through_a_site_squid_and_resumed_through_it(cluster: Cluster, toolbin: Path,
                                                     workdir: Path, squid: Squid) -> None:
    """Pilots behind a site proxy (http_proxy, as wget and curl read it): the pinned
    release comes through the squid, and a resume through it still costs only the rest."""
    version = channel_version(cluster, "latest")
    genuine = release(cluster, version)
    proxy = {"http_proxy": squid.proxy}
    channel_url = f"{cluster.vip}/pilot/latest.tar.gz"
    result = fetch_pilot(toolbin, "-k", public_key(cluster), channel_url, cwd=workdir,
                         env_extra=proxy)
    assert result.returncode == 0, result.stderr
    assert (workdir / "latest.tar.gz").read_bytes() == genuine
    release_url = f"{cluster.vip}/pilot/releases/{version}.tar.gz"
    assert squid.wait_logged(channel_url, 1)            # the HEAD that pinned the version
    assert squid.wait_logged(release_url, 1)
    (workdir / "latest.tar.gz").unlink()

    half = len(genuine) // 2
    (workdir / f"latest.tar.gz.{version}.part").write_bytes(genuine[:half])
    log = access_log(cluster)
    offset = log.stat().st_size
    result = fetch_pilot(toolbin, channel_url, cwd=workdir, env_extra=proxy)
    assert result.returncode == 0, result.stderr
    assert (workdir / "latest.tar.gz").read_bytes() == genuine
    codes = squid.wait_logged(release_url, 2)
    assert codes[-1].endswith("/206"), codes               # squid passed the range on
    path = f'"GET /pilot/releases/{version}.tar.gz HTTP/1.1"'
    fetched = [line.split(path, 1)[1].split()[:2] for line in new_log_lines(log, offset)
               if path in line]
    assert fetched in ([], [["206", str(len(genuine) - half)]]), fetched


# --- the script itself --------------------------------------------------------------------


def test_fetch_pilot_is_posix_sh_and_shellcheck_clean() -> None:
    assert subprocess.run([require("dash"), "-n", str(SCRIPT)], check=False).returncode == 0
    result = subprocess.run([require("shellcheck"), "--shell=sh", str(SCRIPT)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
