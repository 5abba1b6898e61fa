"""Digital references trained by backpropagation: a digital MLP and a linear classifier.

* ``bp``: a one-hidden-layer tanh MLP whose width is chosen so that its number of trainable
  parameters matches a given budget (:func:`mlp_width_for`), the reference for "what a digital
  network of the same trainable size does". Softmax cross-entropy, AdamW, minibatches, trained
  to convergence: many epochs, early stopping on the validation split (``patience``), the
  state with the best validation accuracy kept.
* ``linear``: multinomial logistic regression fitted to convergence by L-BFGS (scikit-learn's
  ``LogisticRegression``), with the inverse regularisation ``C`` chosen on the validation split
  from a log grid (:class:`LinearConfig`). This is the converged linear reference.

Neither uses a physical layer.
"""

from __future__ import annotations

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.config import ConfigError, param
from pnn.cost import Ledger, adam_flops, update_flops
from pnn.train.common import Progress, logistic_regression
from pnn.train.loop import Algorithm, LoopConfig, Result, fit

__all__ = ["BPConfig", "Config", "LinearConfig", "MLPTrainer", "Linear", "train", "train_linear",
           "mlp_width_for", "MLP"]


@dataclasses.dataclass(frozen=True)
class BPConfig(LoopConfig):
    """n_params: trainable-parameter budget (sets the hidden width); width overrides it.
    weight_decay: decoupled L2 (AdamW), the usual guard against over-fitting small tables."""

    n_params: int = param(1500, integer=True, ge=1, le=10**9)
    width: int | None = param(None, integer=True, ge=1, le=10**7, optional=True)
    epochs: int = param(300, integer=True, ge=1, le=100_000)
    patience: int = param(30, integer=True, ge=0, le=100_000)
    lr: float = param(3e-3, gt=0, le=10, search=("log", 3e-4, 3e-2))
    weight_decay: float = param(1e-4, ge=0, le=10, search=("log", 1e-6, 1e-1))


def mlp_width_for(n_params: int, n_features: int, n_classes: int) -> int:
    """Hidden width h with (n_features + 1) h + (h + 1) C closest to ``n_params``."""
    return max(1, int(round((n_params - n_classes) / (n_features + 1 + n_classes))))


class MLP(eqx.Module):
    layers: list

    def __init__(self, sizes, *, key):
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)]

    def __call__(self, x):
        for lin in self.layers[:-1]:
            x = jnp.tanh(jax.vmap(lin)(x))
        return jax.vmap(self.layers[-1])(x)

    @property
    def n_params(self) -> int:
        return int(sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(self, eqx.is_array))))


class MLPTrainer(Algorithm):
    """Backpropagation through a digital MLP. State: ``model``, ``opt``."""

    def __init__(self, layers, data, config, *, seed, ledger):
        super().__init__([], data, config, seed=seed, ledger=ledger)
        self.width = config.width or mlp_width_for(config.n_params, data.n_features,
                                                   data.n_classes)
        self.opt = optax.adamw(config.lr, weight_decay=config.weight_decay)
        opt = self.opt

        @eqx.filter_jit
        def update(model, state, x, y):
            def loss_fn(m):
                return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
            loss, g = eqx.filter_value_and_grad(loss_fn)(model)
            updates, state = opt.update(g, state, eqx.filter(model, eqx.is_array))
            return eqx.apply_updates(model, updates), state, loss

        self._update = update

    def init(self):
        model = MLP([self.data.n_features, self.width, self.data.n_classes],
                    key=jax.random.PRNGKey(self.seed))
        return {"model": model, "opt": self.opt.init(eqx.filter(model, eqx.is_array))}

    def step(self, state, x, y):
        model, opt_state, loss = self._update(state["model"], state["opt"], jnp.asarray(x),
                                              jnp.asarray(y))
        sizes = [(lin.in_features, lin.out_features) for lin in model.layers]
        self.ledger.add_flops(update_flops(len(y), sizes)  # the input is data: no gradient
                              + adam_flops(model.n_params, weight_decay=True), "trainable update")
        return {"model": model, "opt": opt_state}, float(loss)

    def predict(self, state, x):
        return np.asarray(_argmax_logits(state["model"], jnp.asarray(x)))

    def params(self, state):
        return eqx.filter(state["model"], eqx.is_array)

    def extra(self, state):
        return {"hidden_width": self.width}


@eqx.filter_jit
def _argmax_logits(model, x):
    return jnp.argmax(model(x), axis=1)


def train(layers, data, config: BPConfig = BPConfig(), *, seed: int = 0,
          ledger: Ledger | None = None, progress: Progress | None = None, **kw) -> Result:
    """Digital MLP of (about) ``config.n_params`` trainable parameters; returns ``(record,
    model)``. ``layers`` is ignored: this reference uses no physics (the argument keeps the
    trainers' common signature)."""
    return fit("bp", MLPTrainer, [], data, config, seed=seed, ledger=ledger, progress=progress,
               **kw)


#: the log grid of C searched on validation (inverse L2 strength of the logistic regression)
C_GRID = tuple(float(c) for c in np.logspace(-3, 3, 13))


@dataclasses.dataclass(frozen=True)
class LinearConfig(LoopConfig):
    """The converged linear reference: C is chosen on validation from ``C_GRID`` (``C=None``)
    or fixed. ``max_iter``: L-BFGS iterations (convergence is checked and recorded)."""

    epochs: int = param(1, integer=True, ge=1, le=1)
    batch_size: int = param(1_000_000, integer=True, ge=1, le=10**9)
    C: float | None = param(None, gt=0, le=1e9, optional=True)
    max_iter: int = param(5000, integer=True, ge=10, le=10**7)


class Linear(Algorithm):
    """Multinomial logistic regression by L-BFGS; one "step" fits it on the whole training
    split for every C of the grid and keeps the one with the best validation accuracy.
    State: ``coef`` ``(C, n_features)``, ``intercept`` ``(C,)``, ``C``."""

    def __init__(self, layers, data, config, *, seed, ledger):
        super().__init__([], data, config, seed=seed, ledger=ledger)
        if config.batch_size < len(data.y_train):
            raise ConfigError(f"LinearConfig.batch_size = {config.batch_size}: the linear "
                              f"reference fits the whole training split ({len(data.y_train)} "
                              "samples) at once; leave batch_size at its default")

    def init(self):
        d, C = self.data.n_features, self.data.n_classes
        return {"coef": np.zeros((C, d), np.float64), "intercept": np.zeros(C, np.float64),
                "C": 0.0, "n_iter": 0}

    def _fit(self, x, y, C):
        LogisticRegression, ConvergenceWarning = logistic_regression()
        clf = LogisticRegression(C=C, max_iter=self.config.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            try:
                clf.fit(x, y)
            except ConvergenceWarning as e:
                raise RuntimeError(f"linear reference: L-BFGS did not converge for C={C} in "
                                   f"{self.config.max_iter} iterations; raise max_iter") from e
        n_iter = int(np.max(clf.n_iter_))
        # L-BFGS: about one loss and gradient per iteration, each 2 x (2 n d C) FLOPs
        n, dim = x.shape
        self.ledger.add_flops(n_iter * 4 * n * dim * self.data.n_classes, "L-BFGS fit")
        coef, icpt = clf.coef_, clf.intercept_
        if coef.shape[0] == 1:  # binary: sklearn keeps one row
            coef, icpt = np.vstack([-coef, coef]) / 2, np.concatenate([-icpt, icpt]) / 2
        return {"coef": coef, "intercept": icpt, "C": float(C), "n_iter": n_iter}

    def step(self, state, x, y):
        data = self.data
        x = np.asarray(x, np.float64)
        grid = (self.config.C,) if self.config.C is not None else C_GRID
        has_val = getattr(data, "y_val", None) is not None and len(data.y_val) > 0
        if len(grid) > 1 and not has_val:
            raise ValueError("linear reference: choosing C needs a validation split; load the "
                             "task with val_fraction > 0 or fix LinearConfig.C")
        best, best_acc = None, -1.0
        for C in grid:
            cand = self._fit(x, y, C)
            acc = (float(np.mean(self.predict(cand, data.x_val) == data.y_val)) if has_val
                   else 0.0)
            if acc > best_acc:  # ties: the stronger regularisation (smaller C) is kept
                best, best_acc = cand, acc
        p = np.clip(_softmax(x @ best["coef"].T + best["intercept"]), 1e-12, 1)
        loss = float(-np.mean(np.log(p[np.arange(len(y)), y])))
        return best, loss

    def predict(self, state, x):
        return np.argmax(np.asarray(x, np.float64) @ state["coef"].T + state["intercept"],
                         axis=1)

    def params(self, state):
        return {"coef": state["coef"], "intercept": state["intercept"]}

    def extra(self, state):
        return {"C": state["C"], "lbfgs_iterations": state["n_iter"],
                "C_grid": list(C_GRID) if self.config.C is None else [self.config.C]}


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train_linear(data, config: LinearConfig = LinearConfig(), *, seed: int = 0,
                 ledger: Ledger | None = None, progress: Progress | None = None,
                 **kw) -> Result:
    """The converged linear reference (see :class:`Linear`); returns ``(record, model)``."""
    return fit("linear", Linear, [], data, config, seed=seed, ledger=ledger, progress=progress,
               **kw)


#: the registry's name for this trainer's configuration
Config = BPConfig


def layer_shapes(config, n_features: int, n_classes: int) -> list:
    """A digital reference uses no physical layer."""
    return []
