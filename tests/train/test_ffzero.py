"""FFzero (pnn.train.ffzero): its prototypes, losses and estimator against their definitions, and
learning without a gradient through the physics, through the CLI and through an instrument."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn.cli import main
from pnn.cost import Ledger
from pnn.drivers.emulator import ScpiEmulator
from pnn.model_io import load_model, save_model
from pnn.train import ffzero
from pnn.train.hybrid import encode, physical_forward
from tests.drivers.conftest import TanhLayer

from .test_phyll import NaNGradLayer, blobs

TINY = ["--classes", "iy,uw,aa", "--hidden", "6", "--n-meas", "6", "--epochs", "1",
        "--batch-size", "16", "--seed", "0", "--set", "n_dirs=8"]


def _layers(cfg, data, cls):
    shapes = ffzero.layer_shapes(cfg, data.n_features, data.n_classes)
    return [cls(n_in, n_out, name=f"L{k}") for k, (n_in, n_out) in enumerate(shapes)]


def test_prototypes_are_a_rotated_regular_simplex_drawn_from_the_seed():
    (R, R2) = ffzero.simplex_prototypes(0, (7, 5), 4)
    assert R.shape == (4, 7) and R2.shape == (4, 5)
    gram = R @ R.T
    np.testing.assert_allclose(np.diag(gram), 1.0, atol=1e-6)
    off = gram[~np.eye(4, dtype=bool)]
    np.testing.assert_allclose(off, -1.0 / 3.0, atol=1e-6)  # -1/(C-1)
    np.testing.assert_allclose(R.sum(0), 0.0, atol=1e-6)
    assert np.abs(R[:, 4:]).max() > 0.1  # rotated out of the first C coordinates
    same = ffzero.simplex_prototypes(0, (7, 5), 4)
    other = ffzero.simplex_prototypes(1, (7, 5), 4)
    assert np.array_equal(same[0], R) and not np.allclose(other[0], R)
    with pytest.raises(ValueError, match="block 1 has width 3, but 4 class prototypes"):
        ffzero.simplex_prototypes(0, (7, 3), 4)


def test_local_losses_match_their_definitions_on_aligned_outputs():
    C, m = 4, 0.3
    (R,) = ffzero.simplex_prototypes(2, (6,), C)
    y = jnp.array([0, 1, 2, 3])
    right = 3.0 * jnp.asarray(R)  # each output along its own class's prototype (norm irrelevant)
    wrong = 0.5 * jnp.asarray(R[[1, 2, 3, 0]])  # along another class's
    np.testing.assert_allclose(ffzero.similarities(right, R), R @ R.T, atol=1e-6)
    assert float(ffzero.prototype_loss(right, y, R, "cosine")) == pytest.approx(0, abs=1e-6)
    assert float(ffzero.prototype_loss(right, y, R, "margin", m)) == pytest.approx(0, abs=1e-6)
    # s_y = -1/(C-1): cosine loss C/(C-1); margin: the aligned class m + 1 + 1/(C-1), the other
    # C - 2 wrong classes tie with y and each give m
    assert float(ffzero.prototype_loss(wrong, y, R, "cosine")) == pytest.approx(C / (C - 1),
                                                                              rel=1e-5)
    want = (m + 1 + 1 / (C - 1)) + (C - 2) * m
    assert float(ffzero.prototype_loss(wrong, y, R, "margin", m)) == pytest.approx(want, rel=1e-5)


def test_directional_gradient_is_exact_on_a_basis_and_unbiased_on_random_directions():
    A = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    b = jnp.array([0.5, -1.0, 2.0])

    def f(t):
        return 0.5 * t @ A @ t + b @ t
    theta = jnp.array([0.3, -0.2, 0.7])
    grad = A @ theta + b
    # central differences are exact for a quadratic; D * mean over an orthonormal basis = grad
    est = ffzero.directional_gradient(f, theta, jnp.eye(3), 1e-2)
    np.testing.assert_allclose(est, grad, rtol=1e-3, atol=1e-4)
    u = np.random.default_rng(0).standard_normal((40_000, 3)).astype(np.float32)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    est = ffzero.directional_gradient(f, theta, jnp.asarray(u), 1e-2)
    assert np.linalg.norm(est - grad) < 0.03 * np.linalg.norm(grad)  # E[D u u^T] = I


def test_vote_takes_the_majority_then_the_deeper_blocks():
    one = np.eye(3)
    sims = np.stack([one[[0, 0, 1]], one[[1, 0, 2]], one[[1, 2, 0]]])  # (K=3, n=3, C=3)
    # sample 0: votes 0, 1, 1 -> 1; sample 1: 0, 0, 2 -> 0; sample 2: 1, 2, 0 -> tie, the
    # deepest voter (block 3) says 0
    assert ffzero.vote(sims).tolist() == [1, 0, 0]


def test_block_estimates_equal_the_exact_local_gradient_and_stay_local():
    data = blobs(seed=6, n_per_class=20, n_classes=4)
    cfg = ffzero.Config(hidden=(6, 5), n_meas=6, epochs=1, batch_size=16)
    layers = _layers(cfg, data, NaNGradLayer)
    algo = ffzero.FFzero(layers, data, cfg, seed=0, ledger=Ledger())
    state = algo.init()
    net = algo.net(state)
    protos = [jnp.asarray(R) for R in state["prototypes"]]
    x0, y = encode(data.x_train), jnp.asarray(data.y_train)
    _, ms, _ = physical_forward(net, layers, x0, Ledger())
    basis = [jnp.eye(b.n_params) for b in net.blocks]  # D directions: an orthonormal basis
    grads = eqx.filter_jit(ffzero.local_gradients)
    g_dd, loss_dd = grads(net, protos, basis, x0, ms, y, cfg)
    exact = dataclasses.replace(cfg, estimator="exact")
    g_ex, loss_ex = grads(net, protos, basis, x0, ms, y, exact)
    assert float(loss_dd) == pytest.approx(float(loss_ex))
    for a, b in zip(g_dd.blocks, g_ex.blocks):
        np.testing.assert_allclose(a.W, b.W, rtol=0.05, atol=2e-3)
    assert not np.any(np.asarray(g_dd.head.weight))  # the vote read-out trains no head
    # locality: block 0's update does not depend on block 1's weights
    moved = eqx.tree_at(lambda n: n.blocks[1].W, net, 2.0 * net.blocks[1].W)
    g_moved, _ = grads(moved, protos, basis, x0, ms, y, exact)
    np.testing.assert_array_equal(g_moved.blocks[0].W, g_ex.blocks[0].W)
    assert not np.array_equal(g_moved.blocks[1].W, g_ex.blocks[1].W)


def test_ffzero_learns_through_layers_whose_gradient_is_nan(tmp_path):
    data = blobs(seed=6, n_per_class=40, n_classes=4)
    cfg = ffzero.Config(hidden=(6, 6), n_meas=6, epochs=5, batch_size=16, n_dirs=8)
    layers = _layers(cfg, data, NaNGradLayer)
    # the physics really offers no gradient
    assert np.all(np.isnan(jax.grad(lambda x: layers[0](x).sum())(jnp.full((1, 9), 0.5))))
    rec, model = ffzero.train(layers, data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.9  # chance 1/4
    # one measured forward pass per sample and block, plus the calibration batch
    n_tr, K = len(data.y_train), len(cfg.hidden)
    assert rec["cost"]["queries_by_purpose"]["train"] == K * (cfg.epochs * n_tr + cfg.batch_size)
    assert rec["cost"]["flops_by_item"]["FFzero update"] > 0
    assert rec["n_trainable_params"] == sum(6 * (6 + w) + 6 for w in (9, 6))  # blocks only: no read-out
    # a saved model predicts as the trained one (the prototypes travel with it)
    path = tmp_path / "m.pnn"
    save_model(model, path, record=rec)
    again = load_model(path, layers=layers)
    np.testing.assert_array_equal(again.predict(data.x_test), model.predict(data.x_test))


def test_ffzero_trains_on_an_emulated_instrument(tmp_path, patient_profile_file):
    n_in, n_out = ffzero.layer_shapes(ffzero.Config(hidden=(6,), n_meas=6), 4, 3)[0]
    with ScpiEmulator(layer=TanhLayer(n_in, n_out), n_in=n_in, n_out=n_out,
                      max_seconds=600) as emu:
        out = tmp_path / "hw.json"
        assert main(["train", "--method", "ffzero", *TINY, "--instrument",
                     f"visa:{emu.resource}", "--profile", str(patient_profile_file),
                     "--out", str(out)]) == 0
        assert not emu.output_on  # left safe at the end
    rec = json.loads(out.read_text())
    assert rec["method"] == "ffzero" and rec["system"] == "instrument"
    (inst,) = rec["instruments"]
    assert inst["driver"]["samples"] == rec["cost"]["physical_queries"] == \
        emu.log.samples_measured > 0
    assert rec["test_accuracy"] > 0.45  # chance 1/3


def test_train_and_compare_run_ffzero_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "ffzero.json"
    assert main(["train", "--method", "ffzero", "--system", "random_nonlinear", *TINY,
                 "--set", "readout=linear", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["method"] == "ffzero" and rec["config"]["readout"] == "linear"
    assert rec["test_accuracy"] > 0.45  # chance 1/3
    capsys.readouterr()
    folder = tmp_path / "cmp"
    tiny = ["--set", "ffzero.hidden=[6]", "--set", "ffzero.n_meas=6",
            "--set", "ffzero.batch_size=16", "--set", "ffzero.n_dirs=8"]
    assert main(["compare", "--methods", "ffzero,linear", "--seeds", "1", "--system",
                 "random_nonlinear", "--classes", "iy,uw,aa", "--epochs", "1", *tiny,
                 "--out", str(folder)]) == 0
    recs = json.loads((folder / "results.json").read_text())
    assert {r["method"] for r in recs} == {"ffzero", "linear"}
    (f,) = [r for r in recs if r["method"] == "ffzero"]
    assert f["config"]["hidden"] == [6] and f["config"]["n_dirs"] == 8
