"""Unit tests of the builds ahead (codecache.origin.ahead in the sync pass) with a fake source.

``FakeTrees`` is a fake (the seam named in STYLE.md: ``Source``) of a source whose trees may
be read concurrently (git): its trees come from memory, and a tag's tree can wait for
another's (a barrier only concurrent builds pass). Everything else is real: store, keys,
tarballs, signatures, history. tests/integration builds from a real git daemon.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from codecache.core.config import PackageConfig
from codecache.core.errors import GitError, UnsafeTree
from codecache.core.signing import SecretKey, generate_key
from codecache.core.tarball import DIRECTORY, FILE, Entry
from codecache.origin.sources.base import Source, SourceRef, Tag, svn_ref
from codecache.store.store import Store
from tests.harness.timing import scaled
from tests.unit.test_sync import DATE, on_disk, origin_of, serials_of


class FakeTrees(Source):
    """Tags ``1.N.0`` whose trees are one file each, read from memory by any thread."""

    def __init__(self, count: int, concurrent: bool = True) -> None:
        self.names = [f"1.{n}.0" for n in range(count)]
        self.concurrent = concurrent
        self.meet: dict[str, threading.Barrier] = {}    # tag -> a barrier its build waits at
        self.after: dict[str, threading.Event] = {}     # tag -> an event its build waits for
        self.done: dict[str, threading.Event] = {n: threading.Event() for n in self.names}
        self.failing: dict[str, Exception] = {}        # tag -> what reading its tree raises
        self.slow: set[str] = set()   # tags whose build still runs a while after the others'
        self.started: list[str] = []
        self._lock = threading.Lock()

    @property
    def concurrent_trees(self) -> bool:
        return self.concurrent

    def list_tags(self, package: PackageConfig) -> list[Tag]:
        return [Tag(name, svn_ref(f"svn://fake/pilot/tags/{name}", 3 + n, DATE + n, "rm"))
                for n, name in enumerate(self.names)]

    def tree(self, ref: SourceRef) -> AbstractContextManager[Iterable[Entry]]:
        return self._tree(ref.url.rpartition("/")[2])

    @contextlib.contextmanager
    def _tree(self, name: str) -> Iterator[Iterable[Entry]]:
        with self._lock:
            self.started.append(name)
        try:
            if name in self.meet:   # a serial pass never gets past this: it raises
                self.meet[name].wait(timeout=scaled(10))
            if name in self.after:
                assert self.after[name].wait(timeout=scaled(10))
            if name in self.failing:
                raise self.failing[name]
            if name in self.slow:   # a large tree: not a wait for anything, no assert on it
                threading.Event().wait(0.3)
            data = f"pilot {name}\n".encode()
            yield [Entry("", DIRECTORY), Entry("VERSION", FILE, size=len(data),
                                              data=io.BytesIO(data))]
        finally:
            self.done[name].set()


@pytest.fixture
def secret() -> SecretKey:
    return generate_key()


def new_store(root: Path) -> Store:
    store = Store(root)
    store.init()
    return store


def build_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("build-")]


def test_builds_overlap_and_are_published_in_order_as_a_serial_pass_would(
        tmp_path: Path, secret: SecretKey) -> None:
    trees = FakeTrees(8)
    # 1.0.0 and 1.1.0 are built at once (the barrier), and 1.1.0 ends first.
    barrier = threading.Barrier(2)
    trees.meet = {"1.0.0": barrier, "1.1.0": barrier}
    trees.after = {"1.0.0": trees.done["1.1.0"]}
    store = new_store(tmp_path / "ahead")
    report = origin_of(store, secret, trees).sync_once()
    names = trees.names
    assert report.published == [f"pilot {n}" for n in names]
    serials = serials_of(store, secret)
    assert all(serials[n] > serials[names[0]] for n in names[1:])   # committed alone, first
    assert [serials[n] for n in names] == sorted(serials[n] for n in names)
    index = on_disk(store, secret)
    assert index.packages["pilot"].channels["latest"].version == names[-1]
    assert build_threads() == []
    assert list(store.tmp_dir.iterdir()) == []
    # The same releases as a serial pass makes (the same archives, signed the same way).
    serial_store = new_store(tmp_path / "serial")
    assert origin_of(serial_store, secret, FakeTrees(8, concurrent=False)).sync_once() \
        .published == report.published
    serial = on_disk(serial_store, secret).packages["pilot"]
    ahead = index.packages["pilot"]
    assert {v: (r.sha256, r.minisig) for v, r in ahead.releases.items()} == \
        {v: (r.sha256, r.minisig) for v, r in serial.releases.items()}
    assert list(ahead.releases) == list(serial.releases)


def test_a_tag_failing_in_a_worker_is_refused_alone(tmp_path: Path, secret: SecretKey) -> None:
    trees = FakeTrees(6)
    trees.failing = {"1.2.0": UnsafeTree("VERSION: a path outside the tree (fake)")}
    store = new_store(tmp_path / "store")
    report = origin_of(store, secret, trees).sync_once()
    assert report.published == [f"pilot {n}" for n in trees.names if n != "1.2.0"]
    assert [(r.version, r.code) for r in report.refused] == [("1.2.0", "unsafe_tree")]
    assert [r.version for r in store.state.load().refused_tags] == ["1.2.0"]
    assert on_disk(store, secret).packages["pilot"].channels["latest"].version == "1.5.0"
    assert build_threads() == []


def test_an_upstream_error_in_a_worker_ends_the_pass_with_nothing_left_running(
        tmp_path: Path, secret: SecretKey) -> None:
    trees = FakeTrees(16)
    trees.failing = {"1.2.0": GitError("git cat-file ended (fake)")}
    trees.after = {"1.3.0": trees.done["1.2.0"]}   # still building when 1.2.0's error is met
    trees.slow = {"1.3.0"}
    store = new_store(tmp_path / "store")
    with pytest.raises(GitError, match="cat-file ended"):
        origin_of(store, secret, trees).sync_once()
    index = on_disk(store, secret)
    assert sorted(index.packages["pilot"].releases) == ["1.0.0", "1.1.0"]
    assert "latest" not in index.packages["pilot"].channels
    # What had not started was cancelled; what ran ended before the pass did.
    assert len(trees.started) < len(trees.names)
    assert all(trees.done[n].is_set() for n in trees.started)
    assert build_threads() == []
    assert list(store.tmp_dir.iterdir()) == []
    trees.failing.clear()
    report = origin_of(store, secret, trees).sync_once()
    assert report.published == [f"pilot {n}" for n in trees.names[2:]]
