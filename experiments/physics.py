"""What the physics contributes, in the bypass-free block (issue "Physics that computes").

For each task and each simulator, PhyLL in the configuration that leaves the physics as the only
nonlinearity between blocks (``skip="raw"``, the paper's goodness read-out, no ``readout_input``)
is run on the simulator and on the same network with the physics replaced by ``none``,
``random_linear`` and ``random_nonlinear`` (``sim/ablation.py``), paired by seed (each seed its
own split and initialisation). Beside every task: the converged logistic regression and the
digital MLP matched to PhyLL's trainable-parameter count.

Every arm gets the same budget: by default the same configuration (PhyLL's defaults with
``--epochs`` and any ``--set``) and no tuning; with ``--tune N``, N Optuna trials per arm on the
validation split of seed 0 (:func:`pnn.tune.tune`, PhyLL's declared search space, which holds
the drive's lever ``drive_gain``, and each simulator's nonlinearity strength,
:attr:`pnn.registry.System.levers`; the fixed settings as its base), then each arm's best
configuration on every seed. The summary says which (``tuning``) and keeps every arm's tuning
curve (best validation accuracy after each trial).

    .venv/bin/python experiments/physics.py               # every task below, 5 seeds
    .venv/bin/python experiments/physics.py --quick       # every code path in about a minute

``--systems`` may name ``phyll_cavity``: the PhyLL authors' measured acoustic cavity (20 drives,
20 outputs; their ``Experimental Data/Acoustic`` pairs, ``--phyll-data``, converted once to a
``recorded:`` file in pnn's cache), served by pnn's surrogate of recorded pairs
(:func:`pnn.layers.recorded_system`). It takes 20 drives, so its arms need blocks of width 20:
``--set encoding=minmax`` on Hillenbrand's 12 formants (7 label slots + 12 + 1).

Writes ``experiments/results/physics/`` (``--out``): ``records/*.json`` (one per run, written as
each finishes; a rerun skips the runs already there with the same settings) and
``summary.json``: one row per system x task x method x baseline with the paired difference
simulator - baseline in test accuracy (``mean``, ``lo``, ``hi``, ``n_seeds``), each arm's test
accuracy, and the references; ``pnn report`` renders it into the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from pnn import registry, stats
from pnn.data.images import load_images
from pnn.data.vowels import PAT_VOWELS, load_vowels
from pnn.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "physics"
HILLENBRAND = ROOT.parent.parent / "shared" / "data" / "hillenbrand1995_women_7vowels.csv"
SIMULATORS = ("acoustic", "optical", "microwave")
PHYLL_DATA = ROOT.parent.parent / "shared" / "data" / "phyll_measured_acoustic"
BASELINES = ("none", "random_linear", "random_nonlinear")


def _task(name: str, seed: int, hillenbrand_path):
    """The data set a task name stands for, split with ``seed``."""
    if name == "vowels":
        return load_vowels(seed=seed)
    if name == "hillenbrand7":
        return load_vowels(source="hillenbrand", path=hillenbrand_path, classes=PAT_VOWELS,
                           seed=seed)
    kind, _, n = name.partition("_pca")
    if kind in ("digits", "mnist_subset") and n.isdigit():
        return load_images(source=kind, n_features=int(n), seed=seed)
    raise ValueError(f"unknown task {name!r}; valid: vowels, hillenbrand7, digits_pcaN, "
                     f"mnist_subset_pcaN")


TASKS = ("vowels", "hillenbrand7", "digits_pca16")
#: the digital references run beside every task (registry method names)
REFERENCES = ("linear", "bp")


def search_space(method: str) -> dict:
    """A method's declared search space (what ``--tune`` draws)."""
    return registry.get_trainer(method).search_space()


def phyll_cavity(folder: Path) -> str:
    """The ``recorded:`` system of the authors' measured cavity: ``x_data.csv`` and
    ``y_data.csv`` in ``folder`` (drives in [0, 1], one row per measurement; the first row, all
    zeros, is kept) written once as an .npz in pnn's cache."""
    from pnn.data.vowels import default_cache_dir

    x = np.loadtxt(folder / "x_data.csv", delimiter=",", dtype=np.float64)
    y = np.loadtxt(folder / "y_data.csv", delimiter=",", dtype=np.float64)
    target = Path(default_cache_dir()) / "phyll_measured_acoustic.npz"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, inputs=x.astype(np.float32), outputs=y.astype(np.float32))
    return f"recorded:{target}"


def run_arm(system: str, cfg, data, seed: int, system_kw=None, method: str = "phyll") -> dict:
    t = time.perf_counter()
    layers = registry.build_layers(system, method, cfg, data, seed=seed, **(system_kw or {}))
    rec, _ = registry.get_trainer(method).train(layers, data, cfg, seed=seed)
    return {"val_accuracy": float(rec["val_accuracy"]),
            "test_accuracy": float(rec["test_accuracy"]),
            "selected_epoch": rec.get("selected_epoch"),
            "n_trainable_params": int(rec["n_trainable_params"]),
            "physics_fits": rec.get("physics_fits"),
            "run_s": round(time.perf_counter() - t, 2)}


def run_reference(method: str, data, seed: int, n_params: int) -> dict:
    t = time.perf_counter()
    trainer = registry.get_trainer(method)
    cfg = trainer.Config(n_params=n_params) if method == "bp" else trainer.Config()
    rec, _ = trainer.train(None, data, cfg, seed=seed)
    return {"val_accuracy": float(rec["val_accuracy"]),
            "test_accuracy": float(rec["test_accuracy"]),
            "n_trainable_params": int(rec["n_trainable_params"]),
            "run_s": round(time.perf_counter() - t, 2)}


def _mean(values) -> float:
    return float(np.mean(values))


def summarise(records: list[dict], tasks, systems, baselines, cfg: dict, epochs: int,
              method: str = "phyll") -> dict:
    rows = []
    for task in tasks:
        rs = [r for r in records if r["task"] == task]
        refs = {m: {"test_accuracy": _mean([r["test_accuracy"] for r in rs if r["arm"] == m]),
                    "n_seeds": sum(r["arm"] == m for r in rs)}
                for m in ("linear", "bp") if any(r["arm"] == m for r in rs)}
        for system in systems:
            for base in baselines:
                pairs = [{"method": r["arm"], "seed": r["seed"],
                          "test_accuracy": r["test_accuracy"]}
                         for r in rs if r["arm"] in (system, base)]
                d = stats.paired_differences(pairs, reference=base).get(system)
                if d is None:
                    continue
                sim = [r for r in rs if r["arm"] == system and r["seed"] in d["seeds"]]
                bas = [r for r in rs if r["arm"] == base and r["seed"] in d["seeds"]]
                fits = [f for r in sim for f in (r.get("physics_fits") or {}).values()]
                rows.append({
                    "system": system, "task": task, "method": method, "baseline": base,
                    "difference": {"mean": d["mean"], "lo": d["lo"], "hi": d["hi"],
                                   "n_seeds": d["n"], "excludes_zero": d["excludes_zero"]},
                    "test_accuracy": {"system": _mean([r["test_accuracy"] for r in sim]),
                                      "baseline": _mean([r["test_accuracy"] for r in bas])},
                    "seeds": d["seeds"],
                    "physics_r2": {k: _mean([f[k] for f in fits if f.get(k) is not None])
                                   for k in ("linear", "quadratic")
                                   if any(f.get(k) is not None for f in fits)},
                    "references": refs})
    return {"what": f"{method}, simulator minus the same network with the physics replaced, test "
                    "accuracy, paired by seed (95 % t interval)",
            "config": cfg, "epochs": epochs,
            "tuning": "no tuning trials: every arm runs the same configuration (an equal "
                      "budget of 0 trials)",
            "readout_input": False, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch, P&B only")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--systems", default=",".join(SIMULATORS))
    ap.add_argument("--baselines", default=",".join(BASELINES))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a Config field of the method for every arm, e.g. drive_gain=4")
    ap.add_argument("--method", default="phyll",
                    help="the trainer of every arm on the physics (phyll, pat, insilico, ...; "
                         "a method that needs a differentiable model needs simulators)")
    ap.add_argument("--system-set", action="append", default=[], metavar="SYSTEM.KEY=VALUE",
                    help="a physical parameter of one system, e.g. acoustic.c_nl=1500")
    ap.add_argument("--phyll-data", type=Path, default=PHYLL_DATA,
                    help="the authors' measured acoustic pairs (x_data.csv, y_data.csv) for the "
                         "phyll_cavity system (default: the development copy in ../shared/data)")
    ap.add_argument("--hillenbrand-path", type=Path, default=HILLENBRAND,
                    help="Hillenbrand's vowdata.dat or the 7-vowel CSV (default: the "
                         "development copy in ../shared/data)")
    ap.add_argument("--tune", type=int, default=0, metavar="N",
                    help="N Optuna trials per arm on seed 0's validation split (default 0: "
                         "every arm runs the same configuration)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.tasks = 2, 1, "vowels"
        if args.out == DEFAULT_OUT:
            args.out = DEFAULT_OUT.parent / "physics_quick"
    if args.seeds < 2:
        ap.error(f"--seeds {args.seeds}: paired intervals need at least 2")
    tasks = [t for t in args.tasks.split(",") if t]
    systems = [s for s in args.systems.split(",") if s]
    baselines = [b for b in args.baselines.split(",") if b]
    def value(item, what):
        k, eq, v = item.partition("=")
        if not eq:
            ap.error(f"{what} {item!r}: expected KEY=VALUE")
        try:
            return k.strip(), json.loads(v)
        except json.JSONDecodeError:
            return k.strip(), v.strip()

    over = dict(value(item, "--set") for item in args.set)
    system_kw: dict = {}
    for item in args.system_set:
        k, v = value(item, "--system-set")
        name, dot, key = k.partition(".")
        if not dot:
            ap.error(f"--system-set {item!r}: expected SYSTEM.KEY=VALUE")
        system_kw.setdefault(name, {})[key] = v
    resolve = {s: (phyll_cavity(args.phyll_data) if s == "phyll_cavity" else s)
               for s in [*systems, *baselines]}
    trainer = registry.get_trainer(args.method)
    fixed = {"epochs": args.epochs, "skip": "raw", "readout_input": False}
    if "readout" in {f.name for f in dataclasses.fields(trainer.Config)}:
        fixed["readout"] = "goodness"  # PhyLL's: the paper's read-out, not a fitted one
    cfg = trainer.Config(**{**fixed, **over})

    def as_dict(c, phys: dict | None = None) -> dict:
        return json.loads(json.dumps({**dataclasses.asdict(c),
                                      **({"system_kw": phys} if phys else {})}))

    cfg_dict = as_dict(cfg)
    rec_dir = args.out / "records"
    rec_dir.mkdir(parents=True, exist_ok=True)
    records = []
    t0 = time.perf_counter()
    configs = {(task, arm): cfg for task in tasks for arm in [*systems, *baselines]}
    physics = {(task, arm): dict(system_kw.get(arm, {})) for task in tasks
               for arm in [*systems, *baselines]}
    curves: dict = {}
    if args.tune:
        from pnn.tune import tune

        base = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in search_space(args.method)}
        for task in tasks:
            data0 = _task(task, 0, args.hillenbrand_path)
            for arm in [*systems, *baselines]:
                levers = {k: v for k, v in registry.levers(arm).items()
                          if k not in system_kw.get(arm, {})}
                res = tune(args.method, resolve[arm], {"task": task}, n_trials=args.tune, seed=0,
                           data=data0, base_config=base, system_kwargs=system_kw.get(arm),
                           system_search=levers,
                           out=args.out / "tune" / task / arm.replace(":", "_"))
                configs[(task, arm)] = trainer.Config(**res["best_config"])
                physics[(task, arm)] = dict(res["best_system"])
                vals = [t["val_accuracy"] for t in sorted(res["trials"],
                                                          key=lambda t: t["number"])
                        if t["val_accuracy"] is not None]
                curves[f"{task}/{arm}"] = {"best_params": res["best_params"],
                                           "best_so_far": list(np.maximum.accumulate(vals))}
                print(f"tuned {task} {arm}: best validation {res['best_val_accuracy']:.3f} "
                      f"({res['n_complete']} trials) {res['best_params']}", flush=True)
    arms = [*systems, *baselines, *REFERENCES]
    total = len(tasks) * args.seeds * len(arms)
    i = 0
    for task in tasks:
        for seed in range(args.seeds):
            data = _task(task, seed, args.hillenbrand_path)
            n_params = None
            for arm in arms:
                i += 1
                path = rec_dir / f"{task}__{arm}__seed{seed}.json"
                rec = None
                arm_cfg = configs.get((task, arm), cfg)
                want = as_dict(arm_cfg, physics.get((task, arm)))
                if path.exists():
                    old = json.loads(path.read_text())
                    if old.get("config") == want:
                        rec = old
                if rec is None:
                    if arm in REFERENCES:
                        rec = run_reference(arm, data, seed, n_params or 1500)
                    else:
                        rec = run_arm(resolve[arm], arm_cfg, data, seed, physics[(task, arm)],
                                      args.method)
                    rec.update({"task": task, "arm": arm, "seed": seed, "config": want})
                    atomic_write_text(path, json.dumps(rec, indent=1))
                if systems and arm == systems[0]:
                    n_params = rec["n_trainable_params"]
                records.append(rec)
                print(f"[{i}/{total} {time.perf_counter() - t0:6.0f} s] {task} {arm} seed "
                      f"{seed}: test {rec['test_accuracy']:.3f}", flush=True)
    summary = summarise(records, tasks, systems, baselines, cfg_dict, args.epochs, args.method)
    summary["system_kw"] = system_kw
    if args.tune:
        summary["tuning"] = (f"{args.tune} Optuna trials per arm (PhyLL's search space with "
                             f"drive_gain, and each simulator's nonlinearity strength) on the "
                             f"validation split of seed 0, the same budget for every arm")
        summary["tuning_curves"] = curves
        summary["tuned_configs"] = {f"{t}/{a}": as_dict(c, physics[(t, a)])
                                    for (t, a), c in configs.items()}
    summary["command"] = "python experiments/physics.py " + " ".join(argv or sys.argv[1:])
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1))
    for row in summary["rows"]:
        d = row["difference"]
        print(f"{row['task']:>20} {row['system']:>10} - {row['baseline']:<17} "
              f"{100 * d['mean']:+5.1f} [{100 * d['lo']:+5.1f}, {100 * d['hi']:+5.1f}]"
              f"{' *' if d['excludes_zero'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
