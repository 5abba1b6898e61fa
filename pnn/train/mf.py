"""Mono-Forward (Gong, Li & Wang 2025, arXiv:2501.09238): local projection to class scores.

Each ReLU layer l has its own projection ``M_l`` (``C x width``) mapping its activations to class
scores; layer l and ``M_l`` are trained only by that layer's softmax cross-entropy (the input from
the layer below is a constant: ``stop_gradient``), so no error signal crosses layers. Inference
uses the last layer's scores. No physics: ``layers`` is ignored.
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
from pnn.train.common import Progress
from pnn.train.loop import Algorithm, LoopConfig, Result, fit

__all__ = ["Config", "MonoForwardTrainer", "train", "layer_shapes"]


@dataclasses.dataclass(frozen=True)
class Config(LoopConfig):
    hidden: tuple = param((64, 64), widths=True)
    epochs: int = param(100, integer=True, ge=1, le=100_000)
    patience: int = param(15, integer=True, ge=0, le=100_000)
    lr: float = param(3e-3, gt=0, le=10, search=("log", 3e-4, 3e-2))


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


@eqx.filter_jit
def _predict(model, x):
    return jnp.argmax(model.local_scores(x)[-1], axis=1)


class MonoForwardTrainer(Algorithm):
    """Mono-Forward for the run loop. State: ``model``, ``opt``."""

    def __init__(self, layers, data, config, *, seed, ledger):
        super().__init__([], data, config, seed=seed, ledger=ledger)
        self.sizes = [data.n_features, *map(int, config.hidden)]
        self.opt = optax.adam(config.lr)
        opt = self.opt

        @eqx.filter_jit
        def update(model, state, x, y):
            def loss_fn(m):  # a sum of local losses; stop_gradient keeps each one local
                return sum(optax.softmax_cross_entropy_with_integer_labels(s, y).mean()
                           for s in m.local_scores(x))
            loss, g = eqx.filter_value_and_grad(loss_fn)(model)
            u, state = opt.update(g, state, eqx.filter(model, eqx.is_array))
            return eqx.apply_updates(model, u), state, loss / len(model.layers)

        self._update = update

    def init(self):
        model = MonoForward(self.sizes, self.data.n_classes, key=jax.random.PRNGKey(self.seed))
        return {"model": model, "opt": self.opt.init(eqx.filter(model, eqx.is_array))}

    def step(self, state, x, y):
        model, opt_state, loss = self._update(state["model"], state["opt"], jnp.asarray(x),
                                              jnp.asarray(y))
        C = self.data.n_classes
        fwd = sum(dense_flops(len(y), a, b) + dense_flops(len(y), b, C)
                  for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        self.ledger.add_flops(3 * fwd + adam_flops(model.n_params), "trainable update")
        return {"model": model, "opt": opt_state}, float(loss)

    def predict(self, state, x):
        return np.asarray(_predict(state["model"], jnp.asarray(x)))

    def params(self, state):
        return eqx.filter(state["model"], eqx.is_array)


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None, **kw) -> Result:
    """Mono-Forward (no physics: ``layers`` is ignored); returns ``(record, model)``."""
    return fit("mf", MonoForwardTrainer, [], data, config, seed=seed, ledger=ledger,
               progress=progress, **kw)
