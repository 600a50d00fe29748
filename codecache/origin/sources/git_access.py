"""The one place git processes are run: environment, credentials, time bound, errors.

Owns how codecache reaches a git repository and nothing of what it does there (listing,
fetching, reading trees: ``sources.git``; the audit's private fetch: ``origin.audit_git``):

* **Nothing of the user's or the system's git config** (``GIT_CONFIG_NOSYSTEM``,
  ``GIT_CONFIG_GLOBAL=/dev/null``), no prompt ever (``GIT_TERMINAL_PROMPT=0``, no askpass,
  ssh ``BatchMode``), messages in English (``LC_ALL=C``: errors are told apart by text).
  The caller's environment is kept otherwise (proxies, ``GIT_SSL_CAINFO``...), but of its
  ``GIT_*`` variables only those about reaching a server (TLS, proxies, the ssh command):
  a ``GIT_DIR``, ``GIT_TRACE_*`` or ``GIT_CONFIG_PARAMETERS`` of the caller's must not
  redirect, log or reconfigure what codecache runs.
* **Credentials never in argv, the environment, a log or an error.** An https token
  (``git_token_file``) is handed to git by a credential helper, a small script in a private
  0700 directory named by environment config (``GIT_CONFIG_COUNT``): it reads the token
  file at each use (a rotated token is picked up) and answers only for the configured
  https host, so a redirect elsewhere gets nothing. An ssh key (``git_ssh_key``) goes into
  ``GIT_SSH_COMMAND`` as ``-i PATH`` (a path, not a secret). Error text is scrubbed of the
  token and of any ``user:password@``.
* **A time bound on every network step** (``[git] timeout``): the git process runs in its
  own process group and the whole group (``git-remote-https``, ``ssh``...) is killed when
  the bound passes, so no git child outlives it; ``http.lowSpeedLimit``/``lowSpeedTime``
  and ssh's ``ConnectTimeout`` end an http or ssh stall earlier with git's own message.
  Automatic gc/maintenance is off: a detached gc would leave the process group.
* **Errors**: ``GitNotFound`` where the server was reached and says the repository, ref or
  commit is not there; ``GitError`` for anything else (unreachable, refused, timed out,
  authentication failed), each one line.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path
from urllib.parse import urlsplit

from codecache.core.config import GitConfig, PackageConfig
from codecache.core.errors import GitError, GitNotFound

# The caller's GIT_* variables that are kept: how to reach a server, never what to do there.
_KEPT_GIT_ENV = re.compile(r"GIT_(SSL_\w+|PROXY_\w+|HTTP_PROXY_AUTHMETHOD|HTTP_USER_AGENT|"
                           r"EXEC_PATH|SSH_COMMAND)")
# Besides GIT_*: variables that would prompt someone or translate git's messages.
_DROPPED_ENV = frozenset({"SSH_ASKPASS", "LANGUAGE", "LC_MESSAGES"})

# stderr of a git that reached its server and was told the thing is not there (git's own
# wording, LC_ALL=C): smart http 404, git daemon/ssh/file without that repository (git
# daemon has no authentication: its "access denied or repository not exported" means not
# exported, i.e. not there), a ref or commit the server does not have (or will not hand
# out: protocol v0 without allowAnySHA1InWant; the audit then looks through the refs).
_NOT_FOUND = re.compile(
    r"repository '[^']*' not found|repository not found|does not appear to be a git "
    r"repository|couldn't find remote ref|not our ref|unknown object|no such remote ref|"
    r"does not allow request for unadvertised object|repository not exported|"
    r"remote error: .*(?:no such repository|not found)", re.IGNORECASE)
# A userinfo with a password in any URL git prints (git_url cannot carry one, but a
# redirect target or a recorded URL might).
_USERINFO = re.compile(r"(?<=://)[^/@\s]*:[^/@\s]*@")
_MESSAGE_MAX = 400
# Lines git adds to any failure of an ssh or file transport, and advice: they say nothing
# of this failure (the reason is the line before them, often ssh's own).
_BOILERPLATE = re.compile(r"hint: |fatal: Could not read from remote repository\.|Please make "
                          r"sure you have the correct access rights|and the repository exists")

# What ``run`` and ``env`` configure in every git process, besides the credentials.
_ALWAYS = (
    # Transports: the five of DESIGN.md §7, nothing else (ext:: would run a command).
    ("protocol.allow", "never"),
    *((f"protocol.{scheme}.allow", "always") for scheme in ("https", "http", "ssh", "git",
                                                            "file")),
    ("credential.helper", ""),          # an empty value resets the list: none but ours
    ("core.askPass", ""),
    ("gc.auto", "0"),                   # no detached gc outside the process group
    ("maintenance.auto", "false"),
)

_HELPER = """#!/bin/sh
# codecache: git credential helper for one https repository (written by git_access.py).
# Answers only "get" for {host}; reads the token file at each use.
[ "$1" = get ] || exit 0
protocol= host=
while IFS= read -r line; do
    case $line in
        protocol=*) protocol=${{line#protocol=}} ;;
        host=*) host=${{line#host=}} ;;
    esac
done
[ "$protocol" = https ] && [ "$host" = {host} ] || exit 0
token=$(cat -- {token_file}) || exit 0
token=${{token#"${{token%%[![:space:]]*}}"}}
token=${{token%"${{token##*[![:space:]]}}"}}
printf 'username=%s\\npassword=%s\\n' {user} "$token"
"""


class GitAccess:
    """How one package's repository is reached: ``run`` a git command, or ``env`` for a
    process the caller manages. ``package`` gives the URL and credentials (the audit
    passes one without credentials to fetch a recorded URL that is not configured)."""

    def __init__(self, config: GitConfig, package: PackageConfig,
                 executable: str = "git") -> None:
        self.config = config
        self.package = package
        self.executable = executable
        self._dir: Path | None = None
        self._made = threading.Lock()   # builds ahead ask ``env`` from several threads

    @property
    def timeout(self) -> float:
        return self.config.timeout

    def env(self) -> dict[str, str]:
        """The environment of a git process for this package (credentials by reference:
        keep this object while the process runs, its private directory goes with it)."""
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV
               and (not k.startswith("GIT_") or _KEPT_GIT_ENV.fullmatch(k))}
        settings = [*_ALWAYS, *self._http_limits()]
        helper = self._credential_helper()
        if helper is not None:
            settings.append(("credential.helper", str(helper)))
        env.update({
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",        # set but empty: git neither prompts nor tries SSH_ASKPASS
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_SSH_COMMAND": self._ssh_command(env.get("GIT_SSH_COMMAND")),
            "GIT_CONFIG_COUNT": str(len(settings)),
        })
        for n, (key, value) in enumerate(settings):
            env[f"GIT_CONFIG_KEY_{n}"] = key
            env[f"GIT_CONFIG_VALUE_{n}"] = value
        return env

    def run(self, args: list[str], *, cwd: Path | None = None, network: bool = False,
            input: bytes | None = None) -> bytes:
        """``git ARGS``'s standard output; a ``network`` step is killed, with every process
        it started, after ``[git] timeout``.

        Raises:
            GitNotFound: the server was reached and has no such repository, ref or commit.
            GitError: anything else (unreachable, refused, timed out, authentication
                failed, git missing, an unreadable token file).
        """
        if network:
            self._check_token()
        what = f"git {args[0] if args else ''}".rstrip()
        try:
            process = subprocess.Popen(
                [self.executable, *args], cwd=cwd, env=self.env(),
                stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True)  # its own group: a timeout kills git's children too
        except OSError as err:
            raise GitError(f"{what}: cannot run {self.executable}: {err.strerror}") from err
        try:
            out, err_bytes = process.communicate(input, timeout=self.timeout if network else None)
        except subprocess.TimeoutExpired:
            kill_group(process)
            process.communicate()
            raise GitError(f"{what} {self.package.git_url}: no answer within "
                           f"{self.timeout:g} s (git.timeout)") from None
        except BaseException:
            kill_group(process)
            process.wait()
            raise
        if process.returncode != 0:
            raise self.failure(what, err_bytes.decode("utf-8", "replace"))
        return out

    def failure(self, what: str, stderr: str) -> GitError:
        """The error of a failed ``what`` from its ``stderr``: one line, scrubbed."""
        detail = self.scrub(_summary(stderr))
        text = f"{what} {self.package.git_url}: {detail}"
        return GitNotFound(text) if _NOT_FOUND.search(stderr) else GitError(text)

    def scrub(self, text: str) -> str:
        """``text`` without the token or any ``user:password@`` of a URL."""
        text = _USERINFO.sub("***@", text)
        token = self._token()
        if token:
            text = text.replace(token, "***")
        return text

    # --- credentials ------------------------------------------------------------------

    def _token(self) -> str | None:
        path = self.package.git_token_file
        if path is None:
            return None
        try:
            return path.read_text(errors="replace").strip()
        except OSError:
            return None

    def _check_token(self) -> None:
        """An unreadable, empty or multi-line token file fails here, with its own words,
        rather than as "authentication failed"."""
        path = self.package.git_token_file
        if path is None:
            return
        try:
            token = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            raise GitError(f"cannot read git_token_file {path}: {reason}") from err
        if not token or any(c.isspace() for c in token):
            raise GitError(f"git_token_file {path}: expected one token (no spaces or line "
                           "breaks inside)")

    def _credential_helper(self) -> Path | None:
        """The helper script (made once), when the package has a token and an https URL."""
        url, token_file = self.package.git_url, self.package.git_token_file
        if token_file is None or not url.startswith("https://"):
            return None
        with self._made:   # one directory, and no git started on a half-written helper
            helper = self._private_dir() / "credential-helper"
            if not helper.exists():
                host = urlsplit(url).netloc.rpartition("@")[2]
                helper.write_text(_HELPER.format(
                    host=shlex.quote(host), token_file=shlex.quote(str(token_file.absolute())),
                    user=shlex.quote(self.package.git_user)))
                helper.chmod(0o700)
        return helper

    def _private_dir(self) -> Path:
        if self._dir is None or not self._dir.is_dir():
            self._dir = Path(tempfile.mkdtemp(prefix="codecache-git-"))   # mode 0700
            weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        return self._dir

    # --- stalls -------------------------------------------------------------------------

    def _stall_seconds(self) -> int:
        """How long a transfer may send nothing before git gives up by itself: half the
        step's bound, so git's own message usually wins over the kill."""
        return max(1, math.ceil(self.timeout / 2))

    def _http_limits(self) -> list[tuple[str, str]]:
        return [("http.lowSpeedLimit", "1"), ("http.lowSpeedTime", str(self._stall_seconds()))]

    def _ssh_command(self, base: str | None) -> str:
        """``ssh`` (or the caller's ``GIT_SSH_COMMAND``: known_hosts, a jump host...) never
        asking anything, with the package's key only. ssh takes the first value given
        for an option, so the caller's choices win over these defaults."""
        parts = [base or "ssh", "-o", "BatchMode=yes", "-o",
                 f"ConnectTimeout={self._stall_seconds()}",
                 "-o", "ControlMaster=no", "-o", "ControlPath=none"]
        if self.package.git_ssh_key is not None:
            parts += ["-i", shlex.quote(str(self.package.git_ssh_key)),
                      "-o", "IdentitiesOnly=yes"]
        return " ".join(parts)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` and every process of its group (it leads one: ``start_new_session``).

    Called while ``process`` is not yet reaped, so its id (the group's) cannot be reused.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _summary(stderr: str) -> str:
    """git's (and ssh's) own reason on one line: every line but git's boilerplate."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if not _BOILERPLATE.match(line)] or lines
    text = "; ".join(said) or "failed without a message"
    return text if len(text) <= _MESSAGE_MAX else text[:_MESSAGE_MAX - 3] + "..."
