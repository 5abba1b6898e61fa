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

from pnn.cost import Ledger, adam_flops
from pnn.train.common import Progress
from pnn.train.hybrid import (HybridConfig, encode, hybrid_layer_shapes, init_calibrated,
                              physical_forward, run_epochs)

__all__ = ["Config", "train", "layer_shapes"]

layer_shapes = hybrid_layer_shapes


@dataclasses.dataclass(frozen=True)
class Config(HybridConfig):
    """c: perturbation size; n_dirs: SPSA directions averaged per step."""

    lr: float = 1e-2
    c: float = 0.01
    n_dirs: int = 2


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None, on_step=None) -> dict:
    ledger = ledger or Ledger()
    net, rng = init_calibrated(config, layers, data, seed, ledger)
    filt = net.trainable()
    params, static = eqx.partition(net, filt)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    opt = optax.adam(config.lr)
    state = opt.init(params)

    def loss_at(p, x0, y):
        logits, _, _ = physical_forward(eqx.combine(p, static), layers, x0, ledger)
        return float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())

    def step(net, state, idx):
        params = eqx.filter(net, filt)
        x0, y = encode(data.x_train[idx]), jnp.asarray(data.y_train[idx])
        grads = [np.zeros(v.shape, np.float32) for v in jax.tree_util.tree_leaves(params)]
        losses = []
        for _ in range(config.n_dirs):
            delta = [rng.choice([-1.0, 1.0], size=g.shape).astype(np.float32) for g in grads]
            dtree = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(d) for d in delta])
            plus = jax.tree_util.tree_map(lambda p, d: p + config.c * d, params, dtree)
            minus = jax.tree_util.tree_map(lambda p, d: p - config.c * d, params, dtree)
            lp, lm = loss_at(plus, x0, y), loss_at(minus, x0, y)
            losses += [lp, lm]
            for g, d in zip(grads, delta):
                g += (lp - lm) / (2 * config.c * config.n_dirs) * d
        gtree = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(g) for g in grads])
        upd, state = opt.update(gtree, state, params)
        ledger.add_flops(adam_flops(net.n_params) + 4 * config.n_dirs * net.n_params,
                         "optimiser + perturbations")
        return eqx.combine(eqx.apply_updates(params, upd), static), state, float(np.mean(losses))

    del leaves
    return run_epochs(method="zo", net=net, layers=layers, data=data, config=config, seed=seed,
                      ledger=ledger, progress=progress, step=step, state=state, rng=rng,
                      on_step=on_step)
