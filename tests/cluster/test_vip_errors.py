"""The errors the front tier makes itself carry codecache's JSON error body, as a replica's.

nginx from ``nginx/codecache.conf`` (rendered by ``codecache.ops.nginx``, as the cluster
runs it) in front of replicas that cannot answer: one whose port is closed (nginx
answers 503 upstream_unavailable) and one that accepts connections and never answers (504
after ``proxy_read_timeout``). No replica is needed for the requests nginx refuses itself.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from codecache.ops.nginx import render_nginx
from tests.conftest import require
from tests.harness.clients import Response, curl
from tests.harness.timing import free_port, wait_for_port


@pytest.fixture
def front(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of nginx whose only replica is ``request.param``: "closed" or "silent"."""
    nginx = require("nginx")
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)   # never accepts
    closed = free_port()
    replica = silent.getsockname()[1] if request.param == "silent" else closed
    port = free_port()
    prefix = tmp_path / "front"
    prefix.mkdir()
    rendered = render_nginx(prefix / "nginx.conf", prefix, [f"127.0.0.1:{port}"],
                            [f"http://127.0.0.1:{replica}"])
    process = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(rendered.conf),
                                "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        silent.close()
        if rendered.private_cache_dir:
            shutil.rmtree(rendered.cache_dir, ignore_errors=True)


def assert_json_error(response: Response, status: int, code: str) -> None:
    assert response.status == status, (response.status, response.body[:300])
    # As a replica's: the same type, the same body shape.
    assert response.header("content-type") == "application/json; charset=utf-8"
    assert response.header("cache-control") == "no-store"
    assert response.header("x-request-id")
    error = json.loads(response.body)["error"]
    assert (error["status"], error["code"]) == (status, code)
    assert error["message"]


@pytest.mark.parametrize("front", ["closed"], indirect=True)
def test_no_replica_reachable_is_a_json_503(front: str, tmp_path: Path) -> None:
    for args in ((), ("-H", "Range: bytes=0-9"), ("-H", "If-None-Match: \"x\"")):
        response = curl(f"{front}/pilot/latest.tar.gz", *args, cwd=tmp_path)
        assert_json_error(response, 503, "upstream_unavailable")
        assert response.header("retry-after") == "5"
    head = curl(f"{front}/pilot/latest.tar.gz", "-I", cwd=tmp_path)
    assert (head.status, head.header("content-type")) == (503, "application/json; charset=utf-8")


@pytest.mark.parametrize("front", ["silent"], indirect=True)
def test_no_replica_answering_in_time_is_a_json_504(front: str, tmp_path: Path) -> None:
    response = curl(f"{front}/pilot/releases/1.0.0.tar.gz", cwd=tmp_path)
    assert_json_error(response, 504, "upstream_timeout")


@pytest.mark.parametrize("front", ["closed"], indirect=True)
def test_requests_nginx_refuses_get_json_errors(front: str, tmp_path: Path) -> None:
    trace = curl(f"{front}/pilot/latest.tar.gz", "-X", "TRACE", cwd=tmp_path)
    assert_json_error(trace, 405, "method_not_allowed")
    assert trace.header("allow") == "GET,HEAD"
    body = tmp_path / "body"
    body.write_bytes(b"x" * (2 << 20))   # over nginx's client_max_body_size (1 MB)
    large = curl(f"{front}/pilot/latest.tar.gz", "--data-binary", f"@{body}", cwd=tmp_path)
    assert_json_error(large, 413, "payload_too_large")
    header = curl(f"{front}/pilot/latest.tar.gz", "-H", "X-Big: " + "v" * 9000, cwd=tmp_path)
    assert_json_error(header, 400, "bad_request")
