"""argv to a verb: the parser of every command and its options.

A usage error is a ``UsageError`` (one line on stderr, its exit code from
``core.errors.exit_code``), not argparse's own exit.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from codecache import __version__
from codecache.cli.audit import cmd_audit
from codecache.cli.check import cmd_check
from codecache.cli.history import cmd_history
from codecache.cli.keys import cmd_keygen, cmd_verify
from codecache.cli.loadgen import cmd_loadgen
from codecache.cli.serve import cmd_replicate, cmd_serve
from codecache.cli.store_verbs import cmd_publish, cmd_status, cmd_sync, cmd_yank
from codecache.core.config import LogFormat, parse_duration
from codecache.core.errors import ConfigError

if TYPE_CHECKING:
    from codecache.ops.check import Limit


class UsageError(ConfigError):
    """A command line argparse refuses; ``command`` is the subcommand, if it got that far."""

    def __init__(self, message: str, command: str | None) -> None:
        super().__init__(message)
        self.command = command


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, like every other error.

    It becomes a ``UsageError`` so that ``exit_code`` decides its exit code (2; UNKNOWN
    for ``check``).
    """

    def __init__(self, *args: Any, command: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command = command

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)", self.command)


def _seconds(text: str, option: str) -> float:
    """A duration (``30s``, ``5m``) or, as monitoring plugins take it, plain seconds."""
    try:
        value = float(text)
    except ValueError:
        return parse_duration(text, option)
    return parse_duration(value, option)


def _typed(convert: Callable[[str, str], Any], option: str) -> Callable[[str], Any]:
    """An argparse ``type`` from a parser that raises ``ConfigError``."""
    def parse(text: str) -> Any:
        try:
            return convert(text, option)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="codecache",
                                     description="Signed, replicated pilot code distribution.")
    parser.add_argument("--config", type=Path, help="config file (default: $CODECACHE_CONFIG, "
                        "then ./codecache.toml)")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("--actor", help="who publish and yank record in the release history "
                        "(default: $CODECACHE_ACTOR, then the OS user name)")
    parser.add_argument("--log-format", choices=[f.value for f in LogFormat],
                        help="log lines as text or one JSON object per line (default: the "
                        "config's [log] format, else text)")
    parser.add_argument("--version", action="version", version=f"codecache {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="create a new Ed25519 key pair (minisign format)")
    p.add_argument("--secret-key", type=Path, required=True)
    p.add_argument("--public-key", type=Path, required=True)
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("sync", help="poll Subversion and publish new tags")
    p.add_argument("--once", action="store_true", help="one poll, then exit")
    p.add_argument("--package", help="only this package")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("publish", help="point a channel at a release")
    p.add_argument("package")
    p.add_argument("version")
    p.add_argument("--channel", required=True)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("yank", help="withdraw a release")
    p.add_argument("package")
    p.add_argument("version")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_yank)

    p = sub.add_parser("status", help="packages, channels, releases, index serial and expiry")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("serve", help="HTTP front end")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("replicate", help="a replica's pull loop on its own")
    p.add_argument("--once", action="store_true", help="one pull, then exit (1 if no upstream "
                   "confirmed or updated the index)")
    p.add_argument("--accept-lower-serial", action="store_true",
                   help="operator override after a restore or key compromise: accept an "
                   "upstream's lower serial once (implies --once; logged)")
    p.set_defaults(func=cmd_replicate)

    _check_parser(sub)

    p = sub.add_parser("history", help="the release history: who changed what, when; "
                       "verified against the signed index")
    p.add_argument("package", nargs="?", help="only this package")
    p.add_argument("--channel", help="only moves of this channel")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--url", help="read it from the server at URL and verify it against "
                   "that server's signed index with the trusted keys")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("verify", help="verify a tarball against its minisign signature")
    p.add_argument("file", type=Path)
    p.add_argument("--sig", type=Path, help="signature file (default: FILE.minisig)")
    p.add_argument("--key", type=Path, help="public key (default: the config's trusted_keys)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("loadgen", help="pilot access-profile load generator with a report",
                       description="Load a codecache server, replica or VIP the way pilots "
                       "do; every body is checked against the sha256 in its ETag. Bounded "
                       "by --requests and --duration: it always stops by itself. Exit 0 "
                       "clean, 1 if any request failed or any body was corrupted.")
    p.add_argument("url", help="server base URL (targets from its /index.json) or one "
                   "tarball URL")
    p.add_argument("--mix", default=None, help="weights of request kinds (default "
                   "full=50,inm=25,ims=10,pinned=10,range=5)")
    schedule = p.add_mutually_exclusive_group()
    schedule.add_argument("--concurrency", type=int, help="closed loop: pilots back to back "
                          "(the default schedule, 10 pilots)")
    schedule.add_argument("--rate", type=float, help="open loop: arrivals per second")
    schedule.add_argument("--burst", type=int, help="publish burst: this many pilots, one "
                          "request each, arriving within --within seconds")
    p.add_argument("--within", type=float, default=1.0, help="seconds of a --burst")
    p.add_argument("--requests", type=int, default=1000, help="at most this many requests")
    p.add_argument("--duration", type=float, default=60.0, help="at most this many seconds "
                   "of arrivals (then up to --timeout more for those in flight)")
    p.add_argument("--slow", type=int, default=0, help="slow clients: full downloads read "
                   "at --slow-rate, held open together")
    p.add_argument("--slow-rate", type=int, default=20_000, help="bytes/s of a slow client")
    p.add_argument("--ramp", type=float, default=5.0, help="seconds over which slow clients "
                   "connect")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to connect, and "
                   "between two reads")
    p.add_argument("--max-in-flight", type=int, default=20_000,
                   help="open loop/burst: arrivals beyond this count as 'overload'")
    p.add_argument("--keepalive", action="store_true", help="reuse connections (pilots open "
                   "one per download, as curl and wget do)")
    p.add_argument("--package", help="only this package's URLs")
    p.add_argument("--channel", help="only this channel")
    p.add_argument("--seed", type=int, default=0, help="random seed of the mix and arrivals")
    p.add_argument("--processes", type=int, default=1, help="load generator processes "
                   "sharing the profile (one process opens ~1,000 connections/s)")
    p.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no live progress on stderr")
    p.set_defaults(func=cmd_loadgen)

    p = sub.add_parser("audit", help="rebuild releases from their svn URL@REV and compare "
                       "them with the signed index")
    p.add_argument("--package", help="only this package")
    p.add_argument("--version", dest="release_version", metavar="VERSION",
                   help="only this release (needs --package)")
    p.add_argument("--url", help="audit the index served at URL/index.json instead of the "
                   "local store's")
    p.set_defaults(func=cmd_audit)
    return parser


def _limit(text: str, option: str) -> Limit:
    from codecache.ops.check import parse_limit  # only when a check option is given

    return parse_limit(text, option)


def _percent(text: str, option: str) -> float:
    from codecache.ops.check import parse_percent

    return parse_percent(text, option)


def _check_parser(sub: Any) -> None:
    p = sub.add_parser(
        "check", command="check", help="monitoring plugin (Nagios conventions: exit 0 OK, "
        "1 WARNING, 2 CRITICAL, 3 UNKNOWN; one status line with performance data)",
        description="Check one node: over HTTP with --url (from the monitoring host), else "
        "the store of the config (on the node). See docs/operations.md and docs/runbook.md.")
    p.add_argument("--url", help="base URL of an origin, replica, edge or the VIP, e.g. "
                   "http://replica1:8080 (default: check the config's store on this host)")
    p.add_argument("--key", type=Path, action="append", metavar="PUB",
                   help="trusted public key (repeatable; "
                   "default: the config's signing.trusted_keys)")
    p.add_argument("-t", "--timeout", type=_typed(_seconds, "--timeout"), default=10.0,
                   metavar="DURATION", help="overall deadline, e.g. 10 or 10s (default 10s; "
                   "no answer: CRITICAL)")
    p.add_argument("--expiry-warning", type=_typed(_limit, "--expiry-warning"),
                   metavar="DURATION|PCT",
                   help="WARNING when less than this is left before "
                   "the index expires: a duration or a share of its validity (default 50%%)")
    p.add_argument("--expiry-critical", type=_typed(_limit, "--expiry-critical"),
                   metavar="DURATION|PCT",
                   help="CRITICAL when less than this is left "
                   "(default 0s: once it has expired)")
    p.add_argument("--lag-warning", type=_typed(_seconds, "--lag-warning"),
                   metavar="DURATION",
                   help="a replica's lag behind its upstream "
                   "(default 30s)")
    p.add_argument("--lag-critical", type=_typed(_seconds, "--lag-critical"),
                   metavar="DURATION", help="(default 5m)")
    p.add_argument("--disk-warning", type=_typed(_percent, "--disk-warning"),
                   metavar="PCT",
                   help="free space of the store's file system below "
                   "this percentage (default 10%%)")
    p.add_argument("--disk-critical", type=_typed(_percent, "--disk-critical"),
                   metavar="PCT", help="(default 5%%)")
    p.add_argument("--refusal-window", type=_typed(_seconds, "--refusal-window"),
                   metavar="DURATION",
                   help="upstream refusals seen within this "
                   "window are reported (default 1h)")
    p.add_argument("--verify", action="append", metavar="PACKAGE/CHANNEL",
                   help="download and verify this channel's tarball (repeatable; 'all': "
                   "every channel; default: the channel moved last)")
    p.add_argument("--no-verify", action="store_true", help="download no tarball")
    p.add_argument("--deep", action="store_true", help="without --url: hash every blob the "
                   "index lists, not only the channels' (slower on a large store)")
    p.add_argument("--no-upstream", action="store_true", help="do not ask a replica's "
                   "upstream what it serves (serial_behind is then not reported)")
    p.set_defaults(func=cmd_check)
