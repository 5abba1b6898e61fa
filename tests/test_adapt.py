import numpy as np
import pytest

from pnn.adapt import Event, ScheduledPhysics, parse_event, recovery, run_adaptation
from sim.acoustic import AcousticLayer


def test_parse_event_and_messages():
    assert parse_event("jump:epoch=4,factor=1.1") == Event("jump", 4, factor=1.1)
    e = parse_event("drift:epoch=2,rate=0.01,param=speed_scale")
    assert (e.kind, e.epoch, e.rate, e.param) == ("drift", 2, 0.01, "speed_scale")
    with pytest.raises(ValueError, match="unknown event 'kick'.*valid events: jump, drift"):
        parse_event("kick:epoch=1")
    with pytest.raises(ValueError, match="needs epoch=N"):
        parse_event("jump:factor=2")
    with pytest.raises(ValueError, match="bad event parameter 'size=3'"):
        parse_event("jump:epoch=1,size=3")
    with pytest.raises(ValueError, match="event parameter epoch .* must be int, got 'x'"):
        parse_event("jump:epoch=x")
    with pytest.raises(ValueError, match="drift event .* needs a non-zero rate="):
        parse_event("drift:epoch=3")


def test_recovery_time_and_drop():
    hist = [{"epoch": e, "test_accuracy": a}
            for e, a in enumerate([0.5, 0.8, 0.85, 0.60, 0.70, 0.84, 0.86], start=1)]
    r = recovery(hist, event_epoch=3, next_event=None, tolerance=0.02)
    assert r["before"] == 0.85
    assert r["drop"] == pytest.approx(0.25)
    assert r["recovery_epochs"] == 3  # epoch 6 (0.84 >= 0.83)
    never = recovery(hist[:5], event_epoch=3, next_event=None)
    assert never["recovery_epochs"] is None


def test_scheduled_physics_changes_a_copy_not_the_original():
    base = AcousticLayer(3, 2, nx=24, ny=24, pml_width=4, n_steps=60)
    w = ScheduledPhysics(base, "speed_scale")
    x = np.full((2, 3), 0.5, np.float32)
    y0 = np.asarray(w(x))
    w.set_value(1.2)
    y1 = np.asarray(w(x))
    assert w.value == pytest.approx(1.2) and base.speed_scale == 1.0
    assert np.max(np.abs(y1 - y0) / np.abs(y0)) > 0.05
    np.testing.assert_array_equal(np.asarray(base(x)), y0)
    with pytest.raises(ValueError, match="has no parameter 'temperature'"):
        ScheduledPhysics(base, "temperature")


def test_adaptation_run_records_the_event_and_recovery():
    from pnn.data.vowels import load_vowels

    data = load_vowels(classes=("iy", "uw", "aa"), seed=0)
    events = [parse_event("jump:epoch=2,factor=1.3")]
    rec = run_adaptation("acoustic", data, ["phyll"], events, epochs=4, seed=0)
    res = rec["methods"]["phyll"]
    values = [h["param_value"] for h in res["history"]]
    assert values[0] == pytest.approx(1.0) and values[1] == pytest.approx(1.3)
    assert values[-1] == pytest.approx(1.3)
    (r,) = res["recovery"]
    assert r["event_epoch"] == 2 and r["before"] == res["history"][1]["test_accuracy"]
    assert res["test_accuracy"] > 0.6  # three vowels: chance 1/3
    with pytest.raises(ValueError, match="last event is after epoch 4, but training has only 4"):
        run_adaptation("acoustic", data, ["phyll"], [parse_event("jump:epoch=4")], epochs=4)
