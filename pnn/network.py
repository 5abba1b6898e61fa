"""Blocks and stacks of physical and digital parts, shared by every trainer.

A block is one physical layer P plus a trainable digital map (Momeni et al. 2023, Fig. 1):

    a   = |h_prev| / ||h_prev||_2                   (direction of the previous block's output)
    d   = lo + (hi - lo) * a                        (drive, inside the layer's safe range)
    m   = P(d) * cal                                (measurement, one fixed calibration scalar)
    h   = W [m ; a] + b                             (W, b: the only trainable parameters)

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
    "Block",
    "MinMax",
    "embed_label",
    "embed_all_labels",
    "direction",
    "to_drive",
    "goodness",
    "count_params",
]


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


def embed_label(x: Float[Array, "batch d"], y, n_classes: int) -> Float[Array, "batch d"]:
    """Zero the first ``n_classes`` entries and set entry ``y`` to ``max|x|`` (per sample)."""
    m = jnp.max(jnp.abs(x), axis=1)
    onehot = jax.nn.one_hot(y, n_classes, dtype=x.dtype)
    return x.at[:, :n_classes].set(onehot * m[:, None])


def embed_all_labels(x, n_classes: int):
    """Every label in turn: shape ``(n_classes * batch, d)``, label-major."""
    n = x.shape[0]
    xs = jnp.tile(x, (n_classes, 1))
    ys = jnp.repeat(jnp.arange(n_classes), n)
    return embed_label(xs, ys, n_classes)


def direction(h, eps: float = 1e-12):
    """|h| / ||h||_2 per sample: entries in [0, 1]."""
    a = jnp.abs(h)
    return a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + eps)


def to_drive(a, lo: float, hi: float):
    """Map a direction (entries in [0, 1]) into the layer's drive range."""
    return lo + (hi - lo) * jnp.clip(a, 0.0, 1.0)


def goodness(h, xi, eps: float = 1e-12):
    """PhyLL goodness: cosine similarity of |h| with the block's fixed random unit vector xi."""
    a = jnp.abs(h)
    return (a @ xi) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(xi) + eps)


class Block(eqx.Module):
    """Trainable digital part of one block: ``h = W [m ; a] + b``.

    Shapes: ``W`` is ``(n_hidden, n_meas + n_drive)``; ``xi`` ``(n_hidden,)`` is PhyLL's fixed
    goodness direction and ``cal`` the fixed measurement calibration (neither is trained:
    :meth:`trainable` filters them out).
    """

    W: Array
    b: Array
    xi: Array
    cal: Array

    def __init__(self, n_drive: int, n_meas: int, n_hidden: int, *, key):
        kw, kx = jax.random.split(key)
        fan_in = n_meas + n_drive
        self.W = jax.random.normal(kw, (n_hidden, fan_in)) / np.sqrt(fan_in)
        self.b = jnp.zeros((n_hidden,))
        xi = jax.random.normal(kx, (n_hidden,))
        self.xi = xi / jnp.linalg.norm(xi)
        self.cal = jnp.array(1.0)

    def __call__(self, m, a):
        """``m``: raw measurement ``(batch, n_meas)``; ``a``: direction ``(batch, n_drive)``."""
        z = jnp.concatenate([m * jax.lax.stop_gradient(self.cal), a], axis=-1)
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
