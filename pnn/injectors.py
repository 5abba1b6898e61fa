"""The perturbation injectors: noise, drift, jumps, faulty channels, quantisation and latency.

Each is a :class:`~pnn.perturbation.Perturbation` wrapping a physical layer; :mod:`pnn.perturb`
states what each one does (the table of formulas), offers them by name (:data:`PERTURBATIONS`,
``"noise:std=0.02"``) and re-exports them.
"""

from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pnn.param_change import _forward_per_sample, _param_dtype, _read_param, with_param
from pnn.perturbation import (Perturbation, _channels, _checked, _choice, _int, _measure,
                              _measure_padded, _mode, _real, _seed, _spec_of)

__all__ = ["AdditiveNoise", "MultiplicativeNoise", "ShotNoise", "Drift", "ParameterDrift", "Jump",
           "DeadChannels", "StuckChannels", "Quantize", "Latency"]


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
