"""Blocks and stacks of physical and digital parts, shared by every trainer.

A block is one physical layer P plus a trainable digital map (Momeni et al. 2023, Fig. 1):

    a   = |h_prev| / ||h_prev||_2                   (direction of the previous block's output)
    d   = lo + (hi - lo) * clip(g * a, 0, 1)        (drive, inside the layer's safe range;
                                                     g: the drive gain, 1 by default)
    m   = P(d) * cal                                (measurement, one fixed calibration scalar)
    h   = W [m ; s(h_prev)] + b                     (W, b: the only trainable parameters)

The bypass ``s`` (``skip``) is an explicit choice (:data:`SKIPS`):

* ``"raw"`` (default): ``s(h) = h``, the raw, signed previous output, as in the PhyLL authors'
  acoustic and microwave code (MomeniAli/PhyLL, ``Acoustic/acoustics_pnn.py``:
  ``cat(P(h), h)``). A network of such blocks with no physics is a composition of affine maps,
  so the physics is the only nonlinearity between blocks.
* ``"none"``: no bypass, ``h = W m + b`` (the authors' optics blocks).
* ``"direction"``: ``s(h) = a``, the normalised magnitude ``|h| / ||h||``: itself a digital
  nonlinearity (absolute value and normalisation), pnn's block before this option existed; kept
  so that earlier models and records load and replay unchanged.

``cal`` is fixed once from the first measured batch (1 / mean measurement), so that the digital
map sees measurements of order one whatever the physics' units; it is never trained.

Input preparation (PhyLL's label embedding): features are mapped to [0, 1] with training-split
min/max (:class:`MinMax`), then C zeros are prepended; the label embedding zeroes those C entries
and sets entry y to max|x| (:func:`embed_label`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "SKIPS",
    "LEGACY_SKIP",
    "Block",
    "MinMax",
    "embed_label",
    "embed_all_labels",
    "direction",
    "to_drive",
    "goodness",
    "count_params",
]


#: the bypass choices of a block (see the module docstring)
SKIPS = ("raw", "none", "direction")
#: the bypass of every block saved before ``skip`` existed (model files and records without it)
LEGACY_SKIP = "direction"


class MinMax(eqx.Module):
    """Per-feature affine map to [0, 1] fitted on training data; test values are clipped."""

    lo: Array
    span: Array

    @classmethod
    def fit(cls, x: np.ndarray) -> "MinMax":
        lo = x.min(0)
        span = np.maximum(x.max(0) - lo, 1e-12)
        return cls(jnp.asarray(lo, jnp.float32), jnp.asarray(span, jnp.float32))

    def __call__(self, x):
        return jnp.clip((x - self.lo) / self.span, 0.0, 1.0)


#: where the label amplitude ``max|x|`` is taken: per sample, or over the whole batch (the
#: PhyLL authors' code: ``torch.abs(x).max()``, one value for the batch)
LABEL_SCALES = ("sample", "batch")


def label_amplitude(x, label_scale: str = "sample"):
    """``max|x|`` per sample, shape ``(batch, 1)``, or over the whole batch (broadcast)."""
    if label_scale not in LABEL_SCALES:
        raise ValueError(f"label_scale={label_scale!r}: expected one of {LABEL_SCALES}")
    m = jnp.max(jnp.abs(x), axis=1, keepdims=True)
    return jnp.broadcast_to(jnp.max(m), m.shape) if label_scale == "batch" else m


def embed_label(x: Float[Array, "batch d"], y, n_classes: int, label_scale: str = "sample",
                amplitude=None) -> Float[Array, "batch d"]:
    """Zero the first ``n_classes`` entries and set entry ``y`` to ``max|x|`` (per sample, or
    over the batch with ``label_scale="batch"``; ``amplitude`` ``(batch, 1)`` overrides both)."""
    m = label_amplitude(x, label_scale) if amplitude is None else amplitude
    onehot = jax.nn.one_hot(y, n_classes, dtype=x.dtype)
    return x.at[:, :n_classes].set(onehot * m)


def embed_all_labels(x, n_classes: int, label_scale: str = "sample"):
    """Every label in turn: shape ``(n_classes * batch, d)``, label-major. The amplitude is
    taken from ``x`` (the batch given), the same for every label."""
    n = x.shape[0]
    m = label_amplitude(x, label_scale)
    xs = jnp.tile(x, (n_classes, 1))
    ys = jnp.repeat(jnp.arange(n_classes), n)
    return embed_label(xs, ys, n_classes, amplitude=jnp.tile(m, (n_classes, 1)))


def direction(h, eps: float = 1e-12):
    """|h| / ||h||_2 per sample: entries in [0, 1]."""
    a = jnp.abs(h)
    return a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + eps)


def to_drive(a, lo: float, hi: float, gain=1.0):
    """Map a direction (entries in [0, 1]) into the layer's drive range: ``lo + (hi - lo) *
    clip(gain * a, 0, 1)``. ``gain`` > 1 spreads a unit-norm direction (entries near
    ``1/sqrt(n)``) over more of the safe range; the clip keeps every drive inside it."""
    return lo + (hi - lo) * jnp.clip(gain * a, 0.0, 1.0)


def goodness(h, xi, eps: float = 1e-12):
    """PhyLL goodness: cosine similarity of |h| with the block's fixed random unit vector xi."""
    a = jnp.abs(h)
    return (a @ xi) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(xi) + eps)


class Block(eqx.Module):
    """Trainable digital part of one block: ``h = W [m ; s(h_prev)] + b`` (``s``: ``skip``).

    Shapes: ``W`` is ``(n_hidden, n_meas + n_drive)`` (``(n_hidden, n_meas)`` with
    ``skip="none"``); ``xi`` ``(n_hidden,)`` is PhyLL's fixed goodness direction and ``cal``
    the fixed measurement calibration (neither is trained: :meth:`trainable` filters them out).
    """

    W: Array
    b: Array
    xi: Array
    cal: Array
    skip: str = eqx.field(static=True, default="raw")

    def __init__(self, n_drive: int, n_meas: int, n_hidden: int, *, key, skip: str = "raw"):
        if skip not in SKIPS:
            raise ValueError(f"skip={skip!r}: expected one of {SKIPS} (raw: the previous "
                             f"output as it is; none: no bypass; direction: |h|/||h||)")
        kw, kx = jax.random.split(key)
        fan_in = n_meas + (0 if skip == "none" else n_drive)
        self.W = jax.random.normal(kw, (n_hidden, fan_in)) / np.sqrt(fan_in)
        self.b = jnp.zeros((n_hidden,))
        xi = jax.random.normal(kx, (n_hidden,))
        self.xi = xi / jnp.linalg.norm(xi)
        self.cal = jnp.array(1.0)
        self.skip = skip

    def bypass(self, h_prev):
        """What the digital map reads beside the measurement: ``(batch, n_drive)`` or
        ``(batch, 0)``."""
        if self.skip == "raw":
            return h_prev
        if self.skip == "direction":
            return direction(h_prev)
        return h_prev[..., :0]

    def __call__(self, m, h_prev):
        """``m``: raw measurement ``(batch, n_meas)``; ``h_prev``: the previous block's raw
        output (or the label-embedded input) ``(batch, n_drive)``, of which this block's drive
        is the direction."""
        z = jnp.concatenate([m * jax.lax.stop_gradient(self.cal), self.bypass(h_prev)], axis=-1)
        return z @ self.W.T + self.b

    @property
    def n_params(self) -> int:
        return int(self.W.size + self.b.size)

    def trainable(self):
        """Filter spec: True for W and b only."""
        spec = jax.tree_util.tree_map(lambda _: False, self)
        return eqx.tree_at(lambda blk: (blk.W, blk.b), spec, replace=(True, True))

    def with_calibration(self, m: np.ndarray) -> "Block":
        scale = float(np.mean(np.abs(m)))
        cal = 1.0 / scale if scale > 0 else 1.0
        return eqx.tree_at(lambda blk: blk.cal, self, jnp.array(cal, jnp.float32))


def count_params(blocks) -> int:
    return int(sum(b.n_params for b in blocks))
