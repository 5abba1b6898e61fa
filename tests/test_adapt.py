import numpy as np
import pytest

from pnn.adapt import Event, Schedule, ScheduledPhysics, parse_event, recovery, run_adaptation
from pnn.sim.acoustic import AcousticLayer


def test_parse_event_and_messages():
    assert parse_event("jump:epoch=4,factor=1.1") == Event("jump", 4.0, factor=1.1)
    e = parse_event("drift:epoch=2.5,rate=0.01,param=speed_scale")
    assert (e.kind, e.epoch, e.rate, e.param) == ("drift", 2.5, 0.01, "speed_scale")
    assert e.at_step(10) == 25 and parse_event("jump:epoch=0.01").at_step(10) == 1
    with pytest.raises(ValueError, match="unknown event 'kick'.*valid events: jump, drift"):
        parse_event("kick:epoch=1")
    with pytest.raises(ValueError, match="needs epoch=E"):
        parse_event("jump:factor=2")
    with pytest.raises(ValueError, match="needs epoch=E"):
        parse_event("jump:epoch=-1")
    with pytest.raises(ValueError, match="bad event parameter 'size=3'"):
        parse_event("jump:epoch=1,size=3")
    with pytest.raises(ValueError, match="event parameter epoch .* must be a number, got 'x'"):
        parse_event("jump:epoch=x")
    with pytest.raises(ValueError, match="drift event .* needs a non-zero rate="):
        parse_event("drift:epoch=3")


def _trace(accs, every=2):
    return [{"step": every * (i + 1), "test_accuracy": a} for i, a in enumerate(accs)]


def test_recovery_time_and_drop():
    #            steps: 2    4    6     8     10    12    14    16
    trace = _trace([0.5, 0.8, 0.84, 0.86, 0.60, 0.70, 0.84, 0.86])
    r = recovery(trace, event_step=8, next_event=None, steps_per_epoch=4, tolerance=0.02)
    before = (0.8 + 0.84 + 0.86) / 3  # the last 3 up to the event (step 8 is before the change)
    assert r["before"] == pytest.approx(before)
    assert r["after"] == pytest.approx((0.60 + 0.70 + 0.84) / 3)  # the first 3 after it
    assert r["drop"] == pytest.approx(before - r["after"])
    assert r["lowest_after"] == 0.60 and r["settled"] == pytest.approx((0.70 + 0.84 + 0.86) / 3)
    assert r["recovery_steps"] == 6 and r["recovery_epochs"] == 1.5  # step 14: 0.84 >= 0.813
    never = recovery(trace[:6], event_step=8, next_event=None, steps_per_epoch=4)
    assert never["recovery_steps"] is None and never["after"] == pytest.approx(0.65)
    # the next event bounds the window
    bounded = recovery(trace, event_step=8, next_event=12, steps_per_epoch=4)
    assert bounded["recovery_steps"] is None and bounded["settled"] == pytest.approx(0.65)
    nothing = recovery(trace, event_step=16, next_event=None, steps_per_epoch=4)
    assert nothing["drop"] is None and nothing["before"] == pytest.approx((0.7 + 0.84 + 0.86) / 3)
    with pytest.raises(ValueError, match="no accuracy measured up to the event at step 1"):
        recovery(trace, event_step=1, next_event=None, steps_per_epoch=4)


def test_schedule_applies_jump_and_ramp_per_step_and_measures_before_the_change():
    w = ScheduledPhysics(AcousticLayer(3, 2, nx=24, ny=24, pml_width=4, n_steps=60),
                         "speed_scale")
    events = [parse_event("jump:epoch=1.5,factor=0.8"), parse_event("drift:epoch=2,rate=-0.1")]
    sch = Schedule(events, [w], steps_per_epoch=4, evals_per_epoch=2)
    assert sch.event_steps == [6, 8] and sch.eval_every == 2
    seen = []
    for step in range(1, 13):
        sch(step, lambda x, y: seen.append(w.value) or 0.5)
    # measured at steps 2, 4, 6 (event), 8 (event), 10, 12: each *before* that step's change
    assert [t["step"] for t in sch.trace] == [2, 4, 6, 8, 10, 12]
    assert seen[:3] == [1.0, 1.0, 1.0] and seen[3] == pytest.approx(0.8)
    # the ramp: -0.1 per epoch of the initial value, in quarter steps from step 8 on
    assert seen[4] == pytest.approx(0.8 - 2 * 0.025) and w.value == pytest.approx(0.8 - 5 * 0.025)
    assert sch.refit_steps(16) == (6, 8, 12, 16)


def test_scheduled_physics_changes_a_copy_not_the_original():
    base = AcousticLayer(3, 2, nx=24, ny=24, pml_width=4, n_steps=60)
    w = ScheduledPhysics(base, "speed_scale")
    x = np.full((2, 3), 0.5, np.float32)
    y0 = np.asarray(w(x))
    w.set_value(0.8)  # slower waves (faster ones beyond 1.088 are refused: see test_acoustic)
    y1 = np.asarray(w(x))
    assert w.value == pytest.approx(0.8) and base.speed_scale == 1.0
    assert np.max(np.abs(y1 - y0) / np.abs(y0)) > 0.05
    np.testing.assert_array_equal(np.asarray(base(x)), y0)
    with pytest.raises(ValueError, match="has no parameter 'temperature'"):
        ScheduledPhysics(base, "temperature")


def test_adaptation_run_records_the_event_and_recovery(tmp_path):
    from pnn.adapt import write_record
    from pnn.data.vowels import load_vowels

    data = load_vowels(classes=("iy", "uw", "aa"), seed=0)
    events = [parse_event("jump:epoch=1.5,factor=0.75")]
    rec = run_adaptation("acoustic", data, ["phyll"], events, epochs=3, seed=0,
                         evals_per_epoch=2)
    res = rec["methods"]["phyll"]
    spe = res["steps_per_epoch"]
    assert spe == -(-len(data.y_train) // 64)
    at = round(1.5 * spe)
    trace = res["trace"]
    assert at in [t["step"] for t in trace]
    for t in trace:  # measured before the change at the event step, after it later on
        assert t["param_value"] == pytest.approx(1.0 if t["step"] <= at else 0.75)
    values = [h["param_value"] for h in res["history"]]
    assert values == pytest.approx([1.0, 0.75, 0.75])
    (r,) = res["recovery"]
    assert r["event_step"] == at and r["event_epoch"] == pytest.approx(at / spe)
    assert r["before"] == pytest.approx(np.mean([t["test_accuracy"] for t in trace
                                                 if t["step"] <= at][-3:]))
    assert res["test_accuracy"] > 0.6  # three vowels: chance 1/3
    # the eval queries of the trace are charged to the ledger
    assert res["cost"]["queries_by_purpose"]["eval"] > len(trace) * len(data.y_test)
    write_record(rec, tmp_path)
    assert (tmp_path / "adapt.png").stat().st_size > 10_000
    rows = (tmp_path / "adapt.md").read_text().splitlines()
    assert rows[2].startswith(f"| speed_scale x0.75 at epoch 1.5 | phyll | "
                              f"{100 * r['before']:.1f} % | {100 * r['after']:.1f} % (")
    assert rows[2].endswith(f"| {res['cost']['queries_by_purpose']['train']:,} / "
                            f"{res['cost']['physical_queries']:,} |")
    with pytest.raises(ValueError, match="last event is at epoch 4, but training has only 4"):
        run_adaptation("acoustic", data, ["phyll"], [parse_event("jump:epoch=4")], epochs=4)


def test_a_schedule_the_physics_would_refuse_is_reported_before_training():
    import time

    from pnn.data.vowels import load_vowels

    data = load_vowels(classes=("iy", "uw", "aa"), seed=0)
    # a 5 %/epoch speed-up from epoch 1 crosses the Courant limit (1.088) during epoch 2
    events = [parse_event("drift:epoch=1,rate=0.05")]
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"the events would move speed_scale out of its valid "
                                         r"range at step \d+ \(epoch 2\.\d\d\): .*speed_scale = "
                                         r"1.0[89]\d* is outside the stable range"):
        run_adaptation("acoustic", data, ["insilico", "phyll"], events, epochs=4, seed=0)
    assert time.monotonic() - t0 < 60  # refused up front, not after training insilico
