"""Physics-aware training (PAT; Wright et al., Nature 601, 549, 2022; arXiv:2104.13386).

Forward pass through the physical layers, backward pass through a digital twin of each:

1. **Twin data.** Each physical layer is queried with ``twin_samples`` drives: half random
   directions (``|g|/||g||``, ``g ~ N(0, I)``), half the drives the freshly initialised network
   sends for training inputs, so the twin sees the region it will be used in. Every query is
   charged to the ledger.
2. **Twin fit.** An MLP (``n_in -> twin_hidden -> twin_hidden -> n_out``, tanh) is fitted to the
   calibrated measurements by Adam on mean squared error, with its own fit/validation split; the
   validation error is reported as ``twin_val_nrmse`` (RMS error / RMS deviation of the data).
   Its FLOPs are charged (``flops_by_item["twin fit"]``).
3. **Training.** For each batch the network runs on the physical layers (``K * batch``
   queries); the loss gradient is taken with each measurement replaced by the straight-through
   estimate ``m_phys + twin(d) - stop_gradient(twin(d))``: the forward value is exactly the
   measured one, the Jacobian is the twin's.
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
from pnn.network import direction, to_drive
from pnn.train.bp import MLP
from pnn.train.common import Progress
from pnn.train.hybrid import HybridAlgorithm, HybridConfig, encode, hybrid_layer_shapes, \
    physical_forward
from pnn.train.loop import Result, fit

__all__ = ["Config", "PAT", "train", "layer_shapes", "fit_twin"]

layer_shapes = hybrid_layer_shapes


@dataclasses.dataclass(frozen=True)
class Config(HybridConfig):
    """twin_samples: physical queries per layer for the twin; twin_hidden, twin_epochs,
    twin_lr: the twin MLP; twin_val_fraction: held out to report the twin's error."""

    twin_samples: int = param(1500, integer=True, ge=20, le=10_000_000)
    twin_hidden: int = param(96, integer=True, ge=1, le=100_000)
    twin_epochs: int = param(150, integer=True, ge=1, le=100_000)
    twin_lr: float = param(3e-3, gt=0, le=10)
    twin_val_fraction: float = param(0.2, gt=0, lt=1)


class Twin(eqx.Module):
    mlp: MLP
    scale: jax.Array

    def __call__(self, d):
        return self.mlp(d) * jax.lax.stop_gradient(self.scale)


def fit_twin(drives: np.ndarray, meas: np.ndarray, config: Config, *, key, ledger: Ledger):
    """Fit a twin to (drive, calibrated measurement) pairs; returns ``(twin, val_nrmse)``."""
    n = len(drives)
    n_val = max(1, int(config.twin_val_fraction * n))
    perm = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1))).permutation(n)
    va, tr = perm[:n_val], perm[n_val:]
    scale = float(np.std(meas[tr])) or 1.0
    sizes = [drives.shape[1], config.twin_hidden, config.twin_hidden, meas.shape[1]]
    twin = Twin(MLP(sizes, key=key), jnp.asarray(scale, jnp.float32))
    opt = optax.adam(config.twin_lr)
    params, static = eqx.partition(twin, eqx.is_inexact_array)
    state = opt.init(params)
    x, y = jnp.asarray(drives[tr]), jnp.asarray(meas[tr])
    bs = min(64, len(tr))  # minibatch of the twin fit

    @eqx.filter_jit
    def epoch(params, state, key):
        order = jax.random.permutation(key, x.shape[0])
        nb = x.shape[0] // bs

        def body(carry, i):
            p, s = carry
            idx = jax.lax.dynamic_slice(order, (i * bs,), (bs,))

            def loss_fn(p):
                return jnp.mean((eqx.combine(p, static)(x[idx]) - y[idx]) ** 2)
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = opt.update(g, s, p)
            return (eqx.apply_updates(p, u), s), loss

        (params, state), losses = jax.lax.scan(body, (params, state), jnp.arange(nb))
        return params, state, losses.mean()

    keys = jax.random.split(key, config.twin_epochs)
    for e in range(config.twin_epochs):
        params, state, _ = epoch(params, state, keys[e])
    twin = eqx.combine(params, static)
    fwd = sum(dense_flops(1, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
    n_par = sum(int(v.size) for v in jax.tree_util.tree_leaves(params)) - 1
    steps = config.twin_epochs * (len(tr) // bs)
    ledger.add_flops(steps * (3 * bs * fwd + adam_flops(n_par)), "twin fit")
    pred = np.asarray(twin(jnp.asarray(drives[va])))
    nrmse = float(np.sqrt(np.mean((pred - meas[va]) ** 2)) / (np.std(meas[va]) + 1e-12))
    return twin, nrmse, fwd


class PAT(HybridAlgorithm):
    """PAT for the run loop: the hybrid network's state plus ``twins`` (one per layer).

    Options: ``refit_at_steps``: training steps after which the twins are refitted on fresh
    measurements (to adapt to a changed system); by default the twin is fitted once, in init.
    """

    def __init__(self, layers, data, config, *, seed, ledger, refit_at_steps=()):
        super().__init__(layers, data, config, seed=seed, ledger=ledger)
        self.refit_at = set(int(s) for s in refit_at_steps)
        self.specs = [layer.spec for layer in layers]
        self.refits = []

    def collect_and_fit(self, net, rng, key):
        """Query each layer for twin data and fit its twin, block by block (deeper blocks see
        drives produced with the previous blocks' *measured* outputs)."""
        cfg, data, ledger = self.config, self.data, self.ledger
        n_rand = cfg.twin_samples // 2
        twins, errors, fwds = [], [], []
        idx = rng.permutation(len(data.y_train))[: cfg.twin_samples - n_rand]
        h = encode(data.x_train[idx])
        for k, layer in enumerate(self.layers):
            spec = layer.spec
            a_data = direction(h)
            g = np.abs(rng.normal(size=(n_rand, spec.n_in)))
            a_rand = g / np.linalg.norm(g, axis=1, keepdims=True)
            d = np.asarray(to_drive(jnp.concatenate([jnp.asarray(a_rand, jnp.float32), a_data]),
                                    spec.lo, spec.hi, net.gain))
            m_raw = ledger.query(layer, d)
            key, sub = jax.random.split(key)
            twin, err, fwd = fit_twin(d, m_raw * float(net.blocks[k].cal), cfg, key=sub,
                                      ledger=ledger)
            twins.append(twin)
            errors.append(err)
            fwds.append(fwd)
            h = net.blocks[k](jnp.asarray(m_raw[n_rand:]), h)
        return twins, errors, fwds

    def init(self) -> dict:
        state = super().init()
        twins, errors, fwds = self.collect_and_fit(self.net(state), state["rng"],
                                                   jax.random.PRNGKey(self.seed + 7))
        self.twin_fwd = fwds
        return {**state, "twins": twins, "twin_errors": [float(e) for e in errors]}

    def measure(self, net, k, a, extra):
        """The measured value forward, the twin's Jacobian backward (straight-through)."""
        measured, twins = extra
        spec = self.specs[k]
        t = twins[k](to_drive(a, spec.lo, spec.hi, net.gain)) / net.blocks[k].cal
        return measured[k] + t - jax.lax.stop_gradient(t)

    def step(self, state, x, y):
        net = self.net(state)
        x0 = encode(x)
        _, ms, _ = physical_forward(net, self.layers, x0, self.ledger)
        params, opt_state, loss = self.gradient_step(state["params"], state["opt"], x0,
                                                     jnp.asarray(y), (ms, state["twins"]))
        # the twins are frozen here (no weight gradient); the first one's input is data (no
        # input gradient either), each later one's is a block's output (forward + input grad)
        self.ledger.add_flops(len(y) * (self.twin_fwd[0] + 2 * sum(self.twin_fwd[1:])),
                              "twin forward/backward")
        w0 = net.blocks[0].W  # the first block's input is data: its input gradient is not taken
        self.ledger.add_flops(3 * net.forward_flops(len(y)) - 2 * len(y) * w0.size
                              + adam_flops(net.n_params), "trainable update")
        return {**state, "params": params, "opt": opt_state}, float(loss)

    def after_step(self, state, step):
        if step not in self.refit_at:
            return state
        twins, errs, _ = self.collect_and_fit(self.net(state), state["rng"],
                                              jax.random.fold_in(jax.random.PRNGKey(
                                                  self.seed + 7), step))
        self.refits.append({"after_step": step, "twin_val_nrmse": errs})
        return {**state, "twins": twins, "twin_errors": [float(e) for e in errs]}

    def extra(self, state):
        return {"twin_val_nrmse": list(state["twin_errors"]),
                "twin_samples_per_layer": self.config.twin_samples,
                "twin_refits": list(self.refits)}


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None, on_step=None, refit_at_steps=(), **kw) -> Result:
    """Train with PAT; returns ``(record, model)``. ``refit_at_steps``: see :class:`PAT`."""
    return fit("pat", PAT, layers, data, config, seed=seed, ledger=ledger, progress=progress,
               on_step=on_step, options={"refit_at_steps": tuple(refit_at_steps)}, **kw)
