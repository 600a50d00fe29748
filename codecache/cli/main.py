"""The ``codecache`` command line's entry point: argv to a verb, an error to one line.

``main`` parses argv (``parser``), runs the verb and turns what it raises into one line on
stderr and an exit code (``core.errors.exit_code``; a bug is 70, and ``check``, a Nagios
plugin, says UNKNOWN). A verb module imports what it runs inside its function: `codecache
serve`'s parent (it supervises workers and serves nothing) and short verbs (--version,
status, verify) then load neither aiohttp nor prometheus_client nor the svn and sync
machinery (docs/benchmark.md, Memory); tests/unit/test_imports.py holds them to it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from codecache.cli.common import log
from codecache.cli.parser import UsageError, build_parser
from codecache.core.config import LogFormat
from codecache.core.errors import CodecacheError, exit_code
from codecache.telemetry.logs import JsonFormatter
from codecache.telemetry.logs import configure as configure_logging

NAGIOS = ("check",)    # commands that follow the Nagios plugin conventions


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            raise UsageError(f"unrecognized arguments: {' '.join(extras)} (see codecache "
                             f"{args.command} --help)", args.command)
    except UsageError as err:
        return _fail(argparse.Namespace(debug=False, command=err.command), err,
                     exit_code(err, nagios=err.command in NAGIOS))
    # --log-format wins; otherwise text until a command loads a config naming [log] format.
    configure_logging(LogFormat(args.log_format or "text"), debug=args.debug)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except CodecacheError as err:
        return _fail(args, err, exit_code(err, nagios=args.command in NAGIOS))
    except KeyboardInterrupt as err:
        return exit_code(err)
    except Exception as err:  # a bug (70): still one line unless --debug
        return _fail(args, err, exit_code(err, nagios=args.command in NAGIOS),
                     prefix="internal error: ")


def _fail(args: argparse.Namespace, err: BaseException, code: int, prefix: str = "") -> int:
    if args.debug:
        log.exception("failed")
    if args.command in NAGIOS:
        # A monitoring system reads the first line of stdout.
        print(f"CODECACHE UNKNOWN - {prefix}{err}")
    if _json_logs():
        # A JSON log stays all JSON; still one line.
        log.error("codecache: error: %s%s", prefix, err, extra={"exit_code": code})
    else:
        print(f"codecache: error: {prefix}{err}", file=sys.stderr)
    return code


def _json_logs() -> bool:
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


if __name__ == "__main__":
    sys.exit(main())
