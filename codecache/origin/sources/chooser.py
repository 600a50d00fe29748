"""Each package to its own source: Subversion or git, by what its config names.

Owns the dispatch of the ``Source`` calls (``sources.base``) in a store with packages of
both kinds: a package's tags are listed and prepared by the source of its kind
(``PackageConfig.kind``), a reference is exported by the source that made it
(``SourceRef.kind``). Each source is made at its first use, so a Subversion-only origin
starts nothing of git and the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path

from codecache.core.config import PackageConfig
from codecache.core.errors import ConfigError
from codecache.core.pin import GIT, SVN
from codecache.core.tarball import Entry
from codecache.origin.sources.base import ExportProgress, Source, SourceRef, Tag


class Sources(Source):
    """The sources of every kind a store's packages use, made at first use."""

    def __init__(self, makers: dict[str, Callable[[], Source]]) -> None:
        self._makers = makers
        self._made: dict[str, Source] = {}

    def for_kind(self, kind: str) -> Source:
        """The source of ``kind`` (``svn`` or ``git``).

        Raises:
            ConfigError: no source of that kind can be made here.
        """
        if kind not in self._made:
            maker = self._makers.get(kind)
            if maker is None:
                known = ", ".join(sorted(k for k in (SVN, GIT) if k in self._makers))
                raise ConfigError(f"no {kind} source here (this command reads: {known})")
            self._made[kind] = maker()
        return self._made[kind]

    def list_tags(self, package: PackageConfig) -> list[Tag]:
        return self.for_kind(package.kind).list_tags(package)

    def prepare(self, package: PackageConfig, tags: list[Tag]) -> list[Tag]:
        return self.for_kind(package.kind).prepare(package, tags)

    def tree(self, ref: SourceRef) -> AbstractContextManager[Iterable[Entry]] | None:
        return self.for_kind(ref.kind).tree(ref)

    def export(self, ref: SourceRef, destination: Path,
               progress: ExportProgress | None = None) -> None:
        self.for_kind(ref.kind).export(ref, destination, progress)

    def close(self) -> None:
        for source in self._made.values():
            source.close()
