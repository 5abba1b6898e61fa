"""``pnn compare`` and ``pnn tune``: the flags become calls of :func:`pnn.compare.compare` and
:func:`pnn.tune.tune`; progress on the terminal, records and reports in ``--out``."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Callable

from pnn import registry
from pnn.compare import _write_json, base_values, compare, resumable, write_report

__all__ = ["cmd_compare", "cmd_tune", "parse_overrides"]


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in registry.TRAINERS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or text!r}; valid methods: "
                         f"{', '.join(sorted(registry.TRAINERS))}")
    return methods


def parse_overrides(items, methods: list[str]) -> dict:
    """``--set METHOD.KEY=VALUE`` (repeatable) -> ``{method: {key: value}}``; values are read
    as JSON when they parse (numbers, true/false, lists -> tuples), else kept as strings."""
    out: dict[str, dict] = {}
    for item in items or []:
        lhs, sep, text = item.partition("=")
        method, dot, key = lhs.strip().partition(".")
        if not sep or not dot or not method or not key:
            raise ValueError(f"--set {item!r}: expected METHOD.KEY=VALUE, e.g. --set bp.epochs=5")
        if method not in methods:
            raise ValueError(f"--set {item!r}: method {method!r} is not compared here; "
                             f"compared methods: {', '.join(methods)}")
        fields = [f.name for f in dataclasses.fields(registry.get_trainer(method).Config)]
        if key not in fields:
            raise ValueError(f"--set {item!r}: {method} has no setting {key!r}; valid keys: "
                             f"{', '.join(fields)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out.setdefault(method, {})[key] = tuple(value) if isinstance(value, list) else value
    return out


def _task_options(args) -> dict:
    """The data options of a command line, for study settings (JSON-able)."""
    keys = ("task", "vowel_source", "classes", "test_fraction", "image_source", "n_features")
    return {k: getattr(args, k, None) for k in keys}


def cmd_compare(args, load_data: Callable) -> int:
    """``pnn compare``; ``load_data(args, split_seed)`` loads the command line's task."""
    from tqdm import tqdm

    methods = _methods(args.methods)
    target = getattr(args, "target", None)
    if target is not None and not 0 < target <= 1:
        raise ValueError(f"--target {target!r}: expected a validation accuracy in (0, 1], "
                         "e.g. --target 0.9")
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds}: expected at least 1 seed")
    devices = getattr(args, "devices", 1)
    if devices != 1:
        from pnn.sharded import check_devices

        check_devices(devices, what="--devices")
    seeds = list(range(args.seed, args.seed + args.seeds))
    tune_trials = int(getattr(args, "tune", 0) or 0)
    per_seed = tune_trials > 0 or getattr(args, "split_per_seed", False)
    from pnn.experiment import OUTPUT_FILES
    from pnn.fileio import check_writable

    out = check_writable(args.out, folder=True, what="--out", files=OUTPUT_FILES["compare"])
    if per_seed:
        data = lambda seed: load_data(args, seed)  # noqa: E731
        first = data(seeds[0])
        splits = "a split per seed"
    else:
        data = first = load_data(args, args.split_seed)
        splits = f"split seed {args.split_seed}"
    title = (f"{args.system} / {first.name}: {len(first.y_train)} train, {len(first.y_val)} "
             f"val, {first.n_test} test; seeds {seeds[0]}..{seeds[-1]} ({splits})"
             + (f"; tuned, {tune_trials} trials a method" if tune_trials else ""))
    print(f"pnn compare: {', '.join(methods)} on {args.system}, {first.name}, {len(seeds)} "
          f"seed(s), {splits}{f', {tune_trials} tuning trials a method' if tune_trials else ''}"
          f"; results in {out}", file=sys.stderr)
    overrides: dict[str, dict] = {}
    if args.epochs is not None:
        overrides = {m: {"epochs": args.epochs} for m in methods
                     if registry.get_trainer(m).uses_physical_layers}
    for m, kv in parse_overrides(getattr(args, "set", None), methods).items():
        overrides.setdefault(m, {}).update(kv)
    tuned_all: dict[str, dict] = {}

    def on_tuned(method, res):
        tuned_all[method] = res
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "tuned_configs.json", tuned_all)
        tqdm.write(f"      {method}: tuned, best validation {res['best_val_accuracy']:.1%} "
                   f"({res['n_complete']} trials): {res['best_params']}", file=sys.stderr)

    def on_start(method, seed, i, n):
        tqdm.write(f"[{i}/{n}] {method}, seed {seed}", file=sys.stderr)

    def on_done(rec):
        c = rec["cost"]
        tqdm.write(f"      {rec['method']}: val {rec['val_accuracy']:.1%}, test "
                   f"{rec['test_accuracy']:.1%}, {c['physical_queries']:,} physical queries, "
                   f"{c['digital_flops']:.2e} FLOPs, {c['wall_s']:.1f} s", file=sys.stderr)

    class Bar:
        def __init__(self, method, seed, cfg):
            self.bar = tqdm(total=cfg.epochs, desc=f"{method}/seed {seed}", unit="epoch",
                            file=sys.stderr, leave=False, dynamic_ncols=True)

        def update(self, rec):
            post = {"loss": f"{rec['loss']:.3f}"}
            if "val_accuracy" in rec:
                post["val"] = f"{rec['val_accuracy']:.3f}"
            self.bar.set_postfix(post)
            self.bar.update(1)

        def close(self):
            self.bar.close()

    def checkpoint(records):
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "results.partial.json", records)

    tune_options = {"out": out, "jobs": getattr(args, "jobs", 1) or 1,
                    "storage": getattr(args, "storage", None),
                    "task_options": _task_options(args)}
    done = resumable(out / "results.partial.json")
    if done:
        print(f"pnn compare: {out / 'results.partial.json'} holds {len(done)} run(s) of an "
              f"interrupted comparison: each run with the same settings is reused, not trained "
              f"again (delete the file to start afresh)", file=sys.stderr)
    records = compare(args.system, data, methods, seeds, overrides=overrides,
                      on_start=on_start, on_done=on_done, progress_factory=Bar,
                      checkpoint=checkpoint, tune_trials=tune_trials,
                      tune_options=tune_options, on_tuned=on_tuned, devices=devices, done=done)
    report = write_report(records, out, title, target=target)
    (out / "results.partial.json").unlink(missing_ok=True)
    print(report["table"])
    written = ["results.json", "stats.json", "table.md", "cost_vs_accuracy.png"]
    if tuned_all:
        written.append("tuned_configs.json")
    print("wrote " + ", ".join(str(out / w) for w in written))
    return 0


def cmd_tune(args, load_data: Callable) -> int:
    """``pnn tune``: tune each method on the validation split; write tuned_configs.json."""
    from pnn.tune import tune

    methods = _methods(args.methods)
    overrides = parse_overrides(getattr(args, "set", None), methods)
    devices = getattr(args, "devices", 1)
    if devices != 1:
        from pnn.sharded import check_devices

        check_devices(devices, what="--devices")
    from pnn.fileio import check_writable

    out = check_writable(args.out, folder=True, what="--out",
                         files=("tuned_configs.json", "tune.journal"))
    data = load_data(args, args.seed)
    results = {}
    for method in methods:
        print(f"pnn tune: {method} on {args.system}, {data.name}, {args.trials} trials "
              f"(validation split, test sealed); study in {args.storage or out}",
              file=sys.stderr)
        fixed = {"epochs": args.epochs} if args.epochs else {}
        fixed.update(overrides.get(method, {}))
        base = base_values(method, fixed, None)
        res = tune(method, args.system, _task_options(args), n_trials=args.trials,
                   seed=args.seed, storage=args.storage, jobs=args.jobs, base_config=base,
                   out=out, data=data, devices=devices,
                   system_search=registry.levers(args.system) or None,
                   progress=lambda k, v, m=method: print(f"  {m} trial {k}: val {v:.1%}",
                                                         file=sys.stderr))
        results[method] = res
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "tuned_configs.json", results)
        print(f"{method}: best validation accuracy {res['best_val_accuracy']:.1%} "
              f"(trial {res['best_trial']} of {res['n_complete']}): {res['best_params']}")
    print(f"wrote {out / 'tuned_configs.json'}")
    return 0
