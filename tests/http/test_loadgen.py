"""``codecache loadgen`` against a real ``codecache serve``, and against a tampering server.

The server under load is the real one (tests/http fixtures). The tampering server is a small
real HTTP server written here, because a codecache server never sends a body that does not
match its ETag: it serves one tarball with its true ``"sha256-..."`` ETag and flips a byte in
every second body after the first (full and ranged), which the load generator must count as
corrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import run_cli
from tests.http.helpers import Server

KINDS = {"full": {"200"}, "inm": {"304"}, "ims": {"304"}, "pinned": {"200"}, "range": {"206"}}


def loadgen(*args: str, timeout: float = 120) -> tuple[int, dict[str, Any], str]:
    result = run_cli("loadgen", *args, "--json", timeout=timeout)
    try:
        document: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        document = {}
    return result.returncode, document, result.stderr


def test_the_default_mix_gets_the_answers_pilots_expect_and_stops_at_its_count(
        site: Server) -> None:
    code, report, stderr = loadgen(site.base, "--requests", "400", "--concurrency", "8",
                                   "--seed", "7")
    assert code == 0, stderr
    assert report["schema"] == "codecache-loadgen/1"
    assert report["requests"] == 400
    assert report["errors_total"] == 0 and report["corrupted"] == 0
    assert set(report["kinds"]) == set(KINDS)
    for kind, statuses in KINDS.items():
        assert set(report["kinds"][kind]["statuses"]) == statuses, (kind, report["kinds"])
    assert sum(k["requests"] for k in report["kinds"].values()) == 400
    assert report["bytes"] > 0 and report["mb_per_s"] > 0 and report["requests_per_s"] > 0
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert report["settings"]["schedule"] == "closed"
    # live progress went to stderr, the report alone to stdout
    assert "loadgen" in stderr and "req/s" in stderr


def test_the_table_names_every_kind_and_the_totals(site: Server) -> None:
    result = run_cli("loadgen", site.base, "--requests", "60", "--quiet", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "60 requests in" in result.stdout and "corrupted bodies: 0" in result.stdout
    for kind in KINDS:
        assert f"\n{kind} " in result.stdout
    assert result.stderr == ""


def test_an_open_loop_stops_at_its_duration(site: Server) -> None:
    start = time.monotonic()
    code, report, stderr = loadgen(site.base, "--rate", "40", "--requests", "1000000",
                                   "--duration", "2", "--timeout", "10")
    elapsed = time.monotonic() - start
    assert code == 0, stderr
    assert 0 < report["requests"] < 1000000
    assert report["seconds"] < 2 + 10
    assert elapsed < 60
    assert report["settings"]["schedule"] == "open"


def test_a_publish_burst_downloads_the_channel_once_per_pilot(site: Server) -> None:
    code, report, stderr = loadgen(site.base, "--burst", "150", "--within", "1", "--mix",
                                   "full=1", "--channel", "latest")
    assert code == 0, stderr
    assert report["requests"] == 150
    assert report["statuses"] == {"200": 150}
    assert report["settings"]["burst"] == 150


def test_a_burst_shared_by_two_processes_is_one_report(site: Server) -> None:
    code, report, stderr = loadgen(site.base, "--burst", "120", "--within", "1", "--mix",
                                   "full=1,pinned=1", "--processes", "2", "--seed", "5")
    assert code == 0, stderr
    assert report["requests"] == 120 and report["statuses"] == {"200": 120}
    assert report["settings"]["processes"] == 2
    assert report["kinds"]["full"]["requests"] + report["kinds"]["pinned"]["requests"] == 120
    assert "loadgen" in stderr


def test_slow_clients_are_held_open_together_and_verified(site: Server) -> None:
    size = len(site.request(f"/{site.package}/latest.tar.gz").body)
    rate = max(1, size // 3)      # each download takes about 3 s
    code, report, stderr = loadgen(site.base, "--slow", "40", "--slow-rate", str(rate),
                                   "--ramp", "0.5", "--duration", "30")
    assert code == 0, stderr
    assert report["kinds"]["slow"]["statuses"] == {"200": 40}
    assert report["slow_peak_open"] == 40
    assert report["kinds"]["slow"]["latency_ms"]["p50"] >= 1000
    assert report["corrupted"] == 0


def test_bad_arguments_and_an_unreachable_target_are_one_line_errors(site: Server) -> None:
    bad = run_cli("loadgen", site.base, "--mix", "bogus=1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--mix" in bad.stderr
    both = run_cli("loadgen", site.base, "--rate", "5", "--burst", "5")
    assert both.returncode == 2 and both.stderr.count("\n") == 1
    unclosed = run_cli("loadgen", "http://[::1", "--requests", "1")  # was a bug: exit 70
    assert unclosed.returncode == 2 and unclosed.stderr.count("\n") == 1, unclosed.stderr
    nowhere = run_cli("loadgen", "http://127.0.0.1:9/", "--requests", "1", "--timeout", "2")
    assert nowhere.returncode == 3 and nowhere.stderr.count("\n") == 1, nowhere.stderr


# --- a server that tampers with bodies ------------------------------------------------------


class _Tampering(BaseHTTPRequestHandler):
    body = bytes(range(256)) * 64
    etag = f'"sha256-{hashlib.sha256(body).hexdigest()}"'
    served = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            type(self).served += 1
            tamper = self.served > 1 and self.served % 2 == 0
        body, status = self.body, 200
        ranged = self.headers.get("Range", "")
        headers = {"ETag": self.etag, "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT"}
        if ranged.startswith("bytes=") and self.headers.get("If-Range") == self.etag:
            start = int(ranged.removeprefix("bytes=").rstrip("-"))
            status, body = 206, body[start:]
            headers["Content-Range"] = f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
        if tamper:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def tampering_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tampering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/pilot/latest.tar.gz"
    finally:
        server.shutdown()
        server.server_close()


def test_a_body_that_does_not_match_its_etag_is_counted_corrupted() -> None:
    _Tampering.served = 0
    with tampering_server() as url:
        code, report, stderr = loadgen(url, "--mix", "full=3,range=1", "--requests", "80",
                                       "--concurrency", "1", "--seed", "3")
    assert code == 1, stderr
    # Requests 2, 4, 6, ... of the server were tampered with; the first was the warm-up.
    assert report["corrupted"] == 40, report
    assert report["kinds"]["full"]["corrupted"] > 0
    assert report["kinds"]["range"]["corrupted"] > 0
    assert report["errors"] == {"corrupted": 40}
