"""Model-free forward-forward training of physical networks (PhyLL).

Momeni, Rahmani, Malléjac, del Hougne & Fleury, "Backpropagation-free training of deep physical
neural networks", Science 382, 1297 (2023); arXiv:2304.11042.

Each block k (see :mod:`pnn.network`) computes ``h_k = W_k [P_k(a_k); a_k] + b_k`` with
``a_k = |h_{k-1}| / ||h_{k-1}||``. Training is greedy and layer-local:

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
import hashlib
import json
import signal
import threading
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.checkpoint import load_checkpoint, save_checkpoint
from pnn.cost import Ledger, adam_flops, dense_flops
from pnn.network import Block, MinMax, direction, embed_all_labels, embed_label, goodness, to_drive
from pnn.perturb import load_perturbation_states, perturbation_states
from pnn.train.common import Progress, StepHook, accuracy, result_record

__all__ = ["PhyLLConfig", "train", "input_dim", "PhyLLModel"]


@dataclasses.dataclass(frozen=True)
class PhyLLConfig:
    """PhyLL hyper-parameters.

    hidden: output width of each block (one physical layer per block).
    n_meas: measured channels of each block's physical layer (``n_out``).
    epochs, batch_size: passes over the training set and samples per batch.
    inner_steps: Adam steps per block per batch on the fixed measurements (paper: 10-25).
    lr: Adam learning rate. theta: loss sharpness (paper: about 4-5).
    goodness: ``"cosine"`` (PhyLL, default) or ``"sumsq"`` (Hinton's, an option).
    eval_train_max: training accuracy is measured on at most this many training samples.
    encoding: how standardised features become non-negative drives: ``"split"`` sends
        ``[max(z, 0), max(-z, 0)]`` (keeps the sign of each feature as a separate channel),
        ``"minmax"`` maps each feature to [0, 1] with training min/max.
    lr_schedule: ``"cosine"`` decays the rate to 5 % over the run; ``"constant"`` keeps it.
    negatives: wrong labels drawn per sample per batch (paper: 1). Each costs one more physical
        query per sample per block; ``C - 1`` or more means every wrong label once.
    """

    hidden: tuple = (20, 20)
    n_meas: int = 20
    epochs: int = 10
    batch_size: int = 64
    inner_steps: int = 15
    lr: float = 3e-3
    theta: float = 4.5
    goodness: str = "cosine"
    eval_train_max: int = 400
    encoding: str = "split"
    lr_schedule: str = "cosine"
    negatives: int = 1

    def __post_init__(self):
        if self.encoding not in ("split", "minmax"):
            raise ValueError(f"encoding must be 'split' or 'minmax', got {self.encoding!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if int(self.negatives) < 1:
            raise ValueError(f"negatives must be >= 1, got {self.negatives!r}")
        if self.goodness not in ("cosine", "sumsq"):
            raise ValueError(f"goodness must be 'cosine' or 'sumsq', got {self.goodness!r}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden must list positive block widths, got {self.hidden!r}")
        for name in ("n_meas", "epochs", "batch_size", "inner_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")


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


@eqx.filter_jit
def _inner_update(params, static, opt_state, m_pos, a_pos, m_neg, a_neg, *, opt, kind, theta,
                  steps):
    def loss_fn(p):
        blk = eqx.combine(p, static)
        gp = _block_goodness(kind, blk(m_pos, a_pos), blk.xi)
        gn = _block_goodness(kind, blk(m_neg, a_neg), blk.xi)
        return _local_loss(kind, theta, gp, gn)

    def body(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(g, s, p)
        return (eqx.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), None, length=steps)
    return params, opt_state, losses[-1]


@eqx.filter_jit
def _apply_block(blk, m, a, kind):
    h = blk(m, a)
    return h, _block_goodness(kind, h, blk.xi)


class PhyLLModel:
    """A trained (or training) PhyLL network: the physical layers plus the digital blocks."""

    def __init__(self, layers, blocks, scaler: MinMax, n_classes: int, kind: str,
                 encoding: str = "split"):
        self.encoding = encoding
        self.layers = list(layers)
        self.blocks = list(blocks)
        self.scaler = scaler
        self.n_classes = n_classes
        self.kind = kind

    def prepare(self, x):
        """Features -> non-negative drives (see ``encoding``) with C label slots in front."""
        x = jnp.asarray(x, jnp.float32)
        if self.encoding == "split":
            z = jnp.concatenate([jnp.maximum(x, 0.0), jnp.maximum(-x, 0.0)], axis=1)
        else:
            z = self.scaler(x)
        # a constant reference channel: the drive is normalised to a direction, and without it
        # the features' overall magnitude (one of only a few dimensions) would be lost
        z = jnp.concatenate([z, jnp.ones((z.shape[0], 1), z.dtype)], axis=1)
        return jnp.concatenate([jnp.zeros((z.shape[0], self.n_classes), z.dtype), z], axis=1)

    def block_forward(self, k, h, ledger: Ledger, purpose: str = "eval"):
        """Drive block k's physical layer with the direction of h; returns (a, m, h_k, G_k)."""
        spec = self.layers[k].spec
        a = direction(h)
        m = ledger.query(self.layers[k], np.asarray(to_drive(a, spec.lo, spec.hi)), purpose)
        h_next, g = _apply_block(self.blocks[k], jnp.asarray(m), a, self.kind)
        blk = self.blocks[k]
        ledger.add_flops(dense_flops(h.shape[0], blk.W.shape[1], blk.W.shape[0])
                         + 6 * h.shape[0] * (h.shape[1] + blk.W.shape[0]), "trainable forward")
        return a, m, h_next, g

    def scores(self, x, ledger: Ledger) -> np.ndarray:
        """Summed goodness for every label, shape ``(batch, n_classes)``."""
        x0 = self.prepare(x)
        h = embed_all_labels(x0, self.n_classes)
        total = jnp.zeros(h.shape[0])
        for k in range(len(self.blocks)):
            _, _, h, g = self.block_forward(k, h, ledger)
            total = total + g
        return np.asarray(total.reshape(self.n_classes, -1).T)

    def predict(self, x, ledger: Ledger) -> np.ndarray:
        return np.argmax(self.scores(x, ledger), axis=1)

    @property
    def n_params(self) -> int:
        return int(sum(b.n_params for b in self.blocks))


def params_digest(blocks) -> str:
    """SHA-256 of every block's trainable parameters (to compare runs bit for bit)."""
    h = hashlib.sha256()
    for blk in blocks:
        for arr in (blk.W, blk.b):
            h.update(np.ascontiguousarray(np.asarray(arr)).tobytes())
    return h.hexdigest()


def train(layers, data, config: PhyLLConfig = PhyLLConfig(), *, seed: int = 0,
          ledger: Ledger | None = None, progress: Progress | None = None,
          checkpoint_dir=None, checkpoint_every: int = 0, resume: bool = False,
          on_step: StepHook | None = None) -> dict:
    """Train a PhyLL network on ``data`` with one physical layer per block.

    Args:
        layers: ``len(config.hidden)`` physical layers; layer k must have ``n_in`` equal to the
            width of block k's input (see :func:`layer_shapes`).
        data: a :class:`pnn.data.vowels.Dataset`-like split.
        seed: seeds the block initialisation, data order and negative labels.
        ledger: cost ledger (a fresh one if None). progress: called after every epoch.
        on_step: called after every training step (see :data:`pnn.train.common.StepHook`).
        checkpoint_dir: where the training state (blocks, optimiser states, PRNG state, data
            order and position, history, ledger, and the state of any perturbation wrappers
            around the layers: noise generators, drift positions) is written atomically every
            ``checkpoint_every`` batches and on Ctrl-C (see :mod:`pnn.checkpoint`).
        resume: continue from the newest good checkpoint in ``checkpoint_dir`` (a fresh start
            when there is none). A resumed run ends with the same parameters as an uninterrupted
            one. State held inside instruments or simulators themselves is not part of it.

    Returns: the result record (see :func:`pnn.train.common.result_record`); the trained model
    is under the key ``"model"`` (not serialisable; drop it before writing JSON).

    Raises:
        ValueError: when the layers do not match the block widths.
    """
    ledger = ledger or Ledger()
    C = data.n_classes
    shapes = layer_shapes(config, data.n_features, C)
    if len(layers) != len(shapes):
        raise ValueError(f"PhyLL with hidden={config.hidden} needs {len(shapes)} physical layers, "
                         f"got {len(layers)}")
    for k, (layer, (n_in, n_out)) in enumerate(zip(layers, shapes)):
        if layer.spec.n_in != n_in:
            what = (f"{C} label slots + 2 x {data.n_features} split features + 1" if k == 0 and
                    config.encoding == "split" else
                    f"{C} label slots + {data.n_features} features + 1" if k == 0 else
                    f"the width of block {k - 1}")
            raise ValueError(f"block {k}: physical layer {layer.spec.name!r} has n_in="
                             f"{layer.spec.n_in}, but the block sends {n_in} ({what})")

    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, len(shapes))
    blocks = [Block(n_in, layer.spec.n_out, int(hdim), key=kk)
              for (n_in, _), layer, hdim, kk in zip(shapes, layers, config.hidden, keys)]
    model = PhyLLModel(layers, blocks, MinMax.fit(data.x_train), C, config.goodness,
                       config.encoding)
    n_batches = -(-len(data.y_train) // config.batch_size)
    lr = config.lr
    if config.lr_schedule == "cosine":
        lr = optax.cosine_decay_schedule(config.lr, config.epochs * n_batches * config.inner_steps,
                                         alpha=0.05)
    opt = optax.adam(lr)
    parts = [eqx.partition(b, b.trainable()) for b in blocks]
    opt_states = [opt.init(p) for p, _ in parts]
    calibrated = [False] * len(blocks)

    def _train_batch(idx):
        x0 = model.prepare(data.x_train[idx])
        y = jnp.asarray(data.y_train[idx])
        k_neg = min(int(config.negatives), C - 1)
        if k_neg == C - 1:  # every wrong label once
            shift = np.repeat(np.arange(1, C), len(idx))
        else:
            shift = rng.integers(1, C, size=k_neg * len(idx))
        y_neg = (jnp.tile(y, k_neg) + jnp.asarray(shift)) % C
        h_pos, h_neg = embed_label(x0, y, C), embed_label(jnp.tile(x0, (k_neg, 1)), y_neg, C)
        batch_loss = 0.0
        for k in range(len(blocks)):
            spec = layers[k].spec
            a_pos, a_neg = direction(h_pos), direction(h_neg)
            # one physical query per drive: positive and negative drives in one batch
            drives = np.asarray(to_drive(jnp.concatenate([a_pos, a_neg]), spec.lo, spec.hi))
            m = jnp.asarray(ledger.query(layers[k], drives))
            m_pos, m_neg = m[: len(idx)], m[len(idx):]
            if not calibrated[k]:
                blocks[k] = blocks[k].with_calibration(np.asarray(m_pos))
                parts[k] = eqx.partition(blocks[k], blocks[k].trainable())
                calibrated[k] = True
            params, static = parts[k]
            params, opt_states[k], loss = _inner_update(
                params, static, opt_states[k], m_pos, a_pos, m_neg, a_neg, opt=opt,
                kind=config.goodness, theta=config.theta, steps=config.inner_steps)
            parts[k] = (params, static)
            blocks[k] = eqx.combine(params, static)
            model.blocks[k] = blocks[k]
            fan_in, width = blocks[k].W.shape[1], blocks[k].W.shape[0]
            # forward + backward (about 3x forward) for pos and neg, per inner step
            ledger.add_flops(config.inner_steps * (3 * dense_flops(len(drives), fan_in, width)
                                                   + adam_flops(blocks[k].n_params)),
                             "trainable update")
            h_pos, _ = _apply_block(blocks[k], m_pos, a_pos, config.goodness)
            h_neg, _ = _apply_block(blocks[k], m_neg, a_neg, config.goodness)
            batch_loss += float(loss)
        return batch_loss

    rng = np.random.default_rng(seed)
    n_train = len(data.y_train)
    eval_idx = rng.permutation(n_train)[: config.eval_train_max]
    history = []
    start_epoch, start_batch, order, losses, step = 1, 0, None, [], 0

    def snapshot():
        return {"blocks": blocks, "opt_states": opt_states, "calibrated": list(calibrated),
                "rng": rng, "epoch": epoch, "batch": b + 1, "order": np.asarray(order),
                "losses": list(losses), "history": history, "step": step,
                "ledger": ledger.state_dict(), "seed": seed,
                "perturbations": perturbation_states(layers),
                "config": dataclasses.asdict(config)}

    if checkpoint_dir is not None and resume:
        epoch, b, order = 0, -1, np.zeros(n_train, np.int64)
        found = load_checkpoint(checkpoint_dir, snapshot())
        if found is not None:
            st, _ = found
            if st["seed"] != seed or st["config"] != json.loads(json.dumps(
                    dataclasses.asdict(config))):
                raise ValueError(f"checkpoint in {checkpoint_dir} was written by a run with "
                                 f"another seed or configuration; refusing to resume")
            blocks, opt_states, calibrated = list(st["blocks"]), list(st["opt_states"]), \
                list(st["calibrated"])
            parts = [eqx.partition(blk, blk.trainable()) for blk in blocks]
            model.blocks = list(blocks)
            rng, history, losses, step = st["rng"], list(st["history"]), list(st["losses"]), \
                st["step"]
            start_epoch, start_batch, order = st["epoch"], st["batch"], np.asarray(st["order"])
            ledger.load_state_dict(st["ledger"])
            load_perturbation_states(layers, st["perturbations"])
            for rec in history:
                if progress is not None:
                    progress(rec)

    stop = {"requested": False}
    restore_handler = None
    if checkpoint_dir is not None and threading.current_thread() is threading.main_thread():
        def on_sigint(signum, frame):
            if stop["requested"]:  # a second Ctrl-C: stop at once
                raise KeyboardInterrupt
            stop["requested"] = True
        restore_handler = signal.signal(signal.SIGINT, on_sigint)

    try:
        for epoch in range(start_epoch, config.epochs + 1):
            t_epoch = time.perf_counter()
            if epoch != start_epoch or order is None:
                order, losses, first = rng.permutation(n_train), [], 0
            else:
                first = start_batch
            batches = [order[i:i + config.batch_size] for i in range(0, n_train, config.batch_size)]
            for b in range(first, len(batches)):
                idx = batches[b]
                losses.append(_train_batch(idx))
                step += 1
                if on_step is not None:
                    on_step(step, lambda: accuracy(model.predict(data.x_test, ledger),
                                                   data.y_test))
                if checkpoint_dir is not None and (
                        stop["requested"] or (checkpoint_every and step % checkpoint_every == 0)):
                    save_checkpoint(checkpoint_dir, snapshot(), step=step)
                if stop["requested"]:
                    raise KeyboardInterrupt(
                        f"stopped after step {step}; checkpoint written to {checkpoint_dir}")
            train_acc = accuracy(model.predict(data.x_train[eval_idx], ledger),
                                 data.y_train[eval_idx])
            test_acc = accuracy(model.predict(data.x_test, ledger), data.y_test)
            rec = {"epoch": epoch, "loss": float(np.mean(losses)), "train_accuracy": train_acc,
                   "test_accuracy": test_acc, "physical_queries": ledger.physical_queries,
                   "epoch_s": round(time.perf_counter() - t_epoch, 3)}
            history.append(rec)
            if progress is not None:
                progress(rec)
    finally:
        if restore_handler is not None:
            signal.signal(signal.SIGINT, restore_handler)

    train_acc = accuracy(model.predict(data.x_train, ledger), data.y_train)
    test_acc = history[-1]["test_accuracy"]
    ledger.stop()
    out = result_record(method="phyll", config=config, seed=seed, history=history,
                        train_accuracy=train_acc, test_accuracy=test_acc, ledger=ledger,
                        n_params=model.n_params,
                        extra={"layers": [layer.spec.to_dict() for layer in layers],
                               "params_sha256": params_digest(model.blocks)})
    out["model"] = model
    return out

#: the registry's name for this trainer's configuration
Config = PhyLLConfig
