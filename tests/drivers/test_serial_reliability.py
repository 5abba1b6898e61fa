"""SerialLayer against the serial emulator on a pseudo-terminal (pyserial): faults and limits.

Nothing here depends on how fast the machine is: the host's timeouts are long enough that no stall
reaches them (``patient_profile``), except in the silent-device test, where the timeout is the
thing under test; a frame the device loses is made observable by the emulator's log (an event the
test waits for), not by a clock.
"""

import math
import os
import select
import time

import numpy as np
import pytest
import serial

from pnn.drivers.emulator import Faults, SerialEmulator
from pnn.drivers.errors import (
    ChecksumError,
    InstrumentConnectionError,
    InstrumentError,
    ReplyFormatError,
    SafetyError,
)
from pnn.drivers.serial import MsgType, SerialLayer, encode_frame, pop_frame
from pnn.cost import Ledger
from pnn.layer import LayerSpec


def _emu(layer, **faults):
    # max_seconds only bounds a hang: the emulator stops when the test leaves its block
    return SerialEmulator(layer=layer, n_in=5, n_out=3, faults=Faults(**faults), max_seconds=600)


def _layer(profile, emu, **kw):
    return SerialLayer(profile, emu.port, n_in=5, n_out=3, **kw)


def _measured_once(emu, drives):
    """Every sample measured exactly once and delivered, in order."""
    np.testing.assert_array_equal(np.concatenate([m.drives for m in emu.log.measurements]),
                                  drives)
    np.testing.assert_array_equal(emu.log.delivered_drives(5), drives)


def test_round_trip_is_exact_and_close_sends_safe(fast_layer, patient_profile, drives):
    with _emu(fast_layer) as emu:
        with _layer(patient_profile, emu) as layer:
            ledger = Ledger()
            y = ledger.query(layer, drives)
            assert emu.output_on
            assert layer.idn.startswith("PNN Emulator-Serial")
        assert not emu.output_on
        assert emu.log.commands == ["HELLO", "MEASURE", "SAFE"]
    np.testing.assert_array_equal(y, fast_layer(drives))
    assert y.dtype == np.float32
    assert ledger.physical_queries == layer.stats.samples == len(drives)


def test_missing_port_fails_fast(patient_profile, monkeypatch):
    opened = []
    real = serial.Serial

    def counting_serial(*a, **kw):
        opened.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(serial, "Serial", counting_serial)
    layer = SerialLayer(patient_profile, "/dev/pnn-no-such-port", n_in=5, n_out=3)
    with pytest.raises(InstrumentConnectionError, match="cannot open serial port "
                                                        "'/dev/pnn-no-such-port' at 115200 baud"):
        layer.connect()
    assert opened == [("/dev/pnn-no-such-port",)]  # tried once: no retry loop on a missing port
    assert not layer.connected


def test_silent_device_fails_within_its_timeout(silent_profile, monkeypatch):
    writes = []
    real = serial.Serial

    class CountingSerial(real):
        def write(self, data):
            writes.append(bytes(data))
            return super().write(data)

    monkeypatch.setattr(serial, "Serial", CountingSerial)
    master, slave = os.openpty()  # a port with nobody behind it
    try:
        layer = SerialLayer(silent_profile, os.ttyname(slave), n_in=5, n_out=3)
        t0 = time.monotonic()
        with pytest.raises(InstrumentConnectionError, match=r"no reply to HELLO from .* within "
                                                            r"0.4 s"):
            layer.connect()
        assert time.monotonic() - t0 >= 0.4  # it waited its timeout ...
        assert len(writes) == 1  # ... once: no resend to nobody
        # and what reached the wire is that one HELLO (read until the frame is whole; the pty
        # hands bytes over asynchronously, so wait for them; 120 s only bounds a hang)
        sent = bytearray()
        frames = []
        while not frames:
            r, _, _ = select.select([master], [], [], 120)
            assert r, f"the HELLO frame never reached the pty; got {bytes(sent)!r}"
            sent.extend(os.read(master, 4096))
            while (f := pop_frame(sent, lambda t, n: True)) is not None:
                frames.append(f)
        assert [f.type for f in frames] == [MsgType.HELLO] and frames[0].encode() == writes[0]
    finally:
        os.close(master)
        os.close(slave)


def test_garbage_bytes_are_skipped_by_resync(fast_layer, patient_profile, drives):
    parts = np.split(drives, 4)
    with _emu(fast_layer, garbage_replies=5, garbage_bytes=40) as emu:
        with _layer(patient_profile, emu) as layer:
            outs = [layer(p) for p in parts]
    np.testing.assert_array_equal(np.concatenate(outs), fast_layer(drives))
    assert layer.parse_stats.skipped >= 5 * 40 - 5 * 10  # nearly all junk skipped ...
    assert layer.parse_stats.frames == 6  # ... and every real frame found
    _measured_once(emu, drives)


def test_checksum_error_is_retried_without_measuring_twice(fast_layer, patient_profile, drives):
    # replies 1 (HELLO) and 2 (the first MEASURE) arrive corrupted
    with _emu(fast_layer, corrupt_replies=2) as emu:
        with _layer(patient_profile, emu) as layer:
            y = layer(drives)
    np.testing.assert_array_equal(y, fast_layer(drives))
    assert layer.parse_stats.bad_checksum == 2 and layer.stats.retries == 2
    assert len(emu.log.measurements) == 1  # answered from the device's memory on the resend
    _measured_once(emu, drives)


def test_persistent_corruption_raises_checksum_error(fast_layer, patient_profile, drives):
    with _emu(fast_layer) as emu, _layer(patient_profile, emu) as layer:
        emu.set_faults(Faults(corrupt_replies=4))  # the MEASURE and all three resends
        with pytest.raises(ChecksumError, match=r"MEASURE reply failed its checksum 4 time"):
            layer(drives)
    assert len(emu.log.measurements) == 1


@pytest.mark.parametrize("drop_reply", [False, True])
def test_lost_frame_is_resent_and_measured_once(fast_layer, patient_profile, drives, drop_reply):
    parts = np.split(drives, 3)
    # request 3 is the second MEASURE: swallowed, or executed with its reply lost
    with _emu(fast_layer, drop_after=2, drop_reply=drop_reply) as emu:
        with _layer(patient_profile, emu) as layer:
            read_reply = layer._read_reply
            reads = []

            def read(seq, deadline):
                reads.append(seq)
                if len(reads) == 2:  # the second MEASURE's first read
                    # the loss is an event in the device's log (120 s only bounds a hang) ...
                    assert emu.log.wait_until(lambda log: log.drops == 1, timeout=120)
                    # ... after which no reply can come: the host's timeout would fire; let it
                    # fire now instead of after measure_timeout_s
                    return read_reply(seq, -math.inf)
                return read_reply(seq, deadline)

            layer._read_reply = read
            outs = [layer(p) for p in parts]
    np.testing.assert_array_equal(np.concatenate(outs), fast_layer(drives))
    # (after HELLO) MEASURE, MEASURE (lost), its resend (the same SEQ), MEASURE, SAFE
    assert reads[1] == reads[2] and len(reads) == 5
    assert emu.log.drops == 1 and layer.stats.retries == 1
    _measured_once(emu, drives)
    assert all(m.deliveries == 1 for m in emu.log.measurements)


def _unplugged_write(data):
    raise serial.SerialException("device reports readiness to read but returned no data "
                                 "(device disconnected?)")


def _unplugged_flush():
    import termios

    raise termios.error(5, "Input/output error")  # what tcdrain() raises on a vanished pty


@pytest.mark.parametrize("method,fault,commands", [
    ("write", _unplugged_write, ["HELLO", "HELLO", "MEASURE", "SAFE"]),
    # the request went out before the drain failed: its resend is answered from the memo
    ("flush", _unplugged_flush, ["HELLO", "MEASURE", "HELLO", "MEASURE", "SAFE"]),
])
def test_port_failure_reopens_and_retries(fast_layer, patient_profile, drives, method, fault,
                                          commands):
    with _emu(fast_layer) as emu, _layer(patient_profile, emu) as layer:
        real = layer._ser

        class Unplugged:
            def __getattr__(self, name):
                return fault if name == method else getattr(real, name)

        layer._ser = Unplugged()
        y = layer(drives)
    np.testing.assert_array_equal(y, fast_layer(drives))
    assert layer.stats.connects == 2 and layer.stats.retries == 1
    assert emu.log.commands == commands
    _measured_once(emu, drives)


def test_device_error_frame_raises(fast_layer, patient_profile, drives):
    with _emu(fast_layer, errors=(("MEASURE", -7, "overtemperature"),)) as emu:
        with _layer(patient_profile, emu) as layer:
            with pytest.raises(InstrumentError, match=r"device reported error -7 "
                                                      r"\('overtemperature'\) to MEASURE"):
                layer(drives)
        assert not emu.output_on


class ShortLayer:
    """Claims 3 outputs, returns 2: the device then answers a checksum-valid, too-short frame."""

    spec = LayerSpec(n_in=5, n_out=3, name="short")

    def __call__(self, x):
        return np.zeros((len(x), 2), np.float32)


def test_wrong_length_reply_raises(patient_profile, drives):
    with _emu(ShortLayer()) as emu, _layer(patient_profile, emu) as layer:
        with pytest.raises(ReplyFormatError, match=r"MEASURE reply has 98 payload bytes .*"
                                                   r"expected 2 \+ 4 x batch 12 x n_out 3 = 146"):
            layer(drives)


def test_shape_mismatch_is_refused_at_connect(fast_layer, patient_profile):
    with _emu(fast_layer) as emu:
        with pytest.raises(ReplyFormatError, match="has 5 inputs and 3 outputs, but the layer "
                                                   "was built for n_in=5, n_out=4"):
            SerialLayer(patient_profile, emu.port, n_in=5, n_out=4).connect()


def test_drive_beyond_the_limits_never_reaches_the_device(fast_layer, patient_profile, drives):
    x = drives * 0.5
    x[0, 0] = 0.7
    with _emu(fast_layer) as emu, _layer(patient_profile, emu) as layer:
        layer.safety.restrict(hi=0.6, max_amplitude=0.6)
        with pytest.raises(SafetyError, match=r"1 entries outside \[0, 0.6\]"):
            layer(x)
        assert emu.log.drives == [] and emu.log.commands == ["HELLO"]
        with pytest.raises(ValueError, match="cannot lift"):
            layer.safety.restrict(max_amplitude=1.01)
        layer(np.minimum(x, 0.6))
    assert emu.log.max_abs_drive() <= 0.6 + 1e-6


def test_emulator_stops_by_itself(fast_layer):
    emu = SerialEmulator(layer=fast_layer, n_in=5, n_out=3, max_seconds=0.3).start()
    assert emu.wait(120) and not emu.running and emu.error is None  # 120: a bound against a hang
    assert emu.stopped_serving.is_set()


def test_last_reply_survives_the_request_limit(fast_layer, patient_profile, drives):
    # The emulator answers three requests (HELLO, MEASURE, SAFE) and stops. The host reads
    # SAFE's reply only after the emulator has stopped serving: the reply must still be there,
    # and the pty must stay open until the host closes the port.
    emu = SerialEmulator(layer=fast_layer, n_in=5, n_out=3, max_requests=3,
                         max_seconds=600).start()
    try:
        layer = _layer(patient_profile, emu).connect()
        np.testing.assert_array_equal(layer(drives), fast_layer(drives))
        read_reply = layer._read_reply

        def read_after_the_emulator_stopped(seq, deadline):
            assert emu.stopped_serving.wait(120)  # a bound against a hang
            assert emu.running  # stopped serving, but still holding the pty for us
            return read_reply(seq, deadline + 120)

        layer._read_reply = read_after_the_emulator_stopped
        layer.close()  # raises if SAFE's reply was lost
        assert layer.stats.retries == 0
        assert emu.wait(120) and emu.error is None  # the host closed the port: it is gone
        assert emu.log.commands == ["HELLO", "MEASURE", "SAFE"] and not emu.output_on
    finally:
        emu.stop()


def test_stopped_emulator_does_not_wait_for_a_host_that_never_closes(fast_layer, monkeypatch):
    import pnn.drivers.emulator as emulator

    monkeypatch.setattr(emulator, "_LINGER_S", 0.0)
    emu = SerialEmulator(layer=fast_layer, n_in=5, n_out=3, max_requests=1,
                         max_seconds=600).start()
    host = os.open(emu.port, os.O_RDWR | os.O_NOCTTY)  # opened, and never closed until the end
    try:
        os.write(host, encode_frame(MsgType.SAFE, 1))
        assert emu.stopped_serving.wait(120)
        assert emu.running  # lingering: the host may still read its reply
        emu.stop()
        assert emu.wait(120) and emu.error is None
    finally:
        os.close(host)


# ---------------------------------------------------------------- the device's own limits
def test_the_host_keeps_to_the_stricter_limits_the_device_announces(fast_layer, patient_profile,
                                                                    drives):
    import warnings

    from pnn.drivers.safety import DeviceLimitsWarning

    x = drives * 0.5
    x[3, 2] = 0.9  # the probe's drive: the device accepts at most 0.5
    with SerialEmulator(layer=fast_layer, n_in=5, n_out=3, max_seconds=600, limits=(0.0, 0.5),
                        max_batch=4) as emu:
        with pytest.warns(DeviceLimitsWarning, match=r"the device 'PNN Emulator-Serial .*' is "
                                                     r"stricter than profile .*: drive hi 1 -> "
                                                     r"0.5 \(instrument units\), max_batch 1024 "
                                                     r"-> 4; the host keeps to the device's"):
            layer = _layer(patient_profile, emu).connect()
        assert layer.safety.ceiling.hi == layer.safety.limits.hi == 0.5
        assert layer._batch_limit() == 4
        with pytest.raises(SafetyError, match=r"1 entries outside \[0, 0.5\]"):
            layer(x)
        assert emu.log.drives == []  # nothing reached the device
        with pytest.raises(ValueError, match=r"cannot lift safety limits above .*hi=0.9 > "
                                             r"ceiling hi=0.5"):
            layer.safety.restrict(hi=0.9)
        ok = np.minimum(x, 0.5)
        np.testing.assert_array_equal(layer(ok), fast_layer(ok))
        # said once: a re-open meets the same device and says nothing more
        layer._discard()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(layer(ok[:2]), fast_layer(ok[:2]))
        assert layer.stats.connects == 2
        layer.close()
    assert emu.log.max_abs_drive() <= 0.5
    assert layer.safety.counts.refused_batches == 1


def test_clip_mode_clips_to_the_devices_limit(fast_layer, patient_profile, drives):
    from pnn.drivers.safety import DeviceLimitsWarning, SafetyLimits, SafetyWarning

    guard = SafetyLimits(patient_profile.safety, on_violation="clip")
    with SerialEmulator(layer=fast_layer, n_in=5, n_out=3, max_seconds=600,
                        limits=(0.0, 0.5)) as emu:
        with pytest.warns(DeviceLimitsWarning, match="drive hi 1 -> 0.5"):
            layer = _layer(patient_profile, emu, safety=guard).connect()
        with layer, pytest.warns(SafetyWarning, match=r"clipped .* into \[0, 0.5\]"):
            y = layer(drives)
    np.testing.assert_array_equal(y, fast_layer(np.minimum(drives, 0.5)))
    assert emu.log.max_abs_drive() <= 0.5


@pytest.mark.parametrize("limits, error, match", [
    ((0.5, 0.2), ReplyFormatError, r"announced drives in \[0.5, 0.2\] and max_batch 1024 in "
                                    r"its HELLO reply: not a valid range"),
    ((2.0, 3.0), InstrumentError, r"accepts \[2.0, 3.0\], which leaves no value within the "
                                  r"ceiling \[0.0, 1.0\].*must overlap"),
])
def test_a_device_range_that_is_none_or_outside_the_profile_is_refused(
        fast_layer, patient_profile, limits, error, match):
    with SerialEmulator(layer=fast_layer, n_in=5, n_out=3, max_seconds=600,
                        limits=limits) as emu:
        layer = _layer(patient_profile, emu)
        with pytest.raises(error, match=match):
            layer.connect()
        assert not layer.connected and layer.safety.ceiling == patient_profile.safety
