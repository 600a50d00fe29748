"""Conditional and range request decisions for immutable blobs (RFC 9110 §13, §14).

This module owns *what* the server answers to a GET/HEAD of a blob given the
request's precondition and range headers: 200, 304, 412, 206 (one range) or 416.
It also owns HTTP-date formatting and parsing (RFC 9110 §5.6.7).

It is pure: no I/O, no aiohttp, no hashing. The caller passes the current
validators (strong entity tag, Last-Modified seconds, size) and the raw header
values (``None`` when a header is absent) and gets a :class:`Decision` back.
Every function here accepts any ``str`` without raising; malformed input is
treated the way RFC 9110 tells a recipient to treat it (usually: ignore it).
"""

from __future__ import annotations

import calendar
import enum
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Decision", "Outcome", "evaluate", "format_http_date", "parse_http_date",
           "plain_outcome"]

# Upper bound on list members we look at (entity tags, range specs). Real clients
# send a handful; the cap keeps hostile headers cheap. Anything past it is not
# considered, which can only turn a 304/206 into a 200 or an If-Match into a 412.
_MAX_LIST_ITEMS = 100

# RFC 9110 §5.6.3: optional whitespace is SP / HTAB.
_OWS = " \t"

# RFC 9110 §8.8.3: entity-tag = [ weak ] opaque-tag; weak = %s"W/" (case-sensitive);
# opaque-tag = DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text.
_ETAGC = r"[\x21\x23-\x7e\x80-\xff]*"
_ENTITY_TAG = re.compile(r'(W/)?("' + _ETAGC + r'")')
# One list member: an entity tag followed by OWS and the end of the member.
_ETAG_MEMBER = re.compile(r'(W/)?("' + _ETAGC + r'")[ \t]*(?:,|\Z)')
# RFC 9110 §5.6.1: a recipient must tolerate empty list members and OWS around them,
# so a member starts at the first character that is neither.
_MEMBER_START = re.compile(r"[^ \t,]")

# RFC 9110 §14.1.2: int-range = first-pos "-" [ last-pos ]; suffix-range = "-" suffix-length.
# ASCII digits only; more than 19 digits cannot be a sane offset, so it is rejected.
_RANGE_SPEC = re.compile(r"(?:([0-9]{1,19})-([0-9]{0,19}))|(?:-([0-9]{1,19}))")

# RFC 9110 §5.6.7: the three HTTP-date forms. Names are case-sensitive.
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAY = "(?:" + "|".join(_DAY_NAMES) + ")"
_DAY_LONG = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(?P<month>" + "|".join(_MONTH_NAMES) + ")"
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
# IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
_IMF_FIXDATE = re.compile(
    _DAY + r", (?P<day>[0-9]{2}) " + _MONTH + r" (?P<year>[0-9]{4}) " + _TIME + " GMT"
)
# rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
_RFC850_DATE = re.compile(
    _DAY_LONG + r", (?P<day>[0-9]{2})-" + _MONTH + r"-(?P<year>[0-9]{2}) " + _TIME + " GMT"
)
# asctime-date: Sun Nov  6 08:49:37 1994
_ASCTIME_DATE = re.compile(
    _DAY + " " + _MONTH + r" (?P<day>[0-9]{2}| [0-9]) " + _TIME + r" (?P<year>[0-9]{4})"
)
_MONTH_NUMBER = {name: index for index, name in enumerate(_MONTH_NAMES, start=1)}


class Outcome(enum.Enum):
    """What kind of response the server must send."""

    FULL = "full"  # 200 with the whole body
    NOT_MODIFIED = "not_modified"  # 304
    PRECONDITION_FAILED = "precondition_failed"  # 412
    PARTIAL = "partial"  # 206 with one range
    NOT_SATISFIABLE = "not_satisfiable"  # 416


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome plus, for PARTIAL, the inclusive byte range to send."""

    outcome: Outcome
    start: int = 0
    end: int = 0

    def content_range(self, size: int) -> str | None:
        """The Content-Range field value for this decision, if it needs one (§14.4)."""
        if self.outcome is Outcome.PARTIAL:
            return f"bytes {self.start}-{self.end}/{size}"
        if self.outcome is Outcome.NOT_SATISFIABLE:
            # §15.5.17: a 416 carries the unsatisfied-range form.
            return f"bytes */{size}"
        return None


# Request fields that can change the answer for a file; without them it is a plain 200.
_CONDITIONAL_FIELDS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since",
                       "Range", "If-Range")

_FULL = Decision(Outcome.FULL)
_NOT_MODIFIED = Decision(Outcome.NOT_MODIFIED)
_PRECONDITION_FAILED = Decision(Outcome.PRECONDITION_FAILED)
_NOT_SATISFIABLE = Decision(Outcome.NOT_SATISFIABLE)


class _EntityTag(NamedTuple):
    weak: bool
    opaque: str  # including the surrounding double quotes


class _RangeSpec(NamedTuple):
    first: int | None  # None: a suffix range, ``last`` is then the suffix length
    last: int | None  # None: to the end of the representation


def evaluate(
    *,
    method: str,
    etag: str,
    last_modified: int,
    size: int,
    if_match: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
    if_unmodified_since: str | None = None,
    range_header: str | None = None,
    if_range: str | None = None,
) -> Decision:
    """Decide the response for a request, in the order of RFC 9110 §13.2.2.

    ``etag`` is the current strong entity tag (quoted), ``last_modified`` the current
    Last-Modified in Unix seconds, ``size`` the body length. Header arguments are
    raw field values, ``None`` when the header is absent (an empty string counts as
    present). ``method`` is compared case-sensitively (§9.1).
    """
    current = _own_entity_tag(etag)
    safe = method in ("GET", "HEAD")

    # Step 1 (§13.1.1) / step 2 (§13.1.4): If-Match, else If-Unmodified-Since.
    if if_match is not None:
        if not _if_match_passes(if_match, current):
            return _PRECONDITION_FAILED
    elif if_unmodified_since is not None:
        since = parse_http_date(if_unmodified_since)
        if since is not None and last_modified > since:
            return _PRECONDITION_FAILED

    # Step 3 (§13.1.2) / step 4 (§13.1.3): If-None-Match, else If-Modified-Since.
    # A recipient must ignore If-Modified-Since when If-None-Match is present,
    # because entity tags are the more accurate validator.
    if if_none_match is not None:
        if _if_none_match_matches(if_none_match, current):
            return _NOT_MODIFIED if safe else _PRECONDITION_FAILED
    elif if_modified_since is not None and safe:
        since = parse_http_date(if_modified_since)
        if since is not None and last_modified <= since:
            return _NOT_MODIFIED

    # Step 5 (§13.1.5, §14.2): Range only applies to GET.
    if method != "GET" or range_header is None:
        return _FULL
    spec = _parse_single_range(range_header)
    if spec is None:
        return _FULL
    if if_range is not None and not _if_range_holds(if_range, current, last_modified):
        return _FULL
    return _resolve_range(spec, size)


def plain_outcome(headers: Mapping[str, str], etag: str) -> Outcome | None:
    """The outcome of the two GET/HEAD requests pilots repeat, without ``evaluate``.

    ``headers`` are the request's fields, looked up case-insensitively. FULL when they ask
    for no precondition and no range; NOT_MODIFIED when If-None-Match is exactly ``etag``
    and neither If-Match nor If-Unmodified-Since is present (§13.2.2: step 3 answers 304,
    If-Modified-Since and Range are not looked at once If-None-Match is false). None:
    anything else, for ``evaluate`` to decide.
    """
    if not any(name in headers for name in _CONDITIONAL_FIELDS):
        return Outcome.FULL
    if headers.get("If-None-Match") == etag and "If-Match" not in headers and \
            "If-Unmodified-Since" not in headers:
        return Outcome.NOT_MODIFIED
    return None


# --- entity tags -------------------------------------------------------------------


def _own_entity_tag(etag: str) -> _EntityTag:
    """Split the server's own validator; a malformed one still compares verbatim."""
    match = _ENTITY_TAG.fullmatch(etag)
    if match is None:
        return _EntityTag(weak=False, opaque=etag)
    return _EntityTag(weak=match[1] is not None, opaque=match[2])


def _entity_tags(value: str) -> Iterator[_EntityTag]:
    """The well-formed entity tags of a ``#entity-tag`` list; malformed members are skipped.

    A member is everything up to the next comma unless it starts with a complete
    entity tag (whose opaque part may itself contain commas, §8.8.3).
    """
    pos = 0
    for _ in range(_MAX_LIST_ITEMS):
        start = _MEMBER_START.search(value, pos)
        if start is None:
            return
        pos = start.start()
        member = _ETAG_MEMBER.match(value, pos)
        if member is not None:
            yield _EntityTag(weak=member[1] is not None, opaque=member[2])
            pos = member.end()
            continue
        comma = value.find(",", pos)
        if comma < 0:
            return
        pos = comma + 1


def _strong_match(a: _EntityTag, b: _EntityTag) -> bool:
    # §8.8.3.2: strong comparison needs both tags strong and identical.
    return not a.weak and not b.weak and a.opaque == b.opaque


def _weak_match(a: _EntityTag, b: _EntityTag) -> bool:
    # §8.8.3.2: weak comparison ignores the weakness indicator.
    return a.opaque == b.opaque


def _is_star(value: str) -> bool:
    return value.strip(_OWS) == "*"


def _if_match_passes(value: str, current: _EntityTag) -> bool:
    # §13.1.1: "*" is true when a current representation exists (it does: we
    # are serving it); otherwise true only on a strong match.
    if _is_star(value):
        return True
    return any(_strong_match(tag, current) for tag in _entity_tags(value))


def _if_none_match_matches(value: str, current: _EntityTag) -> bool:
    # §13.1.2: "*" matches any existing representation; list members use the
    # weak comparison function.
    if _is_star(value):
        return True
    return any(_weak_match(tag, current) for tag in _entity_tags(value))


# --- ranges --------------------------------------------------------------------------


def _parse_single_range(value: str) -> _RangeSpec | None:
    """The one byte range asked for, or None when Range is to be ignored.

    §14.2 lets a server ignore Range; we do so for an invalid header, a unit other
    than bytes, and for more than one range (we never build multipart/byteranges).
    """
    unit, equals, range_set = value.partition("=")
    if not equals:
        return None
    unit = unit.strip(_OWS)
    # §14.1: range units are case-insensitive; isascii() keeps Unicode case
    # folding from turning lookalike characters into "bytes".
    if not unit.isascii() or unit.lower() != "bytes":
        return None
    members = range_set.split(",", _MAX_LIST_ITEMS)
    if len(members) > _MAX_LIST_ITEMS:
        return None
    specs = [member.strip(_OWS) for member in members]
    specs = [spec for spec in specs if spec]  # §5.6.1: ignore empty list members
    if len(specs) != 1:
        return None  # empty range-set is invalid; several ranges get the whole body
    return _parse_range_spec(specs[0])


def _parse_range_spec(spec: str) -> _RangeSpec | None:
    match = _RANGE_SPEC.fullmatch(spec)
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        return _RangeSpec(first=None, last=int(suffix))
    start = int(first)
    if not last:
        return _RangeSpec(first=start, last=None)
    stop = int(last)
    # §14.1.2: an int-range with last-pos < first-pos is invalid.
    return _RangeSpec(first=start, last=stop) if stop >= start else None


def _resolve_range(spec: _RangeSpec, size: int) -> Decision:
    # §14.1.2: a zero-length representation satisfies no range, nor does a
    # first-pos at or past the end or a zero suffix-length.
    if size <= 0:
        return _NOT_SATISFIABLE
    if spec.first is None:
        length = spec.last or 0
        if length == 0:
            return _NOT_SATISFIABLE
        # A suffix longer than the body selects the whole body.
        return Decision(Outcome.PARTIAL, start=max(size - length, 0), end=size - 1)
    if spec.first >= size:
        return _NOT_SATISFIABLE
    last = size - 1 if spec.last is None else min(spec.last, size - 1)
    return Decision(Outcome.PARTIAL, start=spec.first, end=last)


def _if_range_holds(value: str, current: _EntityTag, last_modified: int) -> bool:
    """§13.1.5: whether the Range may be honoured under this If-Range value."""
    value = value.strip(_OWS)
    if value.startswith(('"', "W/")):
        match = _ENTITY_TAG.fullmatch(value)
        if match is None:
            return False
        # Only a strong match counts; a weak tag never does.
        return _strong_match(_EntityTag(weak=match[1] is not None, opaque=match[2]), current)
    # A date validator must match Last-Modified exactly, not "not newer than".
    since = parse_http_date(value)
    return since is not None and since == last_modified


# --- HTTP dates ----------------------------------------------------------------------


def format_http_date(seconds: int) -> str:
    """IMF-fixdate for Unix ``seconds`` (§5.6.7), independent of the locale.

    Raises ValueError when the instant is outside the years 1-9999 that an
    IMF-fixdate can express.
    """
    try:
        t = time.gmtime(seconds)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"timestamp out of range for an HTTP date: {seconds}") from exc
    if not 1 <= t.tm_year <= 9999:
        raise ValueError(f"timestamp out of range for an HTTP date: {seconds}")
    return (
        f"{_DAY_NAMES[t.tm_wday]}, {t.tm_mday:02d} {_MONTH_NAMES[t.tm_mon - 1]} "
        f"{t.tm_year:04d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def parse_http_date(value: str) -> int | None:
    """Unix seconds for an HTTP-date in any of its three forms (§5.6.7), else None.

    The grammar is applied strictly (names are case-sensitive, the zone is GMT);
    surrounding whitespace is tolerated. The day name is not checked against the date.
    """
    value = value.strip(_OWS)
    match = _IMF_FIXDATE.fullmatch(value) or _ASCTIME_DATE.fullmatch(value)
    if match is not None:
        year = int(match["year"])
    else:
        match = _RFC850_DATE.fullmatch(value)
        if match is None:
            return None
        year = _expand_two_digit_year(int(match["year"]), _current_year())
    return _unix_seconds(
        year,
        _MONTH_NUMBER[match["month"]],
        int(match["day"].strip()),
        int(match["hour"]),
        int(match["minute"]),
        int(match["second"]),
    )


def _current_year() -> int:
    return time.gmtime().tm_year


def _expand_two_digit_year(two_digits: int, current_year: int) -> int:
    # §5.6.7: an rfc850-date more than 50 years in the future means the most
    # recent past year with the same last two digits.
    year = current_year - current_year % 100 + two_digits
    if year > current_year + 50:
        return year - 100
    if year <= current_year - 50:
        return year + 100
    return year


def _unix_seconds(
    year: int, month: int, day: int, hour: int, minute: int, second: int
) -> int | None:
    # second == 60 is allowed by the grammar (leap second); timegm rolls it over.
    if not 1 <= year <= 9999 or hour > 23 or minute > 59 or second > 60:
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
