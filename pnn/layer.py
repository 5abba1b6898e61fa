"""The black-box protocol every physical system implements.

A physical layer takes a batch of drive vectors and returns a batch of measured vectors. Nothing
else is known about the physics: simulators (``sim/``) and instrument drivers (``drivers/``) both
implement :class:`PhysicalLayer`, and every trainer talks to a layer only through it.

Input validation is shared here so that every layer refuses bad input with the same kind of
message: the layer's name, what was expected, and what was given.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol, runtime_checkable

import jax
import numpy as np
from jaxtyping import Array, Float

__all__ = ["LayerSpec", "PhysicalLayer", "validate_input", "is_traced", "concrete_scalars",
           "device_name", "working_dtype", "check_representable"]


def working_dtype() -> np.dtype:
    """The floating dtype arrays are computed in: float32, or float64 with JAX's x64 mode."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def check_representable(owner: str, label: str, value, *, unit: str = "") -> None:
    """Refuse a number that is finite as a Python float but overflows to inf in
    :func:`working_dtype` (float32: magnitude above about 3.4e38).

    Raises:
        ValueError: naming ``owner``, ``label``, the value, the dtype and its largest value.
    """
    value = float(value)
    limit = float(np.finfo(working_dtype()).max)
    if math.isfinite(value) and abs(value) > limit:
        raise ValueError(
            f"{owner}: {label} = {value!r}{' ' + unit if unit else ''} is finite but becomes "
            f"inf in {working_dtype()}, the dtype it is computed in (largest finite value "
            f"{limit:.4g}); give a value of magnitude <= {limit:.4g}")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What a trainer may know about a physical layer.

    Attributes:
        n_in: number of drive channels (length of one input vector).
        n_out: number of measured channels (length of one output vector).
        lo, hi: the allowed drive range; every entry of an input must lie in ``[lo, hi]``.
        name: a human-readable name used in every error message about this layer.
        units: units of the drive and of the measurement, for records and plots.
    """

    n_in: int
    n_out: int
    lo: float = 0.0
    hi: float = 1.0
    name: str = "layer"
    units: str = "arb."

    def __post_init__(self):
        for field in ("n_in", "n_out"):
            v = getattr(self, field)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(
                    f"LayerSpec {self.name!r}: {field} must be a positive integer, got {v!r}"
                )
        if not (np.isfinite(self.lo) and np.isfinite(self.hi)) or not self.lo < self.hi:
            raise ValueError(
                f"LayerSpec {self.name!r}: input range must be finite with lo < hi, "
                f"got lo={self.lo!r}, hi={self.hi!r}"
            )
        for field in ("lo", "hi"):
            check_representable(f"LayerSpec {self.name!r}", field, getattr(self, field))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@runtime_checkable
class PhysicalLayer(Protocol):
    """A batch of drive signals in, a batch of measured outputs out.

    ``__call__`` maps ``Float[Array, "batch n_in"]`` to ``Float[Array, "batch n_out"]``. Inputs
    outside ``spec``'s range, of the wrong shape, or not finite raise ``ValueError`` (see
    :func:`validate_input`); nothing out of range is ever passed on to the physics.
    """

    spec: LayerSpec

    def __call__(self, x: Float[Array, "batch n_in"]) -> Float[Array, "batch n_out"]: ...


def is_traced(x) -> bool:
    """True when ``x`` is an abstract JAX tracer (inside ``jit``/``grad``/``vmap``)."""
    return isinstance(x, jax.core.Tracer)


def concrete_scalars(module, names) -> dict[str, float] | None:
    """The named 0-d fields of ``module`` as Python floats, or ``None`` when any is traced.

    For a simulator's ``validate_params()``: parameters can only be checked on the host, with
    concrete values; inside a transformation (a vmapped drift) the caller checks instead.
    """
    vals = [getattr(module, k) for k in names]
    if any(is_traced(v) for v in vals):
        return None
    return {k: float(v) for k, v in zip(names, vals)}


def validate_input(spec: LayerSpec, x, *, atol: float = 1e-6):
    """Check a batch of drives against a layer's spec and return it unchanged.

    Shape is checked always (it is static under tracing); finiteness and range are checked when
    the values are concrete. Inside a JAX transformation the values are unknown, so a simulator
    used under ``jit`` relies on the caller (trainers validate on the host before tracing).

    Raises:
        ValueError: naming the layer, what was expected and what was given, when ``x`` is not
            2-D, its second axis is not ``spec.n_in``, it holds NaN/inf, or an entry lies outside
            ``[spec.lo, spec.hi]`` by more than ``atol``.
    """
    shape = getattr(x, "shape", None)
    if shape is None:
        x = np.asarray(x)
        shape = x.shape
    if len(shape) != 2:
        raise ValueError(
            f"{spec.name}: expected a batch of drives of shape (batch, {spec.n_in}), "
            f"got an array of rank {len(shape)} with shape {tuple(shape)}"
        )
    if shape[1] != spec.n_in:
        raise ValueError(
            f"{spec.name}: expected {spec.n_in} drive channels (shape (batch, {spec.n_in})), "
            f"got shape {tuple(shape)}"
        )
    if shape[0] < 1:
        raise ValueError(f"{spec.name}: expected at least one drive vector, got an empty batch")
    if is_traced(x):
        return x
    xv = np.asarray(x)
    if not np.issubdtype(xv.dtype, np.number) or np.iscomplexobj(xv):
        raise ValueError(f"{spec.name}: expected real-valued drives, got dtype {xv.dtype}")
    finite = np.isfinite(xv)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(
            f"{spec.name}: drives must be finite, got {float(xv[tuple(bad)])} at "
            f"(sample {bad[0]}, channel {bad[1]}) and {int((~finite).sum())} non-finite in all"
        )
    lo_v, hi_v = float(xv.min()), float(xv.max())
    if lo_v < spec.lo - atol or hi_v > spec.hi + atol:
        n_bad = int(((xv < spec.lo - atol) | (xv > spec.hi + atol)).sum())
        raise ValueError(
            f"{spec.name}: drives must lie in the safe range [{spec.lo}, {spec.hi}] {spec.units}, "
            f"got values in [{lo_v:.6g}, {hi_v:.6g}] ({n_bad} entries outside); rescale the "
            f"drive into the range before sending it"
        )
    return x


def device_name(layer) -> str:
    """The name of the device behind ``layer``: for a view of a device that several blocks
    share (one that declares ``shared_device_name``, :class:`pnn.layers.Shared`), through any
    wrappers around it (each holding the next in ``.layer``), that device's name; else the
    layer's own name. The ledger counts queries per device by it."""
    inner = layer
    for _ in range(64):
        shared = getattr(inner, "shared_device_name", None)
        if isinstance(shared, str):
            return shared
        nxt = getattr(inner, "layer", None)
        if nxt is None or nxt is inner:
            break
        inner = nxt
    return layer.spec.name
