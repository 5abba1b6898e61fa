"""VisaLayer against the SCPI emulator over real sockets (pyvisa-py): faults, limits, safety.

Nothing here depends on how fast the machine is: the emulator drops a link with a TCP reset, which
the host notices at once, and every profile's timeouts are long enough that no stall reaches them,
except the one read timeout of the silent-instrument test, which is the thing under test.
"""

import socket
import time

import numpy as np
import pytest

from pnn.drivers.emulator import Faults, ScpiEmulator
from pnn.drivers.errors import (
    InstrumentConnectionError,
    InstrumentError,
    ReplyFormatError,
    SafetyError,
)
from pnn.drivers.safety import Limits, SafetyLimits, SafetyWarning
from pnn.drivers.visa import VisaLayer
from pnn.cost import Ledger

# requests the emulator profile makes at connect: *IDN?, 5 setup steps each with SYST:ERR?,
# CONF:CHAN?; and per batch: WAV:DATA, SYST:ERR?, OUTP ON, INIT, *OPC?, SYST:ERR?, FETC?,
# SYST:ERR?, OUTP OFF, SYST:ERR?
CONNECT_REQUESTS = 12
BATCH_REQUESTS = 10


def _emu(layer, **faults):
    # max_seconds only bounds a hang: the emulator stops when the test leaves its block
    return ScpiEmulator(layer=layer, n_in=5, n_out=3, faults=Faults(**faults), max_seconds=600)


def _layer(profile, emu, **kw):
    return VisaLayer(profile, emu.resource, n_in=5, n_out=3, **kw)


def test_round_trip_is_exact_and_counted_once(fast_layer, patient_profile, drives):
    with _emu(fast_layer) as emu, _layer(patient_profile, emu) as layer:
        ledger = Ledger()
        y = ledger.query(layer, drives)
        assert layer.idn.startswith("PNN,Emulator-SCPI")
    np.testing.assert_array_equal(y, fast_layer(drives))
    assert ledger.physical_queries == len(drives) == layer.stats.samples
    # + OUTP OFF and SYST:ERR? at close
    assert emu.log.requests == CONNECT_REQUESTS + BATCH_REQUESTS + 2
    assert emu.log.commands[-2:] == ["OUTP OFF", "SYST:ERR?"] and not emu.output_on


class CountingRM:
    """A pyvisa-py resource manager that records every open_resource call."""

    def __init__(self):
        import pyvisa

        self.rm = pyvisa.ResourceManager("@py")
        self.opened = []

    def open_resource(self, name, **kw):
        self.opened.append(name)
        return self.rm.open_resource(name, **kw)

    def close(self):
        self.rm.close()


def test_unreachable_instrument_fails_fast(patient_profile, dead_port):
    rm = CountingRM()
    resource = f"TCPIP::127.0.0.1::{dead_port}::SOCKET"
    layer = VisaLayer(patient_profile, resource, n_in=5, n_out=3, resource_manager=rm)
    try:
        with pytest.raises(InstrumentConnectionError, match="'TCPIP::127.0.0.1::.*' is "
                                                            r"unreachable \(ConnectionRefusedError"):
            layer.connect()
    finally:
        rm.close()
    assert rm.opened == [resource]  # refused, and not retried
    assert not layer.connected


def test_silent_instrument_fails_within_its_timeout(fast_layer, silent_profile):
    rm = CountingRM()
    with _emu(fast_layer, delay_s=600.0) as emu:  # every reply is 10 minutes away
        layer = VisaLayer(silent_profile, emu.resource, n_in=5, n_out=3, resource_manager=rm)
        try:
            t0 = time.monotonic()
            with pytest.raises(InstrumentConnectionError,
                               match=r"did not answer '\*IDN\?' within 300 ms"):
                layer.connect()
            assert time.monotonic() - t0 >= 0.3  # it waited its read timeout ...
        finally:
            rm.close()
        # (the emulator logs the request in its own thread: wait for that event; 120 s only
        # bounds a hang)
        assert emu.log.wait_until(lambda log: log.requests >= 1, timeout=120)
    # ... once, on one session: no retry
    assert rm.opened == [emu.resource] and not layer.connected
    assert emu.log.commands == ["*IDN?"] and emu.log.connections == 1


@pytest.mark.parametrize("at, drop_reply, retries", [
    (0, False, 1),   # WAV:DATA never arrives
    (3, False, 1),   # INIT never arrives
    (3, True, 1),    # INIT measured, then the link drops before *OPC?
    (6, True, 1),    # FETC? executed, its reply lost
    (7, False, 0),   # SYST:ERR? after a good fetch lost: re-opened, the data is kept
    (7, True, 0),    # ... its reply lost: the same (never measured or delivered twice)
    (8, False, 0),   # OUTP OFF after a good fetch lost: re-opened, the data is kept
    (9, True, 0),    # SYST:ERR? after OUTP OFF, its reply lost: the same
])
def test_dropped_connection_mid_batch_is_retried_once(fast_layer, patient_profile, drives, at,
                                                      drop_reply, retries):
    # The emulator resets the connection (TCP RST): the host's next read or write fails at once,
    # so the retry is caused by the drop alone; no timeout can fire anywhere (patient_profile),
    # and the counts below are exact however slow the machine is.
    parts = np.split(drives, [4, 8])  # three batches; the link drops during the second
    drop_after = CONNECT_REQUESTS + BATCH_REQUESTS + at
    with _emu(fast_layer, drop_after=drop_after, drop_reply=drop_reply) as emu:
        with _layer(patient_profile, emu) as layer:
            ledger = Ledger()
            outs = [ledger.query(layer, p) for p in parts]
    np.testing.assert_array_equal(np.concatenate(outs), fast_layer(drives))
    assert emu.log.drops == 1 and emu.log.connections == 2  # first, re-open, nothing else
    assert layer.stats.retries == retries and layer.stats.connects == 2
    # the caller and the ledger got every sample exactly once ...
    assert ledger.physical_queries == layer.stats.samples == len(drives)
    # ... and so did the instrument's read-out: each delivered measurement once, in order
    np.testing.assert_array_equal(emu.log.delivered_drives(5), drives)
    assert all(m.deliveries <= 1 for m in emu.log.measurements)
    lost = [m for m in emu.log.measurements if not m.deliveries]
    assert len(lost) == (1 if drop_reply and at in (3, 6) else 0)


def test_lost_instrument_fails_after_bounded_retries(fast_layer, patient_profile, drives):
    emu = _emu(fast_layer).start()
    try:
        layer = _layer(patient_profile, emu).connect()
        layer(drives)
        # the instrument goes away for good: its connection is reset and its port refuses, both
        # noticed at once (no timeout involved)
        emu.stop()
        assert emu.wait(120)  # a bound against a hang
        with pytest.raises(InstrumentConnectionError, match=r"failed 3 time\(s\) in a row"):
            layer(drives)
        # bounded: the batch was tried max_retries + 1 = 3 times, then given up
        assert layer.stats.retries == 2 and layer.stats.connects == 1
        assert layer.stats.samples == len(drives)
        with pytest.raises(InstrumentError, match="could not confirm the safe state"):
            layer.close()
    finally:
        emu.stop()


def test_wrong_length_reply_raises(fast_layer, patient_profile, drives):
    with _emu(fast_layer, short_trace=True) as emu, _layer(patient_profile, emu) as layer:
        with pytest.raises(ReplyFormatError, match=r"'FETC\?' returned 143 values, expected "
                                                   r"batch 12 x n_out 3 x points_per_feature "
                                                   r"4 = 144"):
            layer(drives)
    assert layer.stats.samples == 0


@pytest.mark.parametrize("on, match", [
    ("FETC", "reply to 'FETC\\?' is not an IEEE 488.2 binary block"),
    ("SYST:ERR", r"the reply to 'SYST:ERR\?' is not ASCII text"),
])
def test_garbage_reply_raises(fast_layer, patient_profile, drives, on, match):
    with _emu(fast_layer) as emu, _layer(patient_profile, emu) as layer:
        emu.set_faults(Faults(garbage_replies=1, garbage_on=on))  # after a clean connect
        with pytest.raises(ReplyFormatError, match=match):
            layer(drives)
        # the suspect session was dropped; the next batch starts clean and is exact
        np.testing.assert_array_equal(layer(drives), fast_layer(drives))
        assert layer.stats.connects == 2


def test_instrument_error_raises_and_output_is_made_safe(fast_layer, patient_profile, drives):
    with _emu(fast_layer, errors=(("INIT", -241, "Hardware missing"),)) as emu:
        layer = _layer(patient_profile, emu)
        with pytest.raises(InstrumentError, match=r"after 'OUTP ON; INIT': -241,\"Hardware "
                                                  r"missing\""):
            with layer:
                layer(drives)
        assert not emu.output_on
        # at once, then by close()
        assert emu.log.commands[-3:] == ["OUTP OFF", "OUTP OFF", "SYST:ERR?"]


def test_drive_beyond_the_limits_never_reaches_the_instrument(fast_layer, patient_profile, drives):
    x = drives * 0.5
    x[3, 2] = 0.9
    with _emu(fast_layer) as emu, _layer(patient_profile, emu) as layer:
        layer.safety.restrict(hi=0.5, max_amplitude=0.5)
        with pytest.raises(SafetyError, match=r"1 entries outside \[0, 0.5\]"):
            layer(x)  # a single entry out of limits refuses the whole batch
        assert emu.log.drives == [] and emu.log.measurements == []
        ok = np.minimum(x, 0.5)
        np.testing.assert_array_equal(layer(ok), fast_layer(ok))
        with pytest.raises(ValueError, match="cannot lift safety limits above"):
            layer.safety.restrict(hi=1.5)
    assert emu.log.max_abs_drive() <= 0.5 + 1e-6
    assert layer.safety.counts.refused_batches == 1


def test_clip_mode_sends_only_clipped_values(fast_layer, patient_profile, drives):
    guard = SafetyLimits(patient_profile.safety, on_violation="clip")
    guard.restrict(hi=0.5, max_amplitude=0.5)
    with _emu(fast_layer) as emu, _layer(patient_profile, emu, safety=guard) as layer:
        with pytest.warns(SafetyWarning, match="clipped"):
            y = layer(drives)
    np.testing.assert_array_equal(y, fast_layer(np.minimum(drives, 0.5)))
    assert emu.log.max_abs_drive() <= 0.5 + 1e-6
    assert guard.counts.clipped == int((drives > 0.5).sum())


def test_looser_safety_than_the_profile_is_refused(patient_profile):
    loose = SafetyLimits(Limits(0.0, 2.0, 2.0))
    with pytest.raises(ValueError, match="looser than the profile's"):
        VisaLayer(patient_profile, "TCPIP::127.0.0.1::1::SOCKET", n_in=5, n_out=3, safety=loose)


def test_rate_limit_is_enforced(fast_layer, patient_profile, drives):
    with _emu(fast_layer) as emu, _layer(patient_profile, emu) as layer:
        layer.safety.restrict(max_rate_hz=100.0)
        t0 = time.monotonic()
        for _ in range(3):
            layer(drives[:5])  # 5 samples at 100/s: 50 ms a batch
        assert time.monotonic() - t0 >= 0.1


def test_emulator_stops_by_itself_and_binds_loopback_only(fast_layer):
    emu = ScpiEmulator(layer=fast_layer, n_in=5, n_out=3, max_requests=2,
                       max_seconds=600).start()  # it stops on the request limit, not a clock
    assert emu.address == ("127.0.0.1", emu.port)
    with socket.create_connection(("127.0.0.1", emu.port), timeout=120) as s:
        s.sendall(b"*IDN?\n*IDN?\n*IDN?\n")
        replies = b""
        while chunk := s.recv(4096):  # two replies, then the emulator closes the connection
            replies += chunk
    assert replies == (emu.idn + "\n").encode() * 2
    assert emu.wait(120) and not emu.running  # 120: a bound against a hang
    assert emu.log.requests == 2
    emu = ScpiEmulator(layer=fast_layer, n_in=5, n_out=3, max_seconds=0.3).start()
    assert emu.wait(120)
    assert emu.error is None
