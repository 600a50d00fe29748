"""``codecache audit``: rebuild releases from their sources and compare them with what was signed.

Owns the audit of a verified index: each release (or a chosen one) is rebuilt from its
recorded ``svn URL@REV`` or ``git URL@COMMIT`` by ``build.build_release``, the very step
the sync worker publishes with, and compared with the signed record. A git release is
reached with the credentials of the configured package of that name when its ``git_url``
is the recorded URL; a recorded URL that differs is fetched without credentials, and the
finding says so (``reach``). ``tar_sha256`` (the uncompressed tar)
decides, because another zlib may compress the same tar differently (DESIGN.md §3); a
differing ``sha256`` alone is reported, not failed. Where the gzip bytes are identical,
every release signature by a trusted key is also checked over the rebuilt bytes, with its
trusted comment. Needs only public keys and read access to the sources: it never signs and
never writes a store (the rebuild happens in a private temporary directory; a git commit is
fetched into a private temporary repository, ``audit_git``).

Where the index comes from (the local store or an upstream's ``/index.json``) and how the
findings are printed is the caller's business (``cli``).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from codecache.core.config import PackageConfig
from codecache.core.errors import SignatureError, SourceNotFound, StoreError
from codecache.core.index import Index, Release
from codecache.core.names import version_key
from codecache.core.pin import GIT
from codecache.core.signing import PublicKey, parse_minisig
from codecache.core.verify import verify_tarball
from codecache.origin.build import Built, build_release
from codecache.origin.sources.base import Source, Tag, release_ref

log = logging.getLogger("codecache.audit")


class Verdict(enum.Enum):
    MATCH = "OK"                  # the tar and the gzip bytes are what was signed
    RECOMPRESSED = "NOTE"         # the same tar, other gzip bytes: reported, not failed
    MISMATCH = "MISMATCH"         # the source holds other content than was signed
    MISSING = "MISSING"           # the source has no such path or revision (git: no ref
                                  # reaches the commit)

    @property
    def failed(self) -> bool:
        return self in (Verdict.MISMATCH, Verdict.MISSING)


@dataclass(frozen=True, slots=True)
class Finding:
    package: str
    version: str
    source: str           # URL@REV (Subversion) or URL@COMMIT (git) rebuilt from
    verdict: Verdict
    detail: str

    def line(self) -> str:
        return (f"{self.verdict.value} {self.package} {self.version} {self.source}: "
                f"{self.detail}")


def compare(package: str, release: Release, built_sha256: str, built_tar_sha256: str,
            signature_problems: list[str]) -> Finding:
    """The verdict on one rebuilt release (pure)."""
    def finding(verdict: Verdict, detail: str) -> Finding:
        return Finding(package, release.version, release.source.location, verdict, detail)

    if built_tar_sha256 != release.tar_sha256:
        return finding(Verdict.MISMATCH, f"tar_sha256 signed {release.tar_sha256}, rebuilt "
                       f"{built_tar_sha256}: the signed release is not this source's content")
    if built_sha256 != release.sha256:
        return finding(Verdict.RECOMPRESSED, f"same tar (tar_sha256 {release.tar_sha256}), "
                       f"other gzip bytes (sha256 signed {release.sha256}, rebuilt "
                       f"{built_sha256}): another zlib compresses differently; not a failure")
    if signature_problems:
        return finding(Verdict.MISMATCH, "; ".join(signature_problems))
    return finding(Verdict.MATCH, f"tar_sha256 {release.tar_sha256}, sha256 {release.sha256}")


def reach(configured: PackageConfig | None, name: str,
          release: Release) -> tuple[PackageConfig, str]:
    """The package to reach ``release``'s source with (its URL, its credentials) and what
    the finding adds about it (pure).

    A git release gets the configured package's credentials only where its ``git_url`` is
    the recorded URL: a token for one server is never sent to another.
    """
    pin = release.source
    if pin.kind != GIT:
        return configured or PackageConfig(name, svn_url=pin.url), ""
    if configured is not None and configured.git_url == pin.url:
        return configured, ""
    note = "" if configured is None else \
        "fetched from the recorded URL without credentials: the configured git_url differs"
    return PackageConfig(name, git_url=pin.url), note


def check_signatures(package: str, release: Release, built: Built,
                     keys: Mapping[str, PublicKey]) -> list[str]:
    """Problems of the release's signatures by trusted keys, checked over the rebuilt bytes."""
    problems = []
    expected = release.trusted_comment(package)
    for keyid, text in sorted(release.all_signatures().items()):
        if keyid not in keys:
            continue  # a key this auditor does not trust proves nothing either way
        try:
            with built.archive.open("rb") as fh:
                verify_tarball(keys, parse_minisig(text), fh, comment=expected,
                               digest=(built.info.sha256, built.info.size))
        except SignatureError as err:
            problems.append(f"signature by {keyid}: {err}")
    return problems


class Auditor:
    """Rebuilds releases from ``source``; ``packages``: the configured ones (tar prefix,
    credentials)."""

    def __init__(self, source: Source, keys: Mapping[str, PublicKey],
                 packages: Iterable[PackageConfig], scratch_parent: Path | None = None) -> None:
        self._source = source
        self._keys = keys
        self._packages = {p.name: p for p in packages}
        self._scratch_parent = scratch_parent

    def audit(self, index: Index, package: str | None = None, version: str | None = None,
              report: Callable[[Finding], None] | None = None) -> list[Finding]:
        """Audit every release of ``index`` (or of ``package``, or that one ``version``).

        Raises:
            PackageNotFound, ReleaseNotFound: the selection names nothing.
            UpstreamError: a source cannot be reached (``SourceNotFound`` is a finding, not
                raised).
            StoreError: the rebuild cannot be written to the temporary directory.
        """
        findings = []
        for name, release in self._selection(index, package, version):
            finding = self.audit_release(name, release)
            log.debug("%s", finding.line())  # the caller reports findings
            findings.append(finding)
            if report is not None:
                report(finding)
        return findings

    def audit_release(self, package: str, release: Release) -> Finding:
        """Rebuild one release and judge it (see ``audit``)."""
        configured = self._packages.get(package)
        reached, note = reach(configured, package, release)
        finding = self._rebuild(package, release, reached,
                                configured.prefix if configured is not None else package)
        if note:
            finding = dataclasses.replace(finding, detail=f"{finding.detail}; {note}")
        return finding

    def _rebuild(self, package: str, release: Release, reached: PackageConfig,
                 prefix: str) -> Finding:
        try:
            scratch = Path(tempfile.mkdtemp(prefix="codecache-audit-", dir=self._scratch_parent))
        except OSError as err:
            raise StoreError(f"cannot create a temporary directory: {err.strerror}") from err
        try:
            ref = release_ref(release)
            try:
                # git: the commit fetched from its URL with ``reached``'s credentials
                self._source.prepare(reached, [Tag(release.version, ref)])
                built = build_release(self._source, ref, prefix, scratch, release.size)
            except SourceNotFound as err:
                return Finding(package, release.version, release.source.location, Verdict.MISSING,
                               f"not in its source: {err}")
            problems = check_signatures(package, release, built, self._keys) \
                if built.info.sha256 == release.sha256 else []
            return compare(package, release, built.info.sha256, built.info.tar_sha256, problems)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def _selection(index: Index, package: str | None,
                   version: str | None) -> Iterator[tuple[str, Release]]:
        if package is not None:
            index.package(package)  # raises PackageNotFound
        for name in sorted(index.packages) if package is None else [package]:
            if version is not None:
                yield name, index.release(name, version)
                continue
            releases = index.package(name).releases
            for v in sorted(releases, key=version_key):
                yield name, releases[v]
