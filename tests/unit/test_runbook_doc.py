"""docs/runbook.md cannot drift from what ``codecache check`` says and what the CLI accepts.

Every finding ``check.assess`` can produce (made here from facts) has its line in the
runbook's table; every failure mode of issue 8 has a section; every ``codecache`` command
the runbook and the operations guide's check section give is one the parser accepts, and
every threshold option of ``check`` is documented.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from codecache.cli.parser import build_parser
from codecache.core.readiness import Health, Readiness
from codecache.ops.check import Facts, State, Thresholds, assess

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUNBOOK = (DOCS / "runbook.md").read_text()
OPERATIONS = (DOCS / "operations.md").read_text()
NOW = 1_800_000_000.0
BASE = Facts(source="http://n:8080", now=NOW, role="replica", readiness=Readiness(Health.OK),
             serial=100, generated=int(NOW) - 60, expires=int(NOW) + 7 * 86400,
             blobs_unavailable=0, upstream="http://o:8080", confirmed_at=NOW,
             disk_free=50, disk_total=100)


def _facts(**changes: object) -> Facts:
    import dataclasses
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


# (facts, the words of the message the runbook's table must quote)
FINDINGS = [
    (Facts(source="http://n:8080", now=NOW, unreachable="GET http://n:8080/readyz: [Errno "
           "111] Connection refused"), "Connection refused"),
    (_facts(readiness=Readiness(Health.NOT_READY, ("the store has no index yet",))),
     "not ready: the store has no index yet"),
    (_facts(readiness=Readiness(Health.NOT_READY, ("blob ab missing from disk",))),
     "missing from disk"),
    (_facts(readiness=Readiness(Health.NOT_READY, ("index on disk refused: x",))),
     "not ready: index on disk refused"),
    (_facts(index_problem="bad_signature: x"), "index does not verify: bad_signature"),
    (_facts(served_problems=("x",)), "served tarball does not verify"),
    (_facts(expires=int(NOW) + 86400, generated=int(NOW) - 6 * 86400), "index expires in"),
    (_facts(expires=int(NOW) - 60), "EXPIRED"),
    (_facts(confirmed_at=NOW - 100, last_error="x"), "replica lags"),
    (_facts(upstream_serial=200, upstream_generated=int(NOW) - 100), "behind"),
    (_facts(confirmed_at=None), "replica never confirmed its index with an upstream"),
    (_facts(refused_at={"conflict": NOW}), "two writers or a restored origin"),
    (_facts(refused_at={"bad_signature": NOW}), "upstream index refused"),
    (_facts(role="origin", mutated_tags=("pilot 1.2.0",)), "mutated tag(s)"),
    (_facts(role="origin", refused_tags=("pilot 2.0.0",)), "refused tag(s)"),
    (_facts(disk_free=1), "store disk"),
    (_facts(readiness=Readiness(Health.DEGRADED, ("odd",))), "degraded: "),
]


@pytest.mark.parametrize(("facts", "words"), FINDINGS, ids=[w for _, w in FINDINGS])
def test_every_finding_of_check_is_in_the_runbook_table(facts: Facts, words: str) -> None:
    result = assess(facts, Thresholds())
    assert result.state > State.OK
    assert words in result.message, result.message
    table = RUNBOOK[RUNBOOK.index("## What check says"):RUNBOOK.index("## Replica down")]
    assert words in table, f"{words!r} is not in the runbook's table"


@pytest.mark.parametrize("mode", ["Replica down", "Origin down", "Subversion down",
                                  "Bad release", "Signature or expiry failure", "Disk full",
                                  "Mutated tag", "Two writers", "Git source down",
                                  "Refused tag"])
def test_every_failure_mode_has_a_section(mode: str) -> None:
    assert f"\n## {mode}\n" in RUNBOOK
    section = RUNBOOK.split(f"\n## {mode}\n", 1)[1].split("\n## ", 1)[0]
    for part in ("**Symptom.**", "**Action.**", "```sh"):
        assert part in section, (mode, part)


_COMMANDS = ("check", "status", "sync", "publish", "yank", "replicate", "verify", "audit",
             "serve", "keygen")
_COMMAND = re.compile(r"\bcodecache ((?:--config \S+ |--debug )*(?:" + "|".join(_COMMANDS)
                      + r")\b[^`'\n|&;]*)")


def commands(text: str) -> list[list[str]]:
    """The argv (after ``codecache``) of every codecache command in the text."""
    # $ARG1$: the Nagios macro for the extra thresholds a service passes.
    return [[w for w in shlex.split(m[1].replace("…", "x"), comments=True) if w != "$ARG1$"]
            for m in _COMMAND.finditer(text)]


def test_the_commands_in_the_runbook_and_the_check_docs_parse() -> None:
    section = OPERATIONS[OPERATIONS.index("## Monitoring: codecache check"):]
    found = commands(RUNBOOK) + commands(section)
    assert len(found) >= 15
    for argv in (a for a in found if "--help" not in a):
        args, extras = build_parser().parse_known_args(argv)
        assert extras == [], (argv, extras)
        assert args.command in _COMMANDS


def test_every_check_option_is_documented() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    check = sub.choices["check"]  # type: ignore[index]
    options = [o for a in check._actions for o in a.option_strings if o.startswith("--")]
    section = OPERATIONS[OPERATIONS.index("## Monitoring: codecache check"):]
    for option in options:
        if option != "--help":
            assert f"`{option}" in section, option


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_the_runbook_links_resolve() -> None:
    links = re.findall(r"\]\(([\w./-]*\.md)?(?:#([\w-]+))?\)", RUNBOOK)
    assert len(links) > 20
    for target, anchor in links:
        path = DOCS / target if target else DOCS / "runbook.md"
        assert path.exists(), target
        if anchor:
            assert anchor in _anchors(path.read_text()), (target, anchor)
