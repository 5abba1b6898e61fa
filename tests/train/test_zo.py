"""Zeroth-order training (pnn.train.zo): its estimates against analytic gradients, its exact
count of physical queries, the query budget, learning on fixed seeds (a layer whose gradient is
NaN, an emulated instrument) and resuming bit for bit."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pnn.cli import main
from pnn.cost import Ledger, xla_flops
from pnn.drivers.emulator import ScpiEmulator
from pnn.network import to_drive
from pnn.train import zo
from pnn.train.hybrid import encode
from pnn.train.zo_estimators import difference_estimate, guided_directions, \
    sample_directions, subspace_basis
from tests.drivers.conftest import TanhLayer

from .test_dfa import TanhJaxLayer
from .test_phyll import NaNGradLayer, blobs

TINY = ["--classes", "iy,uw,aa", "--hidden", "6", "--n-meas", "6", "--epochs", "2",
        "--batch-size", "16", "--seed", "0"]


def _cos(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _quadratic(n=50, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, n))
    A, b, x = q @ q.T / n + np.eye(n), rng.normal(size=n), rng.normal(size=n)
    # f of one point (n,) or of each row of (m, n)
    return (lambda v: 0.5 * np.sum((v @ A) * v, axis=-1) + v @ b), A @ x + b, x


def _estimate(f, x, u, c, antithetic=True):
    if antithetic:
        return difference_estimate(u, np.concatenate([f(x + c * u), f(x - c * u)]), c)
    return difference_estimate(u, f(x + c * u), c, np.array(f(x)))


@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "sphere"])
def test_the_averaged_estimate_approaches_the_gradient_as_directions_are_added(kind):
    f, grad, x = _quadratic()
    rng = np.random.default_rng(1)
    cos = [np.mean([_cos(_estimate(f, x, sample_directions(rng, (d, x.size), kind), 1e-3),
                         grad) for _ in range(20)]) for d in (1, 4, 16, 64)]
    assert all(a < b for a, b in zip(cos, cos[1:])), cos
    # for E[u u^T] = I, E cos^2 ~ d / (d + n + 1): with n = 50, d = 64 that is ~ 0.75
    assert cos[0] < 0.3 and cos[-1] > 0.65
    # unbiased: the mean of many one-direction estimates is the gradient (to O(c^2))
    many = _estimate(f, x, sample_directions(rng, (20_000, x.size), kind), 1e-3)
    assert _cos(many, grad) > 0.98
    one_sided = _estimate(f, x, sample_directions(rng, (20_000, x.size), kind), 1e-4, False)
    assert _cos(one_sided, grad) > 0.98


def test_guided_directions_recover_a_gradient_lying_in_the_subspace_of_past_estimates():
    rng = np.random.default_rng(2)
    n, r = 200, 3
    past = rng.normal(size=(4, n)).astype(np.float32)
    past[3] = past[0] + past[1]  # adds nothing to the span: dropped from the basis
    U = subspace_basis(past, 4)
    assert U.shape == (n, r) and np.allclose(U.T @ U, np.eye(r), atol=1e-5)
    assert subspace_basis(np.zeros((4, n), np.float32), 4) is None
    grad = U @ rng.normal(size=r)
    f = lambda v: v @ grad  # noqa: E731 (a linear loss: its gradient lies in span(U))
    x = np.zeros(n)
    guided = [_cos(_estimate(f, x, guided_directions(rng, 8, n, U, 0.05), 1e-2), grad)
              for _ in range(10)]
    plain = [_cos(_estimate(f, x, guided_directions(rng, 8, n, None, 0.05), 1e-2), grad)
             for _ in range(10)]
    assert np.mean(guided) > 0.85 and np.mean(plain) < 0.35
    # alpha = 1 is plain SPSA whatever the basis
    a = guided_directions(np.random.default_rng(3), 5, n, U, 1.0)
    assert np.array_equal(a, sample_directions(np.random.default_rng(3), (5, n), "rademacher"))


def _algo(cfg, data, layers, seed=0):
    algo = zo.SPSA(layers, data, cfg, seed=seed, ledger=Ledger())
    return algo, algo.init()


def _tanh_layers(cfg, data):
    shapes = zo.layer_shapes(cfg, data.n_features, data.n_classes)
    return [TanhJaxLayer(n_in, n_out, name=f"L{k}", seed=k)
            for k, (n_in, n_out) in enumerate(shapes)]


def test_the_drive_estimate_matches_the_true_gradient_and_the_readout_is_exact():
    data = blobs(seed=6, n_per_class=20)
    cfg = zo.Config(hidden=(8, 8), n_meas=6, n_dirs=64, batch_size=16)
    layers = _tanh_layers(cfg, data)
    algo, state = _algo(cfg, data, layers)
    x0, y = encode(data.x_train[:16]), jnp.asarray(data.y_train[:16])
    grads, loss, _ = algo.drive_gradient(state, 1e-3, x0, y)

    def true_loss(p):
        n = eqx.combine(p, algo.static)
        out = n.forward(x0, lambda k, a: layers[k](to_drive(a, 0.0, 1.0, n.gain)))
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    true = jax.grad(true_loss)(state["params"])
    assert loss == pytest.approx(float(true_loss(state["params"])), rel=1e-5)
    # downstream of the last physical layer: exact
    np.testing.assert_allclose(grads.head.weight, true.head.weight, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads.blocks[1].W, true.blocks[1].W, rtol=1e-4, atol=1e-6)
    # upstream: the physics' sensitivity estimated from 64 directions a sample
    assert _cos(grads.blocks[0].W, true.blocks[0].W) > 0.9
    # one direction a sample is noisier, but still points along the gradient
    algo1, state1 = _algo(dataclasses.replace(cfg, n_dirs=1), data, layers)
    g1, _, _ = algo1.drive_gradient(state1, 1e-3, x0, y)
    assert 0.2 < _cos(g1.blocks[0].W, true.blocks[0].W) < _cos(grads.blocks[0].W,
                                                                 true.blocks[0].W)


@pytest.mark.parametrize("estimate", zo.ESTIMATES)
@pytest.mark.parametrize("antithetic", [True, False])
def test_every_physical_query_of_a_step_is_counted_by_the_stated_formula(estimate, antithetic):
    data = blobs(seed=1, n_per_class=10)
    B, K, d = 8, 3, 2
    cfg = zo.Config(hidden=(5, 5, 5), n_meas=4, n_dirs=d, batch_size=B, estimate=estimate,
                    antithetic=antithetic, subspace=2 if estimate == "upstream" else 0)
    algo, state = _algo(cfg, data, _tanh_layers(cfg, data))
    M = d * (2 if antithetic else 1)
    expected = {"drives": K * B + M * B * K * (K - 1) // 2,
                "upstream": K * B + M * B * (K - 1),
                "all": (B if antithetic else K * B) + M * B * (K - 1)}[estimate]
    assert algo.queries_per_step(B) == expected
    for _ in range(2):
        before = algo.ledger.physical_queries
        state, loss = algo.step(state, data.x_train[:B], data.y_train[:B])
        assert algo.ledger.physical_queries - before == expected and np.isfinite(loss)
    assert state["t"] == 2
    if estimate == "upstream":
        assert state["n_subspace"] == 2 and state["subspace"].shape[0] == 2


def test_the_query_budget_stops_training_at_the_budget():
    data = blobs(seed=6, n_per_class=40)
    cfg = zo.Config(hidden=(6, 6), n_meas=6, epochs=8, batch_size=16, query_budget=1000)
    layers = [NaNGradLayer(a, b, name=f"L{k}") for k, (a, b) in
              enumerate(zo.layer_shapes(cfg, data.n_features, data.n_classes))]
    rec, model = zo.train(layers, data, cfg, seed=0)
    train_q = rec["cost"]["queries_by_purpose"]["train"]
    per_step = model.algorithm.queries_per_step(cfg.batch_size)
    assert 1000 - per_step < train_q <= 1000 < cfg.epochs * 4 * len(data.y_train)
    # calibration (2 x 16), then 4 queries a sample a step (the last batch of an epoch is
    # smaller): the budget stops the run within its fourth epoch (of 8)
    per_epoch = -(-len(data.y_train) // cfg.batch_size)
    assert per_step == 64 and 3 * per_epoch < rec["query_budget_step"] <= 4 * per_epoch
    assert rec["steps"] == rec["query_budget_step"]  # the step that found the budget spent
    # the run ends with the epoch in which the budget was reached (measured on validation)
    h = rec["history"]
    assert rec["stopped_early"] and rec["epochs_run"] == h[-1]["epoch"] == 4
    assert h[-1]["train_queries"] == train_q
    # the cosine schedule spans the steps the budget allows, not the epochs
    assert model.algorithm.horizon() == (1000 - 32) // 64


def test_zo_learns_through_layers_whose_gradient_is_nan():
    data = blobs(seed=6, n_per_class=40, n_classes=4)
    cfg = zo.Config(hidden=(6, 6), n_meas=6, epochs=6, batch_size=16, lr=2e-2)
    rec, model = zo.train([NaNGradLayer(a, b, name=f"L{k}") for k, (a, b) in enumerate(
        zo.layer_shapes(cfg, data.n_features, data.n_classes))], data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.9  # chance 1/4
    net = model.algorithm.net(model.state)
    assert all(bool(jnp.all(jnp.isfinite(b.W))) for b in net.blocks)
    assert rec["cost"]["flops_by_item"]["digital gradient"] > 0


def test_the_hand_count_of_the_digital_gradient_matches_xla():
    data = blobs(seed=6, n_per_class=20, n_features=12, n_classes=7)
    cfg = zo.Config(hidden=(20, 20), n_meas=20, batch_size=32)
    algo, state = _algo(cfg, data, _tanh_layers(cfg, data))
    x0, y = encode(data.x_train[:32]), jnp.asarray(data.y_train[:32])
    net = algo.net(state)
    ms = [jnp.ones((32, 20))] * 2
    ghats = [jnp.ones((32, 20))]
    xla = xla_flops(zo.surrogate_gradient, state["params"], algo.static, x0, ms, ghats, y)
    hand = algo.surrogate_flops(net, 32)
    assert 0.9 < xla / hand < 1.1, (xla, hand)  # 1.05 on the CPU backend


def test_zo_trains_on_an_emulated_instrument(tmp_path, patient_profile_file):
    n_in, n_out = zo.layer_shapes(zo.Config(hidden=(6,), n_meas=6), 4, 3)[0]
    with ScpiEmulator(layer=TanhLayer(n_in, n_out), n_in=n_in, n_out=n_out,
                      max_seconds=600) as emu:
        out = tmp_path / "hw.json"
        assert main(["train", "--method", "zo", *TINY, "--instrument", f"visa:{emu.resource}",
                     "--profile", str(patient_profile_file), "--out", str(out)]) == 0
        assert not emu.output_on
    rec = json.loads(out.read_text())
    assert rec["method"] == "zo" and rec["system"] == "instrument"
    (inst,) = rec["instruments"]
    assert inst["driver"]["samples"] == rec["cost"]["physical_queries"] == \
        emu.log.samples_measured > 0
    assert rec["test_accuracy"] > 0.45  # chance 1/3


def test_a_resumed_run_ends_with_the_same_parameters(tmp_path):
    data = blobs(seed=6, n_per_class=20)
    cfg = zo.Config(hidden=(6, 6), n_meas=6, epochs=1, batch_size=16, estimate="upstream",
                    subspace=3, directions="gaussian", c_decay=0.101, eval_train_max=0)

    def layers():
        return [NaNGradLayer(a, b, name=f"L{k}") for k, (a, b) in enumerate(
            zo.layer_shapes(cfg, data.n_features, data.n_classes))]

    ref, _ = zo.train(layers(), data, cfg, seed=0)

    def crash(step, evaluate):
        if step == 3:
            raise RuntimeError("crash")

    ck = tmp_path / "ck"
    with pytest.raises(RuntimeError, match="crash"):
        zo.train(layers(), data, cfg, seed=0, on_step=crash, checkpoint_dir=ck,
                 checkpoint_every=1)
    again, _ = zo.train(layers(), data, cfg, seed=0, checkpoint_dir=ck, checkpoint_every=1,
                        resume=True)
    assert again["params_sha256"] == ref["params_sha256"]
    assert again["cost"]["queries_by_purpose"]["train"] == \
        ref["cost"]["queries_by_purpose"]["train"]
