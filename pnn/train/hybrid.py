"""The physical-digital classifier shared by the trainers that optimise a global loss.

PAT, in-silico backpropagation and zeroth-order training all train the *same* network on the same
physical layers: the PhyLL block chain of :mod:`pnn.network` (``h_k = W_k [P_k(d_k); h_{k-1}] + b_k``,
``d_k`` the direction ``|h_{k-1}| / ||h_{k-1}||`` mapped into the layer's range; the bypass
chosen by ``skip``) without label embedding, followed by a linear read-out
``logits = V h_K + c`` (or ``V [x0; h_K] + c`` with ``readout_input``: the read-out also sees
the encoded input, the skip connection PhyLL's linear read-out has under the same name) trained
with softmax cross-entropy. They differ only in how the gradient
with respect to the digital parameters is obtained:

* ``insilico``: exact gradient through a differentiable simulator of each layer;
* ``pat``: physical forward pass, backward pass through a learned digital twin;
* ``zo``: no gradient at all, a finite-difference (SPSA) estimate from forward passes.

Input encoding is PhyLL's (``split`` features and a constant reference channel), so every method
sends drives of the same kind to the physics.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.config import param
from pnn.cost import Ledger, dense_flops
from pnn.network import SKIPS, Block, direction, to_drive
from pnn.train.loop import Algorithm, LoopConfig

__all__ = ["HybridNet", "encode", "hybrid_layer_shapes", "HybridConfig", "HybridAlgorithm"]


@dataclasses.dataclass(frozen=True)
class HybridConfig(LoopConfig):
    """Shared shape of the hybrid network (see :func:`hybrid_layer_shapes`), plus the run
    loop's fields (:class:`pnn.train.loop.LoopConfig`)."""

    hidden: tuple = param((20, 20), widths=True)
    n_meas: int = param(20, integer=True, ge=1, le=100_000)
    batch_size: int = param(32, integer=True, ge=1, le=1_000_000,
                            search=("choice", [16, 32, 64, 128]))
    lr: float = param(3e-3, gt=0, le=10, search=("log", 3e-4, 3e-2))
    #: the read-out also sees the encoded input beside the last block's output (a skip
    #: connection; the same lever as PhyLL's ``readout_input``, so that a comparison offers it
    #: to every network on the physics)
    readout_input: bool = param(False, choices=(False, True))
    #: the blocks' bypass and drive gain, as PhyLL's (see :class:`pnn.train.phyll.PhyLLConfig`)
    skip: str = param("raw", choices=SKIPS, legacy="direction")
    drive_gain: float = param(1.0, ge=1.0, le=1000.0, search=("log", 1.0, 8.0))


def encode(x) -> jnp.ndarray:
    """Standardised features -> ``[max(z,0), max(-z,0), 1]`` (non-negative, sign kept)."""
    x = jnp.asarray(x, jnp.float32)
    return jnp.concatenate([jnp.maximum(x, 0.0), jnp.maximum(-x, 0.0),
                            jnp.ones((x.shape[0], 1), x.dtype)], axis=1)


def hybrid_layer_shapes(config, n_features: int, n_classes: int) -> list[tuple[int, int]]:
    dims = [2 * n_features + 1, *map(int, config.hidden)]
    return [(dims[k], int(config.n_meas)) for k in range(len(config.hidden))]


class HybridNet(eqx.Module):
    """Digital parameters of the hybrid network: the blocks and the linear read-out."""

    blocks: list
    head: eqx.nn.Linear
    skip: bool = eqx.field(static=True)
    gain: float = eqx.field(static=True, default=1.0)

    def __init__(self, shapes, hidden, n_classes, *, key, readout_input: bool = False,
                 block_skip: str = "raw", drive_gain: float = 1.0):
        keys = jax.random.split(key, len(shapes) + 1)
        self.blocks = [Block(n_in, n_out, int(h), key=k, skip=block_skip)
                       for (n_in, n_out), h, k in zip(shapes, hidden, keys[:-1])]
        self.gain = float(drive_gain)
        self.skip = bool(readout_input)
        width = int(hidden[-1]) + (int(shapes[0][0]) if self.skip else 0)
        self.head = eqx.nn.Linear(width, n_classes, key=keys[-1])

    def logits(self, x0, h):
        """The read-out: of the last block's output, after the encoded input with ``skip``."""
        return jax.vmap(self.head)(jnp.concatenate([x0, h], axis=1) if self.skip else h)

    def trainable(self):
        spec = jax.tree_util.tree_map(lambda _: False, self)
        for k in range(len(self.blocks)):
            spec = eqx.tree_at(lambda n, k=k: (n.blocks[k].W, n.blocks[k].b), spec,
                               replace=(True, True))
        return eqx.tree_at(lambda n: (n.head.weight, n.head.bias), spec, replace=(True, True))

    def forward(self, x0, measure):
        """Logits for encoded inputs ``x0``; ``measure(k, drive) -> m`` gives block k's
        measurement (a simulator, a constant, or a straight-through estimator)."""
        h = x0
        for k, blk in enumerate(self.blocks):
            m = measure(k, direction(h))
            h = blk(m, h)
        return self.logits(x0, h)

    def drives(self, x0, measured):
        """Directions each block sends, given its measurements (host-side forward)."""
        out, h = [], x0
        for k, blk in enumerate(self.blocks):
            out.append(direction(h))
            h = blk(measured[k], h)
        return out

    @property
    def n_params(self) -> int:
        n = sum(b.n_params for b in self.blocks)
        return int(n + self.head.weight.size + self.head.bias.size)

    def calibrated(self, measured) -> "HybridNet":
        """Fix each block's measurement calibration from a first measured batch."""
        net = self
        for k in range(len(self.blocks)):
            blk = net.blocks[k].with_calibration(np.asarray(measured[k]))
            net = eqx.tree_at(lambda n, k=k: n.blocks[k], net, blk)
        return net

    def forward_flops(self, batch: int) -> int:
        f = sum(dense_flops(batch, b.W.shape[1], b.W.shape[0]) for b in self.blocks)
        return int(f + dense_flops(batch, self.head.in_features, self.head.out_features))


def physical_forward(net: HybridNet, layers, x0, ledger: Ledger, purpose: str = "train"):
    """Run the network with every block's measurement taken from the physical layer (host).

    Returns ``(logits, measurements, drives)``; measurements are numpy arrays, one per block.
    """
    h = x0
    ms, ds = [], []
    for k, blk in enumerate(net.blocks):
        spec = layers[k].spec
        a = direction(h)
        m = jnp.asarray(ledger.query(layers[k], np.asarray(to_drive(a, spec.lo, spec.hi,
                                                                    net.gain)), purpose))
        ms.append(m)
        ds.append(a)
        h = blk(m, h)
    ledger.add_flops(net.forward_flops(x0.shape[0]), "trainable forward")
    return net.logits(x0, h), ms, ds


def evaluate(net: HybridNet, layers, x, y, ledger: Ledger, batch: int = 512) -> float:
    """Accuracy of the network as deployed on ``layers`` (physical queries counted)."""
    pred = predict(net, layers, x, ledger, batch)
    return float(np.mean(pred == np.asarray(y)))


def predict(net: HybridNet, layers, x, ledger: Ledger, batch: int = 512) -> np.ndarray:
    """Labels predicted by the network as deployed on ``layers`` (queries charged as eval)."""
    out = []
    for i in range(0, len(x), batch):
        logits, _, _ = physical_forward(net, layers, encode(x[i:i + batch]), ledger, "eval")
        out.append(np.argmax(np.asarray(logits), 1))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class HybridAlgorithm(Algorithm):
    """Shared part of pat, insilico and zo for the run loop: the network, its calibration from
    one measured batch, and prediction on the deployed layers. Subclasses supply ``step``
    (how the gradient is obtained) and may extend the state.

    State: ``params`` (the trainable part of the network), ``opt`` (optimiser state), ``rng``.
    """

    def __init__(self, layers, data, config, *, seed, ledger, calibrate_on=None, **options):
        super().__init__(layers, data, config, seed=seed, ledger=ledger, **options)
        shapes = hybrid_layer_shapes(config, data.n_features, data.n_classes)
        if len(layers) != len(shapes):
            raise ValueError(f"hidden={config.hidden} needs {len(shapes)} physical layers, got "
                             f"{len(layers)}")
        for k, (layer, (n_in, _)) in enumerate(zip(layers, shapes)):
            if layer.spec.n_in != n_in:
                raise ValueError(f"block {k}: physical layer {layer.spec.name!r} has n_in="
                                 f"{layer.spec.n_in}, but the block sends {n_in}")
        self.shapes = [(n_in, layer.spec.n_out) for (n_in, _), layer in zip(shapes, layers)]
        self.calibrate_on = calibrate_on
        self.static = None
        self._grad_step = None

    def make_optimizer(self):
        return optax.adam(self.config.lr)

    def init(self) -> dict:
        cfg, data = self.config, self.data
        net = HybridNet(self.shapes, cfg.hidden, data.n_classes,
                        key=jax.random.PRNGKey(self.seed), readout_input=cfg.readout_input,
                        block_skip=cfg.skip, drive_gain=cfg.drive_gain)
        rng = np.random.default_rng([self.seed, 29])
        idx = rng.permutation(len(data.y_train))[: cfg.batch_size]
        # calibrated on the model layers when given (a simulation: not charged as queries)
        ledger = Ledger() if self.calibrate_on is not None else self.ledger
        _, ms, _ = physical_forward(net, self.calibrate_on or self.layers,
                                    encode(data.x_train[idx]), ledger)
        net = net.calibrated(ms)
        params, self.static = eqx.partition(net, net.trainable())
        self.opt = self.make_optimizer()
        return {"params": params, "opt": self.opt.init(params), "rng": rng}

    def measure(self, net: HybridNet, k: int, a, extra):
        """Block k's measurement for direction ``a`` inside the differentiated loss (traced):
        what a gradient-based subclass differentiates through (a simulator, a twin)."""
        raise NotImplementedError(f"{type(self).__name__} does not take gradients")

    def gradient_step(self, params, opt_state, x0, y, extra):
        """One Adam step on the softmax cross-entropy of the network whose block measurements
        come from :meth:`measure` (``extra``: the arrays it needs); compiled once."""
        if self._grad_step is None:
            static, opt, measure = self.static, self.opt, self.measure

            @eqx.filter_jit
            def update(params, state, x0, y, extra):
                def loss_fn(p):
                    n = eqx.combine(p, static)
                    logits = n.forward(x0, lambda k, a: measure(n, k, a, extra))
                    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
                loss, g = jax.value_and_grad(loss_fn)(params)
                upd, state = opt.update(g, state, params)
                return eqx.apply_updates(params, upd), state, loss
            self._grad_step = update
        return self._grad_step(params, opt_state, x0, y, extra)

    def net(self, state) -> HybridNet:
        return eqx.combine(state["params"], self.static)

    def predict(self, state, x):
        return predict(self.net(state), self.layers, x, self.ledger)

    def params(self, state):
        return state["params"]

    def n_params(self, state) -> int:
        return self.net(state).n_params

    def params_by_part(self, state) -> dict:
        net = self.net(state)
        return {"blocks": [int(b.n_params) for b in net.blocks],
                "readout": int(net.head.weight.size + net.head.bias.size)}

    def predict_state(self, state):
        """The whole network (trainable part and the fixed calibration): all predict needs."""
        return {"net": self.net(state)}

    def template_state(self):
        """An uncalibrated network of the right shapes (no measurement, unlike :meth:`init`)."""
        return {"net": HybridNet(self.shapes, self.config.hidden, self.data.n_classes,
                                 key=jax.random.PRNGKey(self.seed),
                                 readout_input=self.config.readout_input,
                                 block_skip=self.config.skip,
                                 drive_gain=self.config.drive_gain)}

    def from_predict_state(self, pstate):
        net = pstate["net"]
        params, self.static = eqx.partition(net, net.trainable())
        return {"params": params}
