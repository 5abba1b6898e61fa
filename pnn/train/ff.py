"""Digital Forward-Forward (Hinton 2022, arXiv:2212.13345): the BP-free digital reference.

A stack of ReLU layers, each fed the length-normalised output of the one below. Each layer is
trained greedily by its own loss on goodness ``G = sum(h^2)``: ``softplus(-(G+ - theta)) +
softplus(G- - theta)``, positive = input with its label embedded (PhyLL's embedding, on PhyLL's
encoded input), negative = a uniformly drawn wrong label. Inference sums goodness over layers for
every label and takes the argmax. No physics: ``layers`` is ignored.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.config import param
from pnn.cost import Ledger, adam_flops, dense_flops
from pnn.network import embed_all_labels, embed_label
from pnn.train.common import Progress
from pnn.train.hybrid import encode
from pnn.train.loop import Algorithm, LoopConfig, Result, fit

__all__ = ["Config", "ForwardForward", "train", "layer_shapes"]


@dataclasses.dataclass(frozen=True)
class Config(LoopConfig):
    hidden: tuple = param((64, 64), widths=True)
    epochs: int = param(100, integer=True, ge=1, le=100_000)
    patience: int = param(15, integer=True, ge=0, le=100_000)
    lr: float = param(3e-3, gt=0, le=10, search=("log", 3e-4, 3e-2))
    theta: float = param(2.0, gt=0, le=1000, search=("float", 0.5, 10.0))


def layer_shapes(config, n_features, n_classes):
    return []


def _normalise(h):
    return h / (jnp.linalg.norm(h, axis=-1, keepdims=True) + 1e-8)


@eqx.filter_jit
def _layer_out(lin, x):
    return jax.nn.relu(jax.vmap(lin)(x))


class ForwardForward(Algorithm):
    """Hinton's Forward-Forward on a digital ReLU network. State: ``lins``, ``opt``, ``rng``."""

    def __init__(self, layers, data, config, *, seed, ledger):
        super().__init__([], data, config, seed=seed, ledger=ledger)
        C = data.n_classes
        self.sizes = [C + 2 * data.n_features + 1, *map(int, config.hidden)]
        self.opt = optax.adam(config.lr)
        opt, theta = self.opt, config.theta

        @eqx.filter_jit
        def update(lin, state, xp, xn):
            def loss_fn(l):
                gp = jnp.sum(jax.nn.relu(jax.vmap(l)(xp)) ** 2, axis=1)
                gn = jnp.sum(jax.nn.relu(jax.vmap(l)(xn)) ** 2, axis=1)
                return jnp.mean(jax.nn.softplus(-(gp - theta)) + jax.nn.softplus(gn - theta))
            loss, g = eqx.filter_value_and_grad(loss_fn)(lin)
            u, state = opt.update(g, state, eqx.filter(lin, eqx.is_array))
            return eqx.apply_updates(lin, u), state, loss

        self._update = update

    def init(self):
        keys = jax.random.split(jax.random.PRNGKey(self.seed), len(self.sizes) - 1)
        lins = [eqx.nn.Linear(a, b, key=k)
                for a, b, k in zip(self.sizes[:-1], self.sizes[1:], keys)]
        return {"lins": lins, "opt": [self.opt.init(eqx.filter(l, eqx.is_array)) for l in lins],
                "rng": np.random.default_rng([self.seed, 31])}

    def prep(self, x):
        z = encode(x)
        return jnp.concatenate([jnp.zeros((z.shape[0], self.data.n_classes)), z], axis=1)

    def step(self, state, x, y):
        C, rng = self.data.n_classes, state["rng"]
        lins, opts = list(state["lins"]), list(state["opt"])
        x0 = self.prep(x)
        y = jnp.asarray(y)
        yn = (y + jnp.asarray(rng.integers(1, C, size=len(y)))) % C
        hp, hn = _normalise(embed_label(x0, y, C)), _normalise(embed_label(x0, yn, C))
        batch_loss = 0.0
        for i, lin in enumerate(lins):
            lins[i], opts[i], loss = self._update(lin, opts[i], hp, hn)
            batch_loss += float(loss)
            hp, hn = _normalise(_layer_out(lins[i], hp)), _normalise(_layer_out(lins[i], hn))
            self.ledger.add_flops(3 * dense_flops(2 * len(y), self.sizes[i], self.sizes[i + 1])
                                  + adam_flops(lins[i].weight.size + lins[i].bias.size),
                                  "trainable update")
        return {"lins": lins, "opt": opts, "rng": rng}, batch_loss

    def predict(self, state, x):
        C = self.data.n_classes
        h = _normalise(embed_all_labels(self.prep(x), C))
        total = 0.0
        for lin in state["lins"]:
            h = _layer_out(lin, h)
            total = total + jnp.sum(h**2, axis=1)
            h = _normalise(h)
        return np.asarray(jnp.argmax(total.reshape(C, -1), axis=0))

    def params(self, state):
        return [eqx.filter(l, eqx.is_array) for l in state["lins"]]


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None, **kw) -> Result:
    """Forward-Forward (no physics: ``layers`` is ignored); returns ``(record, model)``."""
    return fit("ff", ForwardForward, [], data, config, seed=seed, ledger=ledger,
               progress=progress, **kw)
