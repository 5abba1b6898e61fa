"""``pnn report``: regenerate (or ``--check``) the results sections of README.md and docs/."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["cmd_report", "add_report_command"]


def cmd_report(args) -> int:
    from pnn.report import RESULTS, check, find_root, update

    root = Path(args.root) if args.root else find_root(Path.cwd())
    if args.check:
        ok, diff = check(root)
        if ok:
            print("pnn report: README.md and docs/ are up to date with the records in "
                  f"{root / RESULTS}")
            return 0
        sys.stdout.write(diff)
        print("pnn report: out of date; run `pnn report` to regenerate from the records "
              "(never edit a marked section by hand)", file=sys.stderr)
        return 1
    written = update(root, figures=not args.no_figures)
    for p in written:
        print(f"wrote {p.relative_to(root).as_posix()}")
    if not written:
        print("pnn report: nothing to write")
    return 0


def add_report_command(sub) -> None:
    """Register ``pnn report`` on the ``pnn`` sub-command parser."""
    r = sub.add_parser(
        "report", help="regenerate the README's and docs' results tables and figures from "
                       "the records in experiments/results/",
        description="Rewrite every section between '<!-- report:KIND ARG -->' and "
                    "'<!-- /report:KIND ARG -->' in README.md and docs/*.md from the records "
                    "in experiments/results/, and draw the figures those documents show into "
                    "docs/figures/ (PNG and SVG). With --check nothing is written: a diff is "
                    "printed and the exit status is 1 when a document is out of date.")
    r.add_argument("--check", action="store_true",
                   help="compare only; exit 1 and print a diff when out of date")
    r.add_argument("--no-figures", action="store_true", help="rewrite the text only")
    r.add_argument("--root", default=None,
                   help="the repository's top folder (default: found from the current one)")
    r.set_defaults(func=cmd_report)
