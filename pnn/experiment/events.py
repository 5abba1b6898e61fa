"""The events of an adaptation experiment (``kind = "adapt"``, ``pnn adapt --event``): a jump or a
drift of one physical parameter at a training time in epochs, read from ``--event`` text or an
``[adapt] events`` table and checked when the experiment is read; :mod:`pnn.adapt` plays them
during training (and re-exports every name here)."""

from __future__ import annotations

import dataclasses
import math

from pnn import registry

__all__ = ["Event", "parse_event", "ev_param"]


@dataclasses.dataclass(frozen=True)
class Event:
    """``kind`` 'jump' or 'drift', at training time ``epoch`` (fractional allowed);
    ``factor``/``offset`` (jump) or ``rate`` (drift: change of the parameter per epoch, relative
    to its initial value, or absolute when that is zero); ``param``: the simulator field
    (default per system)."""

    kind: str
    epoch: float
    factor: float = 1.0
    offset: float = 0.0
    rate: float = 0.0
    param: str | None = None

    def at_step(self, steps_per_epoch: int) -> int:
        return max(1, round(self.epoch * steps_per_epoch))

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def parse_event(text: str) -> Event:
    """``"jump:epoch=4,factor=1.1"`` or ``"drift:epoch=6.5,rate=0.02,param=speed_scale"``."""
    kind, _, rest = text.partition(":")
    if kind not in ("jump", "drift"):
        raise ValueError(f"unknown event {kind!r} in {text!r}; valid events: jump, drift")
    kw = {}
    fields = {"epoch": float, "factor": float, "offset": float, "rate": float, "param": str}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in fields:
            raise ValueError(f"bad event parameter {item!r} in {text!r}; valid: "
                             f"{', '.join(fields)} as key=value")
        try:
            kw[key] = fields[key](value)
        except ValueError:
            raise ValueError(f"event parameter {key} in {text!r} must be a "
                             f"{'number' if fields[key] is float else 'name'}, got "
                             f"{value!r}") from None
    if "epoch" not in kw or not (math.isfinite(kw["epoch"]) and kw["epoch"] > 0):
        raise ValueError(f"event {text!r} needs epoch=E (E > 0): the training time, in epochs, "
                         f"at which it occurs")
    if kind == "drift" and kw.get("rate", 0.0) == 0.0:
        raise ValueError(f"drift event {text!r} needs a non-zero rate=")
    return Event(kind=kind, **kw)


def ev_param(events: list[Event], system: str) -> str:
    """The parameter ``events`` move: the one they name (all the same), else the system's
    declared ``drift_param``.

    Raises:
        ValueError: events naming different parameters, or none named and the system declares
            no ``drift_param``.
    """
    names = {e.param for e in events if e.param}
    if len(names) > 1:
        raise ValueError(f"all events must move the same parameter, got {sorted(names)}")
    if names:
        return names.pop()
    record = registry.system_record(system)
    if record is None or record.drift_param is None:
        raise ValueError(f"no default parameter for system {system!r} (its System record "
                         f"declares no drift_param); give param=")
    return record.drift_param
