"""PhyLL learns, and never differentiates through the physics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn.data.vowels import Dataset
from pnn.layer import LayerSpec, validate_input
from pnn.train import phyll


def blobs(n_per_class=60, n_classes=3, n_features=4, seed=0, spread=0.35):
    """Gaussian blobs around random centres: a small separable problem."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, n_features)) * 2
    x = np.concatenate([c + spread * rng.normal(size=(n_per_class, n_features)) for c in centres])
    y = np.repeat(np.arange(n_classes), n_per_class)
    order = rng.permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int32)
    n_tr, n_va = int(0.55 * len(y)), int(0.7 * len(y))  # 55 % train, 15 % validation, 30 % test
    mu, sd = x[:n_tr].mean(0), x[:n_tr].std(0)
    x = (x - mu) / sd
    return Dataset(x_train=x[:n_tr], y_train=y[:n_tr], x_test=x[n_va:], y_test=y[n_va:],
                   x_val=x[n_tr:n_va], y_val=y[n_tr:n_va],
                   classes=tuple(f"c{i}" for i in range(n_classes)),
                   feature_names=tuple(f"f{i}" for i in range(n_features)), name="blobs", info={})


class RandomQuadraticLayer:
    """Host-side stand-in for an unknown physical system: y = (A x)^2 + tanh(B x), in numpy.

    It is not JAX at all: any attempt to differentiate through it fails loudly.
    """

    pad_batches = False

    def __init__(self, n_in, n_out, seed=0, name="quad"):
        rng = np.random.default_rng(seed)
        self.A = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)
        self.B = rng.normal(size=(n_out, n_in))
        self.spec = LayerSpec(n_in=n_in, n_out=n_out, name=name)
        self.n_calls = 0

    def __call__(self, x):
        if isinstance(x, jax.core.Tracer):
            raise RuntimeError("a gradient or trace was requested through the physical layer")
        validate_input(self.spec, x)
        self.n_calls += 1
        x = np.asarray(x, np.float64)
        return ((x @ self.A.T) ** 2 + np.tanh(x @ self.B.T)).astype(np.float32)


class NaNGradLayer:
    """A JAX layer whose forward pass is fine but whose gradient is NaN."""

    pad_batches = False

    def __init__(self, n_in, n_out, name="nan-grad"):
        self.spec = LayerSpec(n_in=n_in, n_out=n_out, name=name)
        self.M = jax.random.normal(jax.random.PRNGKey(1), (n_in, n_out))

        @jax.custom_vjp
        def f(x):
            return jnp.sin(x @ self.M) ** 2

        f.defvjp(lambda x: (f(x), None), lambda _, g: (jnp.full((g.shape[0], n_in), jnp.nan),))
        self.f = f

    def __call__(self, x):
        validate_input(self.spec, x)
        return self.f(jnp.asarray(x))


def _layers(cls, cfg, data, **kw):
    shapes = phyll.layer_shapes(cfg, data.n_features, data.n_classes)
    return [cls(n_in, n_out, name=f"L{k}", **kw) for k, (n_in, n_out) in enumerate(shapes)]


def test_phyll_learns_blobs_through_non_differentiable_layer():
    data = blobs()
    cfg = phyll.PhyLLConfig(hidden=(12, 12), n_meas=10, epochs=8, batch_size=32)
    layers = _layers(RandomQuadraticLayer, cfg, data)
    rec, _ = phyll.train(layers, data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.9  # chance is 1/3
    assert rec["history"][-1]["loss"] < rec["history"][0]["loss"]
    # the ledger counted every sample sent: training sends pos+neg per sample per block,
    # every evaluation (validation and a training subset, every epoch; test once at the end)
    # sends each sample once per class per block
    n_tr, n_va, n_te = len(data.y_train), len(data.y_val), len(data.y_test)
    C, K = data.n_classes, 2
    n_eval_train = min(cfg.eval_train_max, n_tr)
    expected = cfg.epochs * K * (2 * n_tr + C * (n_eval_train + n_va)) + K * C * n_te
    assert rec["cost"]["physical_queries"] == expected
    assert rec["cost"]["queries_by_purpose"]["test"] == K * C * n_te
    assert rec["cost"]["digital_flops"] > 0


def test_phyll_trains_when_the_layer_gradient_is_nan():
    data = blobs(seed=1)
    cfg = phyll.PhyLLConfig(hidden=(10,), n_meas=8, epochs=6, batch_size=32)
    layers = _layers(NaNGradLayer, cfg, data)
    # sanity: the layer's own gradient is NaN, so any gradient through it would poison training
    g = jax.grad(lambda x: layers[0](x).sum())(jnp.full((2, layers[0].spec.n_in), 0.5))
    assert bool(jnp.all(jnp.isnan(g)))
    rec, model = phyll.train(layers, data, cfg, seed=0)
    params = model.state["blocks"][0]
    assert bool(jnp.all(jnp.isfinite(params.W)))
    assert rec["test_accuracy"] >= 0.85


def test_phyll_is_reproducible_from_its_seed():
    data = blobs(n_per_class=20)
    cfg = phyll.PhyLLConfig(hidden=(6,), n_meas=5, epochs=2, batch_size=16)
    a, ma = phyll.train(_layers(RandomQuadraticLayer, cfg, data), data, cfg, seed=4)
    b, mb = phyll.train(_layers(RandomQuadraticLayer, cfg, data), data, cfg, seed=4)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    np.testing.assert_array_equal(ma.state["blocks"][0].W, mb.state["blocks"][0].W)
    assert a["params_sha256"] == b["params_sha256"]


def test_sumsq_goodness_option_trains():
    data = blobs(seed=2)
    cfg = phyll.PhyLLConfig(hidden=(12,), n_meas=10, epochs=6, batch_size=32, goodness="sumsq",
                            theta=2.0)
    rec, _ = phyll.train(_layers(RandomQuadraticLayer, cfg, data), data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.8


def test_config_and_layer_mismatch_messages():
    with pytest.raises(ValueError, match="PhyLLConfig.goodness = 'l2': expected one of "
                                         "'cosine', 'sumsq'"):
        phyll.PhyLLConfig(goodness="l2")
    with pytest.raises(ValueError, match="PhyLLConfig.inner_steps = 0: expected an integer >= 1"):
        phyll.PhyLLConfig(inner_steps=0)
    data = blobs(n_per_class=5)
    cfg = phyll.PhyLLConfig(hidden=(6, 6), n_meas=4, epochs=1)
    with pytest.raises(ValueError, match=r"needs 2 physical layers, got 1"):
        phyll.train([RandomQuadraticLayer(12, 4)], data, cfg)
    with pytest.raises(ValueError, match=r"block 0: physical layer 'quad' has n_in=5, but the block sends 12 \(3 label slots \+ 2 x 4 split features \+ 1\)"):
        phyll.train([RandomQuadraticLayer(5, 4), RandomQuadraticLayer(6, 4)], data, cfg)


def test_label_embedding_matches_the_paper():
    from pnn.network import embed_label

    x = jnp.array([[0.3, 0.9, 0.1, 0.5, 0.7]])
    e = embed_label(x, jnp.array([1]), 3)
    np.testing.assert_allclose(e, [[0.0, 0.9, 0.0, 0.5, 0.7]])


def test_linear_readout_learns_with_one_pass_per_sample():
    """readout="linear": one neutral-label pass per sample and block at evaluation (not one per
    class), a logistic-regression read-out refitted on the training split before each
    evaluation (its passes are learning: charged as train)."""
    data = blobs(seed=2)
    cfg = phyll.PhyLLConfig(hidden=(12, 12), n_meas=10, epochs=4, batch_size=32,
                            readout="linear", eval_train_max=0)
    rec, model = phyll.train(_layers(RandomQuadraticLayer, cfg, data), data, cfg, seed=0)
    assert rec["test_accuracy"] >= 0.9  # chance is 1/3
    n_tr, n_va, n_te, K = len(data.y_train), len(data.y_val), len(data.y_test), 2
    q = rec["cost"]["queries_by_purpose"]
    assert q["eval"] == cfg.epochs * K * n_va and q["test"] == K * n_te
    assert q["train"] == cfg.epochs * K * (2 * n_tr + n_tr)  # pos+neg steps, read-out fits
    r = model.state["readout"]
    assert np.asarray(r["coef"]).shape == (data.n_classes, sum(cfg.hidden))
    assert rec["cost"]["flops_by_item"]["read-out fit"] > 0


class ConstantLayer:
    """A physical system that has died: the same measurement whatever the drive."""

    pad_batches = False

    def __init__(self, n_in, n_out, seed=0, name="dead"):
        self.spec = LayerSpec(n_in=n_in, n_out=n_out, name=name)

    def __call__(self, x):
        validate_input(self.spec, x)
        return np.full((np.shape(x)[0], self.spec.n_out), 0.5, np.float32)


def test_readout_input_lets_the_readout_do_what_a_linear_classifier_does():
    """readout_input: the read-out sees the encoded input beside the blocks' outputs, so even
    behind physics that carries no information it is as good as a logistic regression on the
    features (same C), and its width is sum(hidden) + the input's feature part."""
    from sklearn.linear_model import LogisticRegression

    data = blobs(n_per_class=80, n_classes=4, seed=5, spread=1.2)  # overlapping: LR ~ 0.8-0.9
    lr = LogisticRegression(C=1.0, max_iter=3000).fit(data.x_train, data.y_train)
    lr_acc = float(np.mean(lr.predict(data.x_test) == data.y_test))
    cfg = phyll.PhyLLConfig(hidden=(8,), n_meas=6, epochs=1, batch_size=32, readout="linear",
                            readout_input=True, eval_train_max=0)
    rec, model = phyll.train(_layers(ConstantLayer, cfg, data), data, cfg, seed=0)
    n_feat = phyll.input_dim(data.x_train.shape[1], data.n_classes) - data.n_classes
    assert np.asarray(model.state["readout"]["coef"]).shape == (data.n_classes, 8 + n_feat)
    assert 0.6 < lr_acc < 0.97  # the task is neither trivial nor hopeless (chance 0.25)
    assert rec["test_accuracy"] >= lr_acc - 0.03
