"""Subversion as the config says: which client (``svn.client``), chosen at the first call.

The two clients give the same trees (so the same tarball bytes): ``cli`` (``svn_cli``, one
``svn`` process per call) and ``pysvn`` (``pysvn``, libsvn in a worker process).
``svn.client = "auto"`` (the default) takes pysvn where a Python with pysvn is found
(measured in docs/benchmark.md: about half the cost per export), else the CLI. The choice
waits for the first call, so a command that never talks to Subversion starts no worker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from codecache.core.config import PackageConfig, SvnConfig
from codecache.core.errors import ConfigError
from codecache.origin.sources.base import ExportProgress, Source, SourceRef, Tag
from codecache.origin.sources.pysvn import Pysvn
from codecache.origin.sources.svn_access import SvnAccess
from codecache.origin.sources.svn_cli import SvnCli

# Starts the pysvn client with the first Python that has pysvn; None: there is none.
PysvnStarter = Callable[[SvnAccess], Source | None]


class Svn(Source):
    """Subversion with credentials and a timeout from the config, through one client.

    ``start_pysvn`` is a seam for tests of the choice (default: ``Pysvn.start``).
    """

    def __init__(self, config: SvnConfig, executable: str = "svn", *,
                 start_pysvn: PysvnStarter = Pysvn.start) -> None:
        self._access = SvnAccess(config)
        self._executable = executable
        self._start_pysvn = start_pysvn
        self._chosen: Source | None = None

    def _source(self) -> Source:
        """The client, chosen at the first call.

        Raises:
            ConfigError: ``svn.client = "pysvn"`` and no Python with pysvn is found.
        """
        if self._chosen is None:
            wanted = self._access.config.client
            found = None if wanted == "cli" else self._start_pysvn(self._access)
            if wanted == "pysvn" and found is None:
                raise ConfigError("svn.client = \"pysvn\" but no Python with pysvn was "
                                  "found (Debian: apt-get install python3-svn)")
            self._chosen = SvnCli(self._access, self._executable) if found is None else found
        return self._chosen

    @property
    def client(self) -> str:
        """The client in use: ``pysvn`` or ``cli`` (see ``_source`` for what it raises)."""
        return "cli" if isinstance(self._source(), SvnCli) else "pysvn"

    def close(self) -> None:
        if self._chosen is not None:
            self._chosen.close()

    def list_tags(self, package: PackageConfig) -> list[Tag]:
        return self._source().list_tags(package)

    @property
    def reports_progress(self) -> bool:
        return self._source().reports_progress

    def export(self, ref: SourceRef, destination: Path,
               progress: ExportProgress | None = None) -> None:
        self._source().export(ref, destination, progress)
