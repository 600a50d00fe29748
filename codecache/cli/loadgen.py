"""``loadgen``: the pilot access-profile load generator and its report."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from codecache.core.errors import Exit


def cmd_loadgen(args: argparse.Namespace) -> int:
    from codecache.load.loadpool import run
    from codecache.load.loadstats import table
    from codecache.load.profile import DEFAULT_MIX, Profile, parse_mix

    profile = Profile(url=args.url, mix=parse_mix(args.mix or DEFAULT_MIX),
                      concurrency=args.concurrency, rate=args.rate, burst=args.burst,
                      within=args.within, requests=args.requests, duration=args.duration,
                      slow=args.slow, slow_rate=args.slow_rate, ramp=args.ramp,
                      timeout=args.timeout, max_in_flight=args.max_in_flight,
                      keepalive=args.keepalive, package=args.package, channel=args.channel,
                      seed=args.seed, processes=args.processes)
    tty = sys.stderr.isatty()

    def progress(p: dict[str, Any]) -> None:
        line = (f"loadgen {p['elapsed']:6.1f}s  {p['requests']:>9,} requests  "
                f"{p['requests_per_s']:>9,.0f} req/s  in flight {p['in_flight']:>6,}  "
                f"errors {p['errors']:,}  corrupted {p['corrupted']:,}"
                + (f"  slow open {p['slow_open']:,}" if profile.slow else ""))
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr,
              flush=True)

    result = run(profile, None if args.quiet else progress)
    if tty and not args.quiet:
        print(file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return Exit.OK if result["errors_total"] == 0 and result["corrupted"] == 0 else Exit.INVALID
