"""Everything the repository keeps still reads: every experiment file, every experiment
embedded in a committed result record, and every recorded method configuration (records
written before a field existed read back with its legacy value). Loading only, no training:
a restructuring of the experiment or config code that breaks an old file fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pnn import registry
from pnn.config import config_from_dict
from pnn.experiment import Experiment

ROOT = Path(__file__).resolve().parents[1]
TOMLS = sorted((ROOT / "experiments").glob("*.toml"))


def _records():
    for path in sorted((ROOT / "experiments" / "results").rglob("*.json")):
        obj = json.loads(path.read_text())
        for rec in obj if isinstance(obj, list) else [obj]:
            if isinstance(rec, dict):
                yield path, rec


RECORDS = list(_records())


@pytest.mark.parametrize("path", TOMLS, ids=[p.name for p in TOMLS])
def test_every_experiment_file_loads_and_its_toml_reads_back_equal(path, tmp_path):
    exp = Experiment.from_toml(path)
    again = tmp_path / "again.toml"
    again.write_text(exp.to_toml())
    assert Experiment.from_toml(again) == exp


def test_every_embedded_experiment_loads():
    held = [(p, r["experiment"]) for p, r in RECORDS if "experiment" in r]
    assert len(held) >= 100  # the committed records that embed their experiment
    for path, d in held:
        Experiment.from_dict(d, where=str(path.relative_to(ROOT)))


def test_every_recorded_configuration_loads():
    configs = [(p, r) for p, r in RECORDS if "config" in r and r.get("method") in
               registry.TRAINERS]
    assert len(configs) >= 200
    for path, rec in configs:
        config_from_dict(registry.get_trainer(rec["method"]).Config, rec["config"],
                         where=str(path.relative_to(ROOT)), stored=True)


# ----------------------------------------------------------------------------- replays
REPLAY = ROOT / "tests" / "data" / "replay"


@pytest.mark.parametrize("kind", ["train", "compare", "adapt"])
def test_one_record_of_each_kind_replays_to_the_same_accuracies(kind, capsys):
    """A small committed record of each kind (written by ``pnn run tests/data/replay/KIND.toml``
    before a restructuring) embeds the experiment of the file beside it, and ``pnn run
    RECORD`` reproduces every recorded test accuracy exactly: code that changes what a run
    computes, even by one sample, fails here."""
    from pnn.cli import main

    path = REPLAY / f"{kind}.json"
    obj = json.loads(path.read_text())
    records = obj if isinstance(obj, list) else [obj]
    toml = Experiment.from_toml(REPLAY / f"{kind}.toml")
    for rec in records:
        embedded = Experiment.from_dict(rec["experiment"], where=str(path))
        assert embedded.kind == toml.kind == kind
        assert embedded.to_toml().split("[output]")[0] == toml.to_toml().split("[output]")[0]
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "replay: every test accuracy identical to the record" in out, out
    assert out.count(": identical") == (len(records) if kind != "adapt" else
                                        len(records[0]["methods"]))


def test_the_committed_model_file_scores_its_recorded_accuracy(tmp_path, capsys):
    """tests/data/replay/train.pnn, saved by the replayed train run, is rebuilt from the file
    and measured on its test split: the accuracy recorded at training, exactly."""
    from pnn.cli import main

    assert main(["eval", str(REPLAY / "train.pnn"), "--out", str(tmp_path / "ev.json")]) == 0
    recorded = json.loads((REPLAY / "train.json").read_text())["test_accuracy"]
    assert json.loads((tmp_path / "ev.json").read_text())["test_accuracy"] == recorded
