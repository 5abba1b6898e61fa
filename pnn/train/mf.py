"""Mono-Forward (Gong, Li & Wang 2025, arXiv:2501.09238): local projection to class scores.

Each ReLU layer l has its own projection ``M_l`` (``C x width``) mapping its activations to class
scores; layer l and ``M_l`` are trained only by that layer's softmax cross-entropy (the input from
the layer below is a constant: ``stop_gradient``), so no error signal crosses layers. Inference
uses the last layer's scores. No physics: ``layers`` is ignored.
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

__all__ = ["Config", "train", "layer_shapes"]


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple = (64, 64)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3


def layer_shapes(config, n_features, n_classes):
    return []


class MonoForward(eqx.Module):
    layers: list
    projections: list

    def __init__(self, sizes, n_classes, *, key):
        keys = jax.random.split(key, 2 * (len(sizes) - 1))
        self.layers = [eqx.nn.Linear(a, b, key=k)
                       for a, b, k in zip(sizes[:-1], sizes[1:], keys[::2])]
        self.projections = [eqx.nn.Linear(b, n_classes, use_bias=False, key=k)
                            for b, k in zip(sizes[1:], keys[1::2])]

    def local_scores(self, x):
        out = []
        for lin, proj in zip(self.layers, self.projections):
            x = jax.nn.relu(jax.vmap(lin)(jax.lax.stop_gradient(x)))
            out.append(jax.vmap(proj)(x))
        return out

    @property
    def n_params(self):
        return int(sum(v.size for v in jax.tree_util.tree_leaves(eqx.filter(self, eqx.is_array))))


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None) -> dict:
    del layers
    ledger = ledger or Ledger()
    sizes = [data.n_features, *map(int, config.hidden)]
    model = MonoForward(sizes, data.n_classes, key=jax.random.PRNGKey(seed))
    opt = optax.adam(config.lr)
    state = opt.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def update(model, state, x, y):
        def loss_fn(m):  # a sum of local losses; stop_gradient keeps each one local
            return sum(optax.softmax_cross_entropy_with_integer_labels(s, y).mean()
                       for s in m.local_scores(x))
        loss, g = eqx.filter_value_and_grad(loss_fn)(model)
        u, state = opt.update(g, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, u), state, loss / len(model.layers)

    @eqx.filter_jit
    def predict(model, x):
        return jnp.argmax(model.local_scores(x)[-1], axis=1)

    rng = np.random.default_rng(seed)
    xtr, ytr = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    history = []
    for epoch in range(1, config.epochs + 1):
        t = time.perf_counter()
        losses = []
        for idx in minibatches(rng, len(ytr), config.batch_size):
            model, state, loss = update(model, state, xtr[idx], ytr[idx])
            losses.append(float(loss))
            fwd = sum(dense_flops(len(idx), a, b) + dense_flops(len(idx), b, data.n_classes)
                      for a, b in zip(sizes[:-1], sizes[1:]))
            ledger.add_flops(3 * fwd + adam_flops(model.n_params), "trainable update")
        rec = {"epoch": epoch, "loss": float(np.mean(losses)),
               "train_accuracy": accuracy(predict(model, xtr), ytr),
               "test_accuracy": accuracy(predict(model, jnp.asarray(data.x_test)), data.y_test),
               "physical_queries": 0, "epoch_s": round(time.perf_counter() - t, 3)}
        history.append(rec)
        if progress is not None:
            progress(rec)
    ledger.stop()
    out = result_record(method="mf", config=config, seed=seed, history=history,
                        train_accuracy=history[-1]["train_accuracy"],
                        test_accuracy=history[-1]["test_accuracy"], ledger=ledger,
                        n_params=model.n_params)
    out["model"] = model
    return out
