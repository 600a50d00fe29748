"""The human status page at ``/``: packages, channels, releases, index serial, age, lag.

Pure rendering from values the server already holds (``now`` is passed in); every value
from the index or the readiness facts is HTML-escaped. One self-contained document: inline
CSS, no scripts, no external assets, a viewport meta so it reads on a phone.

Scale: a package may hold thousands of releases. The page lists the newest
``RELEASES_SHOWN`` by commit date (plus any older release a channel points to) and says how
many there are; the full list is ``/index.json``. Picking them is one linear pass with an
integer key (``heapq.nlargest``); the natural version order is computed for the few shown.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from html import escape

from codecache.core.index import Index, Package, Release, format_time
from codecache.core.names import version_key
from codecache.store.state import RefusedTag

RELEASES_SHOWN = 20

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:0 auto;padding:.5em;max-width:70em;"
    "line-height:1.4}"
    "h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.2em;margin:1.2em 0 .3em}"
    "h3{font-size:1em;margin:.8em 0 .2em}"
    ".scroll{overflow-x:auto}table{border-collapse:collapse;margin:.3em 0}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}"
    "th{background:#f2f2f2}code{font-size:.85em;word-break:break-all}"
    ".facts th{white-space:nowrap}.bad{color:#b00;font-weight:bold}.ok{color:#070}"
    ".note{color:#555;font-size:.9em}.hash td{border-top:0;"
    "padding-top:0;font-size:.9em}"
)


def render_status_page(index: Index | None, readiness: Mapping[str, object],
                       blob_problems: Mapping[str, str], *, now: float,
                       releases_shown: int = RELEASES_SHOWN,
                       refused: Sequence[RefusedTag] = ()) -> str:
    """The status page as one HTML document (``readiness``: the ``/readyz`` body;
    ``refused``: the tags an origin's sync did not publish, from its ``state.json``)."""
    role = _text(readiness.get("role") or "")
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>codecache {role}</title><style>{_STYLE}</style></head><body>"
             "<h1>codecache</h1>"]
    parts.append(_facts(index, readiness, now))
    for sha256, reason in sorted(blob_problems.items()):
        parts.append(f"<p class='bad'>blob <code>{escape(sha256)}</code>: "
                     f"{escape(reason)}</p>")
    if refused:
        parts.append(_refused(refused))
    if index is None:
        parts.append("<p class='bad'>no verified index yet</p>")
    else:
        names = sorted(index.packages)
        if len(names) > 1:
            links = ", ".join(f"<a href='#pkg-{escape(n)}'>{escape(n)}</a>" for n in names)
            parts.append(f"<p>packages: {links}</p>")
        for name in names:
            parts.append(_package(name, index.packages[name], releases_shown))
    parts.append("<p class='note'>Machine-readable: <a href='/index.json'>/index.json</a>, "
                 "<a href='/history.json'>/history.json</a>, <a href='/readyz'>/readyz</a>, "
                 "<a href='/metrics'>/metrics</a>. "
                 f"Rendered {format_time(int(now))}.</p></body></html>")
    return "".join(parts)


def ago(seconds: float) -> str:
    """A short human duration: ``42s``, ``5m 03s``, ``3h 20m``, ``2d 4h``."""
    s = int(seconds)
    if s < 0:
        return f"-{ago(-s)}"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _when(seconds: int) -> str:
    """RFC 3339 that may wrap before the time on a narrow screen (table cells)."""
    return format_time(seconds).replace("T", "<wbr>T", 1)


def _text(value: object) -> str:
    return escape(str(value))


def _row(label: str, value: str) -> str:
    return f"<tr><th>{label}</th><td>{value}</td></tr>"


def _facts(index: Index | None, readiness: Mapping[str, object], now: float) -> str:
    status = str(readiness.get("status", ""))
    css = "ok" if status == "ok" else "bad"
    rows = [_row("status", f"<span class='{css}'>{escape(status)}</span>"),
            _row("role", f"<b>{_text(readiness.get('role') or '?')}</b>")]
    if index is not None:
        expiry = index.expires - now
        expires = (f"{format_time(index.expires)} (in {ago(expiry)})" if expiry > 0 else
                   f"<span class='bad'>{format_time(index.expires)} (expired "
                   f"{ago(-expiry)} ago)</span>")
        rows += [_row("index serial", f"<b>{index.serial}</b>"),
                 _row("signed", f"{format_time(index.generated)} "
                                f"({ago(now - index.generated)} ago)"),
                 _row("expires", expires)]
    since = readiness.get("seconds_since_confirmed")
    replica = readiness.get("replica")
    if isinstance(since, int | float):
        # On a replica this is its lag: since a pull last confirmed the index is current.
        label = "lag" if isinstance(replica, Mapping) else "last confirmed"
        rows.append(_row(label, f"{ago(since)} ago"))
    upstream = readiness.get("upstream")
    if isinstance(replica, Mapping):
        upstream = replica.get("upstream", upstream)
    if isinstance(replica, Mapping) or "upstream" in readiness:
        rows.append(_row("upstream", f"<code>{_text(upstream or 'none yet')}</code>"))
    if isinstance(replica, Mapping):
        last_pull = replica.get("last_pull")
        if isinstance(last_pull, int | float) and last_pull > 0:
            rows.append(_row("last pull", f"{format_time(int(last_pull))} "
                                          f"({ago(now - last_pull)} ago)"))
        error = replica.get("last_error")
        if error:
            rows.append(_row("last pull error", f"<span class='bad'>{_text(error)}</span>"))
        refusals = replica.get("refusals")
        if isinstance(refusals, Mapping) and refusals:
            text = ", ".join(f"{escape(str(k))}: {escape(str(v))}"
                             for k, v in sorted(refusals.items()))
            rows.append(_row("refused indexes", text))
    return f"<div class='scroll'><table class='facts'>{''.join(rows)}</table></div>"


def _refused(refused: Sequence[RefusedTag]) -> str:
    rows = "".join(f"<tr><td>{escape(r.package)}</td><td>{escape(r.version)}</td>"
                   f"<td>{_when(r.refused_at)}</td><td><code>{escape(r.source)}</code><br>"
                   f"<span class='bad'>{escape(r.reason)}</span></td></tr>" for r in refused)
    return ("<h2>tags not published</h2><p class='note'>Their trees cannot be published as "
            "they are; tried again every sync until the tag names a tree that builds.</p>"
            "<div class='scroll'><table class='refused'><tr><th>package</th><th>tag</th>"
            f"<th>since</th><th>source, reason</th></tr>{rows}</table></div>")


def _shown(package: Package, limit: int) -> tuple[list[Release], int]:
    """The releases to list, newest version first, and how many are hidden."""
    releases = package.releases
    newest = heapq.nlargest(limit, releases.values(), key=lambda r: r.date)
    chosen = {r.version: r for r in newest}
    for channel in package.channels.values():   # a channel's target is always listed
        target = releases.get(channel.version)
        if target is not None:
            chosen[target.version] = target
    shown = sorted(chosen.values(), key=lambda r: version_key(r.version), reverse=True)
    return shown, len(releases) - len(shown)


def _package(name: str, package: Package, limit: int) -> str:
    pkg = escape(name)
    parts = [f"<h2 id='pkg-{pkg}'>{pkg}</h2><h3>channels</h3>"]
    if package.channels:
        parts.append("<div class='scroll'><table><tr><th>channel</th><th>version</th>"
                     "<th>moved</th></tr>")
        for channel in sorted(package.channels):
            ch = package.channels[channel]
            url = f"/{pkg}/{escape(channel)}.tar.gz"
            parts.append(f"<tr><td><a href='{url}'><b>{escape(channel)}</b></a></td>"
                         f"<td class='channel-version'>{escape(ch.version)}</td>"
                         f"<td>{_when(ch.moved_at)}</td></tr>")
        parts.append("</table></div>")
    else:
        parts.append("<p class='note'>no channels</p>")
    shown, hidden = _shown(package, limit)
    yanked = sum(1 for r in package.releases.values() if r.yanked)
    total = len(package.releases)
    summary = f"{total} release{'s' if total != 1 else ''}"
    if yanked:
        summary += f", {yanked} yanked"
    if hidden:
        summary += (f"; the newest {len(shown)} shown (by commit date, with every channel's "
                    f"target), {hidden} more in <a href='/index.json'>/index.json</a>")
    parts.append(f"<h3>releases</h3><p class='note releases-count'>{summary}</p>")
    if shown:
        # Two rows per release: the hash and the svn URL get the full width (a phone).
        parts.append("<div class='scroll'><table><tr><th>version</th><th>committed</th>"
                     "<th>bytes</th></tr>")
        for r in shown:
            url = f"/{pkg}/releases/{escape(r.version)}.tar.gz"
            yanked_note = (f"<br><span class='bad'>yanked: {escape(r.yanked_reason or '')}"
                           "</span>" if r.yanked else "")
            parts.append(f"<tr><td><a href='{url}'>{escape(r.version)}</a>{yanked_note}</td>"
                         f"<td>{_when(r.date)}</td><td>{r.size}</td></tr>"
                         f"<tr class='hash'><td colspan='3'>sha256 <code>{escape(r.sha256)}"
                         f"</code><br>{r.source.kind} <code>{escape(r.source.url)}@"
                         f"{escape(r.source.id)}</code>"
                         "</td></tr>")
        parts.append("</table></div>")
    return "".join(parts)
