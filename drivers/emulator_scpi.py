"""The SCPI command set of the virtual AWG + digitiser (:class:`pnn.drivers.emulator.ScpiEmulator`).

What the instrument answers, apart from how it is reached: the parsing of a SCPI byte stream
into messages and IEEE 488.2 blocks (:func:`pop_message`), the instrument's state and error
queue, and one handler a command (:class:`ScpiCommands`). The command set itself is listed in
:mod:`pnn.drivers.emulator`'s docstring.
"""

from __future__ import annotations

import collections

import numpy as np

from pnn.drivers.emulator_base import Measurement

__all__ = ["ScpiCommands", "pop_message", "ieee_block", "BadBlock"]

_MAX_ERRORS = 32


def ieee_block(data: bytes) -> bytes:
    """``data`` as an IEEE 488.2 definite-length block (``#<n><length><data>``)."""
    n = str(len(data)).encode()
    return b"#" + str(len(n)).encode() + n + data


class BadBlock(Exception):
    """A block header that is malformed or of indefinite length (``#0``)."""


def pop_message(buf: bytearray):
    """Next ``(text, block_or_None)`` from a SCPI byte stream, or None when incomplete."""
    nl = buf.find(b"\n")
    hs = buf.find(b"#")
    if hs != -1 and (nl == -1 or hs < nl):
        if len(buf) < hs + 2:
            return None
        nd = buf[hs + 1] - 48
        if not 1 <= nd <= 9:
            # indefinite-length (#0) or malformed: discard through the next newline
            if nl == -1:
                return None
            del buf[: nl + 1]
            raise BadBlock("invalid or indefinite-length block header")
        if len(buf) < hs + 2 + nd:
            return None
        try:
            n = int(bytes(buf[hs + 2 : hs + 2 + nd]))
        except ValueError:
            if nl == -1:
                return None
            del buf[: nl + 1]
            raise BadBlock("non-numeric block length") from None
        start = hs + 2 + nd
        end = start + n
        if len(buf) < end + 1:
            return None
        text = bytes(buf[:hs]).decode("ascii", "replace").strip()
        block = bytes(buf[start:end])
        del buf[: end + 1 if buf[end : end + 1] == b"\n" else end]
        return text, block
    if nl == -1:
        return None
    text = bytes(buf[:nl]).decode("ascii", "replace").strip()
    del buf[: nl + 1]
    return text, None


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if np.isfinite(v) else None


class ScpiCommands:
    """The state and the commands of a virtual SCPI instrument: an AWG (``role="source"``), a
    scope (``"receiver"``) or both in one (``"both"``).

    A mixin of :class:`~pnn.drivers.emulator.ScpiEmulator`, which supplies the physics and the
    wire: it reads the emulator's ``layer``, ``n_in``, ``n_out``, ``faults``, ``log``,
    ``role``, ``bench``, ``channels``, ``raw_codes``, ``max_batch``, ``idn`` and ``_measure``.
    """

    #: the headers only an AWG answers, and only a scope
    _SOURCE_ONLY = {"SOUR:VOLT:LIM", "SOUR:VOLT:LIM?", "OUTP", "OUTPUT", "OUTP?", "OUTPUT?",
                    "WAV:DATA", "INIT"}
    _RECEIVER_ONLY = {"ACQ:POIN", "ACQ:POIN?", "FETC?", "FETCH?", "ARM", "FORM", "FORM:SEP",
                      "WAV:PRE?"}
    #: the headers of a two-address scope that a single instrument does not have
    _PAIR_ONLY = {"ARM", "FORM", "FORM:SEP", "WAV:PRE?"}
    #: header -> the method that runs it, called with the argument text and the block (or None)
    _HANDLERS = {
        "*IDN?": "_query_idn", "*RST": "_reset_settings", "*CLS": "_clear", "*OPC?": "_query_opc",
        "SYST:ERR?": "_query_error", "SYSTEM:ERROR?": "_query_error",
        "SYST:ERR:NEXT?": "_query_error", "CONF:CHAN?": "_query_channels",
        "SOUR:VOLT:LIM?": "_query_volt_limit", "SOUR:VOLT:LIM": "_set_volt_limit",
        "ACQ:POIN?": "_query_points", "ACQ:POIN": "_set_points",
        "OUTP": "_set_output", "OUTPUT": "_set_output",
        "OUTP?": "_query_output", "OUTPUT?": "_query_output",
        "WAV:DATA": "_load_wave", "INIT": "_init", "FETC?": "_fetch", "FETCH?": "_fetch",
        "ARM": "_arm", "FORM": "_set_format", "FORM:SEP": "_set_separator",
        "WAV:PRE?": "_query_preamble",
    }
    _SEPARATORS = {"COMM": ",", "COMMA": ",", "SEM": ";", "SEMICOLON": ";", "SPAC": " ",
                   "SPACE": " "}

    def preamble(self, channel: int) -> tuple[float, float, float]:
        """``(yinc, yorig, yref)`` of channel ``channel`` (1-based): distinct per channel."""
        return 2.0 ** -(channel + 6), 0.125 * channel - 0.25, 100.0 + 10 * channel

    def _reset_state(self) -> None:
        self.output_on = False
        self.volt_limit = float(self.layer.spec.hi)
        self.points = 1
        self._wave: np.ndarray | None = None
        self._last: Measurement | None = None
        self.ascii = False
        self.separator = ","
        self.error_queue: collections.deque = collections.deque()

    def push_error(self, code: int, message: str) -> None:
        if len(self.error_queue) >= _MAX_ERRORS - 1:
            if not self.error_queue or self.error_queue[-1][0] != -350:
                self.error_queue.append((-350, "Queue overflow"))
            return
        self.error_queue.append((int(code), message))

    def _execute(self, text: str, block: bytes | None):
        """Run one message (maybe ``;``-joined); returns (reply bytes or None, Measurement)."""
        parts = [text] if block is not None else [p for p in text.split(";") if p.strip()]
        replies, delivered = [], None
        for i, part in enumerate(parts):
            out = self._command(part.strip(), block if i == len(parts) - 1 else None)
            if isinstance(out, tuple):
                out, delivered = out
            if out is not None:
                replies.append(out)
        if not replies:
            return None, None
        return b";".join(replies) + b"\n", delivered

    def _command(self, text: str, block: bytes | None):
        """Run one command: its reply (bytes, or ``(bytes, Measurement)`` for a trace), or None
        (a setting, or an error pushed onto the queue)."""
        head, _, arg = text.partition(" ")
        key = head.upper().lstrip(":")
        arg = arg.strip()
        for prefix, code, message in self.faults.errors:
            if key.startswith(prefix.upper().lstrip(":")):
                self.push_error(code, message)
        if (self.role == "source" and key in self._RECEIVER_ONLY) or (
                self.role == "receiver" and key in self._SOURCE_ONLY) or (
                self.role == "both" and key in self._PAIR_ONLY):
            self.push_error(-113, f"Undefined header;{head} (this emulator is the {self.role})")
            return None
        handler = self._HANDLERS.get(key)
        if handler is None:
            self.push_error(-113, f"Undefined header;{head}")
            return None
        return getattr(self, handler)(arg, block)

    # ------------------------------------------------------------------ common commands
    def _query_idn(self, arg: str, block) -> bytes:
        return self.idn.encode()

    def _reset_settings(self, arg: str, block) -> None:
        """``*RST``: the settings back to their defaults; the error queue is kept."""
        errors = self.error_queue
        self._reset_state()
        self.error_queue = errors

    def _clear(self, arg: str, block) -> None:
        self.error_queue.clear()

    def _query_opc(self, arg: str, block) -> bytes:
        return b"1"

    def _query_error(self, arg: str, block) -> bytes:
        code, msg = self.error_queue.popleft() if self.error_queue else (0, "No error")
        return f'{code},"{msg}"'.encode()

    def _query_channels(self, arg: str, block) -> bytes:
        return f"{self.n_in},{self.n_out}".encode()

    # ------------------------------------------------------------------ the source (AWG)
    def _query_volt_limit(self, arg: str, block) -> bytes:
        return f"{self.volt_limit:.6g}".encode()

    def _set_volt_limit(self, arg: str, block) -> None:
        v = _number(arg)
        if v is None or not 0 < v <= self.layer.spec.hi:
            self.push_error(-222, f"Data out of range;limit must be in (0, "
                                  f"{self.layer.spec.hi}], got {arg!r}")
        else:
            self.volt_limit = v

    def _set_output(self, arg: str, block) -> None:
        val = arg.upper()
        if val in ("ON", "1"):
            self.output_on = True
        elif val in ("OFF", "0"):
            self.output_on = False
        else:
            self.push_error(-224, f"Illegal parameter value;{arg!r}")

    def _query_output(self, arg: str, block) -> bytes:
        return b"1" if self.output_on else b"0"

    def _load_wave(self, arg: str, block: bytes | None) -> None:
        """``WAV:DATA``: the batch of drives for the next ``INIT``, if the block holds whole
        float32 drive vectors within the batch and voltage limits (else an error, and none)."""
        self._wave = None
        if block is None:
            self.push_error(-161, "Invalid block data;WAV:DATA needs an IEEE 488.2 block")
            return
        if len(block) % 4:
            self.push_error(-161, f"Invalid block data;{len(block)} bytes is not whole float32s")
            return
        x = np.frombuffer(block, "<f4")
        self.log.add_drive(x)
        if x.size % self.n_in or x.size == 0:
            self.push_error(-223, f"Too much data;{x.size} values is not a positive multiple of "
                                  f"n_in={self.n_in}")
            return
        x = x.reshape(-1, self.n_in)
        if len(x) > self.max_batch:
            self.push_error(-223, f"Too much data;batch {len(x)} > {self.max_batch}")
            return
        lo = self.layer.spec.lo
        if not np.all(np.isfinite(x)) or x.min() < lo or x.max() > self.volt_limit:
            self.push_error(-222, f"Data out of range;drives must lie in [{lo}, "
                                  f"{self.volt_limit}]")
            return
        self._wave = x

    def _init(self, arg: str, block) -> None:
        """``INIT``: measure the loaded batch (the output must be on); an armed scope of the
        pair captures the measurement."""
        if not self.output_on:
            self.push_error(-221, "Settings conflict;output is off")
            return
        if self._wave is None:
            self.push_error(-221, "Settings conflict;no waveform loaded")
            return
        try:
            self._last = self._measure(self._wave)
        except ValueError as e:
            self.push_error(-222, f"Data out of range;{e}")
            return
        if self.bench is not None:
            self.bench.measured(self._last)

    # ------------------------------------------------------------------ the receiver (scope)
    def _query_points(self, arg: str, block) -> bytes:
        return str(self.points).encode()

    def _set_points(self, arg: str, block) -> None:
        v = _number(arg)
        if v is None or v != int(v) or not 1 <= v <= 4096:
            self.push_error(-222, f"Data out of range;points must be 1..4096, got {arg!r}")
        else:
            self.points = int(v)

    def _arm(self, arg: str, block) -> None:
        self.bench.arm()

    def _set_format(self, arg: str, block) -> None:
        val = arg.upper()
        if val in ("ASC", "ASCII"):
            self.ascii = True
        elif val == "REAL":
            self.ascii = False
        else:
            self.push_error(-224, f"Illegal parameter value;{arg!r}")

    def _set_separator(self, arg: str, block) -> None:
        if arg.upper() in self._SEPARATORS:
            self.separator = self._SEPARATORS[arg.upper()]
        else:
            self.push_error(-224, f"Illegal parameter value;{arg!r}")

    def _query_preamble(self, arg: str, block) -> bytes:
        """``WAV:PRE? <channel>``: the channel's scaling (see the module docstring)."""
        ch = self._channel(arg)
        if ch is None:
            return b"0"
        yinc, yorig, yref = self.preamble(ch) if self.raw_codes else (1.0, 0.0, 0.0)
        n = (self._capture_size() or 0) // self.channels
        return (f"{0 if not self.ascii else 4},0,{n},1,1e-06,0,0,{yinc!r},{yorig!r},"
                f"{yref!r}").encode()

    def _channel(self, arg: str) -> int | None:
        """The 1-based channel named ``CH<n>`` / ``CHAN<n>`` (1 when this has one channel and
        none is named), or None after pushing an error."""
        if not arg:
            if self.channels == 1:
                return 1
            self.push_error(-109, f"Missing parameter;name one of CH1..CH{self.channels}")
            return None
        name = arg.upper()
        for prefix in ("CHAN", "CH"):
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                n = int(name[len(prefix):])
                if 1 <= n <= self.channels:
                    return n
                break
        self.push_error(-224, f"Illegal parameter value;{arg!r} (channels CH1..CH{self.channels})")
        return None

    def _capture_size(self) -> int | None:
        m = self._captured(report=False)
        return None if m is None else m.outputs.size * self.points

    def _captured(self, report: bool = True) -> Measurement | None:
        if self.role == "receiver":
            m = self.bench.capture
            if m is None and report:
                self.push_error(-230, "Data corrupt or stale;nothing captured since ARM "
                                      "(arm before the source runs)")
            return m
        if self._last is None and report:
            self.push_error(-230, "Data corrupt or stale;no measurement to fetch")
        return self._last

    def _fetch(self, arg: str = "", block=None):
        """``FETC? [<channel>]``: the trace of the last measurement (a scope: of its capture),
        with the measurement it carries (counted as delivered once sent)."""
        ch = self._channel(arg) if (arg or self.role == "receiver") else 0
        m = self._captured()
        if m is None or ch is None:
            return b"" if self.ascii else ieee_block(b"")
        out = m.outputs
        if ch:
            per = self.n_out // self.channels
            out = out[:, (ch - 1) * per : ch * per]
            if self.raw_codes:
                yinc, yorig, yref = self.preamble(ch)
                out = (out.astype(np.float64) - yorig) / yinc + yref
        trace = np.repeat(out[:, :, None], self.points, axis=2).astype("<f4").ravel()
        if self.faults.short_trace:
            trace = trace[:-1]
        if self.ascii:
            return self.separator.join(f"{float(v):.9g}" for v in trace).encode(), m
        return ieee_block(trace.tobytes()), m
