"""JSON logs and request ids of a real ``codecache serve`` (curl as the client).

``--log-format json``: every line the server writes is one JSON object, and the access line
of a request carries the id the client sent in ``X-Request-ID`` (or the one the server made
up), which the response echoes; the same facts (package, version, serial, status) are keys.
``sync`` (``[log] format`` from the config) and ``replicate`` log JSON the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import Origin, copy_origin, run_cli
from tests.harness import config as harness_config
from tests.harness.clients import curl_fetch
from tests.http.helpers import Server, release_info, running


def log_records(server: Server) -> list[dict[str, Any]]:
    """Every line of the server's output, parsed; fails on a line that is not JSON."""
    records = []
    for line in server.log_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def access_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("logger") == "codecache.access"]


def test_json_logs_carry_the_request_id_sent_with_curl(template_origin: Origin,
                                                       tmp_path: Path, workdir: Path) -> None:
    origin = copy_origin(template_origin, tmp_path / "origin")
    serial = json.loads((origin.store / "index.json").read_bytes())["signed"]["serial"]
    with running(origin, global_args=("--log-format", "json")) as server:
        given = curl_fetch(server.url(f"/{server.package}/latest.tar.gz"), "-H",
                           "X-Request-ID: pilot-7f3a.42", cwd=workdir)
        made_up = curl_fetch(server.url(f"/{server.package}/releases/1.0.0.tar.gz"),
                             cwd=workdir)
        refused = curl_fetch(server.url(f"/{server.package}/releases/9.9.9.tar.gz"), "-H",
                             "X-Request-ID: <script>alert(1)</script>", cwd=workdir)
    assert given.status == 200
    assert given.headers["x-request-id"] == "pilot-7f3a.42"
    assert made_up.status == 200
    assert re.fullmatch(r"[0-9a-f]{32}", made_up.headers["x-request-id"])
    # An id that is not plain is not echoed into logs or headers: a new one replaces it.
    assert refused.status == 404
    assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])

    records = log_records(server)
    assert records, server.log_tail()
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = {r["request_id"]: r for r in access_lines(records)}
    line = access["pilot-7f3a.42"]
    assert line["status"] == 200
    assert line["package"] == server.package
    assert line["version"] == "1.2.0"
    assert line["serial"] == serial
    assert line["path"] == f"/{server.package}/latest.tar.gz"
    assert line["bytes"] == release_info(origin, "1.2.0")["size"]
    assert access[made_up.headers["x-request-id"]]["version"] == "1.0.0"
    assert access[refused.headers["x-request-id"]]["status"] == 404


def test_text_logs_name_the_request_id_too(site: Server, workdir: Path) -> None:
    reply = curl_fetch(site.url("/healthz"), "-H", "X-Request-ID: text-mode-1", cwd=workdir)
    assert reply.headers["x-request-id"] == "text-mode-1"
    site.wait_for("the access line", lambda: "request_id=text-mode-1" in site.log_text(), 10)


def test_config_log_format_json_makes_sync_log_json(origin: Origin) -> None:
    result = origin.cli("sync", "--once", env={"CODECACHE_LOG_FORMAT": "json"})
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    published = [r for r in records if r["message"].startswith("release published")]
    assert {(r["package"], r["version"]) for r in published} == {
        (origin.package, "1.0.0"), (origin.package, "1.2.0")}
    serial = origin.status_json()["serial"]
    assert max(r["serial"] for r in published) == serial


def test_an_error_in_json_mode_is_one_json_line(origin: Origin) -> None:
    result = run_cli("--log-format", "json", "publish", origin.package, "7.7.7", "--channel",
                     "production", config=origin.config)
    assert result.returncode == 2, result.stderr   # unknown version
    (line,) = result.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "error"
    assert record["message"].startswith("codecache: error: ")
    assert record["exit_code"] == 2


def test_an_unknown_log_format_is_a_config_error(origin: Origin) -> None:
    result = origin.cli("status", env={"CODECACHE_LOG_FORMAT": "xml"})
    assert result.returncode == 2
    assert "log.format" in result.stderr


def test_replicate_logs_json_with_the_serial_it_installed(template_origin: Origin,
                                                         tmp_path: Path) -> None:
    origin = copy_origin(template_origin, tmp_path / "origin")
    serial = json.loads((origin.store / "index.json").read_bytes())["signed"]["serial"]
    replica = tmp_path / "replica"
    replica.mkdir()
    config = replica / "codecache.toml"
    with running(origin) as server:
        harness_config.write(config, harness_config.build(
            role="replica", store={"path": "store"},
            signing={"trusted_keys": [origin.public_key]},
            replica={"upstreams": [server.base]}))
        result = run_cli("--log-format", "json", "replicate", "--once", config=config)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    (installed,) = [r for r in records if r["message"].startswith("index installed")]
    assert (installed["serial"], installed["upstream"]) == (serial, server.base)
