"""The redirector (DESIGN.md §4, §5): a site's tarball request answered 302 to one of its edges.

Owns: which requests may be redirected (tarball URLs and their checksums and signatures,
never ``/blobs/``, the index, the history or a service URL), reading each target's
``/readyz`` every ``[redirect] check_interval`` (``TargetWatch``), the rule that makes a
target usable (``fitness``: ready, an edge, confirmed with its upstream within 30 s, holding
at least the history this node serves at that moment; ``choose``: of a scheme the client may
follow, at random), and the ``302`` itself with its metrics. Who is asking and which site
that selects is ``sites``'s.

Every worker process probes for itself: the request path reads only what its own loop last
stored (no file, no lock, no other process), and a worker started late probes at once. The
cost is a few ``/readyz`` per worker and target every interval, nothing to an edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from codecache import __version__
from codecache.core.config_schema import RedirectConfig, RedirectSite
from codecache.core.errors import IndexRefused, UpstreamFailure
from codecache.upstream.client import Client, session
from codecache.web.catalog import Representation, Route, origin_form
from codecache.web.sites import Requester, SiteMap, site_parameter
from codecache.web.storeview import StoreView

log = logging.getLogger("codecache.web.redirect")

#: Routes a site's client may be sent elsewhere for: a tarball, its checksum, its signatures.
REDIRECTED = frozenset({Route.CHANNEL, Route.RELEASE, Route.CHECKSUM, Route.SIGNATURE})
#: A target must have confirmed its index with its upstream this recently (DESIGN.md §5),
#: so it can fill a miss; the time since our probe counts too.
CONFIRMED_WITHIN = 30.0
#: A probe slower than this (or than ``check_interval``) counts as not ready.
PROBE_CEILING = 2.0
_READYZ_CAP = 64 * 1024          # a /readyz body is a few hundred bytes
NO_STORE_PRIVATE = "private, no-store"   # no shared cache hands one site's redirect on


class Direct(enum.Enum):
    """Why a site's client was served directly: the ``reason`` label."""

    NOT_READY = "target_not_ready"   # no target of the client's scheme is ready
    BEHIND = "target_behind"         # some are, but none holds the history served here


@dataclass(frozen=True, slots=True)
class Probe:
    """What one target's ``/readyz`` said when last read."""

    ready: bool            # 200 and ``"role": "edge"`` with the facts below
    history_length: int
    confirmed_age: float   # its ``seconds_since_confirmed`` at the probe
    at: float              # ``time.monotonic()`` of the answer
    problem: str = ""      # why not ready, for the log

    def fresh(self, now: float) -> bool:
        """Ready, and its index confirmed within ``CONFIRMED_WITHIN`` as of ``now``."""
        return self.ready and self.confirmed_age + (now - self.at) <= CONFIRMED_WITHIN


NOT_PROBED = Probe(False, 0, math.inf, 0.0, "not probed yet")


def read_probe(body: bytes, at: float) -> Probe:
    """The verdict on a ``/readyz`` body that came with a 200 (any other status, a timeout
    or a refused body is a ``Probe`` that is not ready, made by the caller)."""
    try:
        facts = json.loads(body)
    except (ValueError, RecursionError):   # not JSON, or nested past the parser's depth
        return Probe(False, 0, math.inf, at, "readyz body is not JSON")
    if not isinstance(facts, dict):
        return Probe(False, 0, math.inf, at, "readyz body is not a JSON object")
    if facts.get("role") != "edge":
        # Only an edge is a target: it never redirects, so no redirect can loop.
        return Probe(False, 0, math.inf, at, f"role is {facts.get('role')!r}, not 'edge'")
    history, age = _count(facts.get("history_length")), \
        _count(facts.get("seconds_since_confirmed"))
    if history is None or age is None:
        return Probe(False, 0, math.inf, at, "readyz lacks history_length or "
                     "seconds_since_confirmed")
    return Probe(True, int(history), age, at)


def _count(value: object) -> float | None:
    """A JSON number that can be a count or an age (finite, not negative), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and \
            math.isfinite(value) and value >= 0:
        return float(value)
    return None


class Fitness(enum.Enum):
    """What a target is for one request (DESIGN.md §5)."""

    USABLE = "usable"
    NOT_READY = "not_ready"    # no answer, not 200, not an edge, or not confirmed in 30 s
    BEHIND = "behind"          # ready, but holds less history than this node serves


def fitness(probe: Probe, served_history: int, now: float) -> Fitness:
    """The rule: fresh (``Probe.fresh``) and holding at least ``served_history`` entries (a
    re-sign adds none, so it never makes a target behind)."""
    if not probe.fresh(now):
        return Fitness.NOT_READY
    if probe.history_length < served_history:
        return Fitness.BEHIND
    return Fitness.USABLE


def choose(targets: Sequence[tuple[str, Probe]], *, https: bool, served_history: int,
           now: float, rng: random.Random) -> str | Direct:
    """A usable target of the client's scheme for one request, at random, or why there is
    none: an https request only to an https target; an http request prefers http ones."""
    fit = [(url, fitness(probe, served_history, now)) for url, probe in targets
           if not https or url.startswith("https:")]
    usable = [url for url, verdict in fit if verdict is Fitness.USABLE]
    if not usable:
        return Direct.BEHIND if any(v is Fitness.BEHIND for _, v in fit) else Direct.NOT_READY
    if not https:
        usable = [url for url in usable if url.startswith("http:")] or usable
    return usable[0] if len(usable) == 1 else rng.choice(usable)


def describe(probe: Probe, served_history: int, now: float) -> str:
    """One target as ``/readyz`` shows it: ``usable``, or why not."""
    verdict = fitness(probe, served_history, now)
    if verdict is Fitness.USABLE:
        return "usable"
    if verdict is Fitness.BEHIND:
        return f"behind: history_length {probe.history_length} < {served_history}"
    if not probe.ready:
        return f"not ready: {probe.problem}"
    return (f"not ready: index confirmed {probe.confirmed_age + now - probe.at:.0f} s ago "
            f"(more than {CONFIRMED_WITHIN:.0f})")


class TargetWatch:
    """Every target's last probe, refreshed every ``interval`` by ``running``'s task."""

    def __init__(self, targets: Iterable[str], interval: float) -> None:
        self.interval = interval
        self.timeout = min(interval, PROBE_CEILING)
        self.probes: dict[str, Probe] = dict.fromkeys(targets, NOT_PROBED)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Probe in the background while inside (one session, kept-alive connections)."""
        async with session(timeout=self.timeout, agent=f"codecache-redirect/{__version__}",
                           connections=max(8, len(self.probes))) as http:
            clients = {url: Client(http, url) for url in self.probes}
            task = asyncio.create_task(self._loop(clients), name="redirect-probes")
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _loop(self, clients: Mapping[str, Client]) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.probe_all(clients)
            except Exception:
                # A bug must not stop the probes: the last results would age out (30 s)
                # and the site's pilots be served here for good.
                log.exception("redirect probes failed")
            # On a fixed beat: a slow probe does not stretch the interval.
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def probe_all(self, clients: Mapping[str, Client]) -> None:
        await asyncio.gather(*(self._probe(url, client) for url, client in clients.items()))

    async def _probe(self, url: str, client: Client) -> None:
        try:
            reply = await client.get("/readyz", seconds=self.timeout, cap=_READYZ_CAP,
                                     what="readyz")
            probe = read_probe(reply.body, time.monotonic())
        except (UpstreamFailure, IndexRefused) as err:
            probe = Probe(False, 0, math.inf, time.monotonic(), str(err))
        before = self.probes[url]
        self.probes[url] = probe
        if before is NOT_PROBED or probe.ready != before.ready:
            if probe.ready:
                log.info("redirect target %s is ready (history_length=%d)", url,
                         probe.history_length)
            else:
                log.warning("redirect target %s is not ready: %s", url, probe.problem)


class Redirector:
    """The redirect decision of one server process, over its ``StoreView``."""

    def __init__(self, config: RedirectConfig, state: StoreView,
                 rng: random.Random | None = None) -> None:
        self.sites = SiteMap(config.sites, config.trusted_proxies)
        self.watch = TargetWatch(dict.fromkeys(t for s in config.sites for t in s.targets),
                                 config.check_interval)
        self._state = state
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not secrecy

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.watch.running()

    def _select(self, raw_path: str, headers: Mapping[str, str],
                peer: str | None) -> tuple[RedirectSite | None, Requester]:
        requester = self.sites.client(peer, headers)
        return self.sites.site_of(site_parameter(raw_path), requester), requester

    def claims(self, raw_path: str, headers: Mapping[str, str], peer: str | None) -> bool:
        """Whether a request for a tarball route may be redirected: its client selects a
        site (the fast path leaves those to the handler)."""
        return self._select(raw_path, headers, peer)[0] is not None

    def _served_history(self) -> int:
        catalog = self._state.catalog
        history = catalog.index.history if catalog is not None else None
        return history.length if history is not None else 0

    def view(self) -> dict[str, dict[str, str]]:
        """Each site's targets as this worker sees them now (``/readyz``'s ``redirect``)."""
        now, served = time.monotonic(), self._served_history()
        return {name: {url: describe(self.watch.probes[url], served, now)
                       for url in site.targets} for name, site in self.sites.sites.items()}

    def answer(self, request: web.BaseRequest, route: Route,
               rep: Representation) -> web.Response | None:
        """The 302 for ``request`` (which names ``rep``), or None: served directly."""
        if route not in REDIRECTED:
            return None
        site, requester = self._select(request.raw_path, request.headers, request.remote)
        if site is None:
            return None
        chosen = choose([(url, self.watch.probes[url]) for url in site.targets],
                        https=requester.https, served_history=self._served_history(),
                        now=time.monotonic(), rng=self._rng)
        metrics = self._state.metrics
        if isinstance(chosen, Direct):
            metrics.redirect_direct.labels(site.name, chosen.value).inc()
            return None
        metrics.redirects.labels(site.name, chosen).inc()
        return redirect_response(chosen, origin_form(request.raw_path), site.name, rep)


def redirect_response(target: str, path: str, site: str,
                      rep: Representation) -> web.Response:
    """``302 Found`` to ``path`` on ``target`` (DESIGN.md §4): private, never stored."""
    location = target + path
    headers = {"Location": location, "Cache-Control": NO_STORE_PRIVATE}
    if rep.version is not None:
        headers["X-Codecache-Version"] = rep.version   # what this node would have served
    body = json.dumps({"redirect": {"site": site, "target": target, "location": location}})
    return web.Response(status=302, text=body + "\n", content_type="application/json",
                        headers=headers)
