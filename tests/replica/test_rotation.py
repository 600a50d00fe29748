"""Key rotation without downtime, end to end (docs/keys.md, step by step).

Real processes only: an origin (``codecache serve`` over a store synced from the real
svnserve) → replica A → replica B (each ``codecache serve`` with ``role = "replica"``), a
real squid in front of B, and pilots pinned to the old key and to the new key. At every
step each pilot downloads a release and its signature by its own key, directly from B and
through the squid, and checks it with the stock ``minisign -V -p KEY.pub`` and with
``codecache verify --key``; the pilot script (``scripts/fetch-pilot -k``) runs too. While
the origin re-signs and the replicas pull (steps 3, 5, 6), pilots keep downloading in a
loop, and none of their downloads or checks may fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Origin, SvnRepo, cli_env, new_origin, require, run_cli
from tests.harness import config as harness_config
from tests.harness.clients import curl_fetch, wget
from tests.harness.timing import scaled
from tests.http.helpers import Server, start_server
from tests.replica.conftest import readyz, replica_origin
from tests.squid import Squid, running_squid

REPO = Path(__file__).resolve().parents[2]
MAX_AGE = 2     # channel_max_age of replica B: the primary's .minisig is cached this long
PROPAGATION = 30.0


@dataclass
class Pilot:
    """A pilot pinned to one public key."""

    name: str
    public_key: Path
    keyid: str
    workdir: Path
    checks: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, base: str, path: str, *, squid: Squid | None, plain_sig: bool = False,
              pin: bool = True) -> None:
        """Download ``path`` and its signature by this pilot's key; verify with two tools.

        ``pin``: for a channel, fetch the signature of the release the tarball response
        names (``X-Codecache-Version``), as scripts/fetch-pilot does, so a channel move (or
        two cache entries of different age in the squid) cannot pair two releases.
        """
        proxy = ("-x", squid.proxy, "--noproxy", "") if squid else ("--noproxy", "*")
        tarball = curl_fetch(base + path, *proxy, cwd=self.workdir, output="pilot.tar.gz")
        version = tarball.headers.get("x-codecache-version")
        if pin and "/releases/" not in path and version:
            path = f"{path.rsplit('/', 1)[0]}/releases/{version}.tar.gz"
        sig_path = f"{path}.minisig" if plain_sig else f"{path}.{self.keyid}.minisig"
        sig = curl_fetch(base + sig_path, *proxy, cwd=self.workdir, output="pilot.minisig")
        self.checks += 1
        where = f"{self.name} {sig_path}{' via squid' if squid else ''}"
        if (tarball.status, sig.status) != (200, 200):
            self.failures.append(f"{where}: HTTP {tarball.status}/{sig.status}")
            return
        file, sigfile = self.workdir / "pilot.tar.gz", self.workdir / "pilot.minisig"
        minisign = subprocess.run([require("minisign"), "-Vm", str(file), "-x", str(sigfile),
                                   "-p", str(self.public_key)],
                                  capture_output=True, text=True, check=False)
        if minisign.returncode != 0:
            self.failures.append(f"{where}: minisign: {minisign.stderr.strip()}")
        verify = run_cli("verify", str(file), "--sig", str(sigfile), "--key",
                         str(self.public_key))
        if verify.returncode != 0:
            self.failures.append(f"{where}: codecache verify: {verify.stderr.strip()}")

    def fetch_pilot(self, url: str, squid: Squid) -> None:
        """The pilot script, through the squid (curl or wget take it from http_proxy)."""
        out = self.workdir / "fetched.tar.gz"
        out.unlink(missing_ok=True)
        env = {**cli_env(), "http_proxy": squid.proxy, "no_proxy": "", "NO_PROXY": "",
               "FETCH_PILOT_TRIES": "1"}
        result = subprocess.run(["sh", str(REPO / "scripts" / "fetch-pilot"), "-k",
                                 str(self.public_key), "-o", str(out), url],
                                capture_output=True, text=True, env=env, timeout=120,
                                check=False)
        self.checks += 1
        if result.returncode != 0 or not out.exists():
            self.failures.append(f"{self.name} fetch-pilot {url}: exit {result.returncode}: "
                                 f"{result.stderr.strip()[-500:]}")


@dataclass
class Chain:
    """origin → A → B (pilots' replica, behind the squid); C (pulls from A) joins later."""

    origin: Origin
    origin_server: Server
    tmp: Path
    a: Server
    b: Server
    squid: Squid
    servers: list[Server] = field(default_factory=list)
    c: Server | None = None

    def set_origin_keys(self, secret: list[str], trusted: list[str]) -> None:
        config = self.origin.config
        lines = [line for line in config.read_text().splitlines()
                 if not line.startswith(("secret_key", "trusted_keys"))]
        at = lines.index("[signing]") + 1
        lines[at:at] = [f"secret_key = {json.dumps(secret)}",
                        f"trusted_keys = {json.dumps(trusted)}"]
        config.write_text("\n".join(lines) + "\n")

    def origin_serial(self) -> int:
        serial: int = json.loads((self.origin.store / "index.json").read_bytes())[
            "signed"]["serial"]
        return serial

    def sync(self) -> int:
        """``sync --once`` on the origin; wait until every replica serves what it signed."""
        self.origin.cli("sync", "--once", check=True)
        return self.wait_replicas()

    def wait_replicas(self) -> int:
        serial = self.origin_serial()
        for name, server in self.replicas():
            def serves(replica: Server = server) -> bool:
                return readyz(replica).get("serial") == serial
            server.wait_for(f"replica {name} serves serial {serial}", serves, PROPAGATION)
        return serial

    def replicas(self) -> list[tuple[str, Server]]:
        found = [("A", self.a), ("B", self.b)]
        return found + ([("C", self.c)] if self.c is not None else [])

    def restart_origin_server(self) -> None:
        """``codecache serve`` reads ``trusted_keys`` at start: the origin's too."""
        self.origin_server.stop()
        self.origin_server = start_server(self.origin, port=self.origin_server.port)
        self.servers.append(self.origin_server)

    def restart_replica(self, name: str, trusted: list[Path]) -> None:
        """Give replica A, B or C these trusted keys (a config change), restarted on its port."""
        attr = name.lower()
        directory = self.tmp / attr
        server: Server | None = getattr(self, attr)
        upstream = {"a": self.origin_server.base, "b": self.a.base, "c": self.a.base}[attr]
        write_config(directory, trusted, upstream)
        port = None
        if server is not None:
            server.stop()
            port = server.port
        env = {"CODECACHE_SERVER_CHANNEL_MAX_AGE": str(MAX_AGE)} if attr == "b" else None
        restarted = start_server(replica_origin(directory, self.origin), port=port, env=env)
        self.servers.append(restarted)
        setattr(self, attr, restarted)


def write_config(directory: Path, trusted: list[Path], upstream: str) -> None:
    (directory / "keys").mkdir(parents=True, exist_ok=True)
    names = []
    for key in trusted:
        (directory / "keys" / key.name).write_bytes(key.read_bytes())
        names.append(f"keys/{key.name}")
    harness_config.write(directory / "codecache.toml", harness_config.build(
        role="replica", store={"path": "store"}, signing={"trusted_keys": names},
        replica={"upstreams": [upstream], "interval": "0.5s", "timeout": "3s"}))


@pytest.fixture
def chain(svn_server: SvnRepo, tmp_path: Path) -> Iterator[Chain]:
    require("minisign")
    origin = new_origin(svn_server, tmp_path / "origin")
    (origin.dir / "keys" / "old.pub").write_bytes(origin.public_key.read_bytes())
    servers: list[Server] = []
    with running_squid() as squid:
        try:
            origin_server = start_server(origin)
            servers.append(origin_server)
            old_pub = origin.dir / "keys" / "old.pub"
            write_config(tmp_path / "a", [old_pub], origin_server.base)
            a = start_server(replica_origin(tmp_path / "a", origin))
            servers.append(a)
            write_config(tmp_path / "b", [old_pub], a.base)
            b = start_server(replica_origin(tmp_path / "b", origin),
                             env={"CODECACHE_SERVER_CHANNEL_MAX_AGE": str(MAX_AGE)})
            servers.append(b)
            found = Chain(origin, origin_server, tmp_path, a, b, squid, servers)
            yield found
        finally:
            for server in servers:
                server.stop()


def keyid_of(public_key: Path) -> str:
    return public_key.read_text().splitlines()[0].rsplit(" ", 1)[1]


@dataclass
class Background:
    """Pilots downloading in a loop while the servers change under them."""

    work: Callable[[], None]
    stop: threading.Event = field(default_factory=threading.Event)
    rounds: int = 0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.work()
                self.rounds += 1
        except BaseException as err:  # reported by the test thread
            self.error = err

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        # at least two full rounds after the change, so the new state was exercised
        target = self.rounds + 2
        deadline = time.monotonic() + scaled(120)
        while self.rounds < target and self.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        self.thread.join(timeout=120)
        if self.error is not None:
            raise self.error


def test_rotation_through_a_replica_chain_and_a_squid_fails_no_pilot(
        chain: Chain, svn_server: SvnRepo, tmp_path: Path) -> None:
    origin, squid = chain.origin, chain.squid
    package = origin.package
    keys = origin.dir / "keys"
    old_pub = keys / "old.pub"
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
    old = Pilot("old-key pilot", old_pub, keyid_of(old_pub), tmp_path / "old")
    release = f"/{package}/releases/1.2.0.tar.gz"
    channel = f"/{package}/latest.tar.gz"

    def b_base() -> str:
        return chain.b.base

    def old_pilot_round() -> None:
        for path in (release, channel):
            old.check(b_base(), path, squid=None)
            old.check(b_base(), path, squid=squid)

    # step 0: one key. The old key's per-key URL already answers (the map reads from minisig).
    old_pilot_round()
    old.check(b_base(), release, squid=squid, plain_sig=True)
    old.check(b_base(), channel, squid=None, pin=False)   # the channel's own per-key URL
    old.fetch_pilot(b_base() + channel, squid)
    assert old.failures == [], old.failures

    # step 1: a new key; the origin and replica A trust both (restarted). Replica B is left
    # trusting the old key only, as a replica not yet reached by the config change would be.
    run_cli("keygen", "--secret-key", str(keys / "new.key"), "--public-key",
            str(keys / "new.pub"), check=True)
    new_pub = keys / "new.pub"
    new = Pilot("new-key pilot", new_pub, keyid_of(new_pub), tmp_path / "new")
    assert new.keyid != old.keyid
    chain.set_origin_keys(["keys/codecache.key"], ["keys/old.pub", "keys/new.pub"])
    chain.restart_origin_server()
    chain.restart_replica("A", [old_pub, new_pub])
    chain.wait_replicas()
    old_pilot_round()
    assert old.failures == [], old.failures
    # nothing is signed by the new key yet
    assert curl_fetch(b_base() + f"{release}.{new.keyid}.minisig", cwd=new.workdir).status == 404

    # step 2: sign with both (old still primary), and a new tag is published meanwhile
    svn_server.change(package, "lib/pilot/main.py", "print('pilot 1.3.0')\n")
    svn_server.tag(package, "1.3.0")
    chain.set_origin_keys(["keys/codecache.key", "keys/new.key"],
                          ["keys/old.pub", "keys/new.pub"])
    with Background(old_pilot_round):
        chain.sync()
    # a new replica C (pulling from A) that trusts only the new key takes the index at once
    chain.restart_replica("C", [new_pub])
    chain.wait_replicas()
    assert chain.c is not None
    c = chain.c
    index = json.loads(chain.b.request("/index.json").body)
    assert [s["keyid"] for s in index["signatures"]] == [old.keyid, new.keyid]
    assert json.loads(c.request("/index.json").body) == index
    new.check(c.base, release, squid=None)
    assert index["signed"]["packages"][package]["channels"]["latest"]["version"] == "1.3.0"
    for path in (release, f"/{package}/releases/1.3.0.tar.gz", channel):
        for pilot in (old, new):
            pilot.check(b_base(), path, squid=None)
            pilot.check(b_base(), path, squid=squid)
    old.check(b_base(), release, squid=squid, plain_sig=True)   # still the old key's
    assert old.failures == [] and new.failures == [], old.failures + new.failures
    # a wget -N pilot keeps the release and its plain .minisig up to date through the squid
    mirror = tmp_path / "wget-N"
    mirror.mkdir()

    def wget_n_verifies(public_key: Path) -> bool:
        proxy = ("-e", "use_proxy=yes", "-e", f"http_proxy={squid.proxy}", "-e", "no_proxy=")
        for suffix in ("", ".minisig"):
            got = wget("-N", *proxy, b_base() + release + suffix, cwd=mirror)
            assert got.returncode == 0, got.stderr
        return subprocess.run([require("minisign"), "-Vm", str(mirror / "1.2.0.tar.gz"),
                               "-p", str(public_key)], capture_output=True,
                              check=False).returncode == 0

    assert wget_n_verifies(old_pub)

    # step 3: the pilots switch to the new key (fetch-pilot -k new.pub through the squid)
    new.fetch_pilot(b_base() + channel, squid)
    new.fetch_pilot(b_base() + release, squid)
    old.fetch_pilot(b_base() + channel, squid)
    assert old.failures == [] and new.failures == [], old.failures + new.failures

    # step 4: the new key becomes the primary; both pilots keep working throughout
    def both_pilots_round() -> None:
        for path in (release, channel):
            for pilot in (old, new):
                pilot.check(b_base(), path, squid=None)
                pilot.check(b_base(), path, squid=squid)

    chain.set_origin_keys(["keys/new.key", "keys/codecache.key"],
                          ["keys/old.pub", "keys/new.pub"])
    with Background(both_pilots_round):
        chain.sync()   # B (old key only) and C (new key only) both take it
    new.check(c.base, release, squid=None, plain_sig=True)
    index = json.loads(chain.b.request("/index.json").body)
    assert [s["keyid"] for s in index["signatures"]] == [new.keyid, old.keyid]
    # the plain .minisig is the new key's now: directly at once, through the squid once
    # its copy is older than channel_max_age
    new.check(b_base(), release, squid=None, plain_sig=True)
    for pilot in (old, new):
        pilot.check(b_base(), channel, squid=None, pin=False)
    time.sleep(MAX_AGE + 1.5)
    new.check(b_base(), release, squid=squid, plain_sig=True)
    # its Last-Modified moved with the switch, so wget -N fetches it again (not a 304)
    assert wget_n_verifies(new_pub)
    new.fetch_pilot(b_base() + channel, squid)
    old.fetch_pilot(b_base() + channel, squid)
    assert old.failures == [] and new.failures == [], old.failures + new.failures

    # step 5: the old key is dropped at the origin, then from every replica's trusted_keys
    def new_pilot_round() -> None:
        for path in (release, channel):
            new.check(b_base(), path, squid=None)
            new.check(b_base(), path, squid=squid)

    # B must trust the new key before the old one stops signing (late, but in time)
    chain.restart_replica("B", [old_pub, new_pub])
    chain.wait_replicas()
    chain.set_origin_keys(["keys/new.key"], ["keys/new.pub"])
    with Background(new_pilot_round):
        chain.sync()
    chain.restart_origin_server()
    for name in ("A", "B"):
        chain.restart_replica(name, [new_pub])
    chain.wait_replicas()
    new_pilot_round()
    new.fetch_pilot(b_base() + channel, squid)
    index = json.loads(chain.b.request("/index.json").body)
    assert [s["keyid"] for s in index["signatures"]] == [new.keyid]
    gone = curl_fetch(b_base() + f"{release}.{old.keyid}.minisig", cwd=new.workdir)
    assert gone.status == 404
    assert json.loads(gone.body)["error"]["code"] == "signature_not_found"
    assert new.failures == [], new.failures
    assert old.checks > 20 and new.checks > 20, (old.checks, new.checks)
    assert os.environ.get("CODECACHE_SIGNING_SECRET_KEY") is None
