"""pnn report: the committed README and docs equal what the records produce; markers, findings,
check mode and figures."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pnn import report
from pnn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_committed_documents_equal_what_the_records_produce():
    ok, diff = report.check(ROOT)
    assert ok, ("README.md or docs/ differ from `pnn report` on the committed records (edit the "
                "records or the generator, then run `pnn report`; never the marked text):\n"
                + diff)


def test_the_readme_reports_the_comparisons_and_stays_short():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for key in ("physics", "demo", "compare compare_acoustic_hillenbrand7"):
        assert re.search(rf"<!-- report:{key}( [^ >]+)? -->", text), key
    assert len(text.splitlines()) <= 250


def _repo(tmp_path: Path, readme: str) -> Path:
    """A minimal repository: the comparison records of the tuned run and a README."""
    src = ROOT / report.RESULTS / "compare_acoustic_hillenbrand7" / "results.json"
    dst = tmp_path / report.RESULTS / "compare_acoustic_hillenbrand7"
    dst.mkdir(parents=True)
    shutil.copy(src, dst / "results.json")
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    return tmp_path


KEY = "compare compare_acoustic_hillenbrand7"


def test_a_hand_edit_between_the_markers_is_caught_and_undone(tmp_path, capsys):
    root = _repo(tmp_path, f"# x\n\n<!-- report:{KEY} -->\n<!-- /report:{KEY} -->\n\nafter\n")
    assert main(["report", "--root", str(root), "--no-figures"]) == 0
    good = (root / "README.md").read_text(encoding="utf-8")
    assert "| PhyLL | acoustic simulator | block reads the direction of h (skip = direction) | 96.1 ± 3.4 % |" in good
    assert good.endswith("\n\nafter\n") and good.startswith("# x\n")
    assert main(["report", "--root", str(root), "--check"]) == 0
    capsys.readouterr()
    (root / "README.md").write_text(good.replace("96.1 ± 3.4 %", "97.0 ± 3.4 %"),
                                    encoding="utf-8")
    assert main(["report", "--root", str(root), "--check"]) == 1
    out = capsys.readouterr().out
    assert "-| PhyLL | acoustic simulator | block reads the direction of h (skip = direction) | 97.0 ± 3.4 %" in out
    assert "+| PhyLL | acoustic simulator | block reads the direction of h (skip = direction) | 96.1 ± 3.4 %" in out
    assert main(["report", "--root", str(root), "--no-figures"]) == 0
    assert (root / "README.md").read_text(encoding="utf-8") == good


def test_unknown_sections_missing_records_and_unmatched_markers_are_refused(tmp_path, capsys):
    root = _repo(tmp_path, "<!-- report:nonsense x -->\n<!-- /report:nonsense x -->\n")
    with pytest.raises(report.ReportError, match="unknown report section 'nonsense'"):
        report.check(root)
    (root / "README.md").write_text("<!-- report:compare compare_gone -->\n"
                                    "<!-- /report:compare compare_gone -->\n")
    assert main(["report", "--root", str(root), "--check"]) == 2
    assert "no record" in capsys.readouterr().err
    (root / "README.md").write_text(f"<!-- report:{KEY} -->\n")
    with pytest.raises(report.ReportError, match="unmatched report markers"):
        report.check(root)


def _records(diffs: dict[str, list[float]]) -> list[dict]:
    """Records of phyll at 0.8 on 5 seeds and of other methods offset by the given values."""
    out = [{"method": "phyll", "seed": s, "test_accuracy": 0.8, "val_accuracy": 0.8,
            "system": "acoustic"} for s in range(5)]
    for method, d in diffs.items():
        out += [{"method": method, "seed": s, "test_accuracy": 0.8 + v, "val_accuracy": 0.8,
                 "system": "digital"} for s, v in enumerate(d)]
    return out


def test_findings_say_better_or_worse_only_where_the_paired_interval_excludes_zero(tmp_path):
    recs = _records({"linear": [0.05, 0.06, 0.04, 0.05, 0.05],   # resolved: PhyLL worse
                     "zo": [-0.3, -0.31, -0.29, -0.3, -0.3],     # resolved: PhyLL better
                     "ff": [0.1, -0.1, 0.05, -0.08, 0.02]})      # interval includes zero
    folder = tmp_path / report.RESULTS / "compare_x"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(recs))
    text = report.compare_findings(report.Report(tmp_path), "compare_x")
    better = text.split("**better** than ")[1].split(". ")[0]
    assert "zeroth-order (SPSA) +30.0" in better and "logistic" not in better
    worse = text.split("**worse** than ")[1].split(". ")[0]
    assert "logistic regression −5.0" in worse and "Forward" not in worse
    assert "No conclusion either way (the interval includes zero) against Forward-Forward" in text
    recs = _records({"ff": [0.1, -0.1, 0.05, -0.08, 0.02]})
    (folder / "results.json").write_text(json.dumps(recs))
    text = report.compare_findings(report.Report(tmp_path), "compare_x")
    assert "better" not in text and "worse" not in text


def test_figures_are_drawn_as_png_and_svg_with_plain_names(tmp_path):
    root = _repo(tmp_path, "<!-- report:figure compare_acoustic_hillenbrand7 -->\n"
                           "<!-- /report:figure compare_acoustic_hillenbrand7 -->\n")
    ok, diff = report.check(root)
    assert not ok and "figures missing or older than their records" in diff
    written = report.update(root)
    names = {p.name for p in written}
    assert {"compare_acoustic_hillenbrand7.png", "compare_acoustic_hillenbrand7.svg"} <= names
    svg = (root / report.FIGURE_DIR / "compare_acoustic_hillenbrand7.svg").read_text()
    assert "logistic regression" in svg and "chance" in svg and ">linear<" not in svg
    assert "](docs/figures/compare_acoustic_hillenbrand7.png)" in (root / "README.md").read_text()
    assert report.check(root) == (True, "")
    # a record changes: the figure is out of date (and the text with it)
    path = root / report.RESULTS / "compare_acoustic_hillenbrand7" / "results.json"
    records = json.loads(path.read_text())
    records[0]["test_accuracy"] = 0.5
    path.write_text(json.dumps(records))
    ok, diff = report.check(root)
    assert not ok and "compare_acoustic_hillenbrand7.svg" in diff


def test_every_comparison_found_is_reported_even_without_phyll_or_with_one_seed(tmp_path):
    one = [r for r in _records({"linear": [0.05] * 5}) if r["seed"] == 0]
    digital = [r for r in _records({"linear": [0.05] * 5}) if r["method"] != "phyll"]
    for name, recs in (("compare_one_seed", one), ("compare_no_phyll", digital)):
        folder = tmp_path / report.RESULTS / name
        folder.mkdir(parents=True)
        for r in recs:
            r["data"] = {"n_train": 10, "n_val": 5, "n_test": 5, "classes": ["a", "b"],
                         "seed": 0}
        (folder / "results.json").write_text(json.dumps(recs))
    text = report.every_comparison(report.Report(tmp_path))
    assert "#### `compare_one_seed`" in text and "#### `compare_no_phyll`" in text
    assert "+5.0 (1 seed, no interval)" in text and "One seed: no interval" in text
    assert "No paired reading" in text and "**better**" not in text and "**worse**" not in text


def test_the_speed_table_reads_the_benchmark_results(tmp_path):
    """The README's speed figures come from benchmarks/results (CPU) and its gpu/ folder; a
    missing or failed benchmark section is refused with the command that writes it."""
    text = report.bench_table(report.Report(ROOT))
    fdtd = json.loads((ROOT / report.BENCH / "fdtd.json").read_text())
    assert f"| {fdtd['impl']['pnn']['best_s']:.3g} s |" in text
    assert "NVIDIA H200" in text  # the GPU column, from benchmarks/results/gpu
    assert "PhyLL reaches PAT's tuned validation accuracy" in text
    (tmp_path / report.BENCH).mkdir(parents=True)
    with pytest.raises(report.ReportError, match="benchmarks/run_all.py"):
        report.bench_table(report.Report(tmp_path))
    for name in ("fdtd", "roofline", "batch", "run"):
        shutil.copy(ROOT / report.BENCH / f"{name}.json", tmp_path / report.BENCH)
    (tmp_path / report.BENCH / "batch.json").write_text(json.dumps({"error": "Traceback"}))
    with pytest.raises(report.ReportError, match="failed"):
        report.bench_table(report.Report(tmp_path))
