"""Digital references trained by backpropagation: a linear classifier and an MLP.

* :func:`train_linear`: multinomial logistic regression on the raw (standardised) features.
* :func:`train` (``bp``): a one-hidden-layer tanh MLP whose width is chosen so that its number of
  trainable parameters matches a given budget (:func:`mlp_width_for`), the reference for "what a
  digital network of the same trainable size does".

Both use full softmax cross-entropy, Adam and minibatches, and no physical layer.
"""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.cost import Ledger, adam_flops, dense_flops
from pnn.train.common import Progress, accuracy, minibatches, result_record

__all__ = ["BPConfig", "train", "train_linear", "mlp_width_for", "MLP"]


@dataclasses.dataclass(frozen=True)
class BPConfig:
    """n_params: trainable-parameter budget (sets the hidden width); width overrides it.
    weight_decay: decoupled L2 (AdamW), the usual guard against over-fitting small tables."""

    n_params: int = 1500
    width: int | None = None
    epochs: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4


def mlp_width_for(n_params: int, n_features: int, n_classes: int) -> int:
    """Hidden width h with (n_features + 1) h + (h + 1) C closest to ``n_params``."""
    return max(1, int(round((n_params - n_classes) / (n_features + 1 + n_classes))))


class MLP(eqx.Module):
    layers: list

    def __init__(self, sizes, *, key):
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)]

    def __call__(self, x):
        for lin in self.layers[:-1]:
            x = jnp.tanh(jax.vmap(lin)(x))
        return jax.vmap(self.layers[-1])(x)

    @property
    def n_params(self) -> int:
        return int(sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(self, eqx.is_array))))


def _fit(model, data, config, *, seed, ledger, progress, method, extra):
    ledger = ledger or Ledger()
    opt = optax.adamw(config.lr, weight_decay=config.weight_decay)
    state = opt.init(eqx.filter(model, eqx.is_array))
    sizes = [(lin.in_features, lin.out_features) for lin in model.layers]

    @eqx.filter_jit
    def step(model, state, x, y):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
        loss, g = eqx.filter_value_and_grad(loss_fn)(model)
        updates, state = opt.update(g, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, loss

    @eqx.filter_jit
    def predict(model, x):
        return jnp.argmax(model(x), axis=1)

    rng = np.random.default_rng(seed)
    xtr, ytr = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    history = []
    for epoch in range(1, config.epochs + 1):
        t = time.perf_counter()
        losses = []
        for idx in minibatches(rng, len(ytr), config.batch_size):
            model, state, loss = step(model, state, xtr[idx], ytr[idx])
            losses.append(float(loss))
            fwd = sum(dense_flops(len(idx), a, b) for a, b in sizes)
            ledger.add_flops(3 * fwd + adam_flops(model.n_params), "trainable update")
        rec = {"epoch": epoch, "loss": float(np.mean(losses)),
               "train_accuracy": accuracy(predict(model, xtr), ytr),
               "test_accuracy": accuracy(predict(model, jnp.asarray(data.x_test)), data.y_test),
               "physical_queries": 0, "epoch_s": round(time.perf_counter() - t, 4)}
        history.append(rec)
        if progress is not None:
            progress(rec)
    ledger.stop()
    out = result_record(method=method, config=config, seed=seed, history=history,
                        train_accuracy=history[-1]["train_accuracy"],
                        test_accuracy=history[-1]["test_accuracy"], ledger=ledger,
                        n_params=model.n_params, extra=extra)
    out["model"] = model
    return out


def train(layers, data, config: BPConfig = BPConfig(), *, seed: int = 0,
          ledger: Ledger | None = None, progress: Progress | None = None) -> dict:
    """Digital MLP of (about) ``config.n_params`` trainable parameters. ``layers`` is ignored:
    this reference uses no physics (the argument keeps the trainers' common signature)."""
    del layers
    width = config.width or mlp_width_for(config.n_params, data.n_features, data.n_classes)
    model = MLP([data.n_features, width, data.n_classes], key=jax.random.PRNGKey(seed))
    return _fit(model, data, config, seed=seed, ledger=ledger, progress=progress, method="bp",
                extra={"hidden_width": width})


def train_linear(data, config: BPConfig = BPConfig(), *, seed: int = 0,
                 ledger: Ledger | None = None, progress: Progress | None = None) -> dict:
    """Multinomial logistic regression on the raw features."""
    model = MLP([data.n_features, data.n_classes], key=jax.random.PRNGKey(seed))
    return _fit(model, data, config, seed=seed, ledger=ledger, progress=progress,
                method="linear", extra={})

#: the registry's name for this trainer's configuration
Config = BPConfig


def layer_shapes(config, n_features: int, n_classes: int) -> list:
    """A digital reference uses no physical layer."""
    return []
