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
"""

from __future__ import annotations

import collections
import dataclasses
import os
import select
import socket
import struct
import threading
import time

import numpy as np

from pnn.drivers.serial import (
    MAX_ERROR_TEXT,
    MsgType,
    ParseStats,
    encode_frame,
    pop_frame,
)
from pnn.drivers.wire import inside_range

__all__ = ["Faults", "EmulatorLog", "Measurement", "ScpiEmulator", "SerialEmulator"]

_POLL_S = 0.05
_GRACE_S = 0.5
# a serial emulator keeps its pty open until the host closes the port (so that the last reply is
# never discarded); after stop() it waits for that at most this long
_LINGER_S = 5.0
_SEND_TIMEOUT_S = 5.0
_MAX_BUFFER = 64 * 1024 * 1024
_MAX_ERRORS = 32


@dataclasses.dataclass(frozen=True)
class Faults:
    """Faults to inject (all off by default).

    delay_s: wait this long before every reply.
    drop_after: after this many requests, drop the link on the next one: the SCPI server resets
        the connection (a TCP RST, so the host notices at once, without waiting for a timeout),
        the serial device swallows the frame. Each drop is counted in :attr:`EmulatorLog.drops`
        once it has happened, so a test can wait for it (:meth:`EmulatorLog.wait_until`). Happens ``drops`` times, each
        ``drop_after`` requests after the previous one.
    drop_reply: when dropping, first execute the request (the measurement happens, its reply
        is lost) instead of dropping it unexecuted.
    garbage_replies: the first N replies (SCPI: only to queries whose header starts with
        ``garbage_on``, "" for any) are garbage: SCPI replaces the reply with junk text; serial
        puts ``garbage_bytes`` random bytes (START bytes included) in front of the reply.
    corrupt_replies: serial: the first N replies carry a wrong CRC.
    short_trace: SCPI: ``FETC?`` returns one value too few (a well-formed block, wrong length).
    errors: ``(header_prefix, code, message)`` triples: SCPI pushes ``code,"message"`` onto the
        error queue whenever a command starting with the prefix arrives; serial answers a
        request whose type name (``"MEASURE"``...) starts with it with an ERROR frame.
    """

    delay_s: float = 0.0
    drop_after: int | None = None
    drops: int = 1
    drop_reply: bool = False
    garbage_replies: int = 0
    garbage_on: str = ""
    garbage_bytes: int = 24
    corrupt_replies: int = 0
    short_trace: bool = False
    errors: tuple = ()


@dataclasses.dataclass
class Measurement:
    """One measured batch: the drives as used, the outputs, and how often they were sent back."""

    drives: np.ndarray
    outputs: np.ndarray
    deliveries: int = 0


class EmulatorLog:
    """What an emulator received and did (thread-safe appends; read it from the test)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.commands: list[str] = []
        self.drives: list[np.ndarray] = []
        self.measurements: list[Measurement] = []
        self.connections = 0
        self.drops = 0

    def add_command(self, text: str) -> None:
        with self._lock:
            self.commands.append(text)
            self._changed.notify_all()

    def add_drop(self) -> None:
        """Count a drop once it has taken effect (connection reset, frame swallowed or its
        reply discarded)."""
        with self._lock:
            self.drops += 1
            self._changed.notify_all()

    def wait_until(self, predicate, timeout: float) -> bool:
        """Block until ``predicate(log)`` holds (re-checked whenever a command or a drop is
        logged); False if ``timeout`` seconds passed first. For tests: the condition is the
        synchronisation, ``timeout`` only bounds a hang."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def add_drive(self, x: np.ndarray) -> None:
        with self._lock:
            self.drives.append(x.copy())

    def add_measurement(self, m: Measurement) -> None:
        with self._lock:
            self.measurements.append(m)

    @property
    def requests(self) -> int:
        return len(self.commands)

    def delivered_drives(self, n_in: int) -> np.ndarray:
        """Drives of every delivered measurement, in order, shape ``(samples, n_in)``."""
        parts = [m.drives for m in self.measurements if m.deliveries]
        return np.concatenate(parts) if parts else np.zeros((0, n_in), np.float32)

    @property
    def samples_measured(self) -> int:
        return int(sum(len(m.drives) for m in self.measurements))

    def max_abs_drive(self) -> float:
        return max((float(np.max(np.abs(d))) for d in self.drives if d.size), default=0.0)


class Bench:
    """What a two-address emulator pair shares: the scope's capture of the AWG's measurement."""

    def __init__(self):
        self._lock = threading.Lock()
        self.armed = False
        self.capture: Measurement | None = None

    def arm(self) -> None:
        with self._lock:
            self.armed, self.capture = True, None

    def measured(self, m: Measurement) -> None:
        """The AWG measured ``m``: an armed scope captures it (and is disarmed)."""
        with self._lock:
            if self.armed:
                self.armed, self.capture = False, m


class _Emulator:
    """Thread, limits and fault bookkeeping shared by both emulators."""

    def __init__(self, system: str, n_in: int, n_out: int, *, seed: int, layer, faults: Faults,
                 max_requests: int, max_seconds: float, name: str):
        if layer is None:
            from pnn.registry import make_system

            layer = make_system(system, n_in, n_out, seed=seed)
        else:
            system = layer.spec.name
        if (layer.spec.n_in, layer.spec.n_out) != (n_in, n_out):
            raise ValueError(f"{name}: the layer has shape ({layer.spec.n_in}, "
                             f"{layer.spec.n_out}), expected ({n_in}, {n_out})")
        if max_requests < 1 or not max_seconds > 0:
            raise ValueError(f"{name}: max_requests and max_seconds must be positive, got "
                             f"{max_requests!r} and {max_seconds!r}")
        self.layer = layer
        self.system, self.n_in, self.n_out, self.seed = system, n_in, n_out, seed
        self.faults = faults
        self.max_requests = int(max_requests)
        self.max_seconds = float(max_seconds)
        self.log = EmulatorLog()
        self.name = name
        self.output_on = False
        self._stop = threading.Event()
        #: set once the emulator answers no further request (the port may stay open a little
        #: longer, see :meth:`SerialEmulator._unbind`)
        self.stopped_serving = threading.Event()
        self._thread: threading.Thread | None = None
        self._deadline = 0.0
        self._stop_t = 0.0
        self._drop_at = faults.drop_after
        self._drops_left = faults.drops if faults.drop_after is not None else 0
        self._garbage_left = faults.garbage_replies
        self._corrupt_left = faults.corrupt_replies
        self.error: BaseException | None = None

    def set_faults(self, faults: Faults) -> None:
        """Inject new faults from now on (counters restart; a drop counts from this request)."""
        self.faults = faults
        self._drop_at = (None if faults.drop_after is None
                         else self.log.requests + faults.drop_after)
        self._drops_left = faults.drops if faults.drop_after is not None else 0
        self._garbage_left = faults.garbage_replies
        self._corrupt_left = faults.corrupt_replies

    # lifecycle
    def start(self):
        self._deadline = time.monotonic() + self.max_seconds
        self._bind()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # surfaced to the test through .error
            self.error = e
        finally:
            self.stopped_serving.set()
            self._unbind()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: what is in flight is finished (for at most ``_GRACE_S``), then the
        thread ends."""
        self._stop_t = time.monotonic()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops by itself (limits) or is stopped; True if it stopped."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _done(self) -> bool:
        """Hard limits: request count, lifetime, or the grace period after stop() is over."""
        now = time.monotonic()
        return (self.log.requests >= self.max_requests or now > self._deadline
                or (self._stop.is_set() and now > self._stop_t + _GRACE_S))

    def _sleep(self, s: float) -> None:
        if s > 0:
            self._stop.wait(min(s, max(0.0, self._deadline - time.monotonic())))

    def _should_drop(self) -> bool:
        """Called once per request, after it is logged."""
        if self._drops_left and self.log.requests > self._drop_at:
            self._drops_left -= 1
            self._drop_at = self.log.requests + self.faults.drop_after
            return True
        return False

    def _measure(self, x: np.ndarray) -> Measurement:
        y = np.asarray(self.layer(x), dtype=np.float32)
        m = Measurement(x, y)
        self.log.add_measurement(m)
        return m

    # subclass hooks
    def _bind(self) -> None:
        raise NotImplementedError

    def _unbind(self) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        raise NotImplementedError


def _ieee_block(data: bytes) -> bytes:
    n = str(len(data)).encode()
    return b"#" + str(len(n)).encode() + n + data


class _BadBlock(Exception):
    pass


def _pop_message(buf: bytearray):
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
            raise _BadBlock("invalid or indefinite-length block header")
        if len(buf) < hs + 2 + nd:
            return None
        try:
            n = int(bytes(buf[hs + 2 : hs + 2 + nd]))
        except ValueError:
            if nl == -1:
                return None
            del buf[: nl + 1]
            raise _BadBlock("non-numeric block length") from None
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


class ScpiEmulator(_Emulator):
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
            from pnn.registry import make_system

            layer = make_system(system, n_in, n_out, seed=seed)
        bench = Bench()
        src = cls(system, n_in, n_out, seed=seed, layer=layer, faults=source_faults,
                  role="source", bench=bench, port=ports[0], **kw)
        rcv = cls(system, n_in, n_out, seed=seed, layer=layer, faults=receiver_faults,
                  role="receiver", bench=bench, channels=channels, raw_codes=raw_codes,
                  port=ports[1], **kw)
        return src, rcv

    def preamble(self, channel: int) -> tuple[float, float, float]:
        """``(yinc, yorig, yref)`` of channel ``channel`` (1-based): distinct per channel."""
        return 2.0 ** -(channel + 6), 0.125 * channel - 0.25, 100.0 + 10 * channel

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
                    msg = _pop_message(buf)
                except _BadBlock as e:
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

    _SOURCE_ONLY = {"SOUR:VOLT:LIM", "SOUR:VOLT:LIM?", "OUTP", "OUTPUT", "OUTP?", "OUTPUT?",
                    "WAV:DATA", "INIT"}
    _RECEIVER_ONLY = {"ACQ:POIN", "ACQ:POIN?", "FETC?", "FETCH?", "ARM", "FORM", "FORM:SEP",
                      "WAV:PRE?"}

    def _command(self, text: str, block: bytes | None):
        head, _, arg = text.partition(" ")
        key = head.upper().lstrip(":")
        arg = arg.strip()
        for prefix, code, message in self.faults.errors:
            if key.startswith(prefix.upper().lstrip(":")):
                self.push_error(code, message)
        if (self.role == "source" and key in self._RECEIVER_ONLY) or (
                self.role == "receiver" and key in self._SOURCE_ONLY) or (
                self.role == "both" and key in ("ARM", "FORM", "FORM:SEP", "WAV:PRE?")):
            self.push_error(-113, f"Undefined header;{head} (this emulator is the {self.role})")
            return None
        if key == "ARM":
            self.bench.arm()
            return None
        if key == "FORM":
            val = arg.upper()
            if val in ("ASC", "ASCII"):
                self.ascii = True
            elif val == "REAL":
                self.ascii = False
            else:
                self.push_error(-224, f"Illegal parameter value;{arg!r}")
            return None
        if key == "FORM:SEP":
            seps = {"COMM": ",", "COMMA": ",", "SEM": ";", "SEMICOLON": ";", "SPAC": " ",
                    "SPACE": " "}
            if arg.upper() in seps:
                self.separator = seps[arg.upper()]
            else:
                self.push_error(-224, f"Illegal parameter value;{arg!r}")
            return None
        if key == "WAV:PRE?":
            ch = self._channel(arg)
            if ch is None:
                return b"0"
            yinc, yorig, yref = self.preamble(ch) if self.raw_codes else (1.0, 0.0, 0.0)
            n = (self._capture_size() or 0) // self.channels
            return (f"{0 if not self.ascii else 4},0,{n},1,1e-06,0,0,{yinc!r},{yorig!r},"
                    f"{yref!r}").encode()
        if key == "*IDN?":
            return self.idn.encode()
        if key == "*RST":
            self._reset_state_keep_errors()
            return None
        if key == "*CLS":
            self.error_queue.clear()
            return None
        if key == "*OPC?":
            return b"1"
        if key in ("SYST:ERR?", "SYSTEM:ERROR?", "SYST:ERR:NEXT?"):
            code, msg = self.error_queue.popleft() if self.error_queue else (0, "No error")
            return f'{code},"{msg}"'.encode()
        if key == "CONF:CHAN?":
            return f"{self.n_in},{self.n_out}".encode()
        if key == "SOUR:VOLT:LIM?":
            return f"{self.volt_limit:.6g}".encode()
        if key == "SOUR:VOLT:LIM":
            v = _number(arg)
            if v is None or not 0 < v <= self.layer.spec.hi:
                self.push_error(-222, f"Data out of range;limit must be in (0, "
                                      f"{self.layer.spec.hi}], got {arg!r}")
            else:
                self.volt_limit = v
            return None
        if key == "ACQ:POIN?":
            return str(self.points).encode()
        if key == "ACQ:POIN":
            v = _number(arg)
            if v is None or v != int(v) or not 1 <= v <= 4096:
                self.push_error(-222, f"Data out of range;points must be 1..4096, got {arg!r}")
            else:
                self.points = int(v)
            return None
        if key in ("OUTP", "OUTPUT"):
            val = arg.upper()
            if val in ("ON", "1"):
                self.output_on = True
            elif val in ("OFF", "0"):
                self.output_on = False
            else:
                self.push_error(-224, f"Illegal parameter value;{arg!r}")
            return None
        if key in ("OUTP?", "OUTPUT?"):
            return b"1" if self.output_on else b"0"
        if key == "WAV:DATA":
            self._load_wave(block)
            return None
        if key == "INIT":
            self._init()
            return None
        if key in ("FETC?", "FETCH?"):
            return self._fetch(arg)
        self.push_error(-113, f"Undefined header;{head}")
        return None

    def _reset_state_keep_errors(self) -> None:
        errors = self.error_queue
        self._reset_state()
        self.error_queue = errors

    def _load_wave(self, block: bytes | None) -> None:
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

    def _init(self) -> None:
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

    def _fetch(self, arg: str = ""):
        ch = self._channel(arg) if (arg or self.role == "receiver") else 0
        m = self._captured()
        if m is None or ch is None:
            return b"" if self.ascii else _ieee_block(b"")
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
        return _ieee_block(trace.tobytes()), m


def _reset(conn: socket.socket) -> None:
    """Close ``conn`` with a TCP reset (SO_LINGER on, zero timeout): the peer's next read or
    write fails with ECONNRESET at once, where a normal close (FIN) would leave a pyvisa-py
    client waiting for its read timeout."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    conn.close()


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if np.isfinite(v) else None


class SerialEmulator(_Emulator):
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
        import tty

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
