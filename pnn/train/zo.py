"""Zeroth-order training (SPSA; Spall 1992) of the hybrid network, from forward passes only.

Each step draws ``n_dirs`` Rademacher directions Δ over all trainable parameters θ, measures the
loss at θ ± cΔ through the physical layers (2 · n_dirs · K · batch queries) and forms the
simultaneous-perturbation estimate ĝ = mean[(L(θ+cΔ) − L(θ−cΔ)) / (2c) · Δ], fed to Adam.
Like PhyLL it is model-free: the physics is only ever queried, never differentiated.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.config import param
from pnn.cost import Ledger, adam_flops
from pnn.train.common import Progress
from pnn.train.hybrid import HybridAlgorithm, HybridConfig, encode, hybrid_layer_shapes, \
    physical_forward
from pnn.train.loop import Result, fit

__all__ = ["Config", "SPSA", "train", "layer_shapes"]

layer_shapes = hybrid_layer_shapes


@dataclasses.dataclass(frozen=True)
class Config(HybridConfig):
    """c: perturbation size; n_dirs: SPSA directions averaged per step."""

    lr: float = param(1e-2, gt=0, le=10, search=("log", 1e-3, 1e-1))
    c: float = param(0.01, gt=0, le=10, search=("log", 1e-3, 1e-1))
    n_dirs: int = param(2, integer=True, ge=1, le=10_000, search=("int", 1, 8))


class SPSA(HybridAlgorithm):
    """Zeroth-order training for the run loop (state as :class:`HybridAlgorithm`)."""

    def loss_at(self, p, x0, y):
        logits, _, _ = physical_forward(eqx.combine(p, self.static), self.layers, x0,
                                        self.ledger)
        return float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())

    def step(self, state, x, y):
        cfg, rng = self.config, state["rng"]
        params = state["params"]
        treedef = jax.tree_util.tree_structure(params)
        x0, y = encode(x), jnp.asarray(y)
        grads = [np.zeros(v.shape, np.float32) for v in jax.tree_util.tree_leaves(params)]
        losses = []
        for _ in range(cfg.n_dirs):
            delta = [rng.choice([-1.0, 1.0], size=g.shape).astype(np.float32) for g in grads]
            dtree = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(d) for d in delta])
            plus = jax.tree_util.tree_map(lambda p, d: p + cfg.c * d, params, dtree)
            minus = jax.tree_util.tree_map(lambda p, d: p - cfg.c * d, params, dtree)
            lp, lm = self.loss_at(plus, x0, y), self.loss_at(minus, x0, y)
            losses += [lp, lm]
            for g, d in zip(grads, delta):
                g += (lp - lm) / (2 * cfg.c * cfg.n_dirs) * d
        gtree = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(g) for g in grads])
        upd, opt_state = self.opt.update(gtree, state["opt"], params)
        n_params = self.n_params(state)
        self.ledger.add_flops(adam_flops(n_params) + 4 * cfg.n_dirs * n_params,
                              "optimiser + perturbations")
        return ({**state, "params": eqx.apply_updates(params, upd), "opt": opt_state},
                float(np.mean(losses)))


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None, on_step=None, **kw) -> Result:
    """Zeroth-order (SPSA) training; returns ``(record, model)``."""
    return fit("zo", SPSA, layers, data, config, seed=seed, ledger=ledger, progress=progress,
               on_step=on_step, **kw)
