"""Bring your own physics: layers from a function or from recorded data, plug-in systems, and
one apparatus shared by every block (pnn.layers, pnn.registry)."""

import importlib.metadata
import json
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn import registry
from pnn.config import ConfigError
from pnn.cost import Ledger
from pnn.experiment import Experiment
from pnn.layer import LayerSpec
from pnn.layers import Shared, devices, from_function, from_recorded, load_recorded, share
from pnn.train import phyll
from tests.train.test_phyll import blobs


def quad(n_in, n_out, seed=0):
    """A fixed random nonlinear map in NumPy: (A x)^2 + tanh(B x)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)
    B = rng.normal(size=(n_in, n_out))
    return lambda x: (x @ A) ** 2 + np.tanh(x @ B)


# ------------------------------------------------------------------------------ from_function
def test_from_function_wraps_a_numpy_function_with_its_spec():
    layer = from_function(quad(5, 3), (5, 3), name="rig", lo=-1.0, hi=2.0, units="V")
    assert layer.spec == LayerSpec(5, 3, -1.0, 2.0, "rig", "V")
    x = np.random.default_rng(0).uniform(-1, 2, size=(7, 5)).astype(np.float32)
    y = layer(x)
    assert y.shape == (7, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y, quad(5, 3)(x), rtol=1e-5)
    assert (layer.n_calls, layer.n_samples) == (1, 7)
    # a LayerSpec works as well; defaults are [0, 1] and the function's name
    assert from_function(np.tanh, LayerSpec(2, 2, name="t")).spec.name == "t"
    assert from_function(np.tanh, (2, 2)).spec == LayerSpec(2, 2, 0.0, 1.0, "tanh")


def test_from_function_validates_the_drive_before_calling_the_function():
    layer = from_function(quad(4, 2), (4, 2), name="rig")
    with pytest.raises(ValueError, match=r"rig: drives must lie in the safe range \[0.0, 1.0\]"):
        layer(np.full((2, 4), 1.5))
    with pytest.raises(ValueError, match=r"rig: expected 4 drive channels"):
        layer(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"rig: drives must be finite"):
        layer(np.array([[0.1, np.nan, 0.2, 0.3]]))
    assert layer.n_calls == 0  # nothing reached the function


def test_from_function_checks_the_answer_naming_the_function():
    def wrong_width(x):
        return np.zeros((len(x), 3))

    layer = from_function(wrong_width, (4, 2), name="rig")
    with pytest.raises(ValueError, match=r"rig: the function .*wrong_width returned shape "
                                         r"\(5, 3\), expected \(5, 2\)"):
        layer(np.zeros((5, 4)))

    def overflow(x):
        y = np.ones((len(x), 2))
        y[1, 0] = np.inf
        return y

    with pytest.raises(ValueError, match=r"rig: the function .*overflow returned non-finite "
                                         r"measurements: inf at \(sample 1, channel 0\)"):
        from_function(overflow, (4, 2), name="rig")(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"returned dtype <U1, expected real numbers"):
        from_function(lambda x: np.full((len(x), 2), "a"), (4, 2))(np.zeros((1, 4)))


def test_from_function_refuses_bad_arguments():
    with pytest.raises(TypeError, match=r"expected a callable fn\(x\) -> y, got int"):
        from_function(3, (2, 2))
    with pytest.raises(ValueError, match=r"expected a LayerSpec or a shape \(n_in, n_out\)"):
        from_function(np.tanh, (2, 2, 2))
    with pytest.raises(ValueError, match=r"a LayerSpec was given, and also name, lo"):
        from_function(np.tanh, LayerSpec(2, 2), name="x", lo=0.5)
    with pytest.raises(ValueError, match=r"n_in must be a positive integer, got 0"):
        from_function(np.tanh, (0, 2))


def test_from_function_unbatched_and_tensor_answers():
    calls = []

    def one(x):
        calls.append(x.shape)
        return x[:2] * 2

    layer = from_function(one, (3, 2), batched=False)
    np.testing.assert_allclose(layer(np.full((4, 3), 0.5)), np.ones((4, 2)))
    assert calls == [(3,)] * 4

    class Tensor:  # what a PyTorch tensor offers for the way back to NumPy
        def __init__(self, a):
            self.a = a

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    layer = from_function(lambda x: Tensor(x[:, ::-1] + 1), (2, 2))
    np.testing.assert_allclose(layer(np.array([[0.0, 0.5]])), [[1.5, 1.0]])
    with pytest.raises(ValueError, match=r"batched=False\) returned shape \(3,\) for drive "
                                         r"vector 0, expected \(2,\)"):
        from_function(lambda x: x, (3, 2), batched=False)(np.zeros((1, 3)))


def test_a_function_layer_cannot_be_traced():
    layer = from_function(np.tanh, (2, 2), name="host")
    with pytest.raises(TypeError, match=r"host: a function layer runs on the host and cannot "
                                        r"be traced"):
        jax.jit(layer)(jnp.zeros((1, 2)))


def test_phyll_trains_through_a_numpy_function():
    data = blobs()
    cfg = phyll.PhyLLConfig(hidden=(12,), n_meas=10, epochs=6, batch_size=32)
    ((n_in, n_out),) = phyll.layer_shapes(cfg, data.n_features, data.n_classes)
    layer = from_function(quad(n_in, n_out), (n_in, n_out), name="numpy-rig")
    rec, _ = phyll.train([layer], data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.9  # chance is 1/3
    assert layer.n_samples == rec["cost"]["physical_queries"] > 0


# ------------------------------------------------------------------------------ from_recorded
def smooth_pairs(n=1200, n_in=5, n_out=3, noise=0.03, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n_in, n_out))
    x = rng.uniform(0, 1, size=(n, n_in))
    clean = np.sin(1.5 * x @ W) + x[:, :n_out] ** 2
    return x, clean + noise * rng.normal(size=clean.shape), clean


@pytest.fixture(scope="module")
def fitted():
    x, y, _ = smooth_pairs()
    return x, y, from_recorded(x, y, model="mlp", seed=0)


def test_from_recorded_fits_a_smooth_map_and_reports_held_out_r2(fitted):
    x, y, layer = fitted
    r = layer.report
    assert (r["n_train"], r["n_holdout"], r["n_in"], r["n_out"]) == (960, 240, 5, 3)
    assert len(r["r2_per_output"]) == 3
    assert r["r2"] > 0.98 and min(r["r2_per_output"]) > 0.97
    # the linear ridge model cannot follow the sine: the report says so
    assert from_recorded(x, y, model="ridge", seed=0).report["r2"] < r["r2"] - 0.05
    # the drive range is the recorded one: the surrogate is not asked to extrapolate
    assert layer.spec.lo == pytest.approx(x.min()) and layer.spec.hi == pytest.approx(x.max())
    with pytest.raises(ValueError, match=r"drives must lie in the safe range"):
        layer(np.full((1, 5), 1.2))


def test_residual_noise_matches_the_held_out_spread_and_is_seeded(fitted):
    x, y, layer = fitted
    res_std = np.asarray(layer.report["residual_std"])
    assert np.all((res_std > 0.025) & (res_std < 0.06))  # measurement noise 0.03 + fit error
    drives = np.full((4000, 5), 0.5)
    noisy = layer.reseeded(3)(drives) - layer.predict(drives)
    np.testing.assert_allclose(noisy.std(0), res_std, rtol=0.1)
    # same seed, same noise; another seed, other noise; the fit is shared
    a, b = layer.reseeded(3)(drives[:50]), layer.reseeded(3)(drives[:50])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, layer.reseeded(4)(drives[:50]))
    g = from_recorded(x, y, model="knn", noise="gaussian", seed=1)
    d = g(drives) - g.predict(drives)
    np.testing.assert_allclose(d.std(0), g.report["residual_std"], rtol=0.1)
    quiet = from_recorded(x, y, model="knn", noise=None, seed=1)
    np.testing.assert_array_equal(quiet(drives[:5]), quiet.predict(drives[:5]).astype(np.float32))


def test_from_recorded_reads_npz_and_csv(tmp_path):
    x, y, _ = smooth_pairs(n=300, n_in=3, n_out=2)
    np.savez(tmp_path / "rec.npz", inputs=x, outputs=y, lo=0.0, hi=1.0)
    header = "time,out_1,in0,in1,in2,out_0"
    rows = [",".join([str(t), *(repr(float(v)) for v in (b[1], a[0], a[1], a[2], b[0]))])
            for t, (a, b) in enumerate(zip(x, y))]
    (tmp_path / "rec.csv").write_text("\n".join([header, *rows]) + "\n")
    xc, yc, meta = load_recorded(tmp_path / "rec.csv")
    np.testing.assert_array_equal(xc, x)
    np.testing.assert_array_equal(yc, y)  # output columns ordered by number
    assert meta["ignored_columns"] == ["time"]
    ref = from_recorded(x, y, model="knn", seed=2).report
    for path in ("rec.npz", "rec.csv"):
        layer = from_recorded(tmp_path / path, model="knn", seed=2)
        assert layer.report["r2_per_output"] == ref["r2_per_output"]
        assert layer.spec.name == f"recorded:{path}"
    assert from_recorded(tmp_path / "rec.npz", model="knn").spec.hi == 1.0  # the file's range


def test_from_recorded_errors_name_the_problem(tmp_path):
    x, y, _ = smooth_pairs(n=50)
    with pytest.raises(ValueError, match=r"50 input rows but 49 output rows"):
        from_recorded(x, y[:49])
    with pytest.raises(ValueError, match=r"5 recorded pairs are too few to hold out 0.2"):
        from_recorded(x[:5], y[:5])
    with pytest.raises(ValueError, match=r"noise='residual' draws from held-out residuals, but "
                                         r"holdout=0"):
        from_recorded(x, y, holdout=0)
    with pytest.raises(ValueError, match=r"unknown model 'svm'; valid models: mlp, ridge"):
        from_recorded(x, y, model="svm")
    with pytest.raises(ValueError, match=r"outputs hold non-finite values in 1 row\(s\) "
                                         r"\(first: row 3\)"):
        from_recorded(x, np.where(np.arange(50)[:, None] == 3, np.nan, y))
    np.savez(tmp_path / "bad.npz", x=x, outputs=y)
    with pytest.raises(ValueError, match=r"bad.npz: missing array\(s\) inputs; expected keys "
                                         r"'inputs'"):
        from_recorded(tmp_path / "bad.npz")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"bad.csv: header \['a', 'b'\] names no input column"):
        from_recorded(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("in0,out0\n1,2\n1,oops\n")
    with pytest.raises(ValueError, match=r"bad2.csv, line 3: expected a number"):
        from_recorded(tmp_path / "bad2.csv")
    with pytest.raises(FileNotFoundError, match=r"nope.npz: no such file"):
        from_recorded(tmp_path / "nope.npz")


def test_every_surrogate_name_has_a_regressor():
    from pnn import surrogate
    from pnn.layers import SURROGATE_MODELS

    assert set(surrogate.REGRESSORS) == set(SURROGATE_MODELS)
    with pytest.raises(ValueError, match=r"model must be one of mlp, ridge, knn, forest or a "
                                         r"scikit-learn style estimator"):
        from_recorded(*smooth_pairs(n=50)[:2], model=object())


# ------------------------------------------------------------------------------ shared layers
def test_shared_view_pads_with_lo_and_reads_the_first_channels():
    seen = []

    def device(x):
        seen.append(np.array(x))
        return np.concatenate([x, -x], axis=1)

    dev = from_function(device, (4, 8), name="dev", lo=0.25, hi=1.0)
    view = Shared(dev, 3, 5, block=0)
    assert view.spec == LayerSpec(3, 5, 0.25, 1.0, "dev[block 0]")
    y = view(np.full((2, 3), 0.5))
    np.testing.assert_array_equal(seen[0], [[0.5, 0.5, 0.5, 0.25]] * 2)  # padded with lo
    np.testing.assert_array_equal(y, [[0.5, 0.5, 0.5, 0.25, -0.5]] * 2)  # first 5 channels
    with pytest.raises(ValueError, match=r"dev\[block 0\]: drives must lie in the safe range"):
        view(np.zeros((1, 3)))
    assert devices([view, Shared(dev, 4, 8, block=1)]) == [dev]


def test_a_block_wider_than_the_shared_layer_is_refused():
    dev = from_function(np.tanh, (10, 10), name="dev")
    with pytest.raises(ValueError, match=r"dev: block 1 sends 12 drive channels, but the "
                                         r"shared layer takes 10; .*n_in=12 or more"):
        Shared(dev, 12, 10, block=1)
    with pytest.raises(ValueError, match=r"dev \(n_in=10, n_out=10\) cannot serve every block: "
                                         r"block 1 needs n_in=12, n_out=10; block 2 needs "
                                         r"n_in=8, n_out=11.*n_in >= 12 and n_out >= 11"):
        share(dev, [(9, 10), (12, 10), (8, 11)])


def test_two_block_phyll_on_one_shared_layer_counts_queries_per_block_and_device():
    data = blobs()
    cfg = phyll.PhyLLConfig(hidden=(16, 16), n_meas=10, epochs=4, batch_size=32)
    shapes = phyll.layer_shapes(cfg, data.n_features, data.n_classes)
    assert shapes == [(12, 10), (16, 10)]  # the first block's drive is narrower
    f = quad(16, 10)
    first_block_tails = []

    def device(x):
        if np.all(x[:, 12:] == 0.0):
            first_block_tails.append(len(x))
        return f(x)

    dev = from_function(device, (16, 10), name="rig")
    views = share(dev, shapes)
    rec, _ = phyll.train(views, data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.9
    c = rec["cost"]
    by_block = c["queries_by_layer"]
    assert set(by_block) == {"rig[block 0]", "rig[block 1]"}
    assert by_block["rig[block 0]"] == by_block["rig[block 1]"] > 0  # PhyLL queries each block
    assert c["queries_by_device"] == {"rig": c["physical_queries"]} == {"rig": dev.n_samples}
    assert sum(first_block_tails) >= by_block["rig[block 0]"]  # block 0 arrived padded with lo
    # the same network on two separate copies of the device trains identically
    rec2, _ = phyll.train([Shared(from_function(f, (16, 10), name="a"), 12, 10),
                           from_function(f, (16, 10), name="b")], data, cfg, seed=0)
    assert rec2["test_accuracy"] == rec["test_accuracy"]
    assert rec2["params_sha256"] == rec["params_sha256"]


def test_build_layers_shared_builds_one_device():
    data = blobs()
    cfg = phyll.PhyLLConfig(hidden=(16, 16), n_meas=10)
    layers = registry.build_layers("acoustic", "phyll", cfg, data, seed=0, shared=True)
    assert [(v.spec.n_in, v.spec.n_out) for v in layers] == [(12, 10), (16, 10)]
    (dev,) = devices(layers)
    assert (dev.spec.n_in, dev.spec.n_out, dev.spec.name) == (16, 10, "acoustic")
    ledger = Ledger()
    x = np.full((3, 12), 0.5, np.float32)
    np.testing.assert_allclose(ledger.query(layers[0], x),
                               np.asarray(dev(np.pad(x, ((0, 0), (0, 4))))), rtol=1e-6)
    assert ledger.queries_by_device == {"acoustic": 3}
    assert ledger.to_dict()["queries_by_layer"] == {"acoustic[block 0]": 3}


# ------------------------------------------------------------------------------ plug-in systems
def rig_factory(n_in, n_out, *, seed=0, name="rig", gain=1.0):
    """A lab's own system: a fixed random map, scaled by gain."""
    f = quad(n_in, n_out, seed)
    return from_function(lambda x: gain * f(x), (n_in, n_out), name=name)


@pytest.fixture
def lab_package(tmp_path, monkeypatch):
    """A small package of a lab's own, installed (on sys.path) and declaring a system in the
    pnn.systems entry-point group (entry points faked: no pip install in a test)."""
    pkg = tmp_path / "labrig"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from pnn.layers import from_function
        import numpy as np

        built = []

        def factory(n_in, n_out, *, seed=0, name="lab", gain=1.0):
            built.append((n_in, n_out, seed, name, gain))
            rng = np.random.default_rng(seed)
            A = rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)
            B = rng.normal(size=(n_in, n_out))
            return from_function(lambda x: gain * ((x @ A) ** 2 + np.tanh(x @ B)),
                                 (n_in, n_out), name=name)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "labrig", raising=False)
    real = importlib.metadata.entry_points
    ep = importlib.metadata.EntryPoint(name="lab-rig", value="labrig:factory",
                                       group="pnn.systems")

    def entry_points(**kw):
        if kw.get("group") == "pnn.systems":
            return importlib.metadata.EntryPoints([ep])
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return pkg


def _train(tmp_path, capsys, *argv):
    from pnn.cli import main

    out = tmp_path / "r.json"
    rc = main(["train", "--method", "phyll", "--epochs", "1", "--hidden", "6,6", "--n-meas",
               "6", "--classes", "iy,uw,aa", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert rc == 0, err
    return json.loads(out.read_text())


def test_entry_point_system_trains_from_the_cli_with_one_shared_layer(lab_package, tmp_path,
                                                                      capsys):
    assert "lab-rig" in registry.system_names()
    rec = _train(tmp_path, capsys, "--system", "lab-rig", "--shared", "--set",
                 "system.gain=2.0")
    assert rec["system"] == "lab-rig"
    assert rec["experiment"]["system"] == {"name": "lab-rig", "gain": 2.0, "shared": True}
    c = rec["cost"]
    assert set(c["queries_by_layer"]) == {"lab-rig[block 0]", "lab-rig[block 1]"}
    assert c["queries_by_device"] == {"lab-rig": c["physical_queries"]} and c["physical_queries"]
    # one device, as wide as the widest block (12 = 3 labels + 2 x 4 formants + 1), gain passed
    assert sys.modules["labrig"].built == [(12, 6, 0, "lab-rig", 2.0)]


def test_module_factory_system_from_the_cli_and_an_experiment(lab_package, tmp_path, capsys):
    rec = _train(tmp_path, capsys, "--system", "labrig:factory")
    assert rec["system"] == "labrig:factory"
    assert set(rec["cost"]["queries_by_device"]) == {"labrig:factory[0]", "labrig:factory[1]"}
    assert sys.modules["labrig"].built == [(12, 6, 0, "labrig:factory[0]", 1.0),
                                           (6, 6, 1, "labrig:factory[1]", 1.0)]
    exp = Experiment.from_dict({"method": {"name": "phyll"},
                                "system": {"name": "labrig:factory", "gain": 3, "shared": True}})
    assert Experiment.from_dict(exp.to_dict()) == exp and exp.system.shared


def test_plugin_system_errors(lab_package, tmp_path, capsys):
    from pnn.cli import main

    # an installed plug-in's keys are checked against its factory's before anything runs
    assert main(["train", "--system", "lab-rig", "--epochs", "1", "--classes", "iy,uw,aa",
                 "--set", "system.colour=1"]) == 2
    assert ("[system] unknown key(s) colour for the lab-rig simulator; valid keys: name, "
            "shared, gain") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--system", "labrig:nothing"])
    assert "module 'labrig' has no attribute 'nothing'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"cannot import module 'no_such_lab'"):
        registry.resolve_system("no_such_lab:factory")
    with pytest.raises(ConfigError, match=r"\[system\] name = 'lab_rig': unknown system; valid "
                                          r"systems: acoustic, acoustic_waveform, lab-rig"):
        Experiment.from_dict({"method": {"name": "phyll"}, "system": {"name": "lab_rig"}})
    with pytest.raises(FileNotFoundError, match=r"recorded:missing.npz: no such file"):
        registry.resolve_system("recorded:missing.npz")


def test_register_system(monkeypatch):
    monkeypatch.setattr(registry, "SYSTEMS", dict(registry.SYSTEMS))
    registry.register_system("my-rig", rig_factory)
    layer = registry.make_system("my-rig", 3, 2, seed=1, gain=0.5)
    assert layer.spec.name == "my-rig" and layer(np.zeros((1, 3))).shape == (1, 2)
    with pytest.raises(ValueError, match=r"a system named 'my-rig' is already registered"):
        registry.register_system("my-rig", quad)
    with pytest.raises(ValueError, match=r"name must be a non-empty string without ':'"):
        registry.register_system("a:b", rig_factory)
    registry.register_system("bad-shape", lambda n_in, n_out, **kw: rig_factory(2, 2))
    with pytest.raises(ValueError, match=r"asked for a layer with n_in=3, n_out=2, its factory "
                                         r"returned 'rig' with n_in=2, n_out=2"):
        registry.make_system("bad-shape", 3, 2)


def test_recorded_system_from_the_cli(tmp_path, capsys):
    # record a "device" of 20 drives -> 20 measurements, then train on its recording
    f = quad(20, 20, seed=5)
    x = np.random.default_rng(0).uniform(0, 1, size=(600, 20))
    np.savez(tmp_path / "rig.npz", inputs=x, outputs=f(x), lo=0.0, hi=1.0)
    rec = _train(tmp_path, capsys, "--system", f"recorded:{tmp_path / 'rig.npz'}", "--set",
                 "system.model=ridge", "--shared")
    # both blocks (12 -> 6 and 6 -> 6) padded into the recorded 20 -> 20 apparatus
    assert rec["cost"]["queries_by_device"] == {f"recorded:{tmp_path / 'rig.npz'}":
                                                rec["cost"]["physical_queries"]}
    assert rec["experiment"]["system"]["model"] == "ridge" and rec["history"][0]["loss"] > 0


def test_readme_bring_your_own_physics_examples_run(tmp_path, monkeypatch, capsys):
    """The documented three ways in (a class, a function, recorded data) run as written."""
    from pathlib import Path
    import re

    text = (Path(__file__).parents[1] / "docs" / "byo-physics.md").read_text()
    section = text.split("# Bring your own physics", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    accuracies = []
    for code in blocks:
        exec(compile(code, "docs/byo-physics.md", "exec"), ns)
        accuracies.append(ns["record"]["test_accuracy"])
    assert (tmp_path / "my_rig.npz").is_file()
    assert ns["layer"].report["r2"] > 0.95
    assert "held-out R2" in capsys.readouterr().out
    assert all(0 <= a <= 1 for a in accuracies) and ns["record"]["cost"]["physical_queries"] > 0
    # the page's command for the recorded rig, as written, on the file the last block wrote
    from pnn.cli import main

    (command,) = re.findall(r"`(pnn train --system recorded:my_rig\.npz[^`]*)`",
                            " ".join(section.split()))
    assert main([*command.split()[1:], "--epochs", "1", "--out", "rig.json"]) == 0
    # without the widths, the message names every block's widths and the flags
    assert main(["train", "--system", "recorded:my_rig.npz", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "phyll needs block 0: n_in=19, n_out=20" in err and "--n-meas" in err
