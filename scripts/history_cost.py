"""Measure what the release history costs as it grows (docs/history.md, "Size and cost").

    .venv/bin/python scripts/history_cost.py [--entries N] [--rounds K]

Builds a history of N entries (default 40,000: ten packages with nightly tags and their
auto-channel moves for about five years), alternating ``release`` and ``move`` entries,
and prints: the file size and bytes per entry; the CPU time (best of K) to load and verify
it whole, the way the writer, ``codecache history`` and a replica starting up do, and the
same with every entry re-encoded to hash it (the slow path for another layout); and the
bytes a replica holding all but one entry fetches for one change (``Range`` from its last
entry).
"""

from __future__ import annotations

import argparse
import time

from codecache.core.history import (
    EMPTY_HISTORY,
    Action,
    Actor,
    Change,
    verify,
)
from codecache.core.history_parse import load, parse_document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.entries
    changes = [Change(Action.RELEASE, "pilot", f"1.{i}.0", svn_author="releasemgr")
               if i % 2 == 0 else
               Change(Action.MOVE, "pilot", f"1.{i - 1}.0", channel="latest",
                      from_=f"1.{i - 3}.0")
               for i in range(n)]
    history = EMPTY_HISTORY.append(changes, time=1_800_000_000, actor=Actor("sync", 0),
                                   serial=1_800_000_000)
    raw = history.render()
    fast, slow = [], []
    for _ in range(args.rounds):
        start = time.process_time()
        verify(load(raw), history.head)
        fast.append(time.process_time() - start)
        start = time.process_time()
        verify(parse_document(raw), history.head)
        slow.append(time.process_time() - start)
    shorter = history.prefix(n - 1)
    tail = len(raw) - shorter.line_offset(n - 2)
    print(f"entries {n}: {len(raw)} bytes ({len(raw) // max(n, 1)} per entry)")
    print(f"load and verify (line layout): {min(fast):.2f} s CPU, best of {args.rounds}")
    print(f"load and verify (re-encoding every entry): {min(slow):.2f} s CPU")
    print(f"one change fetched by a replica: {tail} bytes")


if __name__ == "__main__":
    main()
