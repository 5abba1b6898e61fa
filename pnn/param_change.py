"""One physical parameter of an equinox simulator changed on a copy, without recompiling it.

:func:`with_param` stores the new value as a JAX scalar, a traced leaf: ``eqx.filter_jit`` treats a
Python ``float`` field as static and would compile the simulator again for every new value (see
:mod:`pnn.perturb`, "Parameter changes and recompilation"). :class:`pnn.perturb.ParameterDrift`,
:class:`pnn.perturb.Jump` and drift events (``pnn adapt``) change parameters this way.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pnn.layer import check_representable, is_traced

__all__ = ["with_param"]


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

