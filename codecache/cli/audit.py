"""``audit``: rebuild releases from their sources and compare them with the signed index."""

from __future__ import annotations

import argparse
import time

from codecache.cli.common import config_of
from codecache.cli.fetch import fetch_index
from codecache.core.errors import AuditMismatch, ConfigError, Exit


def cmd_audit(args: argparse.Namespace) -> int:
    from codecache.core.signing import load_trusted_keys
    from codecache.core.trust import verify as verify_index
    from codecache.origin.audit import Auditor  # the rebuild needs the sources and public keys
    from codecache.origin.audit_git import AuditGit
    from codecache.origin.sources.chooser import Sources
    from codecache.origin.sources.svn import Svn
    from codecache.store.store import Store
    from codecache.store.trusted import read_trusted_index

    if args.release_version is not None and args.package is None:
        raise ConfigError("audit --version needs --package")
    config = config_of(args)
    keys = load_trusted_keys(config.signing.trusted_keys)
    # A bad signature or a refused local index (a rollback) is exit 1, like verify.
    if args.url is not None:
        index = verify_index(fetch_index(args.url, config), keys).index
        source = args.url.rstrip("/") + "/index.json"
    else:
        store = Store(config.store.path)
        index = read_trusted_index(store, keys, now=time.time()).index
        source = str(store.index_path)
    print(f"auditing index serial {index.serial} from {source}", flush=True)
    # git: private temporary repositories, never the origin's cache (removed by close).
    sources = Sources({"svn": lambda: Svn(config.svn), "git": lambda: AuditGit(config.git)})
    try:
        findings = Auditor(sources, keys, config.packages).audit(
            index, args.package, args.release_version,
            report=lambda f: print(f.line(), flush=True))
    finally:
        sources.close()
    failed = [f"{f.package} {f.version}" for f in findings if f.verdict.failed]
    notes = sum(1 for f in findings if not f.verdict.failed and f.verdict.value == "NOTE")
    print(f"audited {len(findings)} release(s): {len(findings) - len(failed)} match "
          f"their source ({notes} with other gzip bytes), {len(failed)} do not")
    if failed:
        raise AuditMismatch(failed)
    return Exit.OK
