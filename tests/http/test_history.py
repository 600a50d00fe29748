"""``/history.json`` served by ``codecache serve`` and read back by ``codecache history --url``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from codecache.core.index import parse_time
from tests.conftest import assert_one_line_error, run_cli
from tests.harness.clients import curl_fetch
from tests.http.helpers import Server, http_date
from tests.integration.test_history import strip_history


def signed_history(server: Server) -> dict[str, Any]:
    head: dict[str, Any] = json.loads(server.request("/index.json").body)["signed"]["history"]
    return head


def test_history_json_is_the_store_file_no_cache_with_a_strong_etag(site: Server,
                                                                      workdir: Path) -> None:
    got = curl_fetch(site.url("/history.json"), cwd=workdir)
    assert got.status == 200
    assert got.body == (site.origin.store / "history.json").read_bytes()
    assert got.headers["cache-control"] == "no-cache"
    assert got.headers["content-type"].startswith("application/json")
    assert got.headers["etag"] == f'"sha256-{hashlib.sha256(got.body).hexdigest()}"'
    assert got.headers["accept-ranges"] == "bytes"
    entries = json.loads(got.body)["entries"]
    assert [e["action"] for e in entries] == ["release", "release", "move"]
    assert got.headers["last-modified"] == http_date(parse_time(entries[-1]["time"]))
    assert signed_history(site)["length"] == 3


def test_history_json_answers_conditional_and_range_requests(site: Server) -> None:
    full = site.request("/history.json")
    etag = full.headers["etag"]
    assert site.request("/history.json", headers={"If-None-Match": etag}).status == 304
    offset = full.body.index(b"\n{", 20) + 1        # the start of entry 1's line
    part = site.request("/history.json", headers={"Range": f"bytes={offset}-"})
    assert part.status == 206
    assert part.body == full.body[offset:]
    assert part.headers["content-range"] == f"bytes {offset}-{len(full.body) - 1}/" \
                                            f"{len(full.body)}"
    head = site.request("/history.json", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(full.body))


def test_a_publish_reaches_history_json_with_the_index(fresh_site: Server) -> None:
    origin = fresh_site.origin
    origin.cli("--actor", "carol", "publish", origin.package, "1.0.0", "--channel",
               "production", check=True)
    # The history may be served a moment before its index (written first): wait for both.
    fresh_site.wait_for("the move in /history.json and /index.json", lambda: json.loads(
        fresh_site.request("/history.json").body)["entries"][-1]["actor"] == "carol"
        and signed_history(fresh_site)["length"] == 4, 5)
    local = origin.cli("history", "--json", check=True).stdout
    remote = run_cli("history", "--json", "--url", fresh_site.base, config=origin.config,
                     check=True).stdout
    assert json.loads(remote) == json.loads(local)
    table = run_cli("history", "--url", fresh_site.base, config=origin.config, check=True)
    assert "carol" in table.stdout.splitlines()[-1]


def test_history_url_exits_1_when_the_served_history_does_not_verify(
        fresh_site: Server) -> None:
    path = fresh_site.origin.store / "history.json"
    entries = json.loads(path.read_bytes())["entries"]
    entries[0]["actor"] = "mallory"
    path.write_text(json.dumps({"entries": entries}))
    fresh_site.wait_for("the edited file served", lambda: b"mallory" in fresh_site.request(
        "/history.json").body, 5)
    result = run_cli("history", "--url", fresh_site.base, config=fresh_site.origin.config)
    assert "history.json does not verify" in assert_one_line_error(result, 1)


def test_an_index_without_history_serves_no_history_json(fresh_site: Server) -> None:
    strip_history(fresh_site.origin)
    fresh_site.wait_for("the index without history served",
                        lambda: b'"history"' not in fresh_site.request("/index.json").body, 5)
    reply = fresh_site.request("/history.json")
    assert reply.status == 404
    assert json.loads(reply.body)["error"]["code"] == "not_found"
    result = run_cli("history", "--url", fresh_site.base, config=fresh_site.origin.config)
    assert result.returncode == 0 and "no history yet" in result.stderr
