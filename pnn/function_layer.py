"""A physical layer around a host-side callable: :func:`from_function` (see :mod:`pnn.layers`
for the three ways to bring your own physics), and the checks every host-side layer applies to
what its code returns (:func:`_check_output`) and to traced input (:func:`_refuse_trace`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from pnn.layer import LayerSpec, is_traced, validate_input

__all__ = ["from_function", "FunctionLayer"]


def _fn_name(fn) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        name = type(fn).__name__
    mod = getattr(fn, "__module__", None)
    return f"{mod}.{name}" if mod and mod not in ("__main__", "builtins") else name


def _as_numpy(y) -> np.ndarray:
    """A function's answer as a NumPy array (PyTorch tensors and JAX arrays included)."""
    if hasattr(y, "detach") and hasattr(y, "cpu"):  # a torch tensor, possibly requiring grad
        y = y.detach().cpu().numpy()
    return np.asarray(y)


def _check_output(y, spec: LayerSpec, n: int, what: str) -> np.ndarray:
    """Check a measurement: real numbers, shape ``(n, spec.n_out)``, finite."""
    try:
        y = _as_numpy(y)
    except Exception as e:  # e.g. a list of ragged rows
        raise ValueError(f"{spec.name}: {what} returned something that is not an array of "
                         f"numbers ({type(y).__name__}: {e}); return a (batch, {spec.n_out}) "
                         f"array") from None
    if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y) or y.dtype == bool:
        raise ValueError(f"{spec.name}: {what} returned dtype {y.dtype}, expected real numbers; "
                         f"return a float array of shape ({n}, {spec.n_out})")
    if y.shape != (n, spec.n_out):
        raise ValueError(f"{spec.name}: {what} returned shape {y.shape}, expected ({n}, "
                         f"{spec.n_out}) (one row of {spec.n_out} measured values per drive "
                         f"vector); fix the function or declare n_out={y.shape[-1] if y.ndim else '?'}"
                         f" in the spec")
    finite = np.isfinite(y)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(f"{spec.name}: {what} returned non-finite measurements: "
                         f"{float(y[tuple(bad)])} at (sample {bad[0]}, channel {bad[1]}) and "
                         f"{int((~finite).sum())} non-finite in all; a measurement must be a "
                         f"finite number (check the function for overflow or a failed reading)")
    return y.astype(np.float32, copy=False)


def _refuse_trace(spec: LayerSpec, x, kind: str) -> None:
    if is_traced(x):
        raise TypeError(f"{spec.name}: a {kind} runs on the host and cannot be traced by JAX "
                        f"(jit/grad/vmap); call it with concrete arrays (the model-free trainers "
                        f"do, through pnn.cost.Ledger.query), or give a method that needs "
                        f"gradients a differentiable simulator as its model")


class FunctionLayer:
    """A :class:`~pnn.layer.PhysicalLayer` around a host-side callable (see
    :func:`from_function`). ``n_calls`` and ``n_samples`` count what reached the function."""

    pad_batches = False

    def __init__(self, fn: Callable, spec: LayerSpec, *, batched: bool = True):
        self.fn = fn
        self.spec = spec
        self.batched = bool(batched)
        self.n_calls = 0
        self.n_samples = 0

    def __call__(self, x):
        _refuse_trace(self.spec, x, "function layer")
        validate_input(self.spec, x)
        x = np.array(x)  # a copy: the function may modify its argument without harm
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        what = f"the function {_fn_name(self.fn)}"
        if self.batched:
            y = self.fn(x)
            self.n_calls += 1
        else:
            rows = []
            for i, xi in enumerate(x):
                yi = _as_numpy(self.fn(xi))
                self.n_calls += 1
                if yi.shape != (self.spec.n_out,):
                    raise ValueError(
                        f"{self.spec.name}: {what} (batched=False) returned shape {yi.shape} for "
                        f"drive vector {i}, expected ({self.spec.n_out},): one measured vector "
                        f"per call")
                rows.append(yi)
            y = np.stack(rows)
        self.n_samples += len(x)
        return _check_output(y, self.spec, len(x), what)

    def __repr__(self) -> str:
        return f"FunctionLayer({_fn_name(self.fn)}, {self.spec})"


_UNSET: Any = object()


def from_function(fn: Callable, spec_or_shape, *, name: str | None = None, lo: float = _UNSET,
                  hi: float = _UNSET, units: str = _UNSET, batched: bool = True) -> FunctionLayer:
    """Wrap a host-side callable as a physical layer.

    Args:
        fn: ``fn(x) -> y``: with ``batched=True`` (default) ``x`` is a NumPy array of shape
            ``(batch, n_in)`` (float32 from the trainers) and ``y`` must have shape
            ``(batch, n_out)``; with ``batched=False`` it is called once per drive vector,
            ``(n_in,) -> (n_out,)``. NumPy arrays, lists, JAX arrays and PyTorch tensors are
            accepted as answers.
        spec_or_shape: a :class:`~pnn.layer.LayerSpec`, or ``(n_in, n_out)``.
        name: the layer's name in errors and records (default: the function's name).
        lo, hi: the allowed drive range (default ``[0, 1]``); drives outside it are refused
            before the function is called.
        units: units of drive and measurement, for records.

    Returns: a :class:`FunctionLayer`. Its calls validate the drive (shape, finiteness, range:
    :func:`pnn.layer.validate_input`) and the answer (shape ``(batch, n_out)``, real, finite),
    raising ``ValueError`` naming the layer and the function.

    Raises:
        TypeError: ``fn`` is not callable.
        ValueError: ``spec_or_shape`` is neither a LayerSpec nor ``(n_in, n_out)``, or a
            LayerSpec is given together with ``name``/``lo``/``hi``/``units``.
    """
    if not callable(fn):
        raise TypeError(f"from_function: expected a callable fn(x) -> y, got "
                        f"{type(fn).__name__} {fn!r}")
    if isinstance(spec_or_shape, LayerSpec):
        given = [k for k, v in (("name", name), ("lo", lo), ("hi", hi), ("units", units))
                 if v is not _UNSET and v is not None]
        if given:
            raise ValueError(f"from_function: a LayerSpec was given, and also "
                             f"{', '.join(given)}; give either the spec or (n_in, n_out) with "
                             f"the keywords, not both")
        spec = spec_or_shape
    else:
        shape = spec_or_shape
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 2 \
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                           for v in shape):
            raise ValueError(f"from_function: expected a LayerSpec or a shape (n_in, n_out) of "
                             f"two positive integers, got {spec_or_shape!r}")
        spec = LayerSpec(n_in=int(shape[0]), n_out=int(shape[1]),
                         lo=0.0 if lo is _UNSET else float(lo),
                         hi=1.0 if hi is _UNSET else float(hi),
                         name=name or getattr(fn, "__name__", None) or type(fn).__name__,
                         units="arb." if units is _UNSET else str(units))
    return FunctionLayer(fn, spec, batched=batched)
