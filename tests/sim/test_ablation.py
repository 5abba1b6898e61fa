"""The ablation systems of sim/ablation.py are the maps their docstrings state, are seeded, train
through PhyLL (and the hybrid methods' code paths), and are covered by the conformance test."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn import registry
from pnn.data.vowels import Dataset
from pnn.experiment import system_keys
from pnn.sim.ablation import NoPhysics, RandomLinear, RandomNonlinear
from pnn.sim.base import AbstractSimulator
from pnn.train.phyll import PhyLLConfig

ABLATIONS = ("none", "random_linear", "random_nonlinear")


def _drives(n, n_in, seed):
    return np.random.default_rng(seed).uniform(0, 1, (n, n_in)).astype(np.float32)


def _y(layer, x):
    return np.asarray(layer(np.asarray(x, np.float32)), np.float64)


# ----------------------------------------------------------------------------- the maps
def test_none_reads_a_constant_whatever_the_drive():
    layer = NoPhysics(7, 4, name="none")
    x = _drives(16, 7, 0)
    np.testing.assert_array_equal(_y(layer, x), np.zeros((16, 4)))
    lit = NoPhysics(7, 4, level=0.5)
    np.testing.assert_array_equal(_y(lit, x), np.full((16, 4), 0.5))
    np.testing.assert_array_equal(_y(lit, 1 - x), _y(lit, x))
    g = jax.grad(lambda z: lit.forward(z).sum())(jnp.asarray(x))
    assert float(jnp.abs(g).max()) == 0.0


def test_none_refuses_a_negative_level():
    with pytest.raises(ValueError, match=r"dark: level = -1 must be finite and >= 0 \(a "
                                         r"detector reading\); pass level=0.0"):
        NoPhysics(3, 2, level=-1.0, name="dark")


def test_random_linear_is_linear_non_negative_and_its_matrix():
    layer = RandomLinear(6, 9, seed=3, gain=2.0)
    x1, x2 = _drives(8, 6, 1), _drives(8, 6, 2)
    for a, b in ((0.3, 0.6), (0.5, 0.5), (1.0, 0.0)):
        np.testing.assert_allclose(_y(layer, a * x1 + b * x2),
                                   a * _y(layer, x1) + b * _y(layer, x2), rtol=1e-5, atol=1e-6)
    # the columns are the responses to unit drives: y = gain * T d with T >= 0
    T = _y(layer, np.eye(6)).T
    np.testing.assert_allclose(T, 2.0 * np.asarray(layer.T), rtol=1e-6)
    assert np.all(T >= 0) and np.all(_y(layer, np.zeros((1, 6))) == 0)
    # gain is an output scale
    half = RandomLinear(6, 9, seed=3, gain=1.0)
    np.testing.assert_allclose(_y(half, x1) * 2, _y(layer, x1), rtol=1e-6)


def test_random_linear_entries_are_exponential_with_mean_one_over_n_in():
    T = np.asarray(RandomLinear(200, 100, seed=0).T) * 200
    # |G|^2 of a standard complex Gaussian: exponential with mean 1 (and std 1)
    assert abs(T.mean() - 1) < 0.03 and abs(T.std() - 1) < 0.05
    assert abs(np.mean(T > 1) - np.exp(-1)) < 0.02


def test_speckle_is_the_squared_complex_projection_and_not_linear():
    layer = RandomNonlinear(6, 5, seed=4, gain=1.5)
    x1, x2 = _drives(10, 6, 5), _drives(10, 6, 6)
    A = np.asarray(layer.A1, np.float64)
    G = A[0] + 1j * A[1]  # = complex Gaussian / sqrt(n_in)
    np.testing.assert_allclose(_y(layer, x1), 1.5 * np.abs(x1 @ G.T) ** 2, rtol=1e-5,
                               atol=1e-7)
    # homogeneous of degree 2, and superposition fails by the cross term 2 Re(G x1 (G x2)^*)
    np.testing.assert_allclose(_y(layer, 0.5 * x1), 0.25 * _y(layer, x1), rtol=1e-5, atol=1e-8)
    s, parts = _y(layer, 0.5 * (x1 + x2)), 0.5 * _y(layer, x1) + 0.5 * _y(layer, x2)
    cross = 1.5 * 0.5 * np.real((x1 @ G.T) * np.conj(x2 @ G.T))
    np.testing.assert_allclose(s, 0.25 * (_y(layer, x1) + _y(layer, x2)) + cross, rtol=1e-4,
                               atol=1e-6)
    assert np.max(np.abs(s - parts)) > 0.05 * np.max(np.abs(parts))


def test_tanh_map_is_the_stated_two_layer_network_bounded_and_not_linear():
    layer = RandomNonlinear(4, 3, kind="tanh", gain=2.0, strength=1.5, hidden=7, seed=2)
    x1, x2 = _drives(12, 4, 7), _drives(12, 4, 8)
    A1, c1, A2 = (np.asarray(v, np.float64) for v in (layer.A1, layer.c1, layer.A2))
    assert A1.shape == (7, 4) and A2.shape == (3, 7)
    want = 2.0 * 0.5 * (1 + np.tanh(np.tanh(1.5 * x1 @ A1.T + c1) @ A2.T))
    np.testing.assert_allclose(_y(layer, x1), want, rtol=1e-5, atol=1e-6)
    y = _y(layer, _drives(200, 4, 9))
    assert y.min() >= 0 and y.max() <= 2.0
    s, parts = _y(layer, 0.5 * (x1 + x2)), 0.5 * (_y(layer, x1) + _y(layer, x2))
    assert np.max(np.abs(s - parts)) > 1e-3


@pytest.mark.parametrize("build", [
    lambda s: RandomLinear(5, 4, seed=s),
    lambda s: RandomNonlinear(5, 4, seed=s),
    lambda s: RandomNonlinear(5, 4, kind="tanh", seed=s),
])
def test_the_map_is_drawn_from_the_seed(build):
    x = _drives(6, 5, 0)
    np.testing.assert_array_equal(_y(build(11), x), _y(build(11), x))
    assert np.max(np.abs(_y(build(11), x) - _y(build(12), x))) > 1e-3


def test_registry_builds_each_ablation_with_its_keywords():
    assert set(ABLATIONS) <= set(registry.SYSTEMS)
    for name in ABLATIONS:
        layer = registry.make_system(name, 5, 3, seed=2)
        assert isinstance(layer, AbstractSimulator) and layer.spec.name == name
        assert (layer.spec.lo, layer.spec.hi) == (0.0, 1.0)
    lit = registry.make_system("none", 5, 3, level=2.0)
    assert float(lit.level) == 2.0
    tanh = registry.make_system("random_nonlinear", 5, 3, kind="tanh", hidden=6)
    assert tanh.kind == "tanh" and tanh.A1.shape == (6, 5)
    # an experiment's [system] table is validated against these keywords
    assert system_keys("random_nonlinear") == ["kind", "gain", "strength", "hidden"]
    assert system_keys("none") == ["level"]


@pytest.mark.parametrize("kw, match", [
    (dict(kind="cubic"), r"rn: kind = 'cubic' is not a known map; expected one of 'speckle', "
                         r"'tanh'"),
    (dict(kind="tanh", hidden=0), r"rn: hidden = 0 must be a positive integer"),
    (dict(gain=0.0), r"rn: gain = 0 must be finite and > 0; pass gain=1.0"),
    (dict(strength=float("inf")), r"rn: strength = inf must be finite and > 0"),
])
def test_bad_settings_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        RandomNonlinear(4, 3, name="rn", **kw)


@pytest.mark.parametrize("layer, expected", [
    (NoPhysics(5, 3), 3),
    (RandomLinear(5, 3), 2 * 5 * 3 + 3),
    (RandomNonlinear(5, 3), 4 * 5 * 3 + 4 * 3),
    (RandomNonlinear(5, 3, kind="tanh", hidden=4), 2 * 4 * 5 + 3 * 4 + 2 * 3 * 4 + 4 * 3),
])
def test_flops_match_a_hand_count(layer, expected):
    assert layer.flops_per_sample == expected


def test_the_conformance_test_covers_every_ablation():
    """tests/sim/test_conformance.py parametrises its layers over sorted(registry.SYSTEMS);
    only ``none`` is exempt from its drive-dependence checks."""
    from tests.sim import test_conformance

    assert set(ABLATIONS) <= set(test_conformance.SYSTEMS)
    assert test_conformance.DRIVE_INDEPENDENT == {"none"}


# ----------------------------------------------------------------------------- training
def _rings(seed=0, n=150):
    """Three classes on concentric shells in 3-D (not linearly separable, easy for a
    nonlinear map): 60 % train, 20 % validation, 20 % test."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    v = rng.normal(size=(n, 3))
    x = (v / np.linalg.norm(v, axis=1, keepdims=True) * (1.0 + y)[:, None]
         + 0.1 * rng.normal(size=(n, 3)))
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    a, b = int(0.6 * n), int(0.8 * n)
    return Dataset(x_train=x[:a], y_train=y[:a], x_val=x[a:b], y_val=y[a:b], x_test=x[b:],
                   y_test=y[b:], classes=("r1", "r2", "r3"), feature_names=("u", "v", "w"),
                   name="rings", info={})


@pytest.fixture(scope="module")
def rings():
    return _rings()


@pytest.mark.parametrize("system", ABLATIONS)
def test_each_ablation_trains_through_phyll(rings, system):
    cfg = PhyLLConfig(hidden=(12,), n_meas=8, epochs=3, batch_size=30, lr=1e-2)
    layers = registry.build_layers(system, "phyll", cfg, rings, seed=0)
    rec, model = registry.get_trainer("phyll").train(layers, rings, cfg, seed=0)
    losses = [h["loss"] for h in rec["history"]]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert rec["val_accuracy"] > 0.45  # chance is 1/3
    blk = model.state["blocks"][0]
    assert np.isfinite(float(blk.cal)) and float(blk.cal) > 0
    if system == "none":
        # zero readings: the calibration falls back to 1, and the measured columns of W play no
        # part, so the block is the digital map of its drive
        assert float(blk.cal) == 1.0
        pred = model.predict(rings.x_test)
        W = blk.W.at[:, :cfg.n_meas].set(123.0)
        other = eqx.tree_at(lambda s: s["blocks"][0].W, model.state, W)
        np.testing.assert_array_equal(
            np.asarray(model.algorithm.predict(other, rings.x_test)), pred)


@pytest.mark.parametrize("method, extra", [
    ("pat", dict(twin_samples=40, twin_epochs=2, twin_hidden=8)),
    ("insilico", {}),
])
def test_none_runs_through_the_hybrid_methods(rings, method, extra):
    """A zero reading goes through PAT's twin fit (scale falls back to 1) and in-silico
    backpropagation (a zero Jacobian) without a NaN."""
    trainer = registry.get_trainer(method)
    cfg = dataclasses.replace(trainer.Config(), hidden=(8,), n_meas=4, epochs=1, **extra)
    layers = registry.build_layers("none", method, cfg, rings, seed=0)
    rec, _ = trainer.train(layers, rings, cfg, seed=0)
    assert np.isfinite(rec["history"][-1]["loss"]) and 0 <= rec["val_accuracy"] <= 1
    if method == "pat":
        assert np.all(np.isfinite(rec["twin_val_nrmse"]))
