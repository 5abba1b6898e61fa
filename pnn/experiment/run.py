"""Running an experiment: outputs checked before any work, the layers (simulators or
instruments), the train, compare and adapt runners, progress hooks."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable

from pnn import registry
from pnn.experiment.records import _embed, _seeds_text, write_records
from pnn.experiment.spec import Experiment


# ------------------------------------------------------------------------------ running
class RunProgress:
    """What :func:`run_experiment` reports while it runs (subclass it; every method is
    optional). ``start`` returns ``(on_epoch, on_batch)`` for the run loop."""

    def start(self, exp: Experiment, seed: int, data, config, layers, where: str):
        return None, None

    def end(self, exp: Experiment, seed: int, record: dict, data) -> None:
        pass

    def written(self, path: Path, records: list) -> None:
        pass

    def saved(self, path: Path) -> None:
        pass

    # compare and adapt experiments
    def item(self, exp: Experiment, i: int, n: int, label: str) -> None:
        """Run ``i`` of ``n`` starts (a method and seed)."""

    def epochs(self, exp: Experiment, label: str, total: int):
        """An object with ``update(history_entry)`` and ``close()`` (a bar over ``total``
        epochs), or ``None``."""
        return None

    def item_done(self, exp: Experiment, record: dict) -> None:
        pass

    def note(self, exp: Experiment, text: str) -> None:
        """A line worth showing (a method tuned, the files written)."""

    def report(self, exp: Experiment, text: str) -> None:
        """The finished experiment's table (Markdown)."""


def _hook(progress, name: str):
    """``progress.name``, or a no-op when the progress object does not define it."""
    return getattr(progress, name, None) or (lambda *a, **k: None)


def _instrument_layers(exp: Experiment, cfg, data) -> list:
    from pnn.drivers.assemble import instrument_layers

    method = exp.method.name
    trainer = registry.check_runs_on_instruments(method)
    return instrument_layers(exp.instrument.addresses,
                             trainer.shapes(cfg, data.n_features, data.n_classes),
                             profile=exp.instrument.profile,
                             what=f"{method} with hidden={tuple(cfg.hidden)}",
                             hint=registry.width_hint(method, trainer.shapes(
                                 cfg, data.n_features, data.n_classes)))


def _instrument_record(layer) -> dict:
    return {"name": layer.spec.name, "idn": layer.idn, "profile": str(layer.profile.source),
            # the profile's full contents: the file may change or vanish after the run
            "profile_contents": layer.profile_dict(),
            "driver": dataclasses.asdict(layer.stats),
            "safety": dataclasses.asdict(layer.safety.counts)}


def _saver(exp: Experiment) -> Callable | None:
    if not exp.output.save:
        return None
    try:
        from pnn.model_io import save_model
    except ImportError:
        raise ValueError(f"[output] save = {exp.output.save!r}: saving a model needs "
                         f"pnn.model_io.save_model, which this installation lacks; remove the "
                         f"key") from None
    return save_model


#: the files a compare / adapt experiment writes into its ``[output] out`` folder
OUTPUT_FILES = {"compare": ("results.json", "results.partial.json", "stats.json", "table.md",
                            "cost_vs_accuracy.png", "cost_vs_accuracy.svg", "tuned_configs.json",
                            "tune.journal"),
                "adapt": ("adapt.json", "adapt.md", "adapt.png", "adapt.svg")}


def _save_path(exp: Experiment, seed: int, several_methods: bool) -> Path:
    """Where ``[output] save`` puts the model of ``seed`` (tagged by method and seed when the
    experiment makes several)."""
    target = Path(exp.output.save)
    tag = (f"-{exp.method.name}" if several_methods else "") + \
          (f"-seed{seed}" if len(exp.seeds) > 1 else "")
    return target.with_name(f"{target.stem}{tag}{target.suffix}") if tag else target


def check_outputs(exp: Experiment) -> None:
    """Refuse, before anything runs, an experiment whose outputs cannot be written: ``[output]
    out`` (a record file for ``kind = "train"``, a folder for compare and adapt), every model
    file of ``[output] save`` and ``[run] checkpoint_dir`` (:func:`pnn.fileio.check_writable`).

    Raises:
        pnn.fileio.OutputPathError: (a ``ValueError``) naming the key, the path and the fix.
    """
    from pnn.fileio import check_writable

    if exp.output.out:
        if exp.kind == "train":
            check_writable(exp.output.out, what="[output] out (--out)")
        else:
            check_writable(exp.output.out, folder=True, what="[output] out (--out)",
                           files=OUTPUT_FILES[exp.kind])
    if exp.kind == "train":
        variants = exp.variants()
        for v in variants:
            if v.output.save:
                for seed in v.seeds:
                    check_writable(_save_path(v, seed, len(variants) > 1),
                                   what="[output] save (--save)")
        if exp.run.checkpoint_dir:
            check_writable(exp.run.checkpoint_dir, folder=True,
                           what="[run] checkpoint_dir (--checkpoint-dir)")


def check_devices(exp: Experiment) -> None:
    """Refuse, before anything runs, ``devices = N`` when JAX sees fewer than N devices
    (:func:`pnn.sharded.check_devices`: the message says how to get more on a CPU)."""
    if exp.devices != 1:
        from pnn.sharded import check_devices as check

        check(exp.devices, what="devices")


def run_experiment(exp: Experiment, progress: RunProgress | None = None) -> list[dict]:
    """Run ``exp`` once per method (``methods``, else ``[method]``) and seed; return the
    records.

    Per run: load the task (the split depends on the seed), build the method's physical layers
    (``registry.build_layers`` with the system's parameters; or connect the instruments), wrap
    the perturbations (a trainer that ``needs_differentiable_model`` keeps the unperturbed
    simulators as its model), train through ``Trainer.train`` and add the experiment to the
    record (``record["experiment"]``: the whole experiment, or with ``methods`` the
    single-method experiment that made the record, so every record replays). With ``[output]
    out`` the records are written atomically after every run, so a crash loses no finished
    run.
    """
    progress = progress or RunProgress()
    check_outputs(exp)  # before any data is loaded or anything trains
    check_devices(exp)
    if exp.kind == "compare":
        return _run_compare(exp, progress)
    if exp.kind == "adapt":
        return [_run_adapt(exp, progress)]
    variants = exp.variants()
    for v in variants:
        _saver(v)  # refuse before any training
    records: list[dict] = []
    for v in variants:
        for seed in v.seeds:
            rec = _run_one(v, seed, progress, several_methods=len(variants) > 1)
            records.append(rec)
            if exp.output.out:
                write_records(exp.output.out, records)
                progress.written(Path(exp.output.out), records)
    return records


def _run_one(exp: Experiment, seed: int, progress: RunProgress, *,
             several_methods: bool) -> dict:
    from pnn.perturb import compose, parse_perturbations, perturbations_of

    trainer = exp.trainer
    cfg = exp.method.config
    save = _saver(exp)
    specs = [s for text in exp.perturb for s in parse_perturbations(text)]
    data = exp.task.load(seed)
    from pnn.memory import check_run

    check_run(trainer, cfg, data, what=f"{exp.method.name} on {data.name}")
    with contextlib.ExitStack() as stack:
        if exp.instrument.addresses:
            layers = _instrument_layers(exp, cfg, data)
            from pnn.layers import devices

            instruments = devices(layers)  # one entry per device, however many blocks use it
            for layer in instruments:  # connected now; left safe (outputs off) on any exit
                stack.enter_context(layer)
        else:
            layers = registry.build_layers(exp.system.name, exp.method.name, cfg, data,
                                           seed=seed, shared=exp.system.shared,
                                           devices=exp.devices, **exp.system.kwargs)
            instruments = []
        options: dict[str, Any] = {}
        if specs and layers:
            if trainer.needs_differentiable_model:
                options["model_layers"] = layers  # the model stays ideal, the system not
            layers = [compose(layer, *specs, seed=seed * 1000 + k)
                      for k, layer in enumerate(layers)]
        kwargs: dict[str, Any] = {}
        if exp.run.checkpoint_dir:
            ck = Path(exp.run.checkpoint_dir)
            if several_methods:
                ck = ck / exp.method.name
            if len(exp.seeds) > 1:
                ck = ck / f"seed-{seed}"
            kwargs.update(checkpoint_dir=ck, checkpoint_every=exp.run.checkpoint_every,
                          resume=exp.run.resume)
        where = (", ".join(f"{i.spec.name} ({i.idn})" for i in instruments) if instruments
                 else exp.system.name if trainer.uses_physical_layers else "digital")
        on_epoch, on_batch = progress.start(exp, seed, data, cfg, layers, where)
        rec, model = trainer.train(layers, data, cfg, seed=seed, progress=on_epoch,
                                   on_batch=on_batch, options=options, **kwargs)
        system = "instrument" if instruments else exp.system.name
        rec.update({"system": system if trainer.uses_physical_layers else "digital",
                    "task": exp.task.name, "data": data.describe(),
                    # the JAX devices the simulator layers ran on (pnn.sharded)
                    "devices": exp.devices if layers and not instruments else 1,
                    "perturbations": [[w.describe() for w in perturbations_of(layer)]
                                      for layer in layers] if specs else []})
        if instruments:
            rec["instruments"] = [_instrument_record(i) for i in instruments]
        _embed(rec, exp)
    progress.end(exp, seed, rec, data)
    if save is not None:
        target = _save_path(exp, seed, several_methods)
        save(model, target, record=rec, system=None if instruments else exp.system.name,
             system_kwargs=exp.system.kwargs, data=data, system_seed=seed,
             task=exp.task.header(seed))
        rec["saved_model"] = str(target)
        progress.saved(target)
    return rec


def _run_compare(exp: Experiment, progress) -> list[dict]:
    """``kind = "compare"``: :func:`pnn.compare.compare` over ``methods`` x ``seeds`` with each
    method's ``[method.<name>]`` settings; with ``[output] out`` (a folder) the report of
    :func:`pnn.compare.write_report` (results.json holds every record, each embedding the
    experiment), tuned_configs.json when tuned, results.partial.json while it runs."""
    from pnn.compare import _write_json, compare, resumable, write_report

    spec = exp.compare
    seeds = list(exp.seeds)
    out = Path(exp.output.out) if exp.output.out else None
    cache: dict[int, Any] = {}

    def split(seed):
        if seed not in cache:
            cache[seed] = exp.task.load(seed)
        return cache[seed]

    if spec.split == "per_seed":
        data, first, splits = split, split(seeds[0]), "a split per seed"
    else:
        data = first = split(spec.split_seed)
        splits = f"split seed {spec.split_seed}"
    trials = spec.tune_trials
    title = (f"{exp.system.name} / {first.name}: {len(first.y_train)} train, "
             f"{len(first.y_val)} val, {first.n_test} test; seeds {_seeds_text(seeds)} "
             f"({splits})" + (f"; tuned, {trials} trials a method" if trials else ""))
    _hook(progress, "note")(exp, f"{', '.join(exp.methods)} on {exp.system.name}, "
                                 f"{first.name}, {len(seeds)} seed(s), {splits}"
                                 + (f", {trials} tuning trials a method" if trials else "")
                                 + (f"; results in {out}" if out else ""))
    tuned_all: dict[str, dict] = {}

    def on_tuned(method, res):
        tuned_all[method] = res
        if out:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "tuned_configs.json", tuned_all)
        _hook(progress, "note")(exp, f"{method}: tuned, best validation "
                                     f"{res['best_val_accuracy']:.1%} ({res['n_complete']} "
                                     f"trials): {res['best_params']}")

    def checkpoint(records):
        if out:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "results.partial.json", records)

    def on_done(rec):
        _embed(rec, exp)
        _hook(progress, "item_done")(exp, rec)

    tune_options = {"out": out or "tune_results", "jobs": spec.tune_jobs,
                    "storage": spec.tune_storage, "task_options": exp.task.cli_options()}
    done = resumable(out / "results.partial.json") if out else []
    if done:
        _hook(progress, "note")(exp, f"{out / 'results.partial.json'} holds {len(done)} run(s) "
                                     f"of an interrupted comparison: each run with the same "
                                     f"settings is reused (delete the file to start afresh)")
    records = compare(
        exp.system.name, data, list(exp.methods), seeds,
        overrides={m: exp.settings(m) for m in exp.methods},
        on_start=lambda m, seed, i, n: _hook(progress, "item")(exp, i, n, f"{m}, seed {seed}"),
        on_done=on_done,
        progress_factory=lambda m, seed, cfg: _hook(progress, "epochs")(
            exp, f"{m}/seed {seed}", cfg.epochs) or _NoBar(),
        checkpoint=checkpoint, tune_trials=trials, tune_options=tune_options,
        on_tuned=on_tuned, system_kwargs=exp.system.kwargs, devices=exp.devices, done=done)
    if out:
        report = write_report(records, out, title, target=spec.target)
        (out / "results.partial.json").unlink(missing_ok=True)
        _hook(progress, "report")(exp, report["table"])
        written = ["results.json", "stats.json", "table.md", "cost_vs_accuracy.png"]
        if tuned_all:
            written.append("tuned_configs.json")
        _hook(progress, "note")(exp, "wrote " + ", ".join(str(out / w) for w in written))
    return records


class _NoBar:
    def update(self, rec):
        pass

    def close(self):
        pass


def _run_adapt(exp: Experiment, progress) -> dict:
    """``kind = "adapt"``: :func:`pnn.adapt.run_adaptation` with the ``[adapt]`` events on the
    one seed; the record embeds the experiment; with ``[output] out`` (a folder) adapt.json,
    adapt.md and adapt.png."""
    from pnn.adapt import run_adaptation, table, write_record

    spec = exp.adapt
    seed = exp.seeds[0]
    data = exp.task.load(seed)
    n = len(exp.methods)
    step = iter(range(1, n + 1))

    def bar(method, cfg):
        _hook(progress, "item")(exp, next(step), n, f"{method}, seed {seed}")
        return _hook(progress, "epochs")(exp, f"{method}/{exp.system.name}", cfg.epochs) \
            or _NoBar()

    record = run_adaptation(exp.system.name, data, list(exp.methods), list(spec.events),
                            epochs=spec.epochs, seed=seed, twin=spec.pat_twin,
                            progress_factory=bar, tolerance=spec.tolerance,
                            evals_per_epoch=spec.evals_per_epoch,
                            overrides={m: exp.settings(m) for m in exp.methods},
                            system_kwargs=exp.system.kwargs)
    _embed(record, exp)
    _hook(progress, "report")(exp, table(record))
    if exp.output.out:
        out = Path(exp.output.out)
        write_record(record, out)
        _hook(progress, "note")(exp, f"wrote {out / 'adapt.json'}, {out / 'adapt.md'} and "
                                     f"{out / 'adapt.png'}")
    return record
