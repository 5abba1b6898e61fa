"""The comparison harness: every method on the same physics and seeds, with its cost.

:func:`compare` trains each requested method for each seed, each on freshly built physical
layers of the same system, and collects the result records. ``data`` is one Dataset (one
split shared by every seed) or a callable ``seed -> Dataset`` (each seed its own split and
initialisation; the same seed gives every method the same split, so differences pair by
seed). With ``tune_trials = N`` every method is first tuned (:func:`pnn.tune.tune`, N trials
on the validation split of the first seed's split, test sealed) and its best configuration is
then run on every seed.

:func:`write_report` writes ``results.json`` (every record), ``stats.json`` and ``table.md``
(test accuracy mean ± std with a 95 % t interval, paired differences against PhyLL, learning
costs to a target validation accuracy with evaluation costs apart, modelled energy) and
``cost_vs_accuracy.png`` (and ``.svg``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pnn import registry
from pnn.fileio import atomic_write_text
from pnn.figures import chance_line, colour, log_ticks, method_name, save, talk_style
from pnn.memory import check_run
from pnn.sharded import check_devices
from pnn.stats import ENERGY_NOTE, ENERGY_PER_FLOP_J, summary_rows, t_interval
from pnn.tune import tune

__all__ = ["compare", "summarise", "markdown_table", "plot_costs", "write_report",
           "base_values", "method_order", "budget_source", "plot_tuning_curves"]


def base_values(method: str, overrides: dict, n_params: int | None) -> dict:
    """The fixed Config values of ``method`` in a comparison (defaults, overrides, budget)."""
    trainer = registry.get_trainer(method)
    fields = {f.name for f in dataclasses.fields(trainer.Config)}
    kw = {k: v for k, v in {**trainer.compare_defaults, **overrides}.items()
          if k in fields}
    if trainer.matches_parameter_budget and n_params is not None:
        kw.setdefault("n_params", n_params)
    return kw


def _config(method: str, overrides: dict, n_params: int | None):
    return registry.get_trainer(method).Config(**base_values(method, overrides, n_params))


def _data_for(data) -> Callable:
    if callable(data) and not hasattr(data, "x_train"):
        return data
    return lambda seed: data


def compare(system: str, data, methods: list[str], seeds: list[int], *,
            overrides: dict | None = None, on_start: Callable | None = None,
            on_done: Callable | None = None, progress_factory: Callable | None = None,
            checkpoint: Callable | None = None, tune_trials: int = 0,
            tune_options: dict | None = None, on_tuned: Callable | None = None,
            system_kwargs: dict | None = None, devices: int = 1,
            done: list[dict] | None = None) -> list[dict]:
    """Run ``methods`` x ``seeds``; returns the result records (models dropped).

    Args:
        data: a Dataset (one split for every seed) or ``seed -> Dataset`` (a split per seed).
        overrides: method name -> Config overrides (fixed during tuning too).
        tune_trials: 0, or the Optuna trials per method (:func:`pnn.tune.tune` on the first
            seed's split, test sealed); each method's best configuration then runs on every
            seed. A method on the physics also searches the system's physical levers
            (:attr:`pnn.registry.System.levers`, those not fixed by ``system_kwargs``) and runs
            every seed with the strength its tuning chose.
        tune_options: more :func:`pnn.tune.tune` arguments (``storage``, ``out``, ``jobs``,
            ``task_options``).
        on_tuned: ``on_tuned(method, tune_result)`` after each method's study.
        system_kwargs: the simulator's physical parameters (constructor arguments; default:
            its own), fixed during tuning too.
        devices: the simulator layers run data-parallel over the first ``devices`` JAX
            devices (:func:`pnn.registry.build_layers`; tuning trials too).
        on_start, on_done, progress_factory, checkpoint: progress (``on_start(method, seed,
            i, n)``, ``on_done(record)``, ``progress_factory(method, seed, cfg)`` -> object with
            ``update(history_entry)`` and ``close()``, ``checkpoint(records)`` after every run).
        done: records of an interrupted run of the same comparison (what ``checkpoint`` was
            given, e.g. ``results.partial.json``): a run whose method, seed, system, physical
            parameters, data split and complete configuration equal a record's is not trained
            again; that record is used (``on_done`` is not called for it). A run whose
            settings differ in anything is trained afresh. :func:`resumable` reads the file.

    The digital MLP (``bp``) gets the trainable-parameter budget of the first physical method
    run with the same seed (physical methods run first).
    """
    overrides = overrides or {}
    _check_arguments(methods, seeds, tune_trials, devices)
    system_kwargs = dict(system_kwargs or {})
    levers = {k: v for k, v in registry.levers(system).items()
              if k not in system_kwargs}
    split = _cached(_data_for(data))
    order = method_order(methods)
    runs = _Comparison(system, seeds, system_kwargs, devices, done, n=len(order) * len(seeds),
                       on_start=on_start, on_done=on_done, progress_factory=progress_factory,
                       checkpoint=checkpoint)
    for method in order:
        tuned = None
        if tune_trials:
            base = base_values(method, overrides.get(method, {}), runs.budget.get(seeds[0]))
            tuned = _tune(method, system, split(seeds[0]), seeds[0], tune_trials, tune_options,
                          base, devices, system_kwargs, levers)
            if on_tuned:
                on_tuned(method, tuned)
        for seed in seeds:
            runs.run(method, seed, split, overrides.get(method, {}), tuned, tune_trials)
    return runs.records


def method_order(methods: list[str]) -> list[str]:
    """The order :func:`compare` runs ``methods`` in: physical methods first (in the given
    order), so that a budget-matched reference can match their size; then the others."""
    return sorted(methods, key=lambda m: not registry.get_trainer(m).uses_physical_layers)


def budget_source(methods: list[str], method: str) -> str | None:
    """The method whose run on a seed sets ``method``'s trainable-parameter budget on that seed
    (the first physical method of :func:`method_order`), or ``None`` when ``method`` matches
    no budget or no physical method runs."""
    physical = [m for m in method_order(methods)
                if registry.get_trainer(m).uses_physical_layers]
    if not registry.get_trainer(method).matches_parameter_budget or not physical \
            or physical[0] == method:
        return None
    return physical[0]


def _check_arguments(methods: list[str], seeds: list[int], tune_trials, devices: int) -> None:
    """Refuse, before any data is loaded, unknown methods, no seed, more devices than JAX sees
    and a bad number of tuning trials."""
    unknown = [m for m in methods if m not in registry.TRAINERS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid methods: "
                         f"{', '.join(sorted(registry.TRAINERS))}")
    if not seeds:
        raise ValueError("compare: expected at least one seed, got none")
    if devices != 1:
        check_devices(devices, what="devices")  # before any data is loaded
    if isinstance(tune_trials, bool) or not isinstance(tune_trials, int) or tune_trials < 0:
        raise ValueError(f"tune_trials = {tune_trials!r}: expected 0 (no tuning) or a "
                         "positive number of trials per method")


def _cached(data_for: Callable) -> Callable:
    """``data_for`` loading each seed's split once."""
    cache: dict[int, object] = {}

    def split(seed):
        if seed not in cache:
            cache[seed] = data_for(seed)
        return cache[seed]

    return split


def _tune(method: str, system: str, data, seed: int, trials: int, tune_options: dict | None,
          base: dict, devices: int, system_kwargs: dict, levers: dict) -> dict:
    """:func:`pnn.tune.tune` of ``method`` on ``data`` (the first seed's split), its fixed
    settings ``base``, the physical ``levers`` searched beside its fields."""
    opts = dict(tune_options or {})
    return tune(method, system, opts.pop("task_options", {}), n_trials=trials, seed=seed,
                base_config=base, data=data, devices=devices, system_kwargs=system_kwargs,
                system_search=levers, **opts)


class _Comparison:
    """The runs of one comparison, one :meth:`run` a method and seed: the records so far, the
    trainable-parameter budget each seed's first physical method set, and the progress hooks
    (see :func:`compare`)."""

    def __init__(self, system: str, seeds: list[int], system_kwargs: dict, devices: int,
                 done: list[dict] | None, *, n: int, on_start: Callable | None,
                 on_done: Callable | None, progress_factory: Callable | None,
                 checkpoint: Callable | None):
        self.system, self.seeds, self.system_kwargs = system, seeds, system_kwargs
        self.devices, self.done, self.n = devices, done, n
        self.on_start, self.on_done = on_start, on_done
        self.progress_factory, self.checkpoint = progress_factory, checkpoint
        self.records: list[dict] = []
        self.budget: dict[int, int] = {}
        self.i = 0

    def run(self, method: str, seed: int, split: Callable, overrides: dict, tuned: dict | None,
            tune_trials: int) -> None:
        """Train ``method`` on ``seed`` (or reuse the interrupted run's record of it)."""
        trainer = registry.get_trainer(method)
        self.i += 1
        if self.on_start:
            self.on_start(method, seed, self.i, self.n)
        d = split(seed)
        cfg = self._config(method, seed, trainer, overrides, tuned)
        physics = dict(tuned["best_system"]) if tuned is not None else self.system_kwargs
        earlier = _earlier(self.done, method, seed, self.system, physics, d, cfg, trainer)
        if earlier is not None:
            if trainer.uses_physical_layers and seed not in self.budget:
                self.budget[seed] = earlier["n_trainable_params"]
            self._add(earlier)
            return
        rec, layers = self._train(method, seed, trainer, cfg, d, physics)
        if tuned is not None:
            rec["tuned"] = {"study_name": tuned["study_name"], "n_trials": tune_trials,
                            "tuned_on_seed": self.seeds[0],
                            "best_val_accuracy": tuned["best_val_accuracy"],
                            "best_params": tuned["best_params"],
                            # the tuning curve: whether the trials were enough
                            "curve": tuned.get("curve")}
        if layers and seed not in self.budget:
            self.budget[seed] = rec["n_trainable_params"]
        self._add(rec, new=True)

    def _config(self, method: str, seed: int, trainer, overrides: dict, tuned: dict | None):
        """The run's Config: the tuned one (budget-matched to the seed's physical method), or
        the defaults with the overrides."""
        if tuned is None:
            return _config(method, overrides, self.budget.get(seed))
        values = dict(tuned["best_config"])
        if trainer.matches_parameter_budget and seed in self.budget:
            values["n_params"] = self.budget[seed]
        return trainer.Config(**values)

    def _train(self, method: str, seed: int, trainer, cfg, d, physics: dict) -> tuple:
        """One training run on freshly built layers: its record (with where and how long it
        ran) and the layers."""
        check_run(trainer, cfg, d, what=f"{method} on {d.name}")
        layers = registry.build_layers(self.system, method, cfg, d, seed=seed,
                                       devices=self.devices, **physics)
        prog = self.progress_factory(method, seed, cfg) if self.progress_factory else None
        t = time.perf_counter()
        try:
            rec, _ = trainer.train(layers, d, cfg, seed=seed,
                                   progress=prog.update if prog else None)
        finally:
            if prog:
                prog.close()
        if layers and physics:
            rec["system_kwargs"] = physics
        rec.update({"system": self.system if layers else "digital", "data": d.describe(),
                    "devices": self.devices if layers else 1,
                    "run_s": round(time.perf_counter() - t, 2)})
        return rec, layers

    def _add(self, rec: dict, *, new: bool = False) -> None:
        self.records.append(rec)
        if new and self.on_done:
            self.on_done(rec)
        if self.checkpoint:
            self.checkpoint(self.records)


def _jsonable(value):
    """``value`` as a record stores it (tuples as lists, through JSON)."""
    return json.loads(json.dumps(value, default=str))


def _earlier(done, method, seed, system, physics, data, cfg, trainer) -> dict | None:
    """The record in ``done`` of exactly this run (see :func:`compare`'s ``done``), if any."""
    for rec in done or ():
        if rec.get("method") != method or rec.get("seed") != seed:
            continue
        want_system = system if trainer.uses_physical_layers else "digital"
        same = (rec.get("system") == want_system
                and _jsonable(rec.get("system_kwargs", {})) == _jsonable(
                    physics if trainer.uses_physical_layers else {})
                and _jsonable(rec.get("data")) == _jsonable(data.describe())
                and _jsonable(rec.get("config")) == _jsonable(dataclasses.asdict(cfg)))
        if same:
            return rec
    return None


def resumable(path) -> list[dict]:
    """The records of an interrupted comparison's ``results.partial.json`` (``[]`` when there
    is none).

    Raises:
        ValueError: the file is not a list of result records (damaged: delete it to start
            afresh)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the interrupted comparison's records ({e}); "
                         f"delete the file to start the comparison afresh") from None
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and {"method", "seed", "config"} <= set(r) for r in records):
        raise ValueError(f"{path}: not a list of result records; delete the file to start the "
                         f"comparison afresh")
    return records


def summarise(records: list[dict], *, reference: str = "phyll", target: float | None = None,
              confidence: float = 0.95) -> list[dict]:
    """One row a method (see :func:`pnn.stats.summary_rows`)."""
    return summary_rows(records, reference=reference, target=target, confidence=confidence,
                        per_query_j=registry.energy_per_query())[0]


def _pct(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def _num(v, fmt: str) -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, fmt)


def markdown_table(rows: list[dict], *, reference: str = "phyll",
                   target: float | None = None) -> str:
    """The comparison table: accuracy with its 95 % interval, paired difference to
    ``reference``, learning costs to the target (evaluation apart), modelled energy."""
    lines = [
        f"| method | runs on | seeds | test accuracy % (mean ± std) | 95 % interval | "
        f"Δ vs {reference} (points) [95 % interval] | reached target | train queries to "
        "target | digital FLOPs to target | wall s to target | modelled energy to target "
        "(J) | eval queries (apart) | trainable params |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = sorted(rows, key=lambda r: r["method"] != reference)  # the reference first
    for r in rows:
        d = r.get("diff")
        if r["method"] == reference:
            dtext = "reference"
        elif d is None:
            dtext = "–"
        elif d["n"] < 2:
            dtext = f"{100 * d['mean']:+.1f} (1 seed, no interval)"
        else:
            flag = " **excludes 0**" if d["excludes_zero"] else " (includes 0)"
            dtext = f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]{flag}"
        # accuracies lie in [0, 1]: the displayed interval is clipped there (stats.json keeps
        # the raw t interval)
        ci = ("n/a (1 seed)" if not math.isfinite(r["test_acc_lo"]) else
              f"[{_pct(max(r['test_acc_lo'], 0.0))}, {_pct(min(r['test_acc_hi'], 1.0))}]")
        lines.append(
            f"| {r['method']} | {r['system']} | {r['n_seeds']} | {_pct(r['test_acc_mean'])} ± "
            f"{_pct(r['test_acc_std'])} | {ci} | {dtext} | {r['reached']}/{r['n_seeds']} | "
            f"{_num(r['target_train_queries'], ',.0f')} | {_num(r['target_flops'], '.2e')} | "
            f"{_num(r['target_wall_s'], '.2f')} | {_num(r['target_energy_j'], '.2e')} | "
            f"{r['eval_queries']:,.0f} | {r['params']} |")
    notes = []
    if target is not None:
        notes.append(f"Target: validation accuracy {100 * target:.1f} % (costs to target are "
                     "medians over the seeds that reached it; learning only: physical queries "
                     "of purpose train, digital FLOPs and wall time, evaluation excluded and "
                     "listed apart).")
    notes.append("Intervals: two-sided 95 % Student t over seeds (accuracy intervals shown "
                 "clipped to [0, 100]; raw values in stats.json); Δ pairs runs by seed (same "
                 "split and initialisation seed).")
    notes.append(ENERGY_NOTE.format(flop=ENERGY_PER_FLOP_J) + ".")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _train_flops(r: dict) -> float:
    h = r.get("history") or []
    if h and "digital_flops" in h[-1]:
        return float(h[-1]["digital_flops"])
    return float(r["cost"]["digital_flops"])


def plot_costs(records: list[dict], path: Path, title: str, *,
               confidence: float = 0.95) -> None:
    """Test accuracy against learning costs, error bars from the t interval; written as
    ``path`` (PNG) and an SVG beside it (:func:`pnn.figures.save`).

    Left: physical methods against their training physical queries (log axis); methods that
    spend none (digital ones, in-silico training) are not placed on that axis (named in the
    panel instead). Right: every method against its training digital FLOPs. A dashed line marks
    chance accuracy. Methods carry their plain names (their :class:`~pnn.registry.Trainer`
    display names).
    """
    n_classes = max((len(r.get("data", {}).get("classes", [])) for r in records), default=0)
    with talk_style() as plt:
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.4), sharey=True)
        apart = []
        for j, method in enumerate(dict.fromkeys(r["method"] for r in records)):
            rs = [r for r in records if r["method"] == method]
            acc = [100 * r["test_accuracy"] for r in rs]
            iv = t_interval(acc, confidence)
            h = iv["half_width"] if math.isfinite(iv["half_width"]) else 0.0
            m = iv["mean"]  # the interval, clipped to the possible range [0, 100]
            err = [[m - max(m - h, 0.0)], [min(m + h, 100.0) - m]]
            q = [r["cost"].get("queries_by_purpose", {}).get("train", 0) for r in rs]
            f = [_train_flops(r) for r in rs]
            c, name = colour(method, j), method_name(method)
            style = dict(color=c, capsize=3, markersize=7)
            if all(v > 0 for v in q):
                axes[0].scatter(q, acc, color=c, alpha=0.35, s=14)
                axes[0].errorbar(np.mean(q), m, yerr=err, fmt="o", label=name, **style)
            else:
                apart.append(name)
            if all(v > 0 for v in f):
                axes[1].scatter(f, acc, color=c, alpha=0.35, s=14)
                axes[1].errorbar(np.mean(f), m, yerr=err,
                                 fmt="o" if name not in apart else "s", label=name, **style)
        for ax in axes:
            chance_line(ax, n_classes)
            log_ticks(ax)
            ax.legend(fontsize=9, loc="lower right")
        if apart:
            axes[0].text(0.02, 0.98, "no physical query for learning (not placed here; "
                         "squares on the right):\n" + ", ".join(apart),
                         transform=axes[0].transAxes, fontsize=9, va="top")
        axes[0].set_xlabel("physical queries for learning (samples; log scale)")
        axes[1].set_xlabel("digital FLOPs for learning (counted; log scale)")
        axes[0].set_ylabel(f"test accuracy (%; mean, {int(confidence * 100)} % t interval)")
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        try:
            save(fig, path, dpi=120)
        finally:
            plt.close(fig)


def plot_tuning_curves(tuned: dict[str, dict], path: Path, title: str) -> None:
    """The tuning curve of every method: the best validation accuracy so far against the
    completed trial (a line each), every trial's own accuracy as faint dots; written as ``path``
    (PNG) and an SVG beside it. ``tuned``: method -> :func:`pnn.tune.tune`'s result (its
    ``curve``). A line still rising at the last trial says the budget was not enough."""
    with talk_style() as plt:
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for j, (method, res) in enumerate(tuned.items()):
            curve = res.get("curve") or {}
            best, own = curve.get("best_val_accuracy") or [], curve.get("val_accuracy") or []
            x = list(range(1, len(best) + 1))
            c = colour(method, j)
            ax.plot(x, [100 * v for v in best], "-o", color=c, markersize=4,
                    label=f"{method_name(method)} (best {100 * max(best, default=0):.1f} %)")
            ax.scatter(x, [100 * v for v in own], color=c, alpha=0.3, s=12)
        ax.set_xlabel("completed tuning trial")
        ax.set_ylabel("validation accuracy (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=9, loc="lower right",
                  title="line: best so far; dots: each trial", title_fontsize=9)
        fig.suptitle(textwrap.fill(title, 90), fontsize=10)
        fig.tight_layout()
        try:
            save(fig, path, dpi=120)
        finally:
            plt.close(fig)


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default))


def _strict(obj):
    """``obj`` with every non-finite float as ``None``: strict JSON (a bare ``NaN`` is not JSON,
    and many readers refuse it), e.g. an interval of one seed."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.floating):
        return _strict(float(obj))
    return obj


def write_report(records: list[dict], out: Path, title: str, *, reference: str = "phyll",
                 target: float | None = None) -> dict:
    """Write results.json, stats.json, table.md and cost_vs_accuracy.png into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "results.json", records)
    rows, target = summary_rows(records, reference=reference, target=target,
                                per_query_j=registry.energy_per_query())
    table = markdown_table(rows, reference=reference, target=target)
    # strict JSON: an interval of one seed is NaN, written as null
    _write_json(out / "stats.json", _strict({"target_val_accuracy": target,
                                             "reference": reference, "rows": rows}))
    atomic_write_text(out / "table.md", f"# {title}\n\n{table}")
    plot_costs(records, out / "cost_vs_accuracy.png", title)
    return {"rows": rows, "table": table, "target": target}
