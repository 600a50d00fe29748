"""Gathering the facts ``codecache check`` judges from the node itself: its store on disk.

Owns reading a store as its server would: the index through the trust rules
(``store.trusted.read_trusted_index``), the blobs it lists (``store.files.check_blob``:
sizes; hashes of the channels checked, or all with ``deep``), readiness through
``readiness.judge`` exactly as the server decides ``/readyz`` (over the blobs
``readiness.must_hold`` names for the role), for a replica or an edge its pull record
(``replica.json``) and what its upstream serves now (``probe.ask_upstream``), and for an
edge its cache (``edge_facts``, which ``status`` prints too).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from codecache.core.config import Config, Role
from codecache.core.errors import (
    CodecacheError,
    ConfigError,
    HashMismatch,
    IndexRefused,
    IntegrityError,
    NoIndex,
    StoreError,
)
from codecache.core.index import Index
from codecache.core.readiness import IndexProblem, IndexTrouble, judge, must_hold
from codecache.core.signing import PublicKey
from codecache.ops.check import EdgeFacts, Facts
from codecache.ops.probe import ask_upstream
from codecache.ops.targets import Targets, check_tarball, chosen
from codecache.store.files import MISSING, check_blob
from codecache.store.store import Store
from codecache.store.trusted import read_trusted_index


def probe_store(config: Config, keys: Mapping[str, PublicKey], *, timeout: float,
                targets: Targets = None, upstream: bool = True,
                deep: bool = False, clock: Callable[[], float] = time.time) -> Facts:
    """The facts about the store ``config`` names, read from disk as its server would.

    Every listed blob must be there with its size; the blobs of the channels checked
    (``targets``, see ``Targets``) are hashed and verified against their signatures,
    and with ``deep`` every listed blob is hashed (the server's scrub does that too).
    A replica's lag comes from its ``replica.json``; its upstream is asked what it serves
    now unless ``upstream`` is False.

    Raises:
        ConfigError: the store directory does not exist (a wrong config: UNKNOWN).
        StoreError: the store cannot be read.
    """
    started = time.monotonic()
    store = Store(config.store.path)
    if not store.root.is_dir():
        raise ConfigError(f"store {store.root} does not exist (wrong --config?)")
    now = clock()
    state = store.state.load()
    facts = Facts(source=str(store.root), now=now, role=config.role.value,
                  mutated_tags=tuple(f"{m.package} {m.version}" for m in state.mutated_tags),
                  refused_tags=tuple(f"{r.package} {r.version}" for r in state.refused_tags))
    # A refused index is the readiness verdict's reason (not ready), as on /readyz.
    index, problem = _stored_index(store, keys, state.highest_serial, now)
    blob_problems: dict[str, str] = {}
    if index is not None:
        facts = replace(facts, serial=index.serial, generated=index.generated,
                        expires=index.expires)
        blob_problems = _stored_blobs(store, must_hold(index, config.role), deep=deep)
        facts = _verify_stored(store, keys, index, facts, targets, blob_problems)
    facts = replace(facts, readiness=judge(index=index, now=now, index_problem=problem,
                                           blob_problems=blob_problems),
                    blobs_unavailable=len(blob_problems))
    try:
        disk = shutil.disk_usage(store.root)
        facts = replace(facts, disk_free=disk.free, disk_total=disk.total)
    except OSError:
        pass
    if config.role is Role.EDGE:
        facts = replace(facts, edge=edge_facts(config, index))
    if config.role.pulls:
        facts = _stored_pulls(store, config, facts)
        if upstream and facts.upstream:
            facts = ask_upstream(facts, keys, started + timeout, timeout,
                                 config.replica.max_index_size)
    return replace(facts, elapsed=time.monotonic() - started)


def _stored_index(store: Store, keys: Mapping[str, PublicKey], floor: int,
                  now: float) -> tuple[Index | None, IndexProblem | None]:
    """The index on disk through the trust rules the server applies to it."""
    try:
        signed = read_trusted_index(store, keys, now=now, floor=floor)
    except NoIndex:
        return None, IndexProblem(IndexTrouble.ABSENT)
    except IndexRefused as err:
        return None, IndexProblem.refused(err)
    return signed.index, None


def _stored_blobs(store: Store, sizes: Mapping[str, int], *, deep: bool) -> dict[str, str]:
    """The blobs of ``sizes`` missing or of the wrong size; with ``deep`` also hashed."""
    problems = {}
    for sha256, size in sizes.items():
        fault = check_blob(store.blob_path(sha256), sha256, size, deep=deep)
        if fault is not None:
            problems[sha256] = fault
    return problems


def _verify_stored(store: Store, keys: Mapping[str, PublicKey], index: Index, facts: Facts,
                   targets: Targets, blob_problems: dict[str, str]) -> Facts:
    problems: list[str] = []
    verified = 0
    for target in chosen(index, targets):
        try:
            _, release = index.channel(target.package, target.channel)
            path = store.blob_path(release.sha256)
            if release.sha256 in blob_problems:
                continue   # already reported, and never served as valid
            check_tarball(index, target.package, release.version, path.read_bytes(),
                          release.minisig, keys)
        except FileNotFoundError:
            blob_problems[release.sha256] = MISSING
            continue
        except HashMismatch as err:   # the readiness verdict names the blob
            blob_problems[release.sha256] = f"corrupt on disk ({err})"
            continue
        except IntegrityError as err:
            problems.append(f"{target.package}/{target.channel}: {err}")
            continue
        except CodecacheError as err:
            problems.append(f"{target.package}/{target.channel}: {err}")
            continue
        verified += 1
    return replace(facts, verified=verified, served_problems=tuple(problems))


def _stored_pulls(store: Store, config: Config, facts: Facts) -> Facts:
    pull = store.load_pull_status()
    if pull is None:
        return replace(facts, upstream=config.replica.upstreams[0]
                       if config.replica.upstreams else None,
                       last_error="no pull recorded in replica.json yet")
    return replace(facts, upstream=pull.upstream or (config.replica.upstreams or (None,))[0],
                   confirmed_at=pull.confirmed_at or None, last_error=pull.last_error,
                   refusals=dict(pull.refusals), refused_at=dict(pull.refused_at))


def edge_facts(config: Config, index: Index | None) -> EdgeFacts:
    """An edge's cache as its store holds it: the cache's own account (bytes, hits,
    misses, upstream bytes, evictions) and the channel targets' bytes, from the index held
    (the cache's reserve as the pull loop last set it, without an index).

    Raises:
        StoreError: the cache cannot be read.
    """
    import sqlite3

    from codecache.store.edgecache import EdgeCache

    try:
        cache = EdgeCache(config.store.path, config.edge.cache_size)
        try:
            stats = cache.stats()
        finally:
            cache.close()
    except (OSError, sqlite3.Error) as err:   # another user's store, a damaged database
        raise StoreError(f"the edge cache in {config.store.path} cannot be read: "
                         f"{err}") from None
    reserved = sum(must_hold(index, config.role).values()) if index is not None \
        else stats.reserved_bytes
    return EdgeFacts(cache_bytes=stats.cache_bytes - stats.reserved_bytes + reserved,
                     cache_limit_bytes=stats.limit_bytes,
                     reserved_bytes=reserved, hits=stats.hits, misses=stats.misses,
                     upstream_bytes=stats.upstream_bytes, evictions=stats.evictions)
