"""The abstract simulator: what every ``pnn.sim`` layer provides, and the one way it is called.

A simulator is an equinox module that implements :class:`pnn.layer.PhysicalLayer`. As diffrax's
``AbstractSolver`` does for its solvers, :class:`AbstractSimulator` declares what a subclass must
provide and owns the path every call takes:

* ``spec`` (:class:`~pnn.layer.LayerSpec`) and ``physical_scalars``, the names of the fields that
  hold the physics' scalar parameters;
* :meth:`~AbstractSimulator.forward`, the pure-JAX physics: a batch of drives in, a batch of
  measurements out, nothing validated (jittable, vmappable, differentiable);
* :meth:`~AbstractSimulator.validate_params`, which refuses physical scalars outside the range in
  which the model and its discretisation are valid (stability, accuracy, positivity, finiteness);
* :attr:`~AbstractSimulator.flops_per_sample`, the floating-point work of one sample, counted from
  the shapes (the ledger charges it to in-silico training).

:meth:`~AbstractSimulator.__call__` is final: it validates the input
(:func:`pnn.layer.validate_input`; inside a JAX transformation, where values are unknown on the
host, the finiteness and range checks run on the device with :func:`equinox.error_if`), validates
the parameters, and calls the jitted :meth:`forward`.

Physical scalars
----------------
Every physical scalar is held in one form: a 0-d floating JAX array (:func:`scalar`). A 0-d array
is a traced leaf under ``eqx.filter_jit``, so a drift or a jump that sets a new value by name
(:func:`pnn.perturb.with_param`, ``eqx.tree_at``) reuses the compiled simulator instead of
recompiling it, and :func:`pnn.layer.concrete_scalars` reads the values on the host for
:meth:`validate_params`. Quantities frozen into precomputed arrays at construction (grid spacing
and time step, pulse width, mode spacing) are static fields: changing one needs a new layer, and
``with_param`` refuses them instead of letting them change nothing. Construction checks the
parameters (:meth:`__check_init__`); a copy made by ``tree_at`` skips the constructor, so
:meth:`__call__` and ``with_param`` check them again.

FLOP conventions
----------------
Counted from the operations the simulator performs, per sample: a real add, multiply, divide,
compare or transcendental (exp, sin, cos, sqrt) is 1; a complex add 2, a complex multiply 6, a
complex multiply-add 8, a complex division 11; an FFT of length n is :math:`5 n \\log_2 n` (the
radix-2 count); an LU factorisation of a complex n×n matrix :math:`8n^3/3` plus :math:`8n^2` per
right-hand side for the two triangular solves. Work that does not depend on the drive and is done
once per call, not per sample, is stated in each simulator's docstring and not included.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pnn.layer import (LayerSpec, check_representable, concrete_scalars, is_traced,
                       validate_input)

__all__ = ["AbstractSimulator", "scalar", "assign_scalars", "fft_flops", "require",
           "check_seed", "MAX_LAYER_SEED"]


def scalar(value, layer: str = "simulator", param: str = "a physical scalar") -> Array:
    """A physical scalar in the one form simulators hold it: a 0-d floating JAX array.

    Raises:
        ValueError: naming ``layer`` and ``param`` when a finite ``value`` would become inf in
            the dtype the array holds (float32: magnitude above about 3.4e38).
    """
    check_representable(layer, param, value)
    return jnp.asarray(float(value))


def assign_scalars(module, layer: str, **values) -> None:
    """In a simulator's ``__init__``: hold each of ``values`` in the field of its name, as
    :func:`scalar` makes it, in the order given (so the first unrepresentable value is the one
    named in the error)."""
    for field, value in values.items():
        setattr(module, field, scalar(value, layer, field))


#: numpy's and JAX's PRNG seeds are 32-bit: JAX keeps the low 32 bits of a larger one (two seeds
#: would silently give the same layer) and a seed beyond 64 bits overflows
MAX_LAYER_SEED = 2**32 - 1


def check_seed(layer: str, seed) -> int:
    """A simulator's seed as an int in ``[0, MAX_LAYER_SEED]``; raises ``ValueError`` naming the
    layer, the value and the range."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or not 0 <= int(seed) <= MAX_LAYER_SEED:
        raise ValueError(f"{layer}: seed = {seed!r}: expected an integer in [0, "
                         f"{MAX_LAYER_SEED}] (numpy's and JAX's seeds are 32-bit)")
    return int(seed)


def fft_flops(n: int) -> int:
    """Real FLOPs of one complex FFT of length ``n`` (radix-2 count, 5 n log2 n)."""
    return int(round(5 * n * math.log2(n)))


def require(layer: str, param: str, value: float, ok: bool, rule: str, *, why: str = "",
            fix: str = "", unit: str = "") -> None:
    """Raise ``ValueError`` naming the layer, the parameter, its value, the rule and the fix.

    The message reads ``"<layer>: <param> = <value> <rule> (<why>; in <unit>); <fix>"``.
    """
    if ok:
        return
    v = f"{value:.6g}" if isinstance(value, float) else repr(value)
    notes = [n for n in (why, f"in {unit}" if unit else "") if n]
    msg = f"{layer}: {param} = {v} {rule}"
    if notes:
        msg += f" ({'; '.join(notes)})"
    if fix:
        msg += f"; {fix}"
    raise ValueError(msg)


@eqx.filter_jit
def _jit_forward(layer, x, key):
    return layer.forward(x, key=key)


def _check_traced_input(spec: LayerSpec, x, atol: float = 1e-6, *, tie_to=None):
    """Finiteness and range of a traced batch of drives, checked on the device; returns ``x``
    (or ``tie_to``) carrying the check."""
    bad = ~jnp.isfinite(x) | (x < spec.lo - atol) | (x > spec.hi + atol)
    return eqx.error_if(
        x if tie_to is None else tie_to, jnp.any(bad),
        f"{spec.name}: drives must be finite and lie in the safe range [{spec.lo}, {spec.hi}] "
        f"{spec.units}; a traced call received values outside it; rescale the drive into the "
        f"range before sending it")


class AbstractSimulator(eqx.Module):
    """A simulated physical layer: validated input and parameters in, pure-JAX physics inside.

    Subclasses declare ``spec``, ``physical_scalars``, and implement :meth:`forward`,
    :meth:`validate_params` and :attr:`flops_per_sample`; they may override :meth:`noise_key`
    when they carry internal randomness. They do not override :meth:`__call__`.
    """

    spec: eqx.AbstractVar[LayerSpec]
    #: names of the fields that hold the physical scalars (0-d floating arrays, see :func:`scalar`)
    physical_scalars: eqx.AbstractClassVar[tuple[str, ...]]
    #: jitted per batch shape: the ledger pads the last chunk of a large batch (see pnn.cost)
    pad_batches: ClassVar[bool] = True

    @abc.abstractmethod
    def forward(self, x: Float[Array, "batch n_in"], *, key=None) -> Float[Array, "batch n_out"]:
        """The physics on a batch of drives, pure JAX and unvalidated.

        ``key`` draws the layer's internal randomness (detector noise); deterministic layers
        ignore it.
        """

    @abc.abstractmethod
    def validate_params(self) -> None:
        """Refuse physical scalars outside their valid range.

        Checks run on the host with concrete values (:meth:`params`) and do nothing when any
        scalar is traced (inside a vmapped drift the caller checks the values instead).

        Raises:
            ValueError: naming the parameter, its value, the limit and the fix.
        """

    @property
    @abc.abstractmethod
    def flops_per_sample(self) -> int:
        """Real floating-point operations of one sample's forward simulation (see the module
        docstring's conventions)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__}: AbstractSimulator.__call__ is final (it validates the input and "
                f"the parameters before any physics runs); implement forward() instead")

    def noise_key(self, key):
        """The key :meth:`forward` receives for a call given ``key``; ``None`` when the layer
        is deterministic (the default)."""
        return None

    def params(self) -> dict[str, float] | None:
        """The physical scalars as Python floats, or ``None`` when any is traced."""
        return concrete_scalars(self, self.physical_scalars)

    def __check_init__(self):
        for k in self.physical_scalars:
            v = getattr(self, k)
            ok = (isinstance(v, jax.Array) and v.ndim == 0
                  and jnp.issubdtype(v.dtype, jnp.floating)) or is_traced(v)
            if not ok:
                raise TypeError(
                    f"{self.spec.name}: physical scalar {k!r} must be held as a 0-d floating JAX "
                    f"array (pnn.sim.base.scalar), got {type(v).__name__} {v!r}; a Python float "
                    f"field would be static under jit and recompile the simulator for every value")
        self.validate_params()

    def __call__(self, x: Float[Array, "batch n_in"], *, key=None) -> Float[Array, "batch n_out"]:
        """Validate ``x`` and the physical scalars, then run :meth:`forward` (jitted).

        Final: subclasses implement :meth:`forward` instead.

        Raises:
            ValueError: on a wrong shape, non-finite or out-of-range drives
                (:func:`pnn.layer.validate_input`), or physical scalars out of their valid range
                (:meth:`validate_params`). Under a JAX transformation the drive values are
                checked on the device and a violation raises equinox's runtime error.
        """
        validate_input(self.spec, x)
        self.validate_params()
        x = jnp.asarray(x)
        if not is_traced(x):
            return _jit_forward(self, x, self.noise_key(key))
        checked = _check_traced_input(self.spec, x)
        y = _jit_forward(self, checked, self.noise_key(key))
        # the check is also tied to the output: XLA drops a check whose result nothing uses, as
        # when a reading ignores the drive's values (sim/ablation.py's ``none``)
        return _check_traced_input(self.spec, x, tie_to=y)

    def _forward(self, x, key=None):
        """The jitted :meth:`forward`, unvalidated (the name callers used before
        :meth:`forward` was public)."""
        return _jit_forward(self, x, key)

