"""experiments/experiment.schema.json: generated from the experiment's sections and the
registered systems and trainers (`pnn run --schema`), current, valid JSON Schema, accepting
every experiment file the repository keeps and refusing what the loader refuses."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from pnn.cli import main
from pnn.config import ConfigError
from pnn.experiment import Experiment
from pnn.experiment.schema import experiment_schema

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "experiments" / "experiment.schema.json"
FILES = sorted((ROOT / "experiments").glob("*.toml")) + sorted(
    (ROOT / "tests" / "data" / "replay").glob("*.toml"))


@pytest.fixture(scope="module")
def validator():
    schema = experiment_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_schema_is_the_generated_one(tmp_path, capsys):
    assert main(["run", "--schema", "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads(COMMITTED.read_text()) == json.loads((tmp_path / "s.json").read_text()), (
        "experiments/experiment.schema.json is stale: run "
        "`pnn run --schema --out experiments/experiment.schema.json`")
    assert main(["run", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == experiment_schema()


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_experiment_file_is_valid(path, validator):
    errors = [e.message for e in validator.iter_errors(tomllib.loads(path.read_text()))]
    assert not errors, errors
    if path.parent.name == "experiments":  # editors find the schema from the file
        assert path.read_text().startswith("#:schema ./experiment.schema.json\n")


BAD = {
    "a misspelt top-level key": 'seed = [0]\n',
    "a negative seed": 'seeds = [-1]\n',
    "an unknown method": '[method]\nname = "phylll"\n',
    "a method field out of its range": '[method]\nname = "phyll"\nlr = -1.0\n',
    "a field of another method": '[method]\nname = "linear"\ntheta = 4.0\n',
    "the default method's field out of range": '[method]\nepochs = 0\n',
    "a parameter of another system": '[system]\nname = "acoustic"\ngamma = 0.1\n',
    "an unknown system": '[system]\nname = "acoustics"\n',
    "a fraction of 1.5": '[task]\ntest_fraction = 1.5\n',
    "an unknown task key": '[task]\nclass = "pat"\n',
    "an unknown split": 'kind = "compare"\nmethods = ["phyll"]\n[compare]\nsplit = "random"\n',
    "a per-method field out of range": ('kind = "compare"\nmethods = ["phyll"]\n'
                                        '[method.phyll]\nbatch_size = 0\n'),
    "an unknown PAT twin": 'kind = "adapt"\nmethods = ["pat"]\n[adapt]\npat_twin = "fresh"\n'
                           'events = ["jump:epoch=1,factor=1.1"]\n',
    "an instrument address without its kind": '[instrument]\naddresses = ["/dev/ttyACM0"]\n',
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_what_the_loader_refuses_the_schema_refuses(what, validator):
    text = BAD[what]
    with pytest.raises(ConfigError):
        Experiment.from_dict(tomllib.loads(text))
    assert list(validator.iter_errors(tomllib.loads(text))), f"the schema accepts {what}"
