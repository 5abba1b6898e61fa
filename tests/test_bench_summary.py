"""The committed benchmark summaries are what benchmarks/run_all.py renders from the committed
JSON results (nothing typed by hand), and its size arguments are checked."""

import argparse
import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("folder", [RESULTS, RESULTS / "gpu"], ids=["cpu", "gpu"])
def test_committed_summary_is_rendered_from_the_json(tmp_path, folder):
    out = tmp_path / "r"
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("gpu", "*.txt"))
    (out / "summary.md").unlink()
    assert _run_all().main(["--summary-only", "--out", str(out)]) == 0
    assert (out / "summary.md").read_text() == (folder / "summary.md").read_text()


def test_size_arguments_are_checked():
    mod = _run_all()
    assert mod._sizes("128x32, 512X256") == [(128, 32), (512, 256)]
    assert mod._ints("1,4,16") == [1, 4, 16]
    for bad in ("128", "axb", "8x4", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            mod._sizes(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        mod._ints("1,-2")


def test_a_partial_run_keeps_the_earlier_sections_in_the_summary(tmp_path):
    """`--only tuned` into a folder holding a full run: the summary still shows every section
    and names both commands; a --quick run does not mix with a full one."""
    import json

    out = tmp_path / "r"
    shutil.copytree(RESULTS, out, ignore=shutil.ignore_patterns("gpu", "*.txt"))
    mod = _run_all()
    assert mod.main(["--only", "tuned", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert set(run["kept_from_earlier_run"]) == {"fdtd", "roofline", "batch", "training",
                                                 "memory", "scaling"}
    assert run["commands"][-1].endswith(f"--only tuned --out {out}")
    text = (out / "summary.md").read_text()
    assert "## Acoustic FDTD" in text and "## PhyLL against PAT's tuned" in text
    assert "and `python benchmarks/run_all.py --only tuned" in text
    assert mod.main(["--quick", "--only", "tuned", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["sections"] == ["tuned"] and "kept_from_earlier_run" not in run
    assert "## Acoustic FDTD" not in (out / "summary.md").read_text()
