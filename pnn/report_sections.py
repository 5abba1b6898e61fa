"""The sections of ``pnn report``: each a function ``(report, argument) -> Markdown`` that reads
its records (see :mod:`pnn.report` for the markers that name them): comparison tables and what they
say, the demo, the ablations, the adaptation runs, ``pnn train`` records, the papers' numbers beside
ours, and the speed benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pnn import adapt
from pnn.characterize_report import FIT_KINDS
from pnn.figures import method_name, system_name
from pnn.report_records import (LINEAR, MINUS, REFERENCE, Report, ReportError, _by_method,
                                _bypass, _interval, _join, _methods, _pct, _plain, _range,
                                _runs_on, _signed, _table, dataset_label)
from pnn.stats import paired_differences, t_interval
from pnn.train.phyll import PhyLLConfig

__all__ = ["compare_table", "compare_findings", "every_comparison", "demo_table",
           "ablation_findings", "physics_table", "adapt_table", "adapt_seeds_table",
           "train_table", "papers_table", "bench_table", "PAPERS", "PHYSICS_REFERENCES",
           "PHYSICS_TASKS", "BENCH"]


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
