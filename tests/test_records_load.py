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
