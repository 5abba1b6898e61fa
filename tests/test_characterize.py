"""``pnn characterize``: the numerics against maps of known order and rank, noise and drift
injected on purpose, and the command on a simulator, a recording and an emulated instrument."""

import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from pnn import registry
from pnn import characterize as ch
from pnn.cli import main
from pnn.perturb import AdditiveNoise, Drift

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "phyll_measured_acoustic"
#: a small, fast acoustic simulator (the trainer tests' settings)
SMALL_ACOUSTIC = ["--set", "system.nx=24", "--set", "system.ny=24", "--set",
                  "system.pml_width=4", "--set", "system.n_steps=70"]


def _strict(text: str) -> dict:
    def refuse(c):
        raise ValueError(f"non-strict JSON constant {c}")

    return json.loads(text, parse_constant=refuse)


def _uniform(n, n_in, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, size=(n, n_in))


def _measure(layer, x):
    return np.asarray(layer(np.asarray(x, np.float32)), np.float64)


# ----------------------------------------------------------------------------- fit_r2
def test_a_linear_map_is_fitted_exactly_by_the_linear_fit():
    layer = registry.make_system("random_linear", 6, 5, seed=1)
    x = _uniform(400, 6)
    r = ch.fit_r2(x, _measure(layer, x))
    assert r["linear"] > 1 - 1e-6 and r["quadratic"] > 1 - 1e-6
    assert (r["n_samples"], r["n_train"], r["n_test"]) == (400, 280, 120)
    assert r["n_features_linear"] == 7 and r["n_features_quadratic"] == 7 + 21
    assert r["products"] == "all 21" and "quadratic_note" not in r


def test_speckle_is_quadratic_and_tanh_has_higher_orders():
    x = _uniform(600, 8)
    speckle = ch.fit_r2(x, _measure(registry.make_system("random_nonlinear", 8, 6, seed=0), x))
    tanh = ch.fit_r2(x, _measure(registry.make_system("random_nonlinear", 8, 6, seed=0,
                                                      kind="tanh"), x))
    # |G d|^2 is an exact quadratic form: the degree-2 fit is exact, the linear one is not
    assert speckle["linear"] < 0.97 and speckle["quadratic"] > 1 - 1e-5
    assert tanh["linear"] < tanh["quadratic"] < 0.99 < speckle["quadratic"]


def test_too_few_samples_for_the_degree_2_fit_gives_nan_with_the_reason():
    x = _uniform(40, 8)  # 45 degree-2 features, 28 training samples
    r = ch.fit_r2(x, x ** 2)
    assert math.isnan(r["quadratic"]) and not math.isnan(r["linear"])
    assert "45 features need at least 45 training samples, 28 given" in r["quadratic_note"]
    assert _strict(ch.to_json({"fit": r}))["fit"]["quadratic"] is None


def test_past_the_feature_cap_a_random_subset_of_products_is_used(monkeypatch):
    monkeypatch.setattr("pnn.fits.MAX_FEATURES", 30)  # where the fits live
    x = _uniform(500, 8)
    r = ch.fit_r2(x, _measure(registry.make_system("random_nonlinear", 8, 4, seed=0), x))
    # 1 + 8 linear + every square (8) + 13 random cross products of 28
    assert r["n_features_quadratic"] == 30 and r["products"].startswith("21 of 36")
    assert "a random 21 of the 36 products" in r["quadratic_note"]
    assert r["linear"] < r["quadratic"] < 1 - 1e-3  # the missing products' share is missed


def test_fit_r2_refuses_bad_input():
    with pytest.raises(ValueError, match=r"fit_r2: 10 drives but 9 measurements"):
        ch.fit_r2(np.zeros((10, 2)), np.zeros((9, 1)))
    with pytest.raises(ValueError, match=r"holdout = 1.5; expected a fraction in \(0, 1\)"):
        ch.fit_r2(np.zeros((10, 2)), np.zeros((10, 1)), holdout=1.5)
    with pytest.raises(ValueError, match=r"measurements hold 1 non-finite"):
        ch.fit_r2(np.zeros((10, 2)), np.r_[np.zeros(9), np.nan][:, None])


# ----------------------------------------------------------------------------- effective rank
def test_effective_rank_of_data_of_known_spectrum():
    rng = np.random.default_rng(0)
    n, k, n_out = 300, 3, 10
    u, _ = np.linalg.qr(rng.normal(size=(n, k)) - 0.0)
    u -= u.mean(0)  # centred columns ...
    u, _ = np.linalg.qr(u)  # ... kept orthonormal (the span stays centred)
    v, _ = np.linalg.qr(rng.normal(size=(n_out, k)))
    sv = np.array([4.0, 2.0, 1.0])
    y = 5.0 + u @ np.diag(sv) @ v.T
    r = ch.effective_rank(y)
    lam = sv ** 2
    p = sv / sv.sum()
    assert r["participation_ratio"] == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-9)
    assert r["entropy_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert r["n_components"] == 3
    assert r["explained_variance"][:3] == pytest.approx(lam / lam.sum(), rel=1e-9)
    # isotropic responses on every channel: each measure close to the channel count
    iso = ch.effective_rank(rng.normal(size=(20000, 8)))
    assert 7.9 < iso["participation_ratio"] <= 8 and 7.9 < iso["entropy_rank"] <= 8
    assert iso["n_components"] == 8
    flat = ch.effective_rank(np.ones((5, 3)))
    assert flat["participation_ratio"] == 0 and "do not vary" in flat["note"]


# ----------------------------------------------------------------------------- repeatability
def test_repeatability_is_zero_noise_on_a_simulator_and_finds_added_noise():
    sim = registry.make_system("random_nonlinear", 5, 4, seed=2)
    clean = ch.repeatability(sim, repeats=3, n_drives=64)
    assert clean["noise"] == 0 and clean["noise_to_signal"] == 0 and clean["snr_db"] == math.inf
    assert "deterministic" in clean["note"] and clean["physical_queries"] == 192
    assert _strict(ch.to_json(clean))["snr_db"] is None
    noisy = ch.repeatability(AdditiveNoise(sim, std=0.05, seed=1), repeats=5, n_drives=64)
    assert noisy["noise"] == pytest.approx(0.05, rel=0.08)
    assert noisy["signal"] == pytest.approx(clean["signal"], rel=0.1)
    assert noisy["noise_to_signal"] == pytest.approx(noisy["noise"] / noisy["signal"])
    assert noisy["snr_db"] == pytest.approx(-20 * math.log10(noisy["noise_to_signal"]))


# ----------------------------------------------------------------------------- drift
def test_drift_finds_a_slow_ramp_and_nothing_on_a_simulator():
    sim = registry.make_system("random_linear", 5, 4, seed=0)
    busy = np.full((100, 5), 0.5, np.float32)
    assert ch.drift(sim, n_checks=4, between=[lambda: sim(busy)] * 3)["first_to_last"] == 0
    rate = 2e-5  # relative gain per queried sample
    ramp = Drift(sim, rate=rate)

    def work():
        ramp(busy)
        return len(busy)  # sent by the caller: counted

    d = ch.drift(ramp, n_checks=4, n_reference=16, between=[work] * 3)
    assert d["queries"] == [0, 116, 232, 348] and d["physical_queries"] == 348 + 16
    assert d["relative_gain"][1] == pytest.approx(rate * 116, rel=0.01)
    assert d["first_to_last_gain"] == pytest.approx(rate * 348, rel=0.01)
    assert d["relative_change"][-1] == pytest.approx(rate * 348, rel=0.05)
    assert d["slope_per_query"] == pytest.approx(rate, rel=0.01) and d["slope_per_s"] > 0


def test_characterize_interleaves_the_drift_checks_with_the_other_measurements():
    rate = 1e-5
    layer = Drift(registry.make_system("random_linear", 4, 3, seed=0), rate=rate)
    r = ch.characterize(layer, n_samples=200, repeats=2, n_repeat_drives=16, n_checks=3,
                        n_reference=8, batch=50, seed=0)
    d = r["drift"]
    # 2 x 16 repeats + 2 x 200 drive sets = 432 drives of work, a check every half of it
    assert r["physical_queries"] == 432 + 3 * 8 and d["queries"][0] == 0
    assert d["queries"][-1] == r["physical_queries"] - 8
    assert r["queries_by_part"] == {"drift": 24, "repeatability": 32, "drive sets": 400}
    assert d["slope_per_query"] == pytest.approx(rate, rel=0.02)
    # the ramp shows as scatter between repeats too, but the map stays linear
    assert r["drive_sets"]["full_range"]["fit"]["linear"] > 0.99


# ----------------------------------------------------------------------------- the report
def test_characterize_reports_every_set_and_writes_strict_json_and_a_plot(tmp_path):
    layer = registry.make_system("random_nonlinear", 6, 5, seed=0)
    mine = _uniform(300, 6, seed=4).astype(np.float32) * 0.5
    x = _uniform(150, 6, seed=5)
    progress = []
    r = ch.characterize(layer, n_samples=250, repeats=2, n_checks=2,
                        drive_sets={"mine": mine}, measured={"recorded": (x, _measure(layer, x))},
                        progress=lambda done, total: progress.append((done, total)))
    assert list(r["drive_sets"]) == ["full_range", "unit_direction", "mine", "recorded"]
    sets = r["drive_sets"]
    assert sets["mine"]["n_samples"] == 250 and sets["mine"]["n_given"] == 300
    assert sets["recorded"]["measured"] and sets["recorded"]["n_samples"] == 150
    u = r["drive_sets"]["unit_direction"]
    assert 0 <= u["drive"]["min"] and u["drive"]["max"] <= 1
    assert r["physical_queries"] == 3 * 250 + 2 * 64 + 2 * 32 == progress[-1][0] == progress[-1][1]
    assert r["layer"]["n_in"] == 6 and r["layer"]["type"] == "RandomNonlinear"
    for s in r["drive_sets"].values():
        assert s["fit"]["quadratic"] > 0.999
    json_path, png_path = ch.write_report(r, tmp_path)
    assert _strict(json_path.read_text())["repeatability"]["snr_db"] is None
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = ch.format_table(r)
    assert re.search(r"^mine\s+250\s+0\.\d{3}\s+1\.000", table, re.M)
    with pytest.raises(ValueError, match=r"drive set 'bad': .*safe range \[0.0, 1.0\]"):
        ch.characterize(layer, drive_sets={"bad": np.full((4, 6), 2.0)}, n_samples=50)


def test_unit_directions_are_the_drives_a_phyll_block_sends():
    layer = registry.make_system("none", 7, 2)
    d = ch._directions(layer.spec, 50, np.random.default_rng(0))
    assert np.linalg.norm(d, axis=1) == pytest.approx(np.ones(50), rel=1e-5)
    assert d.min() >= 0


# ----------------------------------------------------------------------------- the command
def test_cli_on_a_small_acoustic_simulator(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["characterize", "--system", "acoustic", "--n-in", "4", "--n-out", "3",
                 *SMALL_ACOUSTIC, "--samples", "120", "--repeats", "2", "--checks", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^full_range\s+120\s", printed, re.M) and "SNR inf dB" in printed
    r = _strict((out / "characterize.json").read_text())
    assert r["system"] == {"name": "acoustic", "params": {"n_steps": 70, "nx": 24, "ny": 24,
                                                          "pml_width": 4}}
    assert r["layer"]["n_in"] == 4 and r["repeatability"]["noise"] == 0
    assert r["physical_queries"] == 2 * 120 + 2 * 64 + 2 * 32
    assert (out / "characterize.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--system", "none", "--instrument", "visa:X"], "give --system or --instrument, not both"),
    (["--system", "none", "--set", "method.lr=1"], "takes the system's physical parameters only"),
    (["--system", "none", "--set", "system.bogus=1"], "unknown key(s) bogus for the none"),
    (["--instrument", "gpib:7"], "expected 'visa:RESOURCE'"),
    (["--system", "none", "--model", "missing.pnn"], "missing.pnn does not exist"),
])
def test_cli_errors_are_one_line_naming_the_value(args, message, tmp_path, capsys):
    assert main(["characterize", *args, "--out", str(tmp_path / "o")]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("pnn characterize: error: ") and message in err
    assert not (tmp_path / "o").exists()


def test_an_unreachable_instrument_is_one_line(tmp_path, capsys):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: refuses at once
        where = f"TCPIP::127.0.0.1::{s.getsockname()[1]}::SOCKET"
        assert main(["characterize", "--instrument", f"visa:{where}", "--n-in", "3",
                     "--n-out", "2", "--out", str(tmp_path / "o")]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("pnn characterize: error: ") and where in err


def test_cli_refuses_bad_counts(capsys):
    for bad in (["--samples", "3"], ["--repeats", "1"], ["--n-in", "0"]):
        with pytest.raises(SystemExit) as e:
            main(["characterize", *bad])
        assert e.value.code == 2
    assert "expected a whole number >= 2 (or 0 to skip), got '1'" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="development data beside the project not present")
def test_cli_on_the_phyll_authors_recorded_cavity(tmp_path, capsys):
    # the authors' files are two header-less CSVs; a recording is one file: columns in*, out*
    x = np.loadtxt(SHARED / "x_data.csv", delimiter=",", max_rows=401)[1:]
    y = np.loadtxt(SHARED / "y_data.csv", delimiter=",", max_rows=401)[1:]
    rows = [",".join([f"in{i}" for i in range(20)] + [f"out{j}" for j in range(20)])]
    rows += [",".join(f"{v:.6g}" for v in np.r_[a, b]) for a, b in zip(x, y)]
    f = tmp_path / "cavity.csv"
    f.write_text("\n".join(rows) + "\n")
    out = tmp_path / "res"
    assert main(["characterize", "--system", f"recorded:{f}", "--set", "system.model=ridge",
                 "--samples", "100", "--repeats", "2", "--checks", "2", "--out", str(out)]) == 0
    r = _strict((out / "characterize.json").read_text())
    assert (r["layer"]["n_in"], r["layer"]["n_out"]) == (20, 20)  # the recording's widths
    rec = r["drive_sets"]["recorded pairs"]
    assert rec["measured"] and rec["n_samples"] == 400 == r["system"]["recording"]["rows"]
    # the apparatus itself: mostly linear at uniform drives; 280 pairs are too few for 231
    # degree-2 features (it over-fits, and says so), not for the rank
    assert 0.8 < rec["fit"]["linear"] < 1 and rec["fit"]["quadratic"] < rec["fit"]["linear"]
    assert "over-fits" in rec["fit"]["quadratic_note"]
    assert 1 < rec["rank"]["participation_ratio"] < 20
    # the standard sets (100 drives) are too small for the degree-2 fit: null, with the reason
    assert r["drive_sets"]["full_range"]["fit"]["quadratic"] is None
    assert "measure at least 330 drives" in r["drive_sets"]["full_range"]["fit"]["quadratic_note"]
    # the ridge surrogate is linear; its residual noise shows in the repeatability
    assert r["drive_sets"]["full_range"]["fit"]["linear"] > 0.9
    assert r["repeatability"]["noise"] > 0 and r["system"]["recording"]["surrogate"]["model"] == "ridge"
    assert "recorded pairs" in capsys.readouterr().out


def test_cli_on_an_emulated_visa_instrument(tmp_path, capsys, patient_profile_file):
    from pnn.drivers.emulator import ScpiEmulator

    sim = registry.make_system("random_nonlinear", 4, 3, seed=0)
    out = tmp_path / "res"
    with ScpiEmulator(layer=sim, n_in=4, n_out=3, max_seconds=600) as emu:
        assert main(["characterize", "--instrument", f"visa:{emu.resource}", "--profile",
                     str(patient_profile_file), "--n-in", "4", "--n-out", "3",
                     "--samples", "80", "--repeats", "2", "--checks", "2", "--batch", "64",
                     "--out", str(out)]) == 0
        assert not emu.output_on  # left safe at the end
        measured = emu.log.samples_measured
    r = _strict((out / "characterize.json").read_text())
    assert r["instrument"]["idn"].startswith("PNN,Emulator-SCPI")
    assert r["physical_queries"] == measured == r["instrument"]["driver"]["samples"]
    # the emulator serves the speckle map through the wire unchanged
    assert r["drive_sets"]["full_range"]["fit"]["quadratic"] > 0.999
    assert r["repeatability"]["noise"] == 0 and r["drift"]["first_to_last"] == 0
    assert "visa:TCPIP::127.0.0.1" in capsys.readouterr().out


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.pnn"
    assert main(["train", "--system", "random_nonlinear", "--method", "phyll", "--classes",
                 "iy,uw,aa", "--hidden", "6", "--n-meas", "6", "--epochs", "1", "--batch-size",
                 "32", "--save", str(path)]) == 0
    return path


def test_model_drives_are_recorded_from_every_block(saved_model):
    from pnn.cli.model import _header_data
    from pnn.model_io import read_header
    import argparse

    header = read_header(saved_model)
    data = _header_data(header, argparse.Namespace(), saved_model)
    (block,) = ch.model_drives(saved_model, data.x_train[:20])
    assert block["block"] == 0 and block["spec"].n_in == 12  # 3 labels + 2 x 4 formants + 1
    # PhyLL's goodness read-out: every label in turn, one pass each
    assert block["drives"].shape == (3 * 20, 12)
    assert 0 <= block["drives"].min() and block["drives"].max() <= 1


def test_cli_with_a_model_characterises_each_block_on_a_layer_of_its_shape(saved_model, tmp_path,
                                                                         capsys):
    out = tmp_path / "res"
    assert main(["characterize", "--system", "random_linear", "--n-in", "6", "--n-out", "6",
                 "--model", str(saved_model), "--samples", "100", "--repeats", "0", "--checks",
                 "0", "--out", str(out)]) == 0
    r = _strict((out / "characterize.json").read_text())
    blk = r["drive_sets"]["model block 0"]
    assert blk["layer"]["name"] == "random_linear[0]" and blk["layer"]["n_in"] == 12
    assert blk["n_samples"] == 100 and blk["n_given"] > 100
    assert blk["fit"]["linear"] > 1 - 1e-6  # a linear system is linear at any drives
    assert r["model"]["method"] == "phyll" and r["model"]["blocks"][0]["drives_recorded"] > 100
    assert r["repeatability"] is None and r["drift"] is None
    assert "model block 0: measured on random_linear[0] (n_in=12" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the docs
def test_the_docs_commands_and_code_run(tmp_path, monkeypatch, capsys):
    """Every command and code block of docs/characterize.md runs as written."""
    text = (ROOT / "docs" / "characterize.md").read_text()
    assert "(characterize.md)" in (ROOT / "docs" / "byo-physics.md").read_text()
    monkeypatch.chdir(tmp_path)
    commands = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S)
                for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    assert len(commands) == 2
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == ".venv/bin/pnn"
        assert main(argv[1:]) == 0, line
        folder = Path(argv[argv.index("--out") + 1])
        assert _strict((folder / "characterize.json").read_text())["physical_queries"] > 0
    tanh = _strict(Path("tanh_results/characterize.json").read_text())["drive_sets"]
    assert tanh["full_range"]["fit"]["linear"] < tanh["full_range"]["fit"]["quadratic"] < 0.97
    printed = capsys.readouterr().out
    # the table the page shows is the one the command prints
    shown = re.search(r"```text\n(.*?)```", text, re.S).group(1).splitlines()[2:4]
    for row in shown:  # the same numbers, to the rounding of another processor
        name, *values = row.split()
        got = re.search(rf"^{name}\s.*$", printed, re.M).group(0).split()[1:]
        assert [float(v) for v in got] == pytest.approx([float(v) for v in values], abs=0.011)
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    ns: dict = {}
    exec(compile(code, "docs/characterize.md", "exec"), ns)
    assert ns["r2"]["quadratic"] > 0.9999 > 0.97 > ns["r2"]["linear"]
    assert "mine" in ns["report"]["drive_sets"]


def test_the_library_never_reaches_into_the_command_line():
    import ast

    for module in ("characterize.py", "characterize_report.py"):
        tree = ast.parse((ROOT / "pnn" / module).read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not names & {"argparse", "pnn.cli", "pnn.cli.characterize", "pnn.cli.model"}, module
