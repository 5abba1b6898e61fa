"""Adaptation experiment: change the physics while training continues, measure recovery.

Each method trains on layers wrapped in :class:`ScheduledPhysics`. Events are placed in training
time measured in epochs, which may be fractional (``epoch=6.5`` is half-way through the seventh
epoch), so that methods with different batch sizes meet the change after seeing the same amount
of data. Each method converts an event's time to its own training step,
``round(epoch * steps_per_epoch)``, and the change is applied right after that step:

* ``jump``: the parameter is set once to ``value * factor + offset``;
* ``drift``: from the event on, the parameter moves by ``rate`` per epoch (relative to its
  initial value, or absolute when that is zero), in equal increments after every step: a ramp.

Every ``1 / evals_per_epoch`` epochs, and at every event step just before the change, the test
accuracy is measured on the physics as it is *now* (the queries are charged to the ledger as
"eval"). These measurements form the trace that the plot shows and that the report uses:

* ``before``: the mean of the last ``n_window`` (3) measurements up to the event. One measurement
  on a few hundred test samples has a binomial standard error of about 2 points, as large as the
  2-point tolerance, and training itself moves the accuracy by a few points from one measurement
  to the next, so single values would make the report mostly noise.
* ``after``: the mean of the first ``n_window`` measurements after the event (about one epoch);
  ``drop`` is ``before - after`` (negative: the accuracy rose). ``lowest_after`` is the single
  lowest measurement until the next event, for reference; it includes the ordinary scatter.
* ``settled``: the mean of the last ``n_window`` measurements before the next event (or the
  end): where the method ended up on the changed system.
* ``recovery``: training time (in epochs and in steps) from the event until the first
  measurement back within ``tolerance`` of ``before``; ``None`` if that does not happen before
  the next event or the end of the run. A single measurement, so read it with the scatter in
  mind: 0 to a few steps means the event did not visibly hurt.

Method behaviour:

* ``phyll`` keeps learning from the (changed) measurements;
* ``pat`` keeps its twin (``twin="stale"``) or refits it on fresh measurements right after a
  jump and after every epoch of a drift (``twin="refit"``);
* ``insilico`` keeps training on its unchanged model and is evaluated on the changed system.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pnn import registry
from pnn.config import check_seed
from pnn.experiment.events import Event, ev_param, parse_event
from pnn.fileio import atomic_write_text
from pnn.figures import chance_line, colour, event_text, method_name, save, talk_style
from pnn.perturb import with_param

__all__ = ["Event", "parse_event", "ScheduledPhysics", "run_adaptation", "recovery", "analyse",
           "table",
           "plot_adaptation", "Schedule"]


class ScheduledPhysics:
    """A :class:`~pnn.layer.PhysicalLayer` whose simulator parameters change on command.

    ``current`` is a copy of the simulator made with ``eqx.tree_at``; the original is never
    modified. New values are stored as JAX scalars so the jitted simulator is not recompiled for
    every new value.
    """

    def __init__(self, layer, param: str):
        if not hasattr(layer, param):
            raise ValueError(f"{layer.spec.name}: has no parameter {param!r} to change")
        self.base = layer
        self.current = layer
        self.param = param
        self.spec = layer.spec
        self.pad_batches = getattr(layer, "pad_batches", False)
        self.initial = float(getattr(layer, param))

    @property
    def value(self) -> float:
        return float(getattr(self.current, self.param))

    def set_value(self, value: float) -> None:
        """Move the parameter to ``value``.

        Raises:
            ValueError: from the simulator's ``validate_params()`` when ``value`` is unstable
                or meaningless (the layer keeps its previous value).
        """
        self.current = with_param(self.current, self.param, value)

    def __call__(self, x):
        return self.current(x)


class Schedule:
    """The step hook of one method's run: applies the events and records the accuracy trace.

    Args:
        events: the events; wrapped: the :class:`ScheduledPhysics` layers they change.
        steps_per_epoch: the method's training steps per epoch.
        evals_per_epoch: accuracy measurements per epoch (plus one at every event step).
    """

    def __init__(self, events: list[Event], wrapped: list[ScheduledPhysics],
                 steps_per_epoch: int, evals_per_epoch: int):
        self.events = events
        self.wrapped = wrapped
        self.spe = steps_per_epoch
        self.eval_every = max(1, round(steps_per_epoch / evals_per_epoch))
        self.event_steps = [e.at_step(steps_per_epoch) for e in events]
        self.trace: list[dict] = []
        self.x_test = self.y_test = None

    def measure_on(self, x_test, y_test) -> "Schedule":
        """The samples the trace measures (the test split: the trace is a diagnostic of
        recovery, labelled as test accuracy; no choice is made on it)."""
        self.x_test, self.y_test = x_test, y_test
        return self

    def __call__(self, step: int, evaluate) -> None:
        at_event = step in self.event_steps
        if at_event or step % self.eval_every == 0:
            # a diagnostic trace of test accuracy (nothing is selected on it)
            acc = evaluate(self.x_test, self.y_test)
            self.trace.append({"step": step, "epoch": round(step / self.spe, 4),
                               "test_accuracy": acc, "param_value": self.wrapped[0].value})
        self._apply(step, self.wrapped)

    def _apply(self, step: int, wrapped: list[ScheduledPhysics]) -> None:
        for ev, at in zip(self.events, self.event_steps):
            for w in wrapped:
                if ev.kind == "jump" and step == at:
                    w.set_value(w.value * ev.factor + ev.offset)
                elif ev.kind == "drift" and step >= at:
                    w.set_value(w.value + ev.rate * (w.initial if w.initial != 0 else 1.0)
                                / self.spe)

    def check(self, n_steps: int) -> None:
        """Play the schedule on copies of the layers, without measuring anything, so that a
        value the physics refuses is reported before training starts, not hours into it.

        Raises:
            ValueError: naming the training step and epoch at which the value would be refused.
        """
        copies = [ScheduledPhysics(w.current, w.param) for w in self.wrapped]
        for step in range(1, n_steps + 1):
            try:
                self._apply(step, copies)
            except ValueError as e:
                raise ValueError(f"the events would move {self.wrapped[0].param} out of its "
                                 f"valid range at step {step} (epoch {step / self.spe:.2f}): "
                                 f"{e}") from None

    def refit_steps(self, n_steps: int) -> tuple[int, ...]:
        """When a refitting PAT refits its twin: after a jump, and every epoch of a drift."""
        out = set()
        for ev, at in zip(self.events, self.event_steps):
            if ev.kind == "jump":
                out.add(at)
            else:
                out.update(range(at, n_steps + 1, self.spe))
        return tuple(sorted(out))


def recovery(trace: list[dict], event_step: int, next_event: int | None, steps_per_epoch: int,
             tolerance: float = 0.02, n_window: int = 3) -> dict:
    """Accuracy before, drop, settled accuracy and recovery time of one method around the event
    at ``event_step`` (see the module docstring); ``trace`` holds ``{"step", "test_accuracy"}``
    measurements, the one at ``event_step`` taken before the change."""
    pre = [t["test_accuracy"] for t in trace if t["step"] <= event_step][-n_window:]
    if not pre:
        raise ValueError(f"no accuracy measured up to the event at step {event_step}")
    before = float(np.mean(pre))
    end = next_event if next_event is not None else math.inf
    after = [(t["step"], t["test_accuracy"]) for t in trace if event_step < t["step"] <= end]
    out = {"event_step": event_step, "event_epoch": round(event_step / steps_per_epoch, 4),
           "before": before, "n_window": n_window, "after": None, "drop": None,
           "lowest_after": None, "settled": None, "recovery_steps": None,
           "recovery_epochs": None}
    if not after:
        return out
    acc = [a for _, a in after]
    first = float(np.mean(acc[:n_window]))
    rec = next((s - event_step for s, a in after if a >= before - tolerance), None)
    out.update(after=first, drop=before - first, lowest_after=min(acc),
               settled=float(np.mean(acc[-n_window:])), recovery_steps=rec,
               recovery_epochs=None if rec is None else round(rec / steps_per_epoch, 4))
    return out


def analyse(record: dict) -> dict:
    """(Re)compute every method's ``recovery`` entries from its stored trace, in place."""
    for res in record["methods"].values():
        steps = sorted({Event(**e).at_step(res["steps_per_epoch"]) for e in record["events"]})
        res["recovery"] = [
            recovery(res["trace"], s, steps[i + 1] if i + 1 < len(steps) else None,
                     res["steps_per_epoch"], record["tolerance"])
            for i, s in enumerate(steps)]
    return record


def run_adaptation(system: str, data, methods: list[str], events: list[Event], *, epochs: int,
                   seed: int = 0, twin: str = "stale", progress_factory=None,
                   tolerance: float = 0.02, evals_per_epoch: int = 3,
                   overrides: dict | None = None, system_kwargs: dict | None = None) -> dict:
    """Train every method with the scheduled changes; returns the record (no models).

    ``overrides``: method name -> Config values (``epochs`` and ``restore_best`` are the
    adaptation's own); ``system_kwargs``: the simulator's physical parameters (default: its
    own).
    """
    seed = check_seed(seed)
    if twin not in ("stale", "refit"):
        raise ValueError(f"twin must be 'stale' or 'refit', got {twin!r}")
    if not events:
        raise ValueError("give at least one event")
    if evals_per_epoch < 1:
        raise ValueError(f"evals_per_epoch must be >= 1, got {evals_per_epoch}")
    last = max(e.epoch for e in events)
    if last >= epochs:
        raise ValueError(f"the last event is at epoch {last:g}, but training has only "
                         f"{epochs} epochs: nothing would be measured after it")
    param = ev_param(events, system)
    out = {"system": system, "data": data.describe(), "seed": seed, "epochs": epochs,
           "events": [e.describe() for e in events], "param": param, "twin": twin,
           "tolerance": tolerance, "evals_per_epoch": evals_per_epoch, "methods": {}}
    n_train = len(data.y_train)
    plans = {}
    for method in methods:  # every schedule is checked before any training starts
        trainer = registry.get_trainer(method)
        if not trainer.uses_physical_layers:
            raise ValueError(f"adapt changes the physics during training; {method!r} has no "
                             "physical layer")
        # the run ends on the changed physics: keep the last state, not the best validated
        fixed = sorted({"epochs", "restore_best"} & set((overrides or {}).get(method, {})))
        if fixed:
            raise ValueError(f"adapt sets {', '.join(fixed)} of every method itself (epochs: "
                             f"the run's epochs; restore_best: false); remove them from "
                             f"{method}'s settings")
        cfg = trainer.Config(**{**(overrides or {}).get(method, {}), "epochs": epochs,
                                "restore_best": False})
        spe = math.ceil(n_train / cfg.batch_size)
        base = registry.build_layers(system, method, cfg, data, seed=seed,
                                     **(system_kwargs or {}))
        wrapped = [ScheduledPhysics(layer, param) for layer in base]
        schedule = Schedule(events, wrapped, spe, evals_per_epoch).measure_on(data.x_test,
                                                                              data.y_test)
        schedule.check(spe * epochs)
        plans[method] = (trainer, cfg, spe, base, wrapped, schedule)
    for method, (trainer, cfg, spe, base, wrapped, schedule) in plans.items():
        options = {}
        if trainer.needs_differentiable_model:
            options["model_layers"] = base  # keeps its (now wrong) model
        if trainer.has_digital_twin and twin == "refit":
            options["refit_at_steps"] = schedule.refit_steps(spe * epochs)
        bar = progress_factory(method, cfg) if progress_factory else None

        def on_epoch(rec, bar=bar, wrapped=wrapped):
            rec["param_value"] = wrapped[0].value
            if bar:
                bar.update(rec)

        try:
            res, _ = trainer.train(wrapped, data, cfg, seed=seed, progress=on_epoch,
                                   on_step=schedule, options=options)
        finally:
            if bar:
                bar.close()
        res["steps_per_epoch"] = spe
        res["trace"] = schedule.trace
        out["methods"][method] = res
    return analyse(out)


def plot_adaptation(record: dict, path: Path) -> None:
    """Test accuracy on the current physics against training time, the events marked with
    their size in the parameter's units; written as ``path`` (PNG) and an SVG beside it."""
    with talk_style() as plt:
        fig, ax = plt.subplots(figsize=(10, 5.2))
        for j, (method, res) in enumerate(record["methods"].items()):
            tr = res["trace"]
            c = colour(method, j)
            ax.plot([t["epoch"] for t in tr], [100 * t["test_accuracy"] for t in tr], ".-",
                    lw=1.2, color=c, label=method_name(method))
            for r in res["recovery"]:
                ax.hlines(100 * r["before"], r["event_epoch"] - 0.5, r["event_epoch"], color=c,
                          lw=3, alpha=0.8)
        n_classes = len(record.get("data", {}).get("classes", []))
        chance_line(ax, n_classes)
        ax.set_ylim(0, 100)
        for ev in record["events"]:
            ax.axvline(ev["epoch"], color="k", ls=":", alpha=0.7)
            if ev["kind"] == "drift":
                ax.axvspan(ev["epoch"], record["epochs"], color="0.9", lw=0, zorder=0)
            ax.text(ev["epoch"] + 0.1, 97, event_text(ev, record["param"]), fontsize=10,
                    va="top")
        ax.set_xlabel(f"training time (epochs; test accuracy measured "
                      f"{record['evals_per_epoch']}× an epoch)")
        ax.set_ylabel("test accuracy on the current physics (%)")
        ax.set_title(f"adaptation on {record['system']} ({record['data']['name']}): "
                     f"{record['param']} changes; seed {record['seed']}, physics-aware "
                     f"training's twin {record['twin']}\nthick bars: accuracy before each "
                     "event (mean of the last 3 measurements)", fontsize=11, loc="left")
        ax.legend(fontsize=9, loc="lower right")
        fig.tight_layout()
        try:
            save(fig, path, dpi=120)
        finally:
            plt.close(fig)


def _event_label(ev: dict, param: str) -> str:
    if ev["kind"] == "drift":
        return f"{param} drift {ev['rate']:+g}/epoch from epoch {ev['epoch']:g}"
    parts = ([f"x{ev['factor']:g}"] if ev["factor"] != 1 else []) + \
        ([f"{ev['offset']:+g}"] if ev["offset"] != 0 else [])
    return f"{param} {' '.join(parts)} at epoch {ev['epoch']:g}"


def table(record: dict) -> str:
    """The report as a Markdown table: one row per method and event."""
    tol = 100 * record["tolerance"]
    events = sorted(record["events"], key=lambda e: e["epoch"])
    rows = []
    for m, (method, res) in enumerate(record["methods"].items()):
        spe = res["steps_per_epoch"]
        for k, r in enumerate(res["recovery"]):
            if r["drop"] is None:
                continue
            here = [i for i, e in enumerate(events)
                    if Event(**e).at_step(spe) == r["event_step"]]
            label = " + ".join(_event_label(events[i], record["param"]) for i in here)
            rec = ("no" if r["recovery_steps"] is None
                   else f"{r['recovery_epochs']:.2f} ep")
            c = res["cost"]
            q = (f"{c['queries_by_purpose'].get('train', 0):,} / {c['physical_queries']:,}"
                 if k == len(res["recovery"]) - 1 else "")
            rows.append(((here[0], m), f"| {label} | {method} | "
                         f"{100 * r['before']:.1f} % | {100 * r['after']:.1f} % "
                         f"({-100 * r['drop']:+.1f}) | {rec} | {100 * r['settled']:.1f} % | {q} |"))
    head = ["| event | method | before | next epoch (change) | back within "
            f"{tol:g} pts | settled | training / all physical queries |",
            "|---|---|---:|---:|---:|---:|---:|"]
    rows.sort(key=lambda kr: kr[0])  # by event, then method
    return "\n".join(head + [r for _, r in rows]) + "\n"


def write_record(record: dict, out: Path) -> None:
    """Write ``out/adapt.json`` (the record), ``adapt.md`` (:func:`table`) and ``adapt.png``
    (and ``.svg``)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "adapt.json", json.dumps(record, indent=2, default=str))
    atomic_write_text(out / "adapt.md", table(record))
    plot_adaptation(record, out / "adapt.png")
