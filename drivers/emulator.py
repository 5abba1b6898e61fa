"""Virtual instruments on loopback, backed by a simulator, for testing the full hardware stack.

* :class:`ScpiEmulator`: an AWG + digitiser pair behind one raw TCP socket on 127.0.0.1 (like a
  LAN instrument's SCPI socket port), VISA address ``TCPIP::127.0.0.1::<port>::SOCKET``. It speaks
  the commands of the shipped profile ``drivers/profiles/emulator.toml`` (listed below).
* :class:`SerialEmulator`: a microcontroller on a pseudo-terminal (``os.openpty``), speaking the
  framed protocol of :mod:`pnn.drivers.serial`; the port is ``/dev/pts/<n>``.

Both wrap any :class:`~pnn.layer.PhysicalLayer` (default: ``pnn.registry.make_system(system,
n_in, n_out, seed=seed)``), run in a background thread, and are context managers::

    with ScpiEmulator("acoustic", 7, 6, seed=0) as emu:
        with VisaLayer("emulator", emu.resource, n_in=7, n_out=6) as layer:
            y = layer(x)

Bounds: every loop polls a stop flag at least every 50 ms, and the server stops by itself after
``max_requests`` requests or ``max_seconds`` seconds; nothing binds beyond 127.0.0.1. Once it
answers no more requests, :attr:`stopped_serving` is set; the serial emulator then keeps its
pseudo-terminal open until the host has closed the port (so the last reply is never discarded),
within ``max_seconds``, or at most 5 s after :meth:`stop`.

Faults (:class:`Faults`) are injected on request, and everything received is recorded
(:class:`EmulatorLog`): every command, every drive array *as received* (before the emulator's own
checks), and every measurement with how many times its result was delivered, so tests can assert
that no out-of-limit drive reached the instrument and no sample was lost or measured twice.

SCPI command set (case-insensitive, optional leading ``:``, ``;`` separates commands)::

    *IDN?  *RST  *CLS  *OPC?  SYST:ERR?       identity, reset, clear errors, sync, error queue
    CONF:CHAN?                                 "<n_in>,<n_out>"
    SOUR:VOLT:LIM <v> / ?                      the emulator's own output limit, 0 < v <= hi
    ACQ:POIN <k> / ?                           points per feature in a trace, 1..4096
    OUTP ON|OFF|1|0 / OUTP?                    source output
    WAV:DATA <IEEE 488.2 block of float32 LE>  load batch x n_in drives (sample-major)
    INIT                                       measure the loaded batch (output must be on)
    FETC?                                      block of float32: batch x n_out x k points (each
                                               feature's value repeated k times)

Two addresses (:meth:`ScpiEmulator.pair`): a virtual AWG (``role="source"``) and a virtual scope
(``role="receiver"``) on two ports, sharing one physics and one :class:`Bench`. The AWG keeps
``SOUR:VOLT:LIM``, ``OUTP``, ``WAV:DATA`` and ``INIT`` (which measures); the scope keeps
``ACQ:POIN`` and ``FETC?``, and adds::

    ARM                                        capture the next measurement (INIT on the AWG);
                                               FETC? without a capture since ARM: -230
    FORM REAL|ASC                              FETC? answers a float32 block, or ascii text
    FORM:SEP COMM|SEM|SPAC                     the ascii separator: "," ";" or " "
    FETC? <channel>                            one channel's trace (channels CH1..CHn split n_out
                                               evenly: CH1 holds the first n_out / n features)
    WAV:PRE? <channel>                         "format,type,points,count,xinc,xorig,xref,yinc,
                                               yorig,yref"; with ``raw_codes`` FETC? answers
                                               codes c, and a value is (c - yref) * yinc + yorig

Both answer ``*IDN? *RST *CLS *OPC? SYST:ERR? CONF:CHAN?``; a command of the other role is
``-113 Undefined header``.

Errors follow SCPI: -113 undefined header, -221 settings conflict, -222 data out of range,
-223 too much data, -230 data stale, -161 invalid block data, -350 queue overflow.

The command set lives in :mod:`pnn.drivers.emulator_scpi`, what both emulators share (faults,
log, thread and limits) in :mod:`pnn.drivers.emulator_base`; this module holds the two wires and
builds the physics from a registered system.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import struct
import time

import numpy as np

from pnn.drivers.emulator_base import Bench, EmulatorLog, Faults, Measurement, VirtualInstrument
from pnn.drivers.emulator_scpi import BadBlock, ScpiCommands, pop_message
from pnn.drivers.serial import (
    MAX_ERROR_TEXT,
    MsgType,
    ParseStats,
    encode_frame,
    pop_frame,
)
from pnn.drivers.wire import inside_range
from pnn.registry import make_system

try:  # pseudo-terminals, for the serial emulator: POSIX only
    import tty
except ImportError:  # Windows
    tty = None

__all__ = ["Faults", "EmulatorLog", "Measurement", "ScpiEmulator", "SerialEmulator"]

_POLL_S = 0.05
# a serial emulator keeps its pty open until the host closes the port (so that the last reply is
# never discarded); after stop() it waits for that at most this long
_LINGER_S = 5.0
_SEND_TIMEOUT_S = 5.0
_MAX_BUFFER = 64 * 1024 * 1024


def _physics(system: str, n_in: int, n_out: int, seed: int, layer) -> tuple:
    """``(system name, layer)`` behind an emulator: ``layer`` (named by its spec) when given,
    else the registered ``system`` built by :func:`pnn.registry.make_system`."""
    if layer is None:
        return system, make_system(system, n_in, n_out, seed=seed)
    return layer.spec.name, layer


class ScpiEmulator(ScpiCommands, VirtualInstrument):
    """A virtual AWG + digitiser on ``TCPIP::127.0.0.1::<port>::SOCKET`` (see module docstring).

    Args:
        system, n_in, n_out, seed: the simulator, from :func:`pnn.registry.make_system`.
        layer: any physical layer to use instead (its shape must be ``(n_in, n_out)``).
        port: TCP port on 127.0.0.1; 0 picks a free one (read it from :attr:`port`).
        faults: :class:`Faults` to inject. max_requests, max_seconds: when to stop by itself.
        max_batch: the largest batch one ``WAV:DATA`` block may hold.
    """

    def __init__(self, system: str = "acoustic", n_in: int = 8, n_out: int = 8, *, seed: int = 0,
                 layer=None, port: int = 0, faults: Faults = Faults(), max_requests: int = 100_000,
                 max_seconds: float = 600.0, max_batch: int = 4096, role: str = "both",
                 bench: Bench | None = None, channels: int = 1,
                 raw_codes: bool = False):
        system, layer = _physics(system, n_in, n_out, seed, layer)
        super().__init__(system, n_in, n_out, seed=seed, layer=layer, faults=faults,
                         max_requests=max_requests, max_seconds=max_seconds,
                         name="pnn-scpi-emulator")
        if role not in ("both", "source", "receiver"):
            raise ValueError(f"ScpiEmulator: role must be 'both', 'source' or 'receiver', got "
                             f"{role!r}")
        if channels < 1 or n_out % channels:
            raise ValueError(f"ScpiEmulator: n_out = {n_out} cannot be split over {channels} "
                             f"channel(s); choose a divisor of n_out")
        self.role = role
        self.bench = bench if bench is not None else (Bench() if role != "both" else None)
        self.channels = int(channels)
        self.raw_codes = bool(raw_codes)
        self.port = int(port)
        self.max_batch = int(max_batch)
        self._srv: socket.socket | None = None
        self._reset_state()

    @classmethod
    def pair(cls, system: str = "acoustic", n_in: int = 8, n_out: int = 8, *, seed: int = 0,
             layer=None, source_faults: Faults = Faults(), receiver_faults: Faults = Faults(),
             channels: int = 1, raw_codes: bool = False, ports: tuple = (0, 0), **kw) -> tuple:
        """A virtual AWG and a virtual scope on two ports (``(source, receiver)``; ``ports``, 0
        for any free one), sharing one physics (``layer``, default
        :func:`pnn.registry.make_system`) and one :class:`Bench`. Start and stop each (both are
        context managers)."""
        if layer is None:
            layer = make_system(system, n_in, n_out, seed=seed)
        bench = Bench()
        src = cls(system, n_in, n_out, seed=seed, layer=layer, faults=source_faults,
                  role="source", bench=bench, port=ports[0], **kw)
        rcv = cls(system, n_in, n_out, seed=seed, layer=layer, faults=receiver_faults,
                  role="receiver", bench=bench, channels=channels, raw_codes=raw_codes,
                  port=ports[1], **kw)
        return src, rcv

    @property
    def resource(self) -> str:
        return f"TCPIP::127.0.0.1::{self.port}::SOCKET"

    @property
    def address(self) -> tuple:
        """The listening socket's (host, port): always on 127.0.0.1."""
        return self._srv.getsockname() if self._srv is not None else ("127.0.0.1", self.port)

    @property
    def idn(self) -> str:
        kind = {"both": "SCPI", "source": "AWG", "receiver": "Scope"}[self.role]
        return f"PNN,Emulator-{kind},{self.system}-{self.n_in}x{self.n_out}-seed{self.seed},0.1"

    # sockets
    def _bind(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(1)
        srv.settimeout(_POLL_S)
        self.port = srv.getsockname()[1]
        self._srv = srv

    def _unbind(self) -> None:
        if self._srv is not None:
            self._srv.close()
            self._srv = None

    def _serve(self) -> None:
        while not self._done() and not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except (socket.timeout, BlockingIOError):
                continue
            self.log.connections += 1
            with conn:
                dropped = self._serve_connection(conn)
                if dropped or self._stop.is_set():
                    _reset(conn)
                if dropped:
                    self.log.add_drop()

    def _serve_connection(self, conn: socket.socket) -> bool:
        """Serve one connection until the client leaves or a limit is reached; True when a
        fault drops it (the caller then resets it, as it does once :meth:`stop` was called: an
        instrument that goes away does not wait for its client; one that reached its request
        limit closes normally, after its last reply)."""
        conn.settimeout(_POLL_S)
        buf = bytearray()
        while not self._done():
            try:
                data = conn.recv(65536)
            except (socket.timeout, BlockingIOError):
                if self._stop.is_set():
                    return False  # stopped and idle
                continue
            except OSError:
                return False
            if not data:
                return False
            buf.extend(data)
            if len(buf) > _MAX_BUFFER:
                return False
            while not self._done():
                try:
                    msg = pop_message(buf)
                except BadBlock as e:
                    self.log.add_command("<bad block>")
                    self.push_error(-161, f"Invalid block data;{e}")
                    continue
                if msg is None:
                    break
                text, block = msg
                self.log.add_command(text + (" <block>" if block is not None else ""))
                if self._should_drop():
                    if self.faults.drop_reply:
                        self._execute(text, block)
                    return True  # the link dropped
                reply, delivered = self._execute(text, block)
                if reply is None:
                    continue
                self._sleep(self.faults.delay_s)
                if self._garbage_left and text.upper().lstrip(":").startswith(
                        self.faults.garbage_on.upper()):
                    self._garbage_left -= 1
                    reply = b"\x15GARBAGE\x7f?!,,nan" + bytes(range(0xF0, 0xF8)) + b"\n"
                    delivered = None
                try:
                    conn.settimeout(_SEND_TIMEOUT_S)  # a large trace to a busy client
                    conn.sendall(reply)
                    conn.settimeout(_POLL_S)
                except OSError:
                    return False
                if delivered is not None:
                    delivered.deliveries += 1
        return False


def _reset(conn: socket.socket) -> None:
    """Close ``conn`` with a TCP reset (SO_LINGER on, zero timeout): the peer's next read or
    write fails with ECONNRESET at once, where a normal close (FIN) would leave a pyvisa-py
    client waiting for its read timeout."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    conn.close()


class SerialEmulator(VirtualInstrument):
    """A virtual microcontroller on a pseudo-terminal, speaking :mod:`pnn.drivers.serial`'s protocol.

    Args: as :class:`ScpiEmulator`, without ``port`` (read the pty's path from :attr:`port`).
    ``max_batch`` is what the device announces in its HELLO reply; ``limits`` the drive range
    ``(lo, hi)`` it announces there and refuses drives outside of (default: the layer's
    ``[lo, hi]``); it announces them rounded to float32 toward the inside, so that whatever it
    announces, it accepts.
    """

    def __init__(self, system: str = "acoustic", n_in: int = 8, n_out: int = 8, *, seed: int = 0,
                 layer=None, faults: Faults = Faults(), max_requests: int = 100_000,
                 max_seconds: float = 600.0, max_batch: int = 1024,
                 limits: tuple[float, float] | None = None):
        system, layer = _physics(system, n_in, n_out, seed, layer)
        super().__init__(system, n_in, n_out, seed=seed, layer=layer, faults=faults,
                         max_requests=max_requests, max_seconds=max_seconds,
                         name="pnn-serial-emulator")
        self.max_batch = int(max_batch)
        lo, hi = limits if limits is not None else (self.layer.spec.lo, self.layer.spec.hi)
        self.lo, self.hi = float(lo), float(hi)
        self.port: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._session: int | None = None
        self._memo: collections.OrderedDict = collections.OrderedDict()
        self._rng = np.random.default_rng(seed)
        self.parse_stats = ParseStats()

    @property
    def resource(self) -> str:
        return self.port

    @property
    def idn(self) -> str:
        return f"PNN Emulator-Serial {self.system}-{self.n_in}x{self.n_out}-seed{self.seed}"

    def _bind(self) -> None:
        if tty is None:
            raise OSError("SerialEmulator needs pseudo-terminals (os.openpty), which only POSIX "
                          "systems have; use ScpiEmulator on this system")
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        # the emulator keeps the slave end open too, so the master never sees EIO when the host
        # closes and re-opens the port
        self.port = os.ttyname(slave)

    def _unbind(self) -> None:
        """Close the pty without losing the last reply.

        Closing the master discards every byte the host has not read yet, and a reply just
        written may not even be visible to ``FIONREAD`` on the slave yet (the kernel moves it
        into the line discipline asynchronously). So no byte count is trusted: the emulator closes
        its own slave descriptor and keeps the master open until the host has closed the port as
        well (the master then reports a hang-up: an explicit event, not a guess about timing).
        Bounds: the emulator's lifetime (``max_seconds``), or ``_LINGER_S`` after :meth:`stop`.
        Bytes the host sends meanwhile (e.g. a resend of the last request) are read and dropped:
        nothing is served any more.
        """
        master, slave = self._master, self._slave
        self._master = self._slave = None
        if slave is not None:
            try:
                os.close(slave)
            except OSError:
                pass
        if master is None:
            return
        try:
            while True:
                now = time.monotonic()
                end = self._deadline
                if self._stop.is_set():
                    end = min(end, self._stop_t + _LINGER_S)
                if now >= end:
                    break
                r, _, _ = select.select([master], [], [], min(_POLL_S, end - now))
                if not r:
                    continue
                try:
                    os.read(master, 65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # EIO: no slave descriptor is open any more: the host closed
                    break
        finally:
            try:
                os.close(master)
            except OSError:
                pass

    def _plausible(self, type_: int, length: int) -> bool:
        if type_ == MsgType.HELLO:
            return length == 4
        if type_ == MsgType.SAFE:
            return length == 0
        if type_ == MsgType.MEASURE:
            return 2 <= length <= 0xFFFF
        return False

    def _serve(self) -> None:
        buf = bytearray()
        while not self._done():
            r, _, _ = select.select([self._master], [], [], _POLL_S)
            if not r:
                if self._stop.is_set():
                    return  # stopped and idle
                continue
            try:
                data = os.read(self._master, 65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            buf.extend(data)
            if len(buf) > _MAX_BUFFER:
                buf.clear()
            while not self._done():
                frame = pop_frame(buf, self._plausible, self.parse_stats)
                if frame is None:
                    break
                self._handle(frame)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        end = time.monotonic() + 5.0
        while view and not self._stop.is_set() and time.monotonic() < end:
            _, w, _ = select.select([], [self._master], [], _POLL_S)
            if not w:
                continue
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                continue
            view = view[n:]

    def _handle(self, frame) -> None:
        kind = MsgType(frame.type)
        self.log.add_command(kind.name)
        raw = encode_frame(frame.type, frame.seq, frame.payload)
        drop = self._should_drop()
        if drop and not self.faults.drop_reply:
            self.log.add_drop()
            return  # swallowed: never executed
        reply, m = self._reply_for(kind, frame, raw)
        if drop:
            self.log.add_drop()
            return  # executed, reply lost
        self._sleep(self.faults.delay_s)
        out = reply
        if self._corrupt_left:
            self._corrupt_left -= 1
            out = out[:-1] + bytes([out[-1] ^ 0x5A])
            m = None
        if self._garbage_left:
            self._garbage_left -= 1
            junk = self._rng.integers(0, 256, self.faults.garbage_bytes, dtype=np.uint8)
            junk[:: max(1, len(junk) // 4)] = 0xA5  # START bytes inside the noise, to resync past
            out = junk.tobytes() + out
        self._write(out)
        if m is not None:
            m.deliveries += 1

    def _reply_for(self, kind: MsgType, frame, raw: bytes):
        """Return (reply frame bytes, Measurement or None), answering repeats from memory."""
        if kind == MsgType.HELLO:
            (session,) = struct.unpack("<I", frame.payload)
            if session != self._session:
                self._session = session
                self._memo.clear()
            payload = struct.pack("<HHHff", self.n_in, self.n_out, self.max_batch,
                                  *inside_range(self.lo, self.hi, "f"))
            return encode_frame(MsgType.HELLO_OK, frame.seq, payload + self.idn.encode()[:64]), None
        if raw in self._memo:
            return self._memo[raw]
        for prefix, code, message in self.faults.errors:
            if kind.name.startswith(prefix.upper()):
                return self._error(frame.seq, code, message), None
        if kind == MsgType.SAFE:
            self.output_on = False
            result = (encode_frame(MsgType.SAFE_OK, frame.seq), None)
        else:
            result = self._measure_frame(frame)
        self._memo[raw] = result
        while len(self._memo) > 4:
            self._memo.popitem(last=False)
        return result

    def _error(self, seq: int, code: int, message: str) -> bytes:
        return encode_frame(MsgType.ERROR, seq,
                            struct.pack("<h", code) + message.encode()[:MAX_ERROR_TEXT])

    def _measure_frame(self, frame):
        p = frame.payload
        (b,) = struct.unpack_from("<H", p)
        if len(p) != 2 + 4 * b * self.n_in or b == 0:
            return self._error(frame.seq, -1, f"MEASURE payload of {len(p)} bytes does not hold "
                                              f"{b} x {self.n_in} float32"), None
        x = np.frombuffer(p, "<f4", offset=2).reshape(b, self.n_in)
        self.log.add_drive(x)
        if b > self.max_batch:
            return self._error(frame.seq, -2, f"batch {b} > max_batch {self.max_batch}"), None
        lo, hi = self.lo, self.hi
        if not np.all(np.isfinite(x)) or x.min() < lo or x.max() > hi:
            return self._error(frame.seq, -3, f"drive outside [{lo}, {hi}]"), None
        self.output_on = True
        try:
            m = self._measure(x)
        except ValueError as e:
            return self._error(frame.seq, -4, str(e)[:MAX_ERROR_TEXT]), None
        payload = struct.pack("<H", b) + m.outputs.astype("<f4").tobytes()
        return encode_frame(MsgType.MEASURE_OK, frame.seq, payload), m
