"""The front tier at the VIP answers like a replica: same §4 headers, 304s, ranges, 405s."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.helpers import Cluster, get, status_json
from tests.conftest import require
from tests.harness.clients import curl
from tests.harness.timing import wait_until

# Headers of DESIGN §4 that must pass the front tier unchanged.
CONTRACT = ("etag", "last-modified", "cache-control", "x-codecache-version", "accept-ranges",
            "content-length", "content-type")
URLS = ["/pilot/latest.tar.gz", "/pilot/latest.tar.gz.sha256", "/pilot/latest.tar.gz.minisig",
        "/pilot/production.tar.gz", "/pilot/releases/1.2.0.tar.gz",
        "/pilot/releases/1.2.0.tar.gz.sha256", "/pilot/releases/1.0.0.tar.gz.minisig"]


@pytest.mark.parametrize("path", URLS)
def test_vip_passes_every_contract_header_unchanged(cluster: Cluster, workdir: Path,
                                                    path: str) -> None:
    replica = curl(cluster.replicas[0] + path, "-H", "Accept-Encoding: gzip", cwd=workdir)
    for _ in range(2):   # a cache miss, then a cache hit
        vip = curl(cluster.vip + path, "-H", "Accept-Encoding: gzip", cwd=workdir)
        assert vip.status == replica.status == 200
        for name in CONTRACT:
            assert vip.all(name) == replica.all(name), name   # no duplicate, no change
        assert vip.all("content-encoding") == []
        assert vip.body == replica.body


def test_vip_serves_blobs_by_hash_unchanged(cluster: Cluster, workdir: Path) -> None:
    sha256 = status_json(cluster)["packages"]["pilot"]["releases"]["1.1.0"]["sha256"]
    path = f"/blobs/sha256/{sha256}"
    replica = curl(cluster.replicas[1] + path, cwd=workdir)
    vip = curl(cluster.vip + path, "-H", "Accept-Encoding: gzip", cwd=workdir)
    assert vip.status == 200
    assert hashlib.sha256(vip.body).hexdigest() == sha256
    for name in CONTRACT:
        assert vip.all(name) == replica.all(name), name


def test_vip_head_matches_get_without_body(cluster: Cluster, workdir: Path) -> None:
    full = curl(cluster.vip + "/pilot/latest.tar.gz", cwd=workdir)
    head = curl(cluster.vip + "/pilot/latest.tar.gz", "-I", cwd=workdir)   # -o gets headers
    assert head.status == 200
    assert head.header("content-length") == str(len(full.body))
    for name in CONTRACT:
        assert head.all(name) == full.all(name), name


@pytest.mark.parametrize("path", ["/pilot/latest.tar.gz", "/pilot/releases/1.2.0.tar.gz"])
def test_vip_answers_304_to_if_none_match_and_if_modified_since(cluster: Cluster,
                                                                 workdir: Path,
                                                                 path: str) -> None:
    first = curl(cluster.vip + path, cwd=workdir)
    etag, modified = first.header("etag"), first.header("last-modified")
    assert etag and modified
    by_etag = curl(cluster.vip + path, "-H", f"If-None-Match: {etag}", cwd=workdir)
    assert by_etag.status == 304 and by_etag.body == b""
    assert by_etag.header("etag") == etag
    by_date = curl(cluster.vip + path, "-H", f"If-Modified-Since: {modified}", cwd=workdir)
    assert by_date.status == 304 and by_date.body == b""
    other = curl(cluster.vip + path, "-H", 'If-None-Match: "sha256-0000"', cwd=workdir)
    assert other.status == 200 and other.body == first.body


@pytest.mark.parametrize("path", ["/pilot/latest.tar.gz", "/pilot/releases/1.2.0.tar.gz"])
def test_vip_answers_failed_preconditions_as_a_replica_does(cluster: Cluster, workdir: Path,
                                                            path: str) -> None:
    """If-Match and If-Unmodified-Since are checked by nginx's not-modified filter on the
    cached object: its 412 must be a replica's (JSON body, no-store), not nginx's page."""
    first = curl(cluster.vip + path, cwd=workdir)
    assert first.status == 200
    for header in ('If-Match: "sha256-0000"', "If-Unmodified-Since: Sat, 01 Jan 2000 00:00:00 GMT"):
        replica = curl(cluster.replicas[0] + path, "-H", header, cwd=workdir)
        vip = curl(cluster.vip + path, "-H", header, cwd=workdir)
        assert replica.status == vip.status == 412, (header, vip.status, vip.body[:200])
        for name in ("content-type", "cache-control"):
            assert vip.header(name) == replica.header(name), (header, name)
        assert json.loads(vip.body) == json.loads(replica.body)
    held = curl(cluster.vip + path, "-H", f"If-Match: {first.header('etag')}", cwd=workdir)
    assert held.status == 200 and held.body == first.body


def test_wget_N_through_the_vip_does_not_download_again(cluster: Cluster,
                                                        workdir: Path) -> None:
    command = [require("wget"), "--no-config", "-N", cluster.vip + "/pilot/latest.tar.gz"]
    env = {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
    first = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env,
                           timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env,
                            timeout=60, check=False)
    assert second.returncode == 0, second.stderr
    assert "304 Not Modified" in second.stderr
    assert "Omitting download" in second.stderr


@pytest.mark.parametrize("path", ["/pilot/latest.tar.gz", "/pilot/releases/1.0.0.tar.gz"])
def test_vip_answers_ranges_and_if_range(cluster: Cluster, workdir: Path, path: str) -> None:
    full = curl(cluster.vip + path, cwd=workdir)
    size = len(full.body)
    part = curl(cluster.vip + path, "-r", "10-99", cwd=workdir)
    assert part.status == 206
    assert part.body == full.body[10:100]
    assert part.header("content-range") == f"bytes 10-99/{size}"
    matching = curl(cluster.vip + path, "-r", "10-99", "-H",
                    f"If-Range: {full.header('etag')}", cwd=workdir)
    assert matching.status == 206 and matching.body == full.body[10:100]
    stale = curl(cluster.vip + path, "-r", "10-99", "-H", 'If-Range: "sha256-0000"',
                 cwd=workdir)
    assert stale.status == 200 and stale.body == full.body
    beyond = curl(cluster.vip + path, "-r", f"{size + 10}-", cwd=workdir)
    assert beyond.status == 416
    assert beyond.header("content-range") == f"bytes */{size}"
    assert json.loads(beyond.body)["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_vip_passes_other_methods_to_a_replica_which_answers_405(cluster: Cluster,
                                                                 workdir: Path,
                                                                 method: str) -> None:
    response = curl(cluster.vip + "/pilot/latest.tar.gz", "-X", method, cwd=workdir)
    assert response.status == 405
    assert json.loads(response.body)["error"]["code"] == "method_not_allowed"
    assert response.header("allow") == "GET,HEAD"


def test_vip_never_caches_health_readiness_or_metrics(cluster: Cluster,
                                                      workdir: Path) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        response = curl(cluster.vip + path, cwd=workdir)
        assert response.status == 200
        assert response.header("cache-control") == "no-store"
    log = Path(cluster.info["nginx"]["prefix"]) / "logs" / "access.log"
    lines = [line for line in log.read_text().splitlines()
             if '"GET /metrics ' in line or '"GET /readyz ' in line]
    assert lines and all(" cache=- " in line for line in lines)


def test_vip_listens_on_ipv6_loopback(cluster: Cluster, workdir: Path) -> None:
    if not cluster.info.get("vip6"):
        pytest.skip("no IPv6 loopback on this machine")
    response = curl(cluster.info["vip6"] + "/pilot/latest.tar.gz", cwd=workdir)
    assert response.status == 200
    digest = hashlib.sha256(response.body).hexdigest()
    assert response.header("etag") == f'"sha256-{digest}"'


def test_vip_passes_the_request_id(cluster: Cluster, workdir: Path) -> None:
    given = curl(cluster.vip + "/pilot/releases/1.1.0.tar.gz", "-H", "X-Request-ID: pilot-42",
                 cwd=workdir)
    assert given.status == 200
    log = Path(cluster.info["nginx"]["prefix"]) / "logs" / "access.log"
    assert " rid=pilot-42 " in log.read_text()


def replica_access_lines(cluster: Cluster) -> list[dict[str, Any]]:
    """The access lines of every replica's log; every line of those logs must be JSON
    (scripts/cluster runs replicas with ``[log] format = "json"``)."""
    found = []
    for log in sorted((cluster.dir / "logs").glob("replica-*.log")):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if record.get("logger") == "codecache.access":
                found.append(record)
    return found


def _logged(cluster: Cluster, rid: str) -> list[dict[str, Any]]:
    """The replica access lines of request ``rid``, waited for (a replica logs it)."""
    return wait_until(lambda: [r for r in replica_access_lines(cluster)
                               if r["request_id"] == rid], 20, f"{rid} in a replica log",
                      interval=0.1, detail=cluster.logs)


def test_the_request_id_nginx_made_reaches_a_replica_and_the_response(
        cluster: Cluster, workdir: Path) -> None:
    # /readyz is never cached: the request reaches a replica.
    response = curl(cluster.vip + "/readyz", cwd=workdir)
    assert response.status == 200
    rid = response.header("x-request-id") or ""
    assert re.fullmatch(r"[0-9a-f]{32}", rid), response.headers
    log = Path(cluster.info["nginx"]["prefix"]) / "logs" / "access.log"
    (line,) = _logged(cluster, rid)
    assert (line["path"], line["status"]) == ("/readyz", 200)
    assert f" rid={rid} " in log.read_text()


def test_a_cached_answer_names_the_request_at_hand(cluster: Cluster, workdir: Path) -> None:
    url = cluster.vip + "/pilot/releases/1.0.0.tar.gz.sha256"
    first = curl(url, "-H", "X-Request-ID: first-1", cwd=workdir)
    second = curl(url, "-H", "X-Request-ID: second-2", cwd=workdir)
    assert (first.status, second.status) == (200, 200)
    assert first.all("x-request-id") == ["first-1"]
    assert second.all("x-request-id") == ["second-2"]
    # The second came from nginx's cache (immutable release file): no replica saw it. A
    # request that surely reaches a replica, sent after it and seen logged, shows the logs
    # have caught up: had the second reached a replica, its line would be there too.
    after = curl(cluster.vip + "/readyz", "-H", "X-Request-ID: after-3", cwd=workdir)
    assert after.status == 200
    _logged(cluster, "after-3")
    assert not [r for r in replica_access_lines(cluster) if r["request_id"] == "second-2"]


def test_every_node_is_ready(cluster: Cluster) -> None:
    for base in [cluster.origin, *cluster.replicas, cluster.vip]:
        status, _, body = get(base, "/readyz")
        assert status == 200, body


# --- random requests: the VIP answers as a replica does -------------------------------------

RANDOM_REQUESTS = 120
COMPARED = (*CONTRACT, "content-range", "allow")


def random_headers(rng: random.Random, etag: str, modified: str) -> list[str]:
    """Conditional and range headers as pilots, proxies and odd clients send them. Never
    If-Modified-Since beside If-None-Match: nginx evaluates both where RFC 9110 §13.1.3
    ignores the date (nginx/README.md, "Where the VIP differs")."""
    kinds = [
        [f"If-None-Match: {etag}", 'If-None-Match: "x"', "If-None-Match: *",
         f"If-None-Match: W/{etag}", f'If-None-Match: "x", {etag}',
         f"If-Modified-Since: {modified}", "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT",
         "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT", "If-Modified-Since: junk"],
        [f"If-Match: {etag}", 'If-Match: "x"', "If-Match: *"],
        [f"If-Unmodified-Since: {modified}", "If-Unmodified-Since: junk",
         "If-Unmodified-Since: Sat, 01 Jan 2000 00:00:00 GMT"],
        ["Range: bytes=0-9", "Range: bytes=-5", "Range: bytes=999999999-", "Range: bytes=5-2",
         "Range: lines=1-2", "Range: bytes=0-1,5-6"],
        [f"If-Range: {etag}", 'If-Range: "x"', f"If-Range: {modified}"],
    ]
    chosen = rng.sample(kinds, rng.choice([0, 1, 1, 2, 2, 3]))
    return [rng.choice(kind) for kind in chosen]


def test_random_requests_get_the_answer_of_a_replica(cluster: Cluster, workdir: Path) -> None:
    seed = int(os.environ.get("CODECACHE_TEST_SEED", time.time_ns() % 1_000_000))
    print(f"seed {seed} (replay: CODECACHE_TEST_SEED={seed})")
    rng = random.Random(seed)  # noqa: S311 - test input, replayable; not crypto
    first = curl(cluster.replicas[0] + "/pilot/latest.tar.gz", cwd=workdir)
    etag, modified = first.header("etag") or "", first.header("last-modified") or ""
    blob = hashlib.sha256(first.body).hexdigest()
    paths = [*URLS, "/pilot/nothing.tar.gz", "/nope/latest.tar.gz", f"/blobs/sha256/{blob}",
             "/blobs/sha256/" + "0" * 64, "/pilot/releases/9.9.9.tar.gz",
             "/pilot/latest.tar.gz?pilot=1", "/pilot//latest.tar.gz"]
    for number in range(RANDOM_REQUESTS):
        path = rng.choice(paths)
        args = [a for h in random_headers(rng, etag, modified) for a in ("-H", h)]
        if rng.random() < 0.2:
            args.append("-I")
        replica = curl(cluster.replicas[number % len(cluster.replicas)] + path, *args,
                       cwd=workdir)
        vip = curl(cluster.vip + path, *args, cwd=workdir)
        what = f"seed {seed}, request {number}: {path} {args}"
        assert vip.status == replica.status, (what, vip.status, replica.status, vip.body[:200])
        for name in COMPARED:
            assert vip.all(name) == replica.all(name), (what, name)
        if "-I" not in args:   # with -I curl writes the header block as its output
            assert vip.body == replica.body, what
