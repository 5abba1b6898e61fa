"""A user's mistake ends in one line on stderr and exit status 2, for every command, and before
any training starts; ``pnn --debug COMMAND`` shows the traceback instead."""

import os
import re
import socket

import pytest

from pnn import experiment
from pnn.cli import main
from pnn.fileio import OutputPathError


@pytest.fixture
def no_work(monkeypatch):
    """Loading data (the step before any training) fails the test: a refusal must come first."""
    def refuse(*a, **k):
        raise AssertionError("data were loaded: the output was not checked before the run")

    monkeypatch.setattr(experiment.TaskSpec, "load", refuse)
    monkeypatch.setattr("pnn.cli.common.load_data", refuse)


def _one_error_line(capsys, command: str, match: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pnn {command}: error: ")
    assert re.search(match, lines[0]), lines[0]
    return lines[0]


@pytest.fixture
def places(tmp_path):
    """A directory, a file, a symlink to a file elsewhere and a folder holding a directory where
    a result file goes."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "victim").write_text("keep me")
    os.symlink(tmp_path / "victim", tmp_path / "alink.json")
    (tmp_path / "blocked" / "results.json").mkdir(parents=True)
    (tmp_path / "blocked" / "adapt.json").mkdir()
    return tmp_path


EVENT = ["--event", "jump:epoch=1,factor=0.9"]


@pytest.mark.parametrize("argv, command, match", [
    (["train", "--method", "bp", "--out", "{p}/adir"], "train",
     r"\[output\] out \(--out\) '.*adir': is a directory, a file was expected; give a file"),
    (["train", "--method", "bp", "--out", "{p}/alink.json"], "train",
     r"'.*alink.json': is a symlink \(to '.*victim'\)"),
    (["train", "--method", "bp", "--out", "{p}/afile/r.json"], "train",
     r"'.*afile' is not a directory"),
    (["train", "--method", "bp", "--save", "{p}/adir"], "train",
     r"\[output\] save \(--save\) '.*adir': is a directory"),
    (["train", "--method", "bp", "--checkpoint-dir", "{p}/afile"], "train",
     r"\[run\] checkpoint_dir \(--checkpoint-dir\) '.*afile': is a file, not a folder"),
    (["compare", "--methods", "bp", "--out", "{p}/afile"], "compare",
     r"\[output\] out \(--out\) '.*afile': is a file, not a folder; give a folder"),
    (["compare", "--methods", "bp", "--out", "{p}/blocked"], "compare",
     r"results\.json in it is a directory, where a file will be written"),
    (["tune", "--methods", "bp", "--out", "{p}/afile"], "tune", r"is a file, not a folder"),
    (["adapt", "--methods", "phyll", *EVENT, "--out", "{p}/blocked"], "adapt",
     r"adapt\.json in it is a directory"),
    (["demo", "--out", "{p}/afile"], "demo", r"--out '.*afile': is a file, not a folder"),
])
def test_an_unwritable_output_is_refused_before_anything_runs(argv, command, match, places,
                                                              no_work, capsys):
    argv = [a.replace("{p}", str(places)) for a in argv]
    assert main(argv) == 2
    _one_error_line(capsys, command, match)
    assert (places / "victim").read_text() == "keep me"


def test_pnn_run_checks_the_experiment_outputs_first(places, no_work, capsys):
    toml = places / "exp.toml"
    toml.write_text('seeds = [0]\n[task]\nname = "vowels"\n[method]\nname = "bp"\n'
                    f'[output]\nout = "{places / "adir"}"\n')
    assert main(["run", str(toml)]) == 2
    _one_error_line(capsys, "run", r"\[output\] out \(--out\) '.*adir': is a directory")
    assert main(["run", str(toml), "--out", str(places / "alink.json")]) == 2
    _one_error_line(capsys, "run", r"is a symlink")
    # a folder of experiments: every file's outputs are checked before any runs
    folder = places / "folder"
    folder.mkdir()
    (folder / "a.toml").write_text(toml.read_text().replace(str(places / "adir"),
                                                            str(places / "ok.json")))
    (folder / "b.toml").write_text(toml.read_text())
    assert main(["run", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "b.toml: [output] out (--out)" in err and "nothing was run" in err
    assert "a.toml" not in err.replace(str(folder / "b.toml"), "")


def test_eval_and_predict_check_out_before_reading_the_model(places, capsys):
    # the model file does not exist: the refusal of --out comes first
    assert main(["eval", str(places / "missing.pnn"), "--out", str(places / "adir")]) == 2
    _one_error_line(capsys, "eval", r"--out '.*adir': is a directory")
    assert main(["predict", str(places / "missing.pnn"), str(places / "x.csv"), "--out",
                 str(places / "alink.json")]) == 2
    _one_error_line(capsys, "predict", r"--out '.*alink.json': is a symlink")


@pytest.mark.parametrize("argv, command, match", [
    # a directory where a file is read
    (["train", "--method", "bp", "--task", "vowels", "--vowel-source", "hillenbrand",
      "--data-path", "{p}/adir"], "train",
     r"'?.*adir'?: is a directory, a file was expected; give a file's path"),
    (["eval", "{p}/adir"], "eval", r"adir: is a directory, a file was expected"),
    # a file that is not there
    (["run", "{p}/missing.toml"], "run", r"missing\.toml: no such file or folder"),
    (["eval", "{p}/missing.pnn"], "eval", r"missing\.pnn does not exist"),
    # a broken experiment file (TOML) and a bad value in one (ConfigError)
    (["run", "{p}/broken.toml"], "run", r"broken\.toml: not valid TOML"),
    (["run", "{p}/bad.toml"], "run", r"epochs = 0: expected an integer >= 1"),
    # a bad perturbation (ValueError)
    (["train", "--method", "phyll", "--perturb", "wobble:std=1"], "train", r"wobble"),
])
def test_user_errors_are_one_line_and_exit_2(argv, command, match, places, capsys):
    (places / "broken.toml").write_text("seeds = [\n")
    (places / "bad.toml").write_text('seeds = [0]\n[method]\nname = "phyll"\nepochs = 0\n')
    argv = [a.replace("{p}", str(places)) for a in argv]
    assert main(argv) == 2
    _one_error_line(capsys, command, match)


def test_an_unreachable_instrument_is_one_line(capsys, monkeypatch):
    pytest.importorskip("pyvisa")
    pytest.importorskip("pyvisa_py")
    # skip the data: the connection is what is under test (it is made before any training)
    monkeypatch.setattr(experiment.TaskSpec, "load", _tiny_data)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: refuses connections
        port = s.getsockname()[1]
        argv = ["train", "--method", "phyll", "--epochs", "1", "--instrument",
                f"visa:TCPIP::127.0.0.1::{port}::SOCKET"]
        assert main(argv) == 2
        _one_error_line(capsys, "train", rf"127\.0\.0\.1::{port}::SOCKET' is unreachable .*"
                                         r"check the address")
        from pnn.drivers.errors import InstrumentConnectionError

        with pytest.raises(InstrumentConnectionError, match="is unreachable"):
            main(["--debug", *argv])


def _tiny_data(self, seed):
    from pnn.data.vowels import load_vowels

    return load_vowels("peterson_barney", seed=seed)


def test_a_port_out_of_range_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["emulate", "--port", "99999"])
    assert e.value.code == 2
    _one_error_line(capsys, "emulate", r"argument --port: expected a TCP port from 0 \(any free "
                                       r"one\) to 65535, got '99999'; see 'pnn emulate --help'$")


def test_a_port_in_use_is_one_line_naming_it(capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # taken: the emulator cannot listen there
        port = s.getsockname()[1]
        assert main(["emulate", "--port", str(port), "--system", "none"]) == 2
    _one_error_line(capsys, "emulate", rf"--port {port}: cannot listen on 127\.0\.0\.1:{port} "
                                       r"\(Address already in use\); choose another port, or 0")


def test_every_command_line_mistake_is_one_line(capsys):
    """argparse's own refusals (a bad value, a missing command) are one line as well: the usage
    is one --help away."""
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "x"])
    assert e.value.code == 2
    _one_error_line(capsys, "train", r"argument --epochs: invalid int value: 'x'; see "
                                     r"'pnn train --help'$")
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("pnn: error: the following arguments are required: "
                                       "COMMAND; see 'pnn --help'\n")


def test_debug_shows_the_traceback_instead(places, no_work, capsys):
    with pytest.raises(OutputPathError, match=r"'.*adir': is a directory"):
        main(["--debug", "train", "--method", "bp", "--out", str(places / "adir")])
    with pytest.raises(IsADirectoryError):
        main(["--debug", "eval", str(places / "adir")])
    assert capsys.readouterr().err == ""


def test_a_bug_is_not_dressed_up_as_a_user_error(monkeypatch):
    """Only user errors become one line: anything else (a bug) keeps its traceback."""
    from pnn.data import TestSetSealed

    def sealed(args):
        raise TestSetSealed("test split read during training")

    monkeypatch.setattr("pnn.cli.demo.cmd_demo", sealed)  # looked up when the command runs
    with pytest.raises(TestSetSealed, match="test split read during training"):
        main(["demo"])


# ------------------------------------------------------------ the same, as a real process
def _pnn(*argv, cwd):
    """Run ``python -m pnn`` (the console script's entry point) as a user would; 300 s only
    bounds a hang."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "pnn", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _one_line_exit_2(proc, command: str, match: str) -> None:
    """Exit status 2 and the process's whole stderr one line naming the problem: no traceback,
    no usage block, nothing printed by the libraries on the way."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"pnn {command}: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]


def test_as_a_process_an_unreachable_instrument_is_one_line(tmp_path):
    pytest.importorskip("pyvisa")
    pytest.importorskip("pyvisa_py")
    from pnn.drivers.profile import PROFILE_DIR

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: refuses connections
        port = s.getsockname()[1]
        proc = _pnn("train", "--method", "phyll", "--epochs", "1", "--instrument",
                    f"visa:TCPIP::127.0.0.1::{port}::SOCKET", "--profile",
                    str(PROFILE_DIR / "emulator.toml"), "--out", str(tmp_path / "r.json"),
                    cwd=tmp_path)
    _one_line_exit_2(proc, "train", rf"'TCPIP::127\.0\.0\.1::{port}::SOCKET' is unreachable "
                                    r"\(ConnectionRefusedError.*check the address")
    assert not (tmp_path / "r.json").exists()


def test_as_a_process_a_data_path_that_is_a_directory_is_one_line(tmp_path):
    (tmp_path / "adir").mkdir()
    proc = _pnn("train", "--method", "bp", "--task", "vowels", "--vowel-source", "hillenbrand",
                "--data-path", str(tmp_path / "adir"), cwd=tmp_path)
    _one_line_exit_2(proc, "train",
                     r"adir'?: is a directory, a file was expected; give a file's path")


def test_as_a_process_a_port_out_of_range_is_one_line(tmp_path):
    proc = _pnn("emulate", "--port", "99999", cwd=tmp_path)
    _one_line_exit_2(proc, "emulate", r"argument --port: expected a TCP port from 0 \(any free "
                                      r"one\) to 65535, got '99999'; see 'pnn emulate --help'$")
    assert proc.stdout == ""  # nothing was started


def test_as_a_process_an_unwritable_out_is_refused_before_training(tmp_path):
    (tmp_path / "afile").write_text("x")
    ck = tmp_path / "ck"
    proc = _pnn("train", "--method", "bp", "--epochs", "1", "--out",
                str(tmp_path / "afile" / "r.json"), "--checkpoint-dir", str(ck), cwd=tmp_path)
    # one line is all: training announces itself on stderr before its first step ("pnn train:
    # bp on digital ..." and a progress bar), so none of it started
    _one_line_exit_2(proc, "train", r"out \(--out\) '.*afile/r\.json'.*'.*afile' is not a "
                                    r"directory")
    assert proc.stdout == ""
    assert not ck.exists() or not any(ck.iterdir())  # no checkpoint written
    assert (tmp_path / "afile").read_text() == "x"


def test_as_a_process_debug_shows_the_traceback(tmp_path):
    (tmp_path / "adir").mkdir()
    proc = _pnn("--debug", "train", "--method", "bp", "--task", "vowels", "--vowel-source",
                "hillenbrand", "--data-path", str(tmp_path / "adir"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("IsADirectoryError")
