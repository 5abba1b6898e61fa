"""A microcontroller setup on a serial port as a physical layer, over a framed binary protocol.

The wire protocol (version 1)
-----------------------------
Every message, in both directions, is one frame::

    offset  size  field
    0       1     START   0xA5
    1       1     TYPE    message type (below)
    2       1     SEQ     sequence number chosen by the host; a reply carries its request's SEQ
    3       2     LEN     payload length in bytes, unsigned little-endian (0..65535)
    5       LEN   PAYLOAD
    5+LEN   2     CRC     CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final
                          XOR; ``binascii.crc_hqx(data, 0xFFFF)``) of TYPE, SEQ, LEN and PAYLOAD,
                          big-endian. Check value: CRC("123456789") = 0x29B1.

Numbers are little-endian; drives and measurements are float32.

==========  =========================================  ==========  ==============================
request     payload                                    reply       payload
==========  =========================================  ==========  ==============================
HELLO 0x01  u32 session id                             0x81        u16 n_in, u16 n_out,
                                                                   u16 max_batch, f32 lo,
                                                                   f32 hi, ASCII id (<= 64 B)
MEASURE     u16 batch, batch x n_in f32 (sample-major)  0x90       u16 batch,
0x10                                                               batch x n_out f32
SAFE 0x11   (empty): drive outputs to zero               0x91       (empty)
(any)                                                   ERROR 0xEE  i16 code, ASCII message
                                                                   (<= 200 B)
==========  =========================================  ==========  ==============================

Limits: the host keeps to the stricter of its profile and the device's HELLO reply. The device's
``[lo, hi]`` (instrument units, the values sent) lowers the safety ceiling where it is stricter,
and its ``max_batch`` caps the transfers; each stricter limit is reported once with a
:class:`~pnn.drivers.safety.DeviceLimitsWarning`. A range that is not one (not finite, ``lo >=
hi``) or does not overlap the profile's ceiling is refused at connect.

Idempotent retries: the device remembers its last few MEASURE/SAFE requests (the exact frame
bytes, SEQ included) with their replies, and answers a repeated frame from that memory without
driving the outputs again. The host sends each new transaction with the next SEQ and repeats the
*same* bytes on a retry, so a lost or corrupted reply costs a resend, never a second
measurement. HELLO with a new session id clears the memory (a new host session); the host keeps
its session id across re-opens of the port.

Receiving (host and device alike, :func:`pop_frame`): scan to the next START byte (anything
before it is garbage and skipped), read the header, refuse an implausible TYPE or LEN by skipping
one byte, wait for the whole frame, check the CRC; on a mismatch skip one byte and scan again
(the START byte may itself have been noise). A partial frame that stops growing for
``resync_gap_s`` is treated the same way when a complete valid frame follows it in the buffer (its
header was noise); otherwise its bytes are kept, since the rest may merely be late. If a corrupted frame is seen and nothing valid follows
within ``resync_gap_s``, the host resends the request (same bytes), at most ``max_retries``
times; a request that gets no reply within ``timeout_s`` (``measure_timeout_s`` for MEASURE) is
resent likewise, and a port error (device reset, cable) re-opens the port first.
"""

from __future__ import annotations

import binascii
import dataclasses
import enum
import math
import os
import struct
import time
import warnings
from typing import Callable

import numpy as np

from pnn.drivers.base import InstrumentLayer, TransientError
from pnn.drivers.errors import (
    ChecksumError,
    InstrumentConnectionError,
    InstrumentError,
    ReplyFormatError,
)
from pnn.drivers.profile import Profile
from pnn.drivers.safety import DeviceLimitsWarning, SafetyLimits

try:  # the serial port's own errors (see _transport_errors): POSIX only
    import termios
except ImportError:  # Windows
    termios = None

__all__ = [
    "SerialLayer",
    "MsgType",
    "Frame",
    "ParseStats",
    "START",
    "crc16",
    "encode_frame",
    "pop_frame",
    "MAX_ERROR_TEXT",
    "MAX_ID_TEXT",
]

START = 0xA5
_HEAD = struct.Struct("<BBBH")  # START, TYPE, SEQ, LEN
_HELLO_OK = struct.Struct("<HHHff")
MAX_ERROR_TEXT = 200
MAX_ID_TEXT = 64
_POLL_S = 0.02


class MsgType(enum.IntEnum):
    HELLO = 0x01
    MEASURE = 0x10
    SAFE = 0x11
    HELLO_OK = 0x81
    MEASURE_OK = 0x90
    SAFE_OK = 0x91
    ERROR = 0xEE


REPLY_TO = {MsgType.HELLO: MsgType.HELLO_OK, MsgType.MEASURE: MsgType.MEASURE_OK,
            MsgType.SAFE: MsgType.SAFE_OK}


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data``."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclasses.dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes

    def encode(self) -> bytes:
        return encode_frame(self.type, self.seq, self.payload)


def encode_frame(type_: int, seq: int, payload: bytes = b"") -> bytes:
    """One frame's bytes (see the module docstring).

    Raises:
        ValueError: when the payload exceeds 65535 bytes or type/seq exceed a byte.
    """
    if len(payload) > 0xFFFF:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds the protocol's 65535")
    if not (0 <= type_ <= 0xFF and 0 <= seq <= 0xFF):
        raise ValueError(f"frame type and seq must be bytes, got type={type_}, seq={seq}")
    head = _HEAD.pack(START, type_, seq, len(payload))
    return head + payload + struct.pack(">H", crc16(head[1:] + payload))


@dataclasses.dataclass
class ParseStats:
    """What :func:`pop_frame` threw away: bytes skipped while scanning, frames with a bad CRC."""

    skipped: int = 0
    bad_checksum: int = 0
    frames: int = 0


def pop_frame(buf: bytearray, plausible: Callable[[int, int], bool],
              stats: ParseStats | None = None) -> Frame | None:
    """Take the first valid frame out of ``buf`` (consuming it and any garbage before it).

    ``plausible(type, length)`` says whether a header is worth waiting for; an implausible one is
    garbage. Returns ``None`` when ``buf`` holds no complete valid frame yet (a partial frame is
    left in place, to be completed by more bytes).
    """
    stats = stats if stats is not None else ParseStats()
    while True:
        i = buf.find(START)
        if i < 0:
            stats.skipped += len(buf)
            buf.clear()
            return None
        if i:
            stats.skipped += i
            del buf[:i]
        if len(buf) < _HEAD.size:
            return None
        _, type_, seq, length = _HEAD.unpack_from(buf)
        if not plausible(type_, length):
            stats.skipped += 1
            del buf[:1]
            continue
        total = _HEAD.size + length + 2
        if len(buf) < total:
            return None
        body = bytes(buf[1 : _HEAD.size + length])
        (crc,) = struct.unpack_from(">H", buf, _HEAD.size + length)
        if crc != crc16(body):
            stats.bad_checksum += 1
            stats.skipped += 1
            del buf[:1]
            continue
        del buf[:total]
        stats.frames += 1
        return Frame(type_, seq, body[_HEAD.size - 1 :])


def _valid_frame_after_head(buf: bytearray, plausible: Callable[[int, int], bool]) -> bool:
    """Whether a complete valid frame starts somewhere after ``buf[0]`` (``buf`` unchanged)."""
    return pop_frame(bytearray(buf[1:]), plausible) is not None


class _NoReply(Exception):
    """No valid reply before the deadline (internal: turned into a retry or a clear error)."""


def _pyserial():
    import serial  # optional (pnn[hardware]): imported when a driver first needs it
    return serial


def _transport_errors() -> tuple:
    errors = (_pyserial().SerialException, OSError)
    # pyserial's flush() is tcdrain(), which raises termios.error (not an OSError) on EIO
    return errors if termios is None else errors + (termios.error,)


class SerialLayer(InstrumentLayer):
    """A microcontroller speaking the framed protocol above, as a :class:`~pnn.layer.PhysicalLayer`.

    The common path (validation, safety, chunking into ``max_batch``, retries, counters) is
    :class:`~pnn.drivers.base.InstrumentLayer`'s; this class is the wire: frames over pyserial.

    Args:
        profile: a :class:`~pnn.drivers.profile.Profile`, TOML path or shipped name; its ``[serial]``
            table gives the baud rate, timeouts, retries, resync gap, batch size and the drive
            map ``value = offset + scale * x`` (checked by the safety limits).
        port: the serial port, e.g. ``"/dev/ttyACM0"`` or ``"COM3"``; default the profile's.
        n_in, n_out: the layer's shape (checked against the device's HELLO reply).
        name: used in every message. safety: as for :class:`~pnn.drivers.visa.VisaLayer`.
        session: the 32-bit session id sent in HELLO (default: random).

    No I/O here: use :meth:`connect` / ``with``. Outputs are ``float32`` ``(batch, n_out)``.
    """

    _section = "serial"
    _kind = "SerialLayer"
    _wire_datatype = "f"  # the protocol's drives are float32
    _encoding_key = "[serial] scale/offset"

    def __init__(self, profile: Profile | str = "emulator", port: str | None = None, *,
                 n_in: int | None = None, n_out: int | None = None, name: str | None = None,
                 safety: SafetyLimits | None = None, session: int | None = None):
        self._s = self._load_settings(profile)
        self.port = port or self._s.port
        if not self.port:
            raise ValueError(f"SerialLayer: no port given and profile {self.profile.source} sets "
                             f"no serial.port")
        self._init_instrument(n_in=n_in, n_out=n_out, name=name or f"serial:{self.port}",
                              safety=safety)
        self.session = int.from_bytes(os.urandom(4), "little") if session is None else session
        self._ser = None
        self._rx = bytearray()
        self._seq = 0
        self._max_batch = self._s.max_batch
        self._device_notes: set[str] = set()  # stricter device limits already reported
        self.parse_stats = ParseStats()

    # ------------------------------------------------------------------ connection
    def connect(self) -> "SerialLayer":
        """Open the port and shake hands (HELLO); check the device's shape. Returns ``self``.

        A device that does not answer fails within ``timeout_s`` (no retry: nobody is there);
        a corrupted answer is asked again.

        Raises:
            InstrumentConnectionError: the port cannot be opened, or no reply within timeout_s.
            ReplyFormatError: the device's shape differs from the layer's.
        """
        return super().connect()

    def _link_open(self) -> bool:
        return self._ser is not None

    def _open_port(self) -> None:
        serial = _pyserial()
        try:
            self._ser = serial.Serial(self.port, baudrate=self._s.baudrate, timeout=_POLL_S,
                                      write_timeout=self._s.timeout_s)
        except (serial.SerialException, OSError, ValueError) as e:
            raise InstrumentConnectionError(
                f"{self.spec.name}: cannot open serial port {self.port!r} at "
                f"{self._s.baudrate} baud: {e}") from e
        self._rx.clear()

    def _open_link(self) -> None:
        self._open_port()
        try:
            try:
                reply = self._transact(MsgType.HELLO, struct.pack("<I", self.session & 0xFFFFFFFF),
                                       timeout_s=self._s.timeout_s, retry_no_reply=False,
                                       reopen=False)
            except _NoReply as e:
                raise InstrumentConnectionError(
                    f"{self.spec.name}: no reply to HELLO from {self.port!r} within "
                    f"{self._s.timeout_s} s ({e}); check the port, the baud rate "
                    f"({self._s.baudrate}) and that the device runs the pnn serial protocol "
                    f"(drivers/serial.py)") from None
            p = reply.payload
            n_in, n_out, max_batch, lo, hi = _HELLO_OK.unpack_from(p)
            self.idn = p[_HELLO_OK.size :].decode("ascii", "replace")
            if (n_in, n_out) != (self.spec.n_in, self.spec.n_out):
                raise ReplyFormatError(
                    f"{self.spec.name}: the device {self.idn!r} has {n_in} inputs and {n_out} "
                    f"outputs, but the layer was built for n_in={self.spec.n_in}, "
                    f"n_out={self.spec.n_out}")
            self._keep_device_limits(lo, hi, max_batch)
        except BaseException:
            self._discard()
            raise

    def _keep_device_limits(self, lo: float, hi: float, max_batch: int) -> None:
        """Keep to the stricter of the profile and what the device announced in HELLO: its drive
        range ``[lo, hi]`` lowers the guard's ceiling (:meth:`SafetyLimits.tighten_ceiling`:
        ``restrict`` cannot lift the active limits above it afterwards), its ``max_batch`` caps
        the transfers. Each stricter limit is reported once, as a
        :class:`~pnn.drivers.safety.DeviceLimitsWarning`.

        Raises:
            ReplyFormatError: the device announced no valid range (not finite, ``lo >= hi``) or
                a ``max_batch`` of 0.
            InstrumentError: the device's range and the profile's ceiling (or the active
                limits) have no value in common.
        """
        who = f"{self.spec.name}: the device {self.idn!r}"
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or max_batch < 1:
            raise ReplyFormatError(
                f"{who} announced drives in [{lo:.7g}, {hi:.7g}] and max_batch {max_batch} in "
                f"its HELLO reply: not a valid range (finite lo < hi) and batch size (>= 1); "
                f"check the firmware's configuration")
        try:
            notes = self.safety.tighten_ceiling(lo=lo, hi=hi, source=f"the device {self.idn!r}")
        except ValueError as e:
            raise InstrumentError(f"{e}; the profile's [safety] ceiling and the device's drive "
                                  f"range must overlap") from None
        notes = [f"drive {n} (instrument units)" for n in notes]
        if max_batch < self._s.max_batch:
            notes.append(f"max_batch {self._s.max_batch} -> {max_batch}")
        new = [n for n in notes if n not in self._device_notes]
        self._device_notes.update(new)
        if new:
            warnings.warn(DeviceLimitsWarning(
                f"{who} is stricter than profile {self.profile.source}: {', '.join(new)}; "
                f"the host keeps to the device's limits"), stacklevel=2)
        frame_cap = (0xFFFF - 2) // (4 * max(self.spec.n_in, self.spec.n_out))
        self._max_batch = max(1, min(self._s.max_batch, max_batch, frame_cap))

    def _discard(self) -> None:
        ser, self._ser = self._ser, None
        self._rx.clear()
        if ser is not None:
            try:
                ser.close()
            except Exception:
                pass

    def close(self) -> None:
        """Send SAFE (outputs to zero), then close the port, in a ``finally``.

        Raises:
            InstrumentError: when SAFE could not be confirmed (the port is closed regardless).
        """
        super().close()

    def _make_safe(self, was_connected: bool) -> str | None:
        if not (was_connected or self._ser is not None):
            return None
        try:
            self._transact(MsgType.SAFE, b"", timeout_s=self._s.timeout_s)
        except (InstrumentError, _NoReply) as e:
            return (f"{self.spec.name}: could not confirm SAFE on {self.port!r} ({e}); check the "
                    f"device's outputs by hand")
        return None

    # ------------------------------------------------------------------ transactions
    def _plausible(self, type_: int, length: int) -> bool:
        if type_ == MsgType.MEASURE_OK:
            return length <= 2 + 4 * self._max_batch * self.spec.n_out
        if type_ == MsgType.HELLO_OK:
            return _HELLO_OK.size <= length <= _HELLO_OK.size + MAX_ID_TEXT
        if type_ == MsgType.SAFE_OK:
            return length == 0
        if type_ == MsgType.ERROR:
            return 2 <= length <= 2 + MAX_ERROR_TEXT
        return False

    def _new_request(self, type_: MsgType, payload: bytes) -> tuple:
        """The frame of a new transaction (the next SEQ); every resend repeats these bytes."""
        self._seq = (self._seq + 1) & 0xFF
        return type_, self._seq, encode_frame(type_, self._seq, payload)

    def _transact(self, type_: MsgType, payload: bytes, *, timeout_s: float,
                  retry_no_reply: bool = True, reopen: bool = True) -> Frame:
        """Send one request and return its reply, resending the same bytes on failure."""
        request = self._new_request(type_, payload)
        return self._with_retries(
            lambda i: self._attempt(request, i, timeout_s=timeout_s,
                                    retry_no_reply=retry_no_reply, reopen=reopen),
            lambda tries, last: self._frame_gave_up(type_, tries, last))

    def _attempt(self, request: tuple, attempt: int, *, timeout_s: float,
                 retry_no_reply: bool = True, reopen: bool = True) -> Frame:
        """One try at a request: a failure a resend may cure raises :class:`TransientError`."""
        type_, seq, frame = request
        try:
            if self._ser is None:
                if not reopen:
                    raise InstrumentConnectionError(f"{self.spec.name}: port is closed")
                self._open()
            if not attempt:
                # a new transaction: whatever is still buffered answers an earlier one. A
                # resend keeps it: a late reply to this very request is as good as the
                # resend's (same SEQ, and the device answers repeats from its memory)
                self._ser.reset_input_buffer()
                self._rx.clear()
            self._ser.write(frame)
            self._ser.flush()
            reply = self._read_reply(seq, time.monotonic() + timeout_s)
        except ChecksumError as e:
            raise TransientError(e) from e
        except _NoReply as e:
            if not retry_no_reply:
                raise
            raise TransientError(e) from e
        except _transport_errors() as e:
            self._discard()
            if not reopen:
                raise InstrumentConnectionError(
                    f"{self.spec.name}: port {self.port!r} failed: {e}") from e
            raise TransientError(e) from e
        except InstrumentConnectionError as e:
            raise TransientError(e) from e
        if reply.type == MsgType.ERROR:
            (code,) = struct.unpack_from("<h", reply.payload)
            msg = reply.payload[2:].decode("ascii", "replace")
            raise InstrumentError(f"{self.spec.name}: device reported error {code} "
                                  f"({msg!r}) to {type_.name}")
        if reply.type != REPLY_TO[type_]:
            raise ReplyFormatError(f"{self.spec.name}: reply of type 0x{reply.type:02X} to "
                                   f"{type_.name}, expected {REPLY_TO[type_].name}")
        return reply

    def _frame_gave_up(self, type_: MsgType, tries: int, last) -> Exception:
        if isinstance(last, ChecksumError):
            return ChecksumError(f"{self.spec.name}: {type_.name} reply failed its checksum "
                                 f"{tries} time(s) in a row; last: {last}")
        return InstrumentConnectionError(
            f"{self.spec.name}: {type_.name} to {self.port!r} failed {tries} time(s) in a row "
            f"(serial.max_retries = {self._s.max_retries}); last error: "
            f"{type(last).__name__}: {last}")

    def _read_reply(self, seq: int, deadline: float) -> Frame:
        stats = self.parse_stats
        bad0 = stats.bad_checksum
        gap = self._s.resync_gap_s
        last_rx = time.monotonic()
        while True:
            frame = pop_frame(self._rx, self._plausible, stats)
            if frame is not None:
                if frame.seq == seq:
                    return frame
                continue  # a late reply to an earlier request
            now = time.monotonic()
            if now - last_rx > gap:
                if self._rx and _valid_frame_after_head(self._rx, self._plausible):
                    # a partial "frame" that stopped growing while a whole valid frame waits
                    # behind it: its header was noise. A partial frame with nothing valid
                    # behind it is left alone: the rest of it may merely be late (a slow
                    # device or a loaded host), and dropping it would lose a good reply
                    stats.skipped += 1
                    del self._rx[:1]
                    continue
                if stats.bad_checksum > bad0:
                    raise ChecksumError(f"{stats.bad_checksum - bad0} corrupted frame(s) and "
                                        f"no valid reply within {gap} s after")
            if now > deadline:
                raise _NoReply(f"no valid reply (seq {seq}) before the deadline")
            n = self._ser.in_waiting
            chunk = self._ser.read(n if n else 1)
            if chunk:
                self._rx.extend(chunk)
                last_rx = time.monotonic()

    # ------------------------------------------------------------------ measurement
    def to_instrument(self, x) -> np.ndarray:
        return self._s.offset + self._s.scale * np.asarray(x, np.float64)

    def _batch_limit(self) -> int:
        return self._max_batch

    def _max_retries(self) -> int:
        return self._s.max_retries

    def _prepare(self, values: np.ndarray, encoded: np.ndarray) -> tuple:
        payload = struct.pack("<H", len(encoded)) + encoded.astype("<f4").tobytes()
        return self._new_request(MsgType.MEASURE, payload)

    def _exchange(self, request: tuple, attempt: int) -> np.ndarray:
        # one try; the base's retries resend the same bytes
        reply = self._attempt(request, attempt, timeout_s=self._s.measure_timeout_s)
        b = struct.unpack_from("<H", request[2], 5)[0]
        want = 2 + 4 * b * self.spec.n_out
        p = reply.payload
        b_field = struct.unpack_from("<H", p)[0] if len(p) >= 2 else None
        if len(p) != want or b_field != b:
            raise ReplyFormatError(
                f"{self.spec.name}: MEASURE reply has {len(p)} payload bytes (batch field "
                f"{b_field}), expected 2 + 4 x batch {b} x n_out {self.spec.n_out} = {want}")
        y = np.frombuffer(reply.payload, "<f4", offset=2).reshape(b, self.spec.n_out)
        if not np.all(np.isfinite(y)):
            raise ReplyFormatError(f"{self.spec.name}: MEASURE reply holds "
                                   f"{int((~np.isfinite(y)).sum())} non-finite values")
        return y.astype(np.float32)

    def _gave_up(self, n_values: int, tries: int, last) -> Exception:
        return self._frame_gave_up(MsgType.MEASURE, tries, last)

    def __repr__(self) -> str:
        state = "connected" if self._connected else "not connected"
        return (f"SerialLayer({self.port!r}, n_in={self.spec.n_in}, n_out={self.spec.n_out}, "
                f"{state})")
