"""Digital Forward-Forward (Hinton 2022, arXiv:2212.13345): the BP-free digital reference.

A stack of ReLU layers, each fed the length-normalised output of the one below. Each layer is
trained greedily by its own loss on goodness ``G = sum(h^2)``: ``softplus(-(G+ - theta)) +
softplus(G- - theta)``, positive = input with its label embedded (PhyLL's embedding, on PhyLL's
encoded input), negative = a uniformly drawn wrong label. Inference sums goodness over layers for
every label and takes the argmax. No physics: ``layers`` is ignored.
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
from pnn.network import embed_all_labels, embed_label
from pnn.train.common import Progress, accuracy, minibatches, result_record
from pnn.train.hybrid import encode

__all__ = ["Config", "train", "layer_shapes"]


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple = (64, 64)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    theta: float = 2.0


def layer_shapes(config, n_features, n_classes):
    return []


def _normalise(h):
    return h / (jnp.linalg.norm(h, axis=-1, keepdims=True) + 1e-8)


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None) -> dict:
    del layers
    ledger = ledger or Ledger()
    C = data.n_classes
    d_in = C + 2 * data.n_features + 1
    sizes = [d_in, *map(int, config.hidden)]
    keys = jax.random.split(jax.random.PRNGKey(seed), len(sizes) - 1)
    lins = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)]
    opt = optax.adam(config.lr)
    states = [opt.init(eqx.filter(lin, eqx.is_array)) for lin in lins]

    def prep(x):
        z = encode(x)
        return jnp.concatenate([jnp.zeros((z.shape[0], C)), z], axis=1)

    @eqx.filter_jit
    def update(lin, state, xp, xn):
        def loss_fn(l):
            gp = jnp.sum(jax.nn.relu(jax.vmap(l)(xp)) ** 2, axis=1)
            gn = jnp.sum(jax.nn.relu(jax.vmap(l)(xn)) ** 2, axis=1)
            return jnp.mean(jax.nn.softplus(-(gp - config.theta)) +
                            jax.nn.softplus(gn - config.theta))
        loss, g = eqx.filter_value_and_grad(loss_fn)(lin)
        u, state = opt.update(g, state, eqx.filter(lin, eqx.is_array))
        return eqx.apply_updates(lin, u), state, loss

    @eqx.filter_jit
    def layer_out(lin, x):
        return jax.nn.relu(jax.vmap(lin)(x))

    def predict(x):
        h = _normalise(embed_all_labels(prep(x), C))
        total = 0.0
        for lin in lins:
            h = layer_out(lin, h)
            total = total + jnp.sum(h**2, axis=1)
            h = _normalise(h)
        return np.asarray(jnp.argmax(total.reshape(C, -1), axis=0))

    n_params = sum(lin.weight.size + lin.bias.size for lin in lins)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(1, config.epochs + 1):
        t = time.perf_counter()
        losses = []
        for idx in minibatches(rng, len(data.y_train), config.batch_size):
            x0 = prep(data.x_train[idx])
            y = jnp.asarray(data.y_train[idx])
            yn = (y + jnp.asarray(rng.integers(1, C, size=len(idx)))) % C
            hp, hn = _normalise(embed_label(x0, y, C)), _normalise(embed_label(x0, yn, C))
            batch_loss = 0.0
            for i, lin in enumerate(lins):
                lins[i], states[i], loss = update(lin, states[i], hp, hn)
                batch_loss += float(loss)
                hp, hn = _normalise(layer_out(lins[i], hp)), _normalise(layer_out(lins[i], hn))
                ledger.add_flops(3 * dense_flops(2 * len(idx), sizes[i], sizes[i + 1])
                                 + adam_flops(lins[i].weight.size + lins[i].bias.size),
                                 "trainable update")
            losses.append(batch_loss)
        rec = {"epoch": epoch, "loss": float(np.mean(losses)),
               "train_accuracy": accuracy(predict(data.x_train), data.y_train),
               "test_accuracy": accuracy(predict(data.x_test), data.y_test),
               "physical_queries": 0, "epoch_s": round(time.perf_counter() - t, 3)}
        history.append(rec)
        if progress is not None:
            progress(rec)
    ledger.stop()
    out = result_record(method="ff", config=config, seed=seed, history=history,
                        train_accuracy=history[-1]["train_accuracy"],
                        test_accuracy=history[-1]["test_accuracy"], ledger=ledger,
                        n_params=int(n_params))
    out["model"] = lins
    return out
