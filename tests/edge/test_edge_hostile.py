"""A hostile upstream never gets a byte to a pilot through an edge (DESIGN.md §5, edge).

The edge is the real ``codecache serve`` (``role = "edge"``, two workers); its upstream is
a fake (``tests/replica/upstream.py``: a hostile upstream cannot be produced with the real
server) that serves the real signed index and history of the run's template origin, its
channel target as it is, and the other release with one byte flipped. Every client,
GET, HEAD and Range alike, many at once, gets ``502 upstream_invalid`` and not one byte of
the tarball (not even a 200 cut short); the edge counts a refusal, caches nothing, and
the next request tries the upstream again, so once the upstream mends, the blob is served.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from codecache.core.names import blob_url_path
from tests.conftest import Origin
from tests.edge.conftest import start_edge
from tests.edge.serving import cached_files, curl_at_once, edge_facts
from tests.harness.clients import curl, wget
from tests.http.helpers import release_info
from tests.replica.upstream import FakeUpstream, body, index

pytestmark = pytest.mark.timeout(120)


def test_a_blob_with_one_flipped_byte_reaches_no_client(template_origin: Origin,
                                                        tmp_path: Path) -> None:
    store = template_origin.store
    document = json.loads((store / "index.json").read_bytes())
    package = template_origin.package
    target = document["signed"]["packages"][package]["channels"]["latest"]["version"]
    other = next(v for v in ("1.0.0", "1.2.0") if v != target)
    target_sha = release_info(template_origin, target)["sha256"]
    sha256 = release_info(template_origin, other)["sha256"]
    good = (store / "blobs" / "sha256" / sha256).read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 3] ^= 0x01
    blob = blob_url_path(sha256)
    routes = {"/index.json": index((store / "index.json").read_bytes()),
              "/history.json": body((store / "history.json").read_bytes()),
              blob_url_path(target_sha): body((store / "blobs" / "sha256" /
                                               target_sha).read_bytes()),
              blob: body(bytes(flipped))}
    with FakeUpstream() as upstream:
        upstream.set(routes)
        edge = start_edge(tmp_path / "edge", template_origin, [upstream.base],
                          env={"CODECACHE_SERVER_WORKERS": "2"})
        try:
            url = edge.url(f"/{package}/releases/{other}.tar.gz")
            for status, answer in curl_at_once(url, 16, tmp_path):
                error = json.loads(answer)["error"]
                assert (status, error["status"], error["code"]) == \
                    ("502", 502, "upstream_invalid")
            head = curl(url, "-I", cwd=tmp_path)
            ranged = curl(url, "-H", "Range: bytes=0-99", cwd=tmp_path)
            for answer in (head, ranged):
                assert answer.status == 502
                assert answer.header("content-type") == "application/json; charset=utf-8"
                assert answer.header("etag") is None
            assert b"upstream_invalid" in ranged.body and good[:100] not in ranged.body
            got = wget("-O", "pilot.tar.gz", url, cwd=tmp_path)
            assert got.returncode == 8 and "502" in got.stderr
            assert (tmp_path / "pilot.tar.gz").read_bytes() == b""
            assert cached_files(edge) == []

            # Each request tried the upstream again (nothing was cached), and each refusal
            # was counted under its reason, as a replica counts one.
            asked = len(upstream.requests(blob))
            assert curl(url, cwd=tmp_path).status == 502
            assert len(upstream.requests(blob)) == asked + 1
            # Each worker reads the node's counters every watch tick: wait for one to say so.
            edge.wait_for("the refusals are counted",
                          lambda: edge_facts(edge)["refusals"].get("blob_mismatch") == asked + 1,
                          10)
            line = f'codecache_replica_refusals_total{{reason="blob_mismatch"}} {asked + 1}.0'
            edge.wait_for("/metrics counts them too",
                          lambda: line in edge.request("/metrics").body.decode(), 10)
            assert edge.request("/readyz").status == 200   # a refusal is no failure

            upstream.set({**routes, blob: body(good)})   # mended: the next request is served
            fixed = curl(url, cwd=tmp_path)
            assert fixed.status == 200 and hashlib.sha256(fixed.body).hexdigest() == sha256
        finally:
            edge.stop()
