r"""Perturbation injectors: wrappers that make any physical layer noisier, drift or break.

Every injector wraps a :class:`~pnn.layer.PhysicalLayer` (a simulator or a driver) and is itself a
physical layer with the same ``spec``, so injectors nest::

    layer = AdditiveNoise(Drift(sim, rate=1e-4), std=0.02, seed=1)  # drift inside, noise outside
    layer = compose(sim, "drift:rate=1e-4", "noise:std=0.02", seed=1)  # the same, seeded apart
    [p.describe() for p in perturbations_of(layer)]  # what a result record states

The first perturbation given to :func:`compose` is applied first, i.e. sits closest to the physics.

Injectors (``y`` the wrapped layer's measurement, ``n`` the index of a sample among all samples
this wrapper has been queried with, starting at 0, and :math:`\xi \sim N(0, 1)` drawn per entry):

================ ==================================================================================
``noise``        :class:`AdditiveNoise`: :math:`y + \sigma\xi`
``gain_noise``   :class:`MultiplicativeNoise`: :math:`y\,(1 + \sigma\xi)`
``shot_noise``   :class:`ShotNoise`: :math:`y + \sqrt{s\,|y|}\,\xi` (variance ∝ signal)
``drift``        :class:`Drift`: black-box gain :math:`(1 + d_n)\,y` or offset :math:`y + d_n`;
                 ramp :math:`d_n = r\,n` or random walk :math:`d_n = \sum_{k<n} \epsilon_k`,
                 :math:`\epsilon_k \sim N(0, s^2)`
``param_drift``  :class:`ParameterDrift`: the same ramp or walk applied to a named float field of
                 an equinox simulator (e.g. ``speed_scale`` of the acoustic layer)
``jump``         :class:`Jump`: from sample ``at`` on, :math:`f\,y + o`, or a parameter change
``dead``         :class:`DeadChannels`: the listed output channels read 0
``stuck``        :class:`StuckChannels`: the listed output channels read a fixed value
``quantize``     :class:`Quantize`: drive (over the spec's ``[lo, hi]``) and/or readout (over
                 ``readout_range``) rounded to :math:`2^{bits}` uniform levels
``latency``      :class:`Latency`: sleeps per call (and optionally per sample)
================ ==================================================================================

State and reproducibility
-------------------------
Injectors are plain Python objects queried on the host (the ledger's ``query`` path); they refuse
traced input. Their state (sample and call counters, a ``numpy.random.Generator`` built from the
explicit ``seed``) lives in the wrapper; :meth:`Perturbation.reset` restores the state at
construction for the wrapper and every wrapper beneath it. The wrapped layer is never mutated.

Progress is counted in *samples*, so how a stream of drives is cut into calls (for instance the
ledger's ``max_batch`` chunking) does not change the outcome, for a deterministic wrapped layer:
noise is drawn in sample order, a ramp or walk is indexed by sample, and a jump splits the batch
at the exact sample. The exceptions, by design:

* ``Drift(per="call")`` advances once per call: its outcome depends on the call pattern.
* ``ParameterDrift(resolution="call")`` (the default) holds the parameter, over a whole call, at
  its value for the call's first sample (the parameter's path itself is indexed by sample, so only
  the hold pattern depends on the batching). ``resolution="sample"`` gives every sample its own
  parameter value by ``vmap`` over the simulator: exact, but only for pure-JAX layers, and it
  compiles once per batch size.
* ``Latency`` sleeps ``seconds`` per call (the ``per_sample`` part is chunk-invariant).

Batch padding
-------------
Wrappers declare ``pad_batches = False`` so that the ledger never pads a batch sent through them:
padding rows would be counted as queried samples and would consume random draws. A jitted
simulator under a wrapper therefore compiles once for each distinct remainder size. Where a wrapper
itself splits a batch (a jump at a parameter), it pads both parts to the batch's size when the
wrapped layer declares ``pad_batches``, so no new shape is compiled.

Parameter changes and recompilation
-----------------------------------
:class:`ParameterDrift` and :class:`Jump` (with ``param``) change a field of an equinox module on
a copy made by :func:`equinox.tree_at`. ``eqx.filter_jit`` treats a Python ``float`` field as
*static*: a new float value recompiles the simulator on every call (measured for
``AcousticLayer.speed_scale``: about 1.3 s per call on a CPU, against about 1 ms when traced). The
new value is therefore always stored as a JAX scalar (the field's own dtype when it is an array,
JAX's default float otherwise), which is a traced leaf: one compilation, then every value reuses it.
Fields declared ``eqx.field(static=True)`` cannot be drifted (they are not leaves) and are refused.
A copy made by ``tree_at`` skips the layer's constructor checks (e.g. a Courant condition): a
parameter drifted far enough can make a simulator unstable.

Where things live: the base class and the helpers that walk a stack of wrappers in
:mod:`pnn.perturbation`, the injectors in :mod:`pnn.injectors`, :func:`with_param` in
:mod:`pnn.param_change`; this module names them (specs, parsing, :func:`compose`) and re-exports
every public name.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Mapping

import numpy as np

from pnn.injectors import (AdditiveNoise, DeadChannels, Drift, Jump, Latency, MultiplicativeNoise,
                           ParameterDrift, Quantize, ShotNoise, StuckChannels)
from pnn.param_change import with_param
from pnn.perturbation import (Perturbation, _int, _spec_of, load_perturbation_states,
                              perturbation_states, perturbations_of, unwrap)

__all__ = [
    "with_param",
    "perturbation_states",
    "load_perturbation_states",
    "Perturbation",
    "AdditiveNoise",
    "MultiplicativeNoise",
    "ShotNoise",
    "Drift",
    "ParameterDrift",
    "Jump",
    "DeadChannels",
    "StuckChannels",
    "Quantize",
    "Latency",
    "PerturbationSpec",
    "PERTURBATIONS",
    "compose",
    "parse_perturbations",
    "perturbations_of",
    "unwrap",
]


# --------------------------------------------------------------------------- specs and parsing
PERTURBATIONS: dict[str, type[Perturbation]] = {
    cls.name: cls
    for cls in (AdditiveNoise, MultiplicativeNoise, ShotNoise, Drift, ParameterDrift, Jump,
                DeadChannels, StuckChannels, Quantize, Latency)
}


def _signature(cls) -> dict[str, inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, layer
    return {p.name: p for p in params}


@dataclasses.dataclass(frozen=True)
class PerturbationSpec:
    """A perturbation as data: a name from :data:`PERTURBATIONS` and its parameters.

    Checked at construction: an unknown name, an unknown parameter or a missing required one
    raises ``ValueError`` listing the valid ones. Values are checked when the spec is built on a
    layer (some checks, such as channel indices, need the layer's spec). ``seed`` may be left out:
    :meth:`build` and :func:`compose` supply one.
    """

    name: str
    params: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.params, Mapping):
            raise TypeError(f"perturbation {self.name!r}: params must be a mapping of parameter "
                            f"names to values, got {type(self.params).__name__}")
        if self.name not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {self.name!r}; valid perturbations: "
                             f"{', '.join(PERTURBATIONS)}")
        sig = _signature(PERTURBATIONS[self.name])
        unknown = [k for k in self.params if k not in sig]
        if unknown:
            raise ValueError(f"perturbation {self.name!r} has no parameter "
                             f"{', '.join(map(repr, unknown))}; valid parameters: "
                             f"{', '.join(sig)}")
        missing = [k for k, p in sig.items()
                   if p.default is inspect.Parameter.empty and k != "seed" and k not in
                   self.params]
        if missing:
            raise ValueError(f"perturbation {self.name!r} needs {', '.join(map(repr, missing))}; "
                             f"valid parameters: {', '.join(sig)}")
        object.__setattr__(self, "params", dict(self.params))

    def build(self, layer, *, seed: int | None = None) -> Perturbation:
        """Wrap ``layer``; ``seed`` is used when the perturbation takes one and none was given."""
        params = dict(self.params)
        if "seed" in _signature(PERTURBATIONS[self.name]) and params.get("seed") is None:
            params["seed"] = seed
        try:
            return PERTURBATIONS[self.name](layer, **params)
        except ValueError as e:
            raise ValueError(f"perturbation '{self}': {e}") from e

    def to_dict(self) -> dict:
        return {"name": self.name, **self.params}

    def __str__(self) -> str:
        def fmt(v):
            if isinstance(v, (list, tuple)):
                return "[" + ",".join(fmt(u) for u in v) + "]"
            return str(v).lower() if isinstance(v, bool) or v is None else str(v)

        args = ",".join(f"{k}={fmt(v)}" for k, v in self.params.items())
        return f"{self.name}:{args}" if args else self.name


def _split_top(text: str) -> list[str]:
    """Split on commas and semicolons outside brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in perturbation string {text!r}")
        if ch in ",;" and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise ValueError(f"unbalanced '[' in perturbation string {text!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _parse_value(text: str):
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        inner = t[1:-1].strip()
        return [] if not inner else [_parse_value(u) for u in _split_top(inner)]
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def parse_perturbations(text: str) -> list[PerturbationSpec]:
    """Parse ``"name:key=value,key=value,name2:key=value"`` into perturbation specs.

    A token ``name:key=value`` (or a bare ``name``) starts a perturbation; following
    ``key=value`` tokens add parameters to it. Tokens are separated by commas or semicolons;
    lists are written in brackets (``dead:channels=[0,3]``); values are read as int, float,
    ``true``/``false``, ``none``, a list, or else a string. Order is kept: the first is applied
    first (innermost) by :func:`compose`. An empty string gives ``[]``.

    Example: ``parse_perturbations("drift:rate=0.01,noise:std=0.02")``.

    Raises:
        ValueError: for a malformed token, an unknown perturbation or parameter (listing the
            valid ones), a repeated parameter, or a missing required parameter.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_perturbations expects a string, got {type(text).__name__}")
    if not text.strip():
        return []
    entries: list[tuple[str, dict]] = []
    for token in _split_top(text):
        if not token:
            raise ValueError(f"empty entry in perturbation string {text!r}")
        head, sep, rest = token.partition(":")
        if sep and "=" not in head:
            name, assignment = head.strip(), rest.strip()
            if not name:
                raise ValueError(f"missing perturbation name before ':' in {token!r}")
            entries.append((name, {}))
            if not assignment:
                continue
        elif "=" not in token:
            entries.append((token, {}))
            continue
        else:
            assignment = token
        if not entries:
            raise ValueError(f"parameter {token!r} comes before any perturbation name in "
                             f"{text!r}; write name:key=value")
        key, eq, value = assignment.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise ValueError(f"malformed parameter {assignment!r} in {text!r}; write key=value")
        name, params = entries[-1]
        if key in params:
            raise ValueError(f"parameter {key!r} given twice for perturbation {name!r}")
        params[key] = _parse_value(value)
    specs = []
    for name, params in entries:
        if name not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {name!r}; valid perturbations: "
                             f"{', '.join(PERTURBATIONS)}")
        specs.append(PerturbationSpec(name, params))
    return specs


def _derive_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([seed, i]).generate_state(1)[0])


def compose(layer, *perturbations, seed: int = 0):
    """Wrap ``layer`` in each perturbation in turn; the first given is innermost.

    Each perturbation is a :class:`PerturbationSpec`, a string for :func:`parse_perturbations`
    (which may hold several), or a callable ``layer -> layer`` (e.g.
    ``functools.partial(AdditiveNoise, std=0.1, seed=3)``). A spec without a seed gets one derived
    from ``seed`` and its position, so the stack is reproducible from ``seed`` and the perturbations
    draw independent streams; :meth:`Perturbation.describe` records the seed used.
    """
    seed = _int("compose", "seed", seed, min_value=0)
    items: list = []
    for p in perturbations:
        if isinstance(p, str):
            items.extend(parse_perturbations(p))
        elif isinstance(p, PerturbationSpec) or callable(p):
            items.append(p)
        else:
            raise TypeError(f"compose: a perturbation must be a PerturbationSpec, a string or a "
                            f"callable layer -> layer, got {type(p).__name__}")
    for i, p in enumerate(items):
        if isinstance(p, PerturbationSpec):
            layer = p.build(layer, seed=_derive_seed(seed, i))
        else:
            wrapped = p(layer)
            _spec_of(wrapped, f"compose (item {i})")
            layer = wrapped
    return layer
