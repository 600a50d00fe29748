"""Subversion, through the ``svn`` command-line client, behind a two-call interface.

Owns: listing a package's tags with their last-changed revision, author and date, and
exporting ``URL@REV``. Every call runs ``svn`` with ``--non-interactive``, a private empty
``--config-dir`` (no user config, no cached credentials), ``--no-auth-cache``, a timeout,
``TZ=UTC`` (stable keyword expansion) and a UTF-8 locale (non-ASCII file names). The
password goes through ``--password-from-stdin``: never on the command line, where ``ps``
would show it, and never in a log line or error message.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from codecache.config import SvnConfig
from codecache.errors import ConfigError, SvnError, SvnNotFound
from codecache.index import parse_time


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    revision: int   # last-changed revision of the tag's tree
    author: str
    date: int       # commit time of that revision, seconds since the epoch


class Svn:
    """The ``svn`` client with credentials and a timeout from the config."""

    def __init__(self, config: SvnConfig, executable: str = "svn") -> None:
        self._config = config
        self._executable = executable

    def list_tags(self, svn_url: str) -> list[Tag]:
        """The directories under ``{svn_url}/tags``.

        Raises:
            SvnError: unreachable repository, missing ``tags``, timeout, bad output.
        """
        out = self._run(["list", "--xml", f"{svn_url}/tags"])
        try:
            root = ET.fromstring(out)  # noqa: S314 - output of our own svn client
            return [_parse_entry(e) for e in root.iter("entry") if e.get("kind") == "dir"]
        except (ET.ParseError, ValueError, TypeError) as err:
            raise SvnError(f"unexpected output from svn list {svn_url}/tags: {err}") from err

    def export(self, url: str, revision: int, destination: Path) -> None:
        """Export ``url@revision`` into ``destination`` (which must not exist yet).

        Raises:
            SvnError: unreachable repository, missing path, timeout.
        """
        self._run(["export", "--quiet", "--ignore-externals", "--native-eol", "LF",
                   f"{url}@{revision}", str(destination)])

    def _run(self, args: list[str]) -> str:
        password = self._password()
        with tempfile.TemporaryDirectory(prefix="codecache-svn-") as config_dir:
            command = [self._executable, "--non-interactive", "--no-auth-cache",
                       "--config-dir", config_dir]
            if self._config.username:
                command += ["--username", self._config.username]
            if password is not None:
                command.append("--password-from-stdin")
            env = {**os.environ, "TZ": "UTC", "LC_ALL": "C.UTF-8"}
            try:
                result = subprocess.run(
                    command + args, input=f"{password}\n" if password is not None else "",
                    capture_output=True, text=True, timeout=self._config.timeout, env=env,
                    check=False)
            except subprocess.TimeoutExpired:
                raise SvnError(f"svn {args[0]} timed out after {self._config.timeout:g}s "
                               f"({args[-1]})") from None
            except FileNotFoundError:
                raise SvnError(f"the Subversion client {self._executable!r} is not "
                               "installed") from None
        if result.returncode != 0:
            message = f"svn {args[0]} failed: {_first_error(result.stderr)}"
            if _not_found(result.stderr):
                raise SvnNotFound(message)
            raise SvnError(message)
        return result.stdout

    def _password(self) -> str | None:
        if self._config.password is not None:
            return self._config.password
        if self._config.password_file is None:
            return None
        try:
            return self._config.password_file.read_text().strip()
        except OSError as err:
            raise ConfigError(f"cannot read svn.password_file: {err.strerror}") from err


# The repository answered, and the path or revision is not there (svn_error_codes.h:
# SVN_ERR_RA_ILLEGAL_URL, SVN_ERR_FS_NOT_FOUND, SVN_ERR_FS_NO_SUCH_REVISION).
_NOT_FOUND = ("svn: E170000:", "svn: E160013:", "svn: E160006:")


def _not_found(stderr: str) -> bool:
    lines = [line.strip() for line in stderr.splitlines()]
    return any(line.startswith(_NOT_FOUND) for line in lines) and not any(
        line.startswith("svn: E170013:") for line in lines)  # unable to connect


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # svn prints its most specific error last ("svn: E170013: Unable to connect ...").
    errors = [line for line in lines if line.startswith("svn: E")]
    return (errors[-1] if errors else lines[-1] if lines else "no error message").removeprefix(
        "svn: ")


def _parse_entry(entry: ET.Element) -> Tag:
    name = entry.findtext("name")
    commit = entry.find("commit")
    if name is None or commit is None:
        raise ValueError("entry without name or commit")
    date = commit.findtext("date")
    if date is None:
        raise ValueError(f"tag {name!r} has no commit date")
    return Tag(name=name, revision=int(commit.get("revision", "")),
               author=commit.findtext("author") or "", date=parse_time(date))
