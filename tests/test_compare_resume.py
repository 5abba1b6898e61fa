"""An interrupted ``pnn compare`` resumes: the runs recorded in results.partial.json are reused,
not trained again, when their settings are the same; anything changed is trained afresh."""

from __future__ import annotations

import json

import pytest

from pnn import registry
from pnn.cli import main

ARGS = ["compare", "--methods", "phyll,linear", "--seeds", "2", "--epochs", "1",
        "--classes", "iy,uw,aa"]


@pytest.fixture
def counted(monkeypatch):
    """Count Trainer.train calls; interrupt (Ctrl-C) when ``stop_at`` is reached."""
    state = {"calls": [], "stop_at": None}
    original = registry.Trainer.train

    def train(self, layers, data, config=None, *, seed=0, **kw):
        if state["stop_at"] == (self.name, seed):
            raise KeyboardInterrupt
        state["calls"].append((self.name, seed))
        return original(self, layers, data, config, seed=seed, **kw)

    monkeypatch.setattr(registry.Trainer, "train", train)
    return state


def test_an_interrupted_comparison_resumes(tmp_path, counted, capsys):
    out = tmp_path / "cmp"
    counted["stop_at"] = ("linear", 1)  # physical methods run first: 3 of 4 runs are done
    assert main([*ARGS, "--out", str(out)]) == 130
    partial = json.loads((out / "results.partial.json").read_text())
    assert [(r["method"], r["seed"]) for r in partial] == [("phyll", 0), ("phyll", 1),
                                                            ("linear", 0)]
    assert not (out / "results.json").exists()

    counted.update(calls=[], stop_at=None)
    assert main([*ARGS, "--out", str(out)]) == 0
    assert counted["calls"] == [("linear", 1)]  # only the run the interruption cut
    assert "holds 3 run(s) of an interrupted comparison" in capsys.readouterr().err
    final = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in final] == [("phyll", 0), ("phyll", 1),
                                                          ("linear", 0), ("linear", 1)]
    for old, new in zip(partial, final):
        assert new["test_accuracy"] == old["test_accuracy"]
        assert new["cost"] == old["cost"]
    assert not (out / "results.partial.json").exists()


def test_changed_settings_are_trained_afresh(tmp_path, counted):
    out = tmp_path / "cmp"
    counted["stop_at"] = ("linear", 0)
    assert main([*ARGS, "--out", str(out)]) == 130
    counted.update(calls=[], stop_at=None)
    # another learning rate for PhyLL: its recorded runs do not match and are trained again
    assert main([*ARGS, "--set", "phyll.lr=0.002", "--out", str(out)]) == 0
    assert counted["calls"] == [("phyll", 0), ("phyll", 1), ("linear", 0), ("linear", 1)]


def test_a_damaged_partial_file_is_refused_naming_the_fix(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "results.partial.json").write_text('[{"method": "phyll"')
    assert main([*ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "results.partial.json" in err and "delete the file to start" in err
