"""The figures of ``pnn report``: :data:`FIGURES` names each one, what it shows (gathered from the
records) and the function of :mod:`pnn.figures` that draws it; a digest of those inputs, written
into the PNG and SVG, tells ``pnn report --check`` whether a figure is older than its records."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pnn.report_records import Report, ReportError, dataset_label
from pnn.report_sections import PAPERS

__all__ = ["Figure", "FIGURES", "FIGURE_DIR", "inputs_digest", "figure_markdown"]

#: where the report's figures go, relative to the repository root
FIGURE_DIR = Path("docs") / "figures"


@dataclass(frozen=True)
class Figure:
    """A report figure: ``inputs(report)`` gathers what it shows from the records (keyword
    arguments of ``draw``, JSON-able), ``draw(path=..., **inputs)`` writes ``path`` (.png) and
    its .svg. Both files carry a digest of the inputs, so that ``pnn report --check`` finds a
    figure older than its records without drawing it."""

    caption: str
    inputs: Callable[["Report"], dict]
    draw: str  # the name of the drawing function in pnn.figures


def _compare_inputs(folder: str):
    def inputs(rep: Report) -> dict:
        records = rep.compare_records(folder)
        reported = [(f"{p['short']}: {p['reported_pct']:g} %", p["reported_pct"])
                    for p in PAPERS if p["ours"][0] == folder and p["reported_pct"]]
        return {"records": records, "title": dataset_label(records[0]["data"]),
                "reported": reported}
    return inputs


def _curves_inputs(folder: str):
    return lambda rep: {"records": rep.compare_records(folder)}


def _adapt_inputs(system: str):
    def inputs(rep: Report) -> dict:
        paths = [rep.results / f"adapt_{system}" / "adapt.json"]
        paths += sorted(rep.results.glob(f"adapt_{system}_seed*/adapt.json"))
        recs = [rep.load(p.relative_to(rep.results)) for p in paths if p.is_file()]
        if not recs:
            raise ReportError(f"no adaptation records adapt_{system}*/adapt.json in "
                              f"{rep.results}")
        return {"records": recs}
    return inputs


def _ablation_inputs(rep: Report) -> dict:
    # experiments/ablation.py trains on load_vowels()'s default task, Peterson & Barney's 10
    # vowels; its records do not store the data description
    return {"ablation": rep.load("ablation/ablation.json"), "n_classes": 10}


def inputs_digest(inputs: dict) -> str:
    """A short digest of a figure's inputs (written into its PNG and SVG)."""
    text = json.dumps(inputs, sort_keys=True, default=str, separators=(",", ":"))
    return "pnn-report-inputs:" + hashlib.sha256(text.encode()).hexdigest()[:20]


#: every figure the report can draw, by name (``<!-- report:figure NAME -->``)
FIGURES: dict[str, Figure] = {
    "protocol_acoustic_vowels": Figure(
        "Test accuracy by method, Peterson & Barney vowels, acoustic simulator: mean and 95 % "
        "interval over 5 seeds, seeds as dots; physical and digital methods apart",
        _compare_inputs("protocol_acoustic_vowels"), "accuracy_by_method"),
    "curves_protocol_acoustic_vowels": Figure(
        "Validation accuracy against the physical queries spent on learning (mean and 95 % "
        "band over seeds); digital methods, which spend none, as lines at their accuracy",
        _curves_inputs("protocol_acoustic_vowels"), "learning_curves"),
    "compare_acoustic_hillenbrand7": Figure(
        "Test accuracy by method, Hillenbrand 7 vowels (women), acoustic simulator",
        _compare_inputs("compare_acoustic_hillenbrand7"), "accuracy_by_method"),
    "ablation_systems": Figure(
        "PhyLL with the physical layer replaced: test accuracy by system (mean and 95 % "
        "interval over seeds)", _ablation_inputs, "ablation_systems"),
    "adapt_optical": Figure(
        "Adaptation on the optical simulator: test accuracy on the current physics, mean and "
        "95 % band over seeds", _adapt_inputs("optical"), "adaptation_bands"),
    "adapt_microwave": Figure(
        "Adaptation on the microwave simulator: test accuracy on the current physics, mean and "
        "95 % band over seeds", _adapt_inputs("microwave"), "adaptation_bands"),
}


def figure_markdown(rep: Report, name: str, document: Path) -> str:
    if name not in FIGURES:
        raise ReportError(f"no figure {name!r}; known figures: {', '.join(sorted(FIGURES))}")
    png = rep.root / FIGURE_DIR / f"{name}.png"
    rel = Path(os.path.relpath(png, document.parent)).as_posix()
    svg = rel[:-4] + ".svg"
    return f"![{FIGURES[name].caption}]({rel})\n*{FIGURES[name].caption} ([SVG]({svg})).*\n"
