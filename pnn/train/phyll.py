"""Model-free forward-forward training of physical networks (PhyLL).

Momeni, Rahmani, Malléjac, del Hougne & Fleury, "Backpropagation-free training of deep physical
neural networks", Science 382, 1297 (2023); arXiv:2304.11042.

Each block k (see :mod:`pnn.network`) computes ``h_k = W_k [P_k(d_k); h_{k-1}] + b_k`` with the
drive ``d_k`` the direction ``a_k = |h_{k-1}| / ||h_{k-1}||`` mapped into the layer's range (the
bypass ``h_{k-1}`` raw and signed by default, as in the authors' code; ``skip`` chooses).
Training is greedy and layer-local:

* positive sample: the input with its true label embedded; negative: the same input with a
  uniformly drawn wrong label (:func:`pnn.network.embed_label`);
* goodness ``G_k = cos(|h_k|, xi_k)`` with a fixed random unit vector ``xi_k`` per block;
* local loss ``mean softplus(-theta (G+ - G-))``, minimised by ``inner_steps`` Adam steps on
  ``(W_k, b_k)`` per batch, with the physical measurements of that batch held fixed as data;
* inference: embed every label in turn, sum ``G_k`` over blocks, predict the argmax.

The physical layer is only ever queried on the host through :meth:`pnn.cost.Ledger.query`; its
output enters the jitted update as a constant array. No gradient is requested from, or could flow
through, the physics: a layer that is not differentiable at all trains the same way.

Hinton's sum-of-squares goodness (``goodness="sumsq"``: ``G = mean(h^2)``, loss
``softplus(-(G+ - theta)) + softplus(G- - theta)``) is available as an option.
"""

from __future__ import annotations

import dataclasses
import warnings
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.config import param
from pnn.cost import Ledger, adam_flops, dense_flops, update_flops
from pnn.network import (LABEL_SCALES, SKIPS, Block, MinMax, direction, embed_all_labels,
                         embed_label, goodness, label_amplitude, to_drive)
from pnn.train.common import Progress, StepHook, logistic_regression
from pnn.train.loop import Algorithm, LoopConfig, Result, fit
from pnn.train.phyll_device import MODES, Parts, Timing, obstacles, run_epoch

__all__ = ["PhyLLConfig", "Config", "PhyLL", "train", "input_dim", "layer_shapes", "PRESETS",
           "preset"]


@dataclasses.dataclass(frozen=True)
class PhyLLConfig(LoopConfig):
    """PhyLL hyper-parameters (plus the run loop's, see :class:`pnn.train.loop.LoopConfig`).

    hidden: output width of each block (one physical layer per block).
    n_meas: measured channels of each block's physical layer (``n_out``).
    inner_steps: Adam steps per block per batch on the fixed measurements (paper: 10-25).
    lr: Adam learning rate. theta: loss sharpness (paper: about 4-5).
    goodness: ``"cosine"`` (PhyLL, default) or ``"sumsq"`` (Hinton's, an option).
    encoding: how standardised features become non-negative drives: ``"split"`` sends
        ``[max(z, 0), max(-z, 0)]`` (keeps the sign of each feature as a separate channel),
        ``"minmax"`` maps each feature to [0, 1] with training min/max.
    lr_schedule: ``"cosine"`` decays the rate to 5 % over the run; ``"constant"`` keeps it.
    negatives: wrong labels drawn per sample per batch (paper: 1). Each costs one more physical
        query per sample per block; ``C - 1`` or more means every wrong label once.
    readout: ``"goodness"`` (the paper: embed every label, sum the goodness, argmax; C passes
        through the physics per sample) or ``"linear"`` (a lever of ours: one pass with a
        neutral label, every block's output direction concatenated, and a logistic regression
        read-out fitted by L-BFGS on the training split before each evaluation; the blocks are
        still trained by the local contrastive loss and no gradient reaches the physics).
    readout_C: inverse L2 strength of the linear read-out.
    readout_input: (with ``readout="linear"``) the read-out also sees the encoded input (the drive's feature part,
        without the label slots) beside the blocks' outputs: a skip connection to the read-out.
        With it the read-out can do what a linear classifier on the features does, and the
        physics' features are added to that: a digital bypass of the physics, off by default and
        not searched by the tuner (a comparison that uses it says so).
    skip: what each block's digital map reads beside the measurement (:data:`pnn.network.SKIPS`):
        ``"raw"`` the previous output as it is (the authors' acoustic and microwave blocks; with
        no physics the network is linear), ``"none"`` nothing (their optics blocks),
        ``"direction"`` ``|h|/||h||`` (pnn's earlier block, itself a digital nonlinearity).
    label_scale: the label amplitude ``max|x|`` per ``"sample"`` or over the ``"batch"`` (the
        authors' code; predictions then depend on the batch evaluated with).
    drive_gain: the drive is ``lo + (hi - lo) * clip(drive_gain * a, 0, 1)`` for the unit-norm
        direction ``a``: above 1 the drives use more of the safe range (where the physics is
        more nonlinear); a physical lever, searched by the tuner.
    device_epoch: ``"auto"`` runs each epoch as one compiled program when every layer is a
        pure-JAX simulator and nothing must run between steps (no ``on_step`` hook, checkpoints
        only at epoch ends), else the host path; ``"on"`` refuses, naming why, where that is not
        possible; ``"off"`` always takes the host path (:mod:`pnn.train.phyll_device`). The two
        paths agree to float rounding; the record's ``device_epoch`` says which ran.
    """

    hidden: tuple = param((20, 20), widths=True)
    n_meas: int = param(20, integer=True, ge=1, le=100_000)
    inner_steps: int = param(15, integer=True, ge=1, le=10_000, search=("int", 5, 30))
    lr: float = param(3e-3, gt=0, le=10, search=("log", 3e-4, 3e-2))
    theta: float = param(4.5, gt=0, le=1000, search=("float", 1.0, 10.0))
    goodness: str = param("cosine", choices=("cosine", "sumsq"))
    encoding: str = param("split", choices=("split", "minmax"))
    lr_schedule: str = param("cosine", choices=("cosine", "constant"))
    negatives: int = param(1, integer=True, ge=1, le=1000, search=("int", 1, 3))
    readout: str = param("goodness", choices=("goodness", "linear"),
                         search=("choice", ["goodness", "linear"]))
    readout_C: float = param(1.0, gt=0, le=1e6, search=("log", 1e-2, 1e3))
    readout_input: bool = param(False, choices=(False, True))
    skip: str = param("raw", choices=SKIPS, legacy="direction")
    label_scale: str = param("sample", choices=LABEL_SCALES)
    drive_gain: float = param(1.0, ge=1.0, le=1000.0, search=("log", 1.0, 8.0))
    device_epoch: str = param("auto", choices=MODES)


#: ``pnn train --preset paper``: the PhyLL authors' published settings per system, read from
#: their code (MomeniAli/PhyLL; file named per entry). ``config``: PhyLLConfig fields; ``shared``:
#: one apparatus reused by every block. Full batch is ``batch_size`` at its maximum (one batch
#: per epoch, whatever the data set). Every remaining difference is tabulated in
#: docs/paper.md (a test checks that table against this one).
#: what the authors' three PhyLL scripts share: a constant learning rate, the batch-wide label
#: amplitude, one wrong label per sample, the cosine goodness and its read-out, no input bypass
_PAPER_COMMON = {"lr_schedule": "constant", "label_scale": "batch", "encoding": "minmax",
                 "negatives": 1, "goodness": "cosine", "readout": "goodness",
                 "readout_input": False, "drive_gain": 1.0}
PRESETS = {
    "paper": {
        "acoustic": {"source": "Acoustic/acoustics_pnn.py", "shared": True,
                     "config": {**_PAPER_COMMON, "hidden": (20, 20), "n_meas": 20,
                                "epochs": 200, "batch_size": 1_000_000, "inner_steps": 10,
                                "lr": 5e-4, "theta": 4.0, "skip": "raw"}},
        "microwave": {"source": "Microwave/microwave_pnn.py", "shared": True,
                      "config": {**_PAPER_COMMON, "hidden": (20, 20, 20), "n_meas": 20,
                                 "epochs": 100, "batch_size": 1_000_000, "inner_steps": 10,
                                 "lr": 2.5e-4, "theta": 4.0, "skip": "raw"}},
        "optical": {"source": "Optics/optics_pnn.py", "shared": True,
                    "config": {**_PAPER_COMMON, "hidden": (676, 676), "n_meas": 676,
                               "epochs": 350, "batch_size": 10_000, "inner_steps": 20,
                               "lr": 5e-5, "theta": 5.0, "skip": "none"}},
    },
}


def preset(name: str, system: str) -> dict:
    """``{"config": {...}, "shared": bool, "source": str}`` of preset ``name`` for ``system``.

    Raises:
        ValueError: an unknown preset, or a system the preset does not cover.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(sorted(PRESETS))}")
    table = PRESETS[name]
    if system not in table:
        raise ValueError(f"preset {name!r} covers the systems {', '.join(sorted(table))} (the "
                         f"PhyLL authors' three apparatus), not {system!r}")
    entry = table[system]
    return {"config": dict(entry["config"]), "shared": bool(entry["shared"]),
            "source": entry["source"]}


def input_dim(n_features: int, n_classes: int, encoding: str = "split") -> int:
    """Width of the label-embedded input: C label slots, the encoded features, a constant 1."""
    return n_classes + (2 * n_features if encoding == "split" else n_features) + 1


def layer_shapes(config: PhyLLConfig, n_features: int, n_classes: int) -> list[tuple[int, int]]:
    """(n_in, n_out) of the physical layer each block needs."""
    dims = [input_dim(n_features, n_classes, config.encoding), *map(int, config.hidden)]
    return [(dims[k], int(config.n_meas)) for k in range(len(config.hidden))]


def _block_goodness(kind, h, xi):
    return goodness(h, xi) if kind == "cosine" else jnp.mean(h**2, axis=-1)


def _local_loss(kind, theta, gp, gn):
    """``gn`` holds k negatives per positive, negative-major: shape ``(k * batch,)``."""
    gn = gn.reshape(-1, gp.shape[0])
    if kind == "cosine":
        return jnp.mean(jax.nn.softplus(-theta * (gp[None, :] - gn)))
    return jnp.mean(jax.nn.softplus(-(gp - theta))) + jnp.mean(jax.nn.softplus(gn - theta))


#: the blocks' optimiser: Adam with its learning rate in the state, so that one compiled update
#: serves every run of a process (every trial of a study, every seed of a comparison): the
#: learning rate, its schedule and ``theta`` are data, not constants baked into the program
_ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)


def _block_train(kind, n_pos, params, static, opt_state, m, h, theta, lo, hi, gain, lrs):
    """One block's local update on fixed measurements, then its outputs and the next drives.

    ``m`` (measurements) and ``h`` (the previous block's raw outputs, whose directions were
    the drives) hold the positive samples first (``n_pos`` rows), then the negatives.
    ``lrs`` holds the learning rate of each inner step (its length is the number of steps). One
    compiled call per block and batch: the inner Adam steps (a ``lax.scan``), the block's
    forward pass with the updated parameters and the drives for the next block.
    """
    m_pos, m_neg, h_pos, h_neg = m[:n_pos], m[n_pos:], h[:n_pos], h[n_pos:]

    def loss_fn(p):
        blk = eqx.combine(p, static)
        gp = _block_goodness(kind, blk(m_pos, h_pos), blk.xi)
        gn = _block_goodness(kind, blk(m_neg, h_neg), blk.xi)
        return _local_loss(kind, theta, gp, gn)

    def body(carry, lr):
        p, s = carry
        s = s._replace(hyperparams={**s.hyperparams, "learning_rate": lr})
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, s = _ADAM.update(g, s, p)
        return (eqx.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), lrs)
    h_next = eqx.combine(params, static)(m, h)
    return params, opt_state, losses[-1], h_next, to_drive(direction(h_next), lo, hi, gain)


_block_train_jit = eqx.filter_jit(_block_train)


def _encode(x, lo, span, n_classes, encoding):
    """Features -> non-negative drives (see ``encoding``), a constant 1, C label slots in front."""
    if encoding == "split":
        z = jnp.concatenate([jnp.maximum(x, 0.0), jnp.maximum(-x, 0.0)], axis=1)
    else:
        z = jnp.clip((x - lo) / span, 0.0, 1.0)
    # a constant reference channel: the drive is normalised to a direction, and without it
    # the features' overall magnitude (one of only a few dimensions) would be lost
    z = jnp.concatenate([z, jnp.ones((z.shape[0], 1), z.dtype)], axis=1)
    return jnp.concatenate([jnp.zeros((z.shape[0], n_classes), z.dtype), z], axis=1)


# Each helper below is one compiled program per batch shape: the input side of a training step,
# of a goodness evaluation and of a feature pass, from raw features to the first physical drives.
# Run op by op, the same work compiled and dispatched a dozen small programs per shape.
_STATIC = ("n_classes", "encoding", "d_lo", "d_hi", "label_scale")


@partial(jax.jit, static_argnames=_STATIC)
def _train_inputs(x, y, y_neg, lo, span, gain, *, d_lo, d_hi, n_classes, encoding, label_scale):
    """Positive then negative samples' label-embedded inputs and the first layer's drives."""
    x0 = _encode(x, lo, span, n_classes, encoding)
    k = y_neg.shape[0] // y.shape[0]
    amp = label_amplitude(x0, label_scale)
    h = jnp.concatenate([embed_label(x0, y, n_classes, amplitude=amp),
                         embed_label(jnp.tile(x0, (k, 1)), y_neg, n_classes,
                                     amplitude=jnp.tile(amp, (k, 1)))])
    return h, to_drive(direction(h), d_lo, d_hi, gain)


@partial(jax.jit, static_argnames=_STATIC)
def _all_label_inputs(x, lo, span, gain, *, d_lo, d_hi, n_classes, encoding, label_scale):
    """Every label embedded in turn (label-major): inputs and first drives."""
    h = embed_all_labels(_encode(x, lo, span, n_classes, encoding), n_classes, label_scale)
    return h, to_drive(direction(h), d_lo, d_hi, gain)


@partial(jax.jit, static_argnames=_STATIC)
def _neutral_inputs(x, lo, span, gain, *, d_lo, d_hi, n_classes, encoding, label_scale):
    """A neutral label (each slot max|x| / C): encoded input, embedded input, first drives."""
    x0 = _encode(x, lo, span, n_classes, encoding)
    m0 = label_amplitude(x0, label_scale)
    h = x0.at[:, :n_classes].set(jnp.broadcast_to(m0 / n_classes, (x0.shape[0], n_classes)))
    return x0, h, to_drive(direction(h), d_lo, d_hi, gain)


@partial(jax.jit, static_argnames=("kind",))
def _eval_block(blk, m, h, lo, hi, gain, *, kind):
    h_next = blk(m, h)
    return _block_goodness(kind, h_next, blk.xi), h_next, to_drive(direction(h_next), lo, hi,
                                                                   gain)


def negatives(rng: np.random.Generator, y, n_classes: int, k: int) -> np.ndarray:
    """``k`` wrong labels per sample of ``y``, negative-major (shape ``(k * batch,)``): every
    wrong label once when ``k == n_classes - 1``, else drawn uniformly from ``rng``."""
    n = len(y)
    if k == n_classes - 1:  # every wrong label once
        shift = np.repeat(np.arange(1, n_classes), n)
    else:
        shift = rng.integers(1, n_classes, size=k * n)
    return (np.tile(y, k) + shift) % n_classes


def train_flops(cfg, rows: int, block) -> int:
    """Digital FLOPs of one block's update on ``rows`` drives (positives and negatives)."""
    fan_in, width = block.W.shape[1], block.W.shape[0]
    # per inner step, for pos and neg: the block's forward and weight gradient (its inputs are
    # measurements and the previous output: no input gradient), the goodness and the loss
    # forward and backward (6 a drive and output entry, as in a goodness pass), Adam; then the
    # forward pass with the updated parameters
    return (cfg.inner_steps * (update_flops(rows, [(fan_in, width)])
                               + 6 * rows * (fan_in + width)
                               + adam_flops(block.n_params, lr_as_data=True))
            + dense_flops(rows, fan_in, width))


#: the ``readout`` value of the logistic read-out (a read-out kind, not a method name)
_LINEAR_READOUT = "linear"


_PARTS = Parts(goodness=_block_goodness, train_inputs=_train_inputs, adam=_ADAM,
               train_flops=train_flops, negatives=negatives)


class PhyLL(Algorithm):
    """The PhyLL trainer for the run loop. State: ``blocks`` (the digital parts), ``opt``
    (their Adam states), ``calibrated`` (per block: calibration fixed yet), ``rng`` (negative
    labels)."""

    def __init__(self, layers, data, config: PhyLLConfig, *, seed, ledger):
        super().__init__(layers, data, config, seed=seed, ledger=ledger)
        C = data.n_classes
        shapes = layer_shapes(config, data.n_features, C)
        if len(layers) != len(shapes):
            raise ValueError(f"PhyLL with hidden={config.hidden} needs {len(shapes)} physical "
                             f"layers, got {len(layers)}")
        for k, (layer, (n_in, _)) in enumerate(zip(layers, shapes)):
            if layer.spec.n_in != n_in:
                what = (f"{C} label slots + 2 x {data.n_features} split features + 1" if k == 0
                        and config.encoding == "split" else
                        f"{C} label slots + {data.n_features} features + 1" if k == 0 else
                        f"the width of block {k - 1}")
                raise ValueError(f"block {k}: physical layer {layer.spec.name!r} has n_in="
                                 f"{layer.spec.n_in}, but the block sends {n_in} ({what})")
        self.shapes = shapes
        self.scaler = MinMax.fit(np.asarray(data.x_train))
        n_batches = -(-len(data.y_train) // config.batch_size)
        total = config.epochs * n_batches * config.inner_steps
        if config.lr_schedule == "cosine":  # the rate of every inner step, then the floor
            self.lr_table = np.asarray(optax.cosine_decay_schedule(config.lr, total, alpha=0.05)(
                np.arange(total + 1)), np.float32)
        else:
            self.lr_table = np.full(1, config.lr, np.float32)
        self.opt = _ADAM
        self.statics = None

    def init(self) -> dict:
        keys = jax.random.split(jax.random.PRNGKey(self.seed), len(self.shapes))
        blocks = [Block(n_in, layer.spec.n_out, int(h), key=k, skip=self.config.skip)
                  for (n_in, _), layer, h, k in zip(self.shapes, self.layers, self.config.hidden,
                                                     keys)]
        opt = [self.opt.init(eqx.filter(b, b.trainable())) for b in blocks]
        C, width = self.data.n_classes, self.readout_width()
        readout = {"coef": jnp.zeros((C, width), jnp.float32),
                   "intercept": jnp.zeros((C,), jnp.float32)}
        return {"blocks": blocks, "opt": opt, "calibrated": [False] * len(blocks),
                "rng": np.random.default_rng([self.seed, 17]), "readout": readout}

    def readout_width(self) -> int:
        """Width of the linear read-out's features (see :meth:`features`)."""
        extra = self.shapes[0][0] - self.data.n_classes if self.config.readout_input else 0
        return int(sum(self.config.hidden)) + extra

    def inner_rates(self, count: int) -> np.ndarray:
        """The learning rates of the next ``inner_steps`` Adam steps of a block that has taken
        ``count`` steps so far."""
        idx = np.minimum(np.arange(count, count + self.config.inner_steps),
                         len(self.lr_table) - 1)
        return self.lr_table[idx]

    def _inputs(self, fn, x, *args):
        spec0 = self.layers[0].spec
        # the drive range is static, as in the layer's spec: Python floats, folded in as the
        # same constants an op-by-op evaluation would use
        return fn(np.asarray(x, np.float32), *args, self.scaler.lo, self.scaler.span,
                  np.float32(self.config.drive_gain), d_lo=float(spec0.lo), d_hi=float(spec0.hi),
                  n_classes=self.data.n_classes, encoding=self.config.encoding,
                  label_scale=self.config.label_scale)

    def step(self, state, x, y):
        cfg, C, ledger = self.config, self.data.n_classes, self.ledger
        n = len(y)
        rng = state["rng"]
        y_neg = negatives(rng, y, C, min(int(cfg.negatives), C - 1))
        h, drives = self._inputs(_train_inputs, x, np.asarray(y), np.asarray(y_neg))
        drives = np.asarray(drives)
        blocks, opts, calibrated = list(state["blocks"]), list(state["opt"]), \
            list(state["calibrated"])
        spec0 = self.layers[0].spec
        batch_loss = 0.0
        for k in range(len(blocks)):
            # one physical query per drive: positive and negative drives in one batch
            m = ledger.query(self.layers[k], drives)
            if not calibrated[k]:
                blocks[k] = blocks[k].with_calibration(m[:n])
                calibrated[k] = True
            params, static = eqx.partition(blocks[k], blocks[k].trainable())
            nxt = self.layers[k + 1].spec if k + 1 < len(blocks) else spec0
            params, opts[k], loss, h, d_next = _block_train_jit(
                cfg.goodness, n, params, static, opts[k], jnp.asarray(m), h,
                np.float32(cfg.theta), np.float32(nxt.lo), np.float32(nxt.hi),
                np.float32(cfg.drive_gain), self.inner_rates(int(opts[k].count)))
            blocks[k] = eqx.combine(params, static)
            ledger.add_flops(train_flops(cfg, len(drives), blocks[k]), "trainable update")
            batch_loss += float(loss)
            if k + 1 < len(blocks):
                drives = np.asarray(d_next)
        return {**state, "blocks": blocks, "opt": opts, "calibrated": calibrated,
                "rng": rng}, batch_loss

    # -- the device epoch (pnn.train.phyll_device) -------------------------------------------
    def fused_epoch_obstacles(self) -> list[str]:
        """Why an epoch cannot run as one compiled program here (empty: it can)."""
        return obstacles(self.layers)

    def fused_epoch(self, state, xs, ys):
        """Every batch of an epoch in one compiled program (:mod:`pnn.train.phyll_device`)."""
        if getattr(self, "_timing", None) is None:
            self._timing = Timing()
        return run_epoch(self, state, xs, ys, _PARTS, self._timing)

    def fused_epoch_report(self) -> dict:
        timing = getattr(self, "_timing", None)
        return {} if timing is None else timing.report()

    def scores(self, state, x) -> np.ndarray:
        """Summed goodness for every label, shape ``(batch, n_classes)``."""
        C = self.data.n_classes
        h, drives = self._inputs(_all_label_inputs, x)
        drives = np.asarray(drives)
        spec0 = self.layers[0].spec
        total = 0.0
        blocks = state["blocks"]
        for k, blk in enumerate(blocks):
            m = self.ledger.query(self.layers[k], drives, "eval")
            nxt = self.layers[k + 1].spec if k + 1 < len(blocks) else spec0
            g, h, d_next = _eval_block(blk, jnp.asarray(m), h, nxt.lo, nxt.hi,
                                       np.float32(self.config.drive_gain),
                                       kind=self.config.goodness)
            self.ledger.add_flops(dense_flops(len(drives), blk.W.shape[1], blk.W.shape[0])
                                  + 6 * len(drives) * (h.shape[1] + blk.W.shape[1]),
                                  "trainable forward")
            total = total + np.asarray(g)
            drives = np.asarray(d_next)
        return np.reshape(total, (C, -1)).T

    def features(self, state, x, purpose: str = "eval") -> np.ndarray:
        """Every block's output direction for a neutral label (each label slot max|x| / C),
        concatenated, after the encoded input when ``readout_input``: shape
        ``(batch, readout_width())``. One pass through the physics."""
        C = self.data.n_classes
        x0, h, drives = self._inputs(_neutral_inputs, x)
        drives = np.asarray(drives)
        spec0 = self.layers[0].spec
        out = [np.asarray(x0[:, C:])] if self.config.readout_input else []
        blocks = state["blocks"]
        for k, blk in enumerate(blocks):
            m = self.ledger.query(self.layers[k], drives, purpose)
            nxt = self.layers[k + 1].spec if k + 1 < len(blocks) else spec0
            _, h, d_next = _eval_block(blk, jnp.asarray(m), h, nxt.lo, nxt.hi,
                                       np.float32(self.config.drive_gain),
                                       kind=self.config.goodness)
            self.ledger.add_flops(dense_flops(len(drives), blk.W.shape[1], blk.W.shape[0])
                                  + 6 * len(drives) * (h.shape[1] + blk.W.shape[1]),
                                  "trainable forward")  # as scores: the same compiled pass
            out.append(np.asarray(direction(h)))
            drives = np.asarray(d_next)
        return np.concatenate(out, axis=1)

    def before_eval(self, state):
        if self.config.readout != _LINEAR_READOUT:
            return state
        LogisticRegression, ConvergenceWarning = logistic_regression()
        data = self.data
        f = self.features(state, data.x_train, "train").astype(np.float64)  # learning: train
        y = np.asarray(data.y_train)
        clf = LogisticRegression(C=self.config.readout_C, max_iter=3000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the iteration cap is the budget
            clf.fit(f, y)
        self.ledger.add_flops(int(np.max(clf.n_iter_)) * 4 * f.size * data.n_classes,
                              "read-out fit")
        coef, icpt = clf.coef_, clf.intercept_
        if coef.shape[0] == 1:  # binary: one row in scikit-learn
            coef, icpt = np.vstack([-coef, coef]) / 2, np.concatenate([-icpt, icpt]) / 2
        full_c = np.zeros((data.n_classes, f.shape[1]), np.float32)
        full_i = np.full(data.n_classes, -1e9, np.float32)  # a class absent from training
        full_c[clf.classes_], full_i[clf.classes_] = coef, icpt
        return {**state, "readout": {"coef": jnp.asarray(full_c), "intercept": jnp.asarray(
            full_i)}}

    def predict(self, state, x):
        if self.config.readout == _LINEAR_READOUT:
            r = state["readout"]
            f = self.features(state, x, "eval")
            return np.argmax(f @ np.asarray(r["coef"]).T + np.asarray(r["intercept"]), axis=1)
        return np.argmax(self.scores(state, x), axis=1)

    def params(self, state):
        return [(b.W, b.b) for b in state["blocks"]]

    def params_by_part(self, state) -> dict:
        """Trained numbers per part: each block's ``W, b`` and, with ``readout="linear"``, the
        read-out's coefficients and intercepts (fitted, so trained too)."""
        blocks = [int(b.n_params) for b in state["blocks"]]
        readout = 0
        if self.config.readout == _LINEAR_READOUT:
            readout = int(self.data.n_classes * (self.readout_width() + 1))
        return {"blocks": blocks, "readout": readout}

    def n_params(self, state) -> int:
        parts = self.params_by_part(state)
        return int(sum(parts["blocks"]) + parts["readout"])

    def predict_state(self, state):
        return {"blocks": list(state["blocks"]), "readout": dict(state["readout"])}

    def fitted(self):
        """The MinMax scaler fitted on the training split (used by ``encoding="minmax"``)."""
        return {"minmax": {"lo": [float(v) for v in np.asarray(self.scaler.lo)],
                           "span": [float(v) for v in np.asarray(self.scaler.span)]}}

    def load_fitted(self, fitted):
        mm = fitted.get("minmax") if isinstance(fitted, dict) else None
        d = self.data.n_features
        if not (isinstance(mm, dict) and len(mm.get("lo", ())) == d
                and len(mm.get("span", ())) == d):
            raise ValueError(f"PhyLL: expected the fitted MinMax scaler as {{'minmax': {{'lo': "
                             f"[{d} numbers], 'span': [{d} numbers]}}}}, got {fitted!r}")
        self.scaler = MinMax(jnp.asarray(mm["lo"], jnp.float32),
                             jnp.asarray(mm["span"], jnp.float32))


def train(layers, data, config: PhyLLConfig = PhyLLConfig(), *, seed: int = 0,
          ledger: Ledger | None = None, progress: Progress | None = None,
          checkpoint_dir=None, checkpoint_every: int = 0, resume: bool = False,
          on_step: StepHook | None = None, **kw) -> Result:
    """Train a PhyLL network on ``data`` with one physical layer per block.

    Args:
        layers: ``len(config.hidden)`` physical layers; layer k must have ``n_in`` equal to the
            width of block k's input (see :func:`layer_shapes`).
        data: a :class:`pnn.data.vowels.Dataset`-like split (train, validation, test).
        seed: seeds the block initialisation, data order and negative labels.
        Other arguments: see :func:`pnn.train.loop.run`.

    Returns: ``(record, model)`` (:class:`pnn.train.loop.Result`); the record's
    ``test_accuracy`` is measured once, on the model selected on validation.

    Raises:
        ValueError: when the layers do not match the block widths.
    """
    return fit("phyll", PhyLL, layers, data, config, seed=seed, ledger=ledger, progress=progress,
               checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
               on_step=on_step, **kw)


#: the registry's name for this trainer's configuration
Config = PhyLLConfig
