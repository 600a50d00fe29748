"""The status page shows the index and escapes everything that came from it."""

from __future__ import annotations

from codecache.index import Channel, Index, Package, Release
from codecache.web.statuspage import render_status_page


def _index() -> Index:
    yanked = Release(version="1.0.0", sha256="a" * 64, size=10, tar_sha256="b" * 64,
                     svn_url="svn://h/p/tags/1.0.0", revision=3, author="<b>rm</b>", date=0,
                     minisig="", yanked=True, yanked_reason="<script>alert(1)</script>")
    live = Release(version="1.10.0", sha256="c" * 64, size=20, tar_sha256="d" * 64,
                   svn_url="svn://h/p/tags/1.10.0", revision=9, author="rm", date=0,
                   minisig="")
    pkg = Package(releases={"1.0.0": yanked, "1.10.0": live},
                  channels={"latest": Channel("1.10.0", 100)})
    return Index(serial=42, generated=0, expires=10, packages={"pilot": pkg})


def test_status_page_lists_channels_releases_and_serial() -> None:
    html = render_status_page(_index(), {"status": "ok", "seconds_since_confirmed": 1}, {})
    assert "serial <b>42</b>" in html
    assert "href='/pilot/latest.tar.gz'" in html
    assert html.index(">1.10.0<") < html.index(">1.0.0<")  # newest first, natural order
    assert "c" * 64 in html


def test_status_page_escapes_index_content() -> None:
    html = render_status_page(_index(), {"status": "<i>x</i>"}, {"e" * 64: "corrupt <x>"})
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<i>x</i>" not in html
    assert "corrupt &lt;x&gt;" in html


def test_status_page_without_an_index() -> None:
    html = render_status_page(None, {"status": "the store has no index yet"}, {})
    assert "no verified index yet" in html
    assert "the store has no index yet" in html


def test_status_page_shows_a_replicas_role_upstream_and_pull_error() -> None:
    readiness = {"status": "ok", "role": "replica", "seconds_since_confirmed": 3,
                 "replica": {"upstream": "http://origin:8080", "serial": 42,
                             "last_error": "http://origin:8080: <timeout>"}}
    html = render_status_page(_index(), readiness, {})
    assert "role: <b>replica</b>" in html
    assert "http://origin:8080" in html and "&lt;timeout&gt;" in html
    assert "last confirmed 3s ago" in html
