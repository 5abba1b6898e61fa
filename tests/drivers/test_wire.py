"""The bytes on the wire hold the safety promise: encoding never wraps, profiles that would are
refused at load, and a profile that slipped past the loader is refused at send time."""

import dataclasses
import math

import numpy as np
import pytest

from pnn.drivers.emulator import SerialEmulator
from pnn.drivers.errors import SafetyError
from pnn.drivers.profile import load_profile
from pnn.drivers.safety import DeviceLimitsWarning, Limits, SafetyLimits, SafetyWarning
from pnn.drivers.serial import SerialLayer
from pnn.drivers.visa import VisaLayer
from pnn.drivers.wire import DATATYPES, check_ceiling_fits, encode, wire_range

from tests.drivers.test_visa_sim import ProtocolResource, ProtocolRM

INT16_PROFILE = """
[layer]
n_in = 2
n_out = 1

[safety]
lo = -{hi}
hi = {hi}
max_amplitude = {hi}

[visa]
resource = "X"

[visa.commands]
idn = ""
error = ""
wait = ""
drive = "WAV:DATA "
fetch = "FETC?"
safe = ["OUTP OFF"]

[visa.drive]
datatype = "{datatype}"
scale = {scale}

[visa.readout]
points_per_feature = 1
"""


def _write(tmp_path, name, **kw):
    f = tmp_path / name
    f.write_text(INT16_PROFILE.format(**kw))
    return f


# ---------------------------------------------------------------------------- encode
def test_wire_ranges():
    assert wire_range("h") == (-32768, 32767)
    assert wire_range("B") == (0, 255)
    assert wire_range("Q") == (0, 2**64 - 1)
    assert wire_range("f")[1] == pytest.approx(3.4028235e38)


def test_integers_are_rounded_and_refused_when_they_would_wrap():
    out = encode([-32768.0, -0.4, 32766.6, 32767.0], "h", name="awg", where="[visa.drive]")
    assert out.dtype == np.int16 and out.tolist() == [-32768, 0, 32767, 32767]
    for bad in (32767.5, 36000.0, -32769.0):  # 32767.5 rounds (ties to even) to 32768
        with pytest.raises(SafetyError, match=r"awg: refusing to send 1 value\(s\) that the wire "
                                              r"datatype 'h' \(int16\) cannot carry \(it holds "
                                              r"\[-32768, 32767\]"):
            encode([0.0, bad], "h", name="awg", where="[visa.drive]")
    with pytest.raises(SafetyError, match=r"'B' \(uint8\).*got values in \[-1, -1\].*fix "
                                          r"\[visa.drive\]"):
        encode([-1.0, 3.0], "B", name="awg", where="[visa.drive]")


def test_64_bit_integers_are_checked_exactly():
    # float(2**63 - 1) == 2**63: a naive comparison with the type's max would let 2**63 through
    assert encode([2.0**62, -(2.0**63)], "q", name="x", where="w").tolist() == [2**62, -(2**63)]
    with pytest.raises(SafetyError, match="'q' \\(int64\\)"):
        encode([2.0**63], "q", name="x", where="w")
    with pytest.raises(SafetyError, match="'Q' \\(uint64\\)"):
        encode([2.0**64], "Q", name="x", where="w")


def test_floats_overflowing_float32_are_refused():
    out = encode([0.1, -1e38, 0.0], "f", name="mcu", where="[serial] scale/offset")
    assert out.dtype == np.float32
    with pytest.raises(SafetyError, match=r"mcu: .*'f' \(float32\)"):
        encode([1e39], "f", name="mcu", where="[serial] scale/offset")
    assert encode([1e300], "d", name="x", where="w")[0] == 1e300


def _largest_float_at_most(n: int) -> float:
    """The largest float64 not above the integer ``n`` (float(2**63 - 1) is 2**63, too large)."""
    f = float(n)
    return f if int(f) <= n else float(np.nextafter(f, -np.inf))


def _smallest_float_below(n: int) -> float:
    """The largest float64 below the integer ``n`` that is not ``n`` itself once rounded."""
    f = float(n - 1)
    return f if int(f) < n else float(np.nextafter(float(n), -np.inf))


@pytest.mark.parametrize("code", DATATYPES)
def test_every_datatype_carries_its_limits_exactly_and_refuses_beyond(code):
    """For each wire datatype: the values at its limits are encoded, and decoded from the bytes
    that leave the host, unchanged; one step beyond either limit (and inf, nan) is refused, and a
    ceiling reaching beyond is refused by check_ceiling_fits."""
    w_lo, w_hi = wire_range(code)
    dt = np.dtype(code)
    if dt.kind in "iu":
        at = [float(w_lo), _largest_float_at_most(w_hi)]
        beyond = [_smallest_float_below(w_lo), float(w_hi + 1)]
    else:
        at = [w_lo, w_hi, 0.0]
        beyond = [-np.inf, np.inf] if code == "d" else [2 * w_lo, 2 * w_hi]
    out = encode(at, code, name="awg", where="[visa.drive]")
    assert out.dtype == dt
    wire = np.frombuffer(out.astype(dt.newbyteorder("<")).tobytes(), dt.newbyteorder("<"))
    if dt.kind in "iu":
        assert [int(v) for v in wire] == [int(a) for a in at]  # exact, even for 64 bits
    else:
        assert wire.astype(np.float64).tolist() == at
    assert check_ceiling_fits(at[0], at[1], code) is None
    for bad in (*beyond, np.nan):
        with pytest.raises(SafetyError, match=rf"awg: refusing to send 1 value\(s\) that the "
                                              rf"wire datatype '{code}' \({dt.name}\) cannot "
                                              rf"carry.*Nothing was sent"):
            encode([at[1], bad, at[0]], code, name="awg", where="[visa.drive]")
    assert check_ceiling_fits(beyond[0], at[1], code) is not None
    assert check_ceiling_fits(at[0], beyond[1], code) is not None


def test_check_ceiling_fits():
    assert check_ceiling_fits(-32768, 32767, "h") is None
    assert "do not fit the wire datatype 'h' (int16)" in check_ceiling_fits(0, 40000, "h")
    assert check_ceiling_fits(0, 32767.4, "h") is None  # rounds to 32767
    assert check_ceiling_fits(0, 32767.5, "h") is not None  # rounds to 32768
    assert check_ceiling_fits(-1, 1, "H") is not None
    assert check_ceiling_fits(0, 1e39, "f") is not None
    assert check_ceiling_fits(0, 1e39, "d") is None


# ---------------------------------------------------------------------------- at profile load
def test_int16_profile_whose_ceiling_would_wrap_is_refused_at_load(tmp_path):
    f = _write(tmp_path, "awg16.toml", hi=40000, datatype="h", scale=40000)
    with pytest.raises(ValueError, match=r"awg16.toml: the \[safety\] ceiling \(lo = -40000.0, "
                                         r"hi = 40000.0, max_amplitude = 40000.0\) lets values "
                                         r"in \[-40000, 40000\] through to visa.drive.datatype "
                                         r"= 'h' .*carries only \[-32768, 32767\].*would wrap"):
        load_profile(f)
    with pytest.raises(ValueError, match=r"visa.drive.datatype = 'H' .*uint16"):
        load_profile(_write(tmp_path, "awg16u.toml", hi=1000, datatype="H", scale=1000))


def test_int16_profile_within_the_wire_loads_and_sends_exact_codes(tmp_path):
    prof = load_profile(_write(tmp_path, "ok.toml", hi=32767, datatype="h", scale=32767))
    x = np.array([[0.9, 1.0]])  # 0.9 * 32767 = 29490.3 -> 29490
    transcript = [
        ("write_binary", ("WAV:DATA ", (29490, 32767), "h", False), None),
        ("query_binary", ("FETC?", "f", False), [0.5]),
        ("write", "OUTP OFF", None),
    ]
    res = ProtocolResource(transcript)
    with VisaLayer(prof, resource_manager=ProtocolRM(res)) as layer:
        np.testing.assert_array_equal(layer(x), [[0.5]])
    assert res.transcript == []


def test_serial_ceiling_beyond_float32_is_refused_at_load(tmp_path):
    f = tmp_path / "mcu.toml"
    f.write_text("""
[safety]
lo = 0.0
hi = 1e39
max_amplitude = 1e39

[serial]
port = "/dev/null"
""")
    with pytest.raises(ValueError, match=r"mcu.toml: the \[safety\] ceiling .* through to the "
                                         r"serial protocol's float32 drives"):
        load_profile(f)


# ---------------------------------------------------------------------------- at send time
def _bypassing_the_loader(prof, **safety):
    """A profile edited in code (dataclasses.replace skips the loader's checks)."""
    return dataclasses.replace(prof, safety=Limits(**safety))


def test_visa_refuses_at_send_time_what_would_wrap(tmp_path):
    prof = load_profile(_write(tmp_path, "ok.toml", hi=32767, datatype="h", scale=32767))
    prof = _bypassing_the_loader(prof, lo=-40000.0, hi=40000.0, max_amplitude=40000.0)
    prof = dataclasses.replace(prof, visa=dataclasses.replace(
        prof.visa, drive=dataclasses.replace(prof.visa.drive, scale=40000.0)))
    res = ProtocolResource([("write", "OUTP OFF", None)])  # close() only: nothing else is sent
    with VisaLayer(prof, resource_manager=ProtocolRM(res)) as layer:
        with pytest.raises(SafetyError, match=r"refusing to send 1 value\(s\) that the wire "
                                              r"datatype 'h' \(int16\) cannot carry .*got values "
                                              r"in \[36000, 36000\].*Nothing was sent; fix "
                                              r"\[visa.drive\]"):
            layer(np.array([[0.9, 0.5]]))
        assert layer.stats.samples == 0 and layer.safety.counts.refused_batches == 1
    assert res.transcript == []


def test_serial_refuses_at_send_time_what_would_overflow_float32(fast_layer, patient_profile,
                                                                 drives):
    prof = _bypassing_the_loader(patient_profile, lo=0.0, hi=1e39, max_amplitude=1e39)
    prof = dataclasses.replace(prof, serial=dataclasses.replace(prof.serial, scale=1e39))
    with SerialEmulator(layer=fast_layer, n_in=5, n_out=3, max_seconds=600) as emu:
        with pytest.warns(DeviceLimitsWarning, match=r"drive hi 1e\+39 -> 1 "):
            layer = SerialLayer(prof, emu.port, n_in=5, n_out=3).connect()
        with layer:
            # the device's announced range (a float32, as every serial drive) bounds the guard
            # now, so the guard refuses first; what passes it always fits float32
            with pytest.raises(SafetyError, match=r"refusing to send .*outside \[0, 1\]"):
                layer(drives)
            assert emu.log.commands == ["HELLO"] and emu.log.drives == []
    assert math.isfinite(emu.log.max_abs_drive())


# ---------------------------------------------------------------- rounding toward the inside
def test_encode_rounds_toward_the_inside_of_the_limits():
    # rounding to nearest would send 101 (and -101) under a ceiling of 100.7
    out = encode([100.6, 100.7, -100.7, 0.4, 99.2], "h", name="awg", where="[visa.drive]",
                 bounds=(-100.7, 100.7))
    assert out.tolist() == [100, 100, -100, 0, 99]
    assert encode([0.4, 0.6], "B", name="awg", where="w", bounds=(0.3, 5.0)).tolist() == [1, 1]
    # a float32 drive at a limit that float32 cannot hold is sent as the float32 just inside
    assert float(np.float32(0.1)) > 0.1 and float(np.float32(0.7)) < 0.7
    f = encode([0.1, 0.05], "f", name="mcu", where="w", bounds=(0.0, 0.1))
    assert f.tolist() == [np.nextafter(np.float32(0.1), np.float32(0)), np.float32(0.05)]
    f = encode([0.7], "f", name="mcu", where="w", bounds=(0.7, 1.0))
    assert f[0] == np.nextafter(np.float32(0.7), np.float32(1))
    for code in DATATYPES:  # never outside, for any datatype, at either limit
        lo, hi = 0.3, 100.7
        got = encode([lo, hi, lo - 1e-7, hi + 1e-5], code, name="x", where="w", bounds=(lo, hi))
        assert np.all(got.astype(np.float64) >= lo) and np.all(got.astype(np.float64) <= hi)
    # without bounds: to nearest, as before
    assert encode([100.7], "h", name="awg", where="w").tolist() == [101]


def test_encode_refuses_limits_without_a_wire_value_and_values_beyond_them():
    with pytest.raises(SafetyError, match=r"awg: refusing to send: the safety limits \[100.2, "
                                          r"100.7\] hold no value of the wire datatype 'h' "
                                          r"\(int16\)"):
        encode([100.5], "h", name="awg", where="[visa.drive]", bounds=(100.2, 100.7))
    with pytest.raises(SafetyError, match=r"refusing to send 1 value\(s\) outside the safety "
                                          r"limits \[0, 1\] \(got values in \[1.5, 1.5\]\)"):
        encode([0.5, 1.5], "f", name="x", where="w", bounds=(0.0, 1.0))


def test_a_ceiling_without_an_integer_is_refused_at_load(tmp_path):
    f = tmp_path / "narrow.toml"
    text = FRACTIONAL_PROFILE.format(mode="raise")
    for old, new in (("lo = -1.0", "lo = 0.0"), ("lo = -100.7", "lo = 100.2"),
                     ("scale = 100.7", "scale = 0.5\noffset = 100.2")):
        text = text.replace(old, new)
    f.write_text(text)  # drives 0..1 map to 100.2..100.7: inside the ceiling, but no integer
    with pytest.raises(ValueError, match=r"narrow.toml: the \[safety\] ceiling lets values in "
                                         r"\[100.2, 100.7\] through, which hold no value of "
                                         r"visa.drive.datatype = 'h' \(int16\): every drive "
                                         r"would be refused"):
        load_profile(f)


FRACTIONAL_PROFILE = """
[layer]
n_in = 2
n_out = 1
lo = -1.0
hi = 1.0

[safety]
lo = -100.7
hi = 100.7
max_amplitude = 100.7
on_violation = "{mode}"

[visa]
resource = "X"

[visa.commands]
idn = ""
error = ""
wait = ""
drive = "WAV:DATA "
fetch = "FETC?"
safe = ["OUTP OFF"]

[visa.drive]
datatype = "h"
scale = 100.7
"""


@pytest.mark.parametrize("mode", ["raise", "clip"])
def test_an_integer_wire_never_exceeds_a_fractional_ceiling(tmp_path, mode):
    """hi = 100.7 on an int16 wire: a drive at the ceiling is sent as 100 (never 101) and is not
    refused in either mode; with the active limits clipped to 50.7, 50 is sent (never 51)."""
    f = tmp_path / f"frac_{mode}.toml"
    f.write_text(FRACTIONAL_PROFILE.format(mode=mode))
    prof = load_profile(f)
    transcript = [
        ("write_binary", ("WAV:DATA ", (100, -100, 100, 0), "h", False), None),
        ("query_binary", ("FETC?", "f", False), [0.5, 0.25]),
        ("write", "OUTP OFF", None),
    ]
    if mode == "clip":
        transcript[2:2] = [
            ("write_binary", ("WAV:DATA ", (50, -100), "h", False), None),
            ("query_binary", ("FETC?", "f", False), [0.75]),
        ]
    res = ProtocolResource(transcript)
    with VisaLayer(prof, resource_manager=ProtocolRM(res)) as layer:
        y = layer(np.array([[1.0, -1.0], [0.996, 0.0]]))  # 100.7, -100.7, 100.297, 0
        np.testing.assert_array_equal(y, [[0.5], [0.25]])
        assert layer.safety.counts.refused_batches == layer.safety.counts.clipped == 0
        if mode == "clip":
            layer.safety.restrict(hi=50.7)
            with pytest.warns(SafetyWarning, match=r"clipped 1 drive entries into "
                                                   r"\[-100.7, 50.7\]"):
                np.testing.assert_array_equal(layer(np.array([[1.0, -1.0]])), [[0.75]])
    assert res.transcript == []


def test_a_float32_wire_never_exceeds_a_limit_float32_cannot_hold(fast_layer, patient_profile,
                                                                  drives):
    guard = SafetyLimits(patient_profile.safety, on_violation="clip")
    guard.restrict(hi=0.1, max_amplitude=0.1)  # float32(0.1) = 0.10000000149 > 0.1
    with SerialEmulator(layer=fast_layer, n_in=5, n_out=3, max_seconds=600) as emu:
        with SerialLayer(patient_profile, emu.port, n_in=5, n_out=3, safety=guard) as layer:
            with pytest.warns(SafetyWarning, match="clipped"):
                layer(drives)
    sent = np.concatenate([d.ravel() for d in emu.log.drives]).astype(np.float64)
    assert sent.max() <= 0.1 and sent.max() == float(np.nextafter(np.float32(0.1), np.float32(0)))
