"""systemd's service notification protocol (sd_notify(3)), without libsystemd.

Owns: telling the service manager that a long-running command is ready (``READY=1``),
still alive (``WATCHDOG=1``, at half of ``$WATCHDOG_USEC``), what it is doing
(``STATUS=...``) and that it is stopping (``STOPPING=1``). The protocol is one datagram of
``KEY=VALUE`` lines to the unix socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name``
for the abstract namespace). Without that variable (not under systemd, or not
``Type=notify``) every call does nothing.

A notification that cannot be delivered is logged at debug level and dropped: the service
must never stop serving because its supervisor went away. Does not own: when to notify
(``web.server`` and ``cli`` decide).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("codecache.notify")


class Notifier:
    """Notifications to ``$NOTIFY_SOCKET``; a no-op without it. Construct with ``from_env``."""

    def __init__(self, address: str | None, watchdog_interval: float | None) -> None:
        self._address = address
        self._ready_sent = False
        self._stopping_sent = False
        #: Seconds between ``WATCHDOG=1`` pings (half the watchdog timeout, as
        #: sd_watchdog_enabled(3) advises); None when no watchdog is configured.
        self.watchdog_interval = watchdog_interval

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """From ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (sd_notify(3))."""
        environ = os.environ if env is None else env
        raw = environ.get("NOTIFY_SOCKET", "")
        address: str | None = None
        if raw.startswith("/"):
            address = raw
        elif raw.startswith("@") and len(raw) > 1:
            address = "\0" + raw[1:]  # Linux abstract namespace
        interval = None
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process meant to ping; a child that inherited it must not.
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            interval = int(usec) / 2_000_000
        return cls(address, interval if address is not None else None)

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; True if it was delivered."""
        if self._address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the event loop or the sync loop on a full or stuck receiver.
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as err:
            log.debug("cannot notify the service manager at %r: %s", self._address, err)
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        """``READY=1`` (once; later calls only update the status)."""
        fields = [] if self._ready_sent else ["READY=1"]
        self._ready_sent = True
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        if fields:
            self.send(*fields)

    def status(self, text: str) -> None:
        self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        """``WATCHDOG=1``: the caller's loop is still turning.

        Before ``READY=1`` (the watchdog is not armed yet) it also asks for one more
        watchdog timeout of start-up time (``EXTEND_TIMEOUT_USEC``), so a first sync of
        many tags may take as long as it keeps making progress.
        """
        if self.watchdog_interval is None:
            return
        if self._ready_sent:
            self.send("WATCHDOG=1")
        else:
            usec = round(self.watchdog_interval * 2_000_000)
            self.send("WATCHDOG=1", f"EXTEND_TIMEOUT_USEC={usec}")

    def stopping(self, status: str | None = None) -> None:
        """``STOPPING=1`` (once)."""
        if self._stopping_sent:
            return
        self._stopping_sent = True
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        self.send(*fields)


def _one_line(text: str) -> str:
    return " ".join(text.split())
