"""The ``codecache`` command line: parses argv, calls the library, prints, exits.

The only module that prints or parses argv, and the one place errors become exit codes
(DESIGN.md §6): 0 ok; 1 verification failed; 2 the request is wrong (usage, config,
unknown name); 3 the state or environment refuses a valid request. ``check`` alone follows
the Nagios plugin conventions: its exit code is the state it found (0 OK, 1 WARNING,
2 CRITICAL), and every failure of its own, usage errors included, is 3 UNKNOWN.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from codecache import __version__
from codecache.core.config import Config, LogFormat, Role, load_config, parse_duration
from codecache.core.errors import (
    AuditMismatch,
    CodecacheError,
    ConfigError,
    HistoryError,
    IndexRefused,
    IntegrityError,
    InvalidName,
    NoIndex,
    NotFound,
    Refusal,
    SignatureError,
    StoreError,
    UpstreamError,
)
from codecache.telemetry.logs import JsonFormatter
from codecache.telemetry.logs import configure as configure_logging

if TYPE_CHECKING:
    from codecache.core.history import Actor, History
    from codecache.core.index import Index
    from codecache.ops.check import Limit
    from codecache.origin.sync import Origin

# A verb imports what it runs inside its function: `codecache serve`'s parent (it supervises
# workers and serves nothing) and short verbs (--version, status, verify) then load neither
# aiohttp nor prometheus_client nor the svn and sync machinery (docs/benchmark.md, Memory).

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
_NAGIOS = ("check",)    # commands that follow the Nagios plugin conventions
log = logging.getLogger("codecache")


class UsageError(ConfigError):
    """A command line argparse refuses; ``command`` is the subcommand, if it got that far."""

    def __init__(self, message: str, command: str | None) -> None:
        super().__init__(message)
        self.command = command


def exit_code(err: BaseException, command: str | None = None) -> int:
    """The one mapping from errors to exit codes (``check``: all of them are UNKNOWN)."""
    if command in _NAGIOS:
        from codecache.ops.check import State

        return int(State.UNKNOWN)
    if isinstance(err, IntegrityError):
        return EXIT_INVALID
    if isinstance(err, ConfigError | InvalidName | NotFound):
        return EXIT_USAGE
    return EXIT_REFUSED  # Refused, UpstreamError and anything unforeseen


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            raise UsageError(f"unrecognized arguments: {' '.join(extras)} (see codecache "
                             f"{args.command} --help)", args.command)
    except UsageError as err:
        return _fail(argparse.Namespace(debug=False, command=err.command), err,
                     exit_code(err, err.command))
    # --log-format wins; otherwise text until a command loads a config naming [log] format.
    configure_logging(LogFormat(args.log_format or "text"), debug=args.debug)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except CodecacheError as err:
        return _fail(args, err, exit_code(err, args.command))
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug: still one line unless --debug
        return _fail(args, err, exit_code(err, args.command), prefix="internal error: ")


def _fail(args: argparse.Namespace, err: BaseException, code: int, prefix: str = "") -> int:
    if args.debug:
        log.exception("failed")
    if args.command in _NAGIOS:
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


def _parser() -> argparse.ArgumentParser:
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


# check's thresholds; left None on the command line, ``Thresholds()``'s default applies.
_THRESHOLDS = ("expiry_warning", "expiry_critical", "lag_warning", "lag_critical",
               "disk_warning", "disk_critical", "refusal_window")


def _check_parser(sub: Any) -> None:
    p = sub.add_parser(
        "check", command="check", help="monitoring plugin (Nagios conventions: exit 0 OK, "
        "1 WARNING, 2 CRITICAL, 3 UNKNOWN; one status line with performance data)",
        description="Check one node: over HTTP with --url (from the monitoring host), else "
        "the store of the config (on the node). See docs/operations.md and docs/runbook.md.")
    p.add_argument("--url", help="base URL of an origin, replica or the VIP, e.g. "
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


# --- helpers ------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    path: Path | None = args.config
    if path is None:
        env = os.environ.get("CODECACHE_CONFIG")
        path = Path(env) if env else Path("codecache.toml")
    config = load_config(path)
    if args.log_format is None and config.log.format is not LogFormat.TEXT:
        configure_logging(config.log.format, debug=args.debug)
    return config


def _actor(args: argparse.Namespace) -> Actor:
    """``--actor``, else ``$CODECACHE_ACTOR``, else the OS user name; with the OS uid.

    The name is self-asserted, so the uid that ran the command is recorded beside it.
    """
    from codecache.core.history import Actor, check_actor

    uid = os.getuid()
    name = args.actor if args.actor is not None else os.environ.get("CODECACHE_ACTOR")
    if name is None:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:   # a uid without a passwd entry (containers)
            name = f"uid{uid}"
    return Actor(check_actor(name), uid)


def _origin(config: Config, args: argparse.Namespace) -> Origin:
    from codecache.core.signing import load_secret_key, load_trusted_keys
    from codecache.origin.svn import Svn
    from codecache.origin.sync import Origin
    from codecache.store.store import Store

    if config.role is not Role.ORIGIN:
        raise ConfigError("this command needs role = \"origin\" (it writes the store)")
    if not config.signing.secret_keys:
        raise ConfigError("signing.secret_key is not configured")
    secrets = [load_secret_key(path) for path in config.signing.secret_keys]
    seen: dict[str, Path] = {}
    for path, secret in zip(config.signing.secret_keys, secrets, strict=True):
        if secret.public.keyid in seen:
            raise ConfigError(f"signing.secret_key: {path} and {seen[secret.public.keyid]} "
                              f"are the same key ({secret.public.keyid})")
        seen[secret.public.keyid] = path
    trusted = load_trusted_keys(config.signing.trusted_keys) \
        if config.signing.trusted_keys else {}
    return Origin(config, Store(config.store.path), secrets, trusted, Svn(config.svn),
                  _actor(args))


# --- commands -----------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    from codecache.core.signing import generate_key, write_key_pair

    secret = generate_key()
    write_key_pair(secret, args.secret_key, args.public_key)
    print(f"key {secret.public.keyid}: secret {args.secret_key} (mode 0600), "
          f"public {args.public_key}")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    origin = _origin(_config(args), args)
    if args.once:
        report = origin.sync_once(args.package)
        for line in report.published:
            print(f"published {line}")
        for line in report.skipped:
            print(f"skipped {line}")
        for m in report.mutated:
            print(f"MUTATED {m.package} {m.version}: published at r{m.published_revision}, "
                  f"tag now at r{m.current_revision} (not republished)")
        print(f"index serial {report.serial}")
        return EXIT_OK
    from codecache.telemetry.notify import Notifier

    notifier = Notifier.from_env()
    stop = threading.Event()

    def on_sigterm(*_: object) -> None:
        stop.set()
        notifier.stopping("stopping after the current pass")

    def on_pass(serial: int | None) -> None:
        # READY=1 once the first pass is over (synced, or failed and backing off).
        notifier.ready(f"index serial {serial}" if serial is not None
                       else "last pass failed, retrying (see the log)")
        notifier.watchdog()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        origin.run(stop, args.package, on_pass=on_pass, heartbeat=notifier.watchdog,
                   beat_every=notifier.watchdog_interval)
    except KeyboardInterrupt:
        stop.set()
    notifier.stopping()
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    index = _origin(_config(args), args).publish(args.package, args.version, args.channel)
    print(f"{args.package} {args.channel} -> {args.version} (index serial {index.serial})")
    return EXIT_OK


def cmd_yank(args: argparse.Namespace) -> int:
    index = _origin(_config(args), args).yank(args.package, args.version, args.reason)
    print(f"{args.package} {args.version} yanked (index serial {index.serial})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from codecache.core.index import format_time, to_payload
    from codecache.core.signing import load_trusted_keys
    from codecache.core.trust import TrustState, evaluate, is_expired
    from codecache.store.store import Store

    config = _config(args)
    store = Store(config.store.path)
    keys = load_trusted_keys(config.signing.trusted_keys)
    raw = store.read_document()
    if raw is None:
        raise NoIndex(f"store {store.root} has no index yet (run codecache sync)")
    state = store.load_state()
    now = int(time.time())
    _, signed = evaluate(raw, keys, TrustState(state.highest_serial), now=now,
                         fresh_required=False)
    index = signed.index
    expired = is_expired(index, now)
    local: dict[str, Any] = {
        "store": str(store.root),
        "role": config.role.value,
        "index_age_seconds": max(0, now - index.generated),
        "index_expired": expired,
        "highest_serial": state.highest_serial,
        # Key ids of the index's signatures (primary first), and which of them this node
        # trusts: what a key rotation step is checked with (docs/keys.md).
        "signed_by": list(signed.signed_by),
        "trusted_keys": sorted(keys),
    }
    pull = store.load_pull_status()
    if pull is not None:
        local["replica"] = {
            "upstream": pull.upstream, "serial": pull.serial,
            "last_confirmed": format_time(int(pull.confirmed_at)) if pull.confirmed_at else None,
            "seconds_since_confirmed": int(now - pull.confirmed_at) if pull.confirmed_at
            else None,
            "last_error": pull.last_error, "refusals": dict(pull.refusals),
            "refused_at": {r: format_time(int(t)) for r, t in pull.refused_at.items()}}
    mutated = [{"package": m.package, "version": m.version,
                "published_revision": m.published_revision,
                "current_revision": m.current_revision,
                "detected_at": format_time(m.detected_at)} for m in state.mutated_tags]
    if args.json:
        print(json.dumps({**to_payload(index), "local": local, "mutated_tags": mutated},
                         indent=2, sort_keys=True))
    else:
        _print_status(index, local, mutated)
    if expired:
        print(f"codecache: error: index serial {index.serial} expired at "
              f"{format_time(index.expires)}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def _print_status(index: Index, local: dict[str, Any], mutated: list[dict[str, Any]]) -> None:
    from codecache.core.index import format_time
    from codecache.core.names import version_key

    print(f"index serial {index.serial}, generated {format_time(index.generated)} "
          f"({local['index_age_seconds']}s ago), expires {format_time(index.expires)}"
          + (" [EXPIRED]" if local["index_expired"] else ""))
    trusted = set(local["trusted_keys"])
    print("signed by " + ", ".join(k + ("" if k in trusted else " (not trusted here)")
                                   for k in local["signed_by"]))
    if index.history is not None:   # the signed length and head; `history` verifies them
        print(f"history {index.history.length} entries, head {index.history.head or '-'} "
              "(codecache history)")
    replica = local.get("replica")
    if replica is not None:
        print(f"replica of {replica['upstream']}: serial {replica['serial']}, last confirmed "
              f"{replica['last_confirmed']} ({replica['seconds_since_confirmed']}s ago)"
              + (f", last error: {replica['last_error']}" if replica["last_error"] else ""))
    for name in sorted(index.packages):
        pkg = index.packages[name]
        print(f"package {name}")
        for channel in sorted(pkg.channels):
            ch = pkg.channels[channel]
            print(f"  channel {channel} -> {ch.version} (moved {format_time(ch.moved_at)})")
        for version, r in sorted(pkg.releases.items(), key=lambda kv: version_key(kv[0])):
            flag = f" YANKED ({r.yanked_reason})" if r.yanked else ""
            print(f"  release {version} sha256={r.sha256} size={r.size} "
                  f"svn={r.svn_url}@{r.revision}{flag}")
    for m in mutated:
        print(f"WARNING: tag {m['package']} {m['version']} changed after publishing "
              f"(r{m['published_revision']} -> r{m['current_revision']}); not republished")


def cmd_history(args: argparse.Namespace) -> int:
    from codecache.core.history import parse_document as parse_history
    from codecache.core.history import verify as verify_history
    from codecache.core.names import check_channel, check_package
    from codecache.core.signing import load_trusted_keys
    from codecache.core.trust import TrustState, evaluate
    from codecache.core.trust import verify as verify_index
    from codecache.store.store import Store

    if args.package is not None:
        check_package(args.package)
    if args.channel is not None:
        check_channel(args.channel)
    config = _config(args)
    keys = load_trusted_keys(config.signing.trusted_keys)
    history: History | None = None
    if args.url is not None:
        # The index first: a history fetched after it may be longer (verify_history reads
        # the first ``length`` entries only).
        signed = verify_index(_fetch_index(args.url, config), keys)
        head = signed.index.history
        if head is not None:
            try:
                for attempt in range(3):
                    entries = parse_history(_fetch_index(args.url, config, "history.json"))
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
        raw = store.read_document()
        if raw is None:
            raise NoIndex(f"store {store.root} has no index yet (run codecache sync)")
        _, signed = evaluate(raw, keys, TrustState(store.load_state().highest_serial),
                             now=int(time.time()), fresh_required=False)
        if signed.index.history is not None:
            history = store.load_history(signed.index.history)
    _print_history(args, signed.serial, history)
    return EXIT_OK


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
            (f"svn author: {c.svn_author}" if c.svn_author else "")
        rows.append((format_time(e.time), actor, c.action.value, c.package, c.channel or "-",
                     moved, str(e.serial), note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    print(f"{len(entries)} of {len(history)} entries; chain verified against the signed "
          f"index serial {serial}", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    from codecache.node.supervisor import serve  # aiohttp is only needed by this command

    serve(_config(args))
    return EXIT_OK


def cmd_replicate(args: argparse.Namespace) -> int:
    from codecache.replica.puller import replicate  # aiohttp is only needed by this command

    config = _config(args)
    if config.role is not Role.REPLICA:
        raise ConfigError("replicate needs role = \"replica\" (an origin writes its own store)")
    once = args.once or args.accept_lower_serial
    if args.accept_lower_serial:
        log.warning("operator override: this pull may accept a lower serial than the "
                    "highest accepted before")
    ok = replicate(config, once=once, allow_lower=args.accept_lower_serial)
    if once and not ok:
        print("codecache: error: no upstream confirmed or updated the index (see the log)",
              file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from codecache.core.signing import load_public_key, load_trusted_keys
    from codecache.ops.check import Facts, Thresholds, assess
    from codecache.ops.probe import (
        DeadlineExceeded,
        Targets,
        parse_target,
        probe_store,
        probe_url,
        with_deadline,
    )

    limits = Thresholds(**{name: getattr(args, name) for name in _THRESHOLDS
                           if getattr(args, name) is not None})
    targets: Targets = () if args.no_verify else "all" if "all" in (args.verify or ()) \
        else tuple(parse_target(t) for t in args.verify) if args.verify else None
    config = None if args.url is not None and args.key else _config(args)
    if args.key:
        keys = {k.keyid: k for k in (load_public_key(path) for path in args.key)}
    else:
        assert config is not None  # noqa: S101 - loaded above whenever --key is absent
        if not config.signing.trusted_keys:
            raise ConfigError("no trusted keys: give --key or a config with "
                              "signing.trusted_keys")
        keys = load_trusted_keys(config.signing.trusted_keys)
    upstream = not args.no_upstream
    if args.url is not None:
        url: str = args.url
        try:
            facts = with_deadline(lambda: probe_url(url, keys, timeout=args.timeout,
                                                    targets=targets, upstream=upstream),
                                  args.timeout)
        except DeadlineExceeded as err:   # the node did not answer in time: its failure
            facts = Facts(source=url.rstrip("/"), now=time.time(), unreachable=str(err))
    else:
        assert config is not None  # noqa: S101 - no --url: the config was loaded
        store_config = config
        try:
            facts = with_deadline(lambda: probe_store(store_config, keys, timeout=args.timeout,
                                                      targets=targets, upstream=upstream,
                                                      deep=args.deep), args.timeout)
        except DeadlineExceeded as err:   # reading the local store hung: ours to report
            raise StoreError(f"store {config.store.path} not read: {err}") from None
    result = assess(facts, limits)
    print(result.line())
    return int(result.state)


def cmd_verify(args: argparse.Namespace) -> int:
    from codecache.core.signing import (
        load_minisig,
        load_public_key,
        load_trusted_keys,
        verify_minisig,
    )
    from codecache.store.store import sha256_file

    sig_path: Path = args.sig or args.file.with_name(args.file.name + ".minisig")
    if args.key is not None:
        key = load_public_key(args.key)
        keys = {key.keyid: key}
    else:
        keys = load_trusted_keys(_config(args).signing.trusted_keys)
    minisig = load_minisig(sig_path)
    try:
        with args.file.open("rb") as fh:
            verify_minisig(keys, minisig, fh)
    except FileNotFoundError:
        raise ConfigError(f"file {args.file} does not exist") from None
    except OSError as err:
        raise ConfigError(f"cannot read {args.file}: {err.strerror}") from err
    fields = _comment_fields(minisig.trusted_comment)
    sha256, size = sha256_file(args.file)
    if fields.get("sha256", sha256) != sha256 or fields.get("size", str(size)) != str(size):
        raise SignatureError("the signature's trusted comment names other content")
    print(f"OK {args.file}: package={fields.get('package', '?')} "
          f"version={fields.get('version', '?')} sha256={fields.get('sha256', '?')} "
          f"key={minisig.keyid}")
    return EXIT_OK


def cmd_loadgen(args: argparse.Namespace) -> int:
    from codecache.load.loadgen import DEFAULT_MIX, Profile, parse_mix  # aiohttp client
    from codecache.load.loadpool import run
    from codecache.load.loadstats import table

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
    return EXIT_OK if result["errors_total"] == 0 and result["corrupted"] == 0 else EXIT_INVALID


def cmd_audit(args: argparse.Namespace) -> int:
    from codecache.core.signing import load_trusted_keys
    from codecache.core.trust import verify as verify_index
    from codecache.origin.audit import Auditor  # the rebuild needs only svn and the public keys
    from codecache.origin.svn import Svn
    from codecache.store.store import Store

    if args.release_version is not None and args.package is None:
        raise ConfigError("audit --version needs --package")
    config = _config(args)
    keys = load_trusted_keys(config.signing.trusted_keys)
    raw: bytes | None
    if args.url is not None:
        raw = _fetch_index(args.url, config)
        source = args.url.rstrip("/") + "/index.json"
    else:
        store = Store(config.store.path)
        raw = store.read_document()
        if raw is None:
            raise NoIndex(f"store {store.root} has no index yet (run codecache sync)")
        source = str(store.index_path)
    index = verify_index(raw, keys).index   # a bad signature is exit 1, like verify
    prefixes = {p.name: p.prefix for p in config.packages}
    print(f"auditing index serial {index.serial} from {source}", flush=True)
    findings = Auditor(Svn(config.svn), keys, prefixes).audit(
        index, args.package, args.release_version,
        report=lambda f: print(f.line(), flush=True))
    failed = [f"{f.package} {f.version}" for f in findings if f.verdict.failed]
    notes = sum(1 for f in findings if not f.verdict.failed and f.verdict.value == "NOTE")
    print(f"audited {len(findings)} release(s): {len(findings) - len(failed)} match "
          f"Subversion ({notes} with other gzip bytes), {len(failed)} do not")
    if failed:
        raise AuditMismatch(failed)
    return EXIT_OK


def _fetch_index(url: str, config: Config, name: str = "index.json") -> bytes:
    """GET ``URL/index.json`` (or ``URL/{name}``: no proxy from the environment, no
    redirects, size-capped).

    Raises:
        UpstreamError: the server cannot be reached or does not answer 200.
        IndexRefused: the body is larger than ``replica.max_index_size``.
    """
    import urllib.error
    import urllib.request

    target = url.rstrip("/") + "/" + name
    if not target.startswith(("http://", "https://")):
        raise ConfigError(f"--url: expected an http(s) URL, got {url!r}")

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_: Any, **__: Any) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    request = urllib.request.Request(target, headers={  # noqa: S310 - scheme checked above
        "Cache-Control": "no-cache", "Accept-Encoding": "identity"})
    limit = config.replica.max_index_size
    try:
        with opener.open(request, timeout=config.replica.timeout * 3) as response:
            data: bytes = response.read(limit + 1)
    except urllib.error.HTTPError as err:
        raise UpstreamError(f"{target}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UpstreamError(f"cannot fetch {target}: {reason}") from None
    if len(data) > limit:
        raise IndexRefused(Refusal.TOO_LARGE, f"{target} is larger than "
                           f"replica.max_index_size ({limit} bytes)")
    return data


def _comment_fields(comment: str) -> dict[str, str]:
    words = comment.split()
    if not words or words[0] != "codecache":
        return {}
    return dict(w.split("=", 1) for w in words[1:] if "=" in w)


if __name__ == "__main__":
    sys.exit(main())
