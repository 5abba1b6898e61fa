"""Adaptation experiment: change the physics while training continues, measure recovery.

Each method trains on layers wrapped in :class:`ScheduledPhysics`. After the epochs named by the
events, the wrapped simulator's physical parameter is changed (``jump``: once; ``drift``: a step
of ``rate`` after every later epoch, i.e. a ramp sampled once per epoch). Time is counted in
epochs, the same for every method, and every accuracy is measured on the physics as it is *now*.

* ``phyll`` keeps learning from the (changed) measurements;
* ``pat`` keeps its twin (``twin="stale"``) or refits it on fresh measurements after each event
  (``twin="refit"``);
* ``insilico`` keeps training on its unchanged model and is evaluated on the changed system.

For each method and event the report gives the accuracy before the event, the drop (before
minus the lowest accuracy after it, before the next event) and the recovery time (epochs until
the accuracy is back within ``tolerance`` of its pre-event value; ``None`` if it never is).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp

from pnn import registry

__all__ = ["Event", "parse_event", "ScheduledPhysics", "run_adaptation", "recovery",
           "DEFAULT_PARAM", "plot_adaptation"]

#: the physical parameter an event moves by default, per system
DEFAULT_PARAM = {"acoustic": "speed_scale", "optical": "gamma", "microwave": "detuning"}


@dataclasses.dataclass(frozen=True)
class Event:
    """``kind`` 'jump' or 'drift'; after ``epoch``; ``factor``/``offset`` (jump) or ``rate``
    (drift: relative change of the parameter per epoch, or absolute when the initial value is
    zero); ``param``: the simulator field (default per system)."""

    kind: str
    epoch: int
    factor: float = 1.0
    offset: float = 0.0
    rate: float = 0.0
    param: str | None = None

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def parse_event(text: str) -> Event:
    """``"jump:epoch=4,factor=1.1"`` or ``"drift:epoch=6,rate=0.02,param=speed_scale"``."""
    kind, _, rest = text.partition(":")
    if kind not in ("jump", "drift"):
        raise ValueError(f"unknown event {kind!r} in {text!r}; valid events: jump, drift")
    kw = {}
    fields = {"epoch": int, "factor": float, "offset": float, "rate": float, "param": str}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in fields:
            raise ValueError(f"bad event parameter {item!r} in {text!r}; valid: "
                             f"{', '.join(fields)} as key=value")
        try:
            kw[key] = fields[key](value)
        except ValueError:
            raise ValueError(f"event parameter {key} in {text!r} must be "
                             f"{fields[key].__name__}, got {value!r}") from None
    if "epoch" not in kw or kw["epoch"] < 1:
        raise ValueError(f"event {text!r} needs epoch=N (N >= 1): the epoch after which it occurs")
    if kind == "drift" and kw.get("rate", 0.0) == 0.0:
        raise ValueError(f"drift event {text!r} needs a non-zero rate=")
    return Event(kind=kind, **kw)


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
        self.current = eqx.tree_at(lambda m: getattr(m, self.param), self.current,
                                   jnp.asarray(value, jnp.float32))

    def __call__(self, x):
        return self.current(x)


def _apply(event: Event, wrapped: list, epoch: int) -> None:
    for w in wrapped:
        if event.kind == "jump" and epoch == event.epoch:
            w.set_value(w.value * event.factor + event.offset)
        elif event.kind == "drift" and epoch >= event.epoch:
            step = event.rate * (w.initial if w.initial != 0 else 1.0)
            w.set_value(w.value + step)


def recovery(history: list[dict], event_epoch: int, next_event: int | None,
             tolerance: float = 0.02) -> dict:
    """Drop and recovery time of one method around an event after ``event_epoch``."""
    acc = {h["epoch"]: h["test_accuracy"] for h in history}
    before = acc[event_epoch]
    end = next_event if next_event is not None else max(acc)
    after = [(e, a) for e, a in acc.items() if event_epoch < e <= end]
    if not after:
        return {"before": before, "drop": None, "recovery_epochs": None}
    drop = before - min(a for _, a in after)
    rec = next((e - event_epoch for e, a in after if a >= before - tolerance), None)
    return {"before": before, "lowest_after": min(a for _, a in after), "drop": drop,
            "recovery_epochs": rec}


def run_adaptation(system: str, data, methods: list[str], events: list[Event], *, epochs: int,
                   seed: int = 0, twin: str = "stale", progress_factory=None,
                   tolerance: float = 0.02) -> dict:
    """Train every method with the scheduled changes; returns the record (no models)."""
    if twin not in ("stale", "refit"):
        raise ValueError(f"twin must be 'stale' or 'refit', got {twin!r}")
    last = max(e.epoch for e in events)
    if last >= epochs:
        raise ValueError(f"the last event is after epoch {last}, but training has only "
                         f"{epochs} epochs: nothing would be measured after it")
    out = {"system": system, "data": data.describe(), "seed": seed, "epochs": epochs,
           "events": [e.describe() for e in events], "twin": twin, "tolerance": tolerance,
           "methods": {}}
    for method in methods:
        mod = registry.method_module(method)
        cfg = mod.Config()
        cfg = dataclasses.replace(cfg, epochs=epochs)
        base = registry.build_layers(system, method, cfg, data, seed=seed)
        wrapped = [ScheduledPhysics(layer, ev_param(events, system)) for layer in base]
        kwargs = {}
        if method == "insilico":
            kwargs["model_layers"] = base  # keeps its (now wrong) model
        if method == "pat" and twin == "refit":
            kwargs["refit_after"] = tuple(sorted({e.epoch for e in events} |
                                                 {ep for e in events if e.kind == "drift"
                                                  for ep in range(e.epoch, epochs)}))
        bar = progress_factory(method, cfg) if progress_factory else None
        values = []

        def on_epoch(rec, bar=bar, wrapped=wrapped, values=values):
            for ev in events:
                _apply(ev, wrapped, rec["epoch"])
            rec["param_value"] = wrapped[0].value
            values.append(wrapped[0].value)
            if bar:
                bar.update(rec)

        try:
            res = mod.train(wrapped, data, cfg, seed=seed, progress=on_epoch, **kwargs)
        finally:
            if bar:
                bar.close()
        res = {k: v for k, v in res.items() if k != "model"}
        epochs_ev = sorted({e.epoch for e in events})
        res["recovery"] = [
            {"event_epoch": ep, **recovery(res["history"], ep,
                                           epochs_ev[i + 1] if i + 1 < len(epochs_ev) else None,
                                           tolerance)}
            for i, ep in enumerate(epochs_ev)]
        out["methods"][method] = res
    return out


def ev_param(events: list[Event], system: str) -> str:
    names = {e.param for e in events if e.param}
    if len(names) > 1:
        raise ValueError(f"all events must move the same parameter, got {sorted(names)}")
    if names:
        return names.pop()
    if system not in DEFAULT_PARAM:
        raise ValueError(f"no default parameter for system {system!r}; give param=")
    return DEFAULT_PARAM[system]


def plot_adaptation(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for j, (method, res) in enumerate(record["methods"].items()):
        h = res["history"]
        ax.plot([r["epoch"] for r in h], [r["test_accuracy"] for r in h], "o-", color=f"C{j}",
                label=method)
    for ev in record["events"]:
        ax.axvline(ev["epoch"] + 0.5, color="k", ls="--", alpha=0.6)
        label = (f"jump x{ev['factor']:g}" if ev["kind"] == "jump"
                 else f"drift {ev['rate']:+g}/epoch")
        ax.text(ev["epoch"] + 0.6, ax.get_ylim()[0] + 0.02, label, fontsize=8, rotation=90)
    ax.set_xlabel("epoch (event markers: change applied between epochs)")
    ax.set_ylabel("test accuracy on the current physics")
    ax.set_title(f"adaptation on {record['system']} ({record['data']['name']}), seed "
                 f"{record['seed']}, PAT twin {record['twin']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_record(record: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "adapt.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, out / "adapt.json")
    plot_adaptation(record, out / "adapt.png")
