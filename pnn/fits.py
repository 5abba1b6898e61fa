r"""The analysis of :mod:`pnn.characterize`, on arrays only: held-out R² of a linear and of a
degree-2 fit (:func:`fit_r2`) and the effective rank of a batch of responses
(:func:`effective_rank`). The definitions are in :mod:`pnn.characterize`'s docstring. NumPy and
SciPy only: the run loop (``physics_fits`` in every record) and ``pnn characterize`` both use it.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
from jaxtyping import Float

__all__ = ["fit_r2", "effective_rank", "RIDGE", "MAX_FEATURES", "FIT_KINDS"]

#: the two fits of :func:`pnn.characterize.fit_r2`, in the order tables show them
FIT_KINDS = ("linear", "quadratic")

#: the ridge of every fit, relative to the mean diagonal of the normal matrix (features
#: standardised on the training part, so that diagonal is the number of training samples)
RIDGE = 1e-6
#: the most features a degree-2 fit uses (constant, linear and products); beyond it a random
#: subset of the products is used (every square first), and the result says so
MAX_FEATURES = 2000

# ----------------------------------------------------------------------------- analysis
def _as_2d(a, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{what} must be a 2-D array (samples, channels), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} hold {int((~np.isfinite(a)).sum())} non-finite value(s); "
                         f"remove those samples first")
    return a


def _standardise(train: np.ndarray, test: np.ndarray):
    """Columns standardised with the training part's mean and std; constant columns (a drive
    channel that never changes, such as a padded one) are dropped."""
    mu, sd = train.mean(0), train.std(0)
    keep = sd > 1e-10 * np.maximum(np.abs(train).max(0), 1e-300)
    return (train[:, keep] - mu[keep]) / sd[keep], (test[:, keep] - mu[keep]) / sd[keep]


def _ridge_r2(f_train, f_test, y_train, y_test) -> float:
    """Held-out R² of a ridge fit on centred features (intercept: the training mean, so the
    baseline is the training mean as well); NaN when the held-out responses do not vary."""
    y_bar = y_train.mean(0)
    sst = float(((y_test - y_bar) ** 2).sum())
    if f_train.shape[1]:
        g = f_train.T @ f_train
        g[np.diag_indices_from(g)] += RIDGE * max(float(np.trace(g)) / len(g), 1e-300)
        rhs = f_train.T @ (y_train - y_bar)
        try:
            w = scipy.linalg.cho_solve(scipy.linalg.cho_factor(g), rhs)
        except np.linalg.LinAlgError:  # pragma: no cover - the ridge keeps g positive definite
            w = np.linalg.lstsq(g, rhs, rcond=None)[0]
        pred = y_bar + f_test @ w
    else:
        pred = np.broadcast_to(y_bar, y_test.shape)
    sse = float(((y_test - pred) ** 2).sum())
    scale = float((y_test ** 2).sum())
    if sst <= 1e-24 * max(scale, 1e-300):
        return float("nan")
    return 1.0 - sse / sst


def _products(p: int, n_train: int, rng):
    """The index pairs ``(i, k)``, ``i <= k``, of the degree-2 fit's products; past
    ``MAX_FEATURES`` features, every square and a random subset of the cross products, at most
    ``MAX_FEATURES`` features and half the training samples. Returns ``(i, k, description,
    note or None)``."""
    i, k = np.triu_indices(p)
    n_products = len(i)
    m = min(MAX_FEATURES, n_train // 2) - 1 - p
    if 1 + p + n_products <= MAX_FEATURES or m < p:  # all of them (or too few samples: NaN)
        return i, k, f"all {n_products}", None
    squares, cross = np.flatnonzero(i == k), np.flatnonzero(i != k)
    pick = np.sort(np.concatenate([squares, rng.choice(cross, m - p, replace=False)]))
    return (i[pick], k[pick], f"{m} of {n_products} (every square, random cross products)",
            f"a random {m} of the {n_products} products (at most {MAX_FEATURES} features and "
            f"half the training samples): it misses what the other products would explain")


def fit_r2(drives: Float[np.ndarray, "n n_in"], measurements: Float[np.ndarray, "n n_out"], *,
           holdout: float = 0.3, seed: int = 0) -> dict:
    """Held-out R² of an affine and of a degree-2 least-squares fit from drives to responses.

    The pairs are split at random (``seed``) into a training part and a held-out part
    (``holdout`` of them, at least 2); features are standardised on the training part (constant
    drive channels dropped), the degree-2 features are every product of two standardised drives
    (squares included), standardised in turn; each fit is a ridge regression with
    ``RIDGE`` (1e-6) times the mean diagonal of the normal matrix, so that it stays well posed
    when there are about as many features as training samples. R² pools the channels:
    ``1 - sum SSE / sum SST``, SST taken about the training mean (see the module docstring).

    When a fit has more features than training samples it is not made: its R² is NaN and
    ``linear_note`` / ``quadratic_note`` says how many samples it needs. With more than
    ``MAX_FEATURES`` (2,000) features, the degree-2 fit uses every square and a random subset
    of the cross products, at most ``MAX_FEATURES`` features and half the training samples
    (``products`` and ``quadratic_note`` say so). A degree-2 R² below the linear one (which it
    contains) is over-fitting or noise, and a note says so.

    Args:
        drives: ``(n, n_in)``. measurements: ``(n, n_out)``, row ``i`` the response to drive ``i``.

    Returns: ``{"linear", "quadratic", "n_samples", "n_train", "n_test", "n_features_linear",
    "n_features_quadratic", "products", "holdout", "seed", "baseline", "ridge"}`` (and the notes).

    Raises:
        ValueError: arrays not 2-D, of different lengths, non-finite, too few samples to hold
            any out, or ``holdout`` outside (0, 1).
    """
    x = _as_2d(drives, "fit_r2: drives")
    y = _as_2d(measurements, "fit_r2: measurements")
    if len(x) != len(y):
        raise ValueError(f"fit_r2: {len(x)} drives but {len(y)} measurements; give one "
                         f"measurement row per drive row")
    if isinstance(holdout, bool) or not 0 < float(holdout) < 1:
        raise ValueError(f"fit_r2: holdout = {holdout!r}; expected a fraction in (0, 1), e.g. 0.3")
    n = len(x)
    n_test = max(2, int(round(holdout * n)))
    n_train = n - n_test
    if n_train < 2:
        raise ValueError(f"fit_r2: {n} samples are too few to fit on some and score on "
                         f"{n_test} others; give at least {n_test + 2}")
    rng = np.random.default_rng([int(seed), 41])
    perm = rng.permutation(n)
    tr, te = perm[n_test:], perm[:n_test]
    z_tr, z_te = _standardise(x[tr], x[te])
    p = z_tr.shape[1]
    out: dict = {"n_samples": n, "n_train": n_train, "n_test": n_test, "holdout": float(holdout),
                 "seed": int(seed), "baseline": "training mean",
                 "ridge": f"{RIDGE:g} x mean diagonal of the normal matrix",
                 "n_features_linear": 1 + p}
    if 1 + p > n_train:
        out["linear"] = float("nan")
        out["linear_note"] = (f"not fitted: {1 + p} features need at least {1 + p} training "
                              f"samples, {n_train} given; measure more drives")
    else:
        out["linear"] = _ridge_r2(z_tr, z_te, y[tr], y[te])
    _quadratic(out, z_tr, z_te, y[tr], y[te], holdout, rng)
    for key in FIT_KINDS:
        if math.isnan(out[key]) and f"{key}_note" not in out:
            out[f"{key}_note"] = "the held-out responses do not vary: R² is undefined"
    return out


def _quadratic(out: dict, z_tr, z_te, y_tr, y_te, holdout: float, rng) -> None:
    """The degree-2 fit of :func:`fit_r2` on standardised drives ``z``: adds ``quadratic``,
    ``products``, ``n_features_quadratic`` and any ``quadratic_note`` to ``out`` (which holds
    the linear fit's R² already)."""
    n_train, p = z_tr.shape
    i, k, out["products"], note = _products(p, n_train, rng)
    notes = [note] if note else []
    n_quad = 1 + p + len(i)
    out["n_features_quadratic"] = n_quad
    if n_quad > n_train:
        out["quadratic"] = float("nan")
        need = n_quad if n_quad <= MAX_FEATURES else 2 * (1 + 2 * p)
        notes.insert(0, f"not fitted: {n_quad} features need at least {need} training samples, "
                        f"{n_train} given; measure at least "
                        f"{int(math.ceil(need / (1 - holdout)))} drives")
    else:
        q_tr, q_te = _standardise(z_tr[:, i] * z_tr[:, k], z_te[:, i] * z_te[:, k])
        out["quadratic"] = _ridge_r2(np.hstack([z_tr, q_tr]), np.hstack([z_te, q_te]), y_tr,
                                     y_te)
        if out["quadratic"] < out["linear"] - 0.01:
            notes.append("the degree-2 fit, which contains the linear one, scores below it on "
                         "the held-out drives: it over-fits (too few drives per feature) or "
                         "noise dominates; it does not measure the nonlinearity here: measure "
                         "more drives")
    if notes:
        out["quadratic_note"] = "; ".join(notes)


def effective_rank(measurements: Float[np.ndarray, "n n_out"], *,
                   threshold: float = 0.99) -> dict:
    """How many distinct features the responses carry (see the module docstring).

    Args:
        measurements: ``(n, n_out)`` responses, ``n >= 2``.
        threshold: the fraction of the variance ``n_components`` must hold (default 99 %).

    Returns: ``{"participation_ratio", "entropy_rank", "n_components", "threshold",
    "explained_variance" (per component, largest first), "n_samples", "n_channels"}``; for
    responses that do not vary, the ranks are 0 and ``note`` says so.

    Raises:
        ValueError: not a 2-D finite array of at least 2 rows, or a threshold outside (0, 1].
    """
    y = _as_2d(measurements, "effective_rank: measurements")
    if len(y) < 2:
        raise ValueError("effective_rank: needs at least 2 responses to have a covariance")
    if not 0 < threshold <= 1:
        raise ValueError(f"effective_rank: threshold = {threshold!r}; expected a fraction in "
                         f"(0, 1], e.g. 0.99")
    s = np.linalg.svd(y - y.mean(0), compute_uv=False)
    lam = s ** 2 / (len(y) - 1)
    out = {"n_samples": len(y), "n_channels": y.shape[1], "threshold": float(threshold)}
    total = float(lam.sum())
    if total <= 1e-30 * max(float((y ** 2).mean()), 1e-300) or s[0] == 0:
        return {**out, "participation_ratio": 0.0, "entropy_rank": 0.0, "n_components": 0,
                "explained_variance": [0.0] * len(lam),
                "note": "the responses do not vary with the drive: no features"}
    frac = lam / total
    p = s / s.sum()
    p = p[p > 0]
    cum = np.cumsum(frac)
    return {**out, "participation_ratio": float(total ** 2 / (lam ** 2).sum()),
            "entropy_rank": float(np.exp(-(p * np.log(p)).sum())),
            "n_components": int(np.searchsorted(cum, threshold * (1 - 1e-12)) + 1),
            "explained_variance": [float(v) for v in frac]}
