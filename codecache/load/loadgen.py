"""The pilot load generator (``codecache loadgen URL``): pilots as they really behave.

Owns the client side of a load run: which URLs a pilot asks for (discovered from the
server's ``/index.json``: channel and release tarballs), the kinds of request in the mix
(``Kind``), the schedules (closed loop, open loop, a publish burst, slow clients), checking
every body against the sha256 in its ETag, and the bounds that make a run stop by itself
(a request count and a duration, plus one timeout of grace). The tally and the report are
``loadstats``; printing is ``cli``'s.

Written on the aiohttp client (already a dependency) rather than Locust: measured on this
2-core machine, one asyncio process drove as many or more requests per second per core as
Locust's FastHttpUser (4,200-5,600 vs 2,300-5,000 req/s against nginx, same runs), and held
10,000 slow connections too; the pilot checks (sha256 per body, ranges against known bytes,
validators per URL) are custom code in either. docs/loadgen.md has the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import random
import re
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from codecache.core.errors import ConfigError, UpstreamError
from codecache.core.names import sha256_of_etag, version_key
from codecache.load.loadstats import Tally, report


class Kind(enum.Enum):
    """One kind of pilot request."""

    FULL = "full"          # GET of a channel tarball, the whole body
    INM = "inm"            # revalidation with If-None-Match (expects 304)
    IMS = "ims"            # revalidation with If-Modified-Since (expects 304)
    PINNED = "pinned"      # GET of a release tarball (a pilot pinned to a version)
    RANGE = "range"        # resumed download: Range + If-Range (expects 206)
    SLOW = "slow"          # a full download read at a limited rate


MIX_KINDS = (Kind.FULL, Kind.INM, Kind.IMS, Kind.PINNED, Kind.RANGE)
DEFAULT_MIX = "full=50,inm=25,ims=10,pinned=10,range=5"
PINNED_PER_PACKAGE = 8          # the newest releases pilots pin to
_CHUNK = 64 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def parse_mix(text: str) -> dict[Kind, float]:
    """``full=50,inm=25`` -> weights by kind.

    Raises:
        ConfigError: an unknown kind, a bad or negative weight, or all weights zero.
    """
    names = {k.value: k for k in MIX_KINDS}
    mix: dict[Kind, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        kind = names.get(name.strip())
        if kind is None or not sep:
            raise ConfigError(f"--mix: {part!r} is not KIND=WEIGHT with KIND one of "
                              f"{', '.join(names)}")
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(f"--mix: weight of {name} is not a number: {value!r}") from None
        if weight < 0 or weight != weight:
            raise ConfigError(f"--mix: weight of {name} must be >= 0")
        mix[kind] = weight
    if not any(mix.values()):
        raise ConfigError("--mix: at least one weight must be positive")
    return mix


@dataclass(frozen=True)
class Profile:
    """What to run. Bounded always: ``requests`` and ``duration`` (seconds) stop the run."""

    url: str
    mix: Mapping[Kind, float] = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    concurrency: int | None = None      # closed loop: this many pilots, back to back
    rate: float | None = None           # open loop: arrivals per second (Poisson)
    burst: int | None = None            # publish burst: this many pilots ...
    within: float = 1.0                 # ... arriving within this many seconds
    requests: int = 1000
    duration: float = 60.0
    slow: int = 0                       # slow clients, each one full download ...
    slow_rate: int = 20_000             # ... read at this many bytes per second
    ramp: float = 5.0                   # slow clients start spread over this many seconds
    timeout: float = 30.0               # connect / between two reads
    max_in_flight: int = 20_000         # open loop and burst: arrivals beyond are "overload"
    keepalive: bool = False             # pilots open a connection per download (curl, wget)
    package: str | None = None
    channel: str | None = None
    seed: int = 0
    processes: int = 1                  # load generator processes sharing the profile

    def validate(self) -> None:
        """Raises:
        ConfigError: an impossible combination or a value out of range.
        """
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"loadgen: URL must be http(s)://HOST[:PORT][/PATH], "
                              f"got {self.url!r}")
        chosen = [n for n, v in (("--concurrency", self.concurrency), ("--rate", self.rate),
                                 ("--burst", self.burst)) if v is not None]
        if len(chosen) > 1:
            raise ConfigError(f"loadgen: choose one schedule, not {' and '.join(chosen)}")
        checks = [(self.concurrency is None or self.concurrency >= 1, "--concurrency >= 1"),
                  (self.rate is None or self.rate > 0, "--rate > 0"),
                  (self.burst is None or self.burst >= 1, "--burst >= 1"),
                  (self.within > 0, "--within > 0"), (self.requests >= 1, "--requests >= 1"),
                  (0 < self.duration <= 86_400, "0 < --duration <= 86400"),
                  (self.slow >= 0, "--slow >= 0"), (self.slow_rate >= 1, "--slow-rate >= 1"),
                  (self.ramp >= 0, "--ramp >= 0"), (self.timeout > 0, "--timeout > 0"),
                  (self.max_in_flight >= 1, "--max-in-flight >= 1"),
                  (1 <= self.processes <= 64, "1 <= --processes <= 64")]
        for ok, rule in checks:
            if not ok:
                raise ConfigError(f"loadgen: {rule}")

    @property
    def schedule(self) -> str:
        if self.rate is not None:
            return "open"
        if self.burst is not None:
            return "burst"
        if self.concurrency is not None or not self.slow:
            return "closed"
        return "none"          # slow clients only

    def settings(self) -> dict[str, Any]:
        """The profile as the report shows it."""
        return {"url": self.url, "schedule": self.schedule,
                "mix": {k.value: v for k, v in self.mix.items()},
                "concurrency": self.concurrency or (10 if self.schedule == "closed" else None),
                "rate": self.rate, "burst": self.burst,
                "within": self.within if self.burst else None,
                "requests": self.burst or self.requests, "duration": self.duration,
                "slow": self.slow, "slow_rate": self.slow_rate if self.slow else None,
                "timeout": self.timeout, "keepalive": self.keepalive, "seed": self.seed,
                "processes": self.processes}


@dataclass
class Target:
    """One tarball URL and what a pilot knows about it after a verified download."""

    url: str
    etag: str
    last_modified: str | None
    body: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass
class Targets:
    channels: list[Target]
    releases: list[Target]


Progress = Callable[[dict[str, Any]], None]


def run(profile: Profile, progress: Progress | None = None,
        interval: float = 1.0) -> dict[str, Any]:
    """Run the load profile to its bounds in this process; the report (``loadstats.report``).

    Raises:
        ConfigError: a bad profile.
        UpstreamError: the targets could not be discovered or fetched once.
    """
    tally, seconds = run_tally(profile, progress, interval)
    return report(tally, seconds=seconds, settings=profile.settings())


def run_tally(profile: Profile, progress: Progress | None = None, interval: float = 1.0,
              start_at: float | None = None) -> tuple[Tally, float]:
    """Run the profile; the raw tally and the seconds it took. ``start_at`` (Unix time) holds
    the first arrival until then, so several processes start one schedule together.

    Raises:
        ConfigError: a bad profile.
        UpstreamError: the targets could not be discovered or fetched once.
    """
    profile.validate()
    _raise_fd_limit(profile)
    return asyncio.run(_Run(profile, progress, interval, start_at).main())


def _raise_fd_limit(profile: Profile) -> None:
    """Lift the soft open-files limit to the hard one when the run needs many sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = profile.slow + (profile.concurrency or 0) + 256 + (
        profile.max_in_flight if profile.schedule in ("open", "burst") else 10)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


class _Run:
    def __init__(self, profile: Profile, progress: Progress | None, interval: float,
                 start_at: float | None = None) -> None:
        self.profile = profile
        self.start_at = start_at
        self.progress = progress
        self.interval = interval
        self.tally = Tally()
        self.rng = random.Random(profile.seed)  # noqa: S311 (load patterns, not secrets)
        self.issued = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.kinds = [k for k in MIX_KINDS if profile.mix.get(k, 0) > 0]
        self.weights = [profile.mix[k] for k in self.kinds]

    async def main(self) -> tuple[Tally, float]:
        p = self.profile
        timeout = aiohttp.ClientTimeout(total=None, connect=p.timeout, sock_connect=p.timeout,
                                        sock_read=p.timeout)
        connector = aiohttp.TCPConnector(limit=0, force_close=not p.keepalive)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         auto_decompress=False, trust_env=False) as session, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True),
                                      timeout=timeout, auto_decompress=False, trust_env=False,
                                      read_bufsize=16 * 1024) as slow_session:
            self.targets = await self._discover(session)
            if self.start_at is not None:
                await asyncio.sleep(max(0.0, self.start_at - time.time()))
            start = time.monotonic()
            self.start, self.deadline = start, start + p.duration
            reporter = asyncio.create_task(self._report_progress())
            try:
                await asyncio.gather(self._schedule(session), self._slow_clients(slow_session))
                await self._drain(self.deadline + p.timeout)
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            seconds = time.monotonic() - start
        return self.tally, seconds

    # --- targets ------------------------------------------------------------------------

    async def _discover(self, session: aiohttp.ClientSession) -> Targets:
        p = self.profile
        parts = urlsplit(p.url)
        if parts.path.endswith(".tar.gz"):
            one = await self._fetch_target(session, p.url)
            return Targets([one], [one])
        base = p.url.rstrip("/")
        status, body = await self._get(session, f"{base}/index.json")
        if status != 200:
            raise UpstreamError(f"loadgen: {base}/index.json answered {status}")
        try:
            packages: dict[str, Any] = json.loads(body)["signed"]["packages"]
        except (ValueError, KeyError, TypeError) as e:
            raise UpstreamError(f"loadgen: {base}/index.json is not a codecache index") from e
        channel_urls, release_urls = [], []
        for name, package in sorted(packages.items()):
            if p.package is not None and name != p.package:
                continue
            for channel in sorted(package.get("channels", {})):
                if p.channel is None or channel == p.channel:
                    channel_urls.append(f"{base}/{name}/{channel}.tar.gz")
            versions = sorted((v for v, r in package.get("releases", {}).items()
                               if not r.get("yanked")), key=version_key)
            release_urls += [f"{base}/{name}/releases/{v}.tar.gz"
                             for v in versions[-PINNED_PER_PACKAGE:]]
        if not channel_urls:
            raise UpstreamError(f"loadgen: no channel in {base}/index.json"
                                + (f" for package {p.package}" if p.package else "")
                                + (f" named {p.channel}" if p.channel else ""))
        channels = [await self._fetch_target(session, u) for u in channel_urls]
        releases = [await self._fetch_target(session, u) for u in release_urls] or channels
        return Targets(channels, releases)

    async def _get(self, session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
        try:
            async with session.get(url, allow_redirects=False) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise UpstreamError(f"loadgen: cannot fetch {url}: {e or type(e).__name__}") from e

    async def _fetch_target(self, session: aiohttp.ClientSession, url: str) -> Target:
        """One verified download before the run: the body a resumed download is checked
        against, and the validators a revalidating pilot sends."""
        try:
            async with session.get(url, allow_redirects=False) as response:
                body = await response.read()
                etag = response.headers.get("ETag", "")
                modified = response.headers.get("Last-Modified")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise UpstreamError(f"loadgen: cannot fetch {url}: {e or type(e).__name__}") from e
        if status != 200:
            raise UpstreamError(f"loadgen: {url} answered {status}")
        if sha256_of_etag(etag) != hashlib.sha256(body).hexdigest():
            raise UpstreamError(f"loadgen: {url}: the body does not match its ETag {etag!r} "
                                f"(not a codecache tarball, or corrupted)")
        return Target(url, etag, modified, body)

    # --- schedules --------------------------------------------------------------------

    def _more(self) -> bool:
        limit = self.profile.burst or self.profile.requests
        return self.issued < limit and time.monotonic() < self.deadline

    def _pick(self) -> tuple[Kind, Target]:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        pool = self.targets.releases if kind is Kind.PINNED else self.targets.channels
        return kind, self.rng.choice(pool)

    async def _schedule(self, session: aiohttp.ClientSession) -> None:
        p = self.profile
        if p.schedule == "closed":
            await asyncio.gather(*(self._pilot(session) for _ in range(p.concurrency or 10)))
        elif p.rate is not None:
            at = 0.0
            while self._more():
                at += self.rng.expovariate(p.rate)
                await self._arrive(session, at)
        elif p.burst is not None:
            for at in sorted(self.rng.uniform(0, p.within) for _ in range(p.burst)):
                if not self._more():
                    break
                await self._arrive(session, at)

    async def _pilot(self, session: aiohttp.ClientSession) -> None:
        """Closed loop: one pilot's requests back to back."""
        while self._more():
            self.issued += 1
            kind, target = self._pick()
            await self._request(session, kind, target, time.monotonic())

    async def _arrive(self, session: aiohttp.ClientSession, at: float) -> None:
        """Open loop: a request at ``start + at`` whether or not earlier ones finished;
        latency counts from then (no coordinated omission)."""
        when = self.start + at
        delay = when - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.monotonic() >= self.deadline:
            return
        self.issued += 1
        kind, target = self._pick()
        if self.tally.in_flight >= self.profile.max_in_flight:
            self.tally.error(kind.value, "overload")
            return
        self._spawn(self._request(session, kind, target, when))

    async def _slow_clients(self, session: aiohttp.ClientSession) -> None:
        p = self.profile
        for n in range(p.slow):
            delay = self.start + (p.ramp * n / p.slow) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() >= self.deadline:
                break
            self._spawn(self._request(session, Kind.SLOW, self.rng.choice(
                self.targets.channels), time.monotonic()))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _drain(self, hard_deadline: float) -> None:
        """Wait for requests in flight until the hard deadline; cancel what is left."""
        while self.tasks and time.monotonic() < hard_deadline:
            await asyncio.wait(set(self.tasks), timeout=min(1.0, hard_deadline -
                                                              time.monotonic()))
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _report_progress(self) -> None:
        """Every ``interval`` and once at the end: a snapshot for the live progress line."""
        if self.progress is None:
            return
        last_requests, last_time = 0, self.start
        try:
            while True:
                await asyncio.sleep(self.interval)
                last_requests, last_time = self._snapshot(last_requests, last_time)
        finally:
            self._snapshot(last_requests, last_time)

    def _snapshot(self, last_requests: int, last_time: float) -> tuple[int, float]:
        now, done = time.monotonic(), self.tally.requests
        if self.progress is not None:
            self.progress({"elapsed": now - self.start, "requests": done,
                           "requests_per_s": (done - last_requests) / max(now - last_time, 1e-9),
                           "in_flight": self.tally.in_flight, "errors": self.tally.errors,
                           "corrupted": self.tally.corrupted_total,
                           "slow_open": self.tally.slow_open})
        return done, now

    # --- one request ----------------------------------------------------------------------

    async def _request(self, session: aiohttp.ClientSession, kind: Kind, target: Target,
                       started: float) -> None:
        tally, name = self.tally, kind.value
        headers: dict[str, str] = {}
        offset = 0
        if kind is Kind.INM:
            headers["If-None-Match"] = target.etag
        elif kind is Kind.IMS and target.last_modified:
            headers["If-Modified-Since"] = target.last_modified
        elif kind is Kind.RANGE and len(target.body) > 1:
            offset = self.rng.randrange(1, len(target.body))
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = target.etag
        tally.started()
        try:
            async with session.get(target.url, headers=headers,
                                   allow_redirects=False) as response:
                if kind is Kind.SLOW:
                    tally.slow_open += 1
                    tally.slow_peak_open = max(tally.slow_peak_open, tally.slow_open)
                try:
                    body, digest, length = await self._read(response, kind)
                finally:
                    if kind is Kind.SLOW:
                        tally.slow_open -= 1
                seconds = time.monotonic() - started
                tally.answered(name, response.status, seconds, length)
                self._check(kind, target, response, body, digest, length, offset)
        except TimeoutError:
            tally.error(name, "timeout")
        except aiohttp.ClientConnectorError:
            tally.error(name, "connect")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                aiohttp.ClientOSError, ConnectionError):
            tally.error(name, "disconnected")
        except aiohttp.ClientError:
            tally.error(name, "protocol")
        except asyncio.CancelledError:
            tally.error(name, "cancelled")
            raise
        finally:
            tally.finished()

    async def _read(self, response: aiohttp.ClientResponse,
                    kind: Kind) -> tuple[bytes, str, int]:
        """The body (kept unless slow), its sha256 and its length."""
        if kind is not Kind.SLOW:
            body = await response.read()
            return body, hashlib.sha256(body).hexdigest(), len(body)
        # A bandwidth-limited reader: a chunk, then the pause that chunk earns at slow_rate;
        # hashed as it arrives, so 10,000 of them do not hold 10,000 bodies.
        rate = self.profile.slow_rate
        chunk = max(1024, min(rate, _CHUNK))
        digest, length = hashlib.sha256(), 0
        while True:
            data = await response.content.read(chunk)
            if not data:
                return b"", digest.hexdigest(), length
            digest.update(data)
            length += len(data)
            await asyncio.sleep(len(data) / rate)

    def _check(self, kind: Kind, target: Target, response: aiohttp.ClientResponse,
               body: bytes, digest: str, length: int, offset: int) -> None:
        """Count a wrong answer: a body that does not match its ETag's sha256 is corrupted."""
        name, status, etag = kind.value, response.status, response.headers.get("ETag", "")
        if status == 200:
            named = sha256_of_etag(etag)
            declared = response.headers.get("Content-Length")
            if named is None:
                self.tally.error(name, "no_sha256_etag")
            elif named != digest or (declared is not None and declared != str(length)):
                self.tally.corrupted(name)
            elif etag != target.etag and kind is not Kind.SLOW:
                # The channel moved: pilots now know the new tarball.
                target.etag, target.body = etag, body
                target.last_modified = response.headers.get("Last-Modified")
        elif status == 304 and kind in (Kind.INM, Kind.IMS):
            if etag and etag != target.etag and kind is Kind.INM:
                self.tally.error(name, "wrong_304")
        elif status == 206 and kind is Kind.RANGE:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if etag == target.etag and (match is None or int(match[1]) != offset
                                        or body != target.body[offset:]):
                self.tally.corrupted(name)
        else:
            self.tally.error(name, f"http_{status}")
