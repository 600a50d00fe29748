"""The sync worker's loop: a pass every ``sync.interval``, backing off while it fails.

Owns the schedule of passes (``syncer.Syncer.sync_once``), which failures are waited out
(the source away, the disk full, a long publish holding the lock) and how long, and the
heartbeat the service manager's watchdog hears (``codecache.telemetry.notify``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from codecache.core.config import SyncConfig
from codecache.core.errors import StoreBusy, StoreError, UpstreamError
from codecache.origin.syncer import Syncer

log = logging.getLogger("codecache.sync")


def run(syncer: Syncer, config: SyncConfig, stop: threading.Event, only: str | None = None,
        *, on_pass: Callable[[int | None], None] = lambda serial: None,
        heartbeat: Callable[[], None] = lambda: None,
        beat_every: float | None = None) -> None:
    """Poll every ``config.interval`` until ``stop`` is set; back off while source/store fail.

    ``on_pass(serial)`` is called after every pass (``serial`` None if it failed);
    ``heartbeat()`` before each tag is built and at least every ``beat_every`` seconds
    while waiting, so the service manager's watchdog hears from this loop itself: a stuck
    loop is restarted, a long first sync is not.
    """
    delay = config.interval
    syncer.progress = heartbeat
    while not stop.is_set():
        serial: int | None = None
        try:
            report = syncer.sync_once(only)
            delay = config.interval
            serial = report.serial
            log.debug("sync done serial=%d published=%d", report.serial,
                      len(report.published),
                      extra={"serial": report.serial, "published": len(report.published)})
        except (UpstreamError, StoreError, StoreBusy) as err:
            # Conditions that clear by themselves (svn away, disk full, a long publish
            # holding the lock): the worker backs off instead of exiting.
            delay = min(max(delay, 1.0) * 2, config.max_backoff)
            log.error("sync failed, retrying in %.0fs: %s", delay, err,
                      extra={"retry_in": delay, "error": str(err)})
        on_pass(serial)
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            if stop.wait(min(left, beat_every or left)):
                break
            heartbeat()
