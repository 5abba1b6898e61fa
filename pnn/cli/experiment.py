"""``pnn run`` (an experiment file, a folder of them, or a record to replay) and the experiment
behind ``pnn train``: the command line builds an :class:`~pnn.experiment.Experiment` and hands it to
:func:`~pnn.experiment.run_experiment`."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from pnn import registry
from pnn.fileio import atomic_write_text, check_writable
from pnn.experiment import Experiment, RunProgress, read_records, run_experiment

__all__ = ["add_run_command", "cmd_run", "cmd_train", "experiment_from_train_args",
           "experiment_from_compare_args", "experiment_from_adapt_args", "CliProgress"]

#: ``pnn train`` flags that set a field of the method's Config (when it has that field)
_CONFIG_FLAGS = ("epochs", "batch_size", "lr", "hidden", "n_meas", "inner_steps", "theta",
                 "goodness")


def _task_from_args(args) -> dict:
    """The ``[task]`` table of the data flags (``--task``, ``--classes``, ...)."""
    from pnn.cli.common import task_dict

    return task_dict(args)


def _methods_arg(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def method_overrides(items, methods: list[str]) -> dict[str, dict]:
    """``--set METHOD.KEY=VALUE`` (repeatable; the value read as in experiment files,
    :func:`pnn.experiment.parse_override`) -> ``{method: {key: value}}``, each method one of
    ``methods`` and each key one of its config's fields."""
    from pnn.experiment import parse_override

    out: dict[str, dict] = {}
    for item in items or []:
        path, value = parse_override(item, where="--set")
        method, dot, key = path.partition(".")
        if not dot or not method or not key:
            raise ValueError(f"--set {item!r}: expected METHOD.KEY=VALUE, e.g. --set "
                             f"bp.epochs=5")
        if method not in methods:
            raise ValueError(f"--set {item!r}: method {method!r} is not compared here; "
                             f"compared methods: {', '.join(methods)}")
        fields = [f.name for f in dataclasses.fields(registry.get_trainer(method).Config)]
        if key not in fields:
            raise ValueError(f"--set {item!r}: {method} has no setting {key!r}; valid keys: "
                             f"{', '.join(fields)}")
        out.setdefault(method, {})[key] = value
    return out


def experiment_from_compare_args(args) -> Experiment:
    """The ``kind = "compare"`` experiment that ``pnn compare``'s flags describe: ``--epochs``
    sets the physical methods' epochs, ``--set METHOD.KEY=VALUE`` any method's field."""
    methods = _methods_arg(args.methods)
    unknown = [m for m in methods if m not in registry.TRAINERS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or args.methods!r}; valid methods: "
                         f"{', '.join(sorted(registry.TRAINERS))}")
    per_method: dict[str, dict] = {}
    if args.epochs is not None:
        per_method = {m: {"epochs": args.epochs} for m in methods
                      if registry.get_trainer(m).uses_physical_layers}
    for name, values in method_overrides(getattr(args, "set", None), methods).items():
        per_method.setdefault(name, {}).update(values)
    target = getattr(args, "target", None)
    if target is not None and not 0 < target <= 1:
        raise ValueError(f"--target {target!r}: expected a validation accuracy in (0, 1], "
                         "e.g. --target 0.9")
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds}: expected at least 1 seed")
    from pnn.cli.common import check_seed_arg
    from pnn.config import MAX_SEED

    check_seed_arg(args.seed)
    if args.seed + args.seeds - 1 > MAX_SEED:
        raise ValueError(f"--seed {args.seed} --seeds {args.seeds}: the last seed "
                         f"{args.seed + args.seeds - 1} is above {MAX_SEED}; give at most "
                         f"--seeds {MAX_SEED - args.seed + 1}")
    tune = int(getattr(args, "tune", 0) or 0)
    compare: dict = {"tune_trials": tune, "tune_jobs": getattr(args, "jobs", 1) or 1}
    if tune or getattr(args, "split_per_seed", False):
        compare["split"] = "per_seed"
    else:
        compare.update(split="shared", split_seed=args.split_seed)
    if getattr(args, "workers", None) is not None:  # jobs of worker processes
        compare["workers"] = args.workers
        if getattr(args, "storage", None):
            compare["storage"] = args.storage
    elif getattr(args, "storage", None):
        compare["tune_storage"] = args.storage
    if getattr(args, "target", None) is not None:
        compare["target"] = args.target
    d = {"kind": "compare", "seeds": list(range(args.seed, args.seed + args.seeds)),
         "methods": methods, "task": _task_from_args(args), "system": {"name": args.system},
         "method": per_method, "compare": compare, "output": {"out": args.out}}
    if getattr(args, "devices", 1) != 1:
        d["devices"] = args.devices
    return Experiment.from_dict(d, where="command line")


def experiment_from_adapt_args(args) -> Experiment:
    """The ``kind = "adapt"`` experiment that ``pnn adapt``'s flags describe."""
    if not args.event:
        raise ValueError("give at least one --event, e.g. --event jump:epoch=6.5,factor=0.9")
    d = {"kind": "adapt", "seeds": [args.seed], "methods": _methods_arg(args.methods),
         "task": _task_from_args(args), "system": {"name": args.system},
         "adapt": {"events": list(args.event), "epochs": args.epochs,
                   "evals_per_epoch": args.evals_per_epoch, "pat_twin": args.pat_twin},
         "output": {"out": args.out}}
    return Experiment.from_dict(d, where="command line")


def _tuned(path, method: str, system: str) -> tuple[dict, dict]:
    """The best configuration (and physical parameters) of ``method`` in a ``pnn tune``
    output (``tuned_configs.json``)."""
    import json

    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"--tuned {path}: cannot read it ({e.strerror}); give the "
                         f"tuned_configs.json that pnn tune wrote") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--tuned {path}: not JSON ({e}); give the tuned_configs.json that "
                         f"pnn tune wrote") from None
    entry = results.get(method) if isinstance(results, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("best_config"), dict):
        have = ", ".join(sorted(results)) if isinstance(results, dict) else "nothing"
        raise ValueError(f"--tuned {path}: no tuned configuration of {method!r} (it has: "
                         f"{have}); tune it with pnn tune --methods {method}")
    tuned_on = entry.get("system")
    physics = dict(entry.get("best_system") or {})
    if physics and tuned_on not in (None, system):
        raise ValueError(f"--tuned {path}: {method} was tuned on {tuned_on!r} with its "
                         f"physical parameters {physics}; train it with --system {tuned_on}")
    return dict(entry["best_config"]), physics


def experiment_from_train_args(args) -> Experiment:
    """The experiment that ``pnn train``'s flags describe (validated like a TOML file, with
    ``--set`` applied last)."""
    fields = {f.name for f in dataclasses.fields(registry.get_trainer(args.method).Config)}
    method = {"name": args.method}
    system = {"name": args.system}
    if getattr(args, "preset", None):
        from pnn.train.phyll import PhyLLConfig, preset

        if registry.get_trainer(args.method).Config is not PhyLLConfig:
            raise ValueError(f"--preset {args.preset}: presets are PhyLL's (the authors' "
                             f"settings); got --method {args.method}")

        chosen = preset(args.preset, args.system)
        method.update(chosen["config"])
        if chosen["shared"]:
            system["shared"] = True
    if getattr(args, "tuned", None):
        config, physics = _tuned(args.tuned, args.method, args.system)
        method.update(config)
        system.update(physics)
    method.update({k: getattr(args, k) for k in _CONFIG_FLAGS
                   if getattr(args, k, None) is not None and k in fields})
    task = _task_from_args(args)
    if getattr(args, "shared", False):
        system["shared"] = True
    d = {"seeds": [args.seed], "task": task, "system": system, "method": method,
         "run": {"checkpoint_every": args.checkpoint_every, "resume": args.resume}}
    if args.checkpoint_dir:
        d["run"]["checkpoint_dir"] = args.checkpoint_dir
    if args.perturb:
        d["perturb"] = args.perturb
    output = {"out": args.out, "save": getattr(args, "save", None)}
    if any(output.values()):
        d["output"] = {k: v for k, v in output.items() if v}
    if getattr(args, "instrument", None):
        d["instrument"] = {"addresses": list(args.instrument), "profile": args.profile}
    if getattr(args, "devices", 1) != 1:
        d["devices"] = args.devices
    exp = Experiment.from_dict(d, where="command line")
    return exp.with_overrides(getattr(args, "set", None) or [])


class CliProgress(RunProgress):
    """A line on what runs, a per-step progress bar, the summary of every record."""

    def __init__(self, command: str):
        self.command = command
        self.bar = None

    def start(self, exp, seed, data, config, layers, where):
        import jax

        from pnn.cli.common import progress_bar, steps_total

        shards = (f", simulator layers data-parallel over {exp.devices} devices"
                  if exp.devices > 1 and layers else "")
        print(f"pnn {self.command}: {exp.method.name} on {where} ({len(layers)} physical "
              f"layer(s)), {data.name}: {len(data.y_train)} train / {len(data.y_val)} "
              f"validation / {len(data.y_test)} test samples, {data.n_classes} classes, seed "
              f"{seed}; JAX on {jax.default_backend()}{shards}", file=sys.stderr)
        self.bar, on_epoch, on_batch = progress_bar(steps_total(config, data),
                                                     exp.method.name)
        return on_epoch, on_batch

    def end(self, exp, seed, record, data):
        from pnn.cli.common import summary

        self.close()
        print(summary(record, record["system"], data))
        for i in record.get("instruments", []):
            d, sc = i["driver"], i["safety"]
            print(f"{i['name']} ({i['idn']}): {d['samples']:,} samples in {d['batches']} "
                  f"batches, {d['retries']} retries, {d['connects']} connection(s); safety: "
                  f"{sc['refused_batches']} batches refused, {sc['clipped']} values clipped")

    def written(self, path, records):
        print(f"result record{'s' if len(records) > 1 else ''} written to {path}")

    def saved(self, path):
        print(f"model written to {path}")

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # compare and adapt experiments
    def item(self, exp, i, n, label):
        from tqdm import tqdm

        tqdm.write(f"[{i}/{n}] {label}", file=sys.stderr)

    def epochs(self, exp, label, total):
        from tqdm import tqdm

        return _EpochBar(tqdm(total=total, desc=label, unit="epoch", file=sys.stderr,
                              leave=False, dynamic_ncols=True))

    def item_done(self, exp, rec):
        from tqdm import tqdm

        c = rec["cost"]
        val = rec.get("val_accuracy")
        tqdm.write(f"      {rec['method']}: "
                   + (f"val {val:.1%}, " if isinstance(val, float) else "")
                   + f"test {rec['test_accuracy']:.1%}, {c['physical_queries']:,} physical "
                   f"queries, {c['digital_flops']:.2e} FLOPs, {c['wall_s']:.1f} s",
                   file=sys.stderr)

    def note(self, exp, text):
        print(f"pnn {self.command}: {text}", file=sys.stderr)

    def report(self, exp, text):
        print(text)


class _EpochBar:
    """An epoch bar for compare and adapt runs (loss, validation accuracy, the changing
    physical parameter)."""

    def __init__(self, bar):
        self.bar = bar

    def update(self, rec):
        post = {}
        if "loss" in rec:
            post["loss"] = f"{rec['loss']:.3f}"
        if "val_accuracy" in rec:
            post["val"] = f"{rec['val_accuracy']:.3f}"
        if "param_value" in rec:
            post["param"] = f"{rec['param_value']:.4g}"
        self.bar.set_postfix(post)
        self.bar.update(1)

    def close(self):
        self.bar.close()


def _run(exp: Experiment, command: str) -> list[dict]:
    progress = CliProgress(command)
    try:
        return run_experiment(exp, progress=progress)
    finally:
        progress.close()


def cmd_train(args) -> int:
    """``pnn train``: the flags as an experiment, run."""
    _run(experiment_from_train_args(args), "train")
    return 0


def _is_record_file(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def _runs(exp: Experiment, records: list[dict]) -> dict[str, tuple]:
    """``{run: (test accuracy, parameter digest)}`` of records, the runs named by seed
    (train), method and seed (compare, several-method train) or method (adapt: the final
    accuracy on the changed physics)."""
    if exp.kind == "adapt":
        return {f"{m}, seed {r['seed']}": (res["test_accuracy"], res.get("params_sha256"))
                for r in records for m, res in r["methods"].items()}
    named = exp.kind == "compare" or len(exp.variants()) > 1
    return {(f"{r['method']}, seed {r['seed']}" if named else f"seed {r['seed']}"):
            (r["test_accuracy"], r.get("params_sha256")) for r in records}


def _record_seed(path: Path, i: int, record: dict) -> int:
    """A record's seed, checked as an experiment file's seeds are."""
    from pnn.config import ConfigError, check_seed

    try:
        return check_seed(record.get("seed"))
    except ConfigError as e:
        raise ValueError(f"{path}: record {i}: {e}; replay a record written by pnn") from None


def _replay(path: Path, args) -> int:
    records = read_records(path)
    missing = [i for i, r in enumerate(records) if "experiment" not in r]
    if missing:
        raise ValueError(f"{path}: record(s) {missing} hold no experiment (written before "
                         f"experiments were recorded); replay needs a record from `pnn run` "
                         f"or `pnn train`")
    held = records[0]["experiment"]
    section = held.get("system") if isinstance(held, dict) else None
    system = section.get("name") if isinstance(section, dict) else None
    if not args.allow_import:  # before the experiment is read: reading resolves the system
        registry.check_no_import(system, str(path), "pass --allow-import")
    exp = Experiment.from_dict(records[0]["experiment"], where=f"{path} (experiment)")
    # the replay runs from scratch and writes only where told to
    if exp.kind == "train":
        exp = dataclasses.replace(exp, seeds=tuple(dict.fromkeys(_record_seed(path, i, r)
                                                                for i, r in enumerate(records))),
                                  run=dataclasses.replace(exp.run, checkpoint_dir=None,
                                                          resume=False),
                                  output=dataclasses.replace(exp.output, out=args.out,
                                                             save=None))
    else:
        exp = dataclasses.replace(exp, output=dataclasses.replace(exp.output, out=args.out))
        if exp.compare is not None and exp.compare.tune_trials:
            # a fresh study: the recorded one would hand back its finished trials
            exp = dataclasses.replace(exp, compare=dataclasses.replace(exp.compare,
                                                                       tune_storage=None))
        if exp.compare is not None and (exp.compare.storage or exp.compare.workers > 1):
            # in this process: the recorded jobs' storage would hand back finished ones
            exp = dataclasses.replace(exp, compare=dataclasses.replace(
                exp.compare, storage=None, workers=1))
    exp = exp.with_overrides(args.set, where="--set")
    print(f"pnn run: replaying {exp.describe()} from {path}", file=sys.stderr)
    if exp.kind == "compare" and exp.compare.tune_trials and not args.out:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="pnn-replay-") as tmp:
            exp = dataclasses.replace(exp, output=dataclasses.replace(exp.output, out=tmp))
            replayed = _run(exp, "run")
    else:
        replayed = _run(exp, "run")
    old, new = _runs(exp, records), _runs(exp, replayed)
    same = old.keys() == new.keys()
    if not same:
        print(f"replay: the runs differ from the record's: recorded {sorted(old)}, replayed "
              f"{sorted(new)}")
    for key, (acc, sha) in new.items():
        was, was_sha = old.get(key, (None, None))
        equal = was == acc
        same &= equal
        print(f"{key}: test accuracy {acc:.4%} replayed, "
              + (f"{was:.4%} recorded" if was is not None else "none recorded")
              + f": {'identical' if equal else 'DIFFERENT'}"
              + ("" if sha == was_sha else " (trained parameters differ)"))
    print("replay: " + ("every test accuracy identical to the record" if same else
                        "test accuracy differs from the record (see above)"))
    return 0 if same or args.set else 1


def _headline(exp: Experiment, records: list[dict]) -> str:
    """The results of a run in a few words: test accuracy per method (mean over seeds)."""
    import statistics

    by: dict[str, list[float]] = {}
    for key, (acc, _) in _runs(exp, records).items():
        by.setdefault(key.rpartition(", seed")[0] if ", seed" in key else "", []).append(acc)
    return "; ".join(f"{m + ' ' if m else ''}{100 * statistics.mean(a):.1f} %"
                     + (f" ({len(a)} seeds)" if len(a) > 1 else "") for m, a in by.items())


def _run_folder(folder: Path, args) -> int:
    """``pnn run FOLDER``: every ``*.toml`` in it, sorted; those whose record is current
    (:func:`pnn.experiment.record_status`) are skipped unless ``--force``."""
    import time

    from pnn.config import ConfigError
    from pnn.experiment import check_devices, check_outputs, record_status

    given = [flag for flag, v in (("--out", args.out), ("--set", args.set),
                                  ("--print", args.print)) if v]
    if given:
        raise ValueError(f"{' and '.join(given)} apply to one experiment file, not to the "
                         f"folder {folder}; run the file itself, e.g. pnn run "
                         f"{folder / 'NAME.toml'} {given[0]} ...")
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise FileNotFoundError(f"{folder}: no experiment files (*.toml) in this folder; see "
                                f"experiments/ for examples")
    experiments, errors = [], []
    for f in files:  # every file checked before anything runs
        try:
            exp = Experiment.from_toml(f)
            check_outputs(exp)
            check_devices(exp)
            experiments.append((f, exp))
        except ConfigError as e:
            errors.append(str(e))
        except ValueError as e:  # OutputPathError, or more devices than JAX sees
            errors.append(f"{f}: {e}")
    if errors:
        raise ConfigError("\n".join(errors) + f"\n{len(errors)} of {len(files)} experiment "
                          f"file(s) in {folder} invalid; nothing was run")
    n = len(experiments)
    rows: list[tuple[str, str, str, str]] = []
    t_all = time.perf_counter()
    interrupted = False
    for i, (f, exp) in enumerate(experiments, 1):
        current, why = record_status(exp)
        if current and not args.force:
            print(f"[{i}/{n}] {f.name}: skipped, {why} (--force reruns it)", file=sys.stderr)
            rows.append((f.name, "current", "–",
                         _headline(exp, read_records(exp.record_path()))))
            continue
        print(f"[{i}/{n}] {f.name}: {exp.describe()} ("
              f"{'--force' if current else why}); {time.perf_counter() - t_all:.0f} s so far",
              file=sys.stderr)
        t = time.perf_counter()
        try:
            records = _run(exp, "run")
        except KeyboardInterrupt:
            rows.append((f.name, "interrupted", f"{time.perf_counter() - t:.0f}", ""))
            interrupted = True
            break
        except Exception as e:  # noqa: BLE001 - one failed experiment does not stop the rest
            rows.append((f.name, "FAILED", f"{time.perf_counter() - t:.0f}",
                         f"{type(e).__name__}: {e}"))
            print(f"[{i}/{n}] {f.name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        rows.append((f.name, "ran", f"{time.perf_counter() - t:.0f}", _headline(exp, records)))
    for f, _ in experiments[len(rows):]:
        rows.append((f.name, "not run", "–", ""))
    width = max(len("experiment"), *(len(r[0]) for r in rows))
    print(f"\nsummary of {folder} ({n} experiments, {time.perf_counter() - t_all:.0f} s):")
    print(f"{'experiment':<{width}}  {'status':<11}  {'s':>6}  test accuracy")
    for name, status, secs, head in rows:
        print(f"{name:<{width}}  {status:<11}  {secs:>6}  {head}")
    failed = sum(r[1] == "FAILED" for r in rows)
    counts = {s: sum(r[1] == s for r in rows) for s in ("ran", "current", "FAILED")}
    print(f"{counts['ran']} ran, {counts['current']} current (skipped), {failed} failed"
          + (", interrupted" if interrupted else ""))
    if interrupted:
        return 130
    return 1 if failed else 0


def cmd_run(args) -> int:
    if args.schema:
        return _print_schema(args)
    if args.file is None:
        raise ValueError("give an experiment (.toml, see experiments/), a folder of them, or a "
                         "result record (.json) to replay; or --schema")
    path = Path(args.file)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; give an experiment (.toml, "
                                f"see experiments/), a folder of them, or a result record "
                                f"(.json) to replay")
    if path.is_dir():
        return _run_folder(path, args)
    if _is_record_file(path):
        return _replay(path, args)
    exp = Experiment.from_toml(path).with_overrides(args.set, where="--set")
    if args.out:
        exp = dataclasses.replace(exp, output=dataclasses.replace(exp.output, out=args.out))
    if args.print:
        print(exp.to_toml(), end="")
        return 0
    _run(exp, "run")
    return 0


def _print_schema(args) -> int:
    """``pnn run --schema [--out FILE]``: the JSON Schema of experiment files."""
    from pnn.experiment.schema import experiment_schema

    text = json.dumps(experiment_schema(), indent=1, ensure_ascii=False) + "\n"
    if args.file is not None or args.set or args.print or args.force:
        raise ValueError("--schema takes no experiment and no other option but --out")
    if args.out:
        atomic_write_text(check_writable(args.out, what="--out"), text)
        print(f"pnn run: wrote the experiment schema to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def add_run_command(sub) -> None:
    """Register ``pnn run`` on the ``pnn`` sub-command parser."""
    r = sub.add_parser(
        "run", help="run an experiment file (TOML) or a folder of them, or replay the "
                    "experiment in a record (JSON)",
        description="Run an experiment described by a TOML file (kind = train, compare or "
                    "adapt; task, system and its physical parameters, methods and their "
                    "configs, perturbations or events, seeds, outputs; see experiments/*.toml "
                    "and pnn.experiment), every experiment of a folder (sorted; a progress "
                    "line each and a summary at the end; those whose record embeds the same "
                    "experiment and pnn version are skipped unless --force), or replay the "
                    "experiment embedded in a result record (a train record, a comparison's "
                    "results.json, adapt.json) and compare the test accuracies with the "
                    "recorded ones (exit status 1 if any differs).")
    r.add_argument("file", nargs="?",
                   help="experiment .toml, a folder of them (each run in turn, those "
                        "whose record is current skipped), or a result record .json "
                        "(results.json of a comparison, adapt.json) to replay")
    r.add_argument("--force", action="store_true",
                   help="with a folder: rerun experiments whose record is current too")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one value, e.g. --set method.lr=0.01 --set system.gamma=0.004 "
                        "--set seeds=[0,1] (repeatable; values read as TOML; validated)")
    r.add_argument("--out", default=None,
                   help="write the record(s) here (overrides [output] out; a replay writes "
                        "only with --out)")
    r.add_argument("--print", action="store_true",
                   help="print the validated experiment (every default filled in) as TOML and "
                        "exit")
    r.add_argument("--allow-import", action="store_true",
                   help="replay a record whose system is 'package.module:factory' (imports and "
                        "runs that module; refused without this flag)")
    r.add_argument("--schema", action="store_true",
                   help="print the JSON Schema of experiment files (or write it to --out) and "
                        "exit; experiments/experiment.schema.json is this, for editors")
    r.set_defaults(func=cmd_run)
