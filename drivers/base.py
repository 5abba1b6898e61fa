"""The instrument, once: everything a driver does between the trainer and the wire.

Following pymeasure and QCoDeS, an instrument driver is split in two:

* :class:`InstrumentLayer` (this module) is the *instrument*: the physical-layer protocol
  (``layer(x)`` -> measurements), the life cycle (``with layer:``), and the one path every batch
  takes: validate the input, clip the validation tolerance off, map to instrument units, check the
  safety limits, encode for the wire (never wrapping, and rounding toward the inside of the
  limits, so no encoded value crosses one), split into transfers of at most
  ``max_batch``, pace to the rate limit, retry a transfer whose link failed, and count what the
  caller received.
* a subclass is the *wire*: how to open and close the link, how to make the instrument safe, how
  one transfer is encoded and exchanged (:class:`pnn.drivers.visa.VisaLayer`: SCPI through
  pyvisa; :class:`pnn.drivers.serial.SerialLayer`: a framed protocol through pyserial).

A driver does no I/O in its constructor; ``with layer:`` (or :meth:`~InstrumentLayer.connect`)
opens the link, and leaving the block calls :meth:`~InstrumentLayer.close`, which leaves the
instrument safe. A failing ``close()`` during an exception is reported as a warning so that it
never masks the error that is already propagating.

What a subclass provides (all private; see each method's docstring):
``_section`` (its profile table), ``_wire_datatype``, ``_open_link``, ``_link_open``,
``_discard``, ``_make_safe``, ``to_instrument``, ``_batch_limit``, ``_max_retries``,
``_prepare``, ``_exchange``, ``_gave_up``; optionally ``_encode``, ``_after_exchange``,
``_on_bad_reply``, ``_on_instrument_error``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable

import numpy as np

from pnn.drivers import wire
from pnn.drivers.errors import (
    InstrumentConnectionError,
    InstrumentError,
    ReplyFormatError,
    SafetyError,
)
from pnn.drivers.profile import Profile, load_profile
from pnn.drivers.safety import SafetyLimits, layer_spec_and_limits
from pnn.drivers.stats import DriverStats
from pnn.layer import validate_input

__all__ = ["InstrumentLayer", "TransientError"]


class TransientError(Exception):
    """Raised by a transport inside one attempt: the link failed in a way that sending the same
    request again may cure (no reply, a corrupted reply, a dropped link, a failed re-open).

    :meth:`InstrumentLayer._with_retries` catches it and tries again; ``cause`` is the failure
    reported when the retries run out.
    """

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class InstrumentLayer:
    """Base of the drivers (see the module docstring): a :class:`~pnn.layer.PhysicalLayer`.

    Args:
        profile: a :class:`~pnn.drivers.profile.Profile`, a TOML path, or a shipped name; it
            must have the subclass's table (``[visa]``, ``[serial]``).
        n_in, n_out: the layer's shape; default: the profile's ``[layer]``.
        name: used in every message.
        safety: a :class:`~pnn.drivers.safety.SafetyLimits`, no looser than the profile's ceiling.
    """

    #: drivers take any batch size: the ledger need not pad
    pad_batches = False
    #: the profile table this driver reads ("visa", "serial")
    _section = ""
    #: the class name used in constructor messages
    _kind = "InstrumentLayer"

    def _init_instrument(self, *, n_in: int | None, n_out: int | None, name: str,
                         safety: SafetyLimits | None) -> None:
        """Shared constructor part: call after :meth:`_load_settings` and the address."""
        self.spec, self._safety = layer_spec_and_limits(self.profile, n_in, n_out, name, safety)
        self._connected = False
        self.idn: str | None = None
        self.stats = DriverStats()

    def _load_settings(self, profile: Profile | str):
        """Load the profile and return its table for this driver.

        Raises:
            ValueError: when the profile has no such table.
        """
        self._profile = load_profile(profile)
        settings = getattr(self.profile, self._section)
        if settings is None:
            raise ValueError(f"profile {self.profile.source} has no [{self._section}] table; "
                             f"{self._kind} needs one (see drivers/profile.py)")
        return settings

    # The guard and the profile are fixed for the layer's life: a replaced guard (or profile,
    # whose ceiling and setup commands set the instrument's own limits) could be looser than
    # the profile, and nothing would notice. Tightening goes through ``safety.restrict``.
    @property
    def safety(self) -> SafetyLimits:
        """The :class:`~pnn.drivers.safety.SafetyLimits` in front of this instrument, fixed at
        construction (``safety=``): tighten it with ``layer.safety.restrict(...)``."""
        return self._safety

    @safety.setter
    def safety(self, value) -> None:
        raise AttributeError(
            f"{self.spec.name}: layer.safety cannot be replaced (a new guard could be looser than "
            f"the profile's ceiling); tighten it with layer.safety.restrict(lo=..., hi=..., "
            f"max_amplitude=..., max_rate_hz=...), or pass safety= when constructing the layer")

    @property
    def profile(self) -> Profile:
        """The instrument profile, fixed at construction (its ceiling bounds the guard)."""
        return self._profile

    @profile.setter
    def profile(self, value) -> None:
        raise AttributeError(
            f"{self.spec.name}: layer.profile cannot be replaced (its [safety] ceiling bounds "
            f"the guard, and its commands set the instrument's own limits); construct a new "
            f"layer with the other profile")

    def profile_dict(self) -> dict:
        """The profile's full contents as plain, JSON-ready data, for result records: every
        table and key as loaded (defaults filled in), ``source`` (the file it came from), and
        the safety ceiling; non-finite numbers (``max_rate_hz = inf``) as the strings ``"inf"``,
        ``"-inf"``, ``"nan"``, so that strict JSON can hold them."""
        return _plain(dataclasses.asdict(self.profile))

    # ------------------------------------------------------------------ life cycle
    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self):
        """Open the link and shake hands (see the subclass). Returns ``self``."""
        if not self._link_open():
            self._open()
        self._connected = True
        return self

    def _open(self) -> None:
        """Open the link (the transport's :meth:`_open_link`) and count the session."""
        self._open_link()
        self.stats.connects += 1

    def close(self) -> None:
        """Make the instrument safe (the transport's :meth:`_make_safe`), then release the link,
        in a ``finally``.

        Raises:
            InstrumentError: when the safe state could not be confirmed (the link is released
                regardless); the message says what to check by hand.
        """
        was_connected, self._connected = self._connected, False
        try:
            failure = self._make_safe(was_connected)
        finally:
            self._release()
        if failure is not None:
            raise InstrumentError(failure)

    def _release(self) -> None:
        """Drop the link after :meth:`close` (default: :meth:`_discard`)."""
        self._discard()

    def __enter__(self):
        return self.connect()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as e:  # do not mask the error that is already propagating
            warnings.warn(f"{self.spec.name}: close() failed while handling {exc_type.__name__}: "
                          f"{e}", RuntimeWarning, stacklevel=2)

    # ------------------------------------------------------------------ measurement
    def __call__(self, x) -> np.ndarray:
        """Measure a batch: ``(batch, n_in)`` drives in ``[lo, hi]`` -> ``(batch, n_out)``
        ``float32``.

        Raises:
            ValueError: bad shape, non-finite or out-of-range drives (``validate_input``), or a
                drive outside the safety limits or the wire's datatype
                (:class:`~pnn.drivers.errors.SafetyError`): nothing is sent.
            InstrumentError: not connected, or the instrument reported an error.
            ReplyFormatError: a reply of the wrong length or format (``ChecksumError`` on serial
                when every resend came back corrupted).
            InstrumentConnectionError: the link failed more than ``max_retries`` times in a row.
        """
        validate_input(self.spec, x)
        if not self._connected:
            raise InstrumentError(f"{self.spec.name}: not connected; use `with layer:` or call "
                                  f"layer.connect() first")
        # validate_input allows a 1e-6 tolerance; keep that rounding slack off the wire
        x = np.clip(np.asarray(x, np.float64), self.spec.lo, self.spec.hi)
        guard = self._safety
        values = guard.check(self.to_instrument(x))
        try:
            # rounding to the wire's datatype goes toward the inside of the limits just checked
            encoded = self._encode(values, guard.limits.allowed)
        except SafetyError:
            guard.counts.refused_batches += 1
            raise
        step = self._batch_limit()
        outs = [self._transfer(values[i : i + step], encoded[i : i + step])
                for i in range(0, len(values), step)]
        y = np.concatenate(outs).astype(np.float32)
        # counted only now: the caller receives every transfer of the batch, or none of them
        self.stats.batches += len(outs)
        self.stats.samples += len(values)
        return y

    def _transfer(self, values: np.ndarray, encoded: np.ndarray) -> np.ndarray:
        """One transfer of at most ``max_batch`` drives: prepared once, so a resend sends the
        same request, paced before every attempt, retried on a :class:`TransientError`."""
        request = self._prepare(values, encoded)

        def attempt(i: int) -> np.ndarray:
            self._ensure_link()
            self.safety.pace(len(values))
            try:
                return self._exchange(request, i)
            except TransientError:
                raise
            except ReplyFormatError:
                self._on_bad_reply()
                raise
            except InstrumentError:
                self._on_instrument_error()
                raise

        out = self._with_retries(attempt, lambda n, last: self._gave_up(len(values), n, last))
        self._after_exchange()
        return out

    def _ensure_link(self) -> None:
        """Re-open a link that was dropped; a re-open that fails is worth another attempt."""
        if not self._link_open():
            try:
                self._open()
            except InstrumentConnectionError as e:
                raise TransientError(e) from e

    def _with_retries(self, attempt: Callable[[int], object],
                      gave_up: Callable[[int, BaseException | None], Exception]):
        """Run ``attempt(i)`` until it returns, at most ``max_retries + 1`` times.

        Each try after the first is counted in ``stats.retries``. A :class:`TransientError`
        means try again; any other exception propagates at once. When every try failed, the
        exception ``gave_up(tries, last cause)`` is raised.
        """
        tries = self._max_retries() + 1
        last: BaseException | None = None
        for i in range(tries):
            if i:
                self.stats.retries += 1
            try:
                return attempt(i)
            except TransientError as e:
                last = e.cause
        raise gave_up(tries, last) from last

    # ------------------------------------------------------------------ the transport's part
    #: the struct code values are encoded as on the wire, and the profile key that sets it
    _wire_datatype = "f"
    _encoding_key = ""

    def _encode(self, values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
        """``values`` (instrument units, checked against ``bounds``, the active limits) as the
        wire carries them: by default :func:`pnn.drivers.wire.encode` to ``_wire_datatype``.

        Raises:
            SafetyError: when a value cannot be carried (nothing is sent).
        """
        return wire.encode(values, self._wire_datatype, name=self.spec.name,
                           where=self._encoding_key, bounds=bounds)

    def to_instrument(self, x) -> np.ndarray:  # pragma: no cover - every driver implements it
        """Drive units -> instrument units (float64)."""
        raise NotImplementedError

    def _open_link(self) -> None:  # pragma: no cover - every driver implements it
        """Open the link and shake hands; on failure leave no link behind."""
        raise NotImplementedError

    def _link_open(self) -> bool:  # pragma: no cover - every driver implements it
        raise NotImplementedError

    def _discard(self) -> None:  # pragma: no cover - every driver implements it
        """Forget the link without talking to the instrument (it is suspect)."""
        raise NotImplementedError

    def _make_safe(self, was_connected: bool) -> str | None:  # pragma: no cover
        """Bring the instrument to its safe state for :meth:`close`; ``None`` when confirmed,
        else the message of the :class:`InstrumentError` that ``close()`` raises."""
        raise NotImplementedError

    def _batch_limit(self) -> int:  # pragma: no cover - every driver implements it
        raise NotImplementedError

    def _max_retries(self) -> int:  # pragma: no cover - every driver implements it
        raise NotImplementedError

    def _prepare(self, values: np.ndarray, encoded: np.ndarray):  # pragma: no cover
        """The request for one transfer (built once; every attempt sends it)."""
        raise NotImplementedError

    def _exchange(self, request, attempt: int) -> np.ndarray:  # pragma: no cover
        """Attempt number ``attempt`` (0 first): send the request, return ``(batch, n_out)``
        measurements; raise :class:`TransientError` for a failure a resend may cure."""
        raise NotImplementedError

    def _gave_up(self, n_values: int, tries: int,
                 last: BaseException | None) -> Exception:  # pragma: no cover
        """The error raised when every attempt at a transfer of ``n_values`` drives failed."""
        raise NotImplementedError

    def _after_exchange(self) -> None:
        """Run once a transfer's data is in hand (never resends the transfer)."""

    def _on_bad_reply(self) -> None:
        """A reply of the wrong length or format arrived (it propagates afterwards)."""

    def _on_instrument_error(self) -> None:
        """The instrument reported an error (it propagates afterwards)."""


def _plain(value):
    """Dicts, lists and scalars only; non-finite floats as strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
