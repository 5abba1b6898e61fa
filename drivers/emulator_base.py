"""What every virtual instrument of :mod:`pnn.drivers.emulator` shares, whatever its wire.

* :class:`Faults`: the faults to inject; :class:`EmulatorLog`: everything received, every
  drive as received and every :class:`Measurement` with how often it was delivered;
  :class:`Bench`: what a two-address pair (a virtual AWG and a virtual scope) shares.
* :class:`VirtualInstrument`: the physics behind the instrument, the background thread and
  its limits (``max_requests``, ``max_seconds``, the grace period after
  :meth:`~VirtualInstrument.stop`), and the bookkeeping of the faults. A subclass supplies the
  wire: ``_bind``, ``_serve`` and ``_unbind``.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

__all__ = ["Faults", "EmulatorLog", "Measurement", "Bench", "VirtualInstrument"]

# after stop(), what is in flight is finished for at most this long
_GRACE_S = 0.5


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



class VirtualInstrument:
    """Thread, limits and fault bookkeeping shared by both emulators."""

    def __init__(self, system: str, n_in: int, n_out: int, *, seed: int, layer, faults: Faults,
                 max_requests: int, max_seconds: float, name: str):
        """``layer`` is the physics (a :class:`~pnn.layer.PhysicalLayer` named ``system``);
        nothing binds before :meth:`start`."""
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
