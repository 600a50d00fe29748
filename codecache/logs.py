"""Log output for every command: human text lines or one JSON object per line.

Owns: the two formatters and installing one of them on the root logger (DESIGN.md §7
``[log] format``, the global ``--log-format``). Modules log with the standard library
(``logging.getLogger("codecache....")``) and pass structured facts as ``extra=`` fields
(``package``, ``version``, ``serial``, ``status``, ``request_id``, ...): the JSON format
emits each of them as a key of its own, the text format keeps the message as written
(messages already spell the facts a human needs as ``key=value``).

Does not own: where the lines go (stderr; under systemd that is the journal) or rotation.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from codecache.config import LogFormat

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


def rfc3339_millis(created: float) -> str:
    """``2026-01-02T03:04:05.678Z`` (UTC)."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, in the order they were given."""
    return {k: v for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time, level, logger, message, the extras.

    Values that are not JSON types are written as their ``str()``; a traceback goes to an
    ``exception`` key (JSON escapes its newlines, so a record stays one line).
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339_millis(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure(fmt: LogFormat, *, debug: bool, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (default stderr) in ``fmt``; replaces handlers."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON
                         else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Python's own warnings (deprecations, unclosed resources) as records, so a JSON log
    # stays all JSON.
    logging.captureWarnings(fmt is LogFormat.JSON)
