"""Limits on everything a driver sends out.

A :class:`SafetyLimits` guards one instrument. It holds two sets of :class:`Limits`, both in the
instrument's own units (for example volts at the AWG output):

* the **ceiling**, read from the instrument profile (``[safety]``): fixed for the life of the
  object. Nothing, a trainer included, can raise a limit above it: :meth:`SafetyLimits.restrict`
  with a looser value raises ``ValueError``.
* the **active limits**, equal to the ceiling at first, which a trainer or user may tighten (and
  relax again, up to the ceiling).

The ceiling itself can only come down: :meth:`SafetyLimits.tighten_ceiling` lowers it to limits
stricter than the profile's that the instrument itself announces (a serial device's drive range
in its HELLO reply), with a :class:`DeviceLimitsWarning`; an instrument layer's guard cannot be
replaced (``layer.safety`` is read-only), so no code path loosens it.

Three things are limited:

* range: every sent value ``v`` must satisfy ``lo <= v <= hi``;
* amplitude: ``|v| <= max_amplitude``;
* rate: at most ``max_rate_hz`` samples (drive vectors, the ledger's physical queries) per
  second, enforced by waiting before a batch is sent (:meth:`SafetyLimits.pace`).

A drive that violates the range or amplitude is, per ``on_violation``, refused with a
:class:`~pnn.drivers.errors.SafetyError` (a ``ValueError``; the default) before any byte is sent, or
clipped into the limits with a :class:`SafetyWarning`. Either way it is counted
(:attr:`SafetyLimits.counts`); a clip is never silent. Non-finite values are always refused.
A value within ``1e-6 * max(1, |limit|)`` of a limit counts as on it (float32 rounding of the
limit itself, as in :func:`pnn.layer.validate_input`).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import warnings

import numpy as np

from pnn.drivers.errors import SafetyError
from pnn.layer import LayerSpec

__all__ = ["Limits", "SafetyLimits", "SafetyWarning", "DeviceLimitsWarning", "SafetyCounts",
           "require_within"]


def _tol(bound: float) -> float:
    # a float32 drive at a limit (0.6 -> 0.6000000238) is that limit, not a violation
    return 1e-6 * max(1.0, abs(bound))


class SafetyWarning(UserWarning):
    """A drive was clipped into the safety limits before it was sent."""


class DeviceLimitsWarning(UserWarning):
    """The instrument announced limits stricter than the profile's; the host keeps to them."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Range ``[lo, hi]``, amplitude ``max_amplitude`` (all in instrument units) and rate.

    Attributes:
        lo, hi: smallest and largest value that may be sent.
        max_amplitude: largest ``|value|`` that may be sent (> 0).
        max_rate_hz: largest number of samples per second (> 0; ``math.inf`` for no limit).

    Raises:
        ValueError: when a bound is not finite, ``lo >= hi``, or amplitude/rate is not positive.
    """

    lo: float
    hi: float
    max_amplitude: float
    max_rate_hz: float = math.inf

    def __post_init__(self):
        for name in ("lo", "hi", "max_amplitude"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"safety limit {name} must be a finite number, got {v!r}")
        if not self.lo < self.hi:
            raise ValueError(f"safety limits need lo < hi, got lo={self.lo!r}, hi={self.hi!r}")
        if not self.max_amplitude > 0:
            raise ValueError(f"safety limit max_amplitude must be > 0, got {self.max_amplitude!r}")
        r = self.max_rate_hz
        if not isinstance(r, (int, float)) or isinstance(r, bool) or math.isnan(r) or not r > 0:
            raise ValueError(f"safety limit max_rate_hz must be > 0 (inf for none), got {r!r}")

    @property
    def allowed(self) -> tuple[float, float]:
        """The interval every value must lie in: range intersected with ``[-amp, amp]``."""
        return max(self.lo, -self.max_amplitude), min(self.hi, self.max_amplitude)


@dataclasses.dataclass
class SafetyCounts:
    """What the guard did: refused batches, out-of-limit entries, clipped entries, waiting."""

    refused_batches: int = 0
    violations: int = 0
    clipped: int = 0
    throttled_s: float = 0.0


class SafetyLimits:
    """The guard in front of one instrument (see the module docstring).

    Args:
        ceiling: the hard limits from the instrument profile.
        on_violation: ``"raise"`` (refuse the whole batch) or ``"clip"`` (clip and warn).
        name: used in every message.

    Raises:
        ValueError: on an unknown ``on_violation``.
    """

    def __init__(self, ceiling: Limits, *, on_violation: str = "raise", name: str = "instrument"):
        if on_violation not in ("raise", "clip"):
            raise ValueError(
                f"{name}: on_violation must be 'raise' or 'clip', got {on_violation!r}")
        self._ceiling = ceiling
        self._limits = ceiling
        self._mode = on_violation
        self.name = name
        self.counts = SafetyCounts()
        self._next_t = 0.0
        self._lock = threading.Lock()

    @property
    def ceiling(self) -> Limits:
        return self._ceiling

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def on_violation(self) -> str:
        return self._mode

    def restrict(self, *, lo: float | None = None, hi: float | None = None,
                 max_amplitude: float | None = None, max_rate_hz: float | None = None) -> Limits:
        """Set active limits anywhere inside the ceiling; returns the new active limits.

        Raises:
            ValueError: when a requested value is looser than the profile's ceiling (the
                ceiling cannot be lifted from code: edit the profile), or the result is invalid.
        """
        c = self._ceiling
        new = {
            "lo": self._limits.lo if lo is None else lo,
            "hi": self._limits.hi if hi is None else hi,
            "max_amplitude": self._limits.max_amplitude if max_amplitude is None else max_amplitude,
            "max_rate_hz": self._limits.max_rate_hz if max_rate_hz is None else max_rate_hz,
        }
        looser = []
        if new["lo"] < c.lo:
            looser.append(f"lo={new['lo']!r} < ceiling lo={c.lo!r}")
        if new["hi"] > c.hi:
            looser.append(f"hi={new['hi']!r} > ceiling hi={c.hi!r}")
        if new["max_amplitude"] > c.max_amplitude:
            looser.append(f"max_amplitude={new['max_amplitude']!r} > ceiling "
                          f"{c.max_amplitude!r}")
        if new["max_rate_hz"] > c.max_rate_hz:
            looser.append(f"max_rate_hz={new['max_rate_hz']!r} > ceiling {c.max_rate_hz!r}")
        if looser:
            raise ValueError(
                f"{self.name}: cannot lift safety limits above the instrument profile's ceiling "
                f"({'; '.join(looser)}); the ceiling can only be changed in the profile's "
                f"[safety] table")
        self._limits = Limits(**new)
        return self._limits

    def tighten_ceiling(self, *, lo: float | None = None, hi: float | None = None,
                        source: str = "the instrument") -> list[str]:
        """Lower the ceiling itself to ``[lo, hi]`` where that is stricter (never raise it): for
        limits the instrument imposes beyond the profile's, such as the drive range a serial
        device announces. The active limits are intersected with the new ceiling.

        Returns:
            One phrase per bound that changed (``"hi 1 -> 0.5"``); empty when the ceiling was
            already as strict.

        Raises:
            ValueError: when a bound is not finite, or the ceiling and ``[lo, hi]`` (or the
                active limits and ``[lo, hi]``) have no value in common; nothing is changed.
        """
        for k, v in (("lo", lo), ("hi", hi)):
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"{self.name}: {source} gives {k} = {v!r}, not a finite number")
        with self._lock:
            c, a = self._ceiling, self._limits
            new_lo = c.lo if lo is None else max(c.lo, float(lo))
            new_hi = c.hi if hi is None else min(c.hi, float(hi))
            act_lo, act_hi = max(a.lo, new_lo), min(a.hi, new_hi)
            amp = min(c.max_amplitude, a.max_amplitude)
            if not (new_lo < new_hi and act_lo < act_hi
                    and max(act_lo, -amp) < min(act_hi, amp)):
                raise ValueError(
                    f"{self.name}: {source} accepts [{lo!r}, {hi!r}], which leaves no value "
                    f"within the ceiling [{c.lo!r}, {c.hi!r}] and the active limits "
                    f"[{a.lo!r}, {a.hi!r}] (|v| <= {a.max_amplitude!r}): nothing could be sent")
            changed = [f"{k} {old:.6g} -> {new:.6g}"
                       for k, old, new in (("lo", c.lo, new_lo), ("hi", c.hi, new_hi))
                       if new != old]
            if changed:
                self._ceiling = dataclasses.replace(c, lo=new_lo, hi=new_hi)
                self._limits = dataclasses.replace(a, lo=act_lo, hi=act_hi)
        return changed

    def check(self, values) -> np.ndarray:
        """Return ``values`` (instrument units, any shape) ready to send, or refuse them.

        Raises:
            SafetyError: (a ``ValueError``) when a value is not finite, or lies outside the active
                limits and ``on_violation == "raise"``; the message gives the limits, the
                offending extremes and how many entries are outside.
        """
        v = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            self.counts.refused_batches += 1
            raise SafetyError(f"{self.name}: refusing to send non-finite drive values "
                              f"({int((~np.isfinite(v)).sum())} entries)")
        lim = self._limits
        a_lo, a_hi = lim.allowed
        bad = (v < a_lo - _tol(a_lo)) | (v > a_hi + _tol(a_hi))
        n_bad = int(bad.sum())
        if not n_bad:
            return v
        self.counts.violations += n_bad
        if self._mode == "raise":
            self.counts.refused_batches += 1
            raise SafetyError(
                f"{self.name}: refusing to send a drive outside the safety limits: {n_bad} "
                f"entries outside [{a_lo:.6g}, {a_hi:.6g}] (range [{lim.lo:.6g}, {lim.hi:.6g}], "
                f"|v| <= {lim.max_amplitude:.6g}); got values in [{v.min():.6g}, {v.max():.6g}]. "
                f"Nothing was sent; rescale the drive or use on_violation='clip'")
        self.counts.clipped += n_bad
        warnings.warn(
            f"{self.name}: clipped {n_bad} drive entries into [{a_lo:.6g}, {a_hi:.6g}] "
            f"(got values in [{v.min():.6g}, {v.max():.6g}])", SafetyWarning, stacklevel=3)
        return np.clip(v, a_lo, a_hi)

    def pace(self, n_samples: int) -> float:
        """Wait until ``n_samples`` more samples fit under ``max_rate_hz``; returns the wait (s).

        The budget is a sliding schedule: a batch of n samples occupies n / rate seconds, and the
        next batch may start when the previous one's slot ends.
        """
        rate = self._limits.max_rate_hz
        if math.isinf(rate):
            return 0.0
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_t)
            self._next_t = start + n_samples / rate
        wait = start - now
        if wait > 0:
            time.sleep(wait)
            self.counts.throttled_s += wait
        return wait

    def __repr__(self) -> str:
        return (f"SafetyLimits({self.name!r}, limits={self._limits}, ceiling={self._ceiling}, "
                f"on_violation={self._mode!r})")


def require_within(safety: SafetyLimits, ceiling: Limits, name: str) -> None:
    """Refuse a :class:`SafetyLimits` whose ceiling is looser than ``ceiling`` (the profile's).

    Raises:
        ValueError: naming both ceilings.
    """
    c = safety.ceiling
    if (c.lo < ceiling.lo or c.hi > ceiling.hi or c.max_amplitude > ceiling.max_amplitude
            or c.max_rate_hz > ceiling.max_rate_hz):
        raise ValueError(f"{name}: the given SafetyLimits ceiling {c} is looser than the "
                         f"profile's {ceiling}; the profile's ceiling cannot be lifted")


def layer_spec_and_limits(profile, n_in, n_out, name: str, safety: "SafetyLimits | None"):
    """The :class:`~pnn.layer.LayerSpec` and safety limits a driver gets from its profile.

    Shapes not given fall back to the profile's ``[layer]`` table; ``safety`` (if given) must lie
    within the profile's ceiling.

    Raises:
        ValueError: when the shape is known neither from the arguments nor from the profile, or
            ``safety`` is looser than the profile.
    """
    n_in = n_in if n_in is not None else profile.layer.n_in
    n_out = n_out if n_out is not None else profile.layer.n_out
    if n_in is None or n_out is None:
        raise ValueError(f"{name}: the layer shape is unknown; pass n_in= and n_out= or set "
                         f"them in the profile's [layer] table")
    L = profile.layer
    spec = LayerSpec(n_in=n_in, n_out=n_out, lo=L.lo, hi=L.hi, name=name, units=L.units)
    if safety is None:
        safety = SafetyLimits(profile.safety, on_violation=profile.on_violation, name=name)
    else:
        require_within(safety, profile.safety, name)
    return spec, safety
