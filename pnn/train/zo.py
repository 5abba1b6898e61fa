"""Zeroth-order training of the hybrid network, from forward passes only (SPSA and relatives).

The network is :class:`pnn.train.hybrid.HybridNet`: blocks ``h_k = W_k [P_k(d_k); h_{k-1}] + b_k``
with drive ``d_k = to_drive(a_k)``, ``a_k = |h_{k-1}| / ||h_{k-1}||`` (``h_{-1} = x0``), then a
linear read-out. The physics ``P_k`` is only ever queried, never differentiated: the method is
model-free and runs on instruments. What is estimated, and how, is chosen by ``estimate``:

* ``"drives"`` (default): **the physics' input-output sensitivity is the only unknown**, so only
  it is estimated. Every gradient path from a parameter to the loss either crosses no physical
  layer (computed exactly, with the measurements held as data) or crosses a first physical layer
  ``P_k`` through its direction ``a_k``; the sum of the latter is ``J_k^T dL/da_k``, with
  ``J_k`` the exact digital Jacobian of ``a_k`` and ``dL/da_k`` the total derivative of the loss
  with respect to that drive. ``dL/da_k`` is estimated *per sample* (each sample's loss depends
  only on its own drive) by perturbing the drive: ``a_k + c u``, ``u`` ``(n_dirs, batch, n_in)``,
  the downstream blocks re-queried, ``g_i = mean_j (l_i(+c u_ij) - l_i(-c u_ij)) / (2c) u_ij``
  (``l_i``: sample i's cross-entropy, ``/ batch`` for the mean loss). The gradient is then
  ``grad [ L(theta; m fixed) + sum_k <stop_grad(g_k), a_k(theta)> ]``. Block 0's drive does not
  depend on any parameter, so ``k >= 1``; the read-out and the last block (no physics after
  them) get their exact gradient.
* ``"upstream"``: SPSA over the parameters upstream of a physical layer (blocks ``0 .. K-2``),
  the exact gradient for the rest (last block and read-out).
* ``"all"``: plain SPSA over every trainable parameter (the method before these options; the
  value of configs stored without ``estimate``).

For the parameter perturbations (``upstream``, ``all``), directions are drawn over the
flattened perturbed parameters ``theta_P`` (``n`` of them) and the estimate is
``mean_j (L(theta_P + c u_j) - L(theta_P - c u_j)) / (2c) u_j`` (Spall 1992). With
``subspace = k > 0`` the directions come from Guided ES's search distribution (see
:mod:`pnn.train.zo_estimators`), its guiding subspace spanned by the last ``k`` estimates.

Options shared by every estimator: ``n_dirs`` directions averaged per step; ``antithetic``
(central differences, ``L(+cu) - L(-cu)``) or one-sided (``L(+cu) - L(0)`` against the
unperturbed pass that is measured anyway); ``directions`` Rademacher, Gaussian or "sphere"
(Gaussian rescaled to norm ``sqrt(n)``), each with ``E[u u^T] = I``; a perturbation size
``c_t = c / (1 + t)^c_decay`` (Spall's gain sequence; ``t`` the step); a learning rate constant
or cosine-decayed to 5 % over the run (``lr_schedule``); Adam.

**Physical queries per step** (batch ``B``, ``K`` blocks, ``M = n_dirs`` one-sided or
``2 n_dirs`` antithetic), each counted by the ledger as it is made: the unperturbed pass
``K B`` (only block 0's ``B`` for ``all`` with ``antithetic``, which needs no unperturbed loss);
then the perturbed passes re-query only the blocks whose drive changes: ``M B (K - 1)`` for
``all`` and ``upstream`` (0 for ``upstream`` with one block: nothing is perturbed),
``M B K (K - 1) / 2`` for ``drives`` (drive ``k`` perturbed, blocks ``k .. K-1`` re-queried).
:meth:`SPSA.queries_per_step` is this formula; a test checks it against the ledger. The
perturbed passes of one step are sent to each physical layer as one batch (``M B`` drives), and
their digital parts are vmapped over the ``M`` perturbations.

``query_budget > 0``: a step that would take the run's training queries (calibration included)
past the budget is not taken: the run loop ends the run after that epoch's validation
measurement (:meth:`SPSA.finished`; ``stopped_early`` in the record), and the record says at
which step the budget was reached.

Departures from the papers: Spall's SPSA uses plain gain sequences ``a_t`` for the step; we feed
the estimate to Adam (optionally cosine-decayed), and keep Spall's ``c_t``. The per-sample drive
perturbation is the "activity perturbation" of forward gradients (Baydin et al., "Gradients
without backpropagation", arXiv:2202.08587; Ren, Kornblith, Liao and Hinton, "Scaling forward
gradient with local losses", ICLR 2023, arXiv:2210.03310: perturbing activations rather than
weights lowers the variance by the ratio of their dimensions) applied only at the inputs of the
physical layers, with finite differences in place of forward-mode derivatives (the physics has
none) and exact backpropagation through every digital part instead of Ren et al.'s local losses.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.config import param
from pnn.cost import Ledger, adam_flops, update_flops
from pnn.network import direction, to_drive
from pnn.train.common import Progress
from pnn.train.hybrid import HybridAlgorithm, HybridConfig, encode, hybrid_layer_shapes, \
    physical_forward
from pnn.train.loop import Result, fit
from pnn.train.zo_estimators import DIRECTIONS, difference_estimate, guided_directions, \
    perturbation_size, sample_directions, subspace_basis

__all__ = ["Config", "SPSA", "train", "layer_shapes", "ESTIMATES", "LR_SCHEDULES"]

layer_shapes = hybrid_layer_shapes

#: what is perturbed (see the module docstring)
ESTIMATES = ("drives", "upstream", "all")
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class Config(HybridConfig):
    """c: perturbation size (of a drive direction's entries, or of each parameter); n_dirs:
    directions averaged per step; estimate, antithetic, directions, c_decay, lr_schedule,
    subspace (rank of the guiding subspace, 0: none), subspace_mix (Guided ES's alpha: the
    share of the search variance in the full space) and query_budget (training physical queries,
    0: no limit): see :mod:`pnn.train.zo`."""

    lr: float = param(1e-2, gt=0, le=10, search=("log", 1e-3, 1e-1))
    c: float = param(0.02, gt=0, le=10, search=("log", 1e-3, 1e-1))
    n_dirs: int = param(1, integer=True, ge=1, le=10_000, search=("int", 1, 8))
    estimate: str = param("drives", choices=ESTIMATES, legacy="all")
    antithetic: bool = param(True, choices=(True, False), search=("choice", [True, False]))
    directions: str = param("rademacher", choices=DIRECTIONS)
    c_decay: float = param(0.0, ge=0, le=2)
    lr_schedule: str = param("cosine", choices=LR_SCHEDULES, legacy="constant")
    subspace: int = param(0, integer=True, ge=0, le=1000)
    subspace_mix: float = param(0.5, gt=0, le=1)
    query_budget: int = param(0, integer=True, ge=0, le=10**15)


def _per_sample_ce(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


_to_drive = jax.jit(to_drive)
_direction = jax.jit(direction)


@eqx.filter_jit
def _block_pass(pstack, static, k, m, h):
    """Block k of each of ``M`` parameter sets (leading axis of ``pstack``) on its own batch."""
    return jax.vmap(lambda p, m, h: eqx.combine(p, static).blocks[k](m, h))(pstack, m, h)


@eqx.filter_jit
def _pass_losses(pstack, static, x0, h, y):
    """Per-sample cross-entropy ``(M, B)`` of each parameter set's read-out."""
    return jax.vmap(lambda p, h: _per_sample_ce(eqx.combine(p, static).logits(x0, h), y))(
        pstack, h)


@eqx.filter_jit
def surrogate_gradient(params, static, x0, ms, ghats, y):
    """The gradient of ``L(theta; m fixed) + sum_k <g_k, a_k(theta)>`` (``ghats``: the
    estimates ``g_k`` of ``dL/da_k`` for blocks ``1 .. len(ghats)``; none: the exact gradient
    of the loss with every measurement held as data), and that loss."""
    def objective(p):
        net = eqx.combine(p, static)
        drives = []

        def measure(k, a):
            drives.append(a)
            return ms[k]
        loss = _per_sample_ce(net.forward(x0, measure), y).mean()
        extra = sum(jnp.sum(jax.lax.stop_gradient(g) * a) for g, a in zip(ghats, drives[1:]))
        return loss + extra, loss
    grads, loss = jax.grad(objective, has_aux=True)(params)
    return grads, loss


class SPSA(HybridAlgorithm):
    """Zeroth-order training for the run loop. State as :class:`HybridAlgorithm`, plus ``t``
    (steps taken), ``budget_step`` (the step at which the query budget stopped training, 0
    if not), ``last_loss`` and, with ``subspace``, ``subspace`` (the last estimates, ``(k, n)``)
    and ``n_subspace`` (how many of its rows are filled)."""

    def __init__(self, layers, data, config, **kw):
        super().__init__(layers, data, config, **kw)
        self._adam = None
        self.budget_step = 0

    # ---------------------------------------------------------------- set-up
    def horizon(self) -> int:
        """Steps the learning-rate schedule spans: the run's, or fewer under a query budget."""
        cfg = self.config
        n_train = len(self.data.y_train)
        steps = cfg.epochs * -(-n_train // cfg.batch_size)
        if cfg.query_budget:
            calib = len(self.layers) * min(cfg.batch_size, n_train)
            per = self.queries_per_step(cfg.batch_size)
            steps = min(steps, max(1, (cfg.query_budget - calib) // max(per, 1)))
        return max(int(steps), 1)

    def make_optimizer(self):
        cfg = self.config
        if cfg.lr_schedule == "cosine":
            return optax.adam(optax.cosine_decay_schedule(cfg.lr, self.horizon(), alpha=0.05))
        return optax.adam(cfg.lr)

    def init(self) -> dict:
        state = super().init()
        state.update(t=0, budget_step=0, last_loss=0.0)
        if self.config.subspace and self.config.estimate != "drives":
            n = sum(int(np.size(v)) for v, p in zip(*self._leaves(state["params"])) if p)
            state.update(subspace=np.zeros((self.config.subspace, n), np.float32), n_subspace=0)
        return state

    def _leaves(self, params):
        """The trainable leaves and, for each, whether a parameter perturbation covers it
        (``all``: every one; ``upstream``: those of blocks ``0 .. K-2``)."""
        leaves = jax.tree_util.tree_leaves(params)
        if self.config.estimate == "all":
            return leaves, [True] * len(leaves)
        upstream = {id(v) for b in params.blocks[:len(self.layers) - 1]
                    for v in jax.tree_util.tree_leaves(b)}
        return leaves, [id(v) in upstream for v in leaves]

    # ---------------------------------------------------------------- costs
    def queries_per_step(self, batch: int) -> int:
        """Physical queries of one step on a batch of ``batch`` (the module docstring's
        formula)."""
        cfg, K, B = self.config, len(self.layers), int(batch)
        M = cfg.n_dirs * (2 if cfg.antithetic else 1)
        if cfg.estimate == "drives":
            return K * B + M * B * K * (K - 1) // 2
        base = B if (cfg.estimate == "all" and cfg.antithetic) else K * B
        perturbed = cfg.estimate == "all" or K > 1
        return base + (M * B * (K - 1) if perturbed else 0)

    def train_queries(self) -> int:
        return int(self.ledger.queries_by_purpose.get("train", 0))

    # ---------------------------------------------------------------- the passes
    def measure_block(self, net, k: int, a, purpose: str = "train"):
        """Query block k's layer with directions ``a`` ``(..., n_in)``; measurements with the
        same leading axes."""
        spec = self.layers[k].spec
        drive = np.asarray(_to_drive(a, spec.lo, spec.hi, net.gain))
        m = self.ledger.query(self.layers[k], drive.reshape(-1, drive.shape[-1]), purpose)
        return np.asarray(m).reshape(*drive.shape[:-1], -1)

    def perturbed_losses(self, net, pstack, x0, ms, y, start: int, drive=None):
        """Per-sample losses ``(M, B)`` of ``M`` passes (parameter sets ``pstack``): blocks
        before ``start`` reuse the unperturbed measurements ``ms``; from ``start`` on each block
        is queried, all ``M`` passes in one batch, block ``start`` with ``drive`` when given."""
        M, B = jax.tree_util.tree_leaves(pstack)[0].shape[0], x0.shape[0]
        h = np.broadcast_to(np.asarray(x0), (M, *x0.shape))
        for k in range(len(self.layers)):
            if k < start:
                m = np.broadcast_to(np.asarray(ms[k]), (M, *ms[k].shape))
            else:
                a = drive if (drive is not None and k == start) else _direction(h)
                m = self.measure_block(net, k, a)
            h = _block_pass(pstack, self.static, k, m, h)
        self.ledger.add_flops(M * net.forward_flops(B), "trainable forward")
        return np.asarray(_pass_losses(pstack, self.static, x0, h, y))

    # ---------------------------------------------------------------- the estimators
    def drive_gradient(self, state, c: float, x0, y):
        """``estimate="drives"``: per-sample estimates of ``dL/da_k``, then the surrogate's
        gradient. Returns ``(grads, loss, state)``."""
        cfg, net, rng = self.config, self.net(state), state["rng"]
        logits, ms, ds = physical_forward(net, self.layers, x0, self.ledger)
        base = np.asarray(_per_sample_ce(logits, y))
        B = x0.shape[0]
        signs = (1.0, -1.0) if cfg.antithetic else (1.0,)
        pstack = jax.tree_util.tree_map(
            lambda v: np.broadcast_to(np.asarray(v), (len(signs) * cfg.n_dirs, *v.shape)),
            state["params"])
        ghats = []
        for k in range(1, len(self.layers)):
            u = sample_directions(rng, (cfg.n_dirs, B, ds[k].shape[-1]), cfg.directions)
            a = np.concatenate([np.asarray(ds[k])[None] + s * c * u for s in signs])
            losses = self.perturbed_losses(net, pstack, x0, ms, y, k, drive=a)
            ghats.append(difference_estimate(u, losses, c, None if cfg.antithetic else base) / B)
        self.ledger.add_flops((4 + 2 * len(signs)) * cfg.n_dirs * sum(
            int(np.size(g)) for g in ghats), "perturbations and estimate")
        grads, _ = surrogate_gradient(state["params"], self.static, x0, ms, ghats, y)
        self.ledger.add_flops(self.surrogate_flops(net, B), "digital gradient")
        return grads, float(base.mean()), state

    def parameter_gradient(self, state, c: float, x0, y):
        """``estimate="upstream"`` or ``"all"``: SPSA over the perturbed parameters (optionally
        guided by the subspace of past estimates), the exact gradient for the rest. Returns
        ``(grads, loss, state)``."""
        cfg, net, rng, params = self.config, self.net(state), state["rng"], state["params"]
        leaves, pert = self._leaves(params)
        treedef = jax.tree_util.tree_structure(params)
        base_needed = not (cfg.estimate == "all" and cfg.antithetic)
        if base_needed:
            logits, ms, _ = physical_forward(net, self.layers, x0, self.ledger)
            base = np.asarray(_per_sample_ce(logits, y))
        else:
            ms = [self.measure_block(net, 0, _direction(x0))]
        flat = np.concatenate([np.ravel(v) for v, p in zip(leaves, pert) if p] or [np.zeros(0)])
        n = int(flat.size)
        grads = list(leaves)
        loss = float(base.mean()) if base_needed else float("nan")
        if n:
            basis = (subspace_basis(state["subspace"], state["n_subspace"])
                     if "subspace" in state else None)
            u = guided_directions(rng, cfg.n_dirs, n, basis, cfg.subspace_mix, cfg.directions)
            signs = (1.0, -1.0) if cfg.antithetic else (1.0,)
            pstack = self._stack(leaves, pert, treedef, np.concatenate(
                [flat[None] + s * c * u for s in signs]).astype(np.float32))
            losses = self.perturbed_losses(net, pstack, x0, ms, y, 1).mean(axis=1)
            g = difference_estimate(u, losses, c, base.mean() if not cfg.antithetic else None)
            self.ledger.add_flops(6 * len(signs) * cfg.n_dirs * n, "perturbations and estimate")
            if not base_needed:
                loss = float(losses.mean())
            grads = self._unflatten_into(grads, pert, g)
            if "subspace" in state:
                state = {**state, "subspace": np.roll(state["subspace"], 1, axis=0),
                         "n_subspace": min(state["n_subspace"] + 1, cfg.subspace)}
                state["subspace"][0] = g
        if not all(pert):
            exact, _ = surrogate_gradient(params, self.static, x0, ms, [], y)
            exact = jax.tree_util.tree_leaves(exact)
            grads = [e if not p else g for g, e, p in zip(grads, exact, pert)]
            self.ledger.add_flops(self.surrogate_flops(net, x0.shape[0]), "digital gradient")
        return jax.tree_util.tree_unflatten(treedef, grads), loss, state

    @staticmethod
    def _stack(leaves, pert, treedef, flats):
        """``M`` parameter sets: the perturbed leaves from the rows of ``flats`` ``(M, n)``, the
        others broadcast."""
        out, i, M = [], 0, flats.shape[0]
        for v, p in zip(leaves, pert):
            if p:
                out.append(flats[:, i:i + v.size].reshape(M, *v.shape))
                i += v.size
            else:
                out.append(np.broadcast_to(np.asarray(v), (M, *v.shape)))
        return jax.tree_util.tree_unflatten(treedef, out)

    @staticmethod
    def _unflatten_into(leaves, pert, g):
        out, i = [], 0
        for v, p in zip(leaves, pert):
            if p:
                out.append(np.asarray(g[i:i + v.size]).reshape(v.shape))
                i += v.size
            else:
                out.append(v)
        return out

    def surrogate_flops(self, net, batch: int) -> int:
        """Forward and backward of the digital layers (:func:`pnn.cost.update_flops`; block 0's
        input is data)."""
        sizes = [(int(b.W.shape[1]), int(b.W.shape[0])) for b in net.blocks]
        sizes.append((int(net.head.in_features), int(net.head.out_features)))
        return update_flops(batch, sizes)

    # ---------------------------------------------------------------- the step
    def apply(self, params, opt_state, grads):
        if self._adam is None:
            opt = self.opt

            @eqx.filter_jit
            def update(params, opt_state, grads):
                upd, opt_state = opt.update(grads, opt_state, params)
                return eqx.apply_updates(params, upd), opt_state
            self._adam = update
        return self._adam(params, opt_state, grads)

    def step(self, state, x, y):
        cfg = self.config
        if state["budget_step"] or (cfg.query_budget and self.train_queries()
                                    + self.queries_per_step(len(y)) > cfg.query_budget):
            self.budget_step = state["budget_step"] or state["t"] + 1
            return {**state, "budget_step": self.budget_step}, state["last_loss"]
        c = perturbation_size(cfg.c, cfg.c_decay, state["t"])
        x0, yj = encode(x), jnp.asarray(y)
        estimate = self.drive_gradient if cfg.estimate == "drives" else self.parameter_gradient
        grads, loss, state = estimate(state, c, x0, yj)
        params, opt_state = self.apply(state["params"], state["opt"], grads)
        self.ledger.add_flops(adam_flops(self.n_params(state),
                                         lr_as_data=cfg.lr_schedule != "constant"), "optimiser")
        return ({**state, "params": params, "opt": opt_state, "t": state["t"] + 1,
                 "last_loss": loss}, loss)

    def finished(self, state) -> bool:
        """The query budget is spent: the run loop ends the run after this step."""
        return bool(state["budget_step"])

    def extra(self, state) -> dict:
        """``query_budget_step``: the step at which the budget stopped training (0: it did
        not), read from the run's last state, not the selected one."""
        return {"query_budget_step": int(max(state.get("budget_step", 0), self.budget_step))}


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None, on_step=None, **kw) -> Result:
    """Zeroth-order training; returns ``(record, model)``."""
    return fit("zo", SPSA, layers, data, config, seed=seed, ledger=ledger, progress=progress,
               on_step=on_step, **kw)
