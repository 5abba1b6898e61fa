"""Every baseline trainer learns a small separable problem above a stated floor (fixed seeds)."""

import jax.numpy as jnp
import numpy as np
import pytest

from pnn import registry
from pnn.cost import Ledger
from pnn.train import bp, ff, insilico, mf, pat, zo
from pnn.sim.acoustic import AcousticLayer

from .test_phyll import NaNGradLayer, RandomQuadraticLayer, blobs


def _hyb_layers(mod, cfg, data, cls=RandomQuadraticLayer, **kw):
    shapes = mod.layer_shapes(cfg, data.n_features, data.n_classes)
    return [cls(n_in, n_out, name=f"L{k}", **kw) for k, (n_in, n_out) in enumerate(shapes)]


def _small_acoustic(n_in, n_out, name="ac", seed=0, **kw):
    return AcousticLayer(n_in, n_out, nx=24, ny=max(24, n_in + 10), pml_width=4, n_steps=70,
                         seed=seed, name=name, **kw)


def test_every_registered_method_declares_the_contract():
    from pnn.train.loop import Algorithm

    for name, t in registry.TRAINERS.items():
        assert t.name == name
        assert issubclass(t.Algorithm, Algorithm)
        cfg = t.Config()
        shapes = t.shapes(cfg, 4, 3)
        assert isinstance(shapes, list) and bool(shapes) == t.uses_physical_layers
        # flags are consistent: instruments and differentiable models need physical layers
        assert not (t.runs_on_instruments and t.needs_differentiable_model)
        assert t.uses_physical_layers or not (t.runs_on_instruments or t.has_digital_twin)


def test_pat_learns_through_a_twin_and_reports_its_error():
    data = blobs(seed=3)
    cfg = pat.Config(hidden=(8,), n_meas=8, epochs=6, batch_size=16, twin_samples=600,
                     twin_epochs=60)
    layers = _hyb_layers(pat, cfg, data)
    rec, model = pat.train(layers, data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.9
    assert len(rec["twin_val_nrmse"]) == 1 and 0 < rec["twin_val_nrmse"][0] < 0.5
    c = rec["cost"]
    assert c["flops_by_item"]["twin fit"] > 0 and c["flops_by_item"]["twin forward/backward"] > 0
    # twin data (600) + calibration batch (16) + training + evaluations, all on the one layer
    assert c["queries_by_layer"]["L0"] == c["physical_queries"] > 600 + 16 + 6 * len(data.y_train)


def test_pat_forward_uses_the_physics_not_the_twin():
    # With a twin that cannot fit (1 sample of data), training still evaluates on the physics
    data = blobs(seed=4, n_per_class=20)
    cfg = pat.Config(hidden=(6,), n_meas=6, epochs=1, batch_size=16, twin_samples=80,
                     twin_epochs=2)
    layers = _hyb_layers(pat, cfg, data)
    rec, model = pat.train(layers, data, cfg, seed=0)
    assert layers[0].n_calls > 0 and rec["cost"]["physical_queries"] > 80


def test_pat_refits_its_twin_on_fresh_measurements_when_asked():
    data = blobs(seed=4, n_per_class=20)
    cfg = pat.Config(hidden=(6,), n_meas=6, epochs=2, batch_size=16, twin_samples=80,
                     twin_epochs=2)
    steps = []

    def hook(n, evaluate):
        steps.append(n)
        if n == 2:
            assert 0.0 <= evaluate(data.x_test, data.y_test) <= 1.0

    once, _ = pat.train(_hyb_layers(pat, cfg, data), data, cfg, seed=0)
    layers = _hyb_layers(pat, cfg, data)
    rec, model = pat.train(layers, data, cfg, seed=0, on_step=hook, refit_at_steps=(2, 5))
    spe = -(-len(data.y_train) // cfg.batch_size)
    assert steps == list(range(1, 2 * spe + 1))  # the hook sees every step, in order
    assert [r["after_step"] for r in rec["twin_refits"]] == [2, 5]
    assert all(len(r["twin_val_nrmse"]) == 1 for r in rec["twin_refits"])
    # each refit measures twin_samples fresh drives; the hook's evaluation is charged as eval
    extra = rec["cost"]["physical_queries"] - once["cost"]["physical_queries"]
    assert rec["cost"]["queries_by_purpose"]["eval"] - once["cost"]["queries_by_purpose"][
        "eval"] == len(data.y_test)
    # (half random drives, half drives of training inputs, at most one per training sample)
    n_rand = cfg.twin_samples // 2
    per_refit = n_rand + min(cfg.twin_samples - n_rand, len(data.y_train))
    assert extra == 2 * per_refit + len(data.y_test)


def test_insilico_learns_and_reports_deployed_accuracy():
    data = blobs(seed=5, n_per_class=40)
    cfg = insilico.Config(hidden=(6,), n_meas=6, epochs=8, batch_size=16, lr=1e-2)
    shapes = insilico.layer_shapes(cfg, data.n_features, data.n_classes)
    sims = [_small_acoustic(n_in, n_out) for n_in, n_out in shapes]
    rec, _ = insilico.train(sims, data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.85
    assert rec["cost"]["flops_by_item"]["simulator"] > 0


def test_insilico_trains_on_the_model_and_is_evaluated_on_the_deployed_layer():
    from pnn.train.hybrid import evaluate

    data = blobs(seed=5, n_per_class=40)
    # the last state (not the one selected on the deployed layer's validation accuracy): the
    # network as trained on the ideal model
    cfg = insilico.Config(hidden=(6,), n_meas=6, epochs=8, batch_size=16, lr=1e-2,
                          restore_best=False)
    (n_in, n_out), = insilico.layer_shapes(cfg, data.n_features, data.n_classes)
    model_layers = [_small_acoustic(n_in, n_out, seed=0, name="model")]

    class Deployed:  # the real system: the model's physics, read out with a broken channel
        pad_batches = False
        spec = model_layers[0].spec.__class__(n_in=n_in, n_out=n_out, name="deployed")

        def __init__(self):
            self.n = 0

        def __call__(self, x):
            self.n += len(x)
            y = np.array(model_layers[0](x))
            y[:, 0] = 50 * y.max()  # a stuck, saturated detector
            return y

    deployed = Deployed()
    rec, model = insilico.train([deployed], data, cfg, seed=0, model_layers=model_layers)
    # the simulator is never queried as hardware; every physical query went to the deployed one
    assert set(rec["cost"]["queries_by_layer"]) == {"deployed"}
    assert deployed.n == rec["cost"]["physical_queries"] > 0
    net = model.algorithm.net(model.state)
    acc = evaluate(net, [deployed], data.x_test, data.y_test, Ledger())
    assert rec["test_accuracy"] == pytest.approx(acc)
    ideal = evaluate(net, model_layers, data.x_test, data.y_test, Ledger())
    assert ideal >= 0.85 and rec["test_accuracy"] < ideal  # the reality gap


def test_insilico_refuses_a_non_differentiable_model():
    data = blobs(n_per_class=5)
    cfg = insilico.Config(hidden=(4,), n_meas=4, epochs=1)
    with pytest.raises(ValueError, match="insilico: 'L0' is not a differentiable simulator"):
        insilico.train(_hyb_layers(insilico, cfg, data), data, cfg)


def test_zo_learns_from_forward_passes_only_through_nan_gradient_layer():
    data = blobs(seed=6, n_per_class=40)
    cfg = zo.Config(hidden=(6,), n_meas=6, epochs=10, batch_size=16, lr=3e-2, n_dirs=4,
                    estimate="all", lr_schedule="constant")
    layers = _hyb_layers(zo, cfg, data, cls=NaNGradLayer)
    rec, model = zo.train(layers, data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.7  # chance 1/3
    assert bool(jnp.all(jnp.isfinite(model.state["params"].blocks[0].W)))
    # plain SPSA over every parameter; with one block no perturbation changes a drive, so each
    # step measures its batch once (pnn.train.zo: B + 2 n_dirs B (K - 1)), plus calibration
    n_tr = len(data.y_train)
    assert rec["cost"]["queries_by_purpose"]["train"] == cfg.epochs * n_tr + cfg.batch_size


@pytest.mark.parametrize("mod, floor", [(ff, 0.85), (mf, 0.95), (bp, 0.95)])
def test_digital_references_learn_blobs(mod, floor):
    data = blobs(seed=7)
    cfg = mod.Config(epochs=20) if mod is not bp else bp.BPConfig(epochs=20, n_params=200)
    rec, model = mod.train(None, data, cfg, seed=0)
    assert rec["test_accuracy"] >= floor
    assert rec["cost"]["physical_queries"] == 0 and rec["cost"]["digital_flops"] > 0


def test_bp_width_matches_parameter_budget():
    data = blobs()
    rec, model = bp.train(None, data, bp.BPConfig(n_params=500, epochs=1), seed=0)
    assert abs(rec["n_trainable_params"] - 500) <= 4 + data.n_features + data.n_classes


def test_linear_reference_matches_a_logistic_regression_tuned_on_the_same_validation_split():
    """The converged linear reference: within 1 point of scikit-learn's L-BFGS logistic
    regression whose C is chosen here, independently, on the demo split's validation part."""
    from sklearn.linear_model import LogisticRegression

    from pnn.data.vowels import load_vowels

    data = load_vowels(seed=0)
    best = max(
        (float(np.mean(LogisticRegression(C=C, max_iter=5000).fit(data.x_train, data.y_train)
                       .predict(data.x_val) == data.y_val)), -C, C)
        for C in np.logspace(-3, 3, 13))
    ref = LogisticRegression(C=best[2], max_iter=5000).fit(data.x_train, data.y_train)
    ref_test = float(np.mean(ref.predict(data.x_test) == data.y_test))
    rec, model = bp.train_linear(data, seed=0)
    assert rec["C"] == pytest.approx(best[2])
    assert abs(rec["test_accuracy"] - ref_test) <= 0.01
    assert rec["val_accuracy"] == pytest.approx(best[0])
    assert rec["cost"]["digital_flops"] > 0 and rec["lbfgs_iterations"] > 0


def test_hybrid_readout_input_is_a_linear_map_of_the_encoded_input_beside_the_blocks():
    import equinox as eqx
    import jax

    from pnn.train.hybrid import HybridNet, encode

    shapes, hidden = [(9, 5)], (6,)
    plain = HybridNet(shapes, hidden, 3, key=jax.random.PRNGKey(0))
    skip = HybridNet(shapes, hidden, 3, key=jax.random.PRNGKey(0), readout_input=True)
    assert plain.head.in_features == 6 and skip.head.in_features == 6 + 9
    assert skip.n_params == plain.n_params + 3 * 9
    x0 = encode(np.random.default_rng(0).normal(size=(7, 4)))
    measure = lambda k, a: jnp.ones((a.shape[0], 5))  # noqa: E731
    # blocks that output zero: the logits are the read-out's input columns applied to x0
    zero = eqx.tree_at(lambda n: (n.blocks[0].W, n.blocks[0].b), skip,
                       replace=(jnp.zeros_like(skip.blocks[0].W), jnp.zeros_like(skip.blocks[0].b)))
    expect = x0 @ zero.head.weight[:, :9].T + zero.head.bias
    np.testing.assert_allclose(np.asarray(zero.forward(x0, measure)), np.asarray(expect),
                               rtol=1e-5, atol=1e-6)
    # ... and the blocks' output still reaches the read-out through the other columns
    assert not np.allclose(np.asarray(skip.forward(x0, measure)), np.asarray(expect))


def test_pat_with_readout_input_learns_and_a_saved_model_reloads_exactly(tmp_path):
    from pnn import load_model, save_model

    data = blobs(seed=3, n_per_class=40)
    cfg = pat.Config(hidden=(6,), n_meas=6, epochs=4, batch_size=16, twin_samples=300,
                     twin_epochs=30, readout_input=True)
    small = dict(nx=24, ny=24, pml_width=4, n_steps=70)
    layers = registry.build_layers("acoustic", "pat", cfg, data, seed=0, **small)
    rec, model = pat.train(layers, data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.9
    assert rec["config"]["readout_input"] is True
    path = save_model(model, tmp_path / "m.pnn", record=rec, system="acoustic",
                      system_kwargs=small, data=data)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(data.x_test), model.predict(data.x_test))
