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
import tomllib
from pathlib import Path

from pnn.drivers import wire
from pnn.drivers.profile_checks import (
    ASCII,
    BOUNDS,
    TEMPLATE_FIELDS,
    build,
    check_range,
    check_separator,
    check_table,
    check_template,
    check_visa_layout,
    coerce,
    format_command,
    no_unknown,
    uses_channel,
)
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

REDUCTIONS = ("mean", "rms", "mean_square", "max", "min", "sum", "none")


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
        no_unknown(data, known, source, "")
        meta = data.get("profile", {})
        check_table(meta, "profile", source)
        no_unknown(meta, {"name", "description"}, source, "profile.")
        name = coerce(meta.get("name", Path(source).stem), str, source, "profile.name")
        desc = coerce(meta.get("description", ""), str, source, "profile.description")
        layer = build(LayerDefaults, data.get("layer", {}), source, "layer")
        safety_t = dict(data.get("safety", {}))
        check_table(safety_t, "safety", source)
        no_unknown(safety_t, {"lo", "hi", "max_amplitude", "max_rate_hz", "on_violation"},
                    source, "safety.")
        missing = {"lo", "hi", "max_amplitude"} - set(safety_t)
        if missing:
            raise ValueError(f"{source}: [safety] must set {', '.join(sorted(missing))} (the hard "
                             f"ceiling on what is sent to the instrument, in instrument units)")
        on_violation = coerce(safety_t.pop("on_violation", "raise"), str, source,
                               "safety.on_violation")
        if on_violation not in ("raise", "clip"):
            raise ValueError(f"{source}: safety.on_violation must be 'raise' or 'clip', "
                             f"got {on_violation!r}")
        try:
            safety = Limits(**{k: coerce(v, float, source, f"safety.{k}")
                               for k, v in safety_t.items()})
        except ValueError as e:
            raise ValueError(f"{source}: [safety]: {e}") from None
        visa = build(VisaSettings, data["visa"], source, "visa") if "visa" in data else None
        if visa is not None:
            check_visa_layout(data["visa"], visa, source)
        serial = (build(SerialSettings, data["serial"], source, "serial")
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
                check_range(src, f"layer.{k}", getattr(L, k), *BOUNDS[f"layer.{k}"])
        if not (math.isfinite(L.lo) and math.isfinite(L.hi) and L.lo < L.hi):
            raise ValueError(f"{src}: layer drive range needs finite lo < hi, got "
                             f"lo={L.lo!r}, hi={L.hi!r}")
        if self.visa is not None:
            v = self.visa
            for k in ("timeout_ms", "open_timeout_ms", "measure_timeout_ms", "max_retries",
                      "max_batch", "baud_rate"):
                check_range(src, f"visa.{k}", getattr(v, k), *BOUNDS[f"visa.{k}"])
            if not v.two_address:
                for k in ("drive", "fetch"):
                    if not getattr(v.commands, k):
                        raise ValueError(
                            f"{src}: visa.commands.{k} must be set (the "
                            f"{'drive block header' if k == 'drive' else 'trace query'})")
            if v.drive.datatype == ASCII:
                check_range(src, "visa.drive.digits", v.drive.digits,
                             *BOUNDS["visa.drive.digits"])
                check_separator(v.drive.separator, src, "visa.drive.separator", v, drive=True)
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
            check_range(src, "visa.readout.points_per_feature", v.readout.points_per_feature,
                         *BOUNDS["visa.readout.points_per_feature"])
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
                            check_template(text, with_channel, src, where, channel=True)
                        else:
                            check_template(text, examples, src, where)
            pre = v.readout.preamble
            if pre is not None:
                check_template(pre.query, with_channel, src, "visa.readout.preamble.query",
                                channel=True)
        if self.serial is not None:
            s = self.serial
            for k in ("baudrate", "timeout_s", "measure_timeout_s", "resync_gap_s",
                      "max_retries", "max_batch"):
                check_range(src, f"serial.{k}", getattr(s, k), *BOUNDS[f"serial.{k}"])
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
            check_separator(r.separator, src, "visa.readout.separator", self.visa)
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
        uses = uses_channel(fetch)
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
            check_range(src, f"visa.readout.preamble.{k}", val,
                         *BOUNDS[f"visa.readout.preamble.{k}"])
            if val in idx:
                raise ValueError(f"{src}: visa.readout.preamble.{k} = {val} is the same field as "
                                 f"{idx[val]}; each quantity has its own position in the reply")
            idx[val] = f"visa.readout.preamble.{k}"
        if not p.separator:
            raise ValueError(f"{src}: visa.readout.preamble.separator is empty; give the "
                             f"character between the preamble's fields, e.g. \",\"")
        if len(chans) > 1 and not uses_channel(p.query):
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

