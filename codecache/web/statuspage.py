"""The human status page at ``/``: packages, channels, releases, index serial, age, lag.

Pure rendering from values the server already holds; every value is HTML-escaped.
"""

from __future__ import annotations

import time
from html import escape

from codecache.index import Index, format_time
from codecache.names import version_key

_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
          ".bad{color:#b00}code{font-size:.9em}")


def render_status_page(index: Index | None, readiness: dict[str, object],
                       blob_problems: dict[str, str]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>codecache</title>"
             f"<style>{_STYLE}</style></head><body><h1>codecache</h1>"]
    status = escape(str(readiness.get("status", "")))
    role = escape(str(readiness.get("role", "")))
    parts.append(f"<p>status: <b>{status}</b>; role: <b>{role}</b></p>")
    replica = readiness.get("replica")
    if isinstance(replica, dict):
        error = replica.get("last_error")
        parts.append(f"<p>upstream <code>{escape(str(replica.get('upstream')))}</code>, "
                     f"serial {escape(str(replica.get('serial')))}"
                     + (f"; <span class='bad'>last pull: {escape(str(error))}</span>"
                        if error else "") + "</p>")
    if index is None:
        parts.append("<p class='bad'>no verified index yet</p></body></html>")
        return "".join(parts)
    age = int(time.time() - index.generated)
    parts.append(f"<p>index serial <b>{index.serial}</b>, signed {format_time(index.generated)}"
                 f" ({age}s ago), expires {format_time(index.expires)}; last confirmed "
                 f"{readiness.get('seconds_since_confirmed')}s ago</p>")
    for sha256, reason in sorted(blob_problems.items()):
        parts.append(f"<p class='bad'>blob <code>{sha256}</code>: {escape(reason)}</p>")
    for name in sorted(index.packages):
        pkg = index.packages[name]
        parts.append(f"<h2>{escape(name)}</h2><table><tr><th>channel</th><th>version</th>"
                     "<th>moved</th><th>URL</th></tr>")
        for channel in sorted(pkg.channels):
            ch = pkg.channels[channel]
            url = f"/{escape(name)}/{escape(channel)}.tar.gz"
            parts.append(f"<tr><td>{escape(channel)}</td><td>{escape(ch.version)}</td>"
                         f"<td>{format_time(ch.moved_at)}</td><td><a href='{url}'>{url}</a>"
                         "</td></tr>")
        parts.append("</table><table><tr><th>release</th><th>sha256</th><th>size</th>"
                     "<th>svn</th><th>date</th><th></th></tr>")
        for version in sorted(pkg.releases, key=version_key, reverse=True):
            r = pkg.releases[version]
            url = f"/{escape(name)}/releases/{escape(version)}.tar.gz"
            yanked = f"<span class='bad'>yanked: {escape(r.yanked_reason or '')}</span>" \
                if r.yanked else ""
            parts.append(f"<tr><td><a href='{url}'>{escape(version)}</a></td>"
                         f"<td><code>{r.sha256}</code></td><td>{r.size}</td>"
                         f"<td>{escape(r.svn_url)}@{r.revision}</td>"
                         f"<td>{format_time(r.date)}</td><td>{yanked}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)
