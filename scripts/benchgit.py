"""The git source's part of scripts/bench: a first sync of many tags, and one new tag.

The repository is ``scripts/gitrepo.py``'s (``gitrepo.build``: ~2,000 files, 2,000
commits, 500 tags, 70 % of them annotated; quick: 200 files, 200 commits, 20 tags),
served by ``git daemon`` on loopback (``git://127.0.0.1:PORT``, the smart protocol
through a server as production's https is; ``file://`` would fetch through a local
upload-pack with no network or server between, closer to nothing a release manager
runs). Both sides of each comparison read the same daemon; its CPU (its upload-pack
children) is counted on neither side.

* **First sync**: ``codecache sync --once`` into a fresh store (its git cache included)
  against ``git clone --bare URL`` + for each tag ``git archive --format=tar TAG | gzip``
  (gzip's default level 6; codecache's tarball is level 9, DESIGN.md §3), the order
  alternating between rounds. One round by default (it takes minutes): ``--first-rounds``.
* **One new tag**: a new commit (one file edited) and a new annotated tag upstream
  (``git fast-import``), then ``codecache sync --once`` into the store that holds every
  earlier tag against ``git fetch --tags`` in the baseline's clone + ``git archive TAG |
  gzip``; rounds alternate the order.

Wall time and CPU (user + system of the commands run and their children, waited for),
medians, the ratio to the baseline and the target (issue 20: first sync <= 1.5x, one tag
<= 1.3x). ``scripts/bench --only git`` runs it alone and prints its JSON; the full run
puts it in the report (``benchreport``).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import bench  # the running scripts/bench.py (it registers itself under this name)
import gitrepo  # scripts/gitrepo.py: the deterministic repository generator

from tests.harness import config as harness_config
from tests.harness.gitrepo import served

FIRST_TARGET = 1.5
ONE_TAG_TARGET = 1.3
NEW_TAG_EPOCH = 1_800_000_000   # after every generated commit (gitrepo.EPOCH + 1 h each)
AUTHOR = b"Release Manager <rm@example.invalid>"


class GitBench:
    """The served repository, the origin's config and the baseline's clone."""

    def __init__(self, work: Path, quick: bool) -> None:
        self.work = work / "git"
        self.quick = quick
        self.shape = (gitrepo.Shape(files=200, commits=200, tags=20) if quick
                      else gitrepo.Shape())
        self.served = self.work / "served"
        self.repo = self.served / "tree.git"
        self.origin = self.work / "origin"
        self.config = self.origin / "codecache.toml"
        self.clone = self.work / "baseline" / "clone.git"
        self.out = self.work / "baseline" / "out"
        self.new_tags: list[str] = []

    def build(self) -> float:
        """Generate the repository and the origin's keys and config; seconds it took."""
        started = time.monotonic()
        self.served.mkdir(parents=True)
        built = gitrepo.build(self.repo, self.shape)
        self.tip, self.tags = built.head, list(built.tags)
        (self.origin / "keys").mkdir(parents=True)
        bench.run([bench.PY, "-m", "codecache", "keygen", "--secret-key",
                   str(self.origin / "keys" / "k.key"), "--public-key",
                   str(self.origin / "keys" / "k.pub")])
        return time.monotonic() - started

    def configure(self, url: str) -> None:
        self.url = url
        harness_config.write(self.config, harness_config.build(
            role="origin", store={"path": "store"},
            signing={"secret_key": "keys/k.key", "trusted_keys": ["keys/k.pub"]},
            packages=[{"name": "tree", "git_url": url}]))

    # --- the two sides ----------------------------------------------------------------------

    def sync(self, expect: int) -> tuple[float, float]:
        """``codecache sync --once``; (wall, CPU) seconds. ``expect``: releases it must
        publish."""
        start, used = time.monotonic(), bench.children_cpu()
        result = bench.run([bench.PY, "-m", "codecache", "--config", str(self.config), "sync",
                            "--once"], cwd=self.origin, timeout=7200)
        wall, cpu = time.monotonic() - start, bench.children_cpu() - used
        published = result.stderr.count("release published package=tree")
        if published != expect:
            raise SystemExit(f"bench: sync published {published} releases, not {expect}:\n"
                             f"{result.stderr[-2000:]}")
        return wall, cpu

    def fresh_store(self) -> None:
        shutil.rmtree(self.origin / "store", ignore_errors=True)

    def clone_and_archive(self, tags: list[str]) -> tuple[float, float]:
        """``git clone --bare`` + ``git archive | gzip`` of each of ``tags``; (wall, CPU)."""
        shutil.rmtree(self.clone.parent, ignore_errors=True)
        self.out.mkdir(parents=True)
        start, used = time.monotonic(), bench.children_cpu()
        bench.run(["git", "clone", "--quiet", "--bare", self.url, str(self.clone)],
                  timeout=3600)
        for tag in tags:
            self._archive(tag)
        return time.monotonic() - start, bench.children_cpu() - used

    def fetch_and_archive(self, tag: str) -> tuple[float, float]:
        """``git fetch --tags`` in the clone + ``git archive TAG | gzip``; (wall, CPU)."""
        start, used = time.monotonic(), bench.children_cpu()
        bench.run(["git", "-C", str(self.clone), "fetch", "--quiet", "--tags", "origin"])
        self._archive(tag)
        return time.monotonic() - start, bench.children_cpu() - used

    def _archive(self, tag: str) -> None:
        """``git archive --format=tar TAG | gzip > OUT``: two processes, one pipe."""
        with (self.out / f"{tag}.tar.gz").open("wb") as target:
            archive = subprocess.Popen(["git", "-C", str(self.clone), "archive",
                                        "--format=tar", tag], stdout=subprocess.PIPE)
            gzip = subprocess.run(["gzip"], stdin=archive.stdout, stdout=target, check=False)
            if archive.stdout is not None:
                archive.stdout.close()
            if archive.wait() != 0 or gzip.returncode != 0:
                raise SystemExit(f"bench: git archive {tag} | gzip failed")

    # --- upstream ------------------------------------------------------------------------------

    def new_tag(self, n: int) -> str:
        """A new commit on main (one file edited) and an annotated tag ``2.0.n`` on it,
        written upstream by ``git fast-import``; the tag's name."""
        name = f"2.0.{n}"
        when = b"%d +0000" % (NEW_TAG_EPOCH + 3600 * n)
        note = f"release {name}\n".encode()
        stream = b"".join([
            b"commit refs/heads/%s\n" % gitrepo.BRANCH.encode(),
            b"mark :1\nauthor %s %s\ncommitter %s %s\n" % (AUTHOR, when, AUTHOR, when),
            b"data %d\n%s" % (len(note), note),
            b"from %s\n" % self.tip.encode(),
            b"M 100644 inline RELEASE\ndata %d\n%s\n" % (len(note), note),
            b"tag %s\nfrom :1\ntagger %s %s\n" % (name.encode(), AUTHOR, when),
            b"data %d\n%s\n" % (len(note), note)])
        subprocess.run(["git", "-C", str(self.repo), "fast-import", "--quiet"], input=stream,
                       check=True)
        self.tip = bench.run(["git", "-C", str(self.repo), "rev-parse",
                              gitrepo.BRANCH]).stdout.strip()
        self.new_tags.append(name)
        return name


def _summary(each: dict[str, list[float]], target: float) -> dict[str, Any]:
    medians = {f"{k}_median_s": statistics.median(v) for k, v in each.items()}
    ratio = medians["codecache_median_s"] / medians["baseline_median_s"]
    cpu_ratio = medians["codecache_cpu_median_s"] / medians["baseline_cpu_median_s"]
    return {**{f"{k}_s": v for k, v in each.items()}, **medians, "rounds": len(each["codecache"]),
            "ratio": ratio, "cpu_ratio": cpu_ratio, "target": target}


def git_sync(work: Path, quick: bool, first_rounds: int, rounds: int) -> dict[str, Any]:
    """Both measurements (see the module); their JSON."""
    g = GitBench(work, quick)
    setup = g.build()
    bench.log(f"git: {g.shape.files} files, {g.shape.commits} commits, {len(g.tags)} tags "
              f"generated in {setup:.1f} s (scripts/gitrepo.py)")
    with served(g.served) as prefix:
        g.configure(f"{prefix}/tree.git")
        first: dict[str, list[float]] = {k: [] for k in ("codecache", "codecache_cpu",
                                                         "baseline", "baseline_cpu")}
        for n in range(first_rounds):
            def ours() -> None:
                g.fresh_store()
                wall, cpu = g.sync(len(g.tags))
                first["codecache"].append(wall)
                first["codecache_cpu"].append(cpu)

            def theirs() -> None:
                wall, cpu = g.clone_and_archive(g.tags)
                first["baseline"].append(wall)
                first["baseline_cpu"].append(cpu)

            for step in (ours, theirs) if n % 2 == 0 else (theirs, ours):
                step()
            bench.log(f"git first sync round {n + 1}/{first_rounds}: codecache "
                      f"{first['codecache'][-1]:.1f} s (CPU {first['codecache_cpu'][-1]:.1f} s), "
                      f"clone + {len(g.tags)} x archive | gzip {first['baseline'][-1]:.1f} s "
                      f"(CPU {first['baseline_cpu'][-1]:.1f} s)")
        one: dict[str, list[float]] = {k: [] for k in first}
        for n in range(rounds):
            tag = g.new_tag(n)

            def ours_one() -> None:
                wall, cpu = g.sync(1)
                one["codecache"].append(wall)
                one["codecache_cpu"].append(cpu)

            def theirs_one(tag: str = tag) -> None:
                wall, cpu = g.fetch_and_archive(tag)
                one["baseline"].append(wall)
                one["baseline_cpu"].append(cpu)

            for step in (ours_one, theirs_one) if n % 2 == 0 else (theirs_one, ours_one):
                step()
            bench.log(f"git one new tag round {n + 1}/{rounds}: codecache "
                      f"{one['codecache'][-1]:.2f} s (CPU {one['codecache_cpu'][-1]:.2f} s), "
                      f"fetch + archive | gzip {one['baseline'][-1]:.2f} s "
                      f"(CPU {one['baseline_cpu'][-1]:.2f} s)")
    blobs = sorted((g.origin / "store" / "blobs").rglob("*"))
    sizes = [p.stat().st_size for p in blobs if p.is_file()]
    theirs_sizes = [p.stat().st_size for p in g.out.glob("*.tar.gz")]
    return {"files": g.shape.files, "commits": g.shape.commits, "tags": len(g.tags),
            "served_by": "git daemon (git://, loopback)", "setup_s": setup,
            "tarball_median_bytes": statistics.median(sizes) if sizes else 0,
            "baseline_tarball_median_bytes": (statistics.median(theirs_sizes)
                                              if theirs_sizes else 0),
            "first_sync": _summary(first, FIRST_TARGET),
            "one_tag": _summary(one, ONE_TAG_TARGET)}


def only_git(first_rounds: int, rounds: int, quick: bool, keep: bool,
             merge: Path | None) -> int:
    """``scripts/bench --only git``: both measurements alone, their JSON on stdout;
    ``merge``: also put them into the report in that directory (``bench.merge_section``),
    marked with this run's command, date and load."""
    import datetime
    import json
    import os
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="codecache-bench-work-"))
    load = os.getloadavg()
    command = (f"scripts/bench --only git --rounds {rounds} --first-rounds {first_rounds}"
               + (" --quick" if quick else "") + (f" --out {merge}" if merge else ""))
    try:
        bench.run([bench.PY, "-m", "compileall", "-q", str(bench.REPO / "codecache")])
        result = git_sync(work, quick, first_rounds, rounds)
    finally:
        if keep:
            bench.log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    commit = bench.run(["git", "-C", str(bench.REPO), "rev-parse", "--short", "HEAD"],
                       check=False).stdout.strip()
    result["run"] = {
        "command": command, "commit": commit or "?",
        "git": bench.run(["git", "--version"]).stdout.strip(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_at_start": [round(x, 2) for x in load],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}
    first, one = result["first_sync"], result["one_tag"]
    bench.log(f"git: first sync of {result['tags']} tags ratio {first['ratio']:.2f} (target "
              f"{FIRST_TARGET}), one new tag ratio {one['ratio']:.2f} (target "
              f"{ONE_TAG_TARGET}); CPU ratios {first['cpu_ratio']:.2f}, {one['cpu_ratio']:.2f}")
    if merge is not None:
        paths = bench.merge_section(merge, "git_sync", result)
        bench.log(f"merged into {', '.join(str(p) for p in paths)}")
    print(json.dumps(result))
    return 0
