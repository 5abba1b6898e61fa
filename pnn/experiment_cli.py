"""``pnn run`` (an experiment file, or a record to replay) and the experiment behind
``pnn train``: the command line builds an :class:`~pnn.experiment.Experiment` and hands it to
:func:`~pnn.experiment.run_experiment`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from pnn import registry
from pnn.experiment import Experiment, RunProgress, read_records, run_experiment

__all__ = ["add_run_command", "cmd_run", "cmd_train", "experiment_from_train_args",
           "CliProgress"]

#: ``pnn train`` flags that set a field of the method's Config (when it has that field)
_CONFIG_FLAGS = ("epochs", "batch_size", "lr", "hidden", "n_meas", "inner_steps", "theta",
                 "goodness")


def experiment_from_train_args(args) -> Experiment:
    """The experiment that ``pnn train``'s flags describe (validated like a TOML file, with
    ``--set`` applied last)."""
    fields = {f.name for f in dataclasses.fields(registry.get_trainer(args.method).Config)}
    method = {"name": args.method}
    method.update({k: getattr(args, k) for k in _CONFIG_FLAGS
                   if getattr(args, k, None) is not None and k in fields})
    task = {"name": args.task, "test_fraction": args.test_fraction, "download": args.download}
    if args.task == "images":
        task.update(source=args.image_source, n_features=args.n_features)
    elif args.task == "vowels":
        task["source"] = args.vowel_source
    if args.classes:
        task["classes"] = args.classes
    if args.data_path:
        task["path"] = args.data_path
    d = {"seeds": [args.seed], "task": task, "system": {"name": args.system}, "method": method,
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
    exp = Experiment.from_dict(d, where="command line")
    return exp.with_overrides(getattr(args, "set", None) or [])


class CliProgress(RunProgress):
    """A line on what runs, a per-step progress bar, the summary of every record."""

    def __init__(self, command: str):
        self.command = command
        self.bar = None

    def start(self, exp, seed, data, config, layers, where):
        import jax

        from pnn.cli import _progress_bar, _steps_total

        print(f"pnn {self.command}: {exp.method.name} on {where} ({len(layers)} physical "
              f"layer(s)), {data.name}: {len(data.y_train)} train / {len(data.y_val)} "
              f"validation / {len(data.y_test)} test samples, {data.n_classes} classes, seed "
              f"{seed}; JAX on {jax.default_backend()}", file=sys.stderr)
        self.bar, on_epoch, on_batch = _progress_bar(_steps_total(config, data),
                                                     exp.method.name)
        return on_epoch, on_batch

    def end(self, exp, seed, record, data):
        from pnn.cli import _summary

        self.close()
        print(_summary(record, record["system"], data))
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


def _replay(path: Path, args) -> int:
    records = read_records(path)
    missing = [i for i, r in enumerate(records) if "experiment" not in r]
    if missing:
        raise ValueError(f"{path}: record(s) {missing} hold no experiment (written before "
                         f"experiments were recorded); replay needs a record from `pnn run` "
                         f"or `pnn train`")
    exp = Experiment.from_dict(records[0]["experiment"], where=f"{path} (experiment)")
    # the replay runs the recorded seeds from scratch and writes only where told to
    exp = dataclasses.replace(exp, seeds=tuple(int(r["seed"]) for r in records),
                              run=dataclasses.replace(exp.run, checkpoint_dir=None,
                                                      resume=False),
                              output=dataclasses.replace(exp.output, out=args.out, save=None))
    exp = exp.with_overrides(args.set, where="--set")
    print(f"pnn run: replaying {exp.describe()} from {path}", file=sys.stderr)
    replayed = _run(exp, "run")
    same = True
    for old, new in zip(records, replayed):
        a, b = old.get("test_accuracy"), new["test_accuracy"]
        equal = a == b
        same &= equal
        print(f"seed {new['seed']}: test accuracy {b:.4%} replayed, {a:.4%} recorded: "
              f"{'identical' if equal else 'DIFFERENT'}"
              + ("" if new.get("params_sha256") == old.get("params_sha256") else
                 " (trained parameters differ)"))
    print("replay: " + ("every test accuracy identical to the record" if same else
                        "test accuracy differs from the record (see above)"))
    return 0 if same or args.set else 1


def cmd_run(args) -> int:
    path = Path(args.file)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; give an experiment (.toml, see "
                                f"experiments/) or a result record (.json) to replay")
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


def add_run_command(sub) -> None:
    """Register ``pnn run`` on the ``pnn`` sub-command parser."""
    r = sub.add_parser(
        "run", help="run an experiment file (TOML), or replay the experiment in a record (JSON)",
        description="Run an experiment described by a TOML file (task, system and its physical "
                    "parameters, method and its config, perturbations, seeds, outputs; see "
                    "experiments/*.toml and pnn.experiment), or replay the experiment embedded "
                    "in a result record and compare the test accuracy with the recorded one "
                    "(exit status 1 if it differs).")
    r.add_argument("file", help="experiment .toml, or a result record .json to replay")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one value, e.g. --set method.lr=0.01 --set system.gamma=0.004 "
                        "--set seeds=[0,1] (repeatable; values read as TOML; validated)")
    r.add_argument("--out", default=None,
                   help="write the record(s) here (overrides [output] out; a replay writes "
                        "only with --out)")
    r.add_argument("--print", action="store_true",
                   help="print the validated experiment (every default filled in) as TOML and "
                        "exit")
    r.set_defaults(func=cmd_run)


if __name__ == "__main__":  # pragma: no cover
    from pnn.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
