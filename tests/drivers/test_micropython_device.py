"""The MicroPython reference device (drivers/firmware/micropython/pnn_device.py), run under CPython:
the very file that goes on the board frames, checks and dispatches, with a simulated board behind
its hardware interface, on a pseudo-terminal that ``SerialLayer`` opens like a USB serial port.

Every wait ends on an event (a reply frame, a byte on the pty, the stop pipe); timeouts only
bound a hang.
"""

import importlib.util
import json
import os
import select
import struct
import threading
import tty
from pathlib import Path

import numpy as np
import pytest

from pnn.drivers import serial as proto
from pnn.drivers.safety import DeviceLimitsWarning
from pnn.drivers.serial import MsgType, SerialLayer, encode_frame, pop_frame
from pnn.registry import make_system

DEVICE_FILE = (Path(proto.__file__).resolve().parent / "firmware" / "micropython"
               / "pnn_device.py")
HANG = 120.0  # seconds: only a bound against a hang


def _load_device_module():
    spec = importlib.util.spec_from_file_location("pnn_micropython_device", DEVICE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mp = _load_device_module()


class SimBoard(mp.Board):
    """The hardware interface played by a simulated physics (any PhysicalLayer): a batch of
    drives goes to ``physics`` in one call, exactly as a trainer would call it directly."""

    def __init__(self, physics, max_batch=1024, ident="pnn MicroPython device (simulated)"):
        self.physics = physics
        self.n_in, self.n_out = physics.spec.n_in, physics.spec.n_out
        self.lo, self.hi = float(physics.spec.lo), float(physics.spec.hi)
        self.max_batch, self.ident = max_batch, ident
        self.calls = []  # ("measure", batch) and ("safe",), in order

    def measure(self, drives):
        self.calls.append(("measure", len(drives)))
        return np.asarray(self.physics(np.asarray(drives, np.float32))).tolist()

    def safe(self):
        self.calls.append(("safe",))

    @property
    def measured(self) -> int:
        return sum(c[1] for c in self.calls if c[0] == "measure")


class PtyDevice:
    """``pnn_device.serve`` in a thread on the device end of a pseudo-terminal; ``port`` is the
    host's end. Stopping is an event (a byte on a pipe), never a timer."""

    def __init__(self, board):
        self.board = board
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)  # the slave stays open: the master never hangs up
        self._stop_r, self._stop_w = os.pipe()
        self.device = mp.Device(board, self._write)
        self.error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._buf = bytearray()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def _read(self) -> bytes:
        r, _, _ = select.select([self.master, self._stop_r], [], [])
        if self._stop_r in r:
            return b""
        try:
            return os.read(self.master, 4096)
        except OSError:
            return b""

    def _run(self) -> None:
        try:
            mp.serve(self.device, self._read)
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        os.write(self._stop_w, b"x")
        self._thread.join(HANG)
        assert not self._thread.is_alive(), "the device loop did not stop (hang guard)"
        for fd in (self.master, self.slave, self._stop_r, self._stop_w):
            os.close(fd)
        if self.error is not None and exc[0] is None:
            raise self.error

    # the host's side, by hand: raw frames in, the next reply frame out
    def send(self, data: bytes) -> None:
        os.write(self.slave, data)

    def reply(self) -> proto.Frame:
        while (f := pop_frame(self._buf, lambda t, n: True)) is None:
            r, _, _ = select.select([self.slave], [], [], HANG)
            assert r, "the device did not answer (hang guard)"
            self._buf.extend(os.read(self.slave, 4096))
        return f


def _tanh(n_in=3, n_out=2):
    from tests.drivers.conftest import TanhLayer

    return TanhLayer(n_in, n_out)


def test_the_device_file_speaks_the_hosts_protocol():
    assert mp.START == proto.START
    for name in ("HELLO", "MEASURE", "SAFE", "HELLO_OK", "MEASURE_OK", "SAFE_OK", "ERROR"):
        assert getattr(mp, name) == MsgType[name].value, name
    assert (mp.MAX_ERROR_TEXT, mp.MAX_ID_TEXT) == (proto.MAX_ERROR_TEXT, proto.MAX_ID_TEXT)
    assert mp.crc16(b"123456789") == proto.crc16(b"123456789") == 0x29B1
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 300):
        payload = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert mp.frame(0x90, n % 256, payload) == encode_frame(0x90, n % 256, payload)
    # what the board runs uses nothing CPython-only at import: no numpy, no pnn
    text = DEVICE_FILE.read_text()
    assert "import numpy" not in text and "from pnn" not in text and "import pnn" not in text


def test_a_measurement_through_the_device_equals_the_physics_called_directly(patient_profile):
    physics = make_system("acoustic", 7, 6, seed=0)
    x = np.random.default_rng(3).random((16, 7)).astype(np.float32)
    board = SimBoard(physics)
    with PtyDevice(board) as dev:
        with SerialLayer(patient_profile, dev.port, n_in=7, n_out=6) as layer:
            assert layer.idn == "pnn MicroPython device (simulated)"
            y = layer(x)
    np.testing.assert_array_equal(y, np.asarray(physics(x)))  # bit for bit
    assert layer.stats.samples == 16 and layer.stats.retries == 0
    # one batch measured (then outputs safe), and close() sent SAFE
    assert board.calls == [("measure", 16), ("safe",), ("safe",)]


def test_the_device_chunks_to_its_max_batch_and_refuses_before_driving(patient_profile):
    from pnn.drivers.errors import InstrumentError

    physics = _tanh()
    board = SimBoard(physics, max_batch=4)
    x = np.random.default_rng(1).random((10, 3)).astype(np.float32)
    with PtyDevice(board) as dev:
        with pytest.warns(DeviceLimitsWarning, match=r"max_batch 1024 -> 4"):
            layer = SerialLayer(patient_profile, dev.port, n_in=3, n_out=2).connect()
        with layer:
            assert layer._batch_limit() == 4  # the device's max_batch: 10 drives in 3 frames
            y = layer(x)
            # a host whose own ceiling is wider than the device's [lo, hi]: the device refuses
            board.hi = 0.5
            with pytest.raises(InstrumentError, match=r"error -3 .*drive outside \[0, 0.5\]"):
                layer(np.array([[0.1, 0.7, 0.2]], np.float32))
    np.testing.assert_array_equal(y, np.concatenate([physics(x[:4]), physics(x[4:8]),
                                                     physics(x[8:])]))
    assert [c for c in board.calls if c[0] == "measure"] == [("measure", 4), ("measure", 4),
                                                             ("measure", 2)]
    assert board.measured == 10  # the refused drive never reached the board


def test_the_device_resyncs_refuses_bad_frames_and_answers_resends_from_memory():
    physics = _tanh()
    board = SimBoard(physics, max_batch=4)
    with PtyDevice(board) as dev:
        dev.send(bytes([0xA5, 0x90, 0x00, 0xFF]) + b"noise\xa5\x01")  # START bytes in the noise
        dev.send(encode_frame(MsgType.HELLO, 3, struct.pack("<I", 42)))
        hello = dev.reply()
        assert (hello.type, hello.seq) == (MsgType.HELLO_OK, 3)
        n_in, n_out, max_batch, lo, hi = struct.unpack_from("<HHHff", hello.payload)
        assert (n_in, n_out, max_batch, lo, hi) == (3, 2, 4, 0.0, 1.0)
        x = np.array([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]], np.float32)
        request = encode_frame(MsgType.MEASURE, 4, struct.pack("<H", 2) + x.tobytes())
        dev.send(request)
        first = dev.reply()
        dev.send(encode_frame(MsgType.HELLO, 5, struct.pack("<I", 42)))  # same session: memo kept
        assert dev.reply().type == MsgType.HELLO_OK
        dev.send(request)  # the host's resend after a lost reply: the same bytes
        second = dev.reply()
        assert first == second and first.type == MsgType.MEASURE_OK
        np.testing.assert_array_equal(np.frombuffer(first.payload, "<f4", offset=2).reshape(2, 2),
                                      physics(x))
        # a new session forgets: the same bytes are measured again
        dev.send(encode_frame(MsgType.HELLO, 6, struct.pack("<I", 43)))
        assert dev.reply().type == MsgType.HELLO_OK
        dev.send(request)
        assert dev.reply() == first
        # a corrupted frame is skipped, not answered
        bad = bytearray(encode_frame(MsgType.SAFE, 7))
        bad[-1] ^= 0xFF
        dev.send(bytes(bad) + encode_frame(MsgType.SAFE, 8))
        safe = dev.reply()
        assert (safe.type, safe.seq) == (MsgType.SAFE_OK, 8)
        errors = {}
        for seq, payload in [
            (9, struct.pack("<H", 2) + x[:1].tobytes()),           # batch 2, one sample's bytes
            # 5 > max_batch (a frame with 5 samples' bytes would be longer than the device reads)
            (10, struct.pack("<H", 5) + np.zeros((4, 3), np.float32).tobytes()),
            (11, struct.pack("<H", 1) + np.array([0.1, np.nan, 0.2], np.float32).tobytes()),
            (12, struct.pack("<H", 1) + np.array([0.1, 1.5, 0.2], np.float32).tobytes()),
        ]:
            dev.send(encode_frame(MsgType.MEASURE, seq, payload))
            f = dev.reply()
            assert (f.type, f.seq) == (MsgType.ERROR, seq)
            errors[seq] = struct.unpack_from("<h", f.payload)[0]
        assert errors == {9: -1, 10: -2, 11: -3, 12: -3}
        # a frame longer than max_batch allows is implausible: skipped as noise, never answered;
        # the next good frame is
        dev.send(encode_frame(MsgType.MEASURE, 13, struct.pack("<H", 5)
                              + np.zeros((5, 3), np.float32).tobytes())
                 + encode_frame(MsgType.SAFE, 14))
        f = dev.reply()
        assert (f.type, f.seq) == (MsgType.SAFE_OK, 14)
    # measured twice (once per session), never for a resend or a refused frame
    assert board.measured == 4
    # after each measurement, SAFE 8 (not SAFE 7) and SAFE 14
    assert board.calls.count(("safe",)) == 4


def test_a_failing_board_is_an_error_reply_with_outputs_safe(patient_profile):
    from pnn.drivers.errors import InstrumentError

    class Broken(SimBoard):
        def measure(self, drives):
            self.calls.append(("measure", len(drives)))
            raise RuntimeError("ADC timeout")

    board = Broken(_tanh())
    with PtyDevice(board) as dev:
        with SerialLayer(patient_profile, dev.port, n_in=3, n_out=2) as layer:
            with pytest.raises(InstrumentError, match=r"error -4 .*ADC timeout"):
                layer(np.full((1, 3), 0.5, np.float32))
    assert board.calls[:2] == [("measure", 1), ("safe",)]


TRAIN = ["train", "--method", "phyll", "--classes", "iy,uw,aa", "--hidden", "6", "--n-meas", "6",
         "--epochs", "1", "--batch-size", "16", "--seed", "0"]


@pytest.mark.slow
def test_training_through_the_device_equals_training_on_the_physics(tmp_path,
                                                                     patient_profile_file):
    from pnn.cli import main
    from tests.drivers.test_hardware_cli import _block_shape

    n_in, n_out = _block_shape()
    # the board runs PhyLL's host path; so does this simulator run (bit-for-bit equal)
    assert main([*TRAIN, "--system", "acoustic", "--set", "device_epoch=off",
                 "--out", str(tmp_path / "sim.json")]) == 0
    # build_layers seeds block 0 of seed 0 with 0: the board runs that very simulator
    board = SimBoard(make_system("acoustic", n_in, n_out, seed=0))
    with PtyDevice(board) as dev:
        assert main([*TRAIN, "--instrument", f"serial:{dev.port}",
                     "--profile", str(patient_profile_file),
                     "--out", str(tmp_path / "hw.json")]) == 0
    sim = json.loads((tmp_path / "sim.json").read_text())
    hw = json.loads((tmp_path / "hw.json").read_text())
    assert hw["params_sha256"] == sim["params_sha256"]
    assert hw["test_accuracy"] == sim["test_accuracy"] > 0.5
    assert [h["loss"] for h in hw["history"]] == [h["loss"] for h in sim["history"]]
    (inst,) = hw["instruments"]
    assert inst["idn"] == "pnn MicroPython device (simulated)"
    assert hw["cost"]["physical_queries"] == sim["cost"]["physical_queries"] == board.measured
    assert board.calls[-1] == ("safe",)


# --------------------------------------------------------------------------- DACs and limits
class FakeMachine:
    """``machine.DAC``/``ADC``/``Pin`` for :class:`DacAdcBoard` under CPython: every DAC write
    is recorded, so a test sees each code the board would have put on a pin."""

    def __init__(self):
        self.writes = []
        machine = self

        class Pin:
            def __init__(self, n):
                self.n = n

        class DAC:
            def __init__(self, pin):
                self.pin = pin.n

            def write(self, code):
                machine.writes.append((self.pin, code))

        class ADC:
            def __init__(self, pin):
                self.pin = pin.n

            def read_u16(self):
                return 32768

        self.Pin, self.DAC, self.ADC = Pin, DAC, ADC


@pytest.fixture
def machine(monkeypatch):
    import sys
    import time

    fake = FakeMachine()
    monkeypatch.setitem(sys.modules, "machine", fake)
    monkeypatch.setattr(time, "sleep_us", lambda us: None, raising=False)  # MicroPython's
    return fake


class Replies:
    """The device's write(): collects its reply frames."""

    def __init__(self):
        self.buf = bytearray()

    def __call__(self, data):
        self.buf.extend(data)

    def next(self):
        f = pop_frame(self.buf, lambda t, n: True)
        assert f is not None, "the device sent no reply"
        return f


def _measure_frame(seq, x):
    x = np.asarray(x, "<f4")
    return encode_frame(MsgType.MEASURE, seq, struct.pack("<H", len(x)) + x.tobytes())


@pytest.mark.parametrize("kw, match", [
    (dict(lo=-1.0), r"drive range \[-1.0, 1.0\]: a DAC drives 0 \(code 0\) to hi"),
    (dict(lo=0.5, hi=0.5), r"drive range \[0.5, 0.5\]"),
    (dict(hi=float("nan")), r"drive range \[0.0, nan\]"),
    (dict(dac_bits=0), r"dac_bits = 0: expected an integer in 1..16"),
    (dict(dac_bits=17), r"dac_bits = 17"),
])
def test_a_dac_board_refuses_a_range_its_dacs_cannot_drive(machine, kw, match):
    with pytest.raises(ValueError, match=match):
        mp.DacAdcBoard(dac_pins=(25, 26), adc_pins=(34,), **kw)
    assert machine.writes == []


def test_dac_codes_always_lie_in_the_dacs_range(machine):
    board = mp.DacAdcBoard(dac_pins=(25, 26), adc_pins=(34,), dac_bits=8)
    assert machine.writes == [(25, 0), (26, 0)]  # safe at construction
    out = Replies()
    dev = mp.Device(board, out)
    dev.feed(_measure_frame(1, [[0.0, 1.0], [0.5, 0.25]]))
    assert out.next().type == MsgType.MEASURE_OK
    assert machine.writes[2:] == [(25, 0), (26, 255), (25, 128), (26, 64), (25, 0), (26, 0)]
    # a range changed after construction (what the probe did: lo = -1) cannot reach a pin: the
    # device's range check passes -1, the board refuses its code, every output goes safe
    board.lo = -1.0
    del machine.writes[:]
    dev.feed(_measure_frame(2, [[0.5, 0.5], [-1.0, 0.5]]))
    f = out.next()
    assert (f.type, struct.unpack_from("<h", f.payload)[0]) == (MsgType.ERROR, -4)
    assert b"drive -1.0 outside the DAC's range" in f.payload
    assert machine.writes == [(25, 0), (26, 0)]  # no drive of the batch was written, only safe
    assert all(0 <= code <= 255 for _, code in machine.writes)
    for v in (-1e-9, 1.0 + 1e-9, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"outside the DAC's range \[0.0, 1.0\]"):
            board.dac_code(v)


@pytest.mark.parametrize("field, value, match", [
    ("lo", float("nan"), r"board drive range \[nan, 1.0\]"),
    ("hi", -1.0, r"board drive range \[0.0, -1.0\]: expected finite lo < hi"),
    ("max_batch", 0, r"board.max_batch = 0: expected an integer in 1..65535"),
    ("n_in", 70000, r"board.n_in = 70000"),
])
def test_the_device_refuses_a_board_it_cannot_describe(field, value, match):
    board = SimBoard(_tanh())
    setattr(board, field, value)
    with pytest.raises(ValueError, match=match):
        mp.Device(board, Replies())


def test_hello_announces_the_range_as_float32_toward_the_inside():
    board = SimBoard(_tanh())
    board.lo, board.hi = 0.1, 0.7  # float32: 0.100000001 > 0.1 (fine), 0.699999988 < 0.7 (fine)
    out = Replies()
    dev = mp.Device(board, out)
    for lo, hi in ((0.1, 0.7), (0.7, 1.1), (-0.7, -0.1), (0.0, 1e-46)):
        board.lo, board.hi = lo, hi
        dev.feed(encode_frame(MsgType.HELLO, 1, struct.pack("<I", 1)))
        a_lo, a_hi = struct.unpack_from("<ff", out.next().payload, 6)
        # inside, and the nearest float32 values that are
        assert lo <= a_lo and a_hi <= hi, (lo, hi, a_lo, a_hi)
        f_lo, f_hi = np.float32(a_lo), np.float32(a_hi)
        assert float(np.nextafter(f_lo, np.float32(-np.inf))) < lo
        assert float(np.nextafter(f_hi, np.float32(np.inf))) > hi


def test_the_host_keeps_to_the_range_the_device_announces(patient_profile):
    from pnn.drivers.errors import SafetyError

    board = SimBoard(_tanh(), max_batch=4)
    board.hi = 0.5  # stricter than the profile's ceiling (1.0)
    with PtyDevice(board) as dev:
        with pytest.warns(DeviceLimitsWarning, match=r"drive hi 1 -> 0.5 \(instrument units\), "
                                                     r"max_batch 1024 -> 4"):
            layer = SerialLayer(patient_profile, dev.port, n_in=3, n_out=2).connect()
        with layer:
            assert layer.safety.ceiling.hi == 0.5
            with pytest.raises(SafetyError, match=r"1 entries outside \[0, 0.5\]"):
                layer(np.array([[0.1, 0.7, 0.2]], np.float32))  # refused on the host
            y = layer(np.array([[0.1, 0.5, 0.2]], np.float32))
    np.testing.assert_array_equal(y, board.physics(np.array([[0.1, 0.5, 0.2]], np.float32)))
    assert board.measured == 1  # the refused drive never reached the device
