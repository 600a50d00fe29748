"""Unit tests for codecache.logs: the JSON line format and the text format."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from codecache.config import LogFormat
from codecache.logs import JsonFormatter, configure, rfc3339_millis


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
