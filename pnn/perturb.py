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
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
import time
from typing import Any, Callable, ClassVar, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pnn.layer import LayerSpec, check_representable, is_traced, validate_input

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


# --------------------------------------------------------------------------- argument checks
def _real(owner: str, label: str, v, *, min_value=None, positive=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{owner}: {label} must be a real number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{owner}: {label} must be finite, got {v!r}")
    check_representable(owner, label, v)
    if positive and v <= 0:
        raise ValueError(f"{owner}: {label} must be > 0, got {v!r}")
    if min_value is not None and v < min_value:
        raise ValueError(f"{owner}: {label} must be >= {min_value}, got {v!r}")
    return v


def _int(owner: str, label: str, v, *, min_value=None, max_value=None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{owner}: {label} must be an integer, got {v!r}")
    v = int(v)
    if min_value is not None and v < min_value:
        raise ValueError(f"{owner}: {label} must be >= {min_value}, got {v}")
    if max_value is not None and v > max_value:
        raise ValueError(f"{owner}: {label} must be <= {max_value}, got {v}")
    return v


def _choice(owner: str, label: str, v, options: Sequence[str]) -> str:
    if v not in options:
        raise ValueError(f"{owner}: {label} must be one of {', '.join(map(repr, options))}, "
                         f"got {v!r}")
    return v


def _seed(owner: str, seed, *, required: bool):
    if seed is None:
        if required:
            raise ValueError(f"{owner}: needs an explicit integer seed (seed=...), got None")
        return None
    return _int(owner, "seed", seed, min_value=0)


def _spec_of(layer, owner: str) -> LayerSpec:
    spec = getattr(layer, "spec", None)
    if not isinstance(spec, LayerSpec) or not callable(layer):
        raise TypeError(
            f"{owner}: can only wrap a PhysicalLayer (a callable with a LayerSpec `spec`), got "
            f"{type(layer).__name__}"
        )
    return spec


def _channels(owner: str, channels, n_out: int) -> tuple[int, ...]:
    if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
        channels = (channels,)
    try:
        chans = tuple(channels)
    except TypeError:
        raise ValueError(f"{owner}: channels must be a list of output-channel indices, "
                         f"got {channels!r}") from None
    if not chans:
        raise ValueError(f"{owner}: channels must name at least one output channel, got none")
    chans = tuple(_int(owner, "a channel index", c, min_value=0, max_value=n_out - 1)
                  for c in chans)
    if len(set(chans)) != len(chans):
        raise ValueError(f"{owner}: channels must be distinct, got {list(chans)}")
    return chans


def _mode(owner: str, mode, rate, step) -> tuple[str, float | None, float | None]:
    """Resolve the drift law from ``mode`` and whichever of ``rate`` (ramp) / ``step`` (walk)."""
    if mode is None:
        if (rate is None) == (step is None):
            raise ValueError(f"{owner}: give exactly one of rate= (a ramp, per sample) or step= "
                             f"(a random walk's step std), got rate={rate!r}, step={step!r}")
        mode = "ramp" if rate is not None else "walk"
    _choice(owner, "mode", mode, ("ramp", "walk"))
    if mode == "ramp":
        if rate is None or step is not None:
            raise ValueError(f"{owner}: mode='ramp' takes rate= (change per sample) and no step=, "
                             f"got rate={rate!r}, step={step!r}")
        return mode, _real(owner, "rate", rate), None
    if step is None or rate is not None:
        raise ValueError(f"{owner}: mode='walk' takes step= (step std per sample) and no rate=, "
                         f"got rate={rate!r}, step={step!r}")
    return mode, None, _real(owner, "step", step, min_value=0.0)


# --------------------------------------------------------------------------- layer calls
def _measure(layer, x: np.ndarray) -> np.ndarray:
    """Call ``layer`` on ``x`` and return a writable float copy, checked for shape."""
    return _checked(layer(x), layer.spec, len(x))


def _checked(y, spec: LayerSpec, n: int) -> np.ndarray:
    y = np.array(y)
    if not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float32)
    if y.shape != (n, spec.n_out):
        raise ValueError(f"{spec.name}: returned a measurement of shape {y.shape}, expected "
                         f"({n}, {spec.n_out})")
    return y


def _measure_padded(layer, x: np.ndarray, size: int) -> np.ndarray:
    """Like :func:`_measure`, padding ``x`` to ``size`` rows (at ``lo``) for a jitted layer."""
    n = len(x)
    if getattr(layer, "pad_batches", False) and n < size:
        pad = np.full((size - n, x.shape[1]), layer.spec.lo, dtype=x.dtype)
        return _measure(layer, np.concatenate([x, pad]))[:n]
    return _measure(layer, x)


def _param_getter(param: str) -> Callable:
    parts = param.split(".")
    return lambda m: functools.reduce(getattr, parts, m)


def _read_param(owner: str, layer, param: str) -> float:
    """Current value of a drift-able scalar field, refusing anything that is not one."""
    if not isinstance(param, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", param):
        raise ValueError(f"{owner}: param must be a field name such as 'speed_scale', got "
                         f"{param!r}")
    if not isinstance(layer, eqx.Module):
        raise TypeError(
            f"{owner}: changing parameter {param!r} needs an equinox-module simulator, got "
            f"{type(layer).__name__}; wrap the simulator itself (innermost), or use Drift/Jump "
            f"without param for a black box"
        )
    try:
        v = _param_getter(param)(layer)
    except AttributeError:
        fields = [f.name for f in dataclasses.fields(layer)]
        raise ValueError(f"{owner}: {type(layer).__name__} has no field {param!r}; its fields "
                         f"are {', '.join(fields)}") from None
    if isinstance(v, bool) or np.ndim(v) != 0 or not np.issubdtype(np.asarray(v).dtype,
                                                                   np.number):
        raise ValueError(f"{owner}: field {param!r} must be a real scalar, got {v!r}")
    try:
        eqx.tree_at(_param_getter(param), layer, v)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: field {param!r} of {type(layer).__name__} is static "
                         f"(eqx.field(static=True)), not a pytree leaf, so it cannot be changed "
                         f"without rebuilding the layer") from None
    return float(v)


def _param_dtype(layer, param: str):
    """The field's own float dtype if it is an array; ``None`` (JAX's default float) otherwise."""
    old = _param_getter(param)(layer)
    dtype = getattr(old, "dtype", None)
    return dtype if dtype is not None and jnp.issubdtype(dtype, jnp.floating) else None


def with_param(layer, param: str, value):
    """A copy of ``layer`` whose field ``param`` holds ``value`` as a traced JAX scalar.

    Raises:
        ValueError: from the layer's ``validate_params()`` (where it has one) when ``value``
            is unstable or meaningless for the physics.
    """
    old = _param_getter(param)(layer)
    if jnp.ndim(value) == 0 and not is_traced(value):
        check_representable(getattr(getattr(layer, "spec", None), "name", "layer"), param, value)
    if jnp.ndim(value) == 0 and getattr(old, "weak_type", False):
        value = jnp.asarray(float(value))  # weak like sim.base.scalar: the compiled call is reused
    else:
        value = jnp.asarray(value, dtype=_param_dtype(layer, param))
    new = eqx.tree_at(_param_getter(param), layer, value)
    check = getattr(new, "validate_params", None)
    if check is not None:
        check()
    return new


@eqx.filter_jit
def _forward_per_sample(layer, param: str, values, x):
    """``layer`` evaluated once per sample, sample i with ``param = values[i]`` (vmapped)."""
    get = _param_getter(param)

    def one(v, xi):
        return eqx.tree_at(get, layer, v)(xi[None])[0]

    return jax.vmap(one)(values, x)


# --------------------------------------------------------------------------- the base class
class Perturbation:
    """A physical layer that wraps another and perturbs it; the base of every injector.

    Subclasses set ``name`` (the key in :data:`PERTURBATIONS` and in :func:`parse_perturbations`),
    store their parameters before calling ``Perturbation.__init__``, and override
    :meth:`_forward` (or just :meth:`_perturb_output` for a change of the measurement only).

    Attributes:
        layer: the wrapped layer (never modified). spec: ``layer.spec``, unchanged.
        n_queried: samples sent through this wrapper since construction or :meth:`reset`.
        n_calls: calls since construction or :meth:`reset`.
    """

    name: ClassVar[str] = "perturbation"
    #: see the module docstring ("Batch padding")
    pad_batches: ClassVar[bool] = False

    def __init__(self, layer, *, seed: int | None = None):
        self.spec = _spec_of(layer, type(self).__name__)
        self.layer = layer
        self.seed = seed
        self._reset_state()

    # -- state
    def _reset_state(self) -> None:
        self.n_queried = 0
        self.n_calls = 0
        self.rng = np.random.default_rng(self.seed) if self.seed is not None else None

    def reset(self) -> None:
        """Restore the state at construction, here and in every wrapper beneath this one."""
        self._reset_state()
        if isinstance(self.layer, Perturbation):
            self.layer.reset()

    def state_dict(self) -> dict[str, Any]:
        """The running state (counters, noise generator, drift position) of this wrapper and
        every wrapper beneath it, as plain JSON-able data; :meth:`load_state_dict` restores it,
        so that a resumed run sees the same noise and drift as an uninterrupted one."""
        d = {"name": self.name, "n_queried": int(self.n_queried), "n_calls": int(self.n_calls),
             "rng": None if self.rng is None else self.rng.bit_generator.state,
             **self._extra_state()}
        if isinstance(self.layer, Perturbation):
            d["inner"] = self.layer.state_dict()
        return d

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (of a wrapper stack of the same kinds).

        Raises:
            ValueError: when ``state`` was taken from a different stack of wrappers.
        """
        if not isinstance(state, Mapping) or state.get("name") != self.name:
            got = state.get("name") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"{self.spec.name}: saved perturbation state is for {got!r}, "
                             f"this wrapper is {self.name!r}")
        if (state["rng"] is None) != (self.rng is None):
            raise ValueError(f"{self.spec.name}: saved {self.name!r} state "
                             f"{'has no' if state['rng'] is None else 'has a'} noise generator, "
                             f"this wrapper {'has one' if self.rng is not None else 'has none'}")
        inner = isinstance(self.layer, Perturbation)
        if inner != ("inner" in state):
            raise ValueError(f"{self.spec.name}: saved {self.name!r} state and this wrapper "
                             f"differ in what they wrap")
        self.n_queried, self.n_calls = int(state["n_queried"]), int(state["n_calls"])
        if self.rng is not None:
            self.rng.bit_generator.state = dict(state["rng"])
        self._load_extra_state(state)
        if inner:
            self.layer.load_state_dict(state["inner"])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    # -- the protocol
    def __call__(self, x):
        """Perturbed measurement of a batch ``(batch, n_in)`` → numpy array ``(batch, n_out)``.

        Raises:
            TypeError: when called inside a JAX transformation (wrappers are stateful, host-side).
            ValueError: from :func:`pnn.layer.validate_input`, before anything reaches the layer.
        """
        if is_traced(x):
            raise TypeError(
                f"{self.spec.name}: the {self.name!r} perturbation is a stateful host-side "
                f"wrapper and cannot be traced (jit/grad/vmap); call it with concrete arrays"
            )
        validate_input(self.spec, x)
        x = np.asarray(x)
        y = self._forward(x, self.n_queried)
        self.n_queried += len(x)
        self.n_calls += 1
        return y

    def _forward(self, x: np.ndarray, start: int) -> np.ndarray:
        return self._perturb_output(_measure(self.layer, x), start)

    def _perturb_output(self, y: np.ndarray, start: int) -> np.ndarray:
        return y

    # -- records
    def _params(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., <every parameter>: ...}``: what a result record states."""
        return {"name": self.name, **self._params()}

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({self.layer!r}{args})"


# --------------------------------------------------------------------------- noise
class AdditiveNoise(Perturbation):
    """Readout noise independent of the signal: ``y + std * N(0, 1)`` per entry."""

    name = "noise"

    def __init__(self, layer, std: float, *, seed: int):
        self.std = _real("AdditiveNoise", "std", std, min_value=0.0)
        super().__init__(layer, seed=_seed("AdditiveNoise", seed, required=True))

    def _perturb_output(self, y, start):
        return (y + self.std * self.rng.standard_normal(y.shape)).astype(y.dtype)

    def _params(self):
        return {"std": self.std, "seed": self.seed}


class MultiplicativeNoise(Perturbation):
    """Gain noise: ``y * (1 + std * N(0, 1))``, drawn independently per entry."""

    name = "gain_noise"

    def __init__(self, layer, std: float, *, seed: int):
        self.std = _real("MultiplicativeNoise", "std", std, min_value=0.0)
        super().__init__(layer, seed=_seed("MultiplicativeNoise", seed, required=True))

    def _perturb_output(self, y, start):
        return (y * (1.0 + self.std * self.rng.standard_normal(y.shape))).astype(y.dtype)

    def _params(self):
        return {"std": self.std, "seed": self.seed}


class ShotNoise(Perturbation):
    """Noise whose variance is proportional to the signal: ``y + sqrt(scale |y|) * N(0, 1)``.

    ``scale`` has the units of the measurement (variance per unit signal), e.g. the energy of one
    photon or electron for an intensity read-out.
    """

    name = "shot_noise"

    def __init__(self, layer, scale: float, *, seed: int):
        self.scale = _real("ShotNoise", "scale", scale, min_value=0.0)
        super().__init__(layer, seed=_seed("ShotNoise", seed, required=True))

    def _perturb_output(self, y, start):
        xi = self.rng.standard_normal(y.shape)
        return (y + np.sqrt(self.scale * np.abs(y)) * xi).astype(y.dtype)

    def _params(self):
        return {"scale": self.scale, "seed": self.seed}


# --------------------------------------------------------------------------- drift
class Drift(Perturbation):
    r"""Slow drift of a black box's gain or offset.

    The drift :math:`d_n` of sample ``n`` (counted from 0 over all samples queried) is a ramp
    :math:`d_n = \text{rate}\cdot n` (``mode="ramp"``) or a random walk
    :math:`d_n = \sum_{k<n}\epsilon_k`, :math:`\epsilon_k \sim N(0, \text{step}^2)` (``mode=
    "walk"``, so :math:`\mathrm{Var}\,d_n = n\,\text{step}^2`). It moves the gain,
    ``(1 + d_n) * y`` (``on="gain"``), or the offset, ``y + d_n`` (``on="offset"``). The first
    sample is unperturbed.

    Args:
        rate: ramp slope per sample (gain: relative; offset: measurement units).
        step: random-walk step std per sample.
        mode: ``"ramp"`` or ``"walk"``; inferred from which of ``rate``/``step`` is given.
        on: ``"gain"`` or ``"offset"``; for both, compose two drifts.
        per: ``"sample"`` (chunk-invariant) or ``"call"`` (``n`` counts calls instead: one
            value per call, as for an instrument that drifts between acquisitions).
        independent: for a walk, one independent walk per output channel (else one shared).
        seed: required for a walk.
    """

    name = "drift"

    def __init__(self, layer, *, rate: float | None = None, step: float | None = None,
                 mode: str | None = None, on: str = "gain", per: str = "sample",
                 independent: bool = False, seed: int | None = None):
        self.mode, self.rate, self.step = _mode("Drift", mode, rate, step)
        self.on = _choice("Drift", "on", on, ("gain", "offset"))
        self.per = _choice("Drift", "per", per, ("sample", "call"))
        if not isinstance(independent, bool):
            raise ValueError(f"Drift: independent must be true or false, got {independent!r}")
        self.independent = independent
        seed = _seed("Drift", seed, required=self.mode == "walk")
        super().__init__(layer, seed=seed)

    def _reset_state(self):
        super()._reset_state()
        width = self.spec.n_out if self.independent else 1
        self._walk = np.zeros(width)  # d at the next sample (or call)

    def _extra_state(self):
        return {"walk": [float(v) for v in self._walk]}

    def _load_extra_state(self, state):
        walk = np.asarray(state["walk"], np.float64)
        if walk.shape != self._walk.shape:
            raise ValueError(f"{self.spec.name}: saved drift has {walk.size} channel(s), this "
                             f"one {self._walk.size}")
        self._walk = walk

    @property
    def current(self) -> np.ndarray:
        """The drift the next sample (or call) will see, shape ``(1,)`` or ``(n_out,)``."""
        if self.mode == "ramp":
            return np.array([self.rate * (self.n_queried if self.per == "sample"
                                          else self.n_calls)])
        return self._walk.copy()

    def _drift(self, b: int, start: int) -> np.ndarray:
        """Drift for each of ``b`` samples, shape ``(b, 1)`` or ``(b, n_out)``."""
        if self.mode == "ramp":
            n = np.arange(start, start + b) if self.per == "sample" else np.full(b, self.n_calls)
            return (self.rate * n)[:, None]
        width = len(self._walk)
        if self.per == "call":
            d = np.broadcast_to(self._walk, (b, width))
            self._walk = self._walk + self.step * self.rng.standard_normal(width)
            return d
        eps = self.step * self.rng.standard_normal((b, width))
        # summed left to right from the carried value: bit-identical however calls are cut
        path = np.cumsum(np.concatenate([self._walk[None], eps]), axis=0)
        self._walk = path[-1]
        return path[:-1]

    def _perturb_output(self, y, start):
        d = self._drift(len(y), start)
        out = (1.0 + d) * y if self.on == "gain" else y + d
        return out.astype(y.dtype)

    def _params(self):
        p = {"mode": self.mode, "on": self.on, "per": self.per}
        if self.mode == "ramp":
            p["rate"] = self.rate
        else:
            p.update(step=self.step, independent=self.independent, seed=self.seed)
        return p


class ParameterDrift(Perturbation):
    r"""Slow drift of a physical parameter of an equinox simulator.

    The field ``param`` (a real scalar, e.g. ``"speed_scale"`` of
    :class:`pnn.sim.acoustic.AcousticLayer`; dotted paths reach nested modules) takes, for sample
    ``n``, the value :math:`v_0 + d_n` with :math:`d_n` the ramp or walk of :class:`Drift` (in
    the parameter's own units). The simulator is called as a copy made by
    :func:`equinox.tree_at`, with the value as a traced JAX scalar (no recompilation; see the module
    docstring); ``layer`` itself is never modified.

    Args:
        param: the field's name.
        rate, step, mode: as for :class:`Drift`, per sample, in the parameter's units.
        resolution: ``"call"`` holds the value over each call at its value for the call's first
            sample; ``"sample"`` vmaps the simulator over per-sample values (pure-JAX layers only).
        seed: required for a walk.

    Raises:
        TypeError: ``layer`` is not an equinox module.
        ValueError: the field does not exist, is not a real scalar, or is static.
    """

    name = "param_drift"

    def __init__(self, layer, param: str, *, rate: float | None = None,
                 step: float | None = None, mode: str | None = None, resolution: str = "call",
                 seed: int | None = None):
        self.mode, self.rate, self.step = _mode("ParameterDrift", mode, rate, step)
        self.resolution = _choice("ParameterDrift", "resolution", resolution, ("call", "sample"))
        _spec_of(layer, "ParameterDrift")
        self.initial = _read_param("ParameterDrift", layer, param)
        self.param = param
        seed = _seed("ParameterDrift", seed, required=self.mode == "walk")
        super().__init__(layer, seed=seed)

    def _reset_state(self):
        super()._reset_state()
        self._walk = 0.0

    def _extra_state(self):
        return {"walk": float(self._walk)}

    def _load_extra_state(self, state):
        self._walk = float(state["walk"])

    @property
    def current_value(self) -> float:
        """The parameter's value for the next sample."""
        if self.mode == "ramp":
            return self.initial + self.rate * self.n_queried
        return self.initial + self._walk

    def _values(self, b: int, start: int) -> np.ndarray:
        if self.mode == "ramp":
            return self.initial + self.rate * np.arange(start, start + b, dtype=np.float64)
        path = np.cumsum(np.r_[self._walk, self.step * self.rng.standard_normal(b)])
        self._walk = float(path[-1])
        return self.initial + path[:-1]

    def _forward(self, x, start):
        values = self._values(len(x), start)
        if self.resolution == "call":
            return _measure(with_param(self.layer, self.param, values[0]), x)
        dtype = _param_dtype(self.layer, self.param)
        for v in (values.min(), values.max()):  # the vmapped copies cannot check themselves
            with_param(self.layer, self.param, v)
        try:
            y = _forward_per_sample(self.layer, self.param, jnp.asarray(values, dtype=dtype),
                                    jnp.asarray(x))
        except jax.errors.JAXTypeError as e:
            raise TypeError(
                f"{self.spec.name}: ParameterDrift(resolution='sample') vmaps the layer over "
                f"samples, which needs a pure-JAX __call__; use resolution='call' ({e})"
            ) from e
        return _checked(y, self.spec, len(x))

    def _params(self):
        p = {"param": self.param, "initial": self.initial, "mode": self.mode,
             "resolution": self.resolution}
        if self.mode == "ramp":
            p["rate"] = self.rate
        else:
            p.update(step=self.step, seed=self.seed)
        return p


# --------------------------------------------------------------------------- jumps
class Jump(Perturbation):
    """A sudden change from the ``at``-th queried sample on (samples ``n >= at``; 0-based).

    Without ``param``: the measurement becomes ``factor * y + offset``. With ``param`` (an
    equinox simulator's real scalar field): the field becomes ``value``, or
    ``factor * v0 + offset`` when no ``value`` is given. A batch that straddles ``at`` is split
    there, so the jump lands on the exact sample however the drives are batched.
    """

    name = "jump"

    def __init__(self, layer, at: int, *, factor: float = 1.0, offset: float = 0.0,
                 param: str | None = None, value: float | None = None):
        self.at = _int("Jump", "at", at, min_value=0)
        self.factor = _real("Jump", "factor", factor)
        self.offset = _real("Jump", "offset", offset)
        self.param = param
        self.value = None if value is None else _real("Jump", "value", value)
        if param is None:
            if value is not None:
                raise ValueError("Jump: value= sets a parameter; give param= as well, or use "
                                 "factor=/offset= to change the measurement")
            if self.factor == 1.0 and self.offset == 0.0:
                raise ValueError("Jump: changes nothing; give factor=, offset=, or param= with "
                                 "value=/factor=/offset=")
            self._jumped_layer = None
        else:
            _spec_of(layer, "Jump")
            v0 = _read_param("Jump", layer, param)
            if value is not None and (self.factor != 1.0 or self.offset != 0.0):
                raise ValueError(f"Jump: give either value= or factor=/offset= for parameter "
                                 f"{param!r}, not both")
            self.initial = v0
            self.new_value = self.value if value is not None else self.factor * v0 + self.offset
            self._jumped_layer = with_param(layer, param, self.new_value)
        super().__init__(layer)

    @property
    def jumped(self) -> bool:
        """Whether the next sample is past the jump."""
        return self.n_queried >= self.at

    def _forward(self, x, start):
        b = len(x)
        k = int(np.clip(self.at - start, 0, b))  # samples before the jump
        if self.param is None:
            y = _measure(self.layer, x)
            y[k:] = (self.factor * y[k:] + self.offset).astype(y.dtype)
            return y
        if k == b:
            return _measure(self.layer, x)
        if k == 0:
            return _measure(self._jumped_layer, x)
        return np.concatenate([_measure_padded(self.layer, x[:k], b),
                               _measure_padded(self._jumped_layer, x[k:], b)])

    def _params(self):
        if self.param is None:
            return {"at": self.at, "factor": self.factor, "offset": self.offset}
        return {"at": self.at, "param": self.param, "initial": self.initial,
                "value": self.new_value}


# --------------------------------------------------------------------------- faulty channels
class DeadChannels(Perturbation):
    """The listed output channels read 0."""

    name = "dead"

    def __init__(self, layer, channels: Sequence[int]):
        spec = _spec_of(layer, "DeadChannels")
        self.channels = _channels("DeadChannels", channels, spec.n_out)
        super().__init__(layer)

    def _perturb_output(self, y, start):
        y[:, list(self.channels)] = 0.0
        return y

    def _params(self):
        return {"channels": list(self.channels)}


class StuckChannels(Perturbation):
    """The listed output channels read a fixed ``value`` (one for all, or one per channel)."""

    name = "stuck"

    def __init__(self, layer, channels: Sequence[int], value: float | Sequence[float]):
        spec = _spec_of(layer, "StuckChannels")
        self.channels = _channels("StuckChannels", channels, spec.n_out)
        if np.ndim(value) == 0:
            self.value = _real("StuckChannels", "value", value)
        else:
            vals = tuple(_real("StuckChannels", "a value", v) for v in value)
            if len(vals) != len(self.channels):
                raise ValueError(f"StuckChannels: got {len(vals)} values for "
                                 f"{len(self.channels)} channels; give one value or one per "
                                 f"channel")
            self.value = vals
        super().__init__(layer)

    def _perturb_output(self, y, start):
        y[:, list(self.channels)] = np.asarray(self.value, dtype=y.dtype)
        return y

    def _params(self):
        v = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"channels": list(self.channels), "value": v}


# --------------------------------------------------------------------------- quantisation
def _quantize(v: np.ndarray, lo: float, hi: float, bits: int) -> np.ndarray:
    """Nearest of ``2**bits`` uniform levels spanning ``[lo, hi]`` (both ends are levels)."""
    n_levels = 2**bits
    step = (hi - lo) / (n_levels - 1)
    k = np.clip(np.rint((np.asarray(v, np.float64) - lo) / step), 0, n_levels - 1)
    # the clip to [lo, hi] only absorbs float rounding of lo + k * step
    return np.clip(lo + k * step, lo, hi)


class Quantize(Perturbation):
    """Drive and/or readout quantised to ``2**bits`` uniform levels (like a DAC and an ADC).

    The drive levels span the spec's ``[lo, hi]`` (both ends included), so a quantised drive never
    leaves the safe range; the quantisation error of an in-range value is at most half a step,
    ``(hi - lo) / (2**bits - 1) / 2``. The readout levels span ``readout_range``; a reading beyond
    it saturates at the end level, as an ADC does (counted in ``n_saturated``).
    """

    name = "quantize"

    def __init__(self, layer, *, drive_bits: int | None = None, readout_bits: int | None = None,
                 readout_range: Sequence[float] | None = None):
        if drive_bits is None and readout_bits is None:
            raise ValueError("Quantize: give drive_bits= and/or readout_bits=")
        self.drive_bits = None if drive_bits is None else _int(
            "Quantize", "drive_bits", drive_bits, min_value=1, max_value=32)
        self.readout_bits = None if readout_bits is None else _int(
            "Quantize", "readout_bits", readout_bits, min_value=1, max_value=32)
        if (readout_bits is None) != (readout_range is None):
            raise ValueError("Quantize: readout_bits= and readout_range=(lo, hi) go together, "
                             f"got readout_bits={readout_bits!r}, readout_range={readout_range!r}")
        if readout_range is not None:
            try:
                rlo, rhi = readout_range
            except (TypeError, ValueError):
                raise ValueError(f"Quantize: readout_range must be (lo, hi), got "
                                 f"{readout_range!r}") from None
            rlo, rhi = _real("Quantize", "readout_range lo", rlo), _real("Quantize",
                                                                         "readout_range hi", rhi)
            if not rlo < rhi:
                raise ValueError(f"Quantize: readout_range must have lo < hi, got {(rlo, rhi)}")
            self.readout_range = (rlo, rhi)
        else:
            self.readout_range = None
        super().__init__(layer)

    def _reset_state(self):
        super()._reset_state()
        self.n_saturated = 0

    @property
    def drive_step(self) -> float | None:
        if self.drive_bits is None:
            return None
        return (self.spec.hi - self.spec.lo) / (2**self.drive_bits - 1)

    @property
    def readout_step(self) -> float | None:
        if self.readout_bits is None:
            return None
        lo, hi = self.readout_range
        return (hi - lo) / (2**self.readout_bits - 1)

    def _forward(self, x, start):
        if self.drive_bits is not None:
            x = _quantize(x, self.spec.lo, self.spec.hi, self.drive_bits).astype(
                np.result_type(x.dtype, np.float32))
        y = _measure(self.layer, x)
        if self.readout_bits is not None:
            lo, hi = self.readout_range
            self.n_saturated += int(((y < lo) | (y > hi)).sum())
            y = _quantize(y, lo, hi, self.readout_bits).astype(y.dtype)
        return y

    def _params(self):
        return {"drive_bits": self.drive_bits, "readout_bits": self.readout_bits,
                "readout_range": None if self.readout_range is None else list(self.readout_range)}


# --------------------------------------------------------------------------- latency
class Latency(Perturbation):
    """Sleeps ``seconds`` per call plus ``per_sample`` seconds per sample, then measures."""

    name = "latency"

    def __init__(self, layer, seconds: float, *, per_sample: float = 0.0):
        self.seconds = _real("Latency", "seconds", seconds, min_value=0.0)
        self.per_sample = _real("Latency", "per_sample", per_sample, min_value=0.0)
        super().__init__(layer)

    def _forward(self, x, start):
        time.sleep(self.seconds + self.per_sample * len(x))
        return _measure(self.layer, x)

    def _params(self):
        return {"seconds": self.seconds, "per_sample": self.per_sample}


def perturbation_states(layers) -> list[dict[str, Any] | None]:
    """The state of every perturbation stack in ``layers`` (``None`` for a bare layer)."""
    return [layer.state_dict() if isinstance(layer, Perturbation) else None for layer in layers]


def load_perturbation_states(layers, states) -> None:
    """Restore :func:`perturbation_states` onto the same arrangement of layers.

    Raises:
        ValueError: when the layers are not wrapped as they were when the state was taken.
    """
    states = list(states)
    if len(states) != len(layers):
        raise ValueError(f"saved perturbation state is for {len(states)} layer(s), "
                         f"got {len(layers)}")
    for k, (layer, st) in enumerate(zip(layers, states)):
        if isinstance(layer, Perturbation):
            if st is None:
                raise ValueError(f"layer {k} ({layer.spec.name}) is wrapped in {layer.name!r}, "
                                 f"but the saved run had no perturbation there")
            layer.load_state_dict(st)
        elif st is not None:
            raise ValueError(f"layer {k} ({layer.spec.name}) is not perturbed, but the saved "
                             f"run had {st['name']!r} there")


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


def perturbations_of(layer) -> list[Perturbation]:
    """The perturbation wrappers around ``layer``, innermost first (``[]`` for a bare layer)."""
    stack = []
    while isinstance(layer, Perturbation):
        stack.append(layer)
        layer = layer.layer
    return stack[::-1]


def unwrap(layer):
    """The layer beneath every perturbation wrapper."""
    while isinstance(layer, Perturbation):
        layer = layer.layer
    return layer
