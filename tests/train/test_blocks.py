"""The block's bypass (``skip``), the label amplitude, parameter counts and the ``paper`` preset."""

import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn import registry
from pnn.config import config_from_dict
from pnn.network import Block, direction, embed_all_labels, embed_label
from pnn.train import phyll
from pnn.train.hybrid import HybridConfig
from tests.train.test_phyll import blobs

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "hillenbrand1995_women_7vowels.csv"


@pytest.mark.parametrize("skip,fan_in", [("raw", 7 + 5), ("direction", 7 + 5), ("none", 7)])
def test_skip_modes_set_the_digital_maps_shape(skip, fan_in):
    blk = Block(5, 7, 3, key=jax.random.PRNGKey(0), skip=skip)
    assert blk.W.shape == (3, fan_in)
    h = blk(jnp.ones((4, 7)), jnp.arange(20.0).reshape(4, 5) - 8)
    assert h.shape == (4, 3)
    assert blk.n_params == 3 * fan_in + 3


def test_skip_modes_feed_what_they_say():
    m = jnp.zeros((2, 3))
    h_prev = jnp.array([[-2.0, 1.0], [3.0, -4.0]])
    raw = Block(2, 3, 4, key=jax.random.PRNGKey(1), skip="raw")
    dirn = Block(2, 3, 4, key=jax.random.PRNGKey(1), skip="direction")
    np.testing.assert_allclose(raw(m, h_prev), h_prev @ raw.W[:, 3:].T, rtol=1e-6)
    np.testing.assert_allclose(dirn(m, h_prev), direction(h_prev) @ dirn.W[:, 3:].T, rtol=1e-6)
    with pytest.raises(ValueError, match="skip='sideways'"):
        Block(2, 3, 4, key=jax.random.PRNGKey(1), skip="sideways")


def _chain(skip, h0, n_meas=6, widths=(5, 4)):
    """Two blocks on the `none` system (dark detector): their raw outputs for inputs h0."""
    keys = jax.random.split(jax.random.PRNGKey(3), len(widths))
    h = h0
    dims = [h0.shape[1], *widths]
    for k, w in enumerate(widths):
        layer = registry.make_system("none", dims[k], n_meas, seed=k)
        m = jnp.asarray(layer(np.asarray(direction(h))))
        h = Block(dims[k], n_meas, w, key=keys[k], skip=skip)(m, h)
    return h


def test_raw_bypass_without_physics_is_an_affine_network():
    """f(x + y) = f(x) + f(y) - f(0) for an affine f; the `direction` bypass breaks it (so the
    test can fail)."""
    rng = np.random.default_rng(0)
    x, y = (jnp.asarray(rng.normal(size=(8, 9)), jnp.float32) for _ in range(2))
    zero = jnp.zeros_like(x)
    f = lambda v: _chain("raw", v)  # noqa: E731
    np.testing.assert_allclose(f(x + y), f(x) + f(y) - f(zero), atol=1e-4)
    g = lambda v: _chain("direction", v)  # noqa: E731
    assert float(jnp.max(jnp.abs(g(x + y) - (g(x) + g(y) - g(zero))))) > 1e-2


def test_label_amplitude_per_sample_or_per_batch():
    x = jnp.array([[0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 5.0, -1.0]])
    per_sample = embed_label(x, jnp.array([0, 1]), 2)
    per_batch = embed_label(x, jnp.array([0, 1]), 2, "batch")
    np.testing.assert_allclose(per_sample[:, :2], [[2.0, 0.0], [0.0, 5.0]])
    np.testing.assert_allclose(per_batch[:, :2], [[5.0, 0.0], [0.0, 5.0]])
    every = embed_all_labels(x, 2, "batch")
    assert every.shape == (4, 4) and float(jnp.max(every[:, :2])) == 5.0
    with pytest.raises(ValueError, match="label_scale"):
        embed_label(x, jnp.array([0, 1]), 2, "speaker")


def test_stored_configs_without_skip_read_back_as_the_earlier_block():
    assert phyll.PhyLLConfig().skip == "raw"
    old = config_from_dict(phyll.PhyLLConfig, {"epochs": 3}, stored=True)
    new = config_from_dict(phyll.PhyLLConfig, {"epochs": 3})
    assert (old.skip, new.skip) == ("direction", "raw")
    assert config_from_dict(HybridConfig, {}, stored=True).skip == "direction"
    kept = config_from_dict(phyll.PhyLLConfig, {"skip": "none"}, stored=True)
    assert kept.skip == "none"


def _train(method, cfg, data):
    layers = registry.build_layers("random_nonlinear", method, cfg, data, seed=0)
    return registry.get_trainer(method).train(layers, data, cfg, seed=0)


def test_parameter_counts_include_the_read_out():
    data = blobs(n_per_class=20)
    C = data.n_classes
    cfg = phyll.PhyLLConfig(epochs=1, hidden=(6, 5), n_meas=7, readout="linear",
                            readout_input=True)
    rec, _ = _train("phyll", cfg, data)
    n_in = phyll.input_dim(data.n_features, C)
    blocks = [6 * (7 + n_in) + 6, 5 * (7 + 6) + 5]
    readout = C * ((n_in - C) + 6 + 5 + 1)
    assert rec["params_by_part"] == {"blocks": blocks, "readout": readout}
    assert rec["n_trainable_params"] == sum(blocks) + readout
    goodness, _ = _train("phyll", phyll.PhyLLConfig(epochs=1, hidden=(6, 5), n_meas=7), data)
    assert goodness["params_by_part"]["readout"] == 0
    assert goodness["n_trainable_params"] == sum(blocks)
    pat_cfg = registry.get_trainer("insilico").Config(epochs=1, hidden=(6,), n_meas=7)
    rec, _ = _train("insilico", pat_cfg, data)
    n0 = 2 * data.n_features + 1
    assert rec["params_by_part"] == {"blocks": [6 * (7 + n0) + 6], "readout": C * 6 + C}
    assert rec["n_trainable_params"] == 6 * (7 + n0) + 6 + C * 7


def _doc_table(text):
    block = text.split("<!-- paper-preset -->")[1].split("<!-- /paper-preset -->")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in block.strip().splitlines()[2:]]
    return {r[0]: r[1:] for r in rows}


def test_the_paper_preset_equals_its_documented_table():
    table = _doc_table((ROOT / "docs" / "paper.md").read_text())
    systems = ["acoustic", "microwave", "optical"]
    for k, system in enumerate(systems):
        p = phyll.preset("paper", system)
        cfg = phyll.PhyLLConfig(**p["config"])  # valid
        for field, value in p["config"].items():
            want = getattr(cfg, field)
            assert table[field][k] == str(tuple(want) if field == "hidden" else want), field
        assert table["one apparatus for every block (`shared`)"][k] == str(p["shared"])
    assert set(table) == set(phyll.preset("paper", "acoustic")["config"]) | {
        "one apparatus for every block (`shared`)"}
    with pytest.raises(ValueError, match="covers the systems"):
        phyll.preset("paper", "none")


def test_the_preset_on_the_command_line(tmp_path):
    from pnn.cli.experiment import experiment_from_train_args
    from pnn.cli import build_parser

    args = build_parser().parse_args(["train", "--preset", "paper", "--system", "microwave",
                                      "--epochs", "3", "--set", "lr=0.001"])
    exp = experiment_from_train_args(args)
    cfg = exp.method.config
    assert (cfg.hidden, cfg.inner_steps, cfg.lr, cfg.epochs) == ((20, 20, 20), 10, 0.001, 3)
    assert (cfg.lr_schedule, cfg.label_scale, cfg.skip) == ("constant", "batch", "raw")
    assert exp.system.shared
    bad = build_parser().parse_args(["train", "--preset", "paper", "--method", "bp"])
    with pytest.raises(ValueError, match="presets are PhyLL's"):
        experiment_from_train_args(bad)


@pytest.mark.skipif(not SHARED.exists(), reason="development data (../shared/data) not here")
def test_the_documented_preset_command_runs(tmp_path):
    text = (ROOT / "docs" / "paper.md").read_text()
    cmd = re.search(r"```bash\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    argv = cmd.split()
    assert argv[0] == ".venv/bin/pnn"
    argv = [sys.executable, "-m", "pnn", *argv[1:], "--out", str(tmp_path / "r.json")]
    argv = [str(SHARED) if a.endswith("hillenbrand1995_women_7vowels.csv") else a for a in argv]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    rec = json.loads((tmp_path / "r.json").read_text())
    rec = rec["records"][0] if "records" in rec else rec
    assert rec["config"]["lr_schedule"] == "constant" and rec["config"]["epochs"] == 2
    assert rec["steps"] == 2  # full batch: one step an epoch
    assert len(rec["layers"]) == 2
