"""Unit tests for codecache.web.respond: which answer a representation gets (``plan``) and
the error body, without a socket or a server."""

from __future__ import annotations

import json

from multidict import CIMultiDict

from codecache.web.catalog import Representation, Route
from codecache.web.respond import Plan, error_response, plan

_SHA = "ab" * 32
_REP = Representation(route=Route.RELEASE, etag=f'"sha256-{_SHA}"', last_modified=1_700_000_000,
                      size=100, content_type="application/gzip",
                      cache_control="public, max-age=31536000, immutable", version="1.0.0",
                      blob=_SHA)


def _plan(*fields: tuple[str, str], method: str = "GET") -> Plan:
    return plan(method, CIMultiDict(fields), _REP)


def test_a_plain_request_gets_the_whole_body_and_may_be_padded() -> None:
    for method in ("GET", "HEAD"):
        assert _plan(method=method) == Plan(200, _REP.headers, span=(0, 99))


def test_a_matching_if_none_match_gets_304_with_the_validators() -> None:
    assert _plan(("If-None-Match", _REP.etag)) == Plan(304, _REP.validators)
    assert _plan(("If-None-Match", f'"x", {_REP.etag}')) == Plan(304, _REP.validators)


def test_if_none_match_on_several_lines_is_one_list() -> None:
    assert _plan(("If-None-Match", '"x"'), ("If-None-Match", _REP.etag)).status == 304


def test_a_range_gets_206_with_its_content_range_and_no_pad() -> None:
    decided = _plan(("Range", "bytes=10-19"))
    assert decided == Plan(206, {**_REP.headers, "Content-Range": "bytes 10-19/100"},
                           span=(10, 19))


def test_a_range_past_the_end_is_a_416_error_never_cached_like_the_file() -> None:
    decided = _plan(("Range", "bytes=100-"))
    assert decided.status == 416 and decided.span is None
    assert decided.error == ("range_not_satisfiable", "range not satisfiable for 100 bytes")
    assert decided.headers == {"Content-Range": "bytes */100", "Accept-Ranges": "bytes"}


def test_a_failed_if_match_is_a_412_error() -> None:
    decided = _plan(("If-Match", '"sha256-other"'))
    assert decided == Plan(412, {}, error=("precondition_failed", "a precondition failed"))


def test_a_stale_if_range_gets_the_whole_body() -> None:
    decided = _plan(("Range", "bytes=0-9"), ("If-Range", '"sha256-other"'))
    assert decided == Plan(200, _REP.headers, span=(0, 99))


def test_a_ranged_request_with_a_matching_if_none_match_is_not_modified() -> None:
    assert _plan(("Range", "bytes=0-9"), ("If-None-Match", _REP.etag)).status == 304


def test_error_response_is_the_documented_body_with_the_tables_status() -> None:
    response = error_response("method_not_allowed", "Method Not Allowed",
                              {"Allow": "GET,HEAD"})
    assert response.status == 405
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Allow"] == "GET,HEAD"
    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == {"error": {
        "status": 405, "code": "method_not_allowed", "message": "Method Not Allowed"}}


def test_error_response_takes_the_status_of_an_unlisted_code() -> None:
    response = error_response("store_error", "disk full", status=503)
    assert response.status == 503
    assert isinstance(response.body, bytes)
    assert json.loads(response.body)["error"]["code"] == "store_error"
