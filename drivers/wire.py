"""The numbers on the wire: which values a binary datatype carries, and encoding that never wraps.

The safety guard (:mod:`pnn.drivers.safety`) checks drive values in instrument units, as float64.
What leaves the host is those values *encoded*: rounded and cast to the wire's datatype (``int16``
for many DACs, ``float32`` for the serial protocol). A cast that does not fit wraps (36000 as
``int16`` is -29536) or overflows (1e39 as ``float32`` is inf), and the instrument would receive a
value the guard never saw. Two checks keep the guard's promise on the bytes themselves:

* at profile load, :func:`check_ceiling_fits` refuses a ``[safety]`` ceiling that lets through a
  value the datatype cannot carry;
* at send time, :func:`encode` refuses (nothing is sent) any value whose encoding does not round
  trip: an integer that is not exactly the rounded value, a float that is not within rounding.

Datatypes are ``struct`` codes: ``b B h H i I q Q`` (8- to 64-bit integers) and ``f d`` (float32,
float64).
"""

from __future__ import annotations

import numpy as np

from pnn.drivers.errors import SafetyError

__all__ = ["DATATYPES", "describe", "wire_range", "check_ceiling_fits", "encode"]

#: the struct codes a profile may name
DATATYPES = "bBhHiIqQfd"


def _dtype(code: str) -> np.dtype:
    if len(code) != 1 or code not in DATATYPES:
        raise ValueError(f"wire datatype must be one struct code of {DATATYPES!r}, got {code!r}")
    return np.dtype(code)


def describe(code: str) -> str:
    """``'h'`` -> ``"'h' (int16)"``."""
    return f"{code!r} ({_dtype(code).name})"


def wire_range(code: str) -> tuple:
    """The smallest and largest value the datatype carries (Python ints for integer types)."""
    dt = _dtype(code)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return int(info.min), int(info.max)
    m = float(np.finfo(dt).max)
    return -m, m


def _int_fits(r: np.ndarray, dt: np.dtype) -> np.ndarray:
    """Which rounded (integer-valued) float64 values lie in the integer type's range.

    ``max + 1`` and ``min`` are powers of two, exact in float64 even for 64-bit types (``max``
    itself is not: float(2**63 - 1) == 2**63).
    """
    info = np.iinfo(dt)
    return np.isfinite(r) & (r >= float(info.min)) & (r < float(info.max) + 1.0)


def check_ceiling_fits(lo: float, hi: float, code: str, tol: float = 0.0) -> str | None:
    """``None`` when every value in ``[lo - tol, hi + tol]`` (rounded for integer types) can be
    encoded as ``code``; otherwise a sentence saying what does not fit."""
    dt = _dtype(code)
    w_lo, w_hi = wire_range(code)
    if dt.kind in "iu":
        ends = np.rint(np.array([lo - tol, hi + tol], np.float64))
        ok = bool(_int_fits(ends, dt).all())
    else:
        ok = max(abs(lo), abs(hi)) + tol <= float(np.finfo(dt).max)
    if ok:
        return None
    return (f"values in [{lo:.10g}, {hi:.10g}] do not fit the wire datatype {describe(code)}, "
            f"which carries only [{w_lo:.10g}, {w_hi:.10g}]")


def encode(values, code: str, *, name: str, where: str) -> np.ndarray:
    """``values`` (instrument units, float64) as an array of the wire's datatype, exactly.

    Integer types get the rounded values (ties to even); float types the nearest representable
    value. Every encoded value is decoded again and compared with what was checked.

    Args:
        name: the layer's name, for the message. where: the profile table that sets the encoding
            (``"visa.drive"``), for the fix.

    Raises:
        SafetyError: (a ``ValueError``; nothing was sent) when a value would wrap or overflow.
    """
    v = np.asarray(values, np.float64)
    dt = _dtype(code)
    if dt.kind in "iu":
        r = np.rint(v)
        fits = _int_fits(r, dt)
        out = np.where(fits, r, 0.0).astype(dt)
        ok = fits & (out.astype(np.float64) == r)
    else:
        fi = np.finfo(dt)
        with np.errstate(over="ignore", invalid="ignore"):  # inf and nan are refused below
            out = v.astype(dt)
            back = out.astype(np.float64)
            ok = np.isfinite(back) & (np.abs(back - v) <= fi.eps * np.abs(v)
                                      + fi.smallest_subnormal)
    if not ok.all():
        bad = v[~ok]
        w_lo, w_hi = wire_range(code)
        raise SafetyError(
            f"{name}: refusing to send {bad.size} value(s) that the wire datatype {describe(code)} "
            f"cannot carry (it holds [{w_lo:.10g}, {w_hi:.10g}]; got values in "
            f"[{bad.min():.10g}, {bad.max():.10g}] instrument units): encoded they would wrap or "
            f"overflow. Nothing was sent; fix {where} (datatype, scale, offset) or lower the "
            f"profile's [safety] ceiling into that range")
    return out
