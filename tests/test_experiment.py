"""Experiments as data: TOML files, validation, overrides, `pnn run` and replay."""

import json
import re
from pathlib import Path

import pytest

from pnn.cli import build_parser, main
from pnn.config import ConfigError
from pnn.experiment import Experiment, parse_override, read_records, run_experiment
from pnn.cli.experiment import experiment_from_train_args

EXPERIMENTS = sorted((Path(__file__).parents[1] / "experiments").glob("*.toml"))

TINY = """
seeds = [0]

[task]
name = "vowels"
classes = ["iy", "uw", "aa"]

[system]
name = "acoustic"

[method]
name = "phyll"
epochs = 1
hidden = [6]
n_meas = 6
"""


def _write(tmp_path, text, name="exp.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


#: the commands experiments/run_all.sh ran before it became `pnn run experiments/`; each
#: experiment file must describe exactly the run its command made
R = "experiments/results"
FORMER_COMMANDS = {
    "compare_acoustic_vowels": f"compare --system acoustic --task vowels --seeds 3 --out "
                               f"{R}/compare_acoustic_vowels",
    "compare_acoustic_images": f"compare --system acoustic --task images --seeds 3 --out "
                               f"{R}/compare_acoustic_images",
    "train_optical_vowels": f"train --system optical --task vowels --method phyll --epochs 12 "
                            f"--seed 0 --out {R}/train_optical_vowels.json",
    "train_microwave_vowels": f"train --system microwave --task vowels --method phyll --epochs "
                              f"12 --seed 0 --out {R}/train_microwave_vowels.json",
    "adapt_acoustic": f"adapt --system acoustic --task vowels --epochs 20 --event "
                      f"jump:epoch=10.5,factor=1.05 --event drift:epoch=15.5,rate=0.005 --out "
                      f"{R}/adapt_acoustic",
    "adapt_optical": f"adapt --system optical --task vowels --epochs 20 --event "
                     f"jump:epoch=10.5,factor=1.3 --event drift:epoch=15.5,rate=0.03 --out "
                     f"{R}/adapt_optical",
    "adapt_microwave": f"adapt --system microwave --task vowels --epochs 20 --event "
                       f"jump:epoch=10.5,offset=0.5 --event drift:epoch=15.5,rate=0.1 --out "
                       f"{R}/adapt_microwave",
    "adapt_acoustic_x0.92": f"adapt --system acoustic --task vowels --epochs 20 --event "
                            f"jump:epoch=10.5,factor=0.92 --event drift:epoch=15.5,rate=-0.01 "
                            f"--out {R}/adapt_acoustic_x0.92",
    **{f"adapt_optical_seed{s}": f"adapt --system optical --task vowels --epochs 20 --seed {s} "
                                 f"--event jump:epoch=10.5,factor=1.3 --event "
                                 f"drift:epoch=15.5,rate=0.03 --out {R}/adapt_optical_seed{s}"
       for s in (1, 2)},
    **{f"adapt_microwave_seed{s}": f"adapt --system microwave --task vowels --epochs 20 --seed "
                                   f"{s} --event jump:epoch=10.5,offset=0.5 --event "
                                   f"drift:epoch=15.5,rate=0.1 --out {R}/adapt_microwave_seed{s}"
       for s in (1, 2)},
}


def test_there_is_one_toml_per_experiment_of_run_all():
    assert set(FORMER_COMMANDS) <= {p.stem for p in EXPERIMENTS}
    script = (EXPERIMENTS[0].parent / "run_all.sh").read_text()
    assert "pnn run experiments/" in script.replace(".venv/bin/", "")


@pytest.mark.parametrize("name", sorted(FORMER_COMMANDS))
def test_each_experiment_file_is_exactly_its_former_command(name):
    from pnn.cli.experiment import experiment_from_adapt_args, experiment_from_compare_args

    argv = FORMER_COMMANDS[name].split()
    args = build_parser().parse_args(argv)
    build = {"train": experiment_from_train_args, "compare": experiment_from_compare_args,
             "adapt": experiment_from_adapt_args}[argv[0]]
    from_flags = build(args)
    from_file = Experiment.from_toml(EXPERIMENTS[0].parent / f"{name}.toml")
    assert from_file.kind == argv[0]
    assert from_file == from_flags, (from_file.to_dict(), from_flags.to_dict())


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_file_is_valid_and_round_trips(path, tmp_path):
    exp = Experiment.from_toml(path)
    assert Experiment.from_dict(exp.to_dict()) == exp
    again = Experiment.from_toml(_write(tmp_path, exp.to_toml()))
    assert again == exp and again.to_dict() == exp.to_dict()
    assert exp.output.out and exp.output.out.startswith("experiments/results/")


def test_toml_round_trip_keeps_every_section(tmp_path):
    exp = Experiment.from_toml(_write(tmp_path, "perturb = ['noise:std=0.01', 'dead:channels=[0]']"
                                      "\nseeds = [3, 4]\n" + TINY.replace("seeds = [0]", "") + """
[run]
checkpoint_dir = "ck"
checkpoint_every = 5
resume = true

[output]
out = "r.json"
save = "m.pnn"
"""))
    d = exp.to_dict()
    assert d["seeds"] == [3, 4] and d["perturb"] == ["noise:std=0.01", "dead:channels=[0]"]
    assert d["task"]["classes"] == ["iy", "uw", "aa"] and d["task"]["val_fraction"] == 0.2
    assert d["method"]["hidden"] == [6] and d["method"]["theta"] == 4.5  # every config field
    assert d["run"] == {"checkpoint_dir": "ck", "checkpoint_every": 5, "resume": True}
    assert d["output"] == {"out": "r.json", "save": "m.pnn"}
    assert Experiment.from_toml(_write(tmp_path, exp.to_toml(), "b.toml")) == exp
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize("extra, match", [
    ("[task]\nname = 'vowels'\nshuffle = true\n",
     r"exp\.toml: \[task\]: unknown key\(s\) shuffle; valid keys: name, source, classes"),
    ("[run]\nevery = 3\n",
     r"exp\.toml: \[run\]: unknown key\(s\) every; valid keys: checkpoint_dir, "
     r"checkpoint_every, resume"),
    ("[outputs]\nout = 'x'\n",
     r"exp\.toml: unknown section\(s\) or key\(s\) outputs; valid: seeds, perturb, methods, "
     r"task, system"),
])
def test_unknown_section_or_key_names_file_section_key_and_valid_keys(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        Experiment.from_toml(_write(tmp_path, "[method]\nname = 'phyll'\n" + extra))


def test_unknown_system_parameter_lists_the_simulators_constructor_arguments(tmp_path):
    p = _write(tmp_path, TINY.replace('name = "acoustic"', 'name = "acoustic"\nc_nonlin = 3'))
    with pytest.raises(ConfigError, match=r"exp\.toml: \[system\] unknown key\(s\) c_nonlin for "
                                          r"the acoustic simulator; valid keys: name, .*nx, "
                                          r"ny, dx, .*c_nl"):
        Experiment.from_toml(p)
    p = _write(tmp_path, TINY.replace('name = "acoustic"', 'name = "optical"\ngamma = 0.004'))
    assert Experiment.from_toml(p).system.kwargs == {"gamma": 0.004}


def test_unknown_method_key_is_refused_by_the_config(tmp_path):
    p = _write(tmp_path, TINY.replace("epochs = 1", "epochs = 1\nlearning_rate = 0.1"))
    with pytest.raises(ConfigError, match=r"exp\.toml: \[method\] phyll: unknown key\(s\) "
                                          r"learning_rate for PhyLLConfig; valid keys: .*lr"):
        Experiment.from_toml(p)


@pytest.mark.parametrize("values, match", [
    ({"seeds": [0, -1]}, r"seeds: seed = -1: expected an integer in \[0, "),
    ({"seeds": [1, 1]}, r"seeds = \[1, 1\]: a seed is repeated"),
    ({"perturb": "wobble:std=1"}, r"perturb = 'wobble:std=1': .*wobble"),
    ({"methods": ["phyll", "magic"]}, r"unknown method\(s\) magic; valid methods: .*bp"),
    ({"task": {"test_fraction": 1.5}}, r"\[task\] test_fraction = 1\.5: expected a number "
                                        r"between 0 and 1"),
    ({"task": {"source": "timit"}}, r"\[task\] source = 'timit': expected one of "
                                     r"peterson_barney, hillenbrand"),
    ({"task": {"n_features": 8}}, r"n_features = 8: only the images task"),
    ({"run": {"resume": True}}, r"resume = true needs checkpoint_dir"),
    ({"method": {"name": "phyll", "lr": -1}}, r"PhyLLConfig\.lr = -1"),
    ({"system": {"name": "laser"}}, r"unknown system; valid systems: acoustic"),
])
def test_bad_values_are_refused_with_what_was_expected(values, match):
    d = {"method": {"name": "phyll"}, **values}
    with pytest.raises(ConfigError, match=r"^cmd: .*" + match):
        Experiment.from_dict(d, where="cmd")


def test_set_overrides_sections_top_level_and_bare_method_keys():
    exp = Experiment.from_dict({"method": {"name": "phyll", "epochs": 3}})
    new = exp.with_overrides(["method.lr=0.01", "system.c_nl=200", "seeds=[1, 2]",
                              "theta=4.0", "task.classes=pat", "task.source=hillenbrand",
                              "perturb='noise:std=0.02'"])
    assert new.method.config.lr == 0.01 and new.method.config.theta == 4.0
    assert new.method.config.epochs == 3 and new.system.kwargs == {"c_nl": 200}
    assert new.seeds == (1, 2) and new.task.classes == "pat"
    assert new.task.source == "hillenbrand" and new.perturb == ("noise:std=0.02",)
    assert exp.method.config.lr != 0.01  # frozen: the original is unchanged
    # another method starts from its own Config (phyll's fields would not fit bp's)
    bp = exp.with_overrides(["method.name=bp", "method.epochs=2"])
    assert bp.method.name == "bp" and bp.method.config.epochs == 2
    with pytest.raises(ConfigError, match=r"--set 'sytem.c_nl=1': unknown section 'sytem'; "
                                          r"valid sections: task, system, method"):
        exp.with_overrides(["sytem.c_nl=1"])
    with pytest.raises(ConfigError, match=r"--set: \[system\] unknown key\(s\) gamma for the "
                                          r"acoustic simulator"):
        exp.with_overrides(["system.gamma=0.004"])


@pytest.mark.parametrize("text, value", [("0.01", 0.01), ("[20, 20]", [20, 20]), ("true", True),
                                         ("hillenbrand", "hillenbrand"), ('"a b"', "a b"),
                                         ("null", None), ("1e-3", 1e-3)])
def test_override_values_are_read_as_toml_or_json(text, value):
    assert parse_override(f"method.x={text}") == ("method.x", value)


def test_pnn_train_flags_build_the_same_experiment_as_a_file(tmp_path):
    args = build_parser().parse_args([
        "train", "--method", "phyll", "--epochs", "1", "--hidden", "6", "--n-meas", "6",
        "--classes", "iy,uw,aa", "--set", "method.lr=0.01", "--set", "system.c_nl=120",
        "--set", "theta=4.0"])
    exp = experiment_from_train_args(args)
    from_file = Experiment.from_toml(_write(tmp_path, TINY)).with_overrides(
        ["method.lr=0.01", "system.c_nl=120", "method.theta=4.0"])
    assert exp == from_file


def test_pnn_train_bad_set_exits_2_naming_the_valid_keys(capsys):
    assert main(["train", "--method", "bp", "--set", "system.c_nonlin=1"]) == 2
    assert re.search(r"valid keys: name, .*nx, ny", capsys.readouterr().err)
    assert main(["train", "--method", "bp", "--set", "method.lr=-0.5"]) == 2
    assert "BPConfig.lr = -0.5" in capsys.readouterr().err


def test_pnn_run_bad_value_exits_2(tmp_path, capsys):
    p = _write(tmp_path, TINY.replace("epochs = 1", "epochs = 0"))
    assert main(["run", str(p)]) == 2
    assert "PhyLLConfig.epochs = 0: expected an integer >= 1" in capsys.readouterr().err
    assert main(["run", str(_write(tmp_path, "seeds = [", "broken.toml"))]) == 2
    assert "broken.toml: not valid TOML" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2


def test_records_of_several_seeds_are_written_as_each_finishes(tmp_path):
    out = tmp_path / "r.json"
    exp = Experiment.from_dict({"seeds": [0, 1], "methods": ["bp", "linear"],
                                "method": {"name": "bp", "epochs": 2},
                                "task": {"classes": ["iy", "uw", "aa"]},
                                "output": {"out": str(out)}})
    seen = []

    class Spy:
        def start(self, *a):
            return None, None

        def end(self, exp, seed, rec, data):
            pass

        def saved(self, path):
            pass

        def written(self, path, records):
            seen.append(len(read_records(path)))

    records = run_experiment(exp, progress=Spy())
    assert seen == [1, 2, 3, 4]
    assert [(r["method"], r["seed"]) for r in records] == [("bp", 0), ("bp", 1), ("linear", 0),
                                                           ("linear", 1)]
    # each record holds the single-method experiment that made it
    assert records[0]["experiment"]["method"]["epochs"] == 2
    assert records[2]["experiment"]["method"]["name"] == "linear"
    assert "methods" not in records[2]["experiment"]
    assert [r["test_accuracy"] for r in read_records(out)] == \
        [r["test_accuracy"] for r in records]
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.slow
def test_pnn_run_then_replay_the_record_gives_the_identical_test_accuracy(tmp_path, capsys):
    out = tmp_path / "r.json"
    p = _write(tmp_path, TINY + f'\n[output]\nout = "{out}"\n')
    assert main(["run", str(p)]) == 0
    rec = json.loads(out.read_text())
    assert rec["experiment"] == Experiment.from_toml(p).to_dict()
    assert rec["config"]["hidden"] == [6] and rec["system"] == "acoustic"
    capsys.readouterr()
    replay = tmp_path / "replay.json"
    assert main(["run", str(out), "--out", str(replay)]) == 0
    text = capsys.readouterr().out
    assert "identical" in text and "DIFFERENT" not in text
    again = json.loads(replay.read_text())
    assert again["test_accuracy"] == rec["test_accuracy"]
    assert again["params_sha256"] == rec["params_sha256"]
    assert json.loads(out.read_text()) == rec  # the replay did not overwrite the record


# ------------------------------------------------------------------------------ compare, adapt
COMPARE = """
kind = "compare"
seeds = [0, 1]
methods = ["bp", "linear"]

[task]
classes = ["iy", "uw", "aa"]

[method.bp]
epochs = 2

[compare]
split_seed = 0
"""

ADAPT = """
kind = "adapt"
seeds = [0]
methods = ["phyll", "insilico"]

[task]
classes = ["iy", "uw", "aa"]

[method.phyll]
hidden = [6]

[adapt]
epochs = 3
events = ["jump:epoch=1.5,factor=1.05", {kind = "drift", epoch = 2.5, rate = 0.01}]
"""


def test_compare_and_adapt_experiments_round_trip_with_their_sections(tmp_path):
    cmp = Experiment.from_toml(_write(tmp_path, COMPARE))
    assert cmp.kind == "compare" and cmp.settings("bp") == {"epochs": 2}
    assert cmp.compare.split == "shared" and cmp.compare.split_seed == 0
    assert cmp.settings("linear") == {} and cmp.method is None
    ad = Experiment.from_toml(_write(tmp_path, ADAPT, "adapt.toml"))
    assert [e.kind for e in ad.adapt.events] == ["jump", "drift"]
    # an event given as a table is the event given as text
    assert ad.to_dict()["adapt"]["events"] == ["jump:epoch=1.5,factor=1.05",
                                               "drift:epoch=2.5,rate=0.01"]
    assert ad.settings("phyll") == {"hidden": [6]} and ad.adapt.evals_per_epoch == 3
    for exp in (cmp, ad):
        assert Experiment.from_dict(json.loads(json.dumps(exp.to_dict()))) == exp
        assert Experiment.from_toml(_write(tmp_path, exp.to_toml(), "again.toml")) == exp
    new = cmp.with_overrides(["method.bp.lr=0.01", "compare.tune_trials=2", "seeds=[3]",
                              "compare.split=per_seed", "compare.split_seed=null"])
    assert new.settings("bp") == {"epochs": 2, "lr": 0.01} and new.seeds == (3,)
    assert new.compare.split == "per_seed" and new.compare.split_seed is None
    with pytest.raises(ConfigError, match=r"a compare experiment sets a method's field with "
                                          r"method\.<name>\.<key>=value, e.g\. "
                                          r"method\.bp\.epochs=5"):
        cmp.with_overrides(["method.epochs=3"])


@pytest.mark.parametrize("text, match", [
    (COMPARE + "shuffle = true\n",
     r"exp\.toml: \[compare\]: unknown key\(s\) shuffle; valid keys: split, split_seed, "
     r"tune_trials, tune_storage, tune_jobs, target"),
    (COMPARE.replace("[compare]", "[compare]\ntune_trials = 2\nsplit = 'shared'"),
     r"split = 'shared' with tune_trials = 2: tuning runs each seed on its own split; set "
     r"split = \"per_seed\""),
    (COMPARE + "target = 95\n", r"\[compare\] target = 95: expected a validation accuracy in "
                                r"\(0, 1\]"),
    (COMPARE.replace("[method.bp]", "[method.mf]"),
     r"\[method\.mf\]: mf is not in methods = \['bp', 'linear'\]; add it there or remove"),
    (COMPARE.replace("[method.bp]\nepochs = 2", "[method]\nname = 'bp'"),
     r"\[method\]: 'name' is not a method; a compare experiment sets each method's Config in "
     r"its own table"),
    (COMPARE.replace("epochs = 2", "epoch = 2"),
     r"exp\.toml: \[method\.bp\]: unknown key\(s\) epoch for BPConfig; valid keys: "),
    (COMPARE.replace('kind = "compare"', 'kind = "compare"\nperturb = "noise:std=0.1"'),
     r"unknown section\(s\) or key\(s\) perturb; valid: kind, seeds, methods, task, system, "
     r"method, compare, output, devices \(kind = 'compare'\); perturb belongs to kind = "
     r"'train'"),
    (COMPARE.replace('kind = "compare"', 'kind = "sweep"'),
     r"exp\.toml: kind = 'sweep': expected one of 'train', 'compare', 'adapt'"),
    (COMPARE.replace('methods = ["bp", "linear"]', ""),
     r"a compare experiment needs methods = \[\.\.\.\]"),
    (ADAPT + "evals = 3\n", r"\[adapt\]: unknown key\(s\) evals; valid keys: events, epochs, "
                            r"evals_per_epoch, pat_twin, tolerance"),
    (ADAPT.replace("epochs = 3", "epochs = 2"),
     r"\[adapt\] epochs = 2: the last event is at epoch 2\.5; give more epochs"),
    (ADAPT.replace("rate = 0.01", "rate = 0.01, speed = 2"),
     r"\[adapt\] events\[1\] = .*: unknown key\(s\) speed; valid keys: kind, epoch, factor, "
     r"offset, rate, param"),
    (ADAPT.replace("jump:epoch=1.5", "hop:epoch=1.5"),
     r"\[adapt\] events\[0\] = 'hop:epoch=1\.5,factor=1\.05': unknown event 'hop'"),
    (ADAPT.replace('"insilico"]', '"bp"]'),
     r"methods: bp has no physical layer, and adapt changes the physics during training"),
    (ADAPT.replace("seeds = [0]", "seeds = [0, 1]"),
     r"an adapt experiment runs one seed .*write one file per seed"),
    (ADAPT.replace("hidden = [6]", "epochs = 4"),
     r"\[method\.phyll\] epochs: an adapt experiment sets these itself"),
    (ADAPT + "pat_twin = 'fresh'\n", r"pat_twin = 'fresh': expected \"stale\""),
    (ADAPT.replace("[adapt]", "[adapt]\nevents_ = 1").replace("events = [", "x = ["),
     r"\[adapt\]: unknown key\(s\) events_, x"),
])
def test_compare_and_adapt_sections_are_validated_naming_file_section_and_key(tmp_path, text,
                                                                              match):
    with pytest.raises(ConfigError, match=match):
        Experiment.from_toml(_write(tmp_path, text))


@pytest.mark.slow
def test_compare_experiment_runs_and_replays_from_its_results_json(tmp_path, capsys):
    out = tmp_path / "cmp"
    p = _write(tmp_path, COMPARE + f'\n[output]\nout = "{out}"\n')
    assert main(["run", str(p)]) == 0
    records = json.loads((out / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in records) == [
        ("bp", 0), ("bp", 1), ("linear", 0), ("linear", 1)]
    exp = Experiment.from_toml(p)
    assert all(r["experiment"] == exp.to_dict() for r in records)
    assert {r["config"]["epochs"] for r in records if r["method"] == "bp"} == {2}
    # one split shared by both seeds (split_seed = 0), as pnn compare makes it
    assert len({json.dumps(r["data"], sort_keys=True) for r in records}) == 1
    for name in ("stats.json", "table.md", "cost_vs_accuracy.png"):
        assert (out / name).exists()
    capsys.readouterr()
    again = tmp_path / "again"
    assert main(["run", str(out / "results.json"), "--out", str(again)]) == 0
    text = capsys.readouterr().out
    assert text.count("identical") == 5 and "DIFFERENT" not in text
    replayed = json.loads((again / "results.json").read_text())
    key = lambda r: (r["method"], r["seed"])  # noqa: E731
    assert [r["test_accuracy"] for r in sorted(replayed, key=key)] == \
        [r["test_accuracy"] for r in sorted(records, key=key)]
    # a record that differs from the replay is reported, with exit status 1
    records[0]["test_accuracy"] = 0.123
    (out / "results.json").write_text(json.dumps(records))
    assert main(["run", str(out / "results.json")]) == 1
    assert "DIFFERENT" in capsys.readouterr().out


# ------------------------------------------------------------------------------ folder
FAST = """
[task]
classes = ["iy", "uw", "aa"]

[method]
name = "linear"
"""


def test_pnn_run_folder_skips_experiments_whose_record_is_current(tmp_path, capsys):
    folder = tmp_path / "exps"
    folder.mkdir()
    for name in ("b", "a"):
        _write(folder, FAST + f'\n[output]\nout = "{tmp_path / name}.json"\n', f"{name}.toml")
    assert main(["run", str(folder)]) == 0
    out = capsys.readouterr()
    assert out.err.index("[1/2] a.toml") < out.err.index("[2/2] b.toml")  # sorted
    assert "no record at" in out.err
    assert "2 ran, 0 current (skipped), 0 failed" in out.out
    first = (tmp_path / "a.json").read_text()
    assert json.loads(first)["pnn_version"]
    # again: both current, nothing rerun (the records stay byte for byte)
    assert main(["run", str(folder)]) == 0
    out = capsys.readouterr()
    assert "0 ran, 2 current (skipped), 0 failed" in out.out
    assert "a.toml: skipped" in out.err and (tmp_path / "a.json").read_text() == first
    # a changed experiment, another pnn version, or --force: run again
    _write(folder, FAST.replace('"linear"', '"linear"\nmax_iter = 4000')
           + f'\n[output]\nout = "{tmp_path / "a"}.json"\n', "a.toml")
    rec = json.loads((tmp_path / "b.json").read_text())
    rec["pnn_version"] = "0.0.1"
    (tmp_path / "b.json").write_text(json.dumps(rec))
    assert main(["run", str(folder)]) == 0
    out = capsys.readouterr()
    assert "holds a different experiment" in out.err and "written by pnn 0.0.1" in out.err
    assert "2 ran, 0 current" in out.out
    assert main(["run", str(folder), "--force"]) == 0
    assert "2 ran, 0 current" in capsys.readouterr().out


def test_pnn_run_folder_checks_every_file_before_running_any(tmp_path, capsys):
    folder = tmp_path / "exps"
    folder.mkdir()
    _write(folder, FAST + f'\n[output]\nout = "{tmp_path / "a"}.json"\n', "a.toml")
    _write(folder, FAST.replace("[task]", "[task]\nshuffle = true"), "b.toml")
    assert main(["run", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "b.toml: [task]: unknown key(s) shuffle" in err
    assert "1 of 2 experiment file(s)" in err and "nothing was run" in err
    assert not (tmp_path / "a.json").exists()
    assert main(["run", str(folder), "--set", "seeds=[1]"]) == 2
    assert "--set apply to one experiment file, not to the folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", str(empty)]) == 2
    assert "no experiment files (*.toml)" in capsys.readouterr().err


PROTOCOL = [p for p in EXPERIMENTS if p.name.startswith("protocol_")]


def test_the_protocol_grid_is_complete():
    """{vowels, images} x {acoustic, optical, microwave}, every method, tuned, 5 seeds."""
    assert {p.stem for p in PROTOCOL} == {f"protocol_{s}_{t}" for s in
                                          ("acoustic", "optical", "microwave")
                                          for t in ("vowels", "images")}


@pytest.mark.parametrize("path", PROTOCOL, ids=lambda p: p.name)
def test_each_protocol_file_is_exactly_the_command_in_its_header(path):
    from pnn.cli.experiment import experiment_from_compare_args

    (line,) = [ln for ln in path.read_text().splitlines() if ln.startswith("# The same as: pnn ")]
    argv = line.removeprefix("# The same as: pnn ").split()
    exp = Experiment.from_toml(path)
    assert exp == experiment_from_compare_args(build_parser().parse_args(argv))
    assert sorted(exp.methods) == sorted(["phyll", "pat", "insilico", "zo", "bp", "linear",
                                          "ff", "mf"])
    assert len(exp.seeds) == 5


def test_images_as_a_grid_of_pixels_through_the_command_line():
    """``--image-reduce resize --n-features 16``: a 4 x 4 grid of area-averaged pixels, kept
    in the experiment and in a saved model's task options."""
    from pnn.experiment import TaskSpec

    args = build_parser().parse_args(["train", "--task", "images", "--image-reduce", "resize",
                                      "--n-features", "16", "--epochs", "1"])
    exp = experiment_from_train_args(args)
    assert (exp.task.reduce, exp.task.n_features) == ("resize", 16)
    data = exp.task.load(0)
    assert data.n_features == 16 and "4x4" in json.dumps(data.info)
    assert exp.task.header(0)["options"]["image_reduce"] == "resize"
    assert Experiment.from_dict(exp.to_dict(), where="round trip").task == exp.task
    pca = TaskSpec.from_dict({"name": "images", "reduce": "pca"}, "t")
    assert pca.reduce is None and "image_reduce" not in pca.header(0)["options"]
    with pytest.raises(ConfigError, match="only the images task"):
        TaskSpec.from_dict({"name": "vowels", "reduce": "resize"}, "t")
    with pytest.raises(ConfigError, match="expected \"pca\""):
        TaskSpec.from_dict({"name": "images", "reduce": "crop"}, "t")


def test_the_comparison_statistics_are_strict_json(tmp_path):
    """One seed gives no interval: stats.json says null, never a bare NaN."""
    from pnn.compare import write_report

    def no_nan(text):
        raise ValueError(f"bare {text} in stats.json")

    records = json.loads((Path(__file__).resolve().parents[1] / "experiments" / "results" /
                          "compare_acoustic_hillenbrand7" / "results.json").read_text())
    one_seed = [r for r in records if r["seed"] == 0]
    write_report(one_seed, tmp_path, "one seed")
    stats = json.loads((tmp_path / "stats.json").read_text(), parse_constant=no_nan)
    assert any(v is None for row in stats["rows"] for v in row.values()
               if not isinstance(v, (dict, list)))
