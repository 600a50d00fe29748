"""Log output for every command: human text lines or one JSON object per line.

Owns: the two formatters and installing one of them on the root logger (DESIGN.md §7
``[log] format``, the global ``--log-format``), and the access line of ``serve``. Modules
log with the standard library (``logging.getLogger("codecache....")``) and pass structured
facts as ``extra=`` fields (``package``, ``version``, ``serial``, ``status``,
``request_id``, ...): the JSON format emits each of them as a key of its own, the text
format keeps the message as written (messages already spell the facts a human needs as
``key=value``).

The access line (one per answered request) is the exception to "everything through
``Logger.info``": a record, its formatting and a write(2) per request cost as much CPU as
the request (docs/benchmark.md, "server hot path"). ``AccessLog`` renders the same line
with one template per format (the time string made once per second) and ``LogHandler``
writes the lines of one event-loop iteration together, like nginx's
``access_log ... buffer=``: at once on a quiet server, batched on a busy one.

Does not own: where the lines go (stderr; under systemd that is the journal) or rotation.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _json_str
from typing import TYPE_CHECKING, Any, TextIO

from codecache.core.config import LogFormat

if TYPE_CHECKING:  # not imported: serve's parent runs no event loop and loads no asyncio
    from asyncio import AbstractEventLoop

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}
# json.dumps(..., default=str, separators=(",", ":")), made once.
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)

# PIPE_BUF on Linux: a write of up to this many bytes to a pipe is not interleaved with
# another writer's (several worker processes share the server's stderr).
_ATOMIC_WRITE = 4096

# The access line: its facts (JSON keys, in this order) and its text message.
ACCESS_FIELDS = ("remote", "method", "path", "status", "bytes", "route", "package",
                 "version", "serial", "ms", "agent", "request_id")
# The text message is ``REMOTE "METHOD PATH" STATUS BYTES MSms version=V serial=S
# request_id=ID agent="AGENT"`` (``-`` for a missing version, serial or agent).
# What answers of one kind share in their access lines (``AccessLog.prepare``): every
# fact but remote, ms, agent and request_id, i.e. ACCESS_FIELDS[1:9] (method .. serial).
AccessFacts = tuple[str, str, int, int, str, "str | None", "str | None", "int | None"]
# Renders one access line: (time.time(), remote, ms, agent, request_id) -> the line.
AccessRenderer = Callable[[float, "str | None", float, "str | None", str], str]


def _message_parts(facts: AccessFacts) -> tuple[str, str]:
    """The access message without remote, ms, request_id and agent: the text between."""
    method, path, status, nbytes, _, _, version, serial = facts
    return (f' "{method} {path}" {status:d} {nbytes:d} ',
            f"ms version={version or '-'} serial={serial or '-'} request_id=")


def _message(parts: tuple[str, str], remote: str | None, ms: float, request_id: str,
             agent: str | None) -> str:
    """The access message from ``_message_parts`` and the per-request values."""
    before_ms, after_ms = parts
    return f'{remote}{before_ms}{ms:.2f}{after_ms}{request_id} agent="{agent or "-"}"'


def rfc3339_millis(created: float) -> str:
    """``2026-01-02T03:04:05.678Z`` (UTC)."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, in the order they were given."""
    return {k: v for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")}


def _json_value(value: object) -> str:
    """``value`` as ``json.dumps(value, default=str)`` writes it (the common types first)."""
    if value is None:
        return "null"
    if type(value) is str:
        return _json_str(value)
    if type(value) is int:  # not a bool
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return _JSON_ENCODER.encode(value)


class _PerSecond:
    """``time.strftime(fmt, convert(t))`` for the whole second of ``t``, made once a second."""

    __slots__ = ("_convert", "_fmt", "_second", "_text")

    def __init__(self, fmt: str, convert: Callable[[float], time.struct_time]) -> None:
        self._fmt, self._convert = fmt, convert
        self._second, self._text = -1, ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._fmt, self._convert(second))
            self._second = second
        return self._text


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``: ``2026-01-02 03:04:05,678 INFO codecache.sync message`` (local time)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._seconds = _PerSecond(self.default_time_format, self.converter)

    def access_line(self, name: str, created: float, message: str,
                    values: tuple[object, ...]) -> str:
        """What ``format`` makes of an INFO record of logger ``name`` with ``message``."""
        return f"{self._seconds(created)},{int(created % 1 * 1000):03d} INFO {name} {message}"

    def access_renderer(self, name: str, facts: AccessFacts) -> AccessRenderer:
        """``access_line`` for the answers that share ``facts``, taking the rest."""
        parts = _message_parts(facts)
        level_name = f" INFO {name} "
        seconds = self._seconds

        def render(created: float, remote: str | None, ms: float, agent: str | None,
                   request_id: str) -> str:
            return (f"{seconds(created)},{int(created % 1 * 1000):03d}{level_name}"
                    f"{_message(parts, remote, ms, request_id, agent)}")

        return render


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time, level, logger, message, the extras.

    Values that are not JSON types are written as their ``str()``; a traceback goes to an
    ``exception`` key (JSON escapes its newlines, so a record stays one line).
    """

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _PerSecond("%Y-%m-%dT%H:%M:%S", time.gmtime)

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
        return _JSON_ENCODER.encode(entry)

    def access_line(self, name: str, created: float, message: str,
                    values: tuple[object, ...]) -> str:
        """What ``format`` makes of an INFO record of logger ``name`` with ``message`` and
        ``values`` of ``ACCESS_FIELDS`` as ``extra=``: the same line, by one template."""
        return _JSON_ACCESS % (self._seconds(created), int(created % 1 * 1000), _json_str(name),
                               _json_str(message), *map(_json_value, values))

    def access_renderer(self, name: str, facts: AccessFacts) -> AccessRenderer:
        """``access_line`` for the answers that share ``facts`` (their JSON made once),
        taking the rest."""
        parts = _message_parts(facts)
        head = f'","level":"info","logger":{_json_str(name)},"message":'
        shared = "".join(f',"{key}":{_json_value(value)}'
                         for key, value in zip(ACCESS_FIELDS[1:9], facts, strict=True))
        seconds = self._seconds

        def render(created: float, remote: str | None, ms: float, agent: str | None,
                   request_id: str) -> str:
            message = _message(parts, remote, ms, request_id, agent)
            return (f'{{"time":"{seconds(created)}.{int(created % 1 * 1000):03d}Z{head}'
                    f'{_json_str(message)},"remote":{_json_value(remote)}{shared},'
                    f'"ms":{_json_value(ms)},"agent":{_json_value(agent)},'
                    f'"request_id":{_json_value(request_id)}}}')

        return render


_JSON_ACCESS = ('{"time":"%s.%03dZ","level":"info","logger":%s,"message":%s,'
                + ",".join(f'"{key}":%s' for key in ACCESS_FIELDS) + "}")


class LogHandler(logging.StreamHandler[TextIO]):
    """Every record to ``stream`` (stderr), and preformatted lines batched.

    ``add_line`` keeps a line until the end of the event-loop iteration (``call_soon``):
    a quiet loop writes it at once, a busy one writes the lines of an iteration with one
    write(2) per 4 KiB of whole lines (several worker processes share one stderr: a pipe
    write up to PIPE_BUF is never interleaved with another's, so lines stay whole, as with
    one write per line). A record and ``flush`` write the lines kept before them first, so
    the output stays in order; ``logging.shutdown`` (at exit) flushes too, so a graceful
    stop loses nothing. Lines are appended on the loop's thread only; a ``deque`` lets
    another thread's record take them out safely.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._lines: deque[str] = deque()
        self._flush_on: AbstractEventLoop | None = None  # a flush is scheduled there

    def add_line(self, line: str, loop: AbstractEventLoop) -> None:
        """Write ``line`` (with its newline) at the end of ``loop``'s current iteration.

        Called on ``loop``'s thread.
        """
        self._lines.append(line)
        if self._flush_on is not loop:
            self._flush_on = loop
            loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_on = None
        self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        self._write_lines()  # Handler.handle holds the lock
        super().emit(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_lines()
            super().flush()

    def _write_lines(self) -> None:
        """Write the kept lines, whole lines of at most ``_ATOMIC_WRITE`` bytes per write."""
        lines = self._lines
        chunk: list[str] = []
        size = 0
        while lines:
            line = lines.popleft()
            # An upper bound of its encoded size: stderr writes a lone surrogate (an
            # undecodable header byte) as \udcXX.
            n = len(line) if line.isascii() else 6 * len(line)
            if chunk and size + n > _ATOMIC_WRITE:
                self._write("".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += n
        if chunk:
            self._write("".join(chunk))

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)  # stderr is line-buffered: one write(2) per call
        except Exception:  # like a record that cannot be written: reported, not raised
            self.handleError(logging.makeLogRecord({"msg": text}))


class AccessLog:
    """The access lines of ``logger``, written from ``loop``'s thread.

    The line its handler's formatter makes, handed to ``LogHandler.add_line`` when that is
    the one handler and nothing filters on the way; else a ``LogRecord`` through
    ``logging`` as usual (same output, ordinary cost).
    """

    def __init__(self, logger: logging.Logger, loop: AbstractEventLoop,
                 sample: int = 1) -> None:
        self.logger = logger
        self.sample = sample
        self._skipped = 0
        self._loop = loop
        self._handler = _sole_handler(logger)

    def due(self, status: int) -> bool:
        """Whether the answer with ``status`` gets a line (``log.access_sample``): every
        one with ``sample`` 1, one in ``sample`` and every 4xx/5xx with more, none with 0."""
        if self.sample == 1:
            return True
        if self.sample == 0:
            return False
        if status >= 400:
            return True
        self._skipped += 1
        if self._skipped < self.sample:
            return False
        self._skipped = 0
        return True

    def prepare(self, *, method: str, path: str, status: int, nbytes: int, route: str,
                package: str | None, version: str | None,
                serial: int | None) -> PreparedAccess:
        """The line of answers with these facts, made ready for ``PreparedAccess.write``
        (for answers a server repeats: the facts rendered once, not per request)."""
        return PreparedAccess(self, (method, path, status, nbytes, route, package, version,
                                     serial))

    def write(self, *, remote: str | None, method: str, path: str, status: int, nbytes: int,
              route: str, package: str | None, version: str | None, serial: int | None,
              ms: float, agent: str | None, request_id: str) -> None:
        """One line (``nbytes`` is the ``bytes`` field), if the logger takes INFO."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        facts = (method, path, status, nbytes, route, package, version, serial)
        message = _message(_message_parts(facts), remote, ms, request_id, agent)
        values = (remote, *facts, ms, agent, request_id)
        handler = self._handler
        if handler is None:
            record = logging.LogRecord(self.logger.name, logging.INFO, __file__, 0, "%s",
                                       (message,), None)
            record.__dict__.update(zip(ACCESS_FIELDS, values, strict=True))
            self.logger.handle(record)
            return
        formatter: TextFormatter | JsonFormatter = handler.formatter  # type: ignore[assignment]
        line = formatter.access_line(self.logger.name, time.time(), message, values)
        handler.add_line(line + handler.terminator, self._loop)


class PreparedAccess:
    """The access line of the answers that share ``facts`` (``AccessLog.prepare``): what
    they share rendered once, the rest per request. The same line as ``AccessLog.write``."""

    __slots__ = ("_access", "_facts", "_render")

    def __init__(self, access: AccessLog, facts: AccessFacts) -> None:
        self._access = access
        self._facts = facts
        handler = access._handler
        formatter = handler.formatter if handler is not None else None
        self._render = formatter.access_renderer(access.logger.name, facts) \
            if isinstance(formatter, TextFormatter | JsonFormatter) else None

    def write(self, *, remote: str | None, ms: float, agent: str | None,
              request_id: str) -> None:
        """One line, if the logger takes INFO."""
        access = self._access
        handler, render = access._handler, self._render
        if handler is None or render is None:
            method, path, status, nbytes, route, package, version, serial = self._facts
            access.write(remote=remote, method=method, path=path, status=status,
                         nbytes=nbytes, route=route, package=package, version=version,
                         serial=serial, ms=ms, agent=agent, request_id=request_id)
        elif access.logger.isEnabledFor(logging.INFO):
            line = render(time.time(), remote, ms, agent, request_id)
            handler.add_line(line + handler.terminator, access._loop)


def _sole_handler(logger: logging.Logger) -> LogHandler | None:
    """The ``LogHandler`` with one of our formatters that ``logger``'s records reach, if it
    is the only handler they reach and no filter looks at them on the way."""
    handlers: list[logging.Handler] = []
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        handlers += node.handlers
        node = node.parent if node.propagate else None
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if isinstance(handler, LogHandler) and not handler.filters and \
            handler.level <= logging.INFO and \
            isinstance(handler.formatter, TextFormatter | JsonFormatter):
        return handler
    return None


def configure(fmt: LogFormat, *, debug: bool, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (default stderr) in ``fmt``; replaces handlers."""
    handler = LogHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Python's own warnings (deprecations, unclosed resources) as records, so a JSON log
    # stays all JSON.
    logging.captureWarnings(fmt is LogFormat.JSON)
