"""Unit tests for codecache.web.cachealign (page-aligned bodies in nginx's cache files)."""

from __future__ import annotations

import pytest

from codecache.web.cachealign import PAD_HEADER, PAGE, header_start, pad


def serialised(status_line: str, headers: list[tuple[str, str]]) -> bytes:
    """A response header as HTTP/1.1 writes it (aiohttp, nginx's cache file)."""
    lines = [status_line, *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@pytest.mark.parametrize("start", [0, 1, 342 + 21, 4095, 4096, 5000])
@pytest.mark.parametrize("extra", [0, 1, 17, 3000])
def test_the_pad_puts_the_body_on_a_page_boundary(start: int, extra: int) -> None:
    headers = [("ETag", '"sha256-' + "a" * 64 + '"'), ("Content-Length", "205497"),
               ("X-Extra", "x" * extra)]
    value = pad(start, "HTTP/1.1 200 OK", headers)
    assert set(value) <= {"."} and len(value) < PAGE
    raw = serialised("HTTP/1.1 200 OK", [*headers, (PAD_HEADER, value)])
    assert (start + len(raw)) % PAGE == 0


def test_an_already_aligned_header_gets_an_empty_pad() -> None:
    headers = [("A", "b")]
    size = len(serialised("HTTP/1.1 200 OK", [*headers, (PAD_HEADER, "")]))
    assert pad(PAGE - size, "HTTP/1.1 200 OK", headers) == ""


def test_header_start_counts_the_key_and_its_newline() -> None:
    # nginx: its own header and "\nKEY: " (the offset), the key (the target), "\n".
    assert header_start("342", "/pilot/latest.tar.gz") == 342 + len("/pilot/latest.tar.gz") + 1
    assert header_start("0", "/") == 2


@pytest.mark.parametrize("offset", [None, "", "abc", "-1", "3.5", " 342", "999999",
                                    "\u00b2", "\uff13"])   # superscript 2, fullwidth 3
def test_a_missing_or_odd_offset_means_no_pad(offset: str | None) -> None:
    assert header_start(offset, "/pilot/latest.tar.gz") is None


def test_a_target_that_is_not_ascii_means_no_pad() -> None:
    assert header_start("342", "/pilot/lätest.tar.gz") is None
