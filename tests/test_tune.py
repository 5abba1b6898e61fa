"""Tuning on the validation split: trials see only sealed data, studies persist and resume,
and `pnn compare --tune` writes tuned configurations and a table with intervals."""

import json

import numpy as np
import optuna
import pytest

from pnn import registry
from pnn.cli import main
from pnn.config import ConfigError
from pnn.data.vowels import TestSetSealed
from pnn.train.bp import MLPTrainer
from pnn.tune import TuneMismatch, tune

TASK = {"task": "vowels", "classes": ("iy", "uw", "aa")}
BP_BASE = {"epochs": 1, "patience": 0}


@pytest.fixture(scope="module")
def data():
    return registry.load_task("vowels", classes=("iy", "uw", "aa"), seed=0)


class _Spy(MLPTrainer):
    """bp, but it notes what data every trial was given and tries to read the test split."""

    seen: list = []

    def init(self):
        try:
            len(self.data.y_test)
            touched = "readable"
        except TestSetSealed:
            touched = "sealed"
        _Spy.seen.append((self.data.is_sealed, touched))
        return super().init()


class _Peek(MLPTrainer):
    """A trainer that reads test labels (forbidden): its trial must fail."""

    def init(self):
        self.peeked = int(self.data.y_test.sum())
        return super().init()


class _Flaky(MLPTrainer):
    """bp whose second run dies (a stand-in for a crash in the middle of a sweep)."""

    runs = 0

    def init(self):
        _Flaky.runs += 1
        if _Flaky.runs == 2:
            raise RuntimeError("simulated crash")
        return super().init()


@pytest.fixture
def spy_trainers():
    bp = registry.get_trainer("bp")
    _Flaky.runs = 0
    for name, algo in (("spy", _Spy), ("peek", _Peek), ("flaky", _Flaky)):
        registry.register_trainer(registry.Trainer(
            name, bp.config, algo, bp.layer_shapes, "test trainer", uses_physical_layers=False))
    _Spy.seen = []
    yield
    for name in ("spy", "peek", "flaky"):
        del registry.TRAINERS[name]


def test_trials_get_sealed_data_and_the_study_completes(spy_trainers, data, tmp_path):
    res = tune("spy", "acoustic", TASK, n_trials=2, seed=0, out=tmp_path, data=data,
               base_config=BP_BASE)
    # every trial trained on data whose test split refused to be read
    assert _Spy.seen == [(True, "sealed"), (True, "sealed")]
    assert res["n_complete"] == 2
    assert [t["state"] for t in res["trials"]] == ["COMPLETE", "COMPLETE"]
    assert all(t["data_sealed"] is True for t in res["trials"])
    assert res["data"]["test_sealed"] is True
    assert (tmp_path / "tune.journal").stat().st_size > 0
    # the best configuration is a valid config inside the declared search space
    cfg = registry.get_trainer("bp").Config(**res["best_config"])
    assert 3e-4 <= cfg.lr <= 3e-2 and cfg.batch_size in (16, 32, 64, 128)
    assert cfg.epochs == 1
    best = max(res["trials"], key=lambda t: t["val_accuracy"])
    assert res["best_val_accuracy"] == best["val_accuracy"]


def test_a_trainer_that_reads_test_labels_fails_the_study(spy_trainers, data, tmp_path):
    with pytest.raises(TestSetSealed, match="sealed until the final measurement"):
        tune("peek", "acoustic", TASK, n_trials=1, seed=0, out=tmp_path, data=data,
             base_config=BP_BASE)


def test_phyll_tiny_tune_on_sealed_data(tmp_path):
    base = {"epochs": 1, "hidden": (6,), "n_meas": 6}
    res = tune("phyll", "acoustic", TASK, n_trials=2, seed=0, out=tmp_path, base_config=base)
    assert res["n_complete"] == 2 and all(t["data_sealed"] for t in res["trials"])
    assert set(res["best_params"]) == set(registry.get_trainer("phyll").search_space())
    assert res["best_config"]["hidden"] == [6] and res["best_config"]["n_meas"] == 6
    assert 0 <= res["best_val_accuracy"] <= 1


def test_a_second_call_resumes_the_study_from_its_journal(data, tmp_path):
    journal = tmp_path / "sweep.journal"
    first = tune("bp", "acoustic", TASK, n_trials=1, seed=0, storage=journal, data=data,
                 base_config=BP_BASE)
    assert first["n_complete"] == 1
    again = tune("bp", "acoustic", TASK, n_trials=3, seed=0, storage=journal, data=data,
                 base_config=BP_BASE)
    assert again["study_name"] == first["study_name"]
    assert [t["number"] for t in again["trials"]] == [0, 1, 2]  # added, not started over
    assert again["trials"][0]["params"] == first["trials"][0]["params"]
    # the budget is the number of completed trials: asking for 3 again runs none
    same = tune("bp", "acoustic", TASK, n_trials=3, seed=0, storage=journal, data=data,
                base_config=BP_BASE)
    assert len(same["trials"]) == 3
    study = optuna.load_study(study_name=first["study_name"],
                              storage=optuna.storages.JournalStorage(
                                  optuna.storages.journal.JournalFileBackend(str(journal))))
    assert len(study.trials) == 3
    assert all("val_accuracy" in t.user_attrs and "config" in t.user_attrs
               for t in study.trials)


def test_an_rdb_url_storage_works(data, tmp_path):
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    res = tune("bp", "acoustic", TASK, n_trials=1, seed=0, storage=url, data=data,
               base_config=BP_BASE)
    assert res["n_complete"] == 1 and res["storage"] == url
    assert len(optuna.load_study(study_name=res["study_name"], storage=url).trials) == 1


def test_resuming_with_other_settings_and_bad_arguments_are_refused(data, tmp_path):
    journal = tmp_path / "t.journal"
    tune("bp", "acoustic", TASK, n_trials=1, seed=0, storage=journal, data=data,
         base_config=BP_BASE, study_name="s")
    with pytest.raises(TuneMismatch, match=r"differing: base_config.*another study_name"):
        tune("bp", "acoustic", TASK, n_trials=1, seed=0, storage=journal, data=data,
             base_config={"epochs": 2, "patience": 0}, study_name="s")
    with pytest.raises(ValueError, match="n_trials = 0: expected a positive integer"):
        tune("bp", "acoustic", TASK, n_trials=0, seed=0, out=tmp_path, data=data)
    with pytest.raises(ConfigError, match="base_config for bp: unknown key.*hiden.*valid keys"):
        tune("bp", "acoustic", TASK, n_trials=1, seed=0, out=tmp_path, data=data,
             base_config={"hiden": (4,)})
    with pytest.raises(ValueError, match="unknown system 'acustic'; valid systems"):
        tune("bp", "acustic", TASK, n_trials=1, seed=0, out=tmp_path, data=data)


def test_compare_with_tuning_on_digital_methods_writes_configs_and_intervals(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "bp,linear,mf", "--tune", "2", "--seeds", "2",
                 "--classes", "iy,uw,aa", "--set", "bp.epochs=4", "--set", "mf.epochs=4",
                 "--out", str(out)]) == 0
    tuned = json.loads((out / "tuned_configs.json").read_text())
    assert set(tuned) == {"bp", "linear", "mf"}
    assert tuned["bp"]["n_complete"] == 2 and tuned["mf"]["n_complete"] == 2
    assert tuned["linear"]["n_complete"] == 1  # nothing to search: one deterministic trial
    assert all(t["data_sealed"] for m in tuned.values() for t in m["trials"])
    recs = json.loads((out / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in recs) == [
        (m, s) for m in ("bp", "linear", "mf") for s in (0, 1)]
    # each seed its own split, shared by every method on that seed
    assert {r["data"]["seed"] for r in recs} == {0, 1}
    assert all(r["data"]["seed"] == r["seed"] for r in recs)
    # the tuned configuration is what ran (bp keeps its searched values on every seed)
    for r in recs:
        if r["method"] == "bp":
            assert r["tuned"]["tuned_on_seed"] == 0 and r["config"]["epochs"] == 4
            for k, v in tuned["bp"]["best_params"].items():
                assert r["config"][k] == v
    # the tuning curve (issue 25): every completed trial's validation accuracy in trial order
    # and the best so far, in tuned_configs.json, every record and tuning_curves.png
    for m, res in tuned.items():
        done = [t for t in res["trials"] if t["state"] == "COMPLETE"]
        curve = res["curve"]
        assert curve["trial"] == [t["number"] for t in done]
        assert curve["val_accuracy"] == [t["val_accuracy"] for t in done]
        assert curve["best_val_accuracy"] == [max(curve["val_accuracy"][:i + 1])
                                              for i in range(len(done))]
        assert curve["best_val_accuracy"][-1] == res["best_val_accuracy"]
        assert all(r["tuned"]["curve"] == curve for r in recs if r["method"] == m)
    assert (out / "tuning_curves.png").stat().st_size and (out / "tuning_curves.svg").exists()
    table = (out / "table.md").read_text()
    assert "95 % interval" in table and "reached target" in table
    for m in ("bp", "linear", "mf"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {m} |"))
        assert "| 2 |" in row and "[" in row and "n/a" not in row.split("|")[5]
    stats = json.loads((out / "stats.json").read_text())
    assert all(row["n_seeds"] == 2 and row["test_acc_lo"] <= row["test_acc_mean"]
               for row in stats["rows"])
    assert (out / "cost_vs_accuracy.png").exists()


def test_compare_refuses_bad_settings_naming_what_is_valid(capsys):
    assert main(["compare", "--methods", "bp", "--set", "bp.epoch=3"]) == 2
    assert "bp has no setting 'epoch'; valid keys: " in capsys.readouterr().err
    assert main(["compare", "--methods", "bp", "--set", "mf.epochs=3"]) == 2
    assert "method 'mf' is not compared here" in capsys.readouterr().err
    assert main(["compare", "--methods", "bp", "--set", "epochs=3"]) == 2
    assert "expected METHOD.KEY=VALUE" in capsys.readouterr().err
    assert main(["compare", "--methods", "bp", "--target", "95"]) == 2
    assert "--target 95.0: expected a validation accuracy in (0, 1]" in capsys.readouterr().err


def test_a_sweep_that_crashed_resumes_to_the_same_budget(spy_trainers, data, tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        tune("flaky", "acoustic", TASK, n_trials=3, seed=0, out=tmp_path, data=data,
             base_config=BP_BASE)
    res = tune("flaky", "acoustic", TASK, n_trials=3, seed=0, out=tmp_path, data=data,
               base_config=BP_BASE)
    states = [t["state"] for t in res["trials"]]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert res["n_complete"] == 3


def test_parallel_trials(data, tmp_path):
    res = tune("bp", "acoustic", TASK, n_trials=2, seed=0, out=tmp_path, data=data,
               base_config=BP_BASE, jobs=2)
    assert res["n_complete"] == 2
    with pytest.raises(ValueError, match="jobs = 0: expected a positive integer"):
        tune("bp", "acoustic", TASK, n_trials=2, seed=0, out=tmp_path, data=data, jobs=0)


def test_tune_command_writes_tuned_configs(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["tune", "--methods", "bp", "--trials", "1", "--set", "bp.epochs=1",
                 "--classes", "iy,uw,aa", "--out", str(out)]) == 0
    tuned = json.loads((out / "tuned_configs.json").read_text())
    assert tuned["bp"]["n_complete"] == 1 and tuned["bp"]["best_config"]["epochs"] == 1
    assert (out / "tune.journal").exists() and (out / "tuning_curves.png").exists()
    assert "bp: best validation accuracy" in capsys.readouterr().out


def test_the_physical_levers_are_searched_with_the_method(data, tmp_path):
    """``system_search``: a system parameter drawn as ``system.KEY`` in every trial, the layers
    built with it, and the best trial's value returned beside the fixed ones."""
    base = {"epochs": 1, "hidden": (4,), "n_meas": 4, "batch_size": 64}
    res = tune("phyll", "random_nonlinear", TASK, n_trials=3, seed=0, out=tmp_path, data=data,
               base_config=base, system_kwargs={"kind": "tanh"},
               system_search={"strength": ("log", 0.1, 10.0)})
    assert res["n_complete"] == 3
    drawn = [t["params"]["system.strength"] for t in res["trials"]]
    assert len(set(drawn)) == 3 and all(0.1 <= v <= 10.0 for v in drawn)
    best = res["best_system"]
    assert best["kind"] == "tanh" and best["strength"] == res["best_params"]["system.strength"]
    assert "system.strength" in res["search_space"]
    with_levers = {n: registry.levers(n) for n in registry.SYSTEMS if registry.levers(n)}
    assert set(with_levers) == {"acoustic", "optical", "microwave"}
    for system, levers in with_levers.items():  # the extremes build and run
        for key, (_, lo, hi) in levers.items():
            for v in (lo, hi):
                layer = registry.make_system(system, 5, 3, **{key: v})
                mid = 0.5 * (layer.spec.lo + layer.spec.hi)
                assert np.asarray(layer(np.full((2, 5), mid, np.float32))).shape == (2, 3)


def test_the_documented_tune_then_train_block_runs(tmp_path, monkeypatch, capsys):
    """docs/workflows.md's tuning block, run as written (in tmp_path): the trained record has
    the tuned configuration and the physical parameter its tuning chose."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "workflows.md").read_text()
    block = text.split("## Tuning, then training with what it found")[1]
    lines = re.search(r"```bash\n(.*?)```", block, re.S).group(1).strip().splitlines()
    monkeypatch.chdir(tmp_path)
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == ".venv/bin/pnn"
        assert main(argv[1:]) == 0, capsys.readouterr().err
    tuned = json.loads((tmp_path / "tuned" / "tuned_configs.json").read_text())["phyll"]
    rec = json.loads((tmp_path / "tuned_run.json").read_text())
    for key, value in tuned["best_params"].items():
        if not key.startswith("system."):
            assert rec["config"][key] == value, key
    assert rec["experiment"]["system"]["c_nl"] == tuned["best_system"]["c_nl"]
    assert rec["config"]["epochs"] == 1


def test_tuned_configs_that_do_not_fit_are_refused(tmp_path, capsys):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"bp": {"best_config": {"epochs": 1}}}))
    assert main(["train", "--method", "phyll", "--tuned", str(bad)]) == 2
    assert "no tuned configuration of 'phyll' (it has: bp)" in capsys.readouterr().err
    bad.write_text(json.dumps({"phyll": {"best_config": {}, "system": "optical",
                                         "best_system": {"gamma": 0.01}}}))
    assert main(["train", "--method", "phyll", "--tuned", str(bad)]) == 2
    assert "train it with --system optical" in capsys.readouterr().err
    assert main(["train", "--method", "phyll", "--tuned", str(tmp_path / "none.json")]) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_the_journal_path_must_be_a_regular_file(tmp_path):
    import os

    from pnn.fileio import OutputPathError
    from pnn.tune import open_storage

    target = tmp_path / "someone_elses_file"
    target.write_text("precious\n")
    link = tmp_path / "tune.journal"
    link.symlink_to(target)
    with pytest.raises(OutputPathError, match=r"tuning storage '.*tune.journal' is a symlink "
                                              r"\(to '.*someone_elses_file'\), whose target "
                                              r"would be written, not a regular file"):
        open_storage(None, out=tmp_path)
    assert target.read_text() == "precious\n"  # not appended to
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputPathError, match="is a symlink"):
        open_storage(str(tmp_path / "dangling"))
    assert not (tmp_path / "nowhere").exists()  # not created through the link
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(OutputPathError, match="is a folder, not a regular file"):
        open_storage(tmp_path / "a_folder")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputPathError, match="is a special file, not a regular file"):
        open_storage(str(tmp_path / "fifo"))
    # a new path, and an existing journal, are fine
    storage = open_storage(None, out=tmp_path / "new")
    assert (tmp_path / "new" / "tune.journal").is_file()
    optuna.create_study(storage=storage, study_name="s").optimize(lambda t: 0.0, n_trials=1)
    again = open_storage(tmp_path / "new" / "tune.journal")
    assert len(optuna.load_study(storage=again, study_name="s").trials) == 1


def test_restart_runs_a_partial_study_again_from_its_first_trial(data, tmp_path):
    """A study cut short (here: 1 of 2 trials) and resumed would draw its next trial from a
    sampler started afresh; with ``restart`` the partial study is run again from its first
    trial and the result is the uninterrupted one's."""
    kw = dict(seed=0, data=data, base_config=BP_BASE)
    whole = tune("bp", "acoustic", TASK, n_trials=2, storage=tmp_path / "a.journal", **kw)
    partial = tmp_path / "b.journal"
    tune("bp", "acoustic", TASK, n_trials=1, storage=partial, **kw)
    restarted = tune("bp", "acoustic", TASK, n_trials=2, storage=partial, restart=True, **kw)
    assert [t["params"] for t in restarted["trials"]] == [t["params"] for t in whole["trials"]]
    assert restarted["curve"] == whole["curve"]
    # a complete study is used as it is, not run again
    again = tune("bp", "acoustic", TASK, n_trials=2, storage=partial, restart=True, **kw)
    assert again["trials"] == restarted["trials"]
