"""Errors to HTTP: the one table (``errors.HTTP_STATUS``) against what is documented and
what the nginx front tier writes itself, and ``error_status`` for every error class."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from codecache.core import errors
from codecache.core.errors import HTTP_STATUS, CodecacheError, error_status

REPO = Path(__file__).resolve().parents[2]
_ROW = re.compile(r"^\| (\d{3}) \| `([a-z_]+)` \|", re.MULTILINE)


def _documented(doc: Path, heading: str) -> dict[str, int]:
    """The ``| status | `code` | when |`` rows of the table that follows ``heading``."""
    text = doc.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    table = section[:section.index("\n\n", section.index("| status | code |"))]
    rows = _ROW.findall(table)
    assert rows, f"no error table after {heading!r} in {doc}"
    return {code: int(status) for status, code in rows}


def _nginx_bodies() -> list[tuple[int, dict[str, object]]]:
    """Every ``return N '<JSON error body>'`` in nginx/codecache.conf."""
    conf = (REPO / "nginx" / "codecache.conf").read_text(encoding="utf-8")
    found = [(int(status), json.loads(body.replace("\\n", "")))
             for status, body in re.findall(r"return (\d{3}) '(\{\"error\".*?)';", conf)]
    assert found, "no JSON error body in nginx/codecache.conf"
    return found


def test_every_code_the_server_documents_has_its_status() -> None:
    documented = _documented(REPO / "docs" / "http.md", "## Errors")
    assert {code: HTTP_STATUS.get(code) for code in documented} == documented


def test_every_code_of_the_front_tier_has_its_status() -> None:
    documented = _documented(REPO / "nginx" / "README.md", "The errors nginx makes itself")
    assert {code: HTTP_STATUS.get(code) for code in documented} == documented


def test_the_table_holds_only_documented_codes() -> None:
    documented = _documented(REPO / "docs" / "http.md", "## Errors") | \
        _documented(REPO / "nginx" / "README.md", "The errors nginx makes itself")
    assert set(HTTP_STATUS) == set(documented)


def test_nginx_writes_the_tables_codes_and_statuses() -> None:
    for status, body in _nginx_bodies():
        error = body["error"]
        assert isinstance(error, dict)
        assert error["status"] == status, body
        assert HTTP_STATUS.get(str(error["code"])) == status, body


def _error_classes() -> list[type[CodecacheError]]:
    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, CodecacheError)]


def _instance(cls: type[CodecacheError]) -> CodecacheError:
    """An instance of ``cls`` (its constructor's arguments are all message parts)."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self"]
    args: list[object] = []
    for param in params:
        if param.annotation in ("list[str]",):
            args.append(["x"])
        elif param.annotation == "Refusal":
            args.append(errors.Refusal.TOO_LARGE)
        elif param.annotation == "int | None":
            args.append(None)
        else:
            args.append("x")
    return cls(*args)


# Statuses as before the table (the class rule alone, and the classes that name their own):
# the table must change none.
_BY_CLASS = [(errors.UpstreamInvalid, 502), (errors.UpstreamUnavailable, 503),
             (errors.BadRequest, 400), (errors.NotFound, 404),
             ((errors.Refused, errors.IntegrityError), 503), (CodecacheError, 500)]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_error_status_of_every_error_class(cls: type[CodecacheError]) -> None:
    err = _instance(cls)
    expected = next(status for base, status in _BY_CLASS if isinstance(err, base))
    assert error_status(err) == expected
    if err.code in HTTP_STATUS:
        assert HTTP_STATUS[err.code] == expected
