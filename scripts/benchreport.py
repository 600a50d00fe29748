"""The report of scripts/bench: benchmark.json (everything measured), benchmark.md (medians,
ratios to nginx, targets, machine, exact commands) and benchmark.png (matplotlib, installed
for the bench only: ``pip install -e '.[bench]'``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Issue 7's targets: ratio to nginx static (same run, medians), replica direct / via the VIP.
TARGETS = {"get_3mb": (0.95, 0.95), "get_200kb": (0.80, 0.90), "304_100": (0.50, 0.90),
           "304_1000": (0.45, 0.90)}
RSS_TARGET_MB = 150
SYNC_TARGET = 1.3
MB = 1e6


KEPT = "<!-- Sections below are written by hand; scripts/bench keeps them when it rewrites " \
    "this file. -->"
GENERATED = ("Targets", "Throughput (wrk)", "Publish burst", "Sync path: publishing a new tag",
             "Git: a first sync and one new tag",
             "Propagation of a publish", "Commands", "An edge's hit", "An edge's disk")


def write(report: dict[str, Any], out: Path) -> list[Path]:
    """Write the three files into ``out``; return their paths. Hand-written sections of an
    existing benchmark.md (after the KEPT marker, or any section this script does not
    write) are kept at its end."""
    report = {**report, "verdicts": verdicts(report)}
    paths = [out / "benchmark.json", out / "benchmark.md", out / "benchmark.png"]
    kept = hand_written(paths[1].read_text()) if paths[1].exists() else ""
    paths[0].write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    text = markdown(report, paths[2].name)
    paths[1].write_text(text + (f"\n{KEPT}\n\n{kept.strip()}\n" if kept.strip() else ""))
    plot(report, paths[2])
    return paths


def hand_written(text: str) -> str:
    """The sections of a previous report that scripts/bench did not write."""
    if KEPT in text:
        return text.split(KEPT, 1)[1]
    sections = text.split("\n## ")[1:]
    return "\n".join(f"## {section.rstrip()}\n" for section in sections
                     if not section.startswith(GENERATED)
                     and "slow pilots through the VIP" not in section.split("\n", 1)[0])


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue: what was measured, and whether it is met."""
    rows: list[dict[str, Any]] = []
    for case, (direct, vip) in TARGETS.items():
        targets = report["throughput"][case]["targets"]
        for who, goal in (("replica", direct), ("vip", vip)):
            ratio = targets[who]["ratio"]
            rows.append({"what": f"{report['throughput'][case]['label']}: "
                                 f"{'replica direct' if who == 'replica' else 'VIP'} / nginx",
                         "target": f">= {goal:.2f}", "measured": f"{ratio:.2f}",
                         "met": ratio >= goal})
    slow = report["slow"]
    rows.append({"what": f"{slow['pilots']:,} slow pilot connections via the VIP: errors",
                 "target": "0", "measured": str(slow["errors"] + slow["corrupted"]),
                 "met": slow["errors"] + slow["corrupted"] == 0})
    rss = slow["replica_rss_peak_max"] / 2**20
    rows.append({"what": "replica RSS (all its processes) while they are held",
                 "target": f"<= {RSS_TARGET_MB} MB", "measured": f"{rss:.0f} MB",
                 "met": rss <= RSS_TARGET_MB})
    sync = report["sync_path"]
    rows.append({"what": f"publishing a new tag ({sync['files']:,} files, "
                         f"{sync['bytes'] / MB:.0f} MB) / svn export + tar czf",
                 "target": f"<= {SYNC_TARGET}x", "measured": f"{sync['ratio']:.2f}x",
                 "met": sync["ratio"] <= SYNC_TARGET})
    rows += _git_verdicts(report.get("git_sync"))
    burst = report["burst"]
    rows.append({"what": f"{burst['pilots']:,}-pilot burst within 1 s of a channel move: "
                         "failed", "target": "0",
                 "measured": str(burst["failed"] + burst["corrupted"]),
                 "met": burst["failed"] + burst["corrupted"] == 0})
    rows.append({"what": "  requests the replicas saw for that URL (median over rounds)",
                 "target": "a handful", "measured": f"{burst['median_upstream_total']:.0f}",
                 "met": burst["median_upstream_total"] <= 3 * (report["machine"]["replicas"]
                                                               + 3)})
    cold = report.get("cold_burst")
    if cold is not None:
        rows.append({"what": f"{cold['pilots']:,} site pilots within 1 s of a publish, "
                             "through the VIP to the edge: failed", "target": "0",
                     "measured": str(cold["failed"] + cold["corrupted"]),
                     "met": cold["failed"] + cold["corrupted"] == 0})
        ratio = cold["redirected_median_edge_upstream_over_blob"]
        rows.append({"what": "  blob bytes the edge read upstream / the blob (median)",
                     "target": "about 1", "measured": f"{ratio:.2f}", "met": ratio <= 1.5})
    return rows


def markdown(report: dict[str, Any], png: str) -> str:
    m = report["machine"]
    t = report["throughput"]
    sizes = report["sizes"]
    lines = [
        "# Benchmark: codecache against nginx, one machine, one run",
        "",
        f"Written by `{report['command']}` on {m['date']} in {report['seconds'] / 60:.1f} "
        "minutes" + (" (**--quick: small counts, not a measurement**)" if report["quick"]
                     else "") + ".",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux "
        f"{m['kernel']}; Python {m['python']}, {m['nginx']}, {m['wrk']}, svn {m['svn']}; "
        f"codecache {m['commit']}. Load average at the start: "
        f"{', '.join(str(x) for x in m['loadavg_at_start'])}. Everything on loopback: the "
        "load generators share the cores with the servers.",
        "",
        f"Servers, all in the same run: **nginx** serving the same tarballs as static files "
        f"with {m['replica_workers']} worker process(es) (as many as a replica has); **one "
        f"replica direct** (`codecache serve`, role replica, {m['replica_workers']} "
        f"worker(s)); the **VIP** of `scripts/cluster up --origin-config` (the origin, "
        f"{m['replicas']} replicas, nginx from nginx/codecache.conf). Tarballs: "
        f"{sizes['big'] / MB:.2f} MB and {sizes['small'] / 1000:.0f} KB, fetched by their "
        "channel URLs (what pilots fetch). wrk rounds alternate between the three servers; "
        "the figures are medians over rounds, ratios are to nginx in the same run.",
        "",
        f"![benchmark]({png})",
        "",
        "## Targets",
        "",
        "| what | target | measured | |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {v['what']} | {v['target']} | {v['measured']} | {_met(v['met'])} |"
              for v in report["verdicts"]]
    lines += ["", "## Throughput (wrk)", "",
              "| case | nginx req/s | replica req/s | replica / nginx | VIP req/s | "
              "VIP / nginx | p50 ms nginx / replica / VIP | p99 ms nginx / replica / VIP |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for case in t.values():
        n, r, v = (case["targets"][x] for x in ("nginx", "replica", "vip"))
        lines.append(
            f"| {case['label']} | {n['median_rps']:,.0f} | {r['median_rps']:,.0f} | "
            f"{r['ratio']:.2f} | {v['median_rps']:,.0f} | {v['ratio']:.2f} | "
            f"{n['median_p50_ms']:.2f} / {r['median_p50_ms']:.2f} / {v['median_p50_ms']:.2f} | "
            f"{n['median_p99_ms']:.2f} / {r['median_p99_ms']:.2f} / {v['median_p99_ms']:.2f} |")
    lines += ["", "CPU per request (user + system time of all the server's processes over a "
              "wrk run, divided by the requests it answered; medians): the steadier figure "
              "when wrk and other jobs share the cores. Its ratio is the throughput ratio on "
              "idle cores where both servers are CPU-bound. The VIP's figure is its nginx "
              "only (the replicas behind it see about one request per second per URL).", "",
              "| case | µs/request nginx / replica / VIP | replica / nginx | VIP / nginx |",
              "| --- | --- | --- | --- |"]
    for case in t.values():
        n, r, v = (case["targets"][x] for x in ("nginx", "replica", "vip"))
        lines.append(
            f"| {case['label']} | {n['median_cpu_us']:,.1f} / {r['median_cpu_us']:,.1f} / "
            f"{v['median_cpu_us']:,.1f} | {r['cpu_ratio']:.2f} | {v['cpu_ratio']:.2f} |")
    errors = {f"{c['label']} {who}": x["errors"] for c in t.values()
              for who, x in c["targets"].items() if x["errors"]}
    lines += ["", "wrk errors (socket errors + non-2xx/3xx): "
              + (", ".join(f"{k}: {v}" for k, v in errors.items()) if errors else "none") + ".",
              "", "Raw req/s per round: " + "; ".join(
                  f"{c['label']}: " + ", ".join(
                      f"{who} {[round(x) for x in r['rps']]}"
                      for who, r in c["targets"].items()) for c in t.values()) + "."]
    slow, burst, sync, prop = (report[k] for k in ("slow", "burst", "sync_path",
                                                   "propagation"))
    peak = slow["rss_peak"]
    lines += [
        "", "## 10,000 slow pilots through the VIP" if not report["quick"] else
        f"## {slow['pilots']:,} slow pilots through the VIP", "",
        f"`{slow['command']}`: {slow['pilots']:,} downloads of the "
        f"{sizes['small'] / 1000:.0f} KB channel tarball, each read at "
        f"{slow['slow_rate'] / 1000:.1f} KB/s, connecting over {slow['ramp_s']:.0f} s; "
        f"{slow['held_at_once']:,} were open at once. Errors {slow['errors']}, corrupted "
        f"bodies {slow['corrupted']}, statuses {slow['statuses']}; latency (whole slow "
        f"download) p50 {slow['latency_ms']['p50'] / 1000:.1f} s, max "
        f"{slow['latency_ms']['max'] / 1000:.1f} s.",
        "",
        "Peak RSS while they were held (each process with everything in its session, "
        "sampled every 0.25 s; before the run in brackets): " + ", ".join(
            f"{name} {peak[name] / 2**20:.0f} MB ({slow['rss_before'][name] / 2**20:.0f})"
            for name in sorted(peak)) + "; proportional set size (shared pages divided "
        "among the processes that share them), peak: " + ", ".join(
            f"{name} {slow.get('pss_peak', {}).get(name, 0) / 2**20:.0f} MB"
            for name in sorted(peak)) + ". The VIP's nginx holds the connections and serves "
        "the channel URL from its 1 s cache; the replicas see about one request per second "
        "for it.",
        "", "## Publish burst", "",
        f"The `burst` channel is moved (`codecache publish pilot VERSION --channel burst` on "
        f"the origin); as soon as every replica serves the new version, `{burst['command']}` "
        f"sends {burst['pilots']:,} pilots through the VIP at uniformly random times within "
        "1 s, one full download each, every body checked against its ETag. Requests for the "
        "channel URL counted in the replicas' access logs:",
        "", "| round | version | pilots | all done after | failed | corrupted | p50 ms | "
        "p99 ms | max ms | requests at the replicas |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n, r in enumerate(burst["rounds"], 1):
        lines.append(f"| {n} | {r['version']} | {r['requests']:,} | "
                     f"{r.get('seconds', 0):.1f} s | {r['failed']} | "
                     f"{r['corrupted']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['max_ms']:.0f} | {r['upstream_total']} "
                     f"({', '.join(str(x) for x in r['upstream_requests'].values())}) |")
    generator = burst.get("generator")
    capacity = (f" Measured right after, the same two generator processes drove "
                f"{generator['loadgen_rps']:,.0f} one-connection-per-pilot downloads/s "
                f"against the VIP in a closed loop (`{generator['loadgen_command']}`), where "
                f"wrk with `Connection: close` got {generator['wrk_close_rps']:,.0f}/s: a "
                f"burst of {burst['pilots']:,} within 1 s needs {burst['pilots']:,}/s, so "
                "when the first figure is below that, the p99 above is mostly the "
                "generator's own queue.") if generator else ""
    lines += ["", "Latency counts from each pilot's scheduled arrival (no coordinated "
              "omission), so it includes the load generator's own lag: two Python processes "
              "opening a new connection per pilot, on the same cores as the VIP and the "
              "replicas." + capacity + " The requests at the replicas are the VIP filling "
              "and revalidating its 1 s channel cache (one request fills it while the others "
              "wait, `proxy_cache_lock`)."]
    lines += [
        *_redirect_section(report.get("redirect")),
        *_edge_sections(report.get("edge_hit"), report.get("edge_disk")),
        *_cold_burst_section(report.get("cold_burst")),
        *_git_section(report.get("git_sync")),
        "", "## Sync path: publishing a new tag", "",
        f"A tree of {sync['files']:,} files, {sync['bytes'] / MB:.0f} MB, tagged anew each "
        "round (`svn copy` on the server), published into an origin store of its own (not the "
        "one the cluster serves). `codecache sync --once --package tree` (list the "
        "tags, export the new one at its pinned URL@REV, build the reproducible tarball, hash, "
        "sign, store, write and sign the index) against `svn export -q URL DIR && tar czf "
        "OUT -C . DIR` of the same tag, from the same svnserve; the order alternates:",
        "",
        f"publish: median {sync['publish_median_s']:.2f} s "
        f"({', '.join(f'{x:.2f}' for x in sync['publish_s'])}); svn export + tar czf: median "
        f"{sync['export_tar_median_s']:.2f} s "
        f"({', '.join(f'{x:.2f}' for x in sync['export_tar_s'])}); ratio "
        f"{sync['ratio']:.2f}x.",
        "", "## Propagation of a publish", "",
        f"`{prop['command']}` against the same cluster (replicas pull every 1 s, the VIP caches "
        "channel URLs 1 s): publish -> all "
        f"{prop['replicas']} replicas median {prop['all_replicas_seconds']['median']:.2f} s, "
        f"max {prop['all_replicas_seconds']['max']:.2f} s; -> VIP median "
        f"{prop['vip_seconds']['median']:.2f} s, max {prop['vip_seconds']['max']:.2f} s "
        f"({prop['rounds']} rounds). nginx keeps proxy-cache validity in whole seconds, so "
        "the VIP's \"1 s\" cache holds an entry 1 to 2 s; the VIP trails the replicas by up "
        "to 2 s (goals: replicas 2 s, VIP 3 s).",
        "", "## Commands", "",
        "```sh",
        report["command"] + "      # everything below, then this report",
        "# setup: scripts/sample-pilot create/populate, tags 2.0.0 (3 MB data), 2.1.0 and "
        "2.1.1 (200 KB), the tree package; codecache keygen; sync --once; publish big/small/burst",
        f"scripts/cluster up --dir DIR --origin-config ORIGIN.toml --replicas {m['replicas']}"
        + (f" --workers {m['replica_workers']}" if m["replica_workers"] != 1 else ""),
        f"nginx -c STATIC.conf   # worker_processes {m['replica_workers']}; sendfile, "
        "tcp_nopush, open_file_cache, etag; root = copies of the two blobs",
        *[c["command"] for c in t.values()],
        slow["command"].replace("VIP", "http://VIP"),
        burst["command"].replace("VIP", "http://VIP"),
        prop["command"],
        "```", "",
        "The full JSON of this run is [benchmark.json](benchmark.json).", ""]
    return "\n".join(lines)


def _git_verdicts(git: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 20's two targets: a first sync of many tags, one new tag."""
    if git is None:
        return []
    first, one = git["first_sync"], git["one_tag"]
    return [{"what": f"git: first sync of {git['tags']} tags ({git['files']:,} files) / git "
                     "clone + git archive piped to gzip for each",
             "target": f"<= {first['target']}x",
             "measured": f"{first['ratio']:.2f}x", "met": first["ratio"] <= first["target"]},
            {"what": "git: one new tag / git fetch + git archive piped to gzip",
             "target": f"<= {one['target']}x", "measured": f"{one['ratio']:.2f}x",
             "met": one["ratio"] <= one["target"]}]


def _git_section(git: dict[str, Any] | None) -> list[str]:
    """The git source against git's own clone/fetch + archive | gzip (scripts/benchgit.py)."""
    if git is None:
        return []
    lines = ["", "## Git: a first sync and one new tag", "",
             f"A repository of {git['files']:,} files, {git['commits']:,} commits and "
             f"{git['tags']} tags (`scripts/gitrepo.py`), served by {git['served_by']}. "
             "**First sync**: `codecache sync --once` into a fresh store (list, one shallow "
             "fetch of every tag's commit, each tree read by `git cat-file --batch` and "
             "archived, gzip level 9, signed, committed in batches) against `git clone "
             "--bare` + `git archive --format=tar TAG | gzip` (level 6) of every tag; "
             f"{git['first_sync']['rounds']} round(s), a round takes minutes. **One new "
             "tag**: a new commit and annotated tag upstream, then `codecache sync --once` "
             "into the store holding every earlier tag against `git fetch --tags` + `git "
             f"archive TAG | gzip` in that clone; {git['one_tag']['rounds']} rounds, the order "
             "alternating. Wall time and CPU (user + system of the commands and their "
             "children; the daemon's on neither side), medians" + _run_of(git) + ":", "",
             "| case | codecache s | baseline s | ratio | target | codecache CPU s | "
             "baseline CPU s | CPU ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, case in (("first sync", git["first_sync"]), ("one new tag", git["one_tag"])):
        lines.append(f"| {label} | {case['codecache_median_s']:.2f} | "
                     f"{case['baseline_median_s']:.2f} | {case['ratio']:.2f} | "
                     f"<= {case['target']} | {case['codecache_cpu_median_s']:.2f} | "
                     f"{case['baseline_cpu_median_s']:.2f} | {case['cpu_ratio']:.2f} |")
    lines += ["", f"Tarballs: median {git['tarball_median_bytes'] / MB:.2f} MB (level 9) vs "
              f"{git['baseline_tarball_median_bytes'] / MB:.2f} MB (`gzip`, level 6). Raw "
              "seconds per round: " + "; ".join(
                  f"{label} codecache {[round(x, 2) for x in case['codecache_s']]}, baseline "
                  f"{[round(x, 2) for x in case['baseline_s']]}"
                  for label, case in (("first sync", git["first_sync"]),
                                      ("one new tag", git["one_tag"]))) + "."]
    return lines


def _run_of(section: dict[str, Any]) -> str:
    """Where a section was measured alone (``--only ... --out``): its own run."""
    run = section.get("run")
    if run is None:
        return ""
    return (f". Measured apart from the rest of this report: `{run['command']}` on "
            f"{run['date']}, codecache {run['commit']}, {run['git']}, load average "
            f"{', '.join(str(x) for x in run['loadavg_at_start'])} at its start and "
            f"{', '.join(str(x) for x in run['loadavg_at_end'])} at its end")


def _redirect_section(cost: dict[str, Any] | None) -> list[str]:
    """A redirect's cost: the 302 of a node with sites against a direct client's 304."""
    if cost is None:
        return []
    lines = ["", "## A redirect's cost", "",
             f"A node with `[[redirect.sites]]` ({cost['workers']} worker(s)) answers a site's "
             "client `302` to the site's edge (a real `role = \"edge\"` node, probed every "
             "second), on the handler's path; a direct client's revalidation is a `304` from "
             f"the fast path. wrk, {cost['connections']} connections, {cost['seconds']} s, "
             f"{cost['rounds']} round(s), medians; the site is chosen with `?site=` (wrk "
             "cannot pick its source address on loopback; the same path through the server as "
             "a client in a site network):", "",
             "| case | req/s | p99 ms | µs/request (CPU) | errors |",
             "| --- | --- | --- | --- | --- |"]
    for case in cost["cases"].values():
        lines.append(f"| {case['label']} | {case['median_rps']:,.0f} | "
                     f"{case['median_p99_ms']:.2f} | {case['median_cpu_us']:,.1f} | "
                     f"{case['errors']} |")
    lines += ["", f"302 / 304: {cost['rps_302_over_304']:.2f} in requests/s, "
              f"{cost['cpu_302_over_304']:.2f}x the CPU per request. A direct client's 304 "
              f"at the node with sites / without: {cost['rps_sites_over_no_sites']:.2f} "
              "(the site check the fast path makes per request)."]
    vip = cost.get("vip")
    if vip is not None:
        lines += ["", "Through the VIP (its nginx keeps a site's answer 1 s, the 302 included, "
                  "apart from direct clients' answers; CPU: nginx's processes):", "",
                  "| case | req/s | p99 ms | µs/request (CPU) | errors |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {case['label']} | {case['median_rps']:,.0f} | "
                  f"{case['median_p99_ms']:.2f} | {case['median_cpu_us']:,.1f} | "
                  f"{case['errors']} |" for case in vip["cases"].values()]
        lines += ["", f"302 / 304 at the VIP: {vip['rps_302_over_304']:.2f} in requests/s, "
                  f"{vip['cpu_302_over_304']:.2f}x the CPU per request."]
    return lines


def _cold_burst_section(cold: dict[str, Any] | None) -> list[str]:
    """A site's pilots within 1 s of a publish, through the VIP (at once, and redirected)."""
    if cold is None:
        return []
    lines = ["", "## A cold burst at a site", "",
             "`scripts/cluster up --origin-config ORIGIN --site bench=127.0.0.2/32` (three "
             "replicas redirecting the site to its edge, the edge's upstream the VIP). Each "
             "burst follows the publish of a new ~200 KB tag (`latest` moves to a blob the "
             f"edge never held): {cold['pilots']:,} pilots of the site (new connections from "
             "127.0.0.2, uniformly within 1 s, one asyncio process beside the servers) fetch "
             "`latest` through the VIP and follow any redirect, every body checked against "
             "its ETag. **At once**: as soon as every replica serves the new tag (the edge has "
             "not caught up: the replicas redirect only to an edge holding the history they "
             "serve, so the VIP answers the site itself from its 1 s site cache). "
             "**Redirected**: once the site is sent to the edge for the new tag (it "
             "prefetched the blob). The edge's upstream bytes (since the publish, its "
             "prefetch included) are its `codecache_edge_upstream_bytes_total`; the VIP's "
             "answers to the site, its access log (`site=bench`); the replicas' requests, "
             "theirs:", "",
             "| tag | burst | publish -> burst s | failed | redirected | p50 ms | p99 ms | "
             "edge upstream bytes / blob | VIP bytes to the site | replica requests |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in cold["rounds"]:
        lines.append(f"| {r['version']} | {r['phase'].replace('_', ' ')} | "
                     f"{r['publish_to_burst_s']:.1f} | {r['failed'] + r['corrupted']} | "
                     f"{r['redirected']:,} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['edge_upstream_bytes']:,} / {r['blob_bytes']:,} "
                     f"({r['edge_upstream_over_blob']:.2f}) | {r['vip_bytes_to_site']:,} | "
                     f"{r['replica_requests_total']} |")
    lines += ["", "The edge reads each new blob once, however many pilots ask. In the first "
              "seconds after a publish the site's pilots still cross the WAN: the VIP "
              "answers them (one replica request per second, the rest from its site cache) "
              "until the edge holds the new history and the replicas see it (the edge's "
              "pull, 1 s, plus their `check_interval`, 1 s here, plus the VIP's 1 s site "
              "cache); a pilot never waits for the edge and never gets an older version."]
    return lines


def _edge_sections(hit: dict[str, Any] | None, disk: dict[str, Any] | None) -> list[str]:
    """An edge's hit against a replica direct; an edge's blob bytes on disk vs its bound."""
    lines: list[str] = []
    if hit is not None:
        lines += ["", "## An edge's hit", "",
                  f"An edge (`role = \"edge\"`) and a replica, {hit['workers']} worker(s) each, "
                  "both pulling from the bench's origin; the release is not a channel target, "
                  "so the edge serves it from its bounded cache (filled once before the runs), "
                  "the channel tarball from its store (pinned, as a replica holds it). wrk, "
                  f"{hit['seconds']} s, {hit['rounds']} round(s) alternating, medians:", "",
                  "| case | replica req/s | edge req/s | edge / replica | p50 ms replica / "
                  "edge | p99 ms replica / edge | µs/request replica / edge |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for case in hit["cases"].values():
            r, e = case["targets"]["replica"], case["targets"]["edge"]
            lines.append(
                f"| {case['label']}, {case['connections']} connections | "
                f"{r['median_rps']:,.0f} | {e['median_rps']:,.0f} | "
                f"{case['rps_edge_over_replica']:.2f} | {r['median_p50_ms']:.2f} / "
                f"{e['median_p50_ms']:.2f} | {r['median_p99_ms']:.2f} / "
                f"{e['median_p99_ms']:.2f} | {r['median_cpu_us']:,.1f} / "
                f"{e['median_cpu_us']:,.1f} |")
    if disk is not None:
        cache = disk["edge_cache"]
        lines += ["", "## An edge's disk", "",
                  f"An edge of a package of {disk['releases']} releases "
                  f"({disk['release_bytes']:,} bytes of random data), `[edge] cache_size` = a "
                  f"third: {disk['cache_size']:,} bytes. Each release asked once in order, "
                  f"then again in a random order ({disk['requests']} requests, "
                  f"{disk['failed']} failed); the blob bytes on disk (the pinned channel "
                  "target, the cache's files and the scratch of a fill in flight) sampled "
                  f"every 10 ms ({disk['samples']} samples):", "",
                  f"peak {disk['peak_blob_bytes']:,} bytes (bound + the largest blob, one "
                  f"fill in flight: {disk['cache_size'] + disk['largest_blob']:,}: "
                  + ("within" if disk["within_bound_plus_one_fill"] else "**over**")
                  + f"); at the end {disk['final_blob_bytes']:,}; {cache['evictions']} "
                  f"evictions, {cache['reserved_bytes']:,} bytes pinned (the channel "
                  f"target). The cache's own databases (bookkeeping, outside the bound): "
                  f"{disk['bookkeeping_bytes']:,} bytes."]
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = report["throughput"]
    cases = list(t)
    labels = [t[c]["label"].replace(" tarball", "").replace(" revalidation", "")
              .replace(", ", "\n") for c in cases]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.27
    colors = {"nginx": "#999999", "replica": "#1f77b4", "vip": "#ff7f0e"}
    names = {"nginx": "nginx static", "replica": "replica direct", "vip": "VIP (front tier)"}
    for i, who in enumerate(("nginx", "replica", "vip")):
        xs = [n + (i - 1) * width for n in range(len(cases))]
        left.bar(xs, [t[c]["targets"][who]["median_rps"] for c in cases], width,
                 color=colors[who], label=names[who])
    left.set_yscale("log")
    left.set_xticks(range(len(cases)), labels, fontsize=8)
    left.set_ylabel("requests/s (median, log scale)")
    left.set_title("Throughput, same run (wrk)")
    left.legend(fontsize=8)
    for i, who in enumerate(("replica", "vip")):
        xs = [n + (i - 0.5) * width for n in range(len(cases))]
        right.bar(xs, [t[c]["targets"][who]["ratio"] for c in cases], width,
                  color=colors[who], label=names[who])
        for x, c in zip(xs, cases, strict=True):
            goal = TARGETS[c][i]
            right.hlines(goal, x - width / 2, x + width / 2, colors="black", linewidth=2)
    right.axhline(1.0, color="#999999", linestyle=":", linewidth=1)
    right.set_xticks(range(len(cases)), labels, fontsize=8)
    right.set_ylabel("ratio to nginx static (black bar: target)")
    right.set_title("Ratio to nginx, same run")
    right.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(f"codecache benchmark {m['date']} — {m['cores']} cores, "
                 f"{m['replica_workers']} worker(s) per replica"
                 + (" — QUICK (not a measurement)" if report["quick"] else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
