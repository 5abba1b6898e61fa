"""Statistics of comparisons against hand-computed values; cost to a target; the run loop's
per-epoch learning costs; the report table."""

import json
import math

import numpy as np
import pytest

from pnn import registry
from pnn.compare import markdown_table, write_report
from pnn.stats import (ENERGY_PER_FLOP_J, cost_to_target, default_target,
                       modelled_energy_j, paired_differences, summary_rows, t_interval)

# Student t quantiles (two-sided 95 %), from a printed table, not from scipy
T975 = {2: 4.302652730, 4: 2.776445105}


def test_t_interval_of_known_numbers():
    iv = t_interval([1, 2, 3, 4, 5])
    std = math.sqrt(2.5)  # squared deviations 4+1+0+1+4 = 10, over n-1 = 4
    half = T975[4] * std / math.sqrt(5)  # = 1.96324...
    assert iv["n"] == 5 and iv["mean"] == pytest.approx(3.0)
    assert iv["std"] == pytest.approx(std)
    assert iv["half_width"] == pytest.approx(half, rel=1e-8)
    assert (iv["lo"], iv["hi"]) == pytest.approx((3 - half, 3 + half), rel=1e-8)
    assert iv["lo"] == pytest.approx(1.036757, abs=1e-6)


def test_t_interval_of_one_value_has_no_width_and_bad_input_is_refused():
    iv = t_interval([0.7])
    assert iv["mean"] == 0.7 and iv["std"] == 0.0 and math.isnan(iv["lo"])
    with pytest.raises(ValueError, match="expected finite numbers, got .*nan"):
        t_interval([0.5, float("nan")])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 95"):
        t_interval([0.5, 0.6], confidence=95)
    with pytest.raises(ValueError, match="expected at least one value"):
        t_interval([])


def _rec(method, seed, test, val=None, history=None, system="acoustic", train_q=0, flops=0):
    return {"method": method, "seed": seed, "test_accuracy": test,
            "val_accuracy": test if val is None else val, "system": system,
            "history": history or [], "n_trainable_params": 10,
            "data": {"classes": ["a", "b", "c"]},
            "cost": {"physical_queries": train_q, "queries_by_purpose": {"train": train_q},
                     "digital_flops": flops, "wall_s": 1.0}}


def test_paired_differences_pair_by_seed_with_hand_computed_interval():
    ref = {0: 0.80, 1: 0.85, 2: 0.90}
    close = {2: 0.95, 0: 0.82, 1: 0.88, 3: 0.99}   # seed 3 has no reference run: not paired
    far = {1: 0.96, 0: 0.90, 2: 1.02}               # differences 0.10, 0.11, 0.12
    recs = ([_rec("bp", s, v) for s, v in close.items()]
            + [_rec("phyll", s, v) for s, v in reversed(ref.items())]
            + [_rec("mf", s, v) for s, v in far.items()])
    d = paired_differences(recs, "phyll")
    assert set(d) == {"bp", "mf"}
    # bp - phyll = 0.02, 0.03, 0.05: mean 1/30, sample std sqrt(0.00023333...)
    bp = d["bp"]
    std = math.sqrt(((0.02 - 1 / 30) ** 2 + (0.03 - 1 / 30) ** 2 + (0.05 - 1 / 30) ** 2) / 2)
    half = T975[2] * std / math.sqrt(3)
    assert bp["n"] == 3 and bp["seeds"] == [0, 1, 2]
    assert bp["mean"] == pytest.approx(1 / 30)
    assert (bp["lo"], bp["hi"]) == pytest.approx((1 / 30 - half, 1 / 30 + half))
    assert bp["lo"] == pytest.approx(-0.004612, abs=1e-6)
    assert bp["excludes_zero"] is False
    mf = d["mf"]
    assert mf["mean"] == pytest.approx(0.11)
    assert mf["lo"] == pytest.approx(0.11 - T975[2] * 0.01 / math.sqrt(3))
    assert mf["excludes_zero"] is True


def test_paired_differences_refuse_two_runs_of_one_seed_and_skip_a_missing_reference():
    recs = [_rec("phyll", 0, 0.8), _rec("bp", 0, 0.9), _rec("bp", 0, 0.7)]
    with pytest.raises(ValueError, match="'bp' has two records for seed 0; expected one"):
        paired_differences(recs, "phyll")
    assert paired_differences([_rec("bp", 0, 0.9)], "phyll") == {}


HISTORY = [
    {"epoch": 1, "step": 10, "val_accuracy": 0.50, "train_queries": 100, "digital_flops": 1000,
     "wall_s": 1.0, "eval_queries": 30, "eval_flops": 7, "eval_s": 0.1},
    {"epoch": 2, "step": 20, "val_accuracy": 0.81, "train_queries": 200, "digital_flops": 2000,
     "wall_s": 2.0, "eval_queries": 60, "eval_flops": 14, "eval_s": 0.2},
    {"epoch": 3, "step": 30, "val_accuracy": 0.79, "train_queries": 300, "digital_flops": 3000,
     "wall_s": 3.0, "eval_queries": 90, "eval_flops": 21, "eval_s": 0.3},
    {"epoch": 4, "step": 40, "val_accuracy": 0.90, "train_queries": 400, "digital_flops": 4000,
     "wall_s": 4.0, "eval_queries": 120, "eval_flops": 28, "eval_s": 0.4},
]


def test_cost_to_target_is_read_at_the_first_epoch_reaching_it():
    c = cost_to_target(HISTORY, 0.8)
    assert (c["epoch"], c["step"], c["train_queries"], c["digital_flops"], c["wall_s"]) == \
        (2, 20, 200, 2000, 2.0)
    assert (c["eval_queries"], c["eval_flops"]) == (60, 14)  # reported apart
    assert cost_to_target(HISTORY, 0.85)["epoch"] == 4   # epoch 3 dropped below again
    assert cost_to_target(HISTORY, 0.5)["epoch"] == 1    # reaching means >=
    assert cost_to_target(HISTORY, 0.95) is None
    with pytest.raises(ValueError, match="epoch 1 lacks digital_flops, wall_s"):
        cost_to_target([{"epoch": 1, "val_accuracy": 0.9, "train_queries": 1}], 0.5)


def test_default_target_is_a_fraction_of_the_best_mean_validation_accuracy():
    recs = [_rec("a", 0, 0.5, val=0.6), _rec("a", 1, 0.5, val=0.8),
            _rec("b", 0, 0.5, val=0.5), _rec("b", 1, 0.5, val=0.6)]
    assert default_target(recs) == pytest.approx(0.95 * 0.7)
    assert default_target(recs, 0.5) == pytest.approx(0.35)
    with pytest.raises(ValueError, match=r"target fraction must be in \(0, 1\], got 1.5"):
        default_target(recs, 1.5)


def test_modelled_energy_from_queries_and_flops():
    from pnn import registry

    per_query = registry.energy_per_query()
    e = modelled_energy_j(1000, 1e9, "acoustic", per_query_j=per_query)
    assert e == pytest.approx(1000 * 5e-3 + 1e9 * ENERGY_PER_FLOP_J)
    assert modelled_energy_j(0, 1e9, "digital") == pytest.approx(0.1)
    assert modelled_energy_j(10, 0, "lab", per_query_j={"lab": 2.0}) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="no per-query energy for system 'lab'.*per_query_j"):
        modelled_energy_j(10, 0, "lab")


def test_summary_rows_and_table_show_intervals_differences_and_costs_to_target(tmp_path):
    hist = [dict(h) for h in HISTORY]
    recs = []
    for s, (p, b) in enumerate([(0.80, 0.90), (0.85, 0.96), (0.90, 1.02 - 0.0)]):
        recs.append(_rec("phyll", s, p, val=0.9, history=hist, train_q=400, flops=4000))
        recs.append(_rec("bp", s, min(b, 1.0), val=0.8, history=hist, system="digital",
                         flops=4000))
    rows, target = summary_rows(recs)
    assert target == pytest.approx(0.95 * 0.9)
    by = {r["method"]: r for r in rows}
    assert by["phyll"]["test_acc_lo"] == pytest.approx(
        0.85 - T975[2] * 0.05 / math.sqrt(3))
    assert by["phyll"]["target_train_queries"] == 400  # epoch 4 is the first >= 0.855
    assert by["phyll"]["reached"] == 3
    assert by["bp"]["diff"]["excludes_zero"] is True
    # no per-query energy given: none modelled for the physical system, digital costs FLOPs only
    assert math.isnan(by["phyll"]["target_energy_j"])
    assert by["bp"]["target_energy_j"] == pytest.approx(by["bp"]["target_flops"] * 1e-10)
    with_energy = {r["method"]: r for r in summary_rows(recs, per_query_j={"acoustic": 1.0})[0]}
    assert with_energy["phyll"]["target_energy_j"] == pytest.approx(400 + 4000 * 1e-10)
    report = write_report(recs, tmp_path, "synthetic")
    table = (tmp_path / "table.md").read_text()
    assert "95 % interval" in table and "Δ vs phyll" in table
    lo, hi = 100 * by["phyll"]["test_acc_lo"], 100 * by["phyll"]["test_acc_hi"]
    assert f"| phyll | acoustic | 3 | 85.0 ± 5.0 | [{lo:.1f}, {hi:.1f}] | reference |" in table
    assert "**excludes 0**" in table
    assert "modelled energy" in table and "not measured" in table
    assert table.index("| phyll |") < table.index("| bp |")  # the reference first
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["target_val_accuracy"] == pytest.approx(report["target"])
    assert (tmp_path / "cost_vs_accuracy.png").stat().st_size > 10_000
    # one seed: no interval, said so
    one = markdown_table(summary_rows(recs[:2])[0])
    assert "n/a (1 seed)" in one and "(1 seed, no interval)" in one


def test_the_run_loop_records_learning_costs_per_epoch_with_evaluation_apart():
    data = registry.load_task("vowels", classes=("iy", "uw", "aa"), seed=0)
    trainer = registry.get_trainer("phyll")
    cfg = trainer.Config(epochs=2, hidden=(6,), n_meas=6)
    layers = registry.build_layers("acoustic", "phyll", cfg, data, seed=0)
    rec, _ = trainer.train(layers, data, cfg, seed=0)
    h = rec["history"]
    assert [e["epoch"] for e in h] == [1, 2]
    assert 0 < h[0]["train_queries"] < h[1]["train_queries"]
    assert h[1]["train_queries"] == rec["cost"]["queries_by_purpose"]["train"]
    assert h[1]["eval_queries"] == rec["cost"]["queries_by_purpose"]["eval"] > 0
    # evaluation FLOPs are counted by the ledger but kept out of the learning FLOPs
    assert h[1]["eval_flops"] > 0
    assert h[1]["digital_flops"] + h[1]["eval_flops"] <= rec["cost"]["digital_flops"]
    assert 0 < h[0]["wall_s"] < h[1]["wall_s"]
    assert np.isfinite(h[1]["eval_s"])
