import json

import pytest

from pnn.cli import build_parser, main


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for opt in ("--system", "--task", "--method", "--epochs", "--seed", "--out", "--hidden",
                "--vowel-source", "--classes", "--download", "--data-path"):
        assert opt in out
    assert "valid: acoustic" in out.replace("\n", " ") or "acoustic" in out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "--system", "laser"], r"unknown system 'laser'; valid systems: .*acoustic"),
        (["train", "--method", "magic"], r"unknown method 'magic'; valid methods: .*phyll"),
        (["train", "--task", "speech"], r"unknown task 'speech'; valid tasks: .*vowels"),
    ],
)
def test_unknown_names_list_the_valid_ones(argv, match, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    import re

    assert re.search(match, capsys.readouterr().err)


def test_train_bp_writes_a_complete_record(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["train", "--method", "bp", "--epochs", "3", "--seed", "1", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    for key in ("test_accuracy", "train_accuracy", "history", "cost", "config", "seed", "versions"):
        assert key in rec
    assert set(rec["cost"]) >= {"physical_queries", "digital_flops", "wall_s"}
    assert set(rec["machine"]) == {"platform", "machine", "processor", "jax_backend", "device"}
    import jax

    assert rec["machine"]["jax_backend"] == jax.default_backend()
    assert len(rec["history"]) == 3 and rec["seed"] == 1
    assert rec["test_accuracy"] > 0.5  # 10 classes, chance 0.1
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.slow
def test_train_phyll_acoustic_end_to_end(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["train", "--system", "acoustic", "--task", "vowels", "--method", "phyll",
               "--epochs", "1", "--hidden", "6", "--n-meas", "6", "--classes", "iy,uw,aa",
               "--perturb", "dead:channels=[0],noise:std=1e-6", "--out", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    # the record states every perturbation and its parameters (one list per physical layer)
    (pert,) = rec["perturbations"]
    assert [p["name"] for p in pert] == ["dead", "noise"]
    assert pert[0]["channels"] == [0] and pert[1]["std"] == 1e-6 and "seed" in pert[1]
    q = rec["cost"]["queries_by_purpose"]
    assert q["train"] + q["eval"] + q["test"] == rec["cost"]["physical_queries"]
    assert rec["cost"]["physical_queries"] > 0 and rec["system"] == "acoustic"
    assert rec["config"]["hidden"] == [6]
    assert rec["test_accuracy"] > 0.5  # three well-separated vowels, chance 1/3
    assert "physical queries" in capsys.readouterr().out


def test_bad_perturbation_is_a_clear_error(capsys):
    assert main(["train", "--epochs", "1", "--perturb", "wobble:std=1"]) == 2
    assert "wobble" in capsys.readouterr().err


def test_resume_needs_a_checkpoint_dir(capsys):
    assert main(["train", "--resume"]) == 2
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err


def test_bad_data_option_is_a_clear_error(capsys):
    assert main(["train", "--method", "bp", "--epochs", "1", "--classes", "iy,zz"]) == 2
    assert "unknown vowel class(es) ['zz']" in capsys.readouterr().err


def test_parser_builds():
    assert build_parser().prog == "pnn"


@pytest.mark.parametrize("argv, message", [
    (["adapt"], "give at least one --event, e.g. --event jump:epoch=6.5"),
    (["adapt", "--event", "jump:epoch=x"], "event parameter epoch in 'jump:epoch=x' must be a "
                                            "number"),
    (["adapt", "--methods", "phyll,bp", "--event", "jump:epoch=1"],
     "bp has no physical layer, and adapt changes the physics during training; valid "
     "methods: phyll, pat, insilico, zo"),
    (["adapt", "--epochs", "3", "--event", "jump:epoch=3.5"],
     "[adapt] epochs = 3: the last event is at epoch 3.5; give more epochs than that"),
])
def test_adapt_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
