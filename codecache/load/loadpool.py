"""One load profile spread over several load generator processes (``loadgen --processes N``).

One asyncio process opens about 500-1,000 new connections per second on a loaded core, so a
2,000-pilot burst within 1 s (or 10,000 slow clients connecting over 10 s) measures the
generator rather than the server. This module splits the profile into N shares (counts,
rates and concurrency divided, seeds differing), starts N processes that wait for one common
start time, relays their progress and merges their tallies into one report. It makes no
request itself (``loadgen`` does) and prints nothing (``cli`` does).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import queue
import time
from typing import Any

from codecache.core.errors import CodecacheError, UpstreamError
from codecache.load.loadgen import Progress, run_tally
from codecache.load.loadstats import Tally, report
from codecache.load.profile import Profile

_START_DELAY = 2.0        # seconds for the processes to start and fetch their targets
_CHILD_INTERVAL = 0.25


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers that differ by at most one."""
    return [total // parts + (1 if n < total % parts else 0) for n in range(parts)]


def split(profile: Profile) -> list[Profile]:
    """The per-process profiles of ``profile`` (the same schedule, each with its share)."""
    k = profile.processes
    requests = shares(profile.burst or profile.requests, k)
    slow = shares(profile.slow, k)
    concurrency = shares(profile.concurrency, k) if profile.concurrency else [None] * k
    parts = []
    for n in range(k):
        parts.append(dataclasses.replace(
            profile, processes=1, requests=max(1, requests[n]),
            burst=requests[n] if profile.burst is not None else None, slow=slow[n],
            concurrency=concurrency[n] or (1 if profile.concurrency else None),
            rate=profile.rate / k if profile.rate is not None else None,
            max_in_flight=math.ceil(profile.max_in_flight / k),
            seed=profile.seed * 1000 + n))
    return [p for p in parts if not (p.burst == 0 or (p.schedule == "none" and not p.slow))]


def _child(index: int, profile: Profile, start_at: float,
           out: multiprocessing.Queue[tuple[Any, ...]]) -> None:
    """One generator process: run its share, send progress and the tally to the parent."""
    try:
        tally, seconds = run_tally(profile, lambda p: out.put(("progress", index, p)),
                                   _CHILD_INTERVAL, start_at)
        out.put(("done", index, tally, seconds))
    except CodecacheError as e:
        out.put(("error", index, str(e)))
    except BaseException as e:  # reported, never a silent hang of the parent
        out.put(("error", index, f"load generator process failed: {e!r}"))


def run(profile: Profile, progress: Progress | None = None,
        interval: float = 1.0) -> dict[str, Any]:
    """Run ``profile`` in ``profile.processes`` processes; one merged report.

    Raises:
        ConfigError: a bad profile.
        UpstreamError: a process could not discover or fetch its targets, or died.
    """
    profile.validate()
    if profile.processes == 1:
        tally, seconds = run_tally(profile, progress, interval)
        return report(tally, seconds=seconds, settings=profile.settings())
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[tuple[Any, ...]] = context.Queue()
    parts = split(profile)
    start_at = time.time() + _START_DELAY + 0.2 * len(parts)
    children = [context.Process(target=_child, args=(n, part, start_at, out), daemon=True)
                for n, part in enumerate(parts)]
    for child in children:
        child.start()
    latest: dict[int, dict[str, Any]] = {}
    results: dict[int, tuple[Tally, float]] = {}
    peak_slow = peak_in_flight = 0
    last_print = time.monotonic()
    deadline = start_at + profile.duration + profile.timeout + 60
    try:
        while len(results) < len(children):
            try:
                message = out.get(timeout=0.5)
            except queue.Empty:
                if time.time() > deadline or any(
                        not c.is_alive() and n not in results for n, c in enumerate(children)
                        if c.exitcode not in (None, 0)):
                    raise UpstreamError("loadgen: a load generator process died or overran "
                                        "its bounds") from None
                continue
            kind, index = message[0], message[1]
            if kind == "error":
                raise UpstreamError(message[2])
            if kind == "done":
                results[index] = (message[2], message[3])
                continue
            latest[index] = message[2]
            total = _sum(latest)
            peak_slow = max(peak_slow, total["slow_open"])
            peak_in_flight = max(peak_in_flight, total["in_flight"])
            if progress is not None and time.monotonic() - last_print >= interval:
                progress(total)
                last_print = time.monotonic()
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join()
    merged = Tally()
    for tally, _ in results.values():
        merged.merge(tally)
    # Peaks measured together (progress every 0.25 s); the sum of each process's own peak
    # would overstate them when the processes peaked at different moments.
    merged.slow_peak_open = min(merged.slow_peak_open, max(peak_slow, 1)) \
        if merged.slow_peak_open else 0
    merged.peak_in_flight = min(merged.peak_in_flight, max(peak_in_flight, 1))
    seconds = max(s for _, s in results.values())
    if progress is not None and latest:
        progress(_sum(latest))
    return report(merged, seconds=seconds, settings=profile.settings())


def _sum(latest: dict[int, dict[str, Any]]) -> dict[str, Any]:
    snapshots = list(latest.values())
    return {"elapsed": max(s["elapsed"] for s in snapshots),
            **{key: sum(s[key] for s in snapshots)
               for key in ("requests", "requests_per_s", "in_flight", "errors", "corrupted",
                           "slow_open")}}
