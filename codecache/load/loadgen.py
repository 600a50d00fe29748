"""The pilot load generator (``codecache loadgen URL``): pilots as they really behave.

Owns running a load run in one process: the schedules (closed loop, open loop, a publish
burst, slow clients) and the bounds that make a run stop by itself (a request count and a
duration, plus one timeout of grace), and the live progress. What to run is ``profile``;
which URLs pilots ask for is ``targets``; one request and its checks (every body against
the sha256 in its ETag) is ``request``; the tally and the report are ``loadstats``; several
processes are ``loadpool``; printing is ``cli``'s.

Written on the aiohttp client (already a dependency) rather than Locust: measured on this
2-core machine, one asyncio process drove as many or more requests per second per core as
Locust's FastHttpUser (4,200-5,600 vs 2,300-5,000 req/s against nginx, same runs), and held
10,000 slow connections too; the pilot checks (sha256 per body, ranges against known bytes,
validators per URL) are custom code in either. docs/loadgen.md has the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from codecache.load.loadstats import Tally, report
from codecache.load.profile import MIX_KINDS, Kind, Profile
from codecache.load.request import Requests
from codecache.load.targets import Target, discover

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
    """One run in this process: discover the targets, then issue requests on the schedule
    until a bound is reached, and drain those in flight."""

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
        self.requests = Requests(profile, self.tally, self.rng)

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
            self.targets = await discover(session, p)
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
            await self.requests.request(session, kind, target, time.monotonic())

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
        self._spawn(self.requests.request(session, kind, target, when))

    async def _slow_clients(self, session: aiohttp.ClientSession) -> None:
        p = self.profile
        for n in range(p.slow):
            delay = self.start + (p.ramp * n / p.slow) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() >= self.deadline:
                break
            self._spawn(self.requests.request(session, Kind.SLOW, self.rng.choice(
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

