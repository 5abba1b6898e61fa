"""Trained models as files: save, load, evaluate (API and CLI), refuse damaged files."""

import dataclasses
import json

import numpy as np
import pytest

from pnn import load_model, registry, save_model
from pnn.cli import main
from pnn.cost import Ledger
from pnn.model_io import ModelFileError, read_header
from pnn.train import pat, phyll

from .train.test_phyll import blobs

#: a small, fast acoustic simulator (same settings as the trainer tests use)
SMALL = {"nx": 24, "ny": 24, "pml_width": 4, "n_steps": 70}
CONFIGS = {
    "phyll": phyll.PhyLLConfig(hidden=(6,), n_meas=6, epochs=2, batch_size=16, inner_steps=5),
    "pat": pat.Config(hidden=(6,), n_meas=6, epochs=1, batch_size=16, lr=0.03,
                      twin_samples=60, twin_epochs=3),
}
TINY = ["--classes", "iy,uw,aa", "--hidden", "6", "--n-meas", "6", "--epochs", "1"]


@pytest.fixture(scope="module")
def data():
    return blobs(seed=3, n_per_class=24)


class _Trained(dict):
    """method -> (record, model, path) on the small acoustic simulator, trained on first use
    (so that each method's training falls into the first test that needs it)."""

    def __init__(self, data, tmp_path_factory):
        super().__init__()
        self.data, self.tmp = data, tmp_path_factory

    def __missing__(self, method):
        cfg = CONFIGS[method]
        layers = registry.build_layers("acoustic", method, cfg, self.data, seed=1, **SMALL)
        rec, model = registry.get_trainer(method).train(layers, self.data, cfg, seed=1)
        path = self.tmp.mktemp(method) / "model.pnn"
        save_model(model, path, record=rec, system="acoustic", system_kwargs=SMALL)
        self[method] = (rec, model, path)
        return self[method]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    return _Trained(data, tmp_path_factory)


@pytest.mark.parametrize("method", ["phyll", "pat"])
def test_a_loaded_model_predicts_exactly_as_the_trained_one(trained, data, method):
    rec, model, path = trained[method]
    ledger = Ledger()
    loaded = load_model(path, ledger=ledger)
    assert ledger.physical_queries == 0  # loading neither measured nor refitted anything
    assert loaded.method == method and loaded.config == CONFIGS[method]
    assert loaded.layers[0] is not model.layers[0]  # the simulator was rebuilt from the header
    np.testing.assert_array_equal(loaded.predict(data.x_test), model.predict(data.x_test))
    assert loaded.accuracy(data.x_test, data.y_test) == rec["test_accuracy"]
    assert ledger.physical_queries > 0  # prediction does measure
    h = read_header(path)
    assert h["params_sha256"] == rec["params_sha256"] == h["record"]["params_sha256"]
    assert h["record"]["test_accuracy"] == rec["test_accuracy"]
    assert h["system"]["kwargs"] == SMALL and h["system"]["layer_seeds"] == [1000]
    # only what prediction needs: no optimiser state, no generator, no twin
    assert h["payload"]["entries"] == {"phyll": ["blocks", "readout"], "pat": ["net"]}[method]
    assert h["classes"] == list(data.classes)


def test_phyll_saves_its_fitted_scaler_and_loading_does_not_refit_it(trained, data):
    _, model, path = trained["phyll"]
    fitted = read_header(path)["preprocessing"]["fitted"]["minmax"]
    np.testing.assert_array_equal(np.float32(fitted["lo"]), np.asarray(model.algorithm.scaler.lo))
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.algorithm.scaler.span, model.algorithm.scaler.span)
    assert loaded.algorithm.data.x_train.shape[0] == 1  # a stand-in: nothing to refit on


def _damage(path, tmp_path, how, where):
    blob = bytearray(path.read_bytes())
    bad = tmp_path / f"{how}-{where}.pnn"
    n_head = int(blob[:blob.index(b"\n")].split()[2])
    start = blob.index(b"\n") + 1
    if how == "flip":
        i = start + n_head // 2 if where == "header" else start + n_head + (len(blob) - start
                                                                            - n_head) // 2
        blob[i] ^= 0x01
        bad.write_bytes(bytes(blob))
    else:
        cut = start + n_head // 2 if where == "header" else len(blob) - 7
        bad.write_bytes(bytes(blob[:cut]))
    return bad


@pytest.mark.parametrize("how,where,message", [
    ("flip", "payload", "parameters' SHA-256 does not match"),
    ("flip", "header", "header's SHA-256 does not match"),
    ("truncate", "payload", "is truncated: expected"),
    ("truncate", "header", "is truncated: expected"),
])
def test_a_damaged_model_file_is_refused_naming_the_file(trained, tmp_path, how, where, message):
    bad = _damage(trained["phyll"][2], tmp_path, how, where)
    with pytest.raises(ModelFileError, match=f"{bad.name}.*{message}"):
        load_model(bad)


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello\n")
    with pytest.raises(ModelFileError, match="notes.txt is not a pnn model file"):
        load_model(f)
    with pytest.raises(FileNotFoundError, match="missing.pnn does not exist"):
        load_model(tmp_path / "missing.pnn")


def test_layers_of_other_shapes_are_refused(trained):
    path = trained["phyll"][2]
    other = registry.make_system("acoustic", 12, 5, seed=0, **SMALL)
    with pytest.raises(ValueError, match=r"needs 1 physical layer\(s\) of shapes .*\(12, 6\).*"
                                         r"got \[\(12, 5\)\]"):
        load_model(path, layers=[other])


def test_the_write_is_atomic_and_leaves_no_temporary_file(trained, tmp_path):
    rec, model, _ = trained["phyll"]
    path = tmp_path / "sub" / "m.pnn"
    save_model(model, path, record=rec, system="acoustic", system_kwargs=SMALL)
    save_model(model, path, record=rec, system="acoustic", system_kwargs=SMALL)  # replaces
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.pnn"]
    assert path.read_bytes().startswith(b"PNN-MODEL 1 ")


def _patient_profile():
    """The shipped emulator profile with timeouts that do not fire in a healthy exchange."""
    from pnn.drivers.profile import load_profile

    p = load_profile("emulator")
    return dataclasses.replace(p, visa=dataclasses.replace(
        p.visa, timeout_ms=120_000, open_timeout_ms=120_000, measure_timeout_ms=600_000))


def test_evaluating_through_the_scpi_emulator_equals_the_simulator(trained, data):
    from pnn.drivers.emulator import ScpiEmulator
    from pnn.drivers.visa import VisaLayer

    rec, _, path = trained["phyll"]
    sim = load_model(path)
    spec = sim.layers[0].spec
    with ScpiEmulator(layer=sim.layers[0], n_in=spec.n_in, n_out=spec.n_out,
                      max_seconds=600) as emu:
        with VisaLayer(_patient_profile(), emu.resource, n_in=spec.n_in,
                       n_out=spec.n_out) as visa:
            ledger = Ledger()
            on_instrument = load_model(path, layers=[visa], ledger=ledger)
            pred = on_instrument.predict(data.x_test)
    np.testing.assert_array_equal(pred, sim.predict(data.x_test))
    assert float(np.mean(pred == data.y_test)) == rec["test_accuracy"]
    assert emu.log.samples_measured == ledger.physical_queries == visa.stats.samples > 0


# -- the command line -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    path, rec = d / "m.pnn", d / "rec.json"
    assert main(["train", *TINY, "--save", str(path), "--out", str(rec)]) == 0
    return path, json.loads(rec.read_text())


def test_pnn_eval_reproduces_the_recorded_test_accuracy(cli_model, tmp_path, capsys):
    path, rec = cli_model
    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["eval", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"test accuracy {rec['test_accuracy']!r} " in text
    ev = json.loads(out.read_text())
    assert ev["test_accuracy"] == ev["recorded_test_accuracy"] == rec["test_accuracy"]
    assert ev["n_test"] == rec["data"]["n_test"]
    assert ev["physical_queries"] == ev["n_test"] * 3  # every label embedded, one block
    h = read_header(path)
    assert h["task"] == {"name": "vowels", "seed": 0, "options": {
        "vowel_source": "peterson_barney", "classes": "iy,uw,aa", "data_path": None,
        "download": False, "test_fraction": 0.3, "image_source": "digits", "n_features": 8}}


def test_pnn_eval_perturbed_differs_and_other_data_is_refused(cli_model, capsys):
    path, rec = cli_model
    assert main(["eval", str(path), "--perturb", "noise:std=0.5"]) == 0
    assert "perturbed (noise:std=0.5)" in capsys.readouterr().out
    assert main(["eval", str(path), "--classes", "iy,uw,ae"]) == 2
    assert "expects ['iy', 'uw', 'aa']" in capsys.readouterr().err


def test_pnn_predict_labels_csv_rows(cli_model, tmp_path, capsys):
    path, _ = cli_model
    h = read_header(path)
    data = registry.load_task("vowels", classes=("iy", "uw", "aa"), seed=0)
    x = data.x_test[:9]
    st = h["preprocessing"]["standardisation"]
    raw = x.astype(np.float64) * np.asarray(st["std"]) + np.asarray(st["mean"])
    want = [h["classes"][i] for i in load_model(path).predict(x)]
    feats = h["preprocessing"]["features"]
    for name, rows, extra in (("std.csv", x, []), ("raw.csv", raw, ["--raw"])):
        f = tmp_path / name
        # columns in another order, plus one the model does not use
        f.write_text(",".join(["speaker", *feats[::-1]]) + "\n" + "".join(
            ",".join(["s", *(repr(float(v)) for v in r[::-1])]) + "\n" for r in rows))
        capsys.readouterr()
        assert main(["predict", str(path), str(f), *extra]) == 0
        cap = capsys.readouterr()
        assert cap.out.split() == want
        assert "look like raw features" not in cap.err
    # raw formants (Hz) without --raw: predicted as given, with a warning that names the fix
    assert main(["predict", str(path), str(tmp_path / "raw.csv")]) == 0
    err = capsys.readouterr().err
    assert "look like raw features" in err and "add --raw" in err
    out = tmp_path / "labels.csv"
    assert main(["predict", str(path), str(tmp_path / "raw.csv"), "--raw", "--out",
                 str(out)]) == 0
    assert out.read_text().split() == ["class", *want]
    bad = tmp_path / "bad.csv"
    bad.write_text("F0,F1\n1,2\n")
    assert main(["predict", str(path), str(bad)]) == 2
    assert "lacks the feature column(s) ['F2', 'F3']" in capsys.readouterr().err



def test_a_phyll_model_with_a_linear_readout_reloads_exactly(tmp_path):
    from pnn.train.phyll import PhyLLConfig

    data = blobs(seed=3, n_per_class=20)
    cfg = PhyLLConfig(hidden=(6,), n_meas=5, epochs=2, batch_size=16, readout="linear")
    layers = registry.build_layers("acoustic", "phyll", cfg, data, seed=0, **SMALL)
    rec, model = phyll.train(layers, data, cfg, seed=0)
    path = save_model(model, tmp_path / "m.pnn", record=rec, system="acoustic",
                      system_kwargs=SMALL, data=data)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(data.x_test), model.predict(data.x_test))
    assert loaded.accuracy(data.x_test, data.y_test) == rec["test_accuracy"]
