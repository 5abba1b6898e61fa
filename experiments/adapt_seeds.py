"""Mean and spread over seeds of the adaptation runs in experiments/results/.

    .venv/bin/python experiments/adapt_seeds.py

For each system with runs ``adapt_<system>`` (seed 0) and ``adapt_<system>_seed<k>``, prints a
Markdown table: per method, the accuracy before the jump, its change over the next epoch, the
change over the next epoch after the drift starts, and the accuracy settled at the end, as mean
± standard deviation (ddof=1) over the seeds found.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def runs(system: str) -> list[dict]:
    paths = [RESULTS / f"adapt_{system}" / "adapt.json"]
    paths += sorted(RESULTS.glob(f"adapt_{system}_seed*/adapt.json"))
    return [json.loads(p.read_text()) for p in paths if p.exists()]


def fmt(values, signed: bool = False) -> str:
    v = 100 * np.asarray(values, float)
    sd = f" ± {v.std(ddof=1):.1f}" if len(v) > 1 else ""
    return f"{v.mean():+.1f}{sd}" if signed else f"{v.mean():.1f}{sd}"


def table(system: str) -> str | None:
    recs = runs(system)
    if not recs:
        return None
    seeds = [r["seed"] for r in recs]
    lines = [f"{system}: seeds {', '.join(map(str, seeds))} (mean ± std, percent / points)", "",
             "| method | before jump | jump: next epoch | drift: next epoch | settled at end |",
             "|---|---:|---:|---:|---:|"]
    for method in recs[0]["methods"]:
        jump = [r["methods"][method]["recovery"][0] for r in recs]
        drift = [r["methods"][method]["recovery"][1] for r in recs]
        lines.append(f"| {method} | {fmt([j['before'] for j in jump])} | "
                     f"{fmt([-j['drop'] for j in jump], True)} | {fmt([-d['drop'] for d in drift], True)} | "
                     f"{fmt([d['settled'] for d in drift])} |")
    return "\n".join(lines) + "\n"


def main(systems: list[str]) -> None:
    for system in systems:
        t = table(system)
        print(t if t else f"{system}: no runs found in {RESULTS}\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["optical", "microwave"])
