"""PhyLL's device epoch: one training epoch as one compiled program (issue 27).

When every block's physical layer is a pure-JAX simulator (a :class:`pnn.sim.base.
AbstractSimulator`, or a :class:`pnn.layers.Shared` view of one) with no perturbation wrapper and
no per-call noise, a whole epoch of :meth:`pnn.train.phyll.PhyLL.step` runs as one ``lax.scan``
over the epoch's batches: the first drives, each block's simulation, its calibration, its inner
Adam steps and the next drives stay on the device, and the losses come back once per epoch.
Everything else (instruments, perturbations, host functions, a hook or checkpoint inside the
epoch) keeps the host path of :meth:`PhyLL.step`, with its checks (:func:`obstacles` says why).

What is kept equal to the host path (within float rounding; ``tests/train/test_phyll_device.py``):

* the data order (the loop's), the negative labels (drawn on the host for the whole epoch, batch
  by batch, from the state's generator exactly as :meth:`PhyLL.step` draws them), the learning
  rate of every inner step, the calibration (from the first batch's positive measurements);
* the last, partial batch is padded to the batch size with copies of its first sample and
  masked out of the loss and the calibration, so that one program serves every batch (a copy
  leaves a batch-wide label amplitude, ``label_scale="batch"``, unchanged);
* the simulator sees the same chunks as :meth:`pnn.cost.Ledger.query` gives it (at most
  ``ledger.max_batch`` rows, the last chunk padded with the range's lower bound);
* the ledger: queries (real rows only) per layer, device and purpose, the FLOPs of every step
  (:func:`pnn.train.phyll.train_flops`), and the reservoir of kept (drive, measurement) pairs
  from which the record's physics fits are computed (the slots are drawn on the host from the
  ledger's generator as :meth:`Ledger.query` draws them; the rows are written on the device);
* safety: drives out of range or not finite, and non-finite measurements, raise the ledger's
  errors, after the epoch (the epoch's results are then discarded).

Time: inside one compiled program the physics cannot be timed apart. Once per run, after the
first device epoch, each layer is called alone (through its validated ``__call__``) on that
epoch's first drives, twice: the second call's time is the simulator's time per batch, the first
call's extra time its compilation. The ledger's ``physical_s`` is then charged, per device
epoch, batches x the simulator's time per batch (and once the compilation), at most the epoch's
time; the rest of the epoch is digital. This probe trains nothing: its time is kept out of the
ledger's wall clock and its queries out of the counts, and both are reported in the record's
``device_epoch`` entry, with the fused epochs' total time.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pnn.layer import device_name
from pnn.network import direction, to_drive
from pnn.perturb import perturbations_of
from pnn.shared_layer import Shared
from pnn.sim.base import AbstractSimulator

__all__ = ["MODES", "Parts", "simulator_of", "obstacles", "run_epoch", "Timing"]


class Parts(NamedTuple):
    """The pieces of :mod:`pnn.train.phyll` an epoch is made of (passed in: that module imports
    this one). ``goodness(kind, h, xi)``, ``train_inputs`` (its jitted first drives), ``adam``
    (the optimiser), ``train_flops(config, rows, block)``, ``negatives(rng, y, C, k)``."""

    goodness: Callable
    train_inputs: Callable
    adam: Any
    train_flops: Callable
    negatives: Callable

#: ``PhyLLConfig.device_epoch``: ``auto`` (the device epoch where possible, else the host path),
#: ``on`` (refused, naming why, where not possible), ``off`` (the host path)
MODES = ("auto", "on", "off")


def simulator_of(layer):
    """``(simulator, n_pad, n_out)`` behind ``layer``, or the reason (a string) why its queries
    must stay on the host. ``n_pad`` drive channels filled with ``lo`` are appended (a
    :class:`Shared` view) and the first ``n_out`` measured channels read."""
    name = layer.spec.name
    if perturbations_of(layer):
        return f"{name} carries a perturbation, applied per call on the host"
    inner, n_pad = layer, 0
    if isinstance(layer, Shared):
        inner, n_pad = layer.layer, layer.n_pad
        if perturbations_of(inner):
            return f"{name}: its device carries a perturbation, applied per call on the host"
    if not isinstance(inner, AbstractSimulator):
        return (f"{name} is not a pure-JAX simulator ({type(inner).__name__}: an instrument, a "
                f"host function or a wrapped layer), so its queries stay on the host with their "
                f"checks")
    if type(inner).noise_key is not AbstractSimulator.noise_key:
        return f"{name} may draw detector noise per call ({type(inner).__name__}.noise_key)"
    return inner, n_pad, int(layer.spec.n_out)


def obstacles(layers) -> list[str]:
    """Why these layers cannot run inside one compiled epoch (empty: they can)."""
    return [r for r in map(simulator_of, layers) if isinstance(r, str)]


class Timing:
    """The once-per-run simulator probe and the fused epochs' times (see the module docstring)."""

    def __init__(self):
        self.batch_s: float | None = None  # the simulators' time per batch, all blocks
        self.compile_s = 0.0
        self.probe_s = 0.0
        self.probe_queries = 0
        self.fused_s = 0.0
        self.epochs = 0
        self.physical_s = 0.0

    def report(self) -> dict:
        return {"fused_epochs": self.epochs, "fused_s": round(self.fused_s, 4),
                "physical_s_attributed": round(self.physical_s, 4),
                "simulator_s_per_batch": None if self.batch_s is None else round(self.batch_s, 6),
                "simulator_compile_s": round(self.compile_s, 4),
                "probe_s": round(self.probe_s, 4), "probe_queries": self.probe_queries,
                "physical_s_method": "per device epoch: batches x the simulators' time per batch "
                                     "(+ once their compilation), measured by calling each "
                                     "simulator alone once per run on an epoch's first drives; "
                                     "the probe is outside wall_s and the query counts"}


def _masked_loss(kind, theta, gp, gn, w):
    """:func:`pnn.train.phyll._local_loss` over the real samples only (``w``: 1 real, 0 pad)."""
    gn = gn.reshape(-1, gp.shape[0])
    n = jnp.sum(w)
    if kind == "cosine":
        return jnp.sum(jax.nn.softplus(-theta * (gp[None, :] - gn)) * w) / (gn.shape[0] * n)
    return (jnp.sum(jax.nn.softplus(-(gp - theta)) * w) / n
            + jnp.sum(jax.nn.softplus(gn - theta) * w) / (gn.shape[0] * n))


def _block_update(parts, kind, blk, opt_state, m, h, w, theta, lrs):
    """:func:`pnn.train.phyll._block_train`'s inner Adam steps with the masked loss."""
    params, static = eqx.partition(blk, blk.trainable())
    n_pos, adam = w.shape[0], parts.adam

    def loss_fn(p):
        b = eqx.combine(p, static)
        gp = parts.goodness(kind, b(m[:n_pos], h[:n_pos]), b.xi)
        gn = parts.goodness(kind, b(m[n_pos:], h[n_pos:]), b.xi)
        return _masked_loss(kind, theta, gp, gn, w)

    def body(carry, lr):
        p, s = carry
        s = s._replace(hyperparams={**s.hyperparams, "learning_rate": lr})
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, s = adam.update(g, s, p)
        return (eqx.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), lrs)
    return eqx.combine(params, static), opt_state, losses[-1]


class _Plan(NamedTuple):
    """What the compiled epoch is specialised on (static: hashed, not traced)."""

    parts: Parts
    kind: str
    n_classes: int
    encoding: str
    label_scale: str
    k_neg: int
    first_range: tuple  # (lo, hi) of the first layer's drives
    blocks: tuple  # per block: (n_pad, n_out, device lo, lo, hi, next lo, next hi)
    max_batch: int
    keep: bool  # the ledger keeps a reservoir of training (drive, measurement) pairs


def _measure(sim, d, n_pad, n_out, lo_dev, max_batch):
    """The simulator on drives ``d`` as :meth:`Ledger.query` and a :class:`Shared` view call
    it: chunks of at most ``max_batch`` rows (the last padded with ``lo``), ``n_pad`` channels
    of ``lo`` appended, the first ``n_out`` channels read."""
    rows = d.shape[0]
    if n_pad:
        d = jnp.concatenate([d, jnp.full((rows, n_pad), lo_dev, d.dtype)], axis=1)
    if rows <= max_batch:
        y = sim.forward(d, key=None)
    else:
        n_ch = -(-rows // max_batch)
        d = jnp.concatenate([d, jnp.full((n_ch * max_batch - rows, d.shape[1]), lo_dev,
                                         d.dtype)])
        y = jax.lax.map(lambda c: sim.forward(c, key=None),
                        d.reshape(n_ch, max_batch, d.shape[1]))
        y = y.reshape(n_ch * max_batch, y.shape[-1])[:rows]
    return y[:, :n_out]


def _calibrate(blk, m_pos, w, done):
    """:meth:`pnn.network.Block.with_calibration` on the real positive measurements, unless the
    block is calibrated already."""
    scale = jnp.sum(jnp.abs(m_pos) * w[:, None]) / (jnp.sum(w) * m_pos.shape[1])
    cal = jnp.where(scale > 0, 1.0 / scale, 1.0).astype(blk.cal.dtype)
    return eqx.tree_at(lambda b: b.cal, blk, jnp.where(done, blk.cal, cal))


def _batch(plan, sims, carry, b, consts):
    """One training step (every block) on one padded batch ``b``; the body of the epoch's scan."""
    blocks, opts, done, bufs, firsts = (list(c) for c in carry)
    w = b["w"]
    h, d = plan.parts.train_inputs(
        b["x"], b["y"], b["yneg"], consts["lo"], consts["span"], consts["gain"],
        d_lo=plan.first_range[0], d_hi=plan.first_range[1], n_classes=plan.n_classes,
        encoding=plan.encoding, label_scale=plan.label_scale)
    real = (jnp.tile(w, plan.k_neg + 1) > 0)[:, None]
    losses, bad = [], []
    for k, (n_pad, n_out, lo_dev, lo, hi, nlo, nhi) in enumerate(plan.blocks):
        firsts[k] = jnp.where(b["i"] == 0, d, firsts[k])
        m = _measure(sims[k], d, n_pad, n_out, lo_dev, plan.max_batch)
        bad.append(jnp.stack([
            jnp.any(real & (~jnp.isfinite(d) | (d < lo - 1e-6) | (d > hi + 1e-6))),
            jnp.any(real & ~jnp.isfinite(m))]))
        if plan.keep:
            bx, by = bufs[k]
            bufs[k] = (bx.at[b["dest"][k]].set(d, mode="drop"),
                       by.at[b["dest"][k]].set(m, mode="drop"))
        blk = _calibrate(blocks[k], m[:w.shape[0]], w, done[k])
        blk, opts[k], loss = _block_update(plan.parts, plan.kind, blk, opts[k], m, h, w,
                                           consts["theta"], b["lrs"][k])
        blocks[k], done[k] = blk, jnp.asarray(True)
        h = blk(m, h)
        d = to_drive(direction(h), nlo, nhi, consts["gain"])
        losses.append(loss)
    carry = tuple(map(tuple, (blocks, opts, done, bufs, firsts)))
    return carry, (jnp.stack(losses), jnp.stack(bad))


@eqx.filter_jit
def _epoch(plan, sims, carry, batches, consts):
    """Every batch of an epoch (a ``lax.scan``): the final carry, the losses ``(batches,
    blocks)`` and the safety flags ``(batches, blocks, 2)`` (bad drive, bad measurement)."""
    return jax.lax.scan(lambda c, b: _batch(plan, sims, c, b, consts), carry, batches)


def _pad_batches(parts, rng, xs, ys, n_classes, k_neg):
    """The epoch's batches padded to the first batch's size with copies of their first sample,
    their negative labels (drawn batch by batch from ``rng``, as the host path draws them) and
    the mask of real samples."""
    bs, n_b = len(ys[0]), len(ys)
    x = np.empty((n_b, bs) + np.shape(xs[0])[1:], np.float32)
    y = np.empty((n_b, bs), np.int32)
    yneg = np.empty((n_b, k_neg * bs), np.int32)
    w = np.zeros((n_b, bs), np.float32)
    for b, (xb, yb) in enumerate(zip(xs, ys)):
        n = len(yb)
        fill = np.concatenate([np.arange(n), np.zeros(bs - n, np.int64)])
        y_neg = parts.negatives(rng, np.asarray(yb), n_classes, k_neg)
        x[b], y[b], w[b, :n] = np.asarray(xb, np.float32)[fill], np.asarray(yb)[fill], 1.0
        yneg[b] = y_neg.reshape(k_neg, n)[:, fill].reshape(-1)
    return {"x": x, "y": y, "yneg": yneg, "w": w}


def _reservoir(ledger, layers, ys, rows_p, bs):
    """The ledger's reservoir slots of every training row of the epoch, drawn on the host as
    :meth:`Ledger.query` draws them (the draws depend on the counts, not the values): per
    batch and block, the slot each padded row is written to (``cap``: not kept); and each
    layer's reservoir as it stands. ``(None, None)`` when the ledger keeps none."""
    cap = ledger.sample_cap
    if not cap or ledger._relabel.get("train", "train") != "train":
        return None, None
    dest = np.full((len(ys), len(layers), rows_p), cap, np.int32)
    for b, yb in enumerate(ys):
        n, k1 = len(yb), rows_p // bs
        pos = (np.arange(k1)[:, None] * bs + np.arange(n)[None, :]).reshape(-1)
        for k, layer in enumerate(layers):
            spec = layer.spec
            entry = ledger.samples.setdefault(spec.name, [
                np.zeros((cap, spec.n_in), np.float32), np.zeros((cap, spec.n_out), np.float32),
                0])
            idx = entry[2] + np.arange(len(pos))
            slot = np.where(idx < cap, idx, ledger._sample_rng.integers(0, idx + 1))
            keep = slot < cap
            winner = np.full(cap, -1, np.int64)
            winner[slot[keep]] = pos[keep]  # as the ledger assigns: the same element wins
            s = np.nonzero(winner >= 0)[0]
            dest[b, k, winner[s]] = s
            entry[2] += len(pos)
    bufs = tuple((jnp.asarray(ledger.samples[lay.spec.name][0]),
                  jnp.asarray(ledger.samples[lay.spec.name][1])) for lay in layers)
    return dest, bufs


def _plan(algo, parts, k_neg, keep) -> _Plan:
    cfg, layers = algo.config, algo.layers
    spec0, rows = layers[0].spec, []
    for k, layer in enumerate(layers):
        _, n_pad, n_out = simulator_of(layer)
        nxt = layers[k + 1].spec if k + 1 < len(layers) else spec0
        rows.append((n_pad, n_out, float(layer.spec.lo), float(layer.spec.lo),
                     float(layer.spec.hi), float(nxt.lo), float(nxt.hi)))
    return _Plan(parts, cfg.goodness, algo.data.n_classes, cfg.encoding, cfg.label_scale, k_neg,
                 (float(spec0.lo), float(spec0.hi)), tuple(rows), int(algo.ledger.max_batch),
                 keep)


def _strong(tree):
    """``tree`` with every array leaf strongly typed (a weak type would compile the epoch
    again once the program's outputs come back)."""
    return jax.tree_util.tree_map(
        lambda v: jnp.asarray(v, dtype=v.dtype) if eqx.is_array(v) and getattr(
            v, "weak_type", False) else v, tree)


def _check(layers, bad):
    """The ledger's errors for the first bad batch (drives out of range, bad measurements)."""
    for b, k, what in zip(*np.nonzero(bad)):
        spec = layers[k].spec
        if what == 0:
            raise ValueError(f"{spec.name}: drives must be finite and lie in the safe range "
                             f"[{spec.lo}, {spec.hi}] {spec.units}; batch {b} of the device "
                             f"epoch sent values outside it")
        raise ValueError(f"{spec.name}: returned non-finite measurements (batch {b} of the "
                         f"device epoch)")


def run_epoch(algo, state: dict, xs: list, ys: list, parts: Parts, timing: Timing):
    """Every batch ``(xs[i], ys[i])`` of an epoch, in order, as :meth:`PhyLL.step` would take
    them, in one compiled program; returns the new state and each batch's loss.

    Raises:
        ValueError: as :meth:`pnn.cost.Ledger.query` does, for drives out of range or not
            finite and non-finite measurements (the epoch is then discarded).
    """
    t0 = time.perf_counter()
    cfg, C, ledger, layers = algo.config, algo.data.n_classes, algo.ledger, algo.layers
    sims = tuple(simulator_of(lay)[0] for lay in layers)
    for sim in sims:
        sim.validate_params()  # as every call does; nothing changes them within the epoch
    k_neg = min(int(cfg.negatives), C - 1)
    bs, n_b, rng = len(ys[0]), len(ys), state["rng"]
    rows_p = (k_neg + 1) * bs
    batches = _pad_batches(parts, rng, xs, ys, C, k_neg)
    counts = [int(o.count) for o in state["opt"]]
    batches["lrs"] = np.stack([np.stack([algo.inner_rates(c + b * cfg.inner_steps)
                                         for c in counts]) for b in range(n_b)])
    batches["i"] = np.arange(n_b)
    dest, bufs = _reservoir(ledger, layers, ys, rows_p, bs)
    if dest is not None:
        batches["dest"] = dest
    plan = _plan(algo, parts, k_neg, dest is not None)
    firsts = tuple(jnp.zeros((rows_p, lay.spec.n_in), jnp.float32) for lay in layers)
    # strong types throughout (a freshly initialised state holds weakly typed scalars, the
    # program's outputs do not): one compiled program for every epoch
    carry = (_strong(tuple(state["blocks"])), _strong(tuple(state["opt"])),
             tuple(jnp.asarray(bool(c)) for c in state["calibrated"]),
             bufs if bufs is not None else (None,) * len(layers), firsts)
    consts = {"lo": algo.scaler.lo, "span": algo.scaler.span,
              "gain": np.float32(cfg.drive_gain), "theta": np.float32(cfg.theta)}
    (blocks, opts, _, bufs, firsts), (losses, bad) = _epoch(plan, sims, carry, batches, consts)
    losses, bad = np.asarray(losses), np.asarray(bad)
    _check(layers, bad)
    purpose = ledger._relabel.get("train", "train")
    for b, yb in enumerate(ys):
        rows = (k_neg + 1) * len(yb)
        for k, layer in enumerate(layers):
            ledger.queries_by_layer[layer.spec.name] += rows
            ledger.queries_by_device[device_name(layer)] += rows
            ledger.queries_by_purpose[purpose] += rows
            ledger.add_flops(parts.train_flops(cfg, rows, blocks[k]), "trainable update")
    if dest is not None:
        for layer, (bx, by) in zip(layers, bufs):
            entry = ledger.samples[layer.spec.name]
            entry[0][...], entry[1][...] = np.asarray(bx), np.asarray(by)
    batch_losses = []
    for row in losses:
        total = 0.0
        for v in row:  # summed as the host path sums them
            total += float(v)
        batch_losses.append(total)
    _attribute(timing, ledger, layers, firsts, n_b, time.perf_counter() - t0)
    return {**state, "blocks": list(blocks), "opt": list(opts),
            "calibrated": [True] * len(layers), "rng": rng}, batch_losses


def _attribute(timing: Timing, ledger, layers, firsts, n_batches: int, epoch_s: float) -> None:
    """Charge the ledger's physical time for a device epoch (see the module docstring); the
    first time, probe the simulators on the epoch's first drives, off the ledger's clock. The
    probe calls each layer as :meth:`Ledger.query` would (chunks of at most ``max_batch`` rows:
    one chunk is timed and counted once per chunk), so it shares the evaluation's programs."""
    first = timing.batch_s is None
    if first:
        ledger.stop()
        t_probe = time.perf_counter()
        timing.batch_s = 0.0
        for layer, d in zip(layers, firsts):
            d = np.asarray(d)
            n_chunks = -(-len(d) // ledger.max_batch)
            d = d[:ledger.max_batch]
            t = time.perf_counter()
            np.asarray(layer(d))
            once = time.perf_counter() - t
            t = time.perf_counter()
            np.asarray(layer(d))
            steady = time.perf_counter() - t
            timing.batch_s += n_chunks * steady
            timing.compile_s += max(once - steady, 0.0)
            timing.probe_queries += 2 * len(d)
        timing.probe_s += time.perf_counter() - t_probe
        ledger.restart_clock()
    phys = min(n_batches * timing.batch_s + (timing.compile_s if first else 0.0), epoch_s)
    ledger.physical_s += phys
    timing.physical_s += phys
    timing.fused_s += epoch_s
    timing.epochs += 1
