"""The verbs of the store: ``sync``, ``publish``, ``yank`` write it; ``status`` reads it."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codecache.cli.common import config_of
from codecache.core.config import Config, Role
from codecache.core.errors import ConfigError, Exit

if TYPE_CHECKING:
    from codecache.core.history import Actor
    from codecache.core.index import Index
    from codecache.origin.sync import Origin


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
    from codecache.origin.sources.chooser import Sources
    from codecache.origin.sources.git import Git
    from codecache.origin.sources.svn import Svn
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
    store = Store(config.store.path)
    sources = Sources({"svn": lambda: Svn(config.svn),
                       "git": lambda: Git(config.git, store.git_dir)})
    return Origin(config, store, secrets, trusted, sources, _actor(args))


def cmd_sync(args: argparse.Namespace) -> int:
    origin = _origin(config_of(args), args)
    if args.once:
        report = origin.sync_once(args.package)
        for line in report.published:
            print(f"published {line}")
        for line in report.skipped:
            print(f"skipped {line}")
        for m in report.mutated:
            print(f"MUTATED {m.package} {m.version}: the tag moved ({m.change()}); "
                  "not republished")
        print(f"index serial {report.serial}")
        return Exit.OK
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
    return Exit.OK


def cmd_publish(args: argparse.Namespace) -> int:
    index = _origin(config_of(args), args).publish(args.package, args.version, args.channel)
    print(f"{args.package} {args.channel} -> {args.version} (index serial {index.serial})")
    return Exit.OK


def cmd_yank(args: argparse.Namespace) -> int:
    index = _origin(config_of(args), args).yank(args.package, args.version, args.reason)
    print(f"{args.package} {args.version} yanked (index serial {index.serial})")
    return Exit.OK


def cmd_status(args: argparse.Namespace) -> int:
    from codecache.core.index import format_time, to_payload
    from codecache.core.signing import load_trusted_keys
    from codecache.core.trust import is_expired
    from codecache.store.store import Store
    from codecache.store.trusted import read_trusted_index

    config = config_of(args)
    store = Store(config.store.path)
    keys = load_trusted_keys(config.signing.trusted_keys)
    state = store.state.load()
    now = int(time.time())
    signed = read_trusted_index(store, keys, now=now, floor=state.highest_serial)
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
    if config.role is Role.EDGE:
        local["edge"] = _edge_status(config, index)
    mutated = [{"package": m.package, "version": m.version, **m.fields(),
                "detected_at": format_time(m.detected_at), "change": m.change()}
               for m in state.mutated_tags]
    # Tags the sync worker cannot publish as they are (DESIGN.md §3), origin only.
    refused = [{**r.record(), "refused_at": format_time(r.refused_at)}
               for r in state.refused_tags]
    if args.json:
        print(json.dumps({**to_payload(index), "local": local, "mutated_tags": mutated,
                          "refused_tags": refused}, indent=2, sort_keys=True))
    else:
        _print_status(index, local, mutated, refused)
    if expired:
        print(f"codecache: error: index serial {index.serial} expired at "
              f"{format_time(index.expires)}", file=sys.stderr)
        return Exit.INVALID
    return Exit.OK


def _edge_status(config: Config, index: Index) -> dict[str, Any]:
    """An edge's cache (DESIGN.md §5): ``status --json``'s ``local.edge``."""
    from dataclasses import asdict

    from codecache.core.errors import StoreError
    from codecache.ops.local import edge_facts

    try:
        edge = edge_facts(config, index)
    except StoreError as err:   # the rest of the status is still worth printing
        return {"error": str(err)}
    return {**asdict(edge), "hit_ratio": edge.hit_ratio,
            "channel_targets_over_limit": edge.reserved_bytes > edge.cache_limit_bytes}


def _print_status(index: Index, local: dict[str, Any], mutated: list[dict[str, Any]],
                  refused: list[dict[str, Any]]) -> None:
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
        print(f"{local['role']} of {replica['upstream']}: serial {replica['serial']}, last "
              f"confirmed {replica['last_confirmed']} ({replica['seconds_since_confirmed']}s ago)"
              + (f", last error: {replica['last_error']}" if replica["last_error"] else ""))
    edge = local.get("edge")
    if edge is not None and "error" in edge:
        print(f"edge cache: {edge['error']}")
    elif edge is not None:
        ratio = edge["hit_ratio"]
        print(f"edge cache {edge['cache_bytes']} of {edge['cache_limit_bytes']} bytes (channel "
              f"targets {edge['reserved_bytes']} bytes, never evicted), hit ratio "
              + (f"{ratio:.1%}" if ratio is not None else "-")
              + f" ({edge['hits']} hits, {edge['misses']} misses), {edge['upstream_bytes']} "
              f"bytes from upstream, {edge['evictions']} evictions")
        if edge["channel_targets_over_limit"]:
            print("WARNING: the channel targets alone exceed [edge] cache_size: they are kept; "
                  "raise cache_size")
    for name in sorted(index.packages):
        pkg = index.packages[name]
        print(f"package {name}")
        for channel in sorted(pkg.channels):
            ch = pkg.channels[channel]
            print(f"  channel {channel} -> {ch.version} (moved {format_time(ch.moved_at)})")
        for version, r in sorted(pkg.releases.items(), key=lambda kv: version_key(kv[0])):
            flag = f" YANKED ({r.yanked_reason})" if r.yanked else ""
            print(f"  release {version} sha256={r.sha256} size={r.size} "
                  f"{r.source.label}{flag}")
    for m in mutated:
        print(f"WARNING: tag {m['package']} {m['version']} changed after publishing "
              f"({m['change']}); not republished")
    for t in refused:
        print(f"WARNING: tag {t['package']} {t['version']} refused since {t['refused_at']} "
              f"({t['source']}): {t['reason']}; not published until the tag names a tree "
              "that builds")
