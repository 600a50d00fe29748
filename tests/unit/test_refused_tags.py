"""Tags the sync worker cannot publish as they are (DESIGN.md §3: an unsafe tree, a file it
cannot archive) are kept in ``state.json`` and shown by ``status``, until they build or go.

The source is ``test_sync.FakeSource`` (a fake, named there); its FIFO tag is a real build
failure of the one tar writer. The store, keys, state file and the ``codecache status``
command (a real subprocess) are real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codecache.core.errors import SvnError
from codecache.core.signing import SecretKey, generate_key
from codecache.origin.sync import Origin
from codecache.store.state import RefusedTag
from codecache.store.store import Store
from tests.conftest import run_cli
from tests.harness import config as harness_config
from tests.unit.test_sync import URL, FakeSource, origin_of

NOW = 1_800_000_000


@pytest.fixture
def secret() -> SecretKey:
    return generate_key()


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.init()
    return store


@pytest.fixture
def origin(store: Store, secret: SecretKey, source: FakeSource) -> Origin:
    return origin_of(store, secret, source)


def refused(store: Store) -> list[tuple[str, str, str]]:
    return [(r.version, r.source, r.code) for r in store.state.load().refused_tags]


def test_a_tag_that_cannot_be_built_stays_refused_until_it_builds(
        origin: Origin, source: FakeSource, store: Store) -> None:
    source.tag("1.0.0", 3)
    source.tag("1.3.0", 5)
    source.fifo.add("1.3.0")
    report = origin.sync_once()
    assert report.published == ["pilot 1.0.0"]
    assert [(r.version, r.code) for r in report.refused] == [("1.3.0", "unsupported_file")]
    assert refused(store) == [("1.3.0", f"svn={URL}/tags/1.3.0@5", "unsupported_file")]
    first = store.state.load().refused_tags[0]
    assert "fifo" in first.reason

    # Refused again at the same revision: the same record (the first time stays).
    assert [r.version for r in origin.sync_once().refused] == ["1.3.0"]
    assert store.state.load().refused_tags == (first,)

    # The release manager fixes the tag (it names another tree now): published, settled.
    source.fifo.discard("1.3.0")
    source.tag("1.3.0", 7)
    assert origin.sync_once().published == ["pilot 1.3.0"]
    assert store.state.load().refused_tags == ()


def test_a_refused_tag_deleted_upstream_drops_out_and_an_untried_one_stays(
        origin: Origin, source: FakeSource, store: Store) -> None:
    for n, name in enumerate(("1.0.0", "1.1.0", "1.2.0")):
        source.tag(name, 3 + n)
    source.fifo.update({"1.1.0", "1.2.0"})
    origin.sync_once()
    assert [v for v, _, _ in refused(store)] == ["1.1.0", "1.2.0"]
    # A pass that ends before it tries 1.2.0 (its source fails on the way) keeps that one.
    source.tag("1.1.1", 9)
    source.failing.add("1.1.1")
    with pytest.raises(SvnError, match="connection reset"):
        origin.sync_once()
    assert [v for v, _, _ in refused(store)] == ["1.1.0", "1.2.0"]
    # The tag is deleted: its refusal goes; the other one is still refused.
    source.failing.clear()
    del source.tags["1.1.0"]
    report = origin.sync_once()
    assert report.published == ["pilot 1.1.1"]
    assert [v for v, _, _ in refused(store)] == ["1.2.0"]


def test_status_shows_refused_tags_in_text_and_json(
        origin: Origin, source: FakeSource, store: Store, secret: SecretKey,
        tmp_path: Path) -> None:
    source.tag("1.0.0", 3)
    source.tag("2.0.0", 4)
    source.fifo.add("2.0.0")
    origin.sync_once()
    public = tmp_path / "codecache.pub"
    public.write_text(secret.public.to_minisign())
    config = harness_config.write(tmp_path / "codecache.toml", harness_config.build(
        role="origin", store={"path": str(store.root)}, signing={"trusted_keys": [public]},
        packages=[{"name": "pilot", "svn_url": URL}]))
    payload = json.loads(run_cli("status", "--json", config=config, check=True).stdout)
    (entry,) = payload["refused_tags"]
    assert {k: entry[k] for k in ("package", "version", "source", "code")} == {
        "package": "pilot", "version": "2.0.0", "source": f"svn={URL}/tags/2.0.0@4",
        "code": "unsupported_file"}
    assert entry["refused_at"].endswith("Z") and "fifo" in entry["reason"]
    assert "2.0.0" not in payload["packages"]["pilot"]["releases"]
    text = run_cli("status", config=config, check=True).stdout
    (line,) = [x for x in text.splitlines() if x.startswith("WARNING: tag pilot 2.0.0")]
    assert f"refused since {entry['refused_at']} (svn={URL}/tags/2.0.0@4)" in line
    # check (on the store) warns about it by name.
    result = run_cli("check", "--no-upstream", config=config)
    assert result.returncode == 1, result.stdout
    assert "1 refused tag(s): pilot 2.0.0" in result.stdout


def test_settling_keeps_untried_and_unreached_packages_and_drops_unconfigured(
        store: Store) -> None:
    def tag(package: str, version: str, at: int = NOW) -> RefusedTag:
        return RefusedTag(package, version, f"svn=svn://h/{package}/tags/{version}@1",
                          "unsafe_tree", "unsafe", at)

    state = store.state
    assert state.settle_refusals({"a": ([tag("a", "1")], set()),
                                  "b": ([tag("b", "1")], set()),
                                  "gone": ([tag("gone", "1")], set())},
                                 ["a", "b", "gone"]) == [tag("a", "1"), tag("b", "1"),
                                                         tag("gone", "1")]
    # Only "a" synced this pass: its "1" was not tried (kept), "2" is new; "b" not reached
    # (kept); "gone" is no longer configured (dropped). Seen again later: not news.
    news = state.settle_refusals({"a": ([tag("a", "2", NOW + 9)], {"1"})}, ["a", "b"])
    assert news == [tag("a", "2", NOW + 9)]
    assert [(r.package, r.version) for r in state.load().refused_tags] == \
        [("a", "1"), ("a", "2"), ("b", "1")]
    assert state.settle_refusals({"a": ([tag("a", "2", NOW + 60)], set())}, ["a", "b"]) == []
    assert state.load().refused_tags == (tag("a", "2", NOW + 9), tag("b", "1"))
