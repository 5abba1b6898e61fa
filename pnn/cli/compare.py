"""``pnn compare`` and ``pnn tune``: the flags become a compare experiment
(:mod:`pnn.experiment`) and calls of :func:`pnn.tune.tune`; progress on the terminal, records
and reports in ``--out``."""

from __future__ import annotations

import sys
from typing import Callable

from pnn import registry
from pnn.compare import _write_json, base_values, plot_tuning_curves

__all__ = ["cmd_compare", "cmd_tune"]


def _task_options(args) -> dict:
    """The data options of a command line, for study settings (JSON-able): the same dict a
    compare experiment stores (:meth:`pnn.experiment.TaskSpec.cli_options`), so a study
    resumes from either."""
    from pnn.cli.common import task_spec

    return task_spec(args).cli_options()


def cmd_compare(args) -> int:
    """``pnn compare``: the flags become a ``kind = "compare"`` experiment
    (:func:`pnn.cli.experiment.experiment_from_compare_args`), run as ``pnn run`` runs one, so
    every record embeds the experiment that replays it."""
    from pnn.cli.experiment import _run, experiment_from_compare_args

    _run(experiment_from_compare_args(args), "compare")
    return 0


def cmd_tune(args, load_data: Callable) -> int:
    """``pnn tune``: tune each method on the validation split; write tuned_configs.json and
    tuning_curves.png."""
    from pnn.tune import tune

    from pnn.cli.experiment import _methods_arg, method_overrides

    from pnn.cli.common import check_seed_arg

    check_seed_arg(args.seed)
    methods = _methods_arg(args.methods)
    unknown = [m for m in methods if m not in registry.TRAINERS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or args.methods!r}; valid methods: "
                         f"{', '.join(sorted(registry.TRAINERS))}")
    overrides = method_overrides(getattr(args, "set", None), methods)
    devices = getattr(args, "devices", 1)
    if devices != 1:
        from pnn.sharded import check_devices

        check_devices(devices, what="--devices")
    from pnn.fileio import check_writable

    out = check_writable(args.out, folder=True, what="--out",
                         files=("tuned_configs.json", "tune.journal", "tuning_curves.png",
                                "tuning_curves.svg"))
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
    plot_tuning_curves(results, out / "tuning_curves.png",
                       f"Tuning on {args.system} / {data.name}: {args.trials} trials a method")
    print(f"wrote {out / 'tuned_configs.json'} and {out / 'tuning_curves.png'} (best "
          f"validation accuracy against the trials: whether {args.trials} were enough)")
    return 0
