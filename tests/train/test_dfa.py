"""Direct feedback alignment (pnn.train.dfa): learns without a gradient through the physics, its
feedback matrices are fixed and seeded, and it trains through the CLI and an instrument."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.cli import main
from pnn.cost import Ledger
from pnn.drivers.emulator import ScpiEmulator
from pnn.layer import LayerSpec
from pnn.network import to_drive
from pnn.train import dfa
from pnn.train.hybrid import encode, physical_forward
from tests.drivers.conftest import TanhLayer

from .test_phyll import NaNGradLayer, blobs

TINY = ["--classes", "iy,uw,aa", "--hidden", "6", "--n-meas", "6", "--epochs", "1",
        "--batch-size", "16", "--seed", "0"]


class TanhJaxLayer:
    """A differentiable stand-in for the physics (only to compute the true gradient that DFA
    is compared with; DFA itself never differentiates it)."""

    pad_batches = False

    def __init__(self, n_in, n_out, name="tanh", seed=0):
        self.spec = LayerSpec(n_in=n_in, n_out=n_out, name=name)
        self.M = jax.random.normal(jax.random.PRNGKey(seed), (n_in, n_out))

    def __call__(self, x):
        return jnp.tanh(jnp.asarray(x) @ self.M)


def _layers(cfg, data, cls, **kw):
    shapes = dfa.layer_shapes(cfg, data.n_features, data.n_classes)
    return [cls(n_in, n_out, name=f"L{k}", **kw) for k, (n_in, n_out) in enumerate(shapes)]


def _cos(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_dfa_learns_through_layers_whose_gradient_is_nan():
    data = blobs(seed=6, n_per_class=40, n_classes=4)
    cfg = dfa.Config(hidden=(6, 6), n_meas=6, epochs=5, batch_size=16, lr=1e-2)
    rec, model = dfa.train(_layers(cfg, data, NaNGradLayer), data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.9  # chance 1/4
    net = model.algorithm.net(model.state)
    assert all(bool(jnp.all(jnp.isfinite(b.W))) for b in net.blocks)
    # one measured forward pass per sample and block, plus the calibration batch
    n_tr, K = len(data.y_train), len(cfg.hidden)
    assert rec["cost"]["queries_by_purpose"]["train"] == K * (cfg.epochs * n_tr + cfg.batch_size)
    assert rec["cost"]["flops_by_item"]["DFA update"] > 0


def test_feedback_is_fixed_and_seeded_and_the_readout_gradient_is_exact():
    data = blobs(seed=6, n_per_class=40, n_classes=4)
    cfg = dfa.Config(hidden=(8,), n_meas=6, epochs=5, batch_size=16, lr=1e-2)
    layers = _layers(cfg, data, TanhJaxLayer)
    before = dfa.feedback_matrices(0, cfg.hidden, data.n_classes)
    rec, model = dfa.train(layers, data, cfg, seed=0)
    after = model.state["feedback"]
    assert [B.shape for B in after] == [(8, 4)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # fixed during training
    again = dfa.feedback_matrices(0, cfg.hidden, data.n_classes)
    other = dfa.feedback_matrices(1, cfg.hidden, data.n_classes)
    assert np.array_equal(again[0], before[0]) and not np.array_equal(other[0], before[0])

    # against the true gradient (through the differentiable stand-in): the read-out's is exact;
    # the block's, though obtained through B, has come to point along it (the alignment)
    net = model.algorithm.net(model.state)
    x0, y = encode(data.x_train), jnp.asarray(data.y_train)
    logits, ms, _ = physical_forward(net, layers, x0, Ledger())
    g, loss = dfa.dfa_gradients(net, [jnp.asarray(B) for B in after], x0, ms, y)
    params, static = eqx.partition(net, net.trainable())

    def true_loss(p):
        n = eqx.combine(p, static)
        spec = layers[0].spec
        out = n.forward(x0, lambda k, a: layers[k](to_drive(a, spec.lo, spec.hi, n.gain)))
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    true = jax.grad(true_loss)(params)
    np.testing.assert_allclose(g.head.weight, true.head.weight, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(loss, true_loss(params), rtol=1e-5)
    assert _cos(g.blocks[0].W, true.blocks[0].W) > 0.2
    assert rec["test_accuracy"] >= 0.9


def test_dfa_trains_on_an_emulated_instrument(tmp_path, patient_profile_file):
    n_in, n_out = dfa.layer_shapes(dfa.Config(hidden=(6,), n_meas=6), 4, 3)[0]
    with ScpiEmulator(layer=TanhLayer(n_in, n_out), n_in=n_in, n_out=n_out,
                      max_seconds=600) as emu:
        out = tmp_path / "hw.json"
        assert main(["train", "--method", "dfa", *TINY, "--instrument", f"visa:{emu.resource}",
                     "--profile", str(patient_profile_file), "--out", str(out)]) == 0
        assert not emu.output_on  # left safe at the end
    rec = json.loads(out.read_text())
    assert rec["method"] == "dfa" and rec["system"] == "instrument"
    (inst,) = rec["instruments"]
    assert inst["driver"]["samples"] == rec["cost"]["physical_queries"] == \
        emu.log.samples_measured > 0
    assert 0.0 <= rec["test_accuracy"] <= 1.0


def test_train_and_compare_run_dfa_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "dfa.json"
    assert main(["train", "--method", "dfa", "--system", "random_nonlinear", *TINY,
                 "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["method"] == "dfa" and rec["config"]["feedback_scale"] == 1.0
    assert rec["test_accuracy"] > 0.45  # chance 1/3
    capsys.readouterr()
    folder = tmp_path / "cmp"
    tiny = ["--set", "dfa.hidden=[6]", "--set", "dfa.n_meas=6", "--set", "dfa.batch_size=16"]
    assert main(["compare", "--methods", "dfa,linear", "--seeds", "1", "--system",
                 "random_nonlinear", "--classes", "iy,uw,aa", "--epochs", "1", *tiny,
                 "--out", str(folder)]) == 0
    recs = json.loads((folder / "results.json").read_text())
    assert {r["method"] for r in recs} == {"dfa", "linear"}
    (d,) = [r for r in recs if r["method"] == "dfa"]
    assert d["config"]["hidden"] == [6] and d["config"]["epochs"] == 1
