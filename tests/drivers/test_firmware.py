"""The example firmware (drivers/firmware/): its constants equal the Python protocol's, and, where
a C++ compiler is installed, its protocol core compiled for this machine plays the device on a
pseudo-terminal against SerialLayer.

Every wait ends on an event (a reply frame, the process's exit); timeouts only bound a hang.
"""

import os
import re
import select
import shutil
import struct
import subprocess
import tty
from pathlib import Path

import numpy as np
import pytest

from pnn.drivers import serial as proto
from pnn.drivers.errors import ReplyFormatError, SafetyError
from pnn.drivers.safety import DeviceLimitsWarning
from pnn.drivers.serial import MsgType, SerialLayer, encode_frame, pop_frame

FIRMWARE = Path(proto.__file__).resolve().parent / "firmware" / "pnn_serial_device"
HEADER = FIRMWARE / "pnn_protocol.h"
HANG = 120.0  # seconds: only a bound against a hang


def _constants() -> dict:
    text = HEADER.read_text()
    found = re.findall(r"const\s+(?:u?int\d+_t|size_t)\s+(\w+)\s*=\s*(-?(?:0x[0-9A-Fa-f]+|\d+))\s*;",
                       text)
    return {name: int(value, 0) for name, value in found}


def test_firmware_constants_match_the_python_protocol():
    c = _constants()
    assert c["START"] == proto.START == 0xA5
    for name in ("HELLO", "MEASURE", "SAFE", "HELLO_OK", "MEASURE_OK", "SAFE_OK", "ERROR"):
        assert c[name] == MsgType[name].value, name
    assert c["HEAD"] == struct.calcsize("<BBBH")
    assert c["MAX_ERROR_TEXT"] == proto.MAX_ERROR_TEXT and c["MAX_ID_TEXT"] == proto.MAX_ID_TEXT
    # the header's CRC, bit by bit with its own constants, equals the host's
    def crc(data: bytes) -> int:
        r = c["CRC_INIT"]
        for byte in data:
            r ^= byte << 8
            for _ in range(8):
                r = ((r << 1) ^ c["CRC_POLY"]) & 0xFFFF if r & 0x8000 else (r << 1) & 0xFFFF
        return r

    assert crc(b"123456789") == proto.crc16(b"123456789") == 0x29B1
    frame = encode_frame(MsgType.MEASURE, 9, bytes(range(40)))
    assert crc(frame[1:-2]) == struct.unpack(">H", frame[-2:])[0]
    # error codes as the serial emulator uses them (payload, batch, range)
    assert (c["E_PAYLOAD"], c["E_BATCH"], c["E_RANGE"]) == (-1, -2, -3)


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++ or clang++) on PATH: install one to run the example "
                    "firmware against SerialLayer")
    exe = tmp_path_factory.mktemp("firmware") / "pnn_firmware_host"
    subprocess.run([cxx, "-std=c++11", "-O1", "-Wall", "-Werror", f"-I{FIRMWARE}",
                    str(Path(__file__).with_name("firmware_host.cpp")), "-o", str(exe), "-lm"],
                   check=True, timeout=HANG)
    return exe


class Board:
    """The compiled firmware behind a pseudo-terminal: ``port`` is the host's end."""

    def __init__(self, exe, *args: str):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self.proc = subprocess.Popen([str(exe), *args], stdin=self.master, stdout=self.master,
                                     stderr=subprocess.PIPE)
        self._slave = slave  # kept open so that the master never sees a hang-up
        self.buf = bytearray()

    def calls(self) -> list[str]:
        """Every drive/safe call the firmware made (read after it has exited)."""
        self.proc.kill()
        self.proc.wait(HANG)
        return self.proc.stderr.read().decode().split()

    def send(self, data: bytes) -> None:
        os.write(self._slave, data)

    def reply(self) -> proto.Frame:
        """The next frame the firmware sends (on the host's end of the pty)."""
        while (f := pop_frame(self.buf, lambda t, n: True)) is None:
            r, _, _ = select.select([self._slave], [], [], HANG)
            assert r, "the firmware did not answer (hang guard)"
            self.buf.extend(os.read(self._slave, 4096))
        return f

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(HANG)
        self.proc.stderr.close()
        os.close(self._slave)
        os.close(self.master)


@pytest.fixture
def board(firmware):
    b = Board(firmware)
    yield b
    b.close()


def _physics(x):
    w = np.array([[0.5 * (i + 1) - 0.3 * j for j in range(2)] for i in range(3)], np.float32)
    return np.tanh(np.asarray(x, np.float32) @ w)


def test_serial_layer_trains_through_the_firmware(board, patient_profile):
    x = np.random.default_rng(0).random((20, 3)).astype(np.float32)
    with pytest.warns(DeviceLimitsWarning, match=r"max_batch 1024 -> 8"):
        layer = SerialLayer(patient_profile, board.port, n_in=3, n_out=2).connect()
    with layer:
        assert layer.idn == "pnn firmware host"
        assert layer._batch_limit() == 8  # the device's PNN_MAX_BATCH: 20 drives in 3 frames
        y = layer(x)
        layer.safety.restrict(hi=0.5, max_amplitude=0.5)
        with pytest.raises(SafetyError, match=r"1 entries outside \[0, 0.5\]"):
            layer(np.array([[0.1, 0.7, 0.2]]))  # refused on the host: never reaches the board
    np.testing.assert_allclose(y, _physics(x), rtol=1e-6, atol=1e-6)
    assert layer.stats.samples == 20 and layer.stats.retries == 0
    calls = board.calls()
    assert calls.count("drive") == 20  # each sample driven once
    assert calls[-1] == "safe"  # close() sent SAFE


def test_firmware_refuses_an_out_of_range_drive_before_driving(board):
    x = struct.pack("<H", 1) + struct.pack("<3f", 0.2, 1.5, 0.3)
    board.send(encode_frame(MsgType.MEASURE, 1, x))
    f = board.reply()
    assert (f.type, f.seq) == (MsgType.ERROR, 1)
    assert struct.unpack_from("<h", f.payload)[0] == -3
    assert b"outside" in f.payload
    assert "drive" not in board.calls()


def test_firmware_skips_garbage_and_answers_a_resend_from_memory(board):
    board.send(bytes([0xA5, 0x90, 0x00, 0xFF]) + b"noise\xa5\x01")  # START bytes in the noise
    board.send(encode_frame(MsgType.HELLO, 3, struct.pack("<I", 42)))
    hello = board.reply()
    assert (hello.type, hello.seq) == (MsgType.HELLO_OK, 3)
    assert struct.unpack_from("<HHH", hello.payload) == (3, 2, 8)
    x = np.array([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]], np.float32)
    request = encode_frame(MsgType.MEASURE, 4, struct.pack("<H", 2) + x.astype("<f4").tobytes())
    board.send(request)
    first = board.reply()
    board.send(encode_frame(MsgType.HELLO, 5, struct.pack("<I", 42)))  # same session: keeps memo
    assert board.reply().type == MsgType.HELLO_OK
    board.send(request)  # the host's resend after a lost reply: the same bytes
    second = board.reply()
    assert first == second and first.type == MsgType.MEASURE_OK
    y = np.frombuffer(first.payload, "<f4", offset=2).reshape(2, 2)
    np.testing.assert_allclose(y, _physics(x), rtol=1e-6, atol=1e-6)
    # a corrupted frame is skipped, not answered
    bad = bytearray(encode_frame(MsgType.SAFE, 6))
    bad[-1] ^= 0xFF
    board.send(bytes(bad) + encode_frame(MsgType.SAFE, 7))
    assert board.reply().seq == 7
    assert board.calls().count("drive") == 2  # measured once, answered twice


def test_dac_code_always_lies_in_the_dacs_range(firmware):
    values = ["-1", "-0.0", "nan", "-nan", "inf", "-inf", "0", "0.5", "1", "1.0000001", "2",
              "1e30"]
    out = subprocess.run([str(firmware), "dac", "1.0", "255", *values], capture_output=True,
                         text=True, check=True, timeout=HANG).stdout.split()
    assert [int(c) for c in out] == [0, 0, 0, 0, 255, 0, 0, 128, 255, 255, 255, 255]
    for full in ("0", "-1", "nan"):  # a full scale that is no full scale drives nothing
        out = subprocess.run([str(firmware), "dac", full, "4095", "0.5", "1"],
                             capture_output=True, text=True, check=True, timeout=HANG).stdout
        assert out.split() == ["0", "0"]


@pytest.fixture
def nan_board(firmware):
    b = Board(firmware, "nan", "1")
    yield b
    b.close()


def test_a_nan_range_refuses_every_drive_and_the_host_refuses_the_device(nan_board,
                                                                         patient_profile):
    # a NaN bound made `v < lo || v > hi` false for every v: the drive went through
    for seq, v in enumerate((0.5, 0.0, 1.0), start=1):
        nan_board.send(encode_frame(MsgType.MEASURE, seq, struct.pack("<H3f", 1, v, v, v)))
        f = nan_board.reply()
        assert (f.type, struct.unpack_from("<h", f.payload)[0]) == (MsgType.ERROR, -3)
    with pytest.raises(ReplyFormatError, match=r"the device 'pnn firmware host' announced "
                                               r"drives in \[nan, 1\].*not a valid range"):
        SerialLayer(patient_profile, nan_board.port, n_in=3, n_out=2).connect()
    assert "drive" not in nan_board.calls()


@pytest.fixture
def half_board(firmware):
    b = Board(firmware, "0", "0.5")
    yield b
    b.close()


def test_the_host_keeps_to_the_firmwares_range(half_board, patient_profile):
    with pytest.warns(DeviceLimitsWarning, match=r"drive hi 1 -> 0.5"):
        layer = SerialLayer(patient_profile, half_board.port, n_in=3, n_out=2).connect()
    with layer:
        with pytest.raises(SafetyError, match=r"1 entries outside \[0, 0.5\]"):
            layer(np.array([[0.1, 0.9, 0.2]]))  # the probe's 0.9 under the device's 0.5
        with pytest.raises(ValueError, match="cannot lift safety limits above"):
            layer.safety.restrict(hi=0.9)
        y = layer(np.array([[0.1, 0.5, 0.2]]))
    np.testing.assert_allclose(y, _physics([[0.1, 0.5, 0.2]]), rtol=1e-6, atol=1e-6)
    assert half_board.calls().count("drive") == 1
