"""The origin's writer, as one object: the sync worker and the release-manager operations.

Owns nothing but the assembly: ``Origin`` puts together the store transaction
(``writer.StoreWriter``: load, commit, serial rule, publish, yank), the signing keys
(``signer.Signer``: per-key signatures, rotation), the sync pass (``syncer.Syncer``: tags,
batches, auto channel, mutated tags) and the worker's loop (``service.run``) for the
callers (``codecache sync``, ``publish``, ``yank``). Every change is one locked, atomic
store transaction that ends with a new index serial and appends what it did to the release
history (DESIGN.md §9: who, when, which serial); the sync worker acts as ``sync``, publish
and yank as the release manager's ``Actor``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from codecache.core.config import Config
from codecache.core.history import Actor
from codecache.core.index import Index
from codecache.core.signing import PublicKey, SecretKey
from codecache.origin import service
from codecache.origin.signer import Signer
from codecache.origin.sources.base import Source
from codecache.origin.syncer import Syncer, SyncReport
from codecache.origin.writer import StoreWriter
from codecache.store.store import Store

__all__ = ["Origin", "SyncReport"]


class Origin:
    """Writes the store of an origin. Construct once per process, pass explicitly."""

    def __init__(self, config: Config, store: Store, secret: SecretKey | Sequence[SecretKey],
                 trusted: dict[str, PublicKey], source: Source, actor: Actor) -> None:
        """``secret``: the signing key, or several during a rotation (the primary first).

        Raises:
            ConfigError: no signing key.
        """
        self._config = config
        signer = Signer(secret, trusted)
        self._writer = StoreWriter(config, store, signer, actor)
        self._syncer = Syncer(config, store, self._writer, signer, source)

    def sync_once(self, only: str | None = None) -> SyncReport:
        """Poll every configured package (or ``only``) once and publish new tags
        (``Syncer.sync_once``)."""
        return self._syncer.sync_once(only)

    def publish(self, package: str, version: str, channel: str) -> Index:
        """Point ``channel`` at ``version``, importing the tag first if needed.

        Raises:
            InvalidName, PackageNotFound, ReleaseNotFound, ReleaseYanked, UpstreamError.
        """
        return self._writer.publish(package, version, channel, self._syncer.import_one)

    def yank(self, package: str, version: str, reason: str) -> Index:
        """Withdraw a release (it stays downloadable by its exact version URL).

        Raises:
            InvalidName, PackageNotFound, ReleaseNotFound, ChannelInUse.
        """
        return self._writer.yank(package, version, reason)

    def run(self, stop: threading.Event, only: str | None = None, *,
            on_pass: Callable[[int | None], None] = lambda serial: None,
            heartbeat: Callable[[], None] = lambda: None,
            beat_every: float | None = None) -> None:
        """The sync worker: a pass every ``sync.interval`` until ``stop`` (``service.run``)."""
        service.run(self._syncer, self._config.sync, stop, only, on_pass=on_pass,
                    heartbeat=heartbeat, beat_every=beat_every)
