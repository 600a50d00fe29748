"""``check``: the monitoring plugin (Nagios conventions), over HTTP or on the node."""

from __future__ import annotations

import argparse
import time

from codecache.cli.common import config_of
from codecache.core.errors import (
    ConfigError,
    StoreError,
)

# check's thresholds; left None on the command line, ``Thresholds()``'s default applies.
THRESHOLDS = ("expiry_warning", "expiry_critical", "lag_warning", "lag_critical",
               "disk_warning", "disk_critical", "refusal_window")


def cmd_check(args: argparse.Namespace) -> int:
    from codecache.core.signing import load_public_key, load_trusted_keys
    from codecache.ops.check import Facts, Thresholds, assess
    from codecache.ops.local import probe_store
    from codecache.ops.probe import INDEX_CAP, DeadlineExceeded, probe_url, with_deadline
    from codecache.ops.targets import Targets, parse_target

    limits = Thresholds(**{name: getattr(args, name) for name in THRESHOLDS
                           if getattr(args, name) is not None})
    targets: Targets = () if args.no_verify else "all" if "all" in (args.verify or ()) \
        else tuple(parse_target(t) for t in args.verify) if args.verify else None
    config = None if args.url is not None and args.key else config_of(args)
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
        # [replica] max_index_size of the config given, as a replica's pull honours it.
        cap = config.replica.max_index_size if config is not None else INDEX_CAP
        try:
            facts = with_deadline(lambda: probe_url(url, keys, timeout=args.timeout,
                                                    targets=targets, upstream=upstream,
                                                    index_cap=cap), args.timeout)
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
