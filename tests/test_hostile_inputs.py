"""Hostile inputs refused where they enter, by class (issue 24): integers that overflow, sizes
that would exhaust memory, outputs that are not regular files, numbers cut mid-value, values
finite in float64 but not in float32, options that do nothing for the task, physical
parameters that do nothing or break everything, ``pnn run --print`` of digital methods and
download addresses."""

import re

import pytest

from pnn.cli import main
# the same checks as the command-line error tests: nothing loaded, one line on stderr
from tests.test_cli_errors import _one_error_line, no_work  # noqa: F401


# 1. integers that overflow

@pytest.mark.parametrize("argv, command", [
    (["demo", "--seed", str(2**70)], "demo"),
    (["tune", "--methods", "bp", "--seed", "-1"], "tune"),
])
def test_a_seed_out_of_range_is_refused_before_any_work(argv, command, tmp_path, no_work,
                                                        capsys):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys, command, r"--seed -?\d+: expected a whole number in \[0, 2147482\]")


def test_a_simulator_seed_beyond_32_bits_is_refused_not_wrapped():
    from pnn.sim.acoustic import AcousticLayer

    with pytest.raises(ValueError, match=r"seed = 18446744073709551616: expected an integer in "
                                         r"\[0, 4294967295\]"):
        AcousticLayer(2, 2, seed=2**64)


# 2. sizes that would exhaust memory

def test_a_grid_larger_than_memory_is_refused_with_an_estimate():
    from pnn.memory import MemoryEstimateError
    from pnn.sim.acoustic import AcousticLayer

    with pytest.raises(MemoryEstimateError, match=r"acoustic: a 1000000x1000000 grid needs at "
                                                  r"least [\d,.]+ GiB .*a lower bound from the "
                                                  r"shapes\), more than this machine's .*give "
                                                  r"smaller nx, ny"):
        AcousticLayer(2, 2, nx=10**6, ny=10**6)


def test_hidden_widths_larger_than_memory_are_refused_before_training(tmp_path, capsys):
    argv = ["train", "--method", "phyll", "--system", "none", "--classes", "iy,uw,aa",
            "--hidden", f"{10**9},{10**9}", "--epochs", "1", "--out", str(tmp_path / "r.json")]
    assert main(argv) == 2
    _one_error_line(capsys, "train", r"phyll on .* needs at least [\d,.]+ GiB .* give smaller "
                                     r"hidden \(now \(1000000000, 1000000000\)\)")
    assert not (tmp_path / "r.json").exists()


# 3. outputs that are not regular files

def test_an_output_that_is_a_fifo_is_refused_not_replaced(tmp_path, no_work, capsys):
    import os
    import stat

    from pnn.fileio import OutputPathError, atomic_write_text

    fifo = tmp_path / "r.json"
    os.mkfifo(fifo)
    assert main(["train", "--method", "bp", "--out", str(fifo)]) == 2
    _one_error_line(capsys, "train", r"'.*r\.json': is a FIFO \(named pipe\), not a regular "
                                     r"file, and would be replaced by one; give the path of a "
                                     r"regular file")
    with pytest.raises(OutputPathError, match=r"it is a FIFO \(named pipe\), not a regular file"):
        atomic_write_text(fifo, "{}")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / "results.json")
    assert main(["compare", "--methods", "bp", "--out", str(tmp_path / "out")]) == 2
    _one_error_line(capsys, "compare", r"results\.json in it is a FIFO")


# 4. numbers cut mid-value

@pytest.mark.parametrize("cut", ["1.2e", "3.", "-", "1.5e+"])
def test_a_csv_value_cut_short_is_an_error_naming_the_line(tmp_path, cut):
    from pnn.cli.model import read_rows

    path = tmp_path / "x.csv"
    path.write_text(f"F1,F2\n0.5,1.5\n0.25,{cut}")
    with pytest.raises(ValueError, match=r"x\.csv, line 3: expected 2 complete numbers .*"
                                         r"cut short"):
        read_rows(path, ["F1", "F2"])
    path.write_text("F1,F2\n0.5,1.5e3\n-.25,+2E-1\n")
    assert read_rows(path, ["F1", "F2"]).tolist() == [[0.5, 1500.0], [-0.25, 0.2]]


# 6. options that do nothing for the chosen task

@pytest.mark.parametrize("argv, flags", [
    (["train", "--task", "images", "--vowel-source", "hillenbrand"], "--vowel-source"),
    (["train", "--task", "images", "--classes", "iy,uw"], "--classes"),
    (["compare", "--methods", "bp", "--n-features", "4"], "--n-features"),
    (["tune", "--methods", "bp", "--image-reduce", "resize", "--image-source", "digits"],
     "--image-source, --image-reduce"),
    (["demo", "--image-source", "mnist_subset"], "--image-source"),
])
def test_an_option_for_the_other_task_is_refused(argv, flags, tmp_path, capsys):
    from pnn.cli import main

    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{flags}: only for the " in err and "remove" in err
    assert not (tmp_path / "out").exists()


def test_eval_keeps_the_saved_task_options_unless_a_flag_is_given(tmp_path, capsys):
    """A model trained on three vowels evaluates on them with no data flags (argparse
    defaults used to replace the saved options)."""
    from pnn.cli import main

    model = tmp_path / "m.pnn"
    assert main(["train", "--method", "linear", "--classes", "iy,uw,aa", "--test-fraction",
                 "0.4", "--save", str(model)]) == 0
    capsys.readouterr()
    assert main(["eval", str(model)]) == 0
    assert "test accuracy" in capsys.readouterr().out


# A. `pnn run --print` of digital methods

@pytest.mark.parametrize("method", ["bp", "linear", "ff", "mf", "phyll"])
def test_run_print_writes_every_method_and_the_toml_reads_back_equal(method, tmp_path, no_work,
                                                                      capsys):
    import tomllib

    from pnn.experiment import Experiment

    epochs = 1 if method == "linear" else 2
    path = tmp_path / "e.toml"
    path.write_text(f'kind = "train"\n[system]\nname = "optical"\n[method]\nname = "{method}"\n'
                    f"epochs = {epochs}\n")
    assert main(["run", "--print", str(path)]) == 0
    printed = capsys.readouterr().out
    assert Experiment.from_dict(tomllib.loads(printed)) == Experiment.from_toml(path)


def test_a_compare_experiment_of_digital_methods_prints_and_reads_back_equal():
    import tomllib

    from pnn.experiment import Experiment

    # from a JSON record, where an unset optional field is null
    exp = Experiment.from_dict({"kind": "compare", "methods": ["bp", "linear", "phyll"],
                                "method": {"bp": {"width": None, "epochs": 3},
                                           "linear": {"C": None}}})
    assert Experiment.from_dict(tomllib.loads(exp.to_toml())) == exp


# B. download addresses

def test_every_download_address_in_pnn_data_is_https():
    import importlib
    import pkgutil
    from pathlib import Path

    import pnn.data

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)

    urls = []
    for info in pkgutil.iter_modules(pnn.data.__path__, "pnn.data."):
        module = importlib.import_module(info.name)
        urls += [s for v in vars(module).values() for s in strings(v) if "://" in s]
        source = Path(module.__file__).read_text()
        urls += re.findall(r"\b[a-zA-Z][\w+.-]*://[^\s\"')]+", source)
    assert any("fashion-mnist" in u for u in urls)  # the tables were read
    assert [u for u in urls if not u.startswith("https://")] == []


def test_a_plain_http_mirror_is_refused_before_any_download(tmp_path, monkeypatch):
    from pnn.data.images import load_images

    def no_network(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    for url in ("http://mirror.test/mnist", "ftp://mirror.test/mnist", "mirror.test/mnist"):
        with pytest.raises(ValueError, match=r"base_url .*: give an https:// mirror"):
            load_images("mnist", cache_dir=tmp_path, download=True, base_url=url)


# C. values finite in float64 but not in float32

def test_a_value_finite_in_float64_but_inf_in_float32_is_refused():
    from pnn.layer import LayerSpec
    from pnn.sim.acoustic import AcousticLayer

    limit = r".*largest finite value 3\.403e\+38\); give a value of magnitude <= 3\.403e\+38"
    with pytest.raises(ValueError, match=r"acoustic: c0 = 1e\+39 is finite but becomes inf in "
                                         r"float32" + limit):
        AcousticLayer(2, 2, c0=1e39)
    with pytest.raises(ValueError, match=r"hi = 1e\+39 is finite but becomes inf in float32"
                                         + limit):
        LayerSpec(2, 2, hi=1e39)


def test_a_perturbation_parameter_beyond_float32_is_refused():
    from pnn.perturb import AdditiveNoise, with_param
    from pnn.sim.ablation import RandomLinear

    layer = RandomLinear(2, 2)
    with pytest.raises(ValueError, match=r"AdditiveNoise: std = 1e\+39 is finite but becomes inf "
                                         r"in float32"):
        AdditiveNoise(layer, std=1e39, seed=0)
    with pytest.raises(ValueError, match=r"gain = -1e\+39 is finite but becomes inf in float32"):
        with_param(layer, "gain", -1e39)


# D. physical parameters that do nothing or break everything

@pytest.mark.parametrize("region", [(40, 50, 0, 10), (-8, -1, 5, 10), (10, 10, 5, 10),
                                    (0, 8, 5)])
def test_an_acoustic_nonlinear_region_outside_the_grid_is_refused(region):
    from pnn.sim.acoustic import AcousticLayer

    with pytest.raises(ValueError, match=r"acoustic: nl_region = .*: expected a cell box \(x0, "
                                         r"x1, y0, y1\) of integers with 0 <= x0 < x1 <= nx = "
                                         r"32 and 0 <= y0 < y1 <= ny = 36; give a box inside"):
        AcousticLayer(2, 2, nl_region=region)
    AcousticLayer(2, 2, nl_region=(0, 32, 30, 36))  # the edges of the grid are inside
