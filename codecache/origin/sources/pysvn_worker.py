"""Subversion through pysvn (libsvn in-process), in a worker process of its own.

``codecache.origin.sources.pysvn`` starts this file as a script with a Python that has
pysvn (Debian's ``python3-svn`` is built for the system Python, which need not be the one
codecache runs in), so it imports nothing of codecache: only the standard library and
pysvn. One worker serves many calls (no process start and no library set-up per tag) and
keeps libsvn out of the codecache process: a crash or a hang in it ends or stalls this
process only, which the parent then kills and starts again.

Protocol: one JSON object per line. The parent's first line is the set-up
``{"config_dir", "username", "password"}`` (the password travels on this pipe: never on a
command line or in the environment); the worker answers ``{"ok": true, "svn_version"}``.
Then requests ``{"op": "list", "url"}`` -> ``{"ok": true, "entries": [[name, revision,
author, time], ...]}`` (directories only, ``time`` in seconds since the epoch) and
``{"op": "export", "url", "revision", "destination", "progress"}`` -> ``{"ok": true}``; a
failure is ``{"ok": false, "message", "codes"}`` with libsvn's error codes. With
``"progress": true`` an export first sends ``{"listed": [path, ...]}`` (every path it will
write, relative to ``destination``, ``""`` the root) and then ``{"exported": [path, ...]}``
lines as files and directories are complete on disk (libsvn notifies a file once it is
renamed into place), so the parent can archive behind the export. Answers go to the
original stdout; fd 1 is pointed at stderr, so nothing libsvn prints can corrupt them.

The process runs with ``TZ=UTC`` (set by the parent, and here before libsvn loads), so
keyword expansion (``$Date$``) never depends on the parent's time zone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def main() -> int:
    os.environ["TZ"] = "UTC"
    time.tzset()
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    import pysvn  # type: ignore[import-not-found,unused-ignore]  # after TZ is set

    setup = json.loads(sys.stdin.readline())
    client = pysvn.Client(setup["config_dir"])
    client.exception_style = 1
    client.set_interactive(False)
    client.set_auth_cache(False)
    client.set_store_passwords(False)
    username, password = setup.get("username"), setup.get("password")
    attempts = [0]

    def login(realm: str, default: str, may_save: bool) -> tuple[bool, str, str, bool]:
        # Called again after a refused password: answer once per request, then give up.
        attempts[0] += 1
        if attempts[0] > 1 or (username is None and password is None):
            return False, "", "", False
        return True, username or default, password or "", False

    client.callback_get_login = login
    client.callback_ssl_server_trust_prompt = lambda trust: (False, 0, False)
    _answer(answers, {"ok": True, "svn_version": list(pysvn.svn_version[:3])})
    for line in sys.stdin:
        request = json.loads(line)
        attempts[0] = 0
        try:
            answer = _handle(pysvn, client, request, answers)
        except pysvn.ClientError as err:
            details = err.args[1] if len(err.args) > 1 else []
            answer = {"ok": False, "message": " ".join(str(err.args[0]).split()),
                      "codes": [code for _, code in details]}
        _answer(answers, answer)
    return 0


def _handle(pysvn: Any, client: Any, request: dict[str, Any], out: Any) -> dict[str, Any]:
    if request["op"] == "export":
        revision = pysvn.Revision(pysvn.opt_revision_kind.number, request["revision"])
        notifier = None
        if request.get("progress") and _list_tree(pysvn, client, request["url"], revision, out):
            notifier = client.callback_notify = _Notifier(pysvn, request["destination"], out)
        try:
            client.export(request["url"], request["destination"], force=False,
                          revision=revision, peg_revision=revision, native_eol="LF",
                          ignore_externals=True)
        finally:
            if notifier is not None:
                notifier.flush()
                client.callback_notify = None
        return {"ok": True}
    if request["op"] == "list":
        url = request["url"].rstrip("/")
        head = pysvn.Revision(pysvn.opt_revision_kind.head)
        entries = []
        for entry, _lock in client.list(url, peg_revision=head, revision=head, recurse=False,
                                         dirent_fields=pysvn.SVN_DIRENT_ALL):
            if entry.path.rstrip("/") == url or entry.kind != pysvn.node_kind.dir:
                continue  # the listed directory itself comes first
            entries.append([entry.repos_path.rpartition("/")[2], entry.created_rev.number,
                            entry.last_author or "", entry.time])
        return {"ok": True, "entries": entries}
    return {"ok": False, "message": f"unknown request {request['op']!r}", "codes": []}


def _list_tree(pysvn: Any, client: Any, url: str, revision: Any, out: Any) -> bool:
    """Send ``{"listed": [...]}``: every path below ``url@revision``, relative to it.

    False (nothing sent) where the listing fails: the export then runs without progress
    and fails with its own error, which says more (over svn://, listing a revision the
    repository does not have is "Malformed network data"; the export says "No such
    revision").
    """
    base = None
    paths = []
    try:
        listing = client.list(url, peg_revision=revision, revision=revision, recurse=True,
                              dirent_fields=pysvn.SVN_DIRENT_KIND)
    except pysvn.ClientError:
        return False
    for entry, _lock in listing:
        if base is None:  # the listed directory itself comes first
            base = entry.repos_path.rstrip("/") + "/"
            paths.append("")
            continue
        paths.append(entry.repos_path[len(base):])
    _answer(out, {"listed": paths})
    return True


class _Notifier:
    """libsvn's notification callback during an export: completed paths, in batches (one
    line per path would cost the parent a JSON line each), flushed at least every 5 ms."""

    def __init__(self, pysvn: Any, destination: str, out: Any) -> None:
        self._add = pysvn.wc_notify_action.update_add
        self._prefix = destination.rstrip("/") + "/"
        self._root = destination.rstrip("/")
        self._out = out
        self._pending: list[str] = []
        self._sent = time.monotonic()

    def __call__(self, event: dict[str, Any]) -> None:
        if event["action"] != self._add:
            return
        path = event["path"]
        self._pending.append("" if path == self._root else path.removeprefix(self._prefix))
        if len(self._pending) >= 64 or time.monotonic() - self._sent >= 0.005:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            _answer(self._out, {"exported": self._pending})
            self._pending = []
        self._sent = time.monotonic()


def _answer(out: Any, answer: dict[str, Any]) -> None:
    out.write(json.dumps(answer) + "\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
