"""Exit codes (DESIGN.md §6) and the one mapping from errors to them.

0 ok; 1 verification failed; 2 the request is wrong (usage, config, unknown name); 3 the
state or environment refuses a valid request. ``check`` alone follows the Nagios plugin
conventions: its exit code is the state it found (0 OK, 1 WARNING, 2 CRITICAL), and every
failure of its own, usage errors included, is 3 UNKNOWN.
"""

from __future__ import annotations

from codecache.core.errors import (
    ConfigError,
    IntegrityError,
    InvalidName,
    NotFound,
)

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
NAGIOS = ("check",)    # commands that follow the Nagios plugin conventions


def exit_code(err: BaseException, command: str | None = None) -> int:
    """The one mapping from errors to exit codes (``check``: all of them are UNKNOWN)."""
    if command in NAGIOS:
        from codecache.ops.check import State

        return int(State.UNKNOWN)
    if isinstance(err, IntegrityError):
        return EXIT_INVALID
    if isinstance(err, ConfigError | InvalidName | NotFound):
        return EXIT_USAGE
    return EXIT_REFUSED  # Refused, UpstreamError and anything unforeseen
