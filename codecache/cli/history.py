"""``history``: the release history, verified against the signed index."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from codecache.cli.common import config_of
from codecache.cli.fetch import fetch_index
from codecache.core.errors import Exit, HistoryError

if TYPE_CHECKING:
    from codecache.core.history import History


def cmd_history(args: argparse.Namespace) -> int:
    from codecache.core.history import verify as verify_history
    from codecache.core.history_parse import parse_document as parse_history
    from codecache.core.names import check_channel, check_package
    from codecache.core.signing import load_trusted_keys
    from codecache.core.trust import verify as verify_index
    from codecache.store.store import Store
    from codecache.store.trusted import read_trusted_index

    if args.package is not None:
        check_package(args.package)
    if args.channel is not None:
        check_channel(args.channel)
    config = config_of(args)
    keys = load_trusted_keys(config.signing.trusted_keys)
    history: History | None = None
    if args.url is not None:
        # The index first: a history fetched after it may be longer (verify_history reads
        # the first ``length`` entries only).
        signed = verify_index(fetch_index(args.url, config), keys)
        head = signed.index.history
        if head is not None:
            try:
                for attempt in range(3):
                    entries = parse_history(fetch_index(args.url, config, "history.json"))
                    if len(entries) >= head.length or attempt == 2:
                        break
                    # Behind its index, not wrong: a front-tier cache keeps each file up to
                    # a second, independently. Ask again before calling it a failure.
                    time.sleep(1)
                history = verify_history(entries, head)
            except HistoryError as err:
                raise HistoryError(err.seq, f"{args.url.rstrip('/')}/history.json does not "
                                   f"verify against its signed index: {err}") from None
    else:
        store = Store(config.store.path)
        signed = read_trusted_index(store, keys, now=time.time())
        if signed.index.history is not None:
            history = store.load_history(signed.index.history)
    _print_history(args, signed.serial, history)
    return Exit.OK


def _print_history(args: argparse.Namespace, serial: int, history: History | None) -> None:
    """The verified history as a table or JSON, filtered by package and channel."""
    from codecache.core.history import Action
    from codecache.core.index import format_time

    entries = [e for e in (history.entries if history is not None else ())
               if (args.package is None or e.change.package == args.package)
               and (args.channel is None or e.change.channel == args.channel)]
    if args.json:
        head = history.head if history is not None else None
        print(json.dumps({"entries": [e.to_json() for e in entries], "serial": serial,
                          "history": None if head is None else
                          {"length": head.length, "head": head.head}}, indent=1))
        return
    if history is None:
        print(f"index serial {serial} carries no history yet (the store predates it; it "
              "starts at the next change or re-sign)", file=sys.stderr)
        return
    rows = [("TIME", "ACTOR", "ACTION", "PACKAGE", "CHANNEL", "FROM -> TO", "SERIAL", "")]
    for e in entries:
        c = e.change
        actor = e.actor if e.uid is None else f"{e.actor} (uid {e.uid})"
        moved = f"{c.from_ or '-'} -> {c.version}" if c.action is Action.MOVE else c.version
        note = f"reason: {c.reason}" if c.reason else \
            (f"author: {c.svn_author}" if c.svn_author else "")   # svn or git (DESIGN §9)
        rows.append((format_time(e.time), actor, c.action.value, c.package, c.channel or "-",
                     moved, str(e.serial), note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    print(f"{len(entries)} of {len(history)} entries; chain verified against the signed "
          f"index serial {serial}", file=sys.stderr)
