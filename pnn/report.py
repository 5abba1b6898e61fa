"""``pnn report``: the results tables, sentences and figures of the README and docs/, from records.

No number in a results section of ``README.md`` or ``docs/*.md`` is typed by hand. Each such
section sits between two markers::

    <!-- report:KIND ARGUMENT -->
    ...generated text...
    <!-- /report:KIND ARGUMENT -->

and ``pnn report`` rewrites the text between them from the records committed under
``experiments/results/`` (``pnn report --check`` only compares, prints a diff and exits 1 when a
document is out of date). The kinds, each one function of :data:`SECTIONS`:

* ``compare FOLDER``: the table of a ``pnn compare`` folder (``FOLDER/results.json``): test
  accuracy mean ± std over seeds, its 95 % t interval, the paired difference to PhyLL;
* ``findings FOLDER``: the sentence that reads that table. It says *better* or *worse* only
  where the paired 95 % interval excludes zero, and "no conclusion" otherwise;
* ``every_comparison``: ``compare`` and ``findings`` for every comparison folder found (a new
  folder appears without an edit);
* ``demo``: the ``make demo`` table (``demo/results.json``, one seed);
* ``ablation``: the sentence on what the physics contributes (``ablation/ablation.json``);
* ``physics [FOLDER]``: the bypass-free ablation table, simulator minus each replacement of the
  physics, per task (``FOLDER/summary.json``, default ``physics``, written by
  ``experiments/physics.py``);
* ``adapt FOLDER`` and ``adapt_seeds SYSTEM``: the adaptation tables (``adapt.json``);
* ``train PATTERN``: one row per ``pnn train`` record matching the glob (previous protocol);
* ``papers``: our numbers beside what the PhyLL and PAT papers reported (:data:`PAPERS`);
* ``bench``: the headline speed figures from ``benchmarks/results/`` (and ``gpu/`` there);
* ``figure NAME``: a figure of :data:`FIGURES`, drawn from its records into ``docs/figures/``
  (PNG and SVG), and the Markdown that shows it.

A new comparison is reported by adding a marker pair naming its folder: the report follows the
records it finds, and refuses a marker whose records are missing.

The records and their formatting live in :mod:`pnn.report_records`, the sections in
:mod:`pnn.report_sections`, the figures in :mod:`pnn.report_figures`; this module fills the
documents (every public name of the three is importable from here too).
"""

from __future__ import annotations

import difflib
import glob
import re
from pathlib import Path
from typing import Callable

import pnn.figures
from pnn.fileio import atomic_write_text
from pnn.report_figures import FIGURE_DIR, FIGURES, Figure, figure_markdown, inputs_digest
from pnn.report_records import (LINEAR, MINUS, REFERENCE, RESULTS, Report, ReportError,
                                dataset_label)
from pnn.report_sections import (BENCH, PAPERS, PHYSICS_REFERENCES, PHYSICS_TASKS,
                                 ablation_findings, adapt_seeds_table, adapt_table, bench_table,
                                 compare_findings, compare_table, demo_table, every_comparison,
                                 papers_table, physics_table, train_table)

__all__ = ["Report", "ReportError", "render", "update", "check", "SECTIONS", "FIGURES",
           "PAPERS", "documents", "find_root"]

#: the documents whose markers the report fills
DOCUMENTS = ("README.md", "docs/*.md")

MARKER = re.compile(r"<!-- report:(?P<key>[^>\n]+?) -->\n(?P<body>.*?)<!-- /report:(?P=key) -->",
                    re.S)


# --------------------------------------------------------------------------- documents

#: marker kind -> function(report, argument) -> Markdown
SECTIONS: dict[str, Callable[[Report, str], str]] = {
    "compare": compare_table,
    "findings": compare_findings,
    "every_comparison": every_comparison,
    "demo": demo_table,
    "ablation": ablation_findings,
    "physics": physics_table,
    "adapt": adapt_table,
    "adapt_seeds": adapt_seeds_table,
    "train": train_table,
    "papers": papers_table,
    "bench": bench_table,
}


def documents(root: Path) -> list[Path]:
    """The documents the report fills (README.md and docs/*.md), sorted."""
    out = []
    for pattern in DOCUMENTS:
        out += sorted(Path(p) for p in glob.glob(str(Path(root) / pattern)))
    return out


def _section(rep: Report, key: str, document: Path) -> str:
    kind, _, arg = key.strip().partition(" ")
    arg = arg.strip()
    if kind == "figure":
        return figure_markdown(rep, arg, document)
    if kind not in SECTIONS:
        raise ReportError(f"{document}: unknown report section {kind!r} in marker "
                          f"'<!-- report:{key} -->'; known: figure, {', '.join(SECTIONS)}")
    return SECTIONS[kind](rep, arg)


def render_text(rep: Report, text: str, document: Path) -> tuple[str, list[str]]:
    """``text`` with every marked section regenerated; also the figure names it shows."""
    figures: list[str] = []

    def fill(m: re.Match) -> str:
        key = m.group("key")
        if key.startswith("figure "):
            figures.append(key.partition(" ")[2].strip())
        body = _section(rep, key, document)
        return f"<!-- report:{key} -->\n{body}<!-- /report:{key} -->"

    opened = re.findall(r"<!-- report:([^>\n]+?) -->", text)
    closed = re.findall(r"<!-- /report:([^>\n]+?) -->", text)
    if sorted(opened) != sorted(closed):
        raise ReportError(f"{document}: unmatched report markers (opened {sorted(opened)}, "
                          f"closed {sorted(closed)}); every '<!-- report:KEY -->' needs its "
                          "'<!-- /report:KEY -->'")
    return MARKER.sub(fill, text), figures


def render(root: str | Path = ".") -> tuple[dict[Path, tuple[str, str]], list[str]]:
    """``{document: (current text, regenerated text)}`` and the figure names shown."""
    rep = Report(Path(root))
    out, figures = {}, []
    for doc in documents(rep.root):
        old = doc.read_text(encoding="utf-8")
        new, figs = render_text(rep, old, doc)
        out[doc] = (old, new)
        figures += [f for f in figs if f not in figures]
    return out, figures


def check(root: str | Path = ".") -> tuple[bool, str]:
    """Whether every document equals its regeneration (and every shown figure exists);
    returns ``(ok, diff)``."""
    root = Path(root)
    texts, figures = render(root)
    diff = []
    for doc, (old, new) in texts.items():
        if old != new:
            name = doc.relative_to(root).as_posix()
            diff += difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                         f"{name} (committed)", f"{name} (from the records)")
    rep = Report(root)
    stale = []
    for n in figures:
        digest = inputs_digest(FIGURES[n].inputs(rep))
        for ext in (".png", ".svg"):
            path = root / FIGURE_DIR / f"{n}{ext}"
            if not path.is_file() or digest.encode() not in path.read_bytes():
                stale.append((FIGURE_DIR / f"{n}{ext}").as_posix())
    if stale:
        diff.append("figures missing or older than their records: " + ", ".join(stale) + "\n")
    return not diff, "".join(diff)


def update(root: str | Path = ".", *, figures: bool = True) -> list[Path]:
    """Rewrite the documents that differ (atomically) and draw the figures they show;
    returns the files written."""
    root = Path(root)
    rep = Report(root)
    texts, names = render(root)
    written = []
    for doc, (old, new) in texts.items():
        if old != new:
            atomic_write_text(doc, new)
            written.append(doc)
    if figures:
        (root / FIGURE_DIR).mkdir(parents=True, exist_ok=True)
        for name in names:
            fig = FIGURES[name]
            inputs = fig.inputs(rep)
            getattr(pnn.figures, fig.draw)(path=root / FIGURE_DIR / f"{name}.png",
                                           description=inputs_digest(inputs), **inputs)
            written += [root / FIGURE_DIR / f"{name}{ext}" for ext in (".png", ".svg")]
    return written


def find_root(start: Path) -> Path:
    """The repository (README.md and experiments/results/) at or above ``start``."""
    for p in [start, *start.parents]:
        if (p / "README.md").is_file() and (p / RESULTS).is_dir():
            return p
    raise ReportError(f"no repository with README.md and {RESULTS}/ at or above {start}; "
                      "run pnn report in the pnn repository or give --root")
