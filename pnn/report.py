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
"""

from __future__ import annotations

import difflib
import glob
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pnn.characterize_report import FIT_KINDS
from pnn.network import LEGACY_SKIP
from pnn.figures import is_digital, method_name, system_name
from pnn.stats import paired_differences, t_interval

__all__ = ["Report", "ReportError", "render", "update", "check", "SECTIONS", "FIGURES",
           "PAPERS", "documents", "find_root"]

#: where the records live, relative to the repository root
RESULTS = Path("experiments") / "results"
#: where the report's figures go, relative to the repository root
FIGURE_DIR = Path("docs") / "figures"
#: the documents whose markers the report fills
DOCUMENTS = ("README.md", "docs/*.md")

MARKER = re.compile(r"<!-- report:(?P<key>[^>\n]+?) -->\n(?P<body>.*?)<!-- /report:(?P=key) -->",
                    re.S)
MINUS = "\u2212"


class ReportError(ValueError):
    """A marker the report cannot fill (unknown kind, missing records)."""


# --------------------------------------------------------------------------- formatting


def _signed(v: float, digits: int = 1) -> str:
    text = f"{v:+.{digits}f}"
    return text.replace("-", MINUS)


def _plain(v: float, digits: int = 1) -> str:
    return f"{v:.{digits}f}".replace("-", MINUS)


def _pct(v: float) -> str:
    return _plain(100 * v)


def _interval(lo: float, hi: float, *, clip: bool = True, signed: bool = False) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a (1 seed)"
    if clip:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    f = _signed if signed else _plain
    return f"[{f(100 * lo)}, {f(100 * hi)}]"


def _range(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def _table(head: list[str], align: str, rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- records


@dataclass
class Report:
    """The repository whose documents and records are reported (``root``: its top folder)."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)
        self._cache: dict[Path, object] = {}

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    def load(self, relative: str | Path):
        path = self.results / relative
        if path not in self._cache:
            if not path.is_file():
                raise ReportError(f"no record {path}; run the experiment that writes it (see "
                                  "experiments/) or remove the marker that asks for it")
            self._cache[path] = json.loads(path.read_text(encoding="utf-8"))
        return self._cache[path]

    def compare_records(self, folder: str) -> list[dict]:
        records = self.load(Path(folder) / "results.json")
        if not isinstance(records, list) or not records:
            raise ReportError(f"{self.results / folder / 'results.json'}: expected a list of "
                              "result records (pnn compare writes one)")
        return records


def _methods(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in records))


def _by_method(records: list[dict], method: str) -> list[dict]:
    return [r for r in records if r["method"] == method]


def _runs_on(records: list[dict]) -> str:
    return "digital" if is_digital(records[0]) else system_name(records[0]["system"])


def _bypass(records: list[dict]) -> str:
    """Which digital bypass of the physics a network had: the earlier block's ``|h|/||h||``
    (``skip = "direction"``, what every record before the option had) and a read-out that sees
    the encoded input (``readout_input``)."""
    if is_digital(records[0]):
        return "–"
    cfg = records[0].get("config") or {}
    parts = []
    if cfg.get("skip", LEGACY_SKIP) == LEGACY_SKIP:
        parts.append("block reads the direction of h (skip = direction)")
    if cfg.get("readout_input"):
        parts.append("read-out sees the input")
    return "; ".join(parts) or "none"


_DATASETS = {"peterson_barney": "Peterson & Barney vowels", "hillenbrand": "Hillenbrand vowels",
             "digits": "8×8 digits (scikit-learn)", "mnist": "MNIST",
             "fashion_mnist": "Fashion-MNIST"}
_GROUPS = {"m": "men", "w": "women", "c": "children"}


def dataset_label(data: dict) -> str:
    name = _DATASETS.get(data.get("source", ""), data.get("name", "?"))
    groups = data.get("groups")
    if groups and sorted(groups) != ["c", "m", "w"]:
        name += " (" + ", ".join(_GROUPS.get(g, g) for g in groups) + ")"
    return f"{name}, {len(data.get('classes', []))} classes"


# --------------------------------------------------------------------------- compare


def _compare_caption(records: list[dict]) -> str:
    data = [r["data"] for r in records]
    seeds = sorted({int(r["seed"]) for r in records})
    per_seed = len({d.get("seed") for d in data}) > 1
    parts = [f"{_range([d['n_train'] for d in data])} training"]
    if "n_val" in data[0]:
        parts.append(f"{_range([d['n_val'] for d in data])} validation")
    parts.append(f"{_range([d['n_test'] for d in data])} test samples"
                 + (" per split" if per_seed else ""))
    text = (f"Test accuracy, {dataset_label(data[0])} ({', '.join(parts)}); "
            f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}"
            + (", each its own split" if per_seed else ", one split") + ")")
    tuned = [r["tuned"] for r in records if r.get("tuned")]
    if tuned:
        text += (f"; every method tuned with {tuned[0]['n_trials']} trials on the validation "
                 f"split of seed {tuned[0]['tuned_on_seed']}")
    return text + ":"


#: the method every comparison is read against
REFERENCE = "phyll"
#: the linear classifier shown beside the papers' numbers
LINEAR = "linear"


def compare_table(rep: Report, folder: str, reference: str = REFERENCE) -> str:
    """The README table of a comparison (accuracy, interval, paired Δ vs the reference)."""
    records = rep.compare_records(folder)
    if any("val_accuracy" not in r for r in records):
        return _previous_protocol_table(records)
    diffs = paired_differences(records, reference)
    rows = []
    for method in _methods(records):
        rs = _by_method(records, method)
        iv = t_interval([r["test_accuracy"] for r in rs])
        if method == reference:
            dtext = "reference"
        elif method in diffs and diffs[method]["n"] < 2:
            dtext = f"{_signed(100 * diffs[method]['mean'])} (1 seed, no interval)"
        elif method in diffs:
            d = diffs[method]
            dtext = (f"{_signed(100 * d['mean'])} "
                     f"{_interval(d['lo'], d['hi'], clip=False, signed=True)}")
        else:
            dtext = "–"
        rows.append([method_name(method), _runs_on(rs), _bypass(rs),
                     f"{_pct(iv['mean'])} ± {_pct(iv['std'])} %",
                     _interval(iv["lo"], iv["hi"]), dtext])
    table = _table(["method", "runs on", "digital bypass of the physics",
                    "test accuracy (mean ± std)", "95 % interval",
                    f"Δ vs {method_name(reference)}, paired (points) [95 % interval]"], "lllrrr",
                   rows)
    return _compare_caption(records) + "\n\n" + table


def _previous_protocol_table(records: list[dict]) -> str:
    """Records taken before the validation split: accuracy and costs (last epoch)."""
    rows = []
    for method in _methods(records):
        rs = _by_method(records, method)
        iv = t_interval([r["test_accuracy"] for r in rs])
        q = np.mean([r["cost"]["physical_queries"] for r in rs])
        qt = np.mean([r["cost"].get("queries_by_purpose", {}).get("train", 0) for r in rs])
        rows.append([method_name(method), _runs_on(rs),
                     f"{_pct(iv['mean'])} ± {_pct(iv['std'])} %", f"{q:,.0f} ({qt:,.0f})",
                     f"{np.mean([r['cost']['digital_flops'] for r in rs]):.2e}",
                     f"{np.mean([r['cost']['wall_s'] for r in rs]):.1f}",
                     str(rs[0]["n_trainable_params"])])
    data = records[0]["data"]
    seeds = sorted({int(r["seed"]) for r in records})
    caption = (f"{dataset_label(data)} ({data['n_train']:,} training, {data['n_test']:,} test "
               f"samples, one split); seeds {', '.join(map(str, seeds))}; last epoch:")
    return caption + "\n\n" + _table(
        ["method", "runs on", "test accuracy (mean ± std)",
         "physical queries: all (training only)", "digital FLOPs", "wall time (s)",
         "trainable params"], "llrrrrr", rows)


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def compare_findings(rep: Report, folder: str, reference: str = REFERENCE) -> str:
    """What the comparison says, only as far as the paired 95 % intervals allow."""
    records = rep.compare_records(folder)
    diffs = paired_differences(records, reference)
    if not diffs:
        return (f"No paired reading: {method_name(reference)} or the methods to pair with it "
                "are not in these records.\n")
    if max(d["n"] for d in diffs.values()) < 2:
        return ("One seed: no interval, so no method is called better or worse than "
                f"{method_name(reference)}.\n")
    better, worse, open_ = [], [], []
    for method in _methods(records):
        d = diffs.get(method)
        if d is None:
            continue
        # the difference reference - method, so that "better" reads with a positive number
        mean, lo, hi = -d["mean"], -d["hi"], -d["lo"]
        text = (f"{method_name(method)} {_signed(100 * mean)} "
                f"[{_signed(100 * lo)}, {_signed(100 * hi)}]")
        if not d["excludes_zero"]:
            open_.append(text)
        elif mean > 0:
            better.append(text)
        else:
            worse.append(text)
    ref = method_name(reference)
    n = len({int(r["seed"]) for r in records})
    out = [f"Read with {ref} minus each method (test accuracy, points, paired by seed over {n} "
           "seeds, [95 % interval]):"]
    if better:
        out.append(f"where the interval excludes zero, {ref} is **better** than "
                   f"{'; '.join(better)}.")
    if worse:
        out.append(f"{'It' if better else 'Where the interval excludes zero, it'} is **worse** "
                   f"than {'; '.join(worse)}.")
    if open_:
        out.append(f"No conclusion either way (the interval includes zero) against "
                   f"{'; '.join(open_)}.")
    return " ".join(out) + "\n"


def every_comparison(rep: Report, _arg: str = "") -> str:
    """A table and its reading for every comparison folder found under the current protocol
    (records with a validation split), so that a new ``pnn compare --out`` folder appears
    without any edit; older records are listed by name only."""
    parts, older = [], []
    for path in sorted(rep.results.glob("*/results.json")):
        folder = path.parent.name
        records = rep.load(path.relative_to(rep.results))
        if not isinstance(records, list) or not records or "method" not in records[0]:
            continue
        if any("val_accuracy" not in r for r in records):
            older.append(f"`{folder}`")
            continue
        parts.append(f"#### `{folder}`\n\n{compare_table(rep, folder)}\n"
                     f"{compare_findings(rep, folder)}")
    if older:
        parts.append(f"Taken before the validation protocol (see results-previous-protocol.md): "
                     f"{', '.join(older)}.\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- demo


def demo_table(rep: Report, _arg: str = "") -> str:
    recs = rep.load("demo/results.json")
    ph, lin, mlp = recs["phyll"], recs["linear"], recs["mlp"]
    data = ph["data"]
    names = [(f"PhyLL on the {system_name(ph.get('system', 'acoustic'))}", ph),
             (f"logistic regression, L-BFGS (C = {lin['C']:g} chosen on validation)", lin),
             (f"digital MLP by backpropagation (width {mlp['hidden_width']}, early stopping)",
              mlp)]
    rows = [[n, str(r["n_trainable_params"]), f"{_pct(r['val_accuracy'])} %",
             f"{_pct(r['test_accuracy'])} %", f"{r['cost']['physical_queries']:,}"]
            for n, r in names]
    caption = (f"{dataset_label(data)}: {data['n_train']:,} training and {data['n_val']:,} "
               f"validation samples from {data['n_speakers_train'] + data['n_speakers_val']} "
               f"speakers, {data['n_test']:,} test samples from {data['n_speakers_test']} unseen "
               f"speakers; seed {ph['seed']}, {ph['epochs_run']} epochs, the epoch chosen on "
               "validation, test measured once:")
    gap = [(100 * (r["test_accuracy"] - ph["test_accuracy"]), n) for n, r in
           (("logistic regression", lin), ("the MLP", mlp))]
    words = _join([f"{abs(g):.1f} points {'under' if g > 0 else 'over'} {n}'s" for g, n in gap])
    note = (f"One seed, one split: PhyLL's test accuracy is {words}. One run is a measurement, "
            "not a comparison: `pnn compare` and the ablation above run several seeds, each its own split, and "
            "reports paired intervals.")
    return caption + "\n\n" + _table(["method", "trainable params", "validation accuracy",
                                      "test accuracy", "physical queries"], "lrrrr", rows) \
        + "\n" + note + "\n"


# --------------------------------------------------------------------------- ablation


def ablation_findings(rep: Report, _arg: str = "") -> str:
    rows = {r["label"]: r for r in rep.load("ablation/ablation.json")["systems"]}
    if "none" not in rows:
        raise ReportError("ablation.json has no 'none' row to compare the simulators with")
    sims = [s for s in ("acoustic", "optical", "microwave") if s in rows]
    texts, resolved = [], []
    for s in sims:
        d = rows[s]["diff"].get("none")
        if d is None:
            continue
        texts.append(f"{s} {_signed(100 * d['mean'])} "
                     f"[{_signed(100 * d['lo'])}, {_signed(100 * d['hi'])}]")
        if d["excludes_zero"]:
            resolved.append(s)
    n = rows["none"]["test"]["n"]
    head = (f"Simulator minus no physics, test accuracy in points, paired by seed over {n} seeds "
            f"[95 % interval]: {_join(texts)}.")
    if resolved:
        tail = (f" The interval excludes zero for {_join(resolved)}; for the others no "
                "conclusion either way.")
    else:
        tail = (" Every interval includes zero: no simulator is shown better or worse than the "
                "block with no physics.")
    return head + tail + "\n"


#: the digital references experiments/physics.py runs beside every task (their record keys)
PHYSICS_REFERENCES = ("linear", "bp")
#: the task names of experiments/physics.py, as a reader knows them
PHYSICS_TASKS = {"vowels": "Peterson & Barney (10 vowels, 4 formants)",
                 "hillenbrand7": "Hillenbrand, 7 vowels (12 formants)"}


def _physics_task(name: str) -> str:
    if name in PHYSICS_TASKS:
        return PHYSICS_TASKS[name]
    kind, _, n = name.partition("_pca")
    what = {"digits": "digits 8×8", "mnist_subset": "MNIST subset"}.get(kind, kind)
    return f"{what}, {n} PCA features" if n else what


def _changed_settings(summary: dict) -> str:
    """The fixed settings of an ablation that differ from PhyLL's defaults (epochs apart), and
    the physical parameters given to a system."""
    from pnn.train.phyll import PhyLLConfig

    default = json.loads(json.dumps(PhyLLConfig().__dict__))
    cfg = summary.get("config") or {}
    parts = [f"`{k} = {json.dumps(v)}`" for k, v in cfg.items()
             if k not in ("epochs", "system_kw") and k in default and default[k] != v]
    for system, kw in sorted((summary.get("system_kw") or {}).items()):
        parts += [f"{system} `{k} = {json.dumps(v)}`" for k, v in kw.items()]
    return ", ".join(parts)


def physics_table(rep: Report, folder: str = "") -> str:
    """The bypass-free ablation of ``FOLDER/summary.json`` (default ``physics``): per task and
    simulator, the paired difference to each replacement of the physics, the arms' accuracies
    and the digital references."""
    summary = rep.load(Path(folder or "physics") / "summary.json")
    rows = summary["rows"]
    if not rows:
        raise ReportError("physics/summary.json has no rows; run experiments/physics.py")
    bases = list(dict.fromkeys(r["baseline"] for r in rows))
    head = ["task", "system", "PhyLL on it", "no physics (none)", *(f"− {b}" for b in bases),
            "R² linear / quadratic", "logistic regression", "matched MLP"]
    out, resolved, worse = [], [], []
    for task in dict.fromkeys(r["task"] for r in rows):
        for system in dict.fromkeys(r["system"] for r in rows if r["task"] == task):
            rs = {r["baseline"]: r for r in rows if r["task"] == task and r["system"] == system}
            first = next(iter(rs.values()))
            none = rs.get("none")
            cells = [_physics_task(task), system, f"{_pct(first['test_accuracy']['system'])} %",
                     f"{_pct(none['test_accuracy']['baseline'])} %" if none else "–"]
            for b in bases:
                r = rs.get(b)
                if r is None:
                    cells.append("–")
                    continue
                d = r["difference"]
                star = " †" if d["excludes_zero"] else ""
                cells.append(f"{_signed(100 * d['mean'])} [{_signed(100 * d['lo'])}, "
                             f"{_signed(100 * d['hi'])}]{star}")
                if d["excludes_zero"]:
                    (resolved if d["mean"] > 0 else worse).append(
                        f"{system} − {b} on {_physics_task(task)}")
            r2 = first.get("physics_r2") or {}
            cells.append(" / ".join(f"{r2[k]:.2f}" if k in r2 else "–" for k in FIT_KINDS))
            refs = first.get("references", {})
            cells += [f"{_pct(refs[m]['test_accuracy'])} %" if m in refs else "–"
                      for m in PHYSICS_REFERENCES]
            out.append(cells)
    n = max(r["difference"]["n_seeds"] for r in rows)
    method = rows[0].get("method", REFERENCE)
    readout = ("goodness read-out, " if (summary.get("config") or {}).get("readout") ==
               "goodness" else "")
    text = (f"{method_name(method)} (`skip = \"raw\"`, {readout}no `readout_input`: no "
            f"digital bypass of the physics), {summary['epochs']} epochs; {summary['tuning']}. Test "
            f"accuracy (mean over seeds), and the simulator minus the same "
            f"network with the physics replaced, in points, paired by seed over {n} seeds "
            f"[95 % interval], † where it excludes zero. R²: held-out fit of the "
            f"simulator's measurements from its drives during training (block mean), linear / "
            f"degree 2 (a degree-2 R² below the linear one is a fit with too few drives for its "
            f"features, not a measure of the nonlinearity). The references (mean over the same seeds) see the features "
            f"directly:\n\n")
    changed = _changed_settings(summary)
    if changed:
        text += f"Settings beyond PhyLL's defaults: {changed}.\n\n"
    text += _table(head, "ll" + "r" * (len(head) - 2), out)
    if resolved:
        text += (f"\nThe physics adds to the network where the interval lies above zero: "
                 f"{_join(resolved)}.")
    else:
        text += ("\nNo simulator is shown to add to the network: no interval against a "
                 "replacement of the physics lies above zero.")
    if worse:
        text += f" It costs accuracy where the interval lies below zero: {_join(worse)}."
    return text + "\n"


# --------------------------------------------------------------------------- adaptation


def adapt_table(rep: Report, folder: str) -> str:
    """:func:`pnn.adapt.table` of one run, with the methods' plain names."""
    from pnn import adapt

    lines = adapt.table(rep.load(Path(folder) / "adapt.json")).splitlines()
    out = lines[:2]
    for line in lines[2:]:
        cells = line.split(" | ")
        cells[1] = method_name(cells[1])
        out.append(" | ".join(cells).replace("(-", f"({MINUS}"))
    return "\n".join(out) + "\n"


def adapt_seeds_table(rep: Report, system: str) -> str:
    paths = [rep.results / f"adapt_{system}" / "adapt.json"]
    paths += sorted(rep.results.glob(f"adapt_{system}_seed*/adapt.json"))
    recs = [rep.load(p.relative_to(rep.results)) for p in paths if p.is_file()]
    if not recs:
        raise ReportError(f"no adaptation records adapt_{system}*/adapt.json in {rep.results}")

    def fmt(values, signed=False):
        v = 100 * np.asarray(values, float)
        sd = f" ± {v.std(ddof=1):.1f}" if len(v) > 1 else ""
        mean = _signed(v.mean()) if signed else _plain(v.mean())
        return mean + sd

    rows = []
    for method in recs[0]["methods"]:
        jump = [r["methods"][method]["recovery"][0] for r in recs]
        drift = [r["methods"][method]["recovery"][1] for r in recs]
        rows.append([method_name(method), fmt([j["before"] for j in jump]),
                     fmt([-j["drop"] for j in jump], True),
                     fmt([-d["drop"] for d in drift], True),
                     fmt([d["settled"] for d in drift])])
    seeds = ", ".join(str(r["seed"]) for r in recs)
    return (f"Seeds {seeds}; mean ± std over seeds, accuracy in %, changes in points:\n\n"
            + _table(["method", "before jump", "jump: next epoch", "drift: next epoch",
                      "settled at end"], "lrrrr", rows))


def train_table(rep: Report, pattern: str) -> str:
    paths = sorted(rep.results.glob(pattern))
    if not paths:
        raise ReportError(f"no records match {rep.results / pattern}")
    rows = []
    for p in paths:
        r = rep.load(p.relative_to(rep.results))
        rows.append([f"`{p.relative_to(rep.root).as_posix()}`", method_name(r["method"]),
                     system_name(r["system"]), f"{_pct(r['test_accuracy'])} %",
                     f"{_pct(r['train_accuracy'])} %", f"{r['cost']['wall_s']:.0f}"])
    return _table(["record", "method", "runs on", "test accuracy", "train accuracy",
                   "wall time (s)"], "lllrrr", rows)


# --------------------------------------------------------------------------- the papers

#: what the papers reported, typed from the papers (the only hand-typed numbers here, each with
#: its source); ``ours``: the comparison folder and method of our comparable measurement
PAPERS = [
    {"paper": "Wright et al., *Nature* 601, 549 (2022), arXiv 2104.13386, Fig. 2",
     "system": "second-harmonic generation of shaped ultrafast pulses (physical)",
     "method": "physics-aware training",
     "task": "Hillenbrand vowels (women), 7 classes", "reported": "93 % test",
     "reported_pct": 93.0, "short": "PAT paper, SHG optics",
     "ours": ("compare_acoustic_hillenbrand7", "phyll")},
    {"paper": "Momeni et al., *Science* 382, 1297 (2023), arXiv 2304.11042",
     "system": "acoustic, microwave and optical cavities (physical; per the authors' public "
               "code, MomeniAli/PhyLL)",
     "method": "PhyLL",
     "task": "Hillenbrand vowels (women), 7 classes",
     "reported": "not found in the sources searched; to be read from the paper",
     "reported_pct": None, "short": "PhyLL paper",
     "ours": ("compare_acoustic_hillenbrand7", "phyll")},
]


def papers_table(rep: Report, _arg: str = "") -> str:
    rows = []
    for p in PAPERS:
        folder, method = p["ours"]
        records = rep.compare_records(folder)
        mine = _by_method(records, method)
        ours = t_interval([r["test_accuracy"] for r in mine])
        lin = _by_method(records, LINEAR)
        lin_iv = t_interval([r["test_accuracy"] for r in lin]) if lin else None
        rows.append([p["paper"], p["system"], p["method"], p["task"], p["reported"],
                     f"{method_name(method)}, {system_name(mine[0]['system'])}: "
                     f"{_pct(ours['mean'])} ± {_pct(ours['std'])} % ({len(mine)} seeds)",
                     (f"{_pct(lin_iv['mean'])} ± {_pct(lin_iv['std'])} %" if lin_iv else "–")])
    return _table(["paper", "their system", "method", "task", "they reported",
                   "ours (comparison protocol)", "logistic regression, same splits"],
                  "lllllrr", rows)


#: where benchmarks/run_all.py writes, relative to the repository root
BENCH = Path("benchmarks") / "results"


def _bench(rep: Report, relative: str, required: bool = True):
    path = rep.root / BENCH / relative
    if not path.is_file():
        if not required:
            return None
        raise ReportError(f"no benchmark result {path}; run python benchmarks/run_all.py "
                          "(see benchmarks/README.md) or remove the marker that asks for it")
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "error" in data:
        raise ReportError(f"{path}: that benchmark section failed; rerun it")
    return data


def _times(v: float) -> str:
    return f"{v:.1f}×" if v < 20 else f"{v:.0f}×"


def _fdtd_cells(f: dict) -> list[str]:
    impl = f["impl"]
    ratio = " / ".join(_times(impl[k]["best_s"] / impl["pnn"]["best_s"]) if k in impl else "–"
                       for k in ("numpy", "wavetorch"))
    t = impl["pnn"]["best_s"]
    return [f"{t * 1e3:.1f} ms" if t < 0.1 else f"{t:.3g} s", ratio]


def bench_table(rep: Report, _arg: str = "") -> str:
    """Headline speed figures from ``benchmarks/results`` (CPU) and ``benchmarks/results/gpu``:
    the FDTD against its peers, the share of the memory roofline, simulator throughput against
    batch, and PhyLL against PAT's tuned validation accuracy (from the protocol records)."""
    cols = [("", _bench(rep, "fdtd.json"), _bench(rep, "roofline.json"), _bench(rep, "batch.json"),
             _bench(rep, "run.json"))]
    gpu = _bench(rep, "gpu/fdtd.json", required=False)
    if gpu is not None:
        cols.append(("gpu/", gpu, _bench(rep, "gpu/roofline.json"), _bench(rep, "gpu/batch.json"),
                     _bench(rep, "gpu/run.json")))
    head = ["measure"]
    rows = [[f"FDTD {cols[0][1]['grid'][0]}², {cols[0][1]['steps']:,} steps, batch "
             f"{cols[0][1]['batch']}: pnn"],
            ["same: time of NumPy (on the CPU) / wavetorch (same device) ÷ pnn's"],
            ["pnn's share of the memory roofline"], ["simulator samples/s, batch 1 → best"]]
    for _, fdtd, roof, batch, run in cols:
        m = run["machine"]
        head.append(m["device_kind"] if m.get("backend") not in (None, "cpu") else
                    f"CPU, {m['cpu_count']} cores")
        t, r = _fdtd_cells(fdtd)
        rows[0].append(t)
        rows[1].append(r)
        if "pnn_fraction_of_roofline_working_set" in roof and m.get("backend") == "cpu":
            # on a CPU the fields stay in cache: the working-set bandwidth is the ceiling
            share = (f"{100 * roof['pnn_fraction_of_roofline_working_set']:.0f} % of the "
                     f"in-cache one ({100 * roof['pnn_fraction_of_roofline_dram']:.0f} % of "
                     "DRAM's)")
        else:
            share = f"{100 * roof['pnn_fraction_of_roofline_dram']:.0f} %"
        for o in roof.get("other_sizes", ()):
            share += f" ({100 * o['pnn_fraction_of_roofline_dram']:.0f} % at {o['grid'][0]}², " \
                     f"batch {o['batch']})"
        rows[2].append(share)
        ac = [x for x in batch["results"] if x["system"] == "acoustic"]
        best = max(ac, key=lambda x: x["samples_per_s_best"])
        rows[3].append(f"{ac[0]['samples_per_s_best']:,.0f} → {best['samples_per_s_best']:,.0f} "
                       f"(batch {best['batch']})")
    rows[3][0] = "acoustic " + rows[3][0]
    out = _table(head, "l" + "r" * len(cols), rows)
    tuned = _bench(rep, "tuned.json", required=False)
    if tuned is not None:
        parts = [f"{v['system']} {v['median_phyll_wall_s']:.1f} s vs {v['median_pat_wall_s']:.1f} s"
                 f", {v['median_phyll_digital_flops'] / 1e9:.2f} vs "
                 f"{v['median_pat_digital_flops'] / 1e9:.1f} GFLOP ({v['phyll_reached']}/"
                 f"{v['seeds']} seeds)" for v in tuned["systems"]
                 if v["median_phyll_wall_s"] is not None]
        epochs = [(v["median_phyll_epoch"], v["median_pat_epoch"]) for v in tuned["systems"]
                  if v.get("median_phyll_epoch") is not None]
        when = ""
        if epochs:
            def span(i):
                lo, hi = min(e[i] for e in epochs), max(e[i] for e in epochs)
                return f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"

            when = (f" PhyLL gets there at epoch {span(0)} (median over seeds), PAT at "
                    f"{span(1)}: both tuned, and PhyLL's tuned read-out also sees the encoded "
                    "input.")
        out += ("\nPhyLL reaches PAT's tuned validation accuracy (comparison protocol, median "
                "learning cost, evaluation apart): " + "; ".join(parts) + "." + when + "\n")
    return out


# --------------------------------------------------------------------------- figures


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
    import hashlib

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
    from pnn.fileio import atomic_write_text

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
        import pnn.figures

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
