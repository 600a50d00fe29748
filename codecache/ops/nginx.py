"""The front tier's nginx.conf, rendered from the template ``nginx/codecache.conf``.

The template is the shipped front-tier config itself: only its lines marked ``cluster:``
(replicas, listen addresses, cache directory, access log) are rewritten, and a main/events/
http frame is put around it, so what the cluster, the tests and the VRRP front nodes run is
what operators copy. As root, nginx's workers run as ``nobody``, which cannot enter a 0700
directory such as a pytest tmp dir; the cache and temp directories then live in a private
``mkdtemp`` directory owned by that user, which the caller removes (see nginx/README.md).
The site block (which site a request is for, from the replicas' ``[[redirect.sites]]``) is
``nginx_sites``'s; TLS lines are uncommented and filled when a certificate is given.
``scripts/cluster render-nginx`` is the command line of ``render_nginx``.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import resource
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from codecache.core.config import RedirectSite
from codecache.core.errors import ConfigError, Refused
from codecache.ops.nginx_sites import BEGIN, END, render_sites

#: nginx/codecache.conf of the source checkout this package runs from: the cluster, the tests
#: and the VRRP front nodes render it. A wheel ships no nginx/ directory: pass ``template``.
TEMPLATE = Path(__file__).resolve().parents[2] / "nginx" / "codecache.conf"

@dataclass(frozen=True)
class WorkerUser:
    """The user nginx's workers run as when its master runs as root."""

    name: str
    group: str
    uid: int
    gid: int


def worker_user() -> WorkerUser | None:
    """``nobody`` when running as root (nginx drops its workers' privileges), else None."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return WorkerUser(entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name, entry.pw_uid,
                      entry.pw_gid)


def upstream_address(url: str) -> str:
    """``http://127.0.0.1:8081`` → ``127.0.0.1:8081`` (an nginx ``server`` address).

    Raises:
        ConfigError: not an http:// URL with a host and a port.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"replica URL must be http://HOST:PORT, got {url!r}")
    return parts.netloc


_TOKEN = re.compile(r"[^\s;{}#'\"]+")


def _checked(value: str, what: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ConfigError(f"{what}: not a plain nginx token: {value!r}")
    return value


def _replacer(value: str) -> Callable[[re.Match[str]], str]:
    return lambda m: f"{m[1]}{value}{m[2]}"


@dataclass(frozen=True)
class Tls:
    """TLS termination at the front tier: https listen addresses, certificate, key (PEM)."""

    listens: tuple[str, ...]
    cert: Path
    key: Path


# Marked lines the renderer rewrites (pattern: the value replaces what is between the two
# groups). Each kind's first marked line stands for all of that kind: one line per value.
_PATTERNS = {"listen": r"(listen\s+)\S+?(;)", "replica": r"(server\s+)\S+(\s)",
             "cache": r"(proxy_cache_path\s+)\S+(\s)", "log": r"(access_log\s+)\S+(\s)",
             "tls_listen": r"(listen\s+)\S+(\s)", "tls_cert": r"(ssl_certificate\s+)\S+(;)",
             "tls_key": r"(ssl_certificate_key\s+)\S+(;)"}
_TLS_KINDS = {"tls_listen", "tls_cert", "tls_key", "tls"}   # commented out unless TLS is on
_MARKER = re.compile(r"#\s*cluster:(\w+)\s*$")


def render_front(template: str, *, listens: Sequence[str], replicas: Sequence[str],
                 cache_dir: Path, access_log: Path, source: str = "template",
                 tls: Tls | None = None, sites: Sequence[RedirectSite] = ()) -> str:
    """The front-tier config of ``template`` (the text of ``source``) with its ``cluster:``
    lines rewritten: ``tls`` uncomments and fills the TLS lines (else they stay comments),
    ``sites`` (the replicas' ``[[redirect.sites]]``) fills the site block.

    Raises:
        ConfigError: no listen address or replica, or an address nginx cannot take.
        Refused: the template lacks a marked line, or has one it cannot rewrite.
    """
    if not listens or not replicas:
        raise ConfigError("need at least one --listen and one --replica")
    values: dict[str, list[str]] = {
        "listen": [_checked(a, "listen address") for a in listens],
        "replica": [_checked(upstream_address(u), "replica") for u in replicas],
        "cache": [_checked(str(cache_dir), "cache directory")],
        "log": [_checked(str(access_log), "access log")],
    }
    if tls is not None:
        if not tls.listens:
            raise ConfigError("TLS needs at least one https listen address")
        values["tls_listen"] = [_checked(a, "https listen address") for a in tls.listens]
        values["tls_cert"] = [_checked(str(tls.cert), "TLS certificate")]
        values["tls_key"] = [_checked(str(tls.key), "TLS key")]
    out: list[str] = []
    seen: set[str] = set()
    for line in _with_sites(template.splitlines(), sites, source):
        match = _MARKER.search(line)
        if match is None:
            out.append(line)
            continue
        kind = match.group(1)
        if kind not in _PATTERNS and kind != "tls":
            raise Refused(f"{source}: unknown marker cluster:{kind}")
        first = kind not in seen
        seen.add(kind)
        if kind in _TLS_KINDS and tls is None:
            out.append(line)          # stays a comment: the shipped example
            continue
        body = line[:match.start()].rstrip()
        if kind in _TLS_KINDS:
            body = re.sub(r"^(\s*)#\s?", r"\1", body)     # uncommented
        if kind == "tls":
            out.append(body)
        elif first:                   # the first marked line of a kind stands for all of them
            for value in values[kind]:
                new, count = re.subn(_PATTERNS[kind], _replacer(value), body, count=1)
                if count != 1:
                    raise Refused(f"{source}: cannot rewrite cluster:{kind} line {line!r}")
                out.append(new)
    missing = ({"listen", "replica", "cache", "log"} | (_TLS_KINDS if tls else set())) - seen
    if missing:
        raise Refused(f"{source}: no cluster:{sorted(missing)[0]} line")
    return "\n".join(out) + "\n"


def _with_sites(lines: list[str], sites: Sequence[RedirectSite], source: str) -> list[str]:
    """``lines`` with the block between the site markers rendered from ``sites``.

    Raises:
        Refused: the template lacks the markers.
    """
    stripped = [line.strip() for line in lines]
    if stripped.count(BEGIN) != 1 or stripped.count(END) != 1 \
            or stripped.index(BEGIN) > stripped.index(END):
        raise Refused(f"{source}: no '{BEGIN}' ... '{END}' block")
    begin, end = stripped.index(BEGIN), stripped.index(END)
    return [*lines[:begin + 1], *render_sites(sites), *lines[end:]]


def render_main(front: str, *, prefix: Path, cache_dir: Path, user: WorkerUser | None) -> str:
    """A complete nginx.conf (main, events, http) around the front-tier config."""
    temp = cache_dir / "temp"
    nofile, connections = nginx_limits()
    user_line = f"user {user.name} {user.group};" if user else "# not root: workers run as me"
    front_text = "\n".join(f"    {line}" if line else "" for line in front.splitlines())
    return f"""\
# Generated by scripts/cluster render-nginx from nginx/codecache.conf; run with
#   nginx -p {prefix} -c <this file>
{user_line}
worker_processes auto;
# The location regexes (nginx/codecache.conf) run on every request: compile them to machine code.
pcre_jit on;
# Room for 10,000 pilots held open at once (scripts/bench holds 10,000 slow downloads): each
# proxied request needs a client and an upstream connection, and one worker may take them all.
# Capped at the open-files hard limit nginx inherits (a failed setrlimit is an [alert]).
worker_rlimit_nofile {nofile};
pid {prefix / "nginx.pid"};
error_log {prefix / "logs" / "error.log"} warn;

events {{
    worker_connections {connections};
}}

http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    # Temp files are written by the workers: keep them beside the cache (see nginx/README.md).
    client_body_temp_path {temp / "client_body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};

{front_text}
}}
"""


def nginx_limits() -> tuple[int, int]:
    """(worker_rlimit_nofile, worker_connections): 65,536 and 24,576, or less where the
    open-files hard limit that nginx inherits from us is lower."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    return nofile, min(24576, nofile)


def _reachable_by(path: Path, user: WorkerUser) -> bool:
    """Whether ``user`` can search every directory from / down to ``path``."""
    groups = {user.gid} | {g.gr_gid for g in grp.getgrall() if user.name in g.gr_mem}
    for directory in [path, *path.parents]:
        info = directory.stat()
        if info.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def prepare_cache_dir(prefix: Path, cache_dir: Path | None,
                      user: WorkerUser | None) -> tuple[Path, bool]:
    """The cache directory nginx's workers write (created); True if it is a private mkdtemp.

    Not root: ``PREFIX/cache`` unless given. Root: a given directory must be reachable by the
    worker user; by default a fresh ``mkdtemp`` in the system temp directory, owned by it.

    Raises:
        Refused: the worker user could not reach the directory.
    """
    private = False
    if cache_dir is None:
        if user is None:
            cache_dir = prefix / "cache"
        else:
            cache_dir = Path(tempfile.mkdtemp(prefix="codecache-nginx-"))
            private = True
    cache_dir = cache_dir.resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("temp", *(f"temp/{t}" for t in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                 "scgi"))):
        (cache_dir / sub).mkdir(exist_ok=True)
    if user is not None:
        for directory in [cache_dir, *cache_dir.rglob("*")]:
            os.chown(directory, user.uid, user.gid)
        if not _reachable_by(cache_dir, user):
            if private:
                shutil.rmtree(cache_dir, ignore_errors=True)
            raise Refused(f"nginx workers (user {user.name}) cannot reach {cache_dir}; "
                               f"give --cache-dir in a directory they can enter")
    return cache_dir, private


@dataclass(frozen=True)
class Rendered:
    conf: Path
    prefix: Path
    cache_dir: Path
    private_cache_dir: bool   # a mkdtemp the caller removes when nginx is gone


def render_nginx(out: Path, prefix: Path, listens: Sequence[str], replicas: Sequence[str],
                 cache_dir: Path | None = None, *, template: Path = TEMPLATE,
                 tls: Tls | None = None, sites: Sequence[RedirectSite] = ()) -> Rendered:
    """Write a complete nginx.conf for ``nginx -p PREFIX -c OUT``; create its directories.
    ``tls`` and ``sites``: as ``render_front``.

    Raises:
        ConfigError: bad addresses; no template file.
        Refused: unreachable cache directory; a template without its ``cluster:`` lines.
    """
    try:
        text = template.read_text()
    except OSError as err:
        raise ConfigError(f"nginx template {template}: {err.strerror}") from None
    prefix = prefix.resolve()
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    user = worker_user()
    directory, private = prepare_cache_dir(prefix, cache_dir, user)
    try:
        front = render_front(text, listens=listens, replicas=replicas,
                             cache_dir=directory / "cache",
                             access_log=prefix / "logs" / "access.log", source=str(template),
                             tls=tls, sites=sites)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_main(front, prefix=prefix, cache_dir=directory, user=user))
    except BaseException:
        if private:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return Rendered(out.resolve(), prefix, directory, private)
