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

Rounding to the wire's datatype never carries a value out of the active safety limits: given the
limits (``bounds``), :func:`encode` rounds toward their inside where rounding to nearest would
cross one (an ``int16`` drive of 100.6 under a ceiling of 100.7 is sent as 100, not 101; a
``float32`` value above the limit by less than its rounding is sent as the float32 just below it).
So the guard checks the exact values (an in-range drive is never refused for its rounding) and
no encoded value lies outside the limits, whether the guard refused or clipped. Limits that hold
no value of the datatype (``[100.2, 100.7]`` for an integer type) refuse every drive.

Datatypes are ``struct`` codes: ``b B h H i I q Q`` (8- to 64-bit integers) and ``f d`` (float32,
float64). An instrument that takes its drives as text gets them from :func:`encode_ascii`:
decimal numbers of a set number of significant digits, rounded toward the inside of the limits
the same way.
"""

from __future__ import annotations

import decimal
import math

import numpy as np

from pnn.drivers.errors import SafetyError
from pnn.drivers.safety import _tol

__all__ = ["DATATYPES", "ASCII", "describe", "wire_range", "inside_range", "check_ceiling_fits",
           "encode", "encode_ascii", "ascii_inside_range"]

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


def inside_range(lo: float, hi: float, code: str) -> tuple[float, float]:
    """The smallest and largest value of the datatype within ``[lo, hi]`` (as float64):
    ``(ceil(lo), floor(hi))`` for integer types, the representable values nearest inside for
    float types. ``lo > hi`` in the result when ``[lo, hi]`` holds no value of the datatype."""
    dt = _dtype(code)
    if dt.kind in "iu":
        return float(math.ceil(lo)), float(math.floor(hi))
    with np.errstate(over="ignore"):
        w_lo, w_hi = dt.type(lo), dt.type(hi)
        if float(w_lo) < lo:
            w_lo = np.nextafter(w_lo, dt.type(np.inf))
        if float(w_hi) > hi:
            w_hi = np.nextafter(w_hi, dt.type(-np.inf))
    return float(w_lo), float(w_hi)


def _check_within(v: np.ndarray, bounds, name: str) -> tuple[float, float]:
    """``bounds`` as floats; refuses values outside them by more than the guard's tolerance
    (the guard lets no such value through: this is the last check before the wire)."""
    b_lo, b_hi = float(bounds[0]), float(bounds[1])
    outside = (v < b_lo - _tol(b_lo)) | (v > b_hi + _tol(b_hi))
    if outside.any():
        bad = v[outside]
        raise SafetyError(
            f"{name}: refusing to send {bad.size} value(s) outside the safety limits "
            f"[{b_lo:.10g}, {b_hi:.10g}] (got values in [{bad.min():.10g}, "
            f"{bad.max():.10g}]); nothing was sent. Check the values with the layer's "
            f"SafetyLimits before encoding them")
    return b_lo, b_hi


def encode(values, code: str, *, name: str, where: str,
           bounds: tuple[float, float] | None = None) -> np.ndarray:
    """``values`` (instrument units, float64) as an array of the wire's datatype, exactly.

    Integer types get the rounded values (ties to even); float types the nearest representable
    value. With ``bounds = (lo, hi)`` (the active safety limits, which the values were checked
    against), a value that rounding would carry outside ``[lo, hi]`` is rounded toward the
    inside instead (:func:`inside_range`: ``floor(hi)`` and ``ceil(lo)`` for integers, the
    representable value next inside for floats), so that no encoded value lies outside the
    limits. Every encoded value is decoded again and compared with what was checked.

    Args:
        name: the layer's name, for the message. where: the profile table that sets the encoding
            (``"visa.drive"``), for the fix. bounds: the limits no encoded value may cross.

    Raises:
        SafetyError: (a ``ValueError``; nothing was sent) when a value would wrap or overflow,
            lies outside ``bounds`` (by more than the guard's tolerance: the guard lets no such
            value through), or ``bounds`` hold no value of the datatype.
    """
    v = np.asarray(values, np.float64)
    dt = _dtype(code)
    if bounds is not None:
        b_lo, b_hi = _check_within(v, bounds, name)
        w_lo, w_hi = inside_range(b_lo, b_hi, code)
        if w_lo > w_hi:
            raise SafetyError(
                f"{name}: refusing to send: the safety limits [{b_lo:.10g}, {b_hi:.10g}] hold "
                f"no value of the wire datatype {describe(code)}. Nothing was sent; widen the "
                f"limits to include one (restrict() or the profile's [safety]) or fix {where}")
    if dt.kind in "iu":
        r = np.rint(v)
        if bounds is not None:
            r = np.clip(r, w_lo, w_hi)  # toward the inside; NaN stays NaN and is refused below
        fits = _int_fits(r, dt)
        out = np.where(fits, r, 0.0).astype(dt)
        ok = fits & (out.astype(np.float64) == r)
    else:
        if bounds is not None:
            # [w_lo, w_hi] are representable: rounding to nearest cannot leave them
            v = np.clip(v, w_lo, w_hi)
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


#: the drive datatype of text drives (``[visa.drive] datatype = "ascii"``)
ASCII = "ascii"


def _decimal_text(v: float, digits: int, rounding: str) -> str:
    """``v`` with ``digits`` significant decimal digits, rounded as ``rounding`` says (a
    :mod:`decimal` mode), as text any SCPI number parser and ``float()`` read (``"0.25"``,
    ``"1E-7"``, ``"-3.5E+4"``)."""
    ctx = decimal.Context(prec=digits, rounding=rounding, Emax=999, Emin=-999)
    d = ctx.plus(decimal.Decimal(v))
    return "0" if d.is_zero() else format(d.normalize(ctx), "G")


def ascii_inside_range(lo: float, hi: float, digits: int) -> tuple[float, float]:
    """The smallest and largest numbers of ``digits`` significant digits within ``[lo, hi]``;
    ``lo > hi`` in the result when there is none."""
    return (float(_decimal_text(lo, digits, decimal.ROUND_CEILING)),
            float(_decimal_text(hi, digits, decimal.ROUND_FLOOR)))


def encode_ascii(values, digits: int, *, name: str, where: str,
                 bounds: tuple[float, float] | None = None) -> np.ndarray:
    """``values`` (instrument units) as decimal text of ``digits`` significant digits, for an
    instrument that takes its drives as ASCII numbers.

    Each value is rounded to nearest; with ``bounds = (lo, hi)`` a value whose text would read
    as outside ``[lo, hi]`` is rounded toward the inside instead (as :func:`encode` does), so no
    number sent lies outside the limits. Every text is read back and compared with the value.

    Returns:
        An array of ``str`` of ``values``' shape.

    Raises:
        SafetyError: (a ``ValueError``; nothing was sent) when a value is not finite, lies
            outside ``bounds`` (beyond the guard's tolerance), or ``bounds`` hold no number of
            ``digits`` digits.
    """
    v = np.asarray(values, np.float64)
    if not np.all(np.isfinite(v)):
        raise SafetyError(f"{name}: refusing to send {int((~np.isfinite(v)).sum())} non-finite "
                          f"value(s) as text; nothing was sent")
    if bounds is not None:
        b_lo, b_hi = _check_within(v, bounds, name)
        w_lo, w_hi = ascii_inside_range(b_lo, b_hi, digits)
        if w_lo > w_hi:
            raise SafetyError(
                f"{name}: refusing to send: the safety limits [{b_lo:.10g}, {b_hi:.10g}] hold "
                f"no number of {digits} significant digits. Nothing was sent; raise {where} "
                f"digits or widen the limits")
    out = np.empty(v.shape, dtype=object)
    flat = out.reshape(-1)
    for i, x in enumerate(v.reshape(-1).tolist()):
        text = _decimal_text(x, digits, decimal.ROUND_HALF_EVEN)
        if bounds is not None:
            if float(text) > b_hi:
                text = _decimal_text(min(x, b_hi), digits, decimal.ROUND_FLOOR)
            elif float(text) < b_lo:
                text = _decimal_text(max(x, b_lo), digits, decimal.ROUND_CEILING)
        back = float(text)
        # one unit in the last digit at most (two within the guard's tolerance of a limit)
        if not (math.isfinite(back) and abs(back - x) <= 2 * 10.0 ** (1 - digits) * abs(x)
                + (_tol(x) if bounds is not None else 0.0)):
            raise SafetyError(f"{name}: the value {x!r} encoded as {text!r} with {digits} "
                              f"digits does not read back as itself; nothing was sent")
        flat[i] = text
    return out
