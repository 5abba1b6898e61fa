"""Zeroth-order gradient estimates from loss differences: the numerics of :mod:`pnn.train.zo`.

Pure functions of numpy arrays (host side: the losses they read come from physical queries).
Conventions: a direction ``u`` is drawn with ``E[u u^T] = I`` (Rademacher entries, standard
Gaussian entries, or a Gaussian rescaled to norm ``sqrt(n)``: the "sphere"), so that the
finite-difference estimate ``(L(x + c u) - L(x - c u)) / (2c) * u`` is, to ``O(c^2)``, an
unbiased estimate of ``grad L`` (Spall 1992 for Rademacher; Baydin et al. 2022 for Gaussian
forward gradients).

Guided directions (Maheswaranathan et al., "Guided evolutionary strategies: augmenting random
search with surrogate gradients", ICML 2019, arXiv:1806.10230): perturbations are drawn from
``N(0, Sigma)`` with ``Sigma = alpha/n I_n + (1 - alpha)/k U U^T``, ``U`` ``(n, k)`` an orthonormal
basis of a guiding subspace, so the antithetic estimate's expectation is ``Sigma grad L``: the
gradient's projection onto the subspace, mixed with the full gradient. The guiding subspace
here is spanned by the last ``k`` estimates (the use of past descent directions as the surrogate
is Meier et al., "Improving gradient estimation in evolutionary strategies with past descent
directions", arXiv:1910.05268). We scale ``Sigma`` by ``n`` (``E[u u^T] = n Sigma``, trace ``n``,
as for the plain directions) so that ``alpha = 1`` is plain SPSA; the paper's ``beta`` scale is
left to Adam, which divides it out.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DIRECTIONS", "sample_directions", "guided_directions", "subspace_basis",
           "difference_estimate", "perturbation_size"]

#: the distributions a direction is drawn from (each with ``E[u u^T] = I``)
DIRECTIONS = ("rademacher", "gaussian", "sphere")


def sample_directions(rng: np.random.Generator, shape, kind: str = "rademacher") -> np.ndarray:
    """Directions of ``shape`` (the last axis is the perturbed vector), float32."""
    if kind == "rademacher":
        return rng.choice(np.array([-1.0, 1.0], np.float32), size=shape)
    z = rng.standard_normal(size=shape).astype(np.float32)
    if kind == "gaussian":
        return z
    if kind == "sphere":
        norm = np.linalg.norm(z, axis=-1, keepdims=True)
        return (z * np.sqrt(shape[-1]) / np.maximum(norm, 1e-12)).astype(np.float32)
    raise ValueError(f"directions={kind!r}: expected one of {DIRECTIONS}")


def subspace_basis(history: np.ndarray, n_kept: int) -> np.ndarray | None:
    """An orthonormal basis ``(n, r)`` of the span of the first ``n_kept`` rows of ``history``
    (``(k, n)``: past estimates), ``r <= n_kept`` (rows that add nothing are dropped); ``None``
    when there are none."""
    rows = np.asarray(history[:n_kept], np.float64)
    rows = rows[np.linalg.norm(rows, axis=1) > 0]
    if not len(rows):
        return None
    q, r = np.linalg.qr(rows.T)
    keep = np.abs(np.diag(r)) > 1e-5 * np.abs(np.diag(r)).max()
    return q[:, keep].astype(np.float32) if keep.any() else None


def guided_directions(rng: np.random.Generator, n_dirs: int, n: int, basis, alpha: float,
                      kind: str = "rademacher") -> np.ndarray:
    """``(n_dirs, n)`` directions with ``E[u u^T] = alpha I + (1 - alpha) n/r U U^T`` (``U`` =
    ``basis``, ``(n, r)``): Guided ES's search distribution scaled by ``n``. Plain directions of
    ``kind`` when ``basis`` is ``None`` or ``alpha == 1``."""
    z = sample_directions(rng, (n_dirs, n), kind)
    if basis is None or alpha >= 1.0:
        return z
    r = basis.shape[1]
    w = rng.standard_normal(size=(n_dirs, r)).astype(np.float32)
    return (np.sqrt(alpha) * z + np.sqrt((1.0 - alpha) * n / r) * w @ basis.T).astype(np.float32)


def difference_estimate(u: np.ndarray, losses: np.ndarray, c: float, base=None) -> np.ndarray:
    """The averaged finite-difference estimate.

    ``u``: ``(n_dirs, ..., n)`` directions; ``losses``: ``(2 n_dirs, ...)`` with ``base=None``
    (antithetic: the first ``n_dirs`` at ``+c u``, the next at ``-c u``), else ``(n_dirs, ...)``
    at ``+c u`` and ``base`` ``(...)`` the loss at ``c = 0`` (one-sided). The leading ``...``
    axes (samples, for per-sample losses) are kept: the result has ``u.shape[1:]``.
    """
    d = u.shape[0]
    if base is None:
        coef = (losses[:d] - losses[d:]) / (2.0 * c)
    else:
        coef = (losses - base[None]) / c
    return np.mean(coef[..., None] * u, axis=0).astype(np.float32)


def perturbation_size(c: float, gamma: float, t: int) -> float:
    """Spall's gain sequence ``c_t = c / (1 + t)^gamma`` (``gamma = 0``: constant; Spall 1998
    recommends 0.101)."""
    return float(c) / (1.0 + float(t)) ** float(gamma)
