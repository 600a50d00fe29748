"""Unit tests for codecache.telemetry.logs: the JSON line format and the text format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from codecache.core.config import LogFormat
from codecache.telemetry import logs
from codecache.telemetry.logs import JsonFormatter, configure, rfc3339_millis


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def record(msg: str, *args: object, extra: dict[str, object] | None = None,
           exc: bool = False) -> logging.LogRecord:
    logger = logging.getLogger("codecache.test")
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError as err:
            exc_info = (type(err), err, err.__traceback__)
    return logger.makeRecord("codecache.test", logging.INFO, __file__, 1, msg, args,
                             exc_info, extra=extra)


def test_extra_fields_become_json_keys() -> None:
    line = JsonFormatter().format(record(
        "release published package=%s", "pilot",
        extra={"package": "pilot", "version": "1.2.0", "serial": 1764158400, "status": 200,
               "request_id": "abc"}))
    entry = json.loads(line)
    assert entry["message"] == "release published package=pilot"
    assert entry["level"] == "info"
    assert entry["logger"] == "codecache.test"
    assert (entry["package"], entry["version"], entry["serial"], entry["status"],
            entry["request_id"]) == ("pilot", "1.2.0", 1764158400, 200, "abc")
    assert "args" not in entry and "msg" not in entry and "exc_info" not in entry


def test_a_traceback_stays_on_one_line() -> None:
    line = JsonFormatter().format(record("failed", exc=True))
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_values_json_cannot_hold_are_strings() -> None:
    entry = json.loads(JsonFormatter().format(record("x", extra={"path": object()})))
    assert entry["path"].startswith("<object object")


def test_time_is_rfc3339_utc_with_milliseconds() -> None:
    assert rfc3339_millis(1764158400.25) == "2025-11-26T12:00:00.250Z"


def test_configure_json_replaces_handlers(restore_root_logger: None) -> None:
    out = io.StringIO()
    configure(LogFormat.JSON, debug=False, stream=out)
    logging.getLogger("codecache.x").debug("hidden")
    logging.getLogger("codecache.x").warning("shown %d", 1, extra={"serial": 5})
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["serial"] == 5


def test_configure_text_keeps_the_message_as_written(restore_root_logger: None) -> None:
    out = io.StringIO()
    configure(LogFormat.TEXT, debug=True, stream=out)
    logging.getLogger("codecache.x").debug("serial=%d", 5, extra={"serial": 5})
    assert out.getvalue().rstrip().endswith("DEBUG codecache.x serial=5")


# --- the access line: one template per format, lines batched per event-loop iteration --


ACCESS_VALUES = [
    # remote, method, path, status, bytes, route, package, version, serial, ms, agent, id
    ("127.0.0.1", "GET", "/pilot/releases/1.2.0.tar.gz", 200, 362, "release", "pilot",
     "1.2.0", 1764158400, 0.87, "curl/8.5.0", "0123456789abcdef0123456789abcdef"),
    (None, "HEAD", "/pilot/latest.tar.gz?x=%22y%22", 304, 0, "channel", "pilot", None, None,
     12.0, None, "pilot-7f3a.42"),
    ("::1", "GET", '/p\u00e4th/"quoted"\\', 404, 113, "other", None, None, 0, 1234.5,
     'wget "\u00fcber" \udce9\t', "r"),
]


# The access message as documented (docs/admin.md): the reference for logs' renderers.
ACCESS_MESSAGE = '%s "%s %s" %d %d %.2fms version=%s serial=%s request_id=%s agent="%s"'


def record_of_access(name: str, created: float, message: str,
                     values: tuple[object, ...]) -> logging.LogRecord:
    """The record ``logging`` would make of an access line: the reference output."""
    record = logging.getLogger(name).makeRecord(
        name, logging.INFO, __file__, 1, "%s", (message,), None,
        extra=dict(zip(logs.ACCESS_FIELDS, values, strict=True)))
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    return record


@pytest.mark.parametrize("values", ACCESS_VALUES)
@pytest.mark.parametrize("created", [1764158400.0, 1764158400.999, 1764158459.5004])
@pytest.mark.parametrize("formatter", [logs.TextFormatter(), JsonFormatter()],
                         ids=["text", "json"])
def test_access_line_is_what_the_formatter_makes_of_the_record(
        formatter: logs.TextFormatter | JsonFormatter, created: float,
        values: tuple[Any, ...]) -> None:
    """The line made from a whole record, and the line made ready for answers of one kind
    (``access_renderer``): both what ``logging`` would write."""
    remote, method, path, status, nbytes, route, package, version, serial, ms, agent, rid = \
        values
    message = ACCESS_MESSAGE % (remote, method, path, status, nbytes, ms, version or "-",
                                serial or "-", rid, agent or "-")
    expected = formatter.format(record_of_access("codecache.access", created, message, values))
    assert formatter.access_line("codecache.access", created, message, values) == expected
    render = formatter.access_renderer("codecache.access", (
        method, path, status, nbytes, route, package, version, serial))
    assert render(created, remote, ms, agent, rid) == expected


def test_access_line_of_a_later_second_has_its_own_time() -> None:
    formatter = JsonFormatter()
    values = ACCESS_VALUES[0]
    first = json.loads(formatter.access_line("codecache.access", 1764158400.5, "m", values))
    later = json.loads(formatter.access_line("codecache.access", 1764158401.25, "m", values))
    assert (first["time"], later["time"]) == ("2025-11-26T12:00:00.500Z",
                                             "2025-11-26T12:00:01.250Z")


def access_on_a_loop(write: Callable[[logs.AccessLog], None]) -> None:
    """``write`` lines of an ``AccessLog`` on a running event loop, then let it flush."""
    async def main() -> None:
        write(logs.AccessLog(logging.getLogger("codecache.access"),
                             asyncio.get_running_loop()))
        await asyncio.sleep(0)

    asyncio.run(main())


def test_access_log_writes_the_json_keys_in_order(restore_root_logger: None) -> None:
    out = io.StringIO()
    configure(LogFormat.JSON, debug=False, stream=out)
    access_on_a_loop(lambda access: access.write(
        remote="127.0.0.1", method="GET", path="/p/latest.tar.gz", status=200, nbytes=362,
        route="channel", package="p", version="1.2.0", serial=7, ms=1.5, agent=None,
        request_id="id-1"))
    (line,) = out.getvalue().splitlines()
    entry = json.loads(line)
    assert list(entry) == ["time", "level", "logger", "message", *logs.ACCESS_FIELDS]
    assert entry["message"] == ('127.0.0.1 "GET /p/latest.tar.gz" 200 362 1.50ms '
                                'version=1.2.0 serial=7 request_id=id-1 agent="-"')
    assert (entry["bytes"], entry["agent"], entry["serial"]) == (362, None, 7)


@pytest.mark.parametrize("log_format", [LogFormat.TEXT, LogFormat.JSON])
def test_a_prepared_line_is_written_like_any_other(restore_root_logger: None,
                                                   log_format: LogFormat) -> None:
    """Through our handler (the line rendered from what was prepared) and through another
    handler as well (a record, as ``write`` makes): the same lines."""
    out, plain = io.StringIO(), io.StringIO()
    configure(log_format, debug=False, stream=out)

    def both(access: logs.AccessLog) -> None:
        facts: dict[str, Any] = {"method": "GET", "path": "/p/latest.tar.gz", "status": 304,
                                 "nbytes": 0, "route": "channel", "package": "p",
                                 "version": "1.2.0", "serial": 7}
        access.prepare(**facts).write(remote="::1", ms=0.5, agent="wget", request_id="id-2")
        access.write(remote="::1", ms=0.5, agent="wget", request_id="id-2", **facts)

    def untimed(line: str) -> object:
        if log_format is LogFormat.TEXT:
            return line.split(" ", 2)[2]   # after the date and the time
        entry = json.loads(line)
        del entry["time"]
        return list(entry.items())

    access_on_a_loop(both)
    first, second = out.getvalue().splitlines()
    assert untimed(first) == untimed(second)
    assert "request_id=id-2" in first
    other = logging.StreamHandler(plain)
    other.setFormatter(logs.TextFormatter() if log_format is LogFormat.TEXT else JsonFormatter())
    logging.getLogger().addHandler(other)
    access_on_a_loop(both)
    lines = plain.getvalue().splitlines()
    assert [untimed(line) for line in lines] == [untimed(first)] * 2


def test_access_log_through_another_handler_is_the_same_line(
        restore_root_logger: None) -> None:
    """A handler that is not a LogHandler (or a filter on the way) gets a record."""
    out, plain = io.StringIO(), io.StringIO()
    configure(LogFormat.TEXT, debug=False, stream=out)
    other = logging.StreamHandler(plain)
    other.setFormatter(logs.TextFormatter())
    logging.getLogger().addHandler(other)
    access_on_a_loop(lambda access: access.write(
        remote=None, method="HEAD", path="/x", status=404, nbytes=0, route="other",
        package=None, version=None, serial=None, ms=0.25, agent="curl", request_id="r"))
    assert out.getvalue() == plain.getvalue()
    assert out.getvalue().endswith(
        ' INFO codecache.access None "HEAD /x" 404 0 0.25ms version=- serial=- request_id=r '
        'agent="curl"\n')


def test_lines_of_one_loop_iteration_are_written_together_in_order() -> None:
    out = io.StringIO()
    handler = logs.LogHandler(out)
    handler.setFormatter(logs.TextFormatter())
    seen: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for i in range(5):
            handler.add_line(f"line {i}\n", loop)
        seen.append(out.getvalue())   # still this iteration: kept
        await asyncio.sleep(0)        # the next iteration writes them
        seen.append(out.getvalue())
        handler.add_line("line 5\n", loop)
        handler.handle(logging.makeLogRecord({  # writes what is kept first
            "name": "codecache.x", "msg": "other record", "levelname": "INFO",
            "levelno": logging.INFO}))
        handler.add_line("line 6\n", loop)
        handler.flush()

    asyncio.run(main())
    assert seen == ["", "".join(f"line {i}\n" for i in range(5))]
    lines = out.getvalue().splitlines()
    assert lines[5] == "line 5"
    assert lines[6].endswith(" INFO codecache.x other record")
    assert lines[7] == "line 6"



class WriteRecorder(io.StringIO):
    """A stream that remembers each ``write`` (a seam: the write(2) calls of stderr)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_kept_lines_go_out_in_writes_of_whole_lines_within_pipe_buf() -> None:
    """A pipe write up to PIPE_BUF (4096) is not interleaved with another worker's."""
    out = WriteRecorder()
    handler = logs.LogHandler(out)
    lines = [f"{i:04d} {'x' * (i % 300)}\n" for i in range(400)]
    lines[7] = "y" * 5000 + "\n"             # longer than a pipe write: alone
    lines[9] = "\u00e4\udce9" * 300 + "\n"  # not ASCII: counted by its largest encoding

    async def main() -> None:
        for line in lines:
            handler.add_line(line, asyncio.get_running_loop())
        await asyncio.sleep(0)

    asyncio.run(main())
    assert "".join(out.writes) == "".join(lines)
    assert 1 < len(out.writes) < len(lines)
    for text in out.writes:
        assert text.endswith("\n")
        assert len(text.encode("utf-8", "backslashreplace")) <= 4096 or text == lines[7]
