"""The surrogate models :func:`pnn.recorded.from_recorded` fits to an apparatus's recorded pairs:
scikit-learn regressors between standardised inputs and standardised targets.

Only :func:`pnn.recorded.from_recorded` imports this module, when it fits a surrogate:
scikit-learn takes about a second to import, which building any other layer need not pay.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeCV
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["REGRESSORS", "make_model", "fit"]


def _mlp(seed: int):
    """A 2x64 tanh network, Adam, early stopping on a tenth of the training pairs."""
    return MLPRegressor(hidden_layer_sizes=(64, 64), activation="tanh", solver="adam",
                        learning_rate_init=3e-3, batch_size=64, max_iter=300, tol=1e-5,
                        n_iter_no_change=15, early_stopping=True, validation_fraction=0.1,
                        random_state=seed)


def _ridge(seed: int):
    """Linear, its regularisation chosen by cross-validation (no randomness)."""
    return RidgeCV(alphas=np.logspace(-6, 3, 19))


def _knn(seed: int):
    """The five nearest recorded drives, weighted by inverse distance (no randomness)."""
    return KNeighborsRegressor(n_neighbors=5, weights="distance")


def _forest(seed: int):
    """200 extremely randomised trees, on one core."""
    return ExtraTreesRegressor(n_estimators=200, random_state=seed, n_jobs=1)


#: the regressor each surrogate name builds from a seed (the names of
#: :data:`pnn.recorded.SURROGATE_MODELS`)
REGRESSORS = {"mlp": _mlp, "ridge": _ridge, "knn": _knn, "forest": _forest}


def make_model(model, seed: int):
    """A fresh, unfitted estimator: for a name of :data:`REGRESSORS`, its regressor between
    standardised inputs and targets; for an estimator, a clone of it (the estimator itself when
    it cannot be cloned). ``model`` is checked by the caller
    (:func:`pnn.recorded.from_recorded`)."""
    if not isinstance(model, str):
        try:
            return clone(model)
        except Exception:  # not a scikit-learn estimator: used as given
            return model
    return TransformedTargetRegressor(regressor=make_pipeline(StandardScaler(),
                                                              REGRESSORS[model](seed)),
                                      transformer=StandardScaler())


def fit(estimator, x: np.ndarray, target: np.ndarray):
    """``estimator.fit(x, target)`` without the convergence warning: the iteration cap is the
    fit's budget, and the held-out report says how good the fit is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(x, target)
    return estimator
