"""What the physics contributes (issue 10, item 6): PhyLL on every system, the physics ablated.

For each system in {none, random_linear, random_nonlinear, acoustic, optical, microwave}
(``sim/ablation.py`` for the first three), PhyLL with one configuration and one epoch budget on
Peterson & Barney vowels, several seeds (each seed its own speaker split and initialisation);
then a depth sweep (1 to 4 blocks) and a width sweep (measured channels ``n_meas``) on one
system. Reports validation and test accuracy (mean ± std, 95 % t interval) and paired
differences by seed (:mod:`pnn.stats`) against each simulator.

    .venv/bin/python experiments/ablation.py  # full run: 6 epochs, 5 seeds, 19 min on 2 cores
    .venv/bin/python experiments/ablation.py --quick    # every code path in a few minutes

Writes ``experiments/results/ablation/`` (``--out``): ``records/*.json`` (one per run, written as
each finishes; a rerun skips the runs already there with the same settings), ``ablation.json``
(every summary) and ``ablation.md`` (the tables).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pnn import registry, stats
from pnn.data.vowels import load_vowels
from pnn.fileio import atomic_write_text
from pnn.train.phyll import PhyLLConfig

#: a system with parameters is written ``name[key=value;...]`` (the parameters of its
#: registry factory, e.g. ``random_nonlinear[kind=tanh]``)
SYSTEMS = ("none", "random_linear", "random_nonlinear", "random_nonlinear[kind=tanh]",
           "acoustic", "optical", "microwave")
SIMULATORS = ("acoustic", "optical", "microwave")
ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "ablation"


def _key(group: str, system: str, label: str, seed: int) -> str:
    return f"{group}__{system}__{label}__seed{seed}"


def parse_system(text: str) -> tuple[str, dict]:
    """``"name[key=value;...]"`` -> ``(name, {key: value})``; numbers become numbers."""
    name, _, rest = text.partition("[")
    params = {}
    if rest:
        if not rest.endswith("]"):
            raise ValueError(f"system {text!r}: expected name[key=value;...], e.g. "
                             "random_nonlinear[kind=tanh]")
        for item in filter(None, rest[:-1].split(";")):
            k, eq, v = item.partition("=")
            if not eq:
                raise ValueError(f"system {text!r}: parameter {item!r} is not key=value")
            try:
                params[k.strip()] = json.loads(v)
            except json.JSONDecodeError:
                params[k.strip()] = v.strip()
    return name, params


def run_one(system: str, cfg: PhyLLConfig, seed: int, data_cache: dict) -> dict:
    if seed not in data_cache:
        data_cache[seed] = load_vowels(seed=seed)
    data = data_cache[seed]
    t = time.perf_counter()
    name, params = parse_system(system)
    layers = registry.build_layers(name, "phyll", cfg, data, seed=seed, **params)
    rec, _ = registry.get_trainer("phyll").train(layers, data, cfg, seed=seed)
    return {"system": system, "seed": seed, "config": dataclasses.asdict(cfg),
            "val_accuracy": float(rec["val_accuracy"]),
            "test_accuracy": float(rec["test_accuracy"]),
            "selected_epoch": rec.get("selected_epoch"),
            "train_queries": int(rec["cost"]["queries_by_purpose"].get("train", 0))
            if isinstance(rec.get("cost"), dict) and "queries_by_purpose" in rec["cost"]
            else None,
            "n_trainable_params": rec.get("n_trainable_params"),
            "history": [{k: h.get(k) for k in ("epoch", "val_accuracy", "train_accuracy",
                                               "loss")} for h in rec.get("history", [])],
            "run_s": round(time.perf_counter() - t, 2)}


def _interval(values) -> dict:
    iv = stats.t_interval(values)
    return {k: iv[k] for k in ("n", "mean", "std", "lo", "hi")}


def summarise(records: list[dict], reference_of: dict) -> list[dict]:
    """One row per label: val/test intervals, paired test differences against each reference
    label in ``reference_of[label]``."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    rows = []
    for lab in labels:
        rs = [r for r in records if r["label"] == lab]
        row = {"label": lab, "system": rs[0]["system"], "seeds": sorted(r["seed"] for r in rs),
               "val": _interval([r["val_accuracy"] for r in rs]),
               "test": _interval([r["test_accuracy"] for r in rs]),
               "run_s_mean": float(np.mean([r["run_s"] for r in rs])), "diff": {}}
        for ref in reference_of.get(lab, ()):
            if ref == lab:
                continue
            pairs = [{"method": r["label"], "seed": r["seed"], "test_accuracy":
                      r["test_accuracy"], "val_accuracy": r["val_accuracy"]}
                     for r in records if r["label"] in (lab, ref)]
            d = stats.paired_differences(pairs, reference=ref).get(lab)
            if d is not None:
                row["diff"][ref] = {k: d[k] for k in ("n", "mean", "std", "lo", "hi",
                                                      "excludes_zero")}
        rows.append(row)
    return rows


def _pct(iv: dict) -> str:
    if iv["n"] < 2:
        return f"{100 * iv['mean']:.1f} (1 seed)"
    return (f"{100 * iv['mean']:.1f} ± {100 * iv['std']:.1f} "
            f"[{100 * max(iv['lo'], 0):.1f}, {100 * min(iv['hi'], 1):.1f}]")


def _diff(d: dict | None) -> str:
    if d is None:
        return "–"
    if d["n"] < 2:
        return f"{100 * d['mean']:+.1f} (1 seed)"
    star = " *" if d["excludes_zero"] else ""
    return f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]{star}"


def table(rows: list[dict], refs: list[str], first: str) -> str:
    cols = [first, "seeds", "val accuracy % mean ± std [95 % CI]",
            "test accuracy % mean ± std [95 % CI]",
            *(f"Δ test vs {r} (points) [95 % CI]" for r in refs), "s / run"]
    lines = ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
    for r in rows:
        cells = [r["label"], str(len(r["seeds"])), _pct(r["val"]), _pct(r["test"]),
                 *("reference" if x == r["label"] else _diff(r["diff"].get(x)) for x in refs),
                 f"{r['run_s_mean']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True).stdout.split("\n")
        dirty = [ln[3:] for ln in dirty if ln.strip()]
        return head + (f" (uncommitted changes in: {', '.join(dirty)})" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def plan(args) -> list[tuple[str, str, str, dict, int]]:
    """(group, system, label, config overrides, seed) of every run."""
    seeds = list(range(args.seeds))
    sweep_seeds = list(range(min(args.sweep_seeds, args.seeds)))
    runs = [("systems", s, s, {}, seed) for s in args.systems for seed in seeds]
    base_depth, base_width = 2, 20
    for k in args.depths:
        if k != base_depth or args.sweep_system not in args.systems:
            runs += [("depth", args.sweep_system, f"{k} blocks", {"hidden": (20,) * k}, seed)
                     for seed in sweep_seeds]
    for w in args.widths:
        if w != base_width or args.sweep_system not in args.systems:
            runs += [("width", args.sweep_system, f"n_meas={w}", {"n_meas": w}, seed)
                     for seed in sweep_seeds]
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="2 seeds, 1 epoch, depths 1-2, widths 5 and 20 (a smoke run)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 of the system table")
    ap.add_argument("--sweep-seeds", type=int, default=3, help="seeds of the depth/width sweeps")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--sweep-system", default="optical",
                    help="the system of the depth and width sweeps")
    ap.add_argument("--depths", default="1,2,3,4")
    ap.add_argument("--widths", default="5,10,20,40")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.sweep_seeds, args.epochs = 2, 2, 1
        args.depths, args.widths = "1,2", "5,20"
        if args.out == DEFAULT_OUT:
            args.out = DEFAULT_OUT.parent / "ablation_quick"
    args.systems = [s for s in args.systems.split(",") if s]
    bad = [s for s in args.systems + [args.sweep_system]
           if parse_system(s)[0] not in registry.SYSTEMS]
    if bad:
        ap.error(f"unknown system(s) {bad}; valid: {', '.join(sorted(registry.SYSTEMS))}")
    if args.seeds < 2 or args.epochs < 1:
        ap.error(f"expected --seeds >= 2 (intervals need two) and --epochs >= 1, got "
                 f"--seeds {args.seeds} --epochs {args.epochs}")
    args.depths = [int(v) for v in args.depths.split(",")]
    args.widths = [int(v) for v in args.widths.split(",")]

    base = PhyLLConfig(epochs=args.epochs)
    git_at_start = _git_state()  # other people may commit while the sweep runs
    rec_dir = args.out / "records"
    rec_dir.mkdir(parents=True, exist_ok=True)
    data_cache: dict = {}
    records = []
    runs = plan(args)
    t0 = time.perf_counter()
    for i, (group, system, label, over, seed) in enumerate(runs, 1):
        cfg = dataclasses.replace(base, **over)
        path = rec_dir / f"{_key(group, system, label, seed)}.json".replace(" ", "_")
        rec = None
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg))):
                rec = old
        if rec is None:
            rec = run_one(system, cfg, seed, data_cache)
            rec.update({"group": group, "label": label, "git": git_at_start})
            atomic_write_text(path, json.dumps(rec, indent=1))
        records.append(rec)
        print(f"[{i}/{len(runs)} {time.perf_counter() - t0:6.0f} s] {group} {label} seed {seed}:"
              f" val {rec['val_accuracy']:.3f} test {rec['test_accuracy']:.3f} "
              f"({rec['run_s']:.0f} s)", flush=True)

    main_recs = [r for r in records if r["group"] == "systems"]
    refs = [s for s in ("none", *SIMULATORS) if s in args.systems]
    sys_rows = summarise(main_recs, {s: refs for s in args.systems})
    sweep_base = [dict(r) for r in main_recs if r["system"] == args.sweep_system
                  and r["seed"] < args.sweep_seeds]
    depth_recs = [r for r in records if r["group"] == "depth"] + [
        {**r, "label": "2 blocks"} for r in sweep_base if 2 in args.depths]
    width_recs = [r for r in records if r["group"] == "width"] + [
        {**r, "label": "n_meas=20"} for r in sweep_base if 20 in args.widths]
    depth_recs.sort(key=lambda r: (int(r["label"].split()[0]), r["seed"]))
    width_recs.sort(key=lambda r: (int(r["label"].split("=")[1]), r["seed"]))
    depth_rows = summarise(depth_recs, {r["label"]: ["2 blocks"] for r in depth_recs})
    width_rows = summarise(width_recs, {r["label"]: ["n_meas=20"] for r in width_recs})

    total = time.perf_counter() - t0
    cmd = "python experiments/ablation.py " + " ".join(argv if argv is not None
                                                        else sys.argv[1:])
    setting = (f"PhyLL default configuration (hidden (20, 20), n_meas 20, inner_steps 15, lr "
               f"3e-3, theta 4.5, goodness read-out), {args.epochs} epochs, model selected on "
               f"validation; Peterson & Barney vowels, seed s = speaker split and "
               f"initialisation s; {args.seeds} seeds (system table), {args.sweep_seeds} "
               f"(sweeps, on {args.sweep_system}). Budget chosen so the full run fits about "
               f"25 min on 2 shared CPU cores; no tuning (the same configuration for every "
               f"system).")
    code = sorted({r.get("git", "not recorded") for r in records})
    meta = {"command": cmd.strip(), "setting": setting, "git": "; ".join(code),
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "total_s": round(total, 1), "epochs": args.epochs, "seeds": args.seeds,
            "sweep_seeds": args.sweep_seeds, "sweep_system": args.sweep_system}
    out = {"meta": meta, "systems": sys_rows, "depth": depth_rows, "width": width_rows}
    atomic_write_text(args.out / "ablation.json", json.dumps(out, indent=1))
    md = [
        "# What the physics contributes: PhyLL with the physical layer ablated",
        "",
        f"Command: `{meta['command']}` (this invocation {total / 60:.1f} min, runs already "
        f"recorded are reused; each run's wall time is in the last column and in records/; "
        f"code the runs used: {meta['git']}).",
        "",
        setting,
        "",
        "Systems: `none` = constant zero reading (the block is the digital map of its drive); "
        "`random_linear` = fixed non-negative random matrix (incoherent intensity transmission); "
        "`random_nonlinear` = |G d|^2 with a fixed complex Gaussian G (coherent speckle and a "
        "camera); `random_nonlinear[kind=tanh]` = a fixed random two-layer tanh network; see "
        "`sim/ablation.py`. Intervals: two-sided 95 % Student t over seeds; Δ is "
        "paired by seed (same split and initialisation); * marks an interval that excludes 0.",
        "",
        "## Systems",
        "",
        table(sys_rows, refs, "system"),
        "",
        f"## Depth ({args.sweep_system}, 20 units a block)",
        "",
        table(depth_rows, ["2 blocks"], "depth"),
        "",
        f"## Width: measured channels n_meas ({args.sweep_system}, 2 blocks)",
        "",
        table(width_rows, ["n_meas=20"], "width"),
        "",
    ]
    atomic_write_text(args.out / "ablation.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
