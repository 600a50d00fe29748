"""kill -9 of a replica at random points of a pull leaves a consistent store (DESIGN.md §8).

Real processes: the replica is the real ``codecache replicate`` or ``codecache serve``
(role replica), chosen at random each round. Its upstream is the fake of
``tests/replica/upstream.py`` (a small real HTTP server in the test process, standing in
for an origin so the test can offer a new signed index each round and throttle the blobs
so a pull takes about a second). Each round the upstream offers a new serial with three
new blobs of 1-2 MB (and keeps the previous round's releases); the replica is SIGKILLed at
a random moment after it asked for the index. Then the store must be consistent:
``index.json`` absent or the exact bytes of a round's signed index that verify, every blob
it lists present with the right hash, every file under ``blobs/sha256/`` whole (named by
its hash), every listed release's ``.minisig`` written, ``codecache status --json`` working.
The replica is restarted and must complete the pull (serve the newest index). At the end
the store equals what one uninterrupted pull produces.

The seed is printed; ``REPLICA_CRASH_SEED=N`` replays a run, ``REPLICA_CRASH_ROUNDS=N``
changes the number of kills (default 22).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from codecache.core.signing import load_trusted_keys
from codecache.core.trust import verify
from codecache.store.files import sha256_file
from tests.conftest import cli_env, run_cli
from tests.harness.timing import free_port
from tests.replica.upstream import FakeUpstream, Publisher, index, throttled, write_replica_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(200)]

ROUNDS = int(os.environ.get("REPLICA_CRASH_ROUNDS", "22"))
BYTES_PER_SECOND = 1.5e6      # per blob connection: a 1-2 MB blob takes about 0.7-1.4 s
NEW_BLOBS = 3
HEX = re.compile(r"[0-9a-f]{64}")


def wait(what: str, check: Callable[[], object], timeout: float, context: str) -> float:
    start = time.monotonic()
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            if check():
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout}s: {what} ({context})")
        time.sleep(0.01)


@dataclass
class Replica:
    """One ``codecache replicate`` or ``codecache serve`` process on the replica's store."""

    directory: Path
    mode: str
    process: subprocess.Popen[bytes]
    port: int | None = None

    @classmethod
    def start(cls, directory: Path, mode: str, log: Path) -> Replica:
        env = cli_env()
        port = None
        if mode == "serve":
            port = free_port()
            env["CODECACHE_SERVER_LISTEN"] = f"127.0.0.1:{port}"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "codecache", "--config",
                 str(directory / "codecache.toml"), mode],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=directory)
        return cls(directory, mode, process, port)

    def served_index(self) -> bytes | None:
        if self.port is None:
            return None
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/index.json")
            response = conn.getresponse()
            return response.read() if response.status == 200 else None
        finally:
            conn.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Offer:
    serial: int
    document: bytes
    blobs: dict[str, bytes]                  # sha256 → bytes, of every release listed


@dataclass
class Rounds:
    """What the upstream offers, round after round (new serial, new blobs)."""

    rng: random.Random
    publisher: Publisher
    upstream: FakeUpstream
    offers: dict[int, Offer] = field(default_factory=dict)
    offered_blobs: set[str] = field(default_factory=set)
    current: Offer | None = None

    def offer(self, n: int) -> tuple[Offer, int]:
        releases = {f"{n}.{m}.0": self.rng.randbytes(self.rng.randint(1 << 20, 2 << 20))
                    for m in range(NEW_BLOBS)}
        if self.current is not None:   # the previous round's releases stay listed
            previous = json.loads(self.current.document)["signed"]["packages"]
            by_sha = self.current.blobs
            for version, record in previous[self.publisher.package]["releases"].items():
                if version.startswith(f"{n - 1}."):
                    releases[version] = by_sha[record["sha256"]]
        serial = 10_000 + n
        document = self.publisher.sign(self.publisher.make_index(serial, releases,
                                                                 f"{n}.{NEW_BLOBS - 1}.0"))
        blobs = {hashlib.sha256(d).hexdigest(): d for d in releases.values()}
        offer = Offer(serial, document, blobs)
        self.offers[serial] = offer
        self.offered_blobs |= set(blobs)
        self.current = offer
        routes = {"/index.json": index(document)}
        routes.update({f"/blobs/sha256/{sha}": throttled(d, BYTES_PER_SECOND,
                                                           self.upstream.closing)
                       for sha, d in blobs.items()})
        return offer, self.upstream.set(routes)


def leftovers(store: Path) -> list[str]:
    """Scratch a killed writer may leave (cleared by the next writer): never referenced."""
    found = [str(p.relative_to(store)) for p in (store / "tmp").rglob("*") if p.is_file()] \
        if (store / "tmp").exists() else []
    found += [str(p.relative_to(store)) for p in store.rglob(".*.tmp-*")]
    return found


def completed(store: Path, offer: Offer) -> bool:
    """The store holds ``offer``'s index and has recorded its serial."""
    state = json.loads((store / "state.json").read_bytes())
    return bool((store / "index.json").read_bytes() == offer.document
                and state["highest_serial"] == offer.serial)


def serves(replica: Replica, offer: Offer) -> bool:
    return replica.served_index() == offer.document


def check_store(store: Path, directory: Path, offers: dict[int, Offer], offered: set[str],
                context: str) -> int | None:
    """The store is consistent; returns the serial of its index (None: no index yet)."""
    raw = (store / "index.json").read_bytes() if (store / "index.json").exists() else None
    keys = load_trusted_keys([directory / "keys" / "codecache.pub"])
    blob_dir = store / "blobs" / "sha256"
    # Every blob under its final name is whole: a partial download never lands there.
    if blob_dir.exists():
        for path in blob_dir.iterdir():
            assert HEX.fullmatch(path.name), f"{path.name} in blobs/sha256 ({context})"
            assert path.is_file() and not path.is_symlink(), context
            assert sha256_file(path)[0] == path.name, f"partial blob {path.name} ({context})"
            assert path.name in offered, context
    status = run_cli("status", "--json", config=directory / "codecache.toml", timeout=60)
    for name in ("state.json", "replica.json"):
        if (store / name).exists():
            json.loads((store / name).read_bytes())
    if raw is None:
        assert status.returncode != 0 and "Traceback" not in status.stderr, (status, context)
        return None
    signed = verify(raw, keys)
    assert signed.serial in offers and raw == offers[signed.serial].document, context
    for sha256, size in signed.index.blob_sizes().items():
        assert sha256_file(blob_dir / sha256) == (sha256, size), f"blob {sha256} ({context})"
    for package, pkg in signed.index.packages.items():
        for version, release in pkg.releases.items():
            sig = store / "signatures" / package / f"{version}.minisig"
            assert sig.read_text() == release.minisig, f"{sig} ({context})"
    state = json.loads((store / "state.json").read_bytes())
    # The state follows the index swap: a kill between the two leaves the previous serial.
    assert state["highest_serial"] in (signed.serial, signed.serial - 1), (state, context)
    assert status.returncode == 0, (status.stdout, status.stderr, context)
    assert json.loads(status.stdout)["serial"] == signed.serial, context
    return signed.serial


def comparable(store: Path, offer: Offer) -> dict[str, bytes]:
    """What two replicas of the same index must have alike: the index, the local state,
    every blob and signature it lists (not scratch, lag facts, or earlier rounds' files)."""
    files = {"index.json": (store / "index.json").read_bytes(),
             "state.json": (store / "state.json").read_bytes()}
    packages = json.loads(offer.document)["signed"]["packages"]
    for package, pkg in packages.items():
        for version in pkg["releases"]:
            name = f"signatures/{package}/{version}.minisig"
            files[name] = (store / name).read_bytes()
    for sha256 in sorted(offer.blobs):
        files[f"blobs/sha256/{sha256}"] = (store / "blobs" / "sha256" / sha256).read_bytes()
    return files


def test_kill_9_at_random_points_of_a_pull_leaves_a_consistent_store(tmp_path: Path) -> None:
    seed = int(os.environ.get("REPLICA_CRASH_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"\nreplica crash test: seed {seed} (REPLICA_CRASH_SEED={seed} replays it), "
          f"{ROUNDS} rounds")
    rng = random.Random(seed)  # noqa: S311 (reproducible test choices, not secrets)
    publisher = Publisher()
    directory = tmp_path / "replica"
    store = directory / "store"
    log = directory / "replica.log"
    started = time.monotonic()
    kills: list[str] = []
    with FakeUpstream() as upstream:
        write_replica_dir(directory, publisher, [upstream.base], interval=0.3, timeout="5s")
        rounds = Rounds(rng, publisher, upstream)
        replica: Replica | None = None
        try:
            for n in range(1, ROUNDS + 1):
                context = f"seed {seed}, round {n}"
                previous = rounds.current.serial if rounds.current else None
                offer, generation = rounds.offer(n)
                if replica is None:
                    replica = Replica.start(directory, rng.choice(["replicate", "serve"]), log)
                wait("the replica asks for the new index",
                     partial(upstream.requests, "/index.json", generation), 30, context)
                asked = upstream.requests("/index.json", generation)[0].at
                delay = rng.uniform(0.0, 1.6)
                time.sleep(max(0.0, asked + delay - time.monotonic()))
                replica.kill()
                scratch = leftovers(store)
                held = check_store(store, directory, rounds.offers, rounds.offered_blobs,
                                   context)
                assert held in (previous, offer.serial), (held, context)
                where = "after the swap" if held == offer.serial else "before the swap"
                kills.append(f"{replica.mode}+{delay:.2f}s {where}"
                             + (f" ({len(scratch)} scratch files)" if scratch else ""))

                # Restart: the next pull completes and the newest index is served.
                replica = Replica.start(directory, rng.choice(["replicate", "serve"]), log)
                wait("the restarted replica installs the newest index and records its serial",
                     partial(completed, store, offer), 30, context)
                if replica.mode == "serve":
                    wait("the restarted replica serves the newest index",
                         partial(serves, replica, offer), 30, context)
                assert check_store(store, directory, rounds.offers, rounds.offered_blobs,
                                   context) == offer.serial
                if held != offer.serial:
                    # That install took the writers' lock, which clears a killed writer's
                    # scratch (the live loop's own replica.json temp may come and go).
                    left = [f for f in leftovers(store) if "replica.json" not in f]
                    assert left == [], (left, context)
        finally:
            if replica is not None:
                replica.stop()
            print("kills: " + "; ".join(f"{i + 1}: {k}" for i, k in enumerate(kills)))

        # An uninterrupted pull of the same upstream into an empty store: the same result.
        assert rounds.current is not None
        reference = tmp_path / "reference"
        write_replica_dir(reference, publisher, [upstream.base], interval=0.3, timeout="5s")
        run_cli("replicate", "--once", config=reference / "codecache.toml", check=True,
                timeout=60)
    listed = set(rounds.current.blobs)
    mine = comparable(store, rounds.current)
    theirs = comparable(reference / "store", rounds.current)
    assert mine.keys() == theirs.keys(), f"seed {seed}"
    for name in mine:
        assert mine[name] == theirs[name], f"{name} differs (seed {seed})"
    # Blobs beyond the index are earlier rounds' (old blobs stay), each whole.
    extra = {p.name for p in (store / "blobs" / "sha256").iterdir()} - listed
    assert extra <= rounds.offered_blobs
    before = sum(1 for k in kills if "before" in k)
    print(f"{len(kills)} kills ({before} before the index swap, {len(kills) - before} after) "
          f"in {time.monotonic() - started:.1f} s; store equals an uninterrupted pull")
    assert len(kills) >= min(ROUNDS, 20)
