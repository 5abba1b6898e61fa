"""Instrument profiles: how pnn talks to one measurement setup, as data (TOML).

A profile tells the drivers everything that differs from one lab to the next, so a user adapts
pnn to their instruments by writing a TOML file, not code. Tables:

``[profile]``  ``name``, ``description``.

``[layer]``  the black box the trainer sees: ``n_in``, ``n_out`` (optional here, may be given to
the driver instead), the drive range ``lo``, ``hi`` (drive units, what trainers send) and
``units``.

``[safety]``  the hard ceiling, in *instrument* units: ``lo``, ``hi``, ``max_amplitude``,
``max_rate_hz`` (samples/s, ``inf`` for none) and ``on_violation`` (``"raise"`` or ``"clip"``).
See :mod:`pnn.drivers.safety`. A trainer can tighten these at run time, never lift them.

``[visa]``  a signal source plus a receiver spoken to with SCPI through pyvisa
(:class:`pnn.drivers.visa.VisaLayer`): ``backend`` (``"@py"`` for pyvisa-py, ``"@ivi"`` for NI-VISA),
``resource`` (optional default address), ``timeout_ms`` (every ordinary read),
``open_timeout_ms``, ``measure_timeout_ms`` (the wait for one batch's measurement),
``read_termination``, ``write_termination``, ``max_retries`` (re-opens after a dropped link),
``max_batch`` (drive vectors per transfer), ``idn_contains`` (refuse an instrument whose
``*IDN?`` lacks it; empty to skip), ``baud_rate`` (for ``ASRL`` resources; 0 leaves the default).

``[visa.commands]``  the SCPI. Lists run in order; after each configuration step the error
queue is read (``error``), and a non-zero code raises with the instrument's message.

* ``idn``, ``error``, ``shape`` (optional: a query answering ``"n_in,n_out"``, checked against
  the layer), ``setup`` (at connect), ``before_batch``, ``drive`` (the header in front of the
  IEEE 488.2 binary block holding the batch of drives, sample-major), ``run`` (start the
  measurement), ``wait`` and ``wait_reply`` (a query that returns when the measurement is done,
  e.g. ``*OPC?`` -> ``1``), ``fetch`` (a query answering a binary block: the trace),
  ``after_batch``, ``safe`` (sent by ``close()``, in a ``finally``: e.g. output off).
* Strings may use the placeholders ``{n_in} {n_out} {batch} {points} {trace_points}
  {points_per_feature} {lo} {hi} {max_amplitude} {max_rate_hz}`` (limits: the profile's ceiling;
  ``points`` = batch * n_in values in the drive block; ``trace_points`` = batch * n_out *
  points_per_feature values expected back).

``[visa.drive]``  ``datatype`` (a ``struct`` code: ``f`` float32, ``d``, ``h`` int16, ...),
``big_endian``, and the map from drive ``x`` to the value sent, ``offset + scale * x``.
``datatype = "ascii"`` sends the drives as decimal numbers instead of a binary block, for
instruments (and simulators such as pyvisa-sim) that take text: the ``drive`` header followed by
the ``batch * n_in`` numbers, each with ``digits`` significant digits (default 9, enough for
float32), joined by ``separator`` (default ``","``), in one line; rounding goes toward the
inside of the safety limits (:func:`pnn.drivers.wire.encode_ascii`).

``[visa.readout]``  ``datatype``, ``big_endian``, ``points_per_feature`` (the trace holds
``batch * n_out * points_per_feature`` values, sample-major then feature), ``reduce`` (``mean``,
``rms``, ``mean_square``, ``max``, ``min``, ``sum``; ``none`` needs one point per feature) and the
map from a reduced value ``r`` to the output, ``offset + scale * r``.

**Two instruments on two addresses** (an AWG and a separate scope): instead of
``[visa.commands]``, give ``[visa.source]`` and ``[visa.receiver]``, each with its own
``resource``, ``idn_contains`` and ``commands`` table (the keys of ``[visa.commands]``; the source
needs ``drive`` and no ``fetch``, the receiver ``fetch`` and no ``drive``). ``[visa]`` then sets
neither ``resource`` nor ``idn_contains``. Both are opened (source first) and set up at connect;
one batch runs: source ``before_batch``, the drive block, receiver ``before_batch`` (arm the
acquisition), source ``run`` (output on, trigger), receiver ``run``, source and receiver
``wait``, the receiver's fetch (per channel), source then receiver ``after_batch``; ``close()``
sends the source's ``safe`` commands first, then the receiver's. Timeouts, terminations and retries
are shared (``[visa]``); a failed link re-opens both.

``[visa.readout]`` further keys: ``datatype = "ascii"`` reads a text reply (numbers split at
``separator``, default ``","``) instead of a binary block; ``channels`` (a list of names such as
``["CHAN1", "CHAN2"]``) fetches each channel with the fetch query, whose ``{channel}`` placeholder
names it, and concatenates them: each channel's trace holds ``batch * (n_out / channels) *
points_per_feature`` values, and the measurement is channel 1's features, then channel 2's, ...;
``[visa.readout.preamble]`` scales raw trace values by the scope's own preamble: ``query`` (may use
``{channel}``; asked before each fetch), ``separator`` (default ``","``), and the 0-based field
positions ``scale_index`` (required), ``offset_index`` and ``reference_index`` (optional): a raw
value ``c`` becomes ``(c - reference) * scale + offset`` before ``reduce``.

``[serial]``  a microcontroller on a serial port (:class:`pnn.drivers.serial.SerialLayer`, protocol
in that module): ``port`` (optional default), ``baudrate``, ``timeout_s`` (a reply's deadline),
``measure_timeout_s``, ``max_retries``, ``resync_gap_s`` (how long to wait for more bytes after
a bad frame before asking again), ``max_batch``, and ``scale``/``offset`` for the drive as above.

Checked at load, each refusal naming the file, the key, the value and the fix:

* unknown keys (a typo must not silently fall back to a default), and wrong types (a whole number
  where an integer is needed: ``max_batch = 1e13`` is a float);
* absurd numbers: every count, timeout and rate has a range (``visa.max_batch`` 1..1,000,000,
  ``serial.max_batch`` 1..16,383, timeouts up to a day, ``max_retries`` up to 100, ...);
* command templates: only bare placeholders (``{hi}``, ``{hi:.6f}``; not ``{lo[0]}`` or
  ``{n_in.real}``), and each template is formatted with real values of every field (ints for
  shapes and batch sizes, floats for the limits), so ``{hi:d}`` fails here and not at connect;
* the wire: every value the ``[safety]`` ceiling lets through must fit the drive datatype
  (``visa.drive.datatype``; float32 for serial). A ceiling of 40000 with ``int16`` drives is
  refused: 36000 would wrap to -29536 on the wire (see :mod:`pnn.drivers.wire`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
import tomllib
import types
import typing
from pathlib import Path

from pnn.drivers import wire
from pnn.drivers.safety import Limits, _tol
from pnn.drivers.wire import DATATYPES

__all__ = [
    "Profile",
    "LayerDefaults",
    "VisaSettings",
    "VisaCommands",
    "DriveEncoding",
    "Readout",
    "Preamble",
    "VisaEndpoint",
    "SerialSettings",
    "load_profile",
    "profile_path",
    "PROFILE_DIR",
    "TEMPLATE_FIELDS",
    "REDUCTIONS",
    "format_command",
]

#: the profiles shipped with pnn (``load_profile("emulator")``)
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

#: placeholders a command string may use
TEMPLATE_FIELDS = ("n_in", "n_out", "batch", "points", "trace_points", "points_per_feature", "lo",
                   "hi", "max_amplitude", "max_rate_hz")
REDUCTIONS = ("mean", "rms", "mean_square", "max", "min", "sum", "none")
#: the readout datatype for text replies (numbers separated by ``separator``)
ASCII = "ascii"
#: characters a separator may not contain: they occur inside numbers
_NUMBER_CHARS = set("0123456789.+-eEinfaINFA")

_DAY_MS = 86_400_000
#: the accepted range of every numeric setting (ints: whole numbers; 0.0: exclusive, a time)
_BOUNDS = {
    "layer.n_in": (1, 1_000_000),
    "layer.n_out": (1, 1_000_000),
    "visa.timeout_ms": (1, _DAY_MS),
    "visa.open_timeout_ms": (1, _DAY_MS),
    "visa.measure_timeout_ms": (1, _DAY_MS),
    "visa.max_retries": (0, 100),
    "visa.max_batch": (1, 1_000_000),
    "visa.baud_rate": (0, 100_000_000),
    "visa.readout.points_per_feature": (1, 1_000_000),
    "visa.drive.digits": (1, 17),
    "visa.readout.preamble.scale_index": (0, 1000),
    "visa.readout.preamble.offset_index": (0, 1000),
    "visa.readout.preamble.reference_index": (0, 1000),
    "serial.baudrate": (1, 100_000_000),
    "serial.timeout_s": (0.0, 86_400.0),
    "serial.measure_timeout_s": (0.0, 86_400.0),
    "serial.resync_gap_s": (0.0, 3_600.0),
    "serial.max_retries": (0, 100),
    # a MEASURE frame holds at most (65535 - 2) / 4 float32 values: 16383 drives of one channel
    "serial.max_batch": (1, 16_383),
}
_BOUNDS_WHY = {
    "n_in": "the number of channels",
    "n_out": "the number of channels",
    "timeout_ms": "milliseconds, at most a day",
    "open_timeout_ms": "milliseconds, at most a day",
    "measure_timeout_ms": "milliseconds, at most a day",
    "timeout_s": "seconds, at most a day",
    "measure_timeout_s": "seconds, at most a day",
    "resync_gap_s": "seconds, at most an hour (e.g. 0.05)",
    "max_retries": "resends of one transfer (e.g. 2)",
    "max_batch": "drive vectors per transfer (e.g. 1024)",
    "baud_rate": "0 keeps the default",
    "baudrate": "bits per second (e.g. 115200)",
    "points_per_feature": "points per feature in a trace",
    "digits": "significant digits of each ascii drive (9 carries float32 exactly)",
    "scale_index": "a 0-based field position in the preamble reply",
    "offset_index": "a 0-based field position in the preamble reply",
    "reference_index": "a 0-based field position in the preamble reply",
}


@dataclasses.dataclass(frozen=True)
class LayerDefaults:
    n_in: int | None = None
    n_out: int | None = None
    lo: float = 0.0
    hi: float = 1.0
    units: str = "arb."


@dataclasses.dataclass(frozen=True)
class VisaCommands:
    idn: str = "*IDN?"
    error: str = "SYST:ERR?"
    shape: str = ""
    setup: tuple[str, ...] = ()
    before_batch: tuple[str, ...] = ()
    drive: str = ""
    run: tuple[str, ...] = ()
    wait: str = "*OPC?"
    wait_reply: str = "1"
    fetch: str = ""
    after_batch: tuple[str, ...] = ()
    safe: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class DriveEncoding:
    datatype: str = "f"
    big_endian: bool = False
    scale: float = 1.0
    offset: float = 0.0
    digits: int = 9  # datatype "ascii" only: significant digits of each number
    separator: str = ","  # datatype "ascii" only: between the numbers


@dataclasses.dataclass(frozen=True)
class Preamble:
    """How to read a scope's scaling from its preamble (``[visa.readout.preamble]``)."""

    query: str = ""
    separator: str = ","
    scale_index: int | None = None
    offset_index: int | None = None
    reference_index: int | None = None


@dataclasses.dataclass(frozen=True)
class Readout:
    datatype: str = "f"
    big_endian: bool = False
    points_per_feature: int = 1
    reduce: str = "mean"
    scale: float = 1.0
    offset: float = 0.0
    separator: str = ","
    channels: tuple[str, ...] = ()
    preamble: Preamble | None = None


@dataclasses.dataclass(frozen=True)
class VisaEndpoint:
    """One instrument of a two-address rig (``[visa.source]``, ``[visa.receiver]``)."""

    resource: str = ""
    idn_contains: str = ""
    commands: VisaCommands = VisaCommands()


@dataclasses.dataclass(frozen=True)
class VisaSettings:
    backend: str = "@py"
    resource: str = ""
    timeout_ms: int = 5000
    open_timeout_ms: int = 2000
    measure_timeout_ms: int = 60000
    read_termination: str = "\n"
    write_termination: str = "\n"
    max_retries: int = 2
    max_batch: int = 1024
    idn_contains: str = ""
    baud_rate: int = 0
    commands: VisaCommands = VisaCommands()
    drive: DriveEncoding = DriveEncoding()
    readout: Readout = Readout()
    source: VisaEndpoint | None = None
    receiver: VisaEndpoint | None = None

    @property
    def two_address(self) -> bool:
        """A separate source and receiver (``[visa.source]`` + ``[visa.receiver]``)."""
        return self.source is not None


@dataclasses.dataclass(frozen=True)
class SerialSettings:
    port: str = ""
    baudrate: int = 115200
    timeout_s: float = 2.0
    measure_timeout_s: float = 60.0
    max_retries: int = 3
    resync_gap_s: float = 0.05
    max_batch: int = 1024
    scale: float = 1.0
    offset: float = 0.0


@dataclasses.dataclass(frozen=True)
class Profile:
    """A parsed, validated instrument profile (see the module docstring for every key)."""

    name: str
    description: str
    layer: LayerDefaults
    safety: Limits
    on_violation: str
    visa: VisaSettings | None
    serial: SerialSettings | None
    source: str

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "<dict>") -> "Profile":
        """Validate a parsed TOML document. Raises ``ValueError`` naming the key and the file."""
        known = {"profile", "layer", "safety", "visa", "serial"}
        _no_unknown(data, known, source, "")
        meta = data.get("profile", {})
        _check_table(meta, "profile", source)
        _no_unknown(meta, {"name", "description"}, source, "profile.")
        name = _coerce(meta.get("name", Path(source).stem), str, source, "profile.name")
        desc = _coerce(meta.get("description", ""), str, source, "profile.description")
        layer = _build(LayerDefaults, data.get("layer", {}), source, "layer")
        safety_t = dict(data.get("safety", {}))
        _check_table(safety_t, "safety", source)
        _no_unknown(safety_t, {"lo", "hi", "max_amplitude", "max_rate_hz", "on_violation"},
                    source, "safety.")
        missing = {"lo", "hi", "max_amplitude"} - set(safety_t)
        if missing:
            raise ValueError(f"{source}: [safety] must set {', '.join(sorted(missing))} (the hard "
                             f"ceiling on what is sent to the instrument, in instrument units)")
        on_violation = _coerce(safety_t.pop("on_violation", "raise"), str, source,
                               "safety.on_violation")
        if on_violation not in ("raise", "clip"):
            raise ValueError(f"{source}: safety.on_violation must be 'raise' or 'clip', "
                             f"got {on_violation!r}")
        try:
            safety = Limits(**{k: _coerce(v, float, source, f"safety.{k}")
                               for k, v in safety_t.items()})
        except ValueError as e:
            raise ValueError(f"{source}: [safety]: {e}") from None
        visa = _build(VisaSettings, data["visa"], source, "visa") if "visa" in data else None
        if visa is not None:
            _check_visa_layout(data["visa"], visa, source)
        serial = (_build(SerialSettings, data["serial"], source, "serial")
                  if "serial" in data else None)
        prof = cls(name=name, description=desc, layer=layer, safety=safety,
                   on_violation=on_violation, visa=visa, serial=serial, source=source)
        prof._validate()
        return prof

    def _validate(self) -> None:
        src = self.source
        L = self.layer
        for k in ("n_in", "n_out"):
            if getattr(L, k) is not None:
                _check_range(src, f"layer.{k}", getattr(L, k), *_BOUNDS[f"layer.{k}"])
        if not (math.isfinite(L.lo) and math.isfinite(L.hi) and L.lo < L.hi):
            raise ValueError(f"{src}: layer drive range needs finite lo < hi, got "
                             f"lo={L.lo!r}, hi={L.hi!r}")
        if self.visa is not None:
            v = self.visa
            for k in ("timeout_ms", "open_timeout_ms", "measure_timeout_ms", "max_retries",
                      "max_batch", "baud_rate"):
                _check_range(src, f"visa.{k}", getattr(v, k), *_BOUNDS[f"visa.{k}"])
            if not v.two_address:
                for k in ("drive", "fetch"):
                    if not getattr(v.commands, k):
                        raise ValueError(
                            f"{src}: visa.commands.{k} must be set (the "
                            f"{'drive block header' if k == 'drive' else 'trace query'})")
            if v.drive.datatype == ASCII:
                _check_range(src, "visa.drive.digits", v.drive.digits,
                             *_BOUNDS["visa.drive.digits"])
                _check_separator(v.drive.separator, src, "visa.drive.separator", v, drive=True)
            for sec, enc in (("visa.drive", v.drive), ("visa.readout", v.readout)):
                if enc.datatype == ASCII:
                    pass
                elif len(enc.datatype) != 1 or enc.datatype not in DATATYPES:
                    raise ValueError(f"{src}: {sec}.datatype must be one struct code of "
                                     f"{DATATYPES!r} or 'ascii', got {enc.datatype!r}")
                for k in ("scale", "offset"):
                    if not math.isfinite(getattr(enc, k)):
                        raise ValueError(f"{src}: {sec}.{k} must be finite, got "
                                         f"{getattr(enc, k)!r}")
            if v.drive.scale == 0:
                raise ValueError(f"{src}: visa.drive.scale must be finite and non-zero")
            self._check_drive_map("visa.drive", v.drive.scale, v.drive.offset)
            self._check_wire("visa.drive", v.drive.datatype, v.drive.scale, v.drive.offset)
            _check_range(src, "visa.readout.points_per_feature", v.readout.points_per_feature,
                         *_BOUNDS["visa.readout.points_per_feature"])
            if v.readout.reduce not in REDUCTIONS:
                raise ValueError(f"{src}: visa.readout.reduce must be one of {REDUCTIONS}, got "
                                 f"{v.readout.reduce!r}")
            if v.readout.reduce == "none" and v.readout.points_per_feature != 1:
                raise ValueError(f"{src}: visa.readout.reduce = 'none' needs "
                                 f"points_per_feature = 1")
            self._check_readout()
            n_channels = max(1, len(v.readout.channels))
            n_in = L.n_in if L.n_in is not None else 1
            n_out = L.n_out if L.n_out is not None else n_channels
            examples = [self.template_values(n_in, n_out, b) for b in (0, 1, v.max_batch)]
            with_channel = [dict(e, channel=(v.readout.channels or ("CH1",))[0])
                            for e in examples]
            for key, cmds in self.visa_command_sets():
                for f in dataclasses.fields(VisaCommands):
                    val = getattr(cmds, f.name)
                    for i, text in enumerate([val] if isinstance(val, str) else val):
                        where = f"{key}.{f.name}" + ("" if isinstance(val, str) else f"[{i}]")
                        if f.name == "fetch":
                            _check_template(text, with_channel, src, where, channel=True)
                        else:
                            _check_template(text, examples, src, where)
            pre = v.readout.preamble
            if pre is not None:
                _check_template(pre.query, with_channel, src, "visa.readout.preamble.query",
                                channel=True)
        if self.serial is not None:
            s = self.serial
            for k in ("baudrate", "timeout_s", "measure_timeout_s", "resync_gap_s",
                      "max_retries", "max_batch"):
                _check_range(src, f"serial.{k}", getattr(s, k), *_BOUNDS[f"serial.{k}"])
            if s.scale == 0 or not math.isfinite(s.scale):
                raise ValueError(f"{src}: serial.scale must be finite and non-zero")
            if not math.isfinite(s.offset):
                raise ValueError(f"{src}: serial.offset must be finite, got {s.offset!r}")
            self._check_drive_map("serial", s.scale, s.offset)
            self._check_wire("serial", "f", s.scale, s.offset)

    def visa_command_sets(self) -> list:
        """``(profile key, VisaCommands)`` of every instrument: ``[("visa.commands", ...)]``, or
        the source's and the receiver's."""
        v = self.visa
        if v is None:
            return []
        if v.two_address:
            return [("visa.source.commands", v.source.commands),
                    ("visa.receiver.commands", v.receiver.commands)]
        return [("visa.commands", v.commands)]

    def _check_readout(self) -> None:
        src, r = self.source, self.visa.readout
        if r.datatype == ASCII:
            _check_separator(r.separator, src, "visa.readout.separator", self.visa)
        chans = r.channels
        for i, c in enumerate(chans):
            if not c.strip():
                raise ValueError(f"{src}: visa.readout.channels[{i}] is empty; give channel "
                                 f"names such as \"CHAN1\"")
        dup = sorted({c for c in chans if chans.count(c) > 1})
        if dup:
            raise ValueError(f"{src}: visa.readout.channels lists {', '.join(map(repr, dup))} "
                             f"more than once; each channel is fetched once")
        fetch_key, fetch = ("visa.receiver.commands.fetch", self.visa.receiver.commands.fetch) \
            if self.visa.two_address else ("visa.commands.fetch", self.visa.commands.fetch)
        uses = _uses_channel(fetch)
        if len(chans) > 1 and not uses:
            raise ValueError(f"{src}: visa.readout.channels has {len(chans)} channels but "
                             f"{fetch_key} = {fetch!r} has no {{channel}} placeholder, so every "
                             f"channel would fetch the same trace; write e.g. \"FETC? {{channel}}\"")
        if uses and not chans:
            raise ValueError(f"{src}: {fetch_key} = {fetch!r} uses {{channel}} but "
                             f"visa.readout.channels is empty; list the channels, e.g. "
                             f"channels = [\"CHAN1\"]")
        n_out = self.layer.n_out
        if chans and n_out is not None and n_out % len(chans):
            raise ValueError(f"{src}: layer.n_out = {n_out} cannot be split evenly over the "
                             f"{len(chans)} channels of visa.readout.channels; each channel "
                             f"carries n_out / channels features")
        p = r.preamble
        if p is None:
            return
        if not p.query:
            raise ValueError(f"{src}: visa.readout.preamble.query must be set (the query whose "
                             f"reply holds the scale, e.g. \"WAV:PRE? {{channel}}\")")
        if p.scale_index is None:
            raise ValueError(f"{src}: visa.readout.preamble.scale_index must be set (the 0-based "
                             f"position of the scale, e.g. the y increment, in the preamble reply)")
        idx = {}
        for k in ("scale_index", "offset_index", "reference_index"):
            val = getattr(p, k)
            if val is None:
                continue
            _check_range(src, f"visa.readout.preamble.{k}", val,
                         *_BOUNDS[f"visa.readout.preamble.{k}"])
            if val in idx:
                raise ValueError(f"{src}: visa.readout.preamble.{k} = {val} is the same field as "
                                 f"{idx[val]}; each quantity has its own position in the reply")
            idx[val] = f"visa.readout.preamble.{k}"
        if not p.separator:
            raise ValueError(f"{src}: visa.readout.preamble.separator is empty; give the "
                             f"character between the preamble's fields, e.g. \",\"")
        if len(chans) > 1 and not _uses_channel(p.query):
            raise ValueError(f"{src}: visa.readout.preamble.query = {p.query!r} has no "
                             f"{{channel}} placeholder, but {len(chans)} channels each have "
                             f"their own scale; write e.g. \"WAV:PRE? {{channel}}\"")

    def _check_wire(self, where: str, datatype: str, scale: float, offset: float) -> None:
        # every value the ceiling lets through must reach the wire as itself: a value the
        # datatype cannot hold would wrap (int16: 36000 -> -29536) or overflow, unchecked
        a_lo, a_hi = self.safety.allowed
        if datatype == ASCII:  # text carries any number; the digits must reach inside
            digits = self.visa.drive.digits
            w_lo, w_hi = wire.ascii_inside_range(a_lo, a_hi, digits)
            if w_lo > w_hi:
                raise ValueError(
                    f"{self.source}: the [safety] ceiling lets values in [{a_lo:.10g}, "
                    f"{a_hi:.10g}] through, which hold no number of visa.drive.digits = "
                    f"{digits} significant digits: every drive would be refused. Raise "
                    f"visa.drive.digits or widen the ceiling")
            return
        why = wire.check_ceiling_fits(a_lo, a_hi, datatype,
                                      tol=max(_tol(a_lo), _tol(a_hi)))
        if why is None:
            w_lo, w_hi = wire.inside_range(a_lo, a_hi, datatype)
            if w_lo <= w_hi:
                return
            key = f"{where}.datatype = {wire.describe(datatype)}" if where != "serial" else \
                "the serial protocol's float32 drives"
            raise ValueError(
                f"{self.source}: the [safety] ceiling lets values in [{a_lo:.10g}, {a_hi:.10g}] "
                f"through, which hold no value of {key}: every drive would be refused. Widen "
                f"the ceiling to include one"
                + (", or choose another datatype" if where != "serial" else ""))
        c = self.safety
        w_lo, w_hi = wire.wire_range(datatype)
        key = f"{where}.datatype = {datatype!r}" if where != "serial" else \
            "the serial protocol's float32 drives"
        raise ValueError(
            f"{self.source}: the [safety] ceiling (lo = {c.lo!r}, hi = {c.hi!r}, max_amplitude = "
            f"{c.max_amplitude!r}) lets values in [{a_lo:.10g}, {a_hi:.10g}] through to "
            f"{key} ({wire.describe(datatype)}; drive mapped by offset {offset!r} + scale "
            f"{scale!r} * x), but {why}: such a value would wrap or overflow on the wire. Lower "
            f"safety.lo / hi / max_amplitude into [{w_lo:.10g}, {w_hi:.10g}]"
            + (" or choose a wider datatype" if where != "serial" else ""))

    def _check_drive_map(self, where: str, scale: float, offset: float) -> None:
        # a layer range the ceiling forbids would make every trainer's drive a violation
        ends = sorted((offset + scale * self.layer.lo, offset + scale * self.layer.hi))
        a_lo, a_hi = self.safety.allowed
        if ends[0] < a_lo - 1e-12 or ends[1] > a_hi + 1e-12:
            raise ValueError(
                f"{self.source}: the layer's drive range [{self.layer.lo}, {self.layer.hi}] maps "
                f"through {where} (offset {offset} + scale {scale} * x) to [{ends[0]:.6g}, "
                f"{ends[1]:.6g}] instrument units, outside the safety ceiling "
                f"[{a_lo:.6g}, {a_hi:.6g}]; narrow [layer] lo/hi or the scale")

    def template_values(self, n_in: int, n_out: int, batch: int = 0) -> dict:
        """The placeholder values for command strings (see :data:`TEMPLATE_FIELDS`)."""
        ppf = self.visa.readout.points_per_feature if self.visa else 1
        c = self.safety
        return {"n_in": n_in, "n_out": n_out, "batch": batch, "points": batch * n_in,
                "trace_points": batch * n_out * ppf, "points_per_feature": ppf,
                "lo": c.lo, "hi": c.hi, "max_amplitude": c.max_amplitude,
                "max_rate_hz": c.max_rate_hz}


def _uses_channel(text: str) -> bool:
    try:
        return any(f == "channel" for _, f, _, _ in string.Formatter().parse(text))
    except ValueError:
        return False  # refused with its own message by _check_template


def _check_separator(sep: str, source: str, where: str, visa, *, drive: bool = False) -> None:
    """A separator of ascii numbers: not empty, no character of a number, not the termination
    (the read termination for replies, the write termination for ``drive`` lines)."""
    what = "an ascii drive line" if drive else "an ascii reply"
    if not sep:
        raise ValueError(f"{source}: {where} is empty; give the character(s) between the "
                         f"numbers of {what}, e.g. \",\"")
    bad = sorted(set(sep) & _NUMBER_CHARS)
    if bad:
        raise ValueError(f"{source}: {where} = {sep!r} contains {''.join(bad)!r}, which occur "
                         f"inside numbers; use e.g. \",\" or \";\"")
    term, kind = ((visa.write_termination, "write") if drive
                  else (visa.read_termination, "read"))
    if term and term in sep:
        raise ValueError(f"{source}: {where} = {sep!r} contains the {kind} termination "
                         f"{term!r}: {what} would end at the first separator")


def _check_visa_layout(table: dict, visa: "VisaSettings", source: str) -> None:
    """One instrument (``[visa.commands]``) or two (``[visa.source]`` + ``[visa.receiver]``)."""
    has = {k: k in table for k in ("source", "receiver")}
    if has["source"] != has["receiver"]:
        given, missing = ("source", "receiver") if has["source"] else ("receiver", "source")
        raise ValueError(f"{source}: [visa.{given}] is set but [visa.{missing}] is not; a rig of "
                         f"two instruments needs both, one instrument needs neither (its SCPI "
                         f"goes in [visa.commands])")
    drive = table.get("drive", {})
    for key in ("digits", "separator"):
        if isinstance(drive, dict) and key in drive and visa.drive.datatype != ASCII:
            raise ValueError(f"{source}: visa.drive.{key} is set but visa.drive.datatype is "
                             f"{visa.drive.datatype!r}: it only applies to ascii drives "
                             f"(datatype = \"ascii\"); remove it or set the datatype")
    readout = table.get("readout", {})
    if (isinstance(readout, dict) and "separator" in readout
            and visa.readout.datatype != ASCII):
        raise ValueError(f"{source}: visa.readout.separator is set but visa.readout.datatype is "
                         f"{visa.readout.datatype!r}: a separator only applies to ascii replies "
                         f"(datatype = \"ascii\"); remove it or set the datatype")
    if not has["source"]:
        return
    for k in ("commands", "resource", "idn_contains"):
        if k in table:
            raise ValueError(f"{source}: visa.{k} is set, but with [visa.source] and "
                             f"[visa.receiver] each instrument has its own: move it to "
                             f"visa.source.{k} and visa.receiver.{k}")
    for role, need, forbid in (("source", "drive", "fetch"), ("receiver", "fetch", "drive")):
        ep = getattr(visa, role)
        if not ep.resource:
            raise ValueError(f"{source}: visa.{role}.resource must be set (the {role}'s VISA "
                             f"address, e.g. \"TCPIP::192.168.0.5::INSTR\")")
        what = {"drive": "the drive block header", "fetch": "the trace query"}
        if not getattr(ep.commands, need):
            raise ValueError(f"{source}: visa.{role}.commands.{need} must be set "
                             f"({what[need]} is the {role}'s job)")
        if getattr(ep.commands, forbid):
            raise ValueError(f"{source}: visa.{role}.commands.{forbid} = "
                             f"{getattr(ep.commands, forbid)!r} is not used: {what[forbid]} "
                             f"belongs to the {'receiver' if role == 'source' else 'source'}; "
                             f"remove it")


def _check_template(text: str, examples: list, source: str, where: str, *,
                    channel: bool = False) -> None:
    """Refuse a command template that would fail when the driver fills it in.

    Placeholders must be bare names of :data:`TEMPLATE_FIELDS` (no index, no attribute), and the
    template is formatted with real values of every field (ints for the shape and batch fields,
    floats for the limits), so a format spec that does not suit a field's type fails here.
    """
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise ValueError(f"{source}: {where} = {text!r} is not a valid template: {e} (write "
                         f"literal braces as {{{{ and }}}})") from None
    allowed = TEMPLATE_FIELDS + (("channel",) if channel else ())
    valid = ", ".join("{" + k + "}" for k in allowed)
    for f in fields:
        if f in allowed:
            continue
        if f == "channel":
            raise ValueError(f"{source}: {where} = {text!r} uses {{channel}}, which only the "
                             f"fetch query and visa.readout.preamble.query may use; valid "
                             f"here: {valid}")
        base = re.split(r"[.\[]", f, maxsplit=1)[0]
        if f == "":
            why = "uses a positional placeholder {}"
        elif base in TEMPLATE_FIELDS:
            why = (f"uses {{{f}}}: placeholders take no index or attribute (write "
                   f"{{{base}}}, with a format spec after ':' if needed)")
        else:
            why = f"uses the unknown placeholder {{{f}}}"
        raise ValueError(f"{source}: {where} = {text!r} {why}; valid: {valid} (write literal "
                         f"braces as {{{{ and }}}})")
    for values in examples:
        format_command(text, values, source=source, where=where)


def format_command(text: str, values: dict, *, source: str, where: str) -> str:
    """Fill in a command template with :meth:`Profile.template_values`.

    Raises:
        ValueError: naming the file, the key, the template and the field values, when the
            template cannot be formatted (a format spec that does not suit a field's type, such
            as ``{hi:d}``: ``hi`` is a float).
    """
    try:
        return text.format(**values)
    except Exception as e:  # any failure of str.format: ValueError, TypeError, KeyError, ...
        used = sorted({f for _, f, _, _ in string.Formatter().parse(text) if f})
        shown = ", ".join(f"{f} = {values[f]!r} ({type(values[f]).__name__})"
                          for f in used if f in values)
        raise ValueError(f"{source}: {where} = {text!r} cannot be formatted with the driver's "
                         f"values ({shown or 'no fields'}): {type(e).__name__}: {e}. Fix the "
                         f"format spec (e.g. {{hi:.6f}} for a float, {{n_in:d}} for an "
                         f"integer)") from None


def _check_range(source: str, where: str, value, lo, hi) -> None:
    """``lo <= value <= hi`` (``lo`` exclusive when it is the float 0.0: a positive time)."""
    positive = isinstance(lo, float) and lo == 0.0
    ok = (lo < value <= hi) if positive else (lo <= value <= hi)  # False for nan
    if not ok:
        kind = "an integer" if isinstance(hi, int) else "a number"
        rng = f"(0, {hi:g}]" if positive else f"[{lo}, {hi}]"
        raise ValueError(f"{source}: {where} must be {kind} in {rng}, got {value!r}; "
                         f"{_BOUNDS_WHY.get(where.split('.')[-1], 'set a sensible value')}")


def _check_table(value, where: str, source: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{source}: [{where}] must be a table, got {type(value).__name__}")


def _no_unknown(table: dict, known: set, source: str, prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                         f"valid keys here: {', '.join(sorted(known))}")


def _coerce(value, typ, source: str, where: str):
    """Check one TOML value against a field type (int, float, str, bool, tuple of str, X|None)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], source, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{source}: {where} must be a list of strings, got {value!r}")
        return tuple(value)
    if typ is bool:
        ok = isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif typ is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a field type this loader does not know
        raise TypeError(f"unsupported profile field type {typ!r}")
    if not ok:
        hint = "; write a whole number without a decimal point or exponent, e.g. 1024" \
            if typ is int else ""
        raise ValueError(f"{source}: {where} must be {typ.__name__}, got {value!r} "
                         f"({type(value).__name__}){hint}")
    return value


def _build(cls, table, source: str, where: str):
    _check_table(table, where, source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _no_unknown(table, set(fields), source, where + ".")
    kw = {}
    for name, value in table.items():
        typ = hints[name]
        inner = [a for a in typing.get_args(typ) if a is not type(None)] or [typ]
        if dataclasses.is_dataclass(inner[0]):
            kw[name] = _build(inner[0], value, source, f"{where}.{name}")
        else:
            kw[name] = _coerce(value, typ, source, f"{where}.{name}")
    return cls(**kw)


def profile_path(name_or_path: str | Path) -> Path:
    """A profile's file: a path to a TOML file, or the name of a shipped profile."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    shipped = PROFILE_DIR / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    names = sorted(q.stem for q in PROFILE_DIR.glob("*.toml"))
    raise FileNotFoundError(f"no instrument profile {str(name_or_path)!r}: not a file, and not "
                            f"a shipped profile ({', '.join(names)})")


def load_profile(name_or_path: str | Path | Profile = "emulator") -> Profile:
    """Read and validate a profile TOML (a path, or a shipped name such as ``"emulator"``).

    Raises:
        FileNotFoundError: when there is no such file or shipped profile.
        ValueError: when the TOML is malformed, a key is unknown or a value is invalid (the
            message names the file and the key).
    """
    if isinstance(name_or_path, Profile):
        return name_or_path
    path = profile_path(name_or_path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    return Profile.from_dict(data, source=str(path))
