"""The work of :func:`pnn.experiment.run_experiment`, one runner a kind: ``train`` (each method
and seed on its simulators or instruments, perturbed, saved), ``compare``
(:func:`pnn.compare.compare`, or the jobs of :mod:`pnn.experiment.compare_jobs` on worker
processes, and its report) and ``adapt`` (:func:`pnn.adapt.run_adaptation`).

Loaded when an experiment runs, not with :mod:`pnn.experiment`: it brings JAX, the trainers and
the drivers, which ``pnn --help`` and the reading of experiment files do without."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

from pnn import registry
from pnn.adapt import run_adaptation, table, write_record
from pnn.compare import _write_json, compare, plot_tuning_curves, resumable, write_report
from pnn.drivers.assemble import instrument_layers
from pnn.experiment.compare_jobs import compare_split, run_grid
from pnn.experiment.outputs import _save_path
from pnn.experiment.records import _embed, _seeds_text, write_records
from pnn.experiment.spec import Experiment
from pnn.layers import devices
from pnn.memory import check_run
from pnn.model_io import save_model
from pnn.perturb import compose, parse_perturbations, perturbations_of
from pnn.sharded import check_devices as check_device_count


def check_devices(exp: Experiment) -> None:
    """Refuse ``devices = N`` when JAX sees fewer than N devices (see
    :func:`pnn.experiment.check_devices`)."""
    check_device_count(exp.devices, what="devices")


def run(exp: Experiment, progress) -> list[dict]:
    """The records of ``exp`` (its outputs and devices already checked)."""
    if exp.kind == "compare":
        return _run_compare(exp, progress)
    if exp.kind == "adapt":
        return [_run_adapt(exp, progress)]
    variants = exp.variants()
    records: list[dict] = []
    for v in variants:
        for seed in v.seeds:
            rec = _run_one(v, seed, progress, several_methods=len(variants) > 1)
            records.append(rec)
            if exp.output.out:
                write_records(exp.output.out, records)
                progress.written(Path(exp.output.out), records)
    return records


def _hook(progress, name: str):
    """``progress.name``, or a no-op when the progress object does not define it."""
    return getattr(progress, name, None) or (lambda *a, **k: None)


def _instrument_layers(exp: Experiment, cfg, data) -> list:
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


def _run_one(exp: Experiment, seed: int, progress, *, several_methods: bool) -> dict:
    """Train ``exp``'s method on ``seed``: its record (with the experiment embedded); the model
    saved when ``[output] save`` asks."""
    trainer = exp.trainer
    cfg = exp.method.config
    specs = [s for text in exp.perturb for s in parse_perturbations(text)]
    data = exp.task.load(seed)
    check_run(trainer, cfg, data, what=f"{exp.method.name} on {data.name}")
    with contextlib.ExitStack() as stack:
        layers, instruments = _layers(exp, cfg, data, seed, stack)
        options: dict[str, Any] = {}
        if specs and layers:
            if trainer.needs_differentiable_model:
                options["model_layers"] = layers  # the model stays ideal, the system not
            layers = [compose(layer, *specs, seed=seed * 1000 + k)
                      for k, layer in enumerate(layers)]
        where = (", ".join(f"{i.spec.name} ({i.idn})" for i in instruments) if instruments
                 else exp.system.name if trainer.uses_physical_layers else "digital")
        on_epoch, on_batch = progress.start(exp, seed, data, cfg, layers, where)
        rec, model = trainer.train(layers, data, cfg, seed=seed, progress=on_epoch,
                                   on_batch=on_batch, options=options,
                                   **_checkpointing(exp, seed, several_methods))
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
    if exp.output.save:
        target = _save_path(exp, seed, several_methods)
        save_model(model, target, record=rec, system=None if instruments else exp.system.name,
                   system_kwargs=exp.system.kwargs, data=data, system_seed=seed,
                   task=exp.task.header(seed))
        rec["saved_model"] = str(target)
        progress.saved(target)
    return rec


def _layers(exp: Experiment, cfg, data, seed: int, stack: contextlib.ExitStack):
    """``(layers, instruments)``: the instruments of ``[instrument]``, connected now and left
    safe (outputs off) when ``stack`` closes, or the system's simulators (no instrument)."""
    if not exp.instrument.addresses:
        return registry.build_layers(exp.system.name, exp.method.name, cfg, data, seed=seed,
                                     shared=exp.system.shared, devices=exp.devices,
                                     **exp.system.kwargs), []
    layers = _instrument_layers(exp, cfg, data)
    instruments = devices(layers)  # one entry per device, however many blocks use it
    for layer in instruments:
        stack.enter_context(layer)
    return layers, instruments


def _checkpointing(exp: Experiment, seed: int, several_methods: bool) -> dict:
    """The run loop's checkpoint options of ``[run]`` (a folder per method and seed when the
    experiment makes several)."""
    if not exp.run.checkpoint_dir:
        return {}
    ck = Path(exp.run.checkpoint_dir)
    if several_methods:
        ck = ck / exp.method.name
    if len(exp.seeds) > 1:
        ck = ck / f"seed-{seed}"
    return dict(checkpoint_dir=ck, checkpoint_every=exp.run.checkpoint_every,
                resume=exp.run.resume)


def _run_compare(exp: Experiment, progress) -> list[dict]:
    """``kind = "compare"``: :func:`pnn.compare.compare` over ``methods`` x ``seeds`` with each
    method's ``[method.<name>]`` settings (in this process, or as jobs of worker processes with
    ``[compare] workers`` / ``storage``: :mod:`pnn.experiment.compare_jobs`); with ``[output]
    out`` (a folder) the report of :func:`pnn.compare.write_report` (results.json holds every
    record, each embedding the experiment), tuned_configs.json and tuning_curves.png when
    tuned, results.partial.json while a one-process comparison runs."""
    spec = exp.compare
    seeds = list(exp.seeds)
    out = Path(exp.output.out) if exp.output.out else None
    split = compare_split(exp)
    first = split(seeds[0])
    splits = ("a split per seed" if spec.split == "per_seed"
              else f"split seed {spec.split_seed}")
    trials = spec.tune_trials
    title = (f"{exp.system.name} / {first.name}: {len(first.y_train)} train, "
             f"{len(first.y_val)} val, {first.n_test} test; seeds {_seeds_text(seeds)} "
             f"({splits})" + (f"; tuned, {trials} trials a method" if trials else ""))
    note = _hook(progress, "note")
    note(exp, f"{', '.join(exp.methods)} on {exp.system.name}, {first.name}, {len(seeds)} "
              f"seed(s), {splits}" + (f", {trials} tuning trials a method" if trials else "")
         + (f"; {spec.workers} worker process(es)" if spec.workers > 1 else "")
         + (f"; results in {out}" if out else ""))
    if spec.workers > 1 or spec.storage:
        records, tuned_all = run_grid(exp, lambda text: note(exp, text), out)
        if out and tuned_all:
            _write_json(out / "tuned_configs.json", tuned_all)
    else:
        records, tuned_all = _compare_here(exp, progress, split, out)
    if out:
        report = write_report(records, out, title, target=spec.target)
        (out / "results.partial.json").unlink(missing_ok=True)
        _hook(progress, "report")(exp, report["table"])
        written = ["results.json", "stats.json", "table.md", "cost_vs_accuracy.png"]
        if tuned_all:
            plot_tuning_curves(tuned_all, out / "tuning_curves.png", f"Tuning: {title}")
            written += ["tuned_configs.json", "tuning_curves.png"]
        note(exp, "wrote " + ", ".join(str(out / w) for w in written))
    return records


def _compare_here(exp: Experiment, progress, split, out: Path | None) -> tuple[list, dict]:
    """The comparison in this process (:func:`pnn.compare.compare`), resumed from
    results.partial.json: the records and the tuning results."""
    spec = exp.compare
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
        exp.system.name, split, list(exp.methods), list(exp.seeds),
        overrides={m: exp.settings(m) for m in exp.methods},
        on_start=lambda m, seed, i, n: _hook(progress, "item")(exp, i, n, f"{m}, seed {seed}"),
        on_done=on_done,
        progress_factory=lambda m, seed, cfg: _hook(progress, "epochs")(
            exp, f"{m}/seed {seed}", cfg.epochs) or _NoBar(),
        checkpoint=checkpoint, tune_trials=spec.tune_trials, tune_options=tune_options,
        on_tuned=on_tuned, system_kwargs=exp.system.kwargs, devices=exp.devices, done=done)
    return records, tuned_all


class _NoBar:
    def update(self, rec):
        pass

    def close(self):
        pass


def _run_adapt(exp: Experiment, progress) -> dict:
    """``kind = "adapt"``: :func:`pnn.adapt.run_adaptation` with the ``[adapt]`` events on the
    one seed; the record embeds the experiment; with ``[output] out`` (a folder) adapt.json,
    adapt.md and adapt.png."""
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
