"""experiments/physics.py: the bypass-free ablation writes the summary the README renders."""

import importlib.util
import json
from pathlib import Path

from pnn import report

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("physics_experiment",
                                                  ROOT / "experiments" / "physics.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_ablation_summary_has_the_documented_fields_and_renders(tmp_path):
    out = tmp_path / "experiments" / "results" / "physics"
    argv = ["--tasks", "vowels", "--systems", "random_nonlinear", "--baselines", "none",
            "--seeds", "2", "--epochs", "1", "--set", "hidden=[6]", "--set", "n_meas=6",
            "--out", str(out)]
    assert _script().main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["readout_input"] is False and summary["config"]["skip"] == "raw"
    (row,) = summary["rows"]
    assert (row["system"], row["task"], row["method"], row["baseline"]) == (
        "random_nonlinear", "vowels", "phyll", "none")
    recs = {r.name: json.loads(r.read_text()) for r in (out / "records").glob("*.json")}
    assert len(recs) == 2 * 4  # two seeds of the system, the baseline and both references
    diffs = [recs[f"vowels__random_nonlinear__seed{s}.json"]["test_accuracy"]
             - recs[f"vowels__none__seed{s}.json"]["test_accuracy"] for s in (0, 1)]
    d = row["difference"]
    assert d["n_seeds"] == 2 and abs(d["mean"] - sum(diffs) / 2) < 1e-12
    assert d["lo"] <= d["mean"] <= d["hi"]
    assert set(row["test_accuracy"]) == {"system", "baseline"}
    assert set(row["references"]) == {"linear", "bp"}
    bp = recs["vowels__bp__seed0.json"]["n_trainable_params"]
    phyll = recs["vowels__random_nonlinear__seed0.json"]["n_trainable_params"]
    assert abs(bp - phyll) <= 0.05 * phyll  # the MLP is matched to every trained number
    assert 0 < row["physics_r2"]["linear"] <= 1
    # a rerun finds every record and trains nothing
    before = {n: r["run_s"] for n, r in recs.items()}
    assert _script().main(argv) == 0
    assert {r.name: json.loads(r.read_text())["run_s"]
            for r in (out / "records").glob("*.json")} == before
    text = report.physics_table(report.Report(tmp_path), "")
    assert "| Peterson & Barney (10 vowels, 4 formants) | random_nonlinear |" in text
    assert "no tuning trials" in text
