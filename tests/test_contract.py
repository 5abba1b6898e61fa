"""The trainer contract: callers read declared flags, never method names; every Config
validates itself; a trainer registered from outside runs through the CLI unchanged."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pnn import registry
from pnn.cli import main
from pnn.config import ConfigError, param
from pnn.train.loop import Algorithm, LoopConfig

ROOT = Path(__file__).resolve().parents[1]
NAMES = "|".join(sorted(registry.TRAINERS, key=len, reverse=True))
#: a method name compared with ==/!= or tested for membership in a literal tuple/list/set
COMPARISON = re.compile(
    rf"""(==|!=)\s*["']({NAMES})["']|["']({NAMES})["']\s*(==|!=)|"""
    rf"""\bin\s*[\(\[\{{]\s*["']({NAMES})["']""")


def test_no_method_name_comparison_outside_the_registry():
    hits = []
    for folder in ("pnn", "sim", "drivers"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "registry.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if "classes" in line:  # "pat" is also a vowel-set alias, not a method
                    continue
                if COMPARISON.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "callers must read Trainer flags, not compare names:\n" + "\n".join(hits)


@pytest.mark.parametrize("method", sorted(registry.TRAINERS))
@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs = 0: expected an integer >= 1"),
    ("batch_size", -4, "batch_size = -4: expected an integer >= 1"),
    ("eval_every", 2.5, "eval_every = 2.5: expected an integer"),
])
def test_every_config_refuses_bad_loop_values(method, field, value, message):
    cls = registry.get_trainer(method).Config
    if field == "epochs" and method == "linear":
        message = "epochs = 0: expected an integer >= 1 and <= 1"
    with pytest.raises(ConfigError, match=re.escape(f"{cls.__name__}.{message}")):
        cls(**{field: value})


@pytest.mark.parametrize("method", sorted(registry.TRAINERS))
def test_every_method_rejects_bad_values_on_the_command_line(method, capsys):
    cases = [("--epochs", "0"), ("--batch-size", "-4"), ("--seed", "-1"),
             ("--seed", str(2**40))]
    fields = {f.name for f in dataclasses.fields(registry.get_trainer(method).Config)}
    if "lr" in fields:
        cases.append(("--lr", "inf"))
    for flag, value in cases:
        assert main(["train", "--method", method, flag, value]) == 2, (flag, value)
        err = capsys.readouterr().err
        assert "error:" in err and value.replace("inf", "inf") in err, err


def test_ints_from_toml_and_lists_are_normalised():
    from pnn.train.phyll import PhyLLConfig

    cfg = PhyLLConfig(epochs=3.0, hidden=[4, 5])
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int) and cfg.hidden == (4, 5)
    with pytest.raises(ConfigError, match=r"hidden = \[4, 0\]: every width must be a positive"):
        PhyLLConfig(hidden=[4, 0])


# ---------------------------------------------------------------- a toy trainer from outside

@dataclasses.dataclass(frozen=True)
class ToyConfig(LoopConfig):
    epochs: int = param(2, integer=True, ge=1, le=100)
    shrink: float = param(0.5, gt=0, le=1, search=("float", 0.1, 1.0))


class NearestMean(Algorithm):
    """Nearest class mean of the physical layer's measured outputs (a running average)."""

    def init(self):
        C, d = self.data.n_classes, self.layers[0].spec.n_out
        return {"means": np.zeros((C, d)), "counts": np.zeros(C)}

    def _measure(self, x, purpose):
        spec = self.layers[0].spec
        drive = np.clip((np.tanh(x) + 1) / 2, 0, 1) * (spec.hi - spec.lo) + spec.lo
        return self.ledger.query(self.layers[0], drive.astype(np.float32), purpose)

    def step(self, state, x, y):
        m = self._measure(x, "train")
        means, counts = state["means"].copy(), state["counts"].copy()
        for c in range(self.data.n_classes):
            sel = y == c
            if sel.any():
                counts[c] += sel.sum()
                means[c] += (m[sel].sum(0) - sel.sum() * means[c]) / counts[c]
        return {"means": means, "counts": counts}, 0.0

    def predict(self, state, x):
        m = self._measure(x, "eval")
        return np.argmin(((m[:, None, :] - state["means"][None]) ** 2).sum(-1), axis=1)

    def params(self, state):
        return state["means"]


@pytest.fixture
def toy():
    t = registry.register_trainer(registry.Trainer(
        "toy", ToyConfig, NearestMean, lambda cfg, n_f, n_c: [(n_f, 6)],
        "nearest class mean of the measurements (test trainer)", uses_physical_layers=True,
        runs_on_instruments=True))
    yield t
    del registry.TRAINERS["toy"]


def test_a_registered_toy_trainer_runs_through_train_and_compare(toy, tmp_path, capsys):
    out = tmp_path / "toy.json"
    assert main(["train", "--method", "toy", "--classes", "iy,uw,aa", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["method"] == "toy" and rec["test_accuracy"] > 0.5  # chance is 1/3
    assert rec["cost"]["queries_by_purpose"]["train"] == 2 * rec["data"]["n_train"]
    capsys.readouterr()
    folder = tmp_path / "cmp"
    assert main(["compare", "--methods", "toy,linear", "--seeds", "1", "--classes", "iy,uw,aa",
                 "--out", str(folder)]) == 0
    recs = json.loads((folder / "results.json").read_text())
    assert {r["method"] for r in recs} == {"toy", "linear"}
    capsys.readouterr()
    exp = tmp_path / "toy.toml"
    exp.write_text('kind = "train"\nseeds = [1]\n[task]\nname = "vowels"\n'
                   'classes = ["iy", "uw", "aa"]\n[system]\nname = "acoustic"\n'
                   f'[method]\nname = "toy"\nshrink = 0.25\n[output]\nout = "{tmp_path / "r.json"}"\n')
    assert main(["run", str(exp)]) == 0
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["method"] == "toy" and rec["config"]["shrink"] == 0.25 and rec["seed"] == 1
    assert main(["run", str(tmp_path / "r.json")]) == 0  # replays to the same test accuracy


def test_trainers_see_a_sealed_test_split_and_test_is_measured_once():
    from pnn.data import TestSetSealed
    from pnn.data.vowels import load_vowels
    from pnn.train.loop import fit

    data = load_vowels(classes=("iy", "uw", "aa"), seed=0)
    layer = registry.make_system("acoustic", data.n_features, 6, seed=0)

    class Peeking(NearestMean):
        def step(self, state, x, y):
            np.asarray(self.data.y_test)  # a trainer that looks at test labels
            return super().step(state, x, y)

    with pytest.raises(TestSetSealed, match="sealed until the final measurement"):
        fit("peek", Peeking, [layer], data, ToyConfig(epochs=1))
    rec, _ = fit("toy", NearestMean, [layer], data, ToyConfig(epochs=2))
    # validation every epoch; test exactly once, at the end, on the selected state
    assert rec["cost"]["queries_by_purpose"]["test"] == len(data.y_test)
    assert rec["cost"]["queries_by_purpose"]["eval"] == 2 * (len(data.y_val) + min(
        ToyConfig().eval_train_max, len(data.y_train)))
