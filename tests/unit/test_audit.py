"""audit.compare: what decides (tar_sha256), what is only reported (sha256), signatures."""

from __future__ import annotations

from codecache.core.index import Release
from codecache.core.pin import svn_pin
from codecache.origin.audit import Verdict, compare

TAR, GZ = "1" * 64, "2" * 64


def _release() -> Release:
    return Release(version="1.0", sha256=GZ, size=10, tar_sha256=TAR,
                   source=svn_pin("svn://h/pilot/tags/1.0", 7), author="rm", date=1,
                   minisig="sig\n")


def test_identical_rebuild_matches() -> None:
    finding = compare("pilot", _release(), GZ, TAR, [])
    assert finding.verdict is Verdict.MATCH and not finding.verdict.failed
    assert finding.line().startswith("OK pilot 1.0 svn://h/pilot/tags/1.0@7: ")


def test_same_tar_other_gzip_bytes_is_reported_not_failed() -> None:
    # Another zlib may compress the same tar differently (DESIGN.md §3).
    finding = compare("pilot", _release(), "3" * 64, TAR, [])
    assert finding.verdict is Verdict.RECOMPRESSED and not finding.verdict.failed
    assert "another zlib" in finding.detail


def test_other_tar_fails_whatever_the_gzip_bytes() -> None:
    for gz in (GZ, "3" * 64):
        finding = compare("pilot", _release(), gz, "4" * 64, [])
        assert finding.verdict is Verdict.MISMATCH and finding.verdict.failed
        assert TAR in finding.detail and "4" * 64 in finding.detail


def test_a_signature_that_fails_over_the_rebuilt_bytes_fails() -> None:
    finding = compare("pilot", _release(), GZ, TAR, ["signature by ABC: does not match"])
    assert finding.verdict is Verdict.MISMATCH and "ABC" in finding.detail
