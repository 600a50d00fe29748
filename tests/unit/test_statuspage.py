"""The status page shows the index and the node's facts, escapes everything that came from
them, stays small at thousands of releases and needs nothing but itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from codecache.core.index import Channel, Index, Package, Release
from codecache.core.pin import svn_pin
from codecache.store.state import RefusedTag
from codecache.web.statuspage import RELEASES_SHOWN, ago, render_status_page

NOW = 1_000_000


def _release(version: str, date: int = 0, **kw: object) -> Release:
    fields: dict[str, object] = {
        "version": version, "sha256": "c" * 64, "size": 20, "tar_sha256": "d" * 64,
        "source": svn_pin(f"svn://h/p/tags/{version}", 9), "author": "rm", "date": date,
        "minisig": ""}
    fields.update(kw)
    return Release(**fields)  # type: ignore[arg-type]


def _index(expires: int = NOW + 3600) -> Index:
    yanked = _release("1.0.0", sha256="a" * 64, author="<b>rm</b>", yanked=True,
                      yanked_reason="<script>alert(1)</script>")
    live = _release("1.10.0")
    pkg = Package(releases={"1.0.0": yanked, "1.10.0": live},
                  channels={"latest": Channel("1.10.0", NOW - 100)})
    return Index(serial=42, generated=NOW - 30, expires=expires, packages={"pilot": pkg})


def _page(index: Index | None = None, readiness: dict[str, object] | None = None,
          problems: dict[str, str] | None = None, **kw: int) -> str:
    return render_status_page(index if index is not None else _index(),
                              readiness if readiness is not None else
                              {"status": "ok", "role": "origin", "seconds_since_confirmed": 1},
                              problems or {}, now=NOW, **kw)


class _Collector(HTMLParser):
    """Every start tag with its attributes, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Collector:
    parser = _Collector()
    parser.feed(html)
    parser.close()
    return parser


def test_status_page_lists_channels_releases_and_serial() -> None:
    html = _page()
    assert "<b>42</b>" in html
    assert "href='/pilot/latest.tar.gz'" in html
    assert "<td class='channel-version'>1.10.0</td>" in html
    assert html.index(">1.10.0<") < html.index(">1.0.0<")  # newest first, natural order
    assert "c" * 64 in html and "a" * 64 in html          # the release hashes
    assert "svn://h/p/tags/1.10.0@9" in html


def test_status_page_shows_channel_move_time_index_age_and_expiry() -> None:
    html = _page()
    assert "1970-01-12<wbr>T13:45:00Z" in html                 # latest moved at NOW - 100
    assert "(30s ago)" in html                              # signed 30 s before NOW
    assert "(in 1h 00m)" in html                            # expires in an hour
    assert "role</th><td><b>origin</b>" in html


def test_status_page_marks_an_expired_index() -> None:
    html = _page(_index(expires=NOW - 7200))
    assert "<span class='bad'>1970-01-12T11:46:40Z (expired 2h 00m ago)</span>" in html


def test_status_page_escapes_index_content() -> None:
    html = _page(readiness={"status": "<i>x</i>"}, problems={"e" * 64: "corrupt <x>"})
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<i>x</i>" not in html
    assert "corrupt &lt;x&gt;" in html


def test_status_page_lists_the_tags_the_origin_refused_escaped() -> None:
    refused = RefusedTag("pilot", "2.0.0", "git=file:///srv/p.git@" + "b" * 40, "unsafe_tree",
                         "unsafe entry name '..' <x>", NOW - 60)
    assert "tags not published" not in _page()
    html = render_status_page(_index(), {"status": "ok", "role": "origin"}, {}, now=NOW,
                              refused=[refused])
    table = html.split("<table class='refused'>", 1)[1].split("</table>", 1)[0]
    assert "<td>pilot</td><td>2.0.0</td>" in table
    assert f"<code>git=file:///srv/p.git@{'b' * 40}</code>" in table
    assert "unsafe entry name &#x27;..&#x27; &lt;x&gt;" in table


def test_status_page_without_an_index() -> None:
    html = render_status_page(None, {"status": "the store has no index yet"}, {}, now=NOW)
    assert "no verified index yet" in html
    assert "the store has no index yet" in html


def test_status_page_shows_a_replicas_role_upstream_lag_and_pull_error() -> None:
    readiness = {"status": "ok", "role": "replica", "seconds_since_confirmed": 3,
                 "upstream": "http://origin:8080",
                 "replica": {"upstream": "http://origin:8080", "serial": 42,
                             "last_pull": NOW - 2, "refusals": {"rollback": 2},
                             "last_error": "http://origin:8080: <timeout>"}}
    html = _page(readiness=readiness)
    assert "role</th><td><b>replica</b>" in html
    assert "<code>http://origin:8080</code>" in html and "&lt;timeout&gt;" in html
    assert "lag</th><td>3s ago" in html
    assert "last pull</th><td>1970-01-12T13:46:38Z (2s ago)" in html
    assert "rollback: 2" in html


def test_status_page_of_a_replica_before_its_first_pull_says_no_upstream_yet() -> None:
    html = _page(readiness={"status": "ok", "role": "replica", "upstream": None})
    assert "upstream</th><td><code>none yet</code>" in html


def test_status_page_is_self_contained_and_readable_on_a_phone() -> None:
    parsed = _parse(_page())
    metas = [attrs for tag, attrs in parsed.tags if tag == "meta"]
    assert {"name": "viewport", "content": "width=device-width,initial-scale=1"} in metas
    # No external assets: no scripts, stylesheets, images, frames or fonts from anywhere.
    assert not [tag for tag, _ in parsed.tags
                if tag in ("script", "link", "img", "iframe", "object", "embed")]
    links = [attrs["href"] or "" for tag, attrs in parsed.tags if tag == "a"]
    assert links and all(href.startswith("/") for href in links)
    assert "url(" not in _page() and "@import" not in _page()


def test_status_page_at_5000_releases_lists_the_newest_and_counts_the_rest() -> None:
    releases = {f"1.0.{n}": _release(f"1.0.{n}", date=n) for n in range(5000)}
    channels = {"latest": Channel("1.0.4999", NOW), "production": Channel("1.0.7", NOW)}
    index = Index(serial=1, generated=NOW, expires=NOW + 60,
                  packages={"pilot": Package(releases, channels)})
    html = _page(index)
    rows = re.findall(r"href='/pilot/releases/([^']+)\.tar\.gz'", html)
    newest = [f"1.0.{n}" for n in range(4999, 4999 - RELEASES_SHOWN, -1)]
    assert rows == [*newest, "1.0.7"]   # natural order, newest first; a channel's target too
    assert f"5000 releases; the newest {RELEASES_SHOWN + 1} shown" in html
    assert f"{5000 - RELEASES_SHOWN - 1} more in <a href='/index.json'>" in html
    assert len(html) < 20_000


def test_status_page_newest_is_by_commit_date_not_by_version() -> None:
    releases = {"2.0.0": _release("2.0.0", date=10), "1.0.1": _release("1.0.1", date=20),
                "1.0.0": _release("1.0.0", date=5)}
    index = Index(serial=1, generated=NOW, expires=NOW + 60,
                  packages={"pilot": Package(releases, {})})
    html = _page(index, releases_shown=2)
    rows = re.findall(r"href='/pilot/releases/([^']+)\.tar\.gz'", html)
    assert rows == ["2.0.0", "1.0.1"]     # the late hotfix is among the newest
    assert "no channels" in html


def test_ago_is_short_and_exact_enough() -> None:
    assert [ago(s) for s in (0, 59, 61, 3599, 3600, 86399, 90061, -5)] == [
        "0s", "59s", "1m 01s", "59m 59s", "1h 00m", "23h 59m", "1d 1h", "-5s"]


def test_status_page_with_several_packages_links_each_one() -> None:
    index = _index()
    two = Index(index.serial, index.generated, index.expires,
                {"pilot": index.packages["pilot"], "tools": Package()})
    html = _page(two)
    assert "packages: <a href='#pkg-pilot'>pilot</a>, <a href='#pkg-tools'>tools</a>" in html
    assert "<h2 id='pkg-tools'>tools</h2>" in html and "0 releases" in html
    assert "packages: " not in _page()          # one package: no list
