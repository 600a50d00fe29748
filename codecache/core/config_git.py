"""The git side of the config: ``[git]`` and a package's ``git_*`` keys (DESIGN.md §7).

Owns what makes a ``git_url`` acceptable: an ``https``, ``http``, ``ssh``, ``git`` or
``file`` URL with no password and no whitespace, and a user name only in an ssh URL (the URL
is signed into the public index exactly as written, so a secret in it would be published;
a forge takes a token as an https user name too), a ``git_token_file`` only with
https (the token is the password of ``git_user``, sent only over TLS), a ``git_ssh_key``
only with ssh. The credentials themselves are read where they are used, never here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codecache.core.config_schema import GitConfig
from codecache.core.config_values import as_path, as_str, parse_duration
from codecache.core.errors import ConfigError

GIT_KEYS = ("timeout",)
GIT_PACKAGE_KEYS = ("git_url", "git_token_file", "git_user", "git_ssh_key")
GIT_SCHEMES = ("https", "http", "ssh", "git", "file")

# scheme://[user@]host[:port]/path, or file:///path. A password (user:pass@) is refused
# below with its own message, so the user part here takes no colon.
_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?:(?P<userinfo>[^@/]*)@)?"
                  r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:@]*)(?::(?P<port>[0-9]*))?(?P<path>/.*)?")
_USER = re.compile(r"[A-Za-z0-9._~-]+")


def git_config(t: Mapping[str, Any]) -> GitConfig:
    d = GitConfig()
    return GitConfig(timeout=parse_duration(t.get("timeout", d.timeout), "git.timeout"))


def check_git_url(url: str, key: str) -> str:
    """``url`` if it is an accepted git URL (see the module docstring).

    Raises:
        ConfigError: another scheme, an scp-like ``host:path``, a password, whitespace.
    """
    if any(c.isspace() for c in url) or any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConfigError(f"{key}: whitespace or control characters in {url!r}")
    match = _URL.fullmatch(url)
    if match is None:
        raise ConfigError(f"{key}: expected a URL like https://host/repo.git (scp-like "
                          f"host:path is not accepted; write ssh://host/path), got {url!r}")
    scheme, userinfo = match["scheme"], match["userinfo"]
    if scheme not in GIT_SCHEMES:
        raise ConfigError(f"{key}: scheme {scheme!r} is not one of {', '.join(GIT_SCHEMES)}")
    if userinfo is not None and (":" in userinfo or not _USER.fullmatch(userinfo)):
        raise ConfigError(f"{key}: the URL carries a password or a malformed user; it would "
                          "be signed into the public index (use git_token_file)")
    if userinfo is not None and scheme != "ssh":
        # A forge takes a token as the user name too (https://TOKEN@host/...): only ssh
        # URLs name a user (ssh://git@host/...); for https that is git_user.
        raise ConfigError(f"{key}: a user name in a {scheme}:// URL could be a token and "
                          "would be signed into the public index (https: use git_user and "
                          "git_token_file)")
    if scheme == "file":
        if match["host"] or userinfo is not None or not match["path"]:
            raise ConfigError(f"{key}: expected file:///absolute/path, got {url!r}")
    elif not match["host"] or not match["path"] or match["path"] == "/":
        raise ConfigError(f"{key}: expected a host and a repository path, got {url!r}")
    return url


def git_package(t: Mapping[str, Any], where: str, base: Path) -> dict[str, Any]:
    """The ``PackageConfig`` fields of a git package's ``git_*`` keys, checked."""
    url = check_git_url(as_str(t["git_url"], where + "git_url"), where + "git_url")
    scheme = url.split("://", 1)[0]
    fields: dict[str, Any] = {"git_url": url}
    if "git_token_file" in t:
        if scheme != "https":
            raise ConfigError(f"{where}git_token_file: a token is sent only over https, and "
                              f"git_url is {scheme}://")
        fields["git_token_file"] = as_path(t["git_token_file"], where + "git_token_file", base)
    if "git_user" in t:
        user = as_str(t["git_user"], where + "git_user")
        if not _USER.fullmatch(user):
            raise ConfigError(f"{where}git_user: unexpected characters in {user!r}")
        fields["git_user"] = user
    if "git_ssh_key" in t:
        if scheme != "ssh":
            raise ConfigError(f"{where}git_ssh_key: an ssh key is used only with ssh:// URLs, "
                              f"and git_url is {scheme}://")
        fields["git_ssh_key"] = as_path(t["git_ssh_key"], where + "git_ssh_key", base)
    return fields
