"""Subversion through the ``svn`` command-line client: one process per call.

Owns the command lines: ``--non-interactive``, a private empty ``--config-dir`` (no user
config, no cached credentials), ``--no-auth-cache``, a timeout, ``TZ=UTC`` (stable keyword
expansion) and a UTF-8 locale (non-ASCII file names); the password goes through
``--password-from-stdin``. Exports with ``--ignore-externals --native-eol LF`` at the
pinned ``URL@REV`` (DESIGN.md §3).
"""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from codecache.core.config import PackageConfig
from codecache.core.errors import SvnError
from codecache.core.index import parse_time
from codecache.origin.sources.base import ExportProgress, Source, SourceRef, Tag, svn_location
from codecache.origin.sources.svn_access import (
    SvnAccess,
    client_env,
    failure,
    tag_of,
    tags_url,
)


class SvnCli(Source):
    """The ``svn`` command, with the credentials and timeout of ``access``."""

    def __init__(self, access: SvnAccess, executable: str = "svn") -> None:
        self._access = access
        self._executable = executable

    def list_tags(self, package: PackageConfig) -> list[Tag]:
        url = tags_url(package)
        out = self._run(["list", "--xml", url])
        try:
            root = ET.fromstring(out)  # noqa: S314 - output of our own svn client
            return [_parse_entry(package, e) for e in root.iter("entry")
                    if e.get("kind") == "dir"]
        except (ET.ParseError, ValueError, TypeError) as err:
            raise SvnError(f"unexpected output from svn list {url}: {err}") from err

    def export(self, ref: SourceRef, destination: Path,
               progress: ExportProgress | None = None) -> None:
        url, revision = svn_location(ref)
        self._run(["export", "--quiet", "--ignore-externals", "--native-eol", "LF",
                   f"{url}@{revision}", str(destination)])

    def _run(self, args: list[str]) -> str:
        password = self._access.password()
        command = [self._executable, "--non-interactive", "--no-auth-cache",
                   "--config-dir", str(self._access.config_dir())]
        if self._access.username:
            command += ["--username", self._access.username]
        if password is not None:
            command.append("--password-from-stdin")
        env = client_env()
        timeout = self._access.timeout
        try:
            result = subprocess.run(
                command + args, input=f"{password}\n" if password is not None else "",
                capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise SvnError(f"svn {args[0]} timed out after {timeout:g}s "
                           f"({args[-1]})") from None
        except FileNotFoundError:
            raise SvnError(f"the Subversion client {self._executable!r} is not "
                           "installed") from None
        if result.returncode != 0:
            raise failure(args[0], _first_error(result.stderr), _error_codes(result.stderr))
        return result.stdout


_ERROR_LINE = re.compile(r"svn: E([0-9]+):")


def _error_codes(stderr: str) -> set[int]:
    """libsvn's error codes in the ``svn: E170000: ...`` lines of ``stderr``."""
    return {int(m.group(1)) for line in stderr.splitlines()
            if (m := _ERROR_LINE.match(line.strip()))}


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # svn prints its most specific error last ("svn: E170013: Unable to connect ...").
    errors = [line for line in lines if line.startswith("svn: E")]
    return (errors[-1] if errors else lines[-1] if lines else "no error message").removeprefix(
        "svn: ")


def _parse_entry(package: PackageConfig, entry: ET.Element) -> Tag:
    name = entry.findtext("name")
    commit = entry.find("commit")
    if name is None or commit is None:
        raise ValueError("entry without name or commit")
    date = commit.findtext("date")
    if date is None:
        raise ValueError(f"tag {name!r} has no commit date")
    return tag_of(package, name, int(commit.get("revision", "")),
                  parse_time(date), commit.findtext("author") or "")
