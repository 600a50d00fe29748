"""``python3 -m codecache.cli.nginx_sites CONFIG...``: a front node's nginx site block.

Production front nodes run no ``scripts/cluster``: this prints the lines that go between
``# cluster:sites begin`` and ``# cluster:sites end`` of nginx/codecache.conf, rendered
(``ops.nginx_sites``) from the replicas' codecache.toml files, which must agree. Not a
``codecache`` verb (DESIGN.md §6 lists those): a front node has the package, not a role.
Exit 0, or 2 with one line on stderr for a config that does not load or files that disagree.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from codecache.core.errors import ConfigError
from codecache.ops.nginx_sites import BEGIN, END, read_sites, render_sites


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m codecache.cli.nginx_sites",
        description="Print the nginx site block (geo and maps) rendered from the replicas' "
                    "[[redirect.sites]]; it goes between the '# cluster:sites begin' and "
                    "'# cluster:sites end' lines of nginx/codecache.conf.")
    parser.add_argument("configs", nargs="+", type=Path, metavar="CONFIG",
                        help="a replica's codecache.toml (several: they must agree)")
    args = parser.parse_args(argv)
    try:
        lines = render_sites(read_sites(args.configs))
    except ConfigError as err:
        print(f"nginx_sites: error: {err}", file=sys.stderr)
        return 2
    print("\n".join([BEGIN, *lines, END]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
