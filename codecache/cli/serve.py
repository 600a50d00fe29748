"""``serve`` and ``replicate``: the long-running verbs of a node."""

from __future__ import annotations

import argparse
import sys

from codecache.cli.common import config_of, log
from codecache.core.errors import ConfigError, Exit


def cmd_serve(args: argparse.Namespace) -> int:
    from codecache.node.supervisor import serve  # aiohttp is only needed by this command

    serve(config_of(args))
    return Exit.OK


def cmd_replicate(args: argparse.Namespace) -> int:
    from codecache.replica.puller import replicate  # aiohttp is only needed by this command

    config = config_of(args)
    if not config.role.pulls:
        raise ConfigError("replicate needs role = \"replica\" or \"edge\" (an origin writes "
                          "its own store)")
    once = args.once or args.accept_lower_serial
    if args.accept_lower_serial:
        log.warning("operator override: this pull may accept a lower serial than the "
                    "highest accepted before")
    ok = replicate(config, once=once, allow_lower=args.accept_lower_serial)
    if once and not ok:
        print("codecache: error: no upstream confirmed or updated the index (see the log)",
              file=sys.stderr)
        return Exit.REFUSED
    return Exit.OK
