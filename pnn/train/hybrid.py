"""The physical-digital classifier shared by the trainers that optimise a global loss.

PAT, in-silico backpropagation and zeroth-order training all train the *same* network on the same
physical layers: the PhyLL block chain of :mod:`pnn.network` (``h_k = W_k [P_k(a_k); a_k] + b_k``,
``a_k = |h_{k-1}| / ||h_{k-1}||``) without label embedding, followed by a linear read-out
``logits = V h_K + c`` trained with softmax cross-entropy. They differ only in how the gradient
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

from pnn.cost import Ledger, dense_flops
from pnn.network import Block, direction, to_drive

__all__ = ["HybridNet", "encode", "hybrid_layer_shapes", "HybridConfig"]


@dataclasses.dataclass(frozen=True)
class HybridConfig:
    """Shared shape of the hybrid network (see :func:`hybrid_layer_shapes`)."""

    hidden: tuple = (20, 20)
    n_meas: int = 20
    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3


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

    def __init__(self, shapes, hidden, n_classes, *, key):
        keys = jax.random.split(key, len(shapes) + 1)
        self.blocks = [Block(n_in, n_out, int(h), key=k)
                       for (n_in, n_out), h, k in zip(shapes, hidden, keys[:-1])]
        self.head = eqx.nn.Linear(int(hidden[-1]), n_classes, key=keys[-1])

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
            a = direction(h)
            m = measure(k, a)
            h = blk(m, a)
        return jax.vmap(self.head)(h)

    def drives(self, x0, measured):
        """Directions each block sends, given its measurements (host-side forward)."""
        out, h = [], x0
        for k, blk in enumerate(self.blocks):
            a = direction(h)
            out.append(a)
            h = blk(measured[k], a)
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
        m = jnp.asarray(ledger.query(layers[k], np.asarray(to_drive(a, spec.lo, spec.hi)),
                                     purpose))
        ms.append(m)
        ds.append(a)
        h = blk(m, a)
    ledger.add_flops(net.forward_flops(x0.shape[0]), "trainable forward")
    return jax.vmap(net.head)(h), ms, ds


def evaluate(net: HybridNet, layers, x, y, ledger: Ledger, batch: int = 512) -> float:
    """Accuracy of the network as deployed on ``layers`` (physical queries counted)."""
    correct = 0
    for i in range(0, len(y), batch):
        logits, _, _ = physical_forward(net, layers, encode(x[i:i + batch]), ledger, "eval")
        correct += int(np.sum(np.argmax(np.asarray(logits), 1) == np.asarray(y[i:i + batch])))
    return correct / len(y)


def run_epochs(*, method, net, layers, data, config, seed, ledger, progress, step, state,
               rng, extra=None, eval_train_max: int = 400, on_step=None):
    """The epoch loop shared by the hybrid trainers.

    ``step(net, state, idx) -> (net, state, loss)`` does one update on the training samples
    ``idx``. Accuracy is always measured on the deployed physical ``layers`` (queries counted).
    ``on_step``: a :data:`pnn.train.common.StepHook`, called after every step.
    """
    import time

    from pnn.train.common import minibatches, result_record

    n_train = len(data.y_train)
    eval_idx = rng.permutation(n_train)[:eval_train_max]
    history = []
    n_steps = 0
    for epoch in range(1, config.epochs + 1):
        t = time.perf_counter()
        losses = []
        for idx in minibatches(rng, n_train, config.batch_size):
            net, state, loss = step(net, state, idx)
            losses.append(float(loss))
            n_steps += 1
            if on_step is not None:
                on_step(n_steps, lambda: evaluate(net, layers, data.x_test, data.y_test, ledger))
        rec = {"epoch": epoch, "loss": float(np.mean(losses)),
               "train_accuracy": evaluate(net, layers, data.x_train[eval_idx],
                                          data.y_train[eval_idx], ledger),
               "test_accuracy": evaluate(net, layers, data.x_test, data.y_test, ledger),
               "physical_queries": ledger.physical_queries,
               "epoch_s": round(time.perf_counter() - t, 3)}
        history.append(rec)
        if progress is not None:
            progress(rec)
    train_acc = evaluate(net, layers, data.x_train, data.y_train, ledger)
    ledger.stop()
    out = result_record(method=method, config=config, seed=seed, history=history,
                        train_accuracy=train_acc, test_accuracy=history[-1]["test_accuracy"],
                        ledger=ledger, n_params=net.n_params,
                        extra={"layers": [layer.spec.to_dict() for layer in layers],
                               **(extra or {})})
    out["model"] = net
    return out


def init_calibrated(config, layers, data, seed, ledger, calibrate_on=None):
    """A fresh network whose measurement calibration is fixed from one measured batch
    (of ``calibrate_on`` layers when given, e.g. the in-silico model, else of ``layers``)."""
    shapes = hybrid_layer_shapes(config, data.n_features, data.n_classes)
    if len(layers) != len(shapes):
        raise ValueError(f"hidden={config.hidden} needs {len(shapes)} physical layers, got "
                         f"{len(layers)}")
    for k, (layer, (n_in, _)) in enumerate(zip(layers, shapes)):
        if layer.spec.n_in != n_in:
            raise ValueError(f"block {k}: physical layer {layer.spec.name!r} has n_in="
                             f"{layer.spec.n_in}, but the block sends {n_in}")
    shapes = [(n_in, layer.spec.n_out) for (n_in, _), layer in zip(shapes, layers)]
    net = HybridNet(shapes, config.hidden, data.n_classes, key=jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(data.y_train))[: config.batch_size]
    _, ms, _ = physical_forward(net, calibrate_on or layers, encode(data.x_train[idx]), ledger)
    return net.calibrated(ms), rng
