"""The System record: a new physics is one file plus one register_system call, and every
command offers it with no other edit; files never import code they name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pnn import registry
from tests.fixtures import saturable

SMALL = ["--classes", "iy,uw,aa"]


@pytest.fixture
def with_saturable(monkeypatch):
    monkeypatch.setattr(registry, "SYSTEMS", dict(registry.SYSTEMS))
    record = registry.register_system(saturable.SYSTEM)
    assert registry.SYSTEMS["saturable"] is record
    return record


def test_record_declares_what_callers_read(with_saturable):
    assert registry.system_keys("saturable") == ["alpha", "i_sat"]  # from the simulator class
    assert registry.levers("saturable") == {"alpha": ("log", 0.5, 4.0)}
    assert registry.describe_system("saturable") == "saturable-absorber bank"
    assert registry.describe_param("alpha").label == "optical depth α"
    layer = registry.make_system("saturable", 3, 2, seed=1, alpha=1.0)
    d = np.array([[0.5, 0.5, 0.5]], np.float32)
    i = 0.5 * np.asarray(layer.M).sum(1)
    np.testing.assert_allclose(np.asarray(layer(d))[0], i * np.exp(-1.0 / (1 + i / 0.3)),
                               rtol=1e-5)
    # the built-in systems: every caller reads these records, no side table
    assert registry.SYSTEMS["acoustic"].drift_param == "speed_scale"
    assert registry.describe_system("random_nonlinear[kind=tanh]") == "fixed random tanh network"
    assert registry.describe_method("pat") == "physics-aware training"
    assert registry.get_trainer("zo").compare_defaults == {"epochs": 6, "lr": 3e-3}


def test_register_system_refuses_bad_records():
    with pytest.raises(ValueError, match="without ':'"):
        registry.System("a:b", saturable.factory)
    with pytest.raises(TypeError, match="must be callable"):
        registry.System("x", 3)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_system(registry.System("acoustic", saturable.factory))
    with pytest.raises(TypeError, match="takes no factory"):
        registry.register_system(saturable.SYSTEM, saturable.factory)


def test_new_physics_runs_everywhere(with_saturable, tmp_path, capsys):
    """train, compare, tune, adapt and characterize on a system they were never edited for."""
    from pnn.cli import main

    out = tmp_path / "train.json"
    assert main(["train", "--system", "saturable", "--set", "system.alpha=1.5", "--epochs", "2",
                 *SMALL, "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["system"] == "saturable" and rec["test_accuracy"] > 0.4  # chance is 1/3
    assert rec["experiment"]["system"]["alpha"] == 1.5

    cmp = tmp_path / "cmp"
    assert main(["compare", "--system", "saturable", "--methods", "phyll,linear", "--seeds", "1",
                 "--epochs", "1", *SMALL, "--out", str(cmp)]) == 0
    assert {r["method"] for r in json.loads((cmp / "results.json").read_text())} == \
        {"phyll", "linear"}

    tuned = tmp_path / "tune"
    assert main(["tune", "--system", "saturable", "--methods", "phyll", "--trials", "2",
                 "--epochs", "1", *SMALL, "--out", str(tuned)]) == 0
    best = json.loads((tuned / "tuned_configs.json").read_text())["phyll"]
    assert 0.5 <= best["best_system"]["alpha"] <= 4.0  # the record's lever was searched

    ad = tmp_path / "adapt"
    assert main(["adapt", "--system", "saturable", "--methods", "phyll", "--epochs", "2",
                 "--event", "jump:epoch=1,factor=1.5", *SMALL, "--out", str(ad)]) == 0
    adapt = json.loads((ad / "adapt.json").read_text())
    assert adapt["param"] == "alpha"  # the record's drift parameter

    ch = tmp_path / "ch"
    assert main(["characterize", "--system", "saturable", "--n-in", "4", "--n-out", "3",
                 "--samples", "80", "--repeats", "2", "--checks", "2", "--out", str(ch)]) == 0
    report = json.loads((ch / "characterize.json").read_text())
    assert report["system"]["name"] == "saturable"
    assert report["layer"]["type"] == "SaturableAbsorbers"


def test_model_file_naming_code_is_not_imported(tmp_path, monkeypatch):
    """A model file whose header names 'module:factory' must not import that module."""
    from pnn.cli import main
    from pnn.model_io import load_model, read_header, rebuild_layers

    path = tmp_path / "m.pnn"
    assert main(["train", "--system", "none", "--epochs", "1", *SMALL, "--save",
                 str(path)]) == 0
    header = read_header(path)
    planted = tmp_path / "planted.py"
    planted.write_text("import pathlib\npathlib.Path(__file__).with_suffix('.ran').touch()\n"
                       "def factory(*a, **k):\n    raise SystemExit('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    header["system"]["name"] = "planted:factory"
    with pytest.raises(ValueError, match="does not import or run code"):
        rebuild_layers(header, path)
    assert not planted.with_suffix(".ran").exists()
    assert load_model(path).method == "phyll"  # the untouched file still loads


def test_replay_of_record_naming_code_needs_flag(tmp_path, monkeypatch, capsys):
    from pnn.cli import main

    planted = tmp_path / "planted2.py"
    planted.write_text("import pathlib\npathlib.Path(__file__).with_suffix('.ran').touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "r.json"
    assert main(["train", "--system", "none", "--epochs", "1", *SMALL, "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    rec["experiment"]["system"]["name"] = "planted2:factory"
    out.write_text(json.dumps(rec))
    assert main(["run", str(out)]) == 2
    err = capsys.readouterr().err
    assert "would import and run the module 'planted2'" in err and "--allow-import" in err
    assert not planted.with_suffix(".ran").exists()
