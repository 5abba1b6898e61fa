"""The checks an instrument profile passes at load (:mod:`pnn.drivers.profile`), table by table.

* TOML tables into the profile's frozen dataclasses (:func:`build`): unknown keys refused (a
  typo must not fall back to a default), each value checked against its field's type;
* the range of every count, timeout and rate (:data:`BOUNDS`, :func:`check_range`);
* separators of ascii numbers, and the layout of one instrument or two (``[visa.source]`` +
  ``[visa.receiver]``);
* command templates: only bare placeholders of :data:`TEMPLATE_FIELDS`, and each template
  formatted with real values (:func:`format_command`).

Every refusal is a ``ValueError`` naming the file, the key, the value and the fix. The checks
that need the whole profile (the drive map against the safety ceiling, the wire's datatype, the
read-out's channels) are :class:`~pnn.drivers.profile.Profile`'s own.
"""

from __future__ import annotations

import dataclasses
import re
import string
import types
import typing

__all__ = ["TEMPLATE_FIELDS", "ASCII", "BOUNDS", "format_command", "build", "check_range",
           "check_table", "no_unknown", "coerce", "check_separator", "check_visa_layout",
           "check_template", "uses_channel"]

#: placeholders a command string may use
TEMPLATE_FIELDS = ("n_in", "n_out", "batch", "points", "trace_points", "points_per_feature", "lo",
                   "hi", "max_amplitude", "max_rate_hz")
#: the readout datatype for text replies (numbers separated by ``separator``)
ASCII = "ascii"
#: characters a separator may not contain: they occur inside numbers
_NUMBER_CHARS = set("0123456789.+-eEinfaINFA")

_DAY_MS = 86_400_000
#: the accepted range of every numeric setting (ints: whole numbers; 0.0: exclusive, a time)
BOUNDS = {
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



def uses_channel(text: str) -> bool:
    try:
        return any(f == "channel" for _, f, _, _ in string.Formatter().parse(text))
    except ValueError:
        return False  # refused with its own message by _check_template


def check_separator(sep: str, source: str, where: str, visa, *, drive: bool = False) -> None:
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


def check_visa_layout(table: dict, visa, source: str) -> None:
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


def check_template(text: str, examples: list, source: str, where: str, *,
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


def check_range(source: str, where: str, value, lo, hi) -> None:
    """``lo <= value <= hi`` (``lo`` exclusive when it is the float 0.0: a positive time)."""
    positive = isinstance(lo, float) and lo == 0.0
    ok = (lo < value <= hi) if positive else (lo <= value <= hi)  # False for nan
    if not ok:
        kind = "an integer" if isinstance(hi, int) else "a number"
        rng = f"(0, {hi:g}]" if positive else f"[{lo}, {hi}]"
        raise ValueError(f"{source}: {where} must be {kind} in {rng}, got {value!r}; "
                         f"{_BOUNDS_WHY.get(where.split('.')[-1], 'set a sensible value')}")


def check_table(value, where: str, source: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{source}: [{where}] must be a table, got {type(value).__name__}")


def no_unknown(table: dict, known: set, source: str, prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                         f"valid keys here: {', '.join(sorted(known))}")


def coerce(value, typ, source: str, where: str):
    """Check one TOML value against a field type (int, float, str, bool, tuple of str, X|None)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], source, where)
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


def build(cls, table, source: str, where: str):
    check_table(table, where, source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    no_unknown(table, set(fields), source, where + ".")
    kw = {}
    for name, value in table.items():
        typ = hints[name]
        inner = [a for a in typing.get_args(typ) if a is not type(None)] or [typ]
        if dataclasses.is_dataclass(inner[0]):
            kw[name] = build(inner[0], value, source, f"{where}.{name}")
        else:
            kw[name] = coerce(value, typ, source, f"{where}.{name}")
    return cls(**kw)

