"""What both Subversion clients share: credentials, a private config dir, error codes.

Owns how a client reaches a repository without anything of the user's (an empty config dir
of its own, no auth cache; the password from the config or its file, never on a command
line, in a log line or an error message), which of libsvn's error codes mean "not there",
and the reference of a listed tag (URL = the package's tag URL, id = the tag's last-changed
revision).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

from codecache.core.config import PackageConfig, SvnConfig
from codecache.core.errors import ConfigError, SvnError, SvnNotFound
from codecache.origin.sources.base import Tag, svn_ref

# The repository answered, and the path or revision is not there (svn_error_codes.h:
# SVN_ERR_RA_ILLEGAL_URL, SVN_ERR_FS_NOT_FOUND, SVN_ERR_FS_NO_SUCH_REVISION) ...
_NOT_FOUND_CODES = frozenset({170000, 160013, 160006})
# ... unless the client could not connect at all (SVN_ERR_RA_CANNOT_CONNECT).
_UNABLE_TO_CONNECT = 170013


def not_found(codes: set[int]) -> bool:
    """Whether libsvn's error ``codes`` say the path or revision is not there."""
    return bool(codes & _NOT_FOUND_CODES) and _UNABLE_TO_CONNECT not in codes


def failure(what: str, message: str, codes: set[int]) -> SvnError:
    """The error of a failed ``svn what``: ``SvnNotFound`` where libsvn's ``codes`` say
    the path or revision is not there, else ``SvnError``."""
    text = f"svn {what} failed: {message}"
    return SvnNotFound(text) if not_found(codes) else SvnError(text)


def client_env() -> dict[str, str]:
    """A client's environment: ``TZ=UTC`` (stable keyword expansion) and a UTF-8 locale
    (non-ASCII file names)."""
    return {**os.environ, "TZ": "UTC", "LC_ALL": "C.UTF-8"}


def tag_of(package: PackageConfig, name: str, revision: int, time: int, author: str) -> Tag:
    """A listed tag of ``package``: ``name`` last changed in ``revision``."""
    return Tag(name, svn_ref(package.tag_url(name), revision, time, author))


def tags_url(package: PackageConfig) -> str:
    """The directory whose subdirectories are the package's tags."""
    return f"{package.svn_url}/tags"


class SvnAccess:
    """A client's credentials and private config dir, from ``svn`` config."""

    def __init__(self, config: SvnConfig) -> None:
        self.config = config
        self._config_dir: Path | None = None

    @property
    def username(self) -> str | None:
        return self.config.username

    @property
    def timeout(self) -> float:
        return self.config.timeout

    def config_dir(self) -> Path:
        """An empty config dir of this client's own, made once (not once per call)."""
        if self._config_dir is None or not self._config_dir.is_dir():
            self._config_dir = Path(tempfile.mkdtemp(prefix="codecache-svn-"))
            weakref.finalize(self, shutil.rmtree, self._config_dir, ignore_errors=True)
        return self._config_dir

    def password(self) -> str | None:
        """The password, read from ``svn.password_file`` at each call (it may be rotated).

        Raises:
            ConfigError: the password file cannot be read.
        """
        if self.config.password is not None:
            return self.config.password
        if self.config.password_file is None:
            return None
        try:
            return self.config.password_file.read_text().strip()
        except OSError as err:
            raise ConfigError(f"cannot read svn.password_file: {err.strerror}") from err
