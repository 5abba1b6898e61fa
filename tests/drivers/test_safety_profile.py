"""Instrument profiles (TOML, validated at load) and the safety limits on everything sent out."""

import math
import time
import tomllib

import numpy as np
import pytest

from pnn.drivers.errors import SafetyError
from pnn.drivers.profile import PROFILE_DIR, Profile, load_profile
from pnn.drivers.safety import Limits, SafetyLimits, SafetyWarning


def _emulator_dict():
    with open(PROFILE_DIR / "emulator.toml", "rb") as f:
        return tomllib.load(f)


# ---------------------------------------------------------------------------- profiles
def test_shipped_emulator_profile_loads_by_name_and_path():
    p = load_profile("emulator")
    assert p.name == "pnn emulator"
    assert p.safety == Limits(0.0, 1.0, 1.0, math.inf)
    assert p.visa.commands.drive == "WAV:DATA "
    assert p.visa.readout.points_per_feature == 4
    assert p.serial.baudrate == 115200
    assert load_profile(PROFILE_DIR / "emulator.toml") == p


def test_unknown_profile_name_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="emulator"):
        load_profile("no-such-profile")


def test_unknown_key_is_refused_with_its_path():
    d = _emulator_dict()
    d["visa"]["timout_ms"] = 10
    with pytest.raises(ValueError, match=r"unknown key\(s\) visa.timout_ms"):
        Profile.from_dict(d, source="typo.toml")


def test_wrong_type_is_refused():
    d = _emulator_dict()
    d["visa"]["timeout_ms"] = "fast"
    with pytest.raises(ValueError, match="visa.timeout_ms must be int"):
        Profile.from_dict(d)


def test_unknown_template_placeholder_is_refused():
    d = _emulator_dict()
    d["visa"]["commands"]["setup"] = ["SOUR:VOLT {amplitude}"]
    with pytest.raises(ValueError, match=r"unknown placeholder \{amplitude\}"):
        Profile.from_dict(d)


def test_missing_safety_ceiling_is_refused():
    d = _emulator_dict()
    del d["safety"]["max_amplitude"]
    with pytest.raises(ValueError, match=r"\[safety\] must set max_amplitude"):
        Profile.from_dict(d)


def test_layer_range_beyond_ceiling_is_refused():
    d = _emulator_dict()
    d["visa"]["drive"]["scale"] = 2.0  # drive 1.0 -> 2 V > 1 V ceiling
    with pytest.raises(ValueError, match="outside the safety ceiling"):
        Profile.from_dict(d)


def test_bad_toml_names_the_file(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("[visa\n")
    with pytest.raises(ValueError, match="broken.toml: not valid TOML"):
        load_profile(f)


def test_reduce_none_needs_one_point():
    d = _emulator_dict()
    d["visa"]["readout"]["reduce"] = "none"
    with pytest.raises(ValueError, match="points_per_feature = 1"):
        Profile.from_dict(d)


def _toml_with(tmp_path, table: str, key: str, value: str):
    """The shipped emulator profile with one value replaced, as a file."""
    text = (PROFILE_DIR / "emulator.toml").read_text()
    lines, section, done = [], None, False
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip()
        if section == f"[{table}]" and line.split("=")[0].strip() == key:
            line, done = f"{key} = {value}", True
        lines.append(line)
    assert done, (table, key)
    f = tmp_path / "edited.toml"
    f.write_text("\n".join(lines) + "\n")
    return f


@pytest.mark.parametrize("table, key, value, match", [
    ("visa", "max_batch", "1e13", r"visa.max_batch must be int, got 10000000000000.0 \(float\); "
                                  r"write a whole number"),
    ("visa", "max_batch", "1024.0", r"visa.max_batch must be int, got 1024.0 \(float\)"),
    ("visa", "max_batch", "10000000000000", r"visa.max_batch must be an integer in \[1, "
                                            r"1000000\], got 10000000000000; drive vectors "
                                            r"per transfer"),
    ("visa", "max_batch", "0", r"visa.max_batch must be an integer in \[1, 1000000\], got 0"),
    ("visa", "max_retries", "-1", r"visa.max_retries must be an integer in \[0, 100\]"),
    ("visa", "timeout_ms", "true", r"visa.timeout_ms must be int, got True \(bool\)"),
    ("visa", "measure_timeout_ms", "100000000000", r"visa.measure_timeout_ms must be an integer "
                                                   r"in \[1, 86400000\]"),
    ("visa.readout", "points_per_feature", "1e13", r"visa.readout.points_per_feature must be "
                                                   r"int"),
    ("serial", "max_batch", "20000", r"serial.max_batch must be an integer in \[1, 16383\]"),
    ("serial", "timeout_s", "inf", r"serial.timeout_s must be a number in \(0, 86400\], got inf"),
    ("serial", "timeout_s", "nan", r"serial.timeout_s must be a number in \(0, 86400\], got nan"),
    ("serial", "resync_gap_s", "0.0", r"serial.resync_gap_s must be a number in \(0, 3600\]"),
    ("serial", "baudrate", "115200.5", r"serial.baudrate must be int"),
    ("serial", "offset", "inf", r"serial.offset must be finite, got inf"),
    ("visa.readout", "scale", "nan", r"visa.readout.scale must be finite, got nan"),
])
def test_absurd_numbers_are_refused_naming_file_and_key(tmp_path, table, key, value, match):
    with pytest.raises(ValueError, match=r"edited.toml: " + match):
        load_profile(_toml_with(tmp_path, table, key, value))


def test_sensible_numbers_at_the_bounds_load(tmp_path):
    assert load_profile(_toml_with(tmp_path, "visa", "max_batch", "1000000")).visa.max_batch \
        == 1_000_000
    assert load_profile(_toml_with(tmp_path, "serial", "max_batch", "16383")).serial.max_batch \
        == 16383


# ---------------------------------------------------------------------------- safety
CEILING = Limits(lo=-1.0, hi=2.0, max_amplitude=1.5, max_rate_hz=1000.0)


def test_limits_validate():
    with pytest.raises(ValueError, match="lo < hi"):
        Limits(1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="max_amplitude must be > 0"):
        Limits(0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="max_rate_hz"):
        Limits(0.0, 1.0, 1.0, max_rate_hz=-1.0)
    assert CEILING.allowed == (-1.0, 1.5)


def test_inside_limits_passes_unchanged():
    s = SafetyLimits(CEILING)
    v = np.array([[-1.0, 0.0, 1.5]])
    np.testing.assert_array_equal(s.check(v), v)
    assert s.counts.violations == 0


def test_outside_is_refused_and_counted():
    s = SafetyLimits(CEILING, name="awg")
    with pytest.raises(SafetyError, match=r"awg: refusing .* 2 entries outside \[-1, 1.5\]"):
        s.check(np.array([0.0, 1.6, -1.2]))
    assert isinstance(SafetyError("x"), ValueError)
    assert (s.counts.violations, s.counts.refused_batches, s.counts.clipped) == (2, 1, 0)


def test_clip_mode_clips_warns_and_counts():
    s = SafetyLimits(CEILING, on_violation="clip")
    with pytest.warns(SafetyWarning, match="clipped 2 drive entries"):
        out = s.check(np.array([0.0, 1.6, -1.2]))
    np.testing.assert_array_equal(out, [0.0, 1.5, -1.0])
    assert (s.counts.violations, s.counts.clipped, s.counts.refused_batches) == (2, 2, 0)


def test_float32_rounding_of_a_limit_is_not_a_violation():
    s = SafetyLimits(Limits(0.0, 0.6, 0.6))
    s.check(np.float32([0.6]))  # 0.6000000238 as float64
    with pytest.raises(SafetyError):
        s.check(np.array([0.6 + 1e-5]))


def test_non_finite_is_always_refused():
    s = SafetyLimits(CEILING, on_violation="clip")
    with pytest.raises(SafetyError, match="non-finite"):
        s.check(np.array([0.0, np.nan]))


def test_trainer_can_tighten_and_relax_within_the_ceiling():
    s = SafetyLimits(CEILING)
    s.restrict(hi=0.5, max_amplitude=0.5)
    with pytest.raises(SafetyError):
        s.check(np.array([0.6]))
    s.restrict(hi=2.0, max_amplitude=1.5)  # back up to the ceiling: allowed
    assert s.limits == CEILING


@pytest.mark.parametrize("kw", [dict(hi=2.5), dict(lo=-3.0), dict(max_amplitude=2.0),
                                dict(max_rate_hz=5000.0), dict(max_rate_hz=math.inf)])
def test_ceiling_cannot_be_lifted(kw):
    s = SafetyLimits(CEILING)
    with pytest.raises(ValueError, match="cannot lift safety limits above the instrument"):
        s.restrict(**kw)
    assert s.limits == CEILING
    assert s.ceiling == CEILING


def test_rate_limit_paces_samples():
    s = SafetyLimits(Limits(0.0, 1.0, 1.0, max_rate_hz=200.0))
    t0 = time.monotonic()
    waits = [s.pace(10) for _ in range(4)]  # 10 samples at 200/s: 50 ms a batch
    elapsed = time.monotonic() - t0
    # the 4th batch may not start before 3 slots of 50 ms have passed, however fast the calls;
    # a slow caller waits less (never more than the schedule asks)
    assert elapsed >= 0.15 - 1e-6  # (clock rounding)
    assert waits[0] == 0.0 and all(0.0 <= w <= 0.05 * i + 1e-9 for i, w in enumerate(waits))
    assert s.counts.throttled_s == pytest.approx(sum(waits))


def test_unknown_violation_mode():
    with pytest.raises(ValueError, match="on_violation must be 'raise' or 'clip'"):
        SafetyLimits(CEILING, on_violation="ignore")


def test_the_ceiling_can_be_tightened_never_lifted():
    s = SafetyLimits(CEILING)
    s.restrict(lo=-1.0, hi=1.0, max_amplitude=1.0)
    assert s.tighten_ceiling(lo=-5.0, hi=0.5, source="the device") == ["hi 2 -> 0.5"]
    assert (s.ceiling.lo, s.ceiling.hi) == (CEILING.lo, 0.5)
    assert (s.limits.lo, s.limits.hi) == (-1.0, 0.5)  # the active limits follow
    assert s.tighten_ceiling(hi=0.9) == []  # looser: nothing changes
    with pytest.raises(ValueError, match="cannot lift safety limits above"):
        s.restrict(hi=0.9)
    with pytest.raises(ValueError, match=r"the device accepts \[0.6, 0.9\], which leaves no "
                                         r"value within the ceiling"):
        s.tighten_ceiling(lo=0.6, hi=0.9, source="the device")
    with pytest.raises(ValueError, match=r"gives hi = nan, not a finite number"):
        s.tighten_ceiling(hi=math.nan)
    assert (s.ceiling.lo, s.ceiling.hi) == (CEILING.lo, 0.5)  # refused: unchanged


def _drivers() -> dict:
    """An unconnected instance of every instrument driver, by class (no I/O happens here)."""
    from pnn.drivers.serial import SerialLayer
    from pnn.drivers.visa import VisaLayer

    return {VisaLayer: lambda: VisaLayer("emulator", "TCPIP::127.0.0.1::1::SOCKET", n_in=2,
                                         n_out=2),
            SerialLayer: lambda: SerialLayer("emulator", "/dev/null", n_in=2, n_out=2)}


def test_every_driver_class_is_checked():
    from pnn.drivers.base import InstrumentLayer

    classes, todo = set(), [InstrumentLayer]
    while todo:
        for sub in todo.pop().__subclasses__():
            classes.add(sub)
            todo.append(sub)
    shipped = {c.__name__ for c in classes if c.__module__.startswith("pnn.drivers")}
    assert shipped <= {c.__name__ for c in _drivers()}, "a driver this file does not check"


@pytest.mark.parametrize("kind", ["VisaLayer", "SerialLayer"])
def test_a_drivers_guard_and_profile_cannot_be_replaced(kind):
    (make,) = [m for c, m in _drivers().items() if c.__name__ == kind]
    layer = make()
    guard = layer.safety
    looser = SafetyLimits(Limits(0.0, 5.0, 5.0))
    with pytest.raises(AttributeError, match=r"layer.safety cannot be replaced .*tighten it with "
                                             r"layer.safety.restrict"):
        layer.safety = looser
    with pytest.raises(AttributeError, match="layer.profile cannot be replaced"):
        layer.profile = Profile.from_dict({"safety": {"lo": 0, "hi": 5, "max_amplitude": 5}})
    with pytest.raises(AttributeError):
        del layer.safety
    assert layer.safety is guard and layer.safety.ceiling == layer.profile.safety
    layer.__dict__["safety"] = looser  # the instance's dict does not shadow the property
    assert layer.safety is guard
