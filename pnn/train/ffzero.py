"""FFzero: layer-local prototype losses minimised by forward-only directional derivatives.

Paper: B. Ketelaar, F. Braun, R. Norte, S. Kumar, S. Tan & Y. Guo, "Local learning for stable
backpropagation-free neural network training towards physical learning" (arXiv:2603.24790, 2026).
Only the abstract of the paper could be read here; the equations below are those of the authors'
public code (github.com/mmc-group/FFzero-local-learning: ``README.md``, ``core/core.py``,
``core/solver.py``, ``core/core_onn.py``), re-derived, not copied. The abstract names the three
parts: layer-wise local learning, prototype-based representations, and directional-derivative
optimisation through forward evaluations only.

The network is :class:`pnn.train.hybrid.HybridNet`: blocks ``h_k = W_k z_k + b_k`` with
``z_k = [cal_k P_k(d_k); s(h_{k-1})]`` (the measurement of the physical layer ``P_k`` driven by
the direction ``d_k`` of ``h_{k-1}``, beside the bypass ``s``). Each step, for a minibatch of ``n``:

1. **Forward, measured.** The physical layers are queried (``K * n`` queries); their outputs are
   then data. Nothing is differentiated through them and no model of them is used.
2. **Prototypes.** Block k owns ``C`` fixed unit prototypes ``R_k`` ``(C, width_k)``: the vertices
   of a regular simplex (``r_i . r_j = -1/(C-1)``), randomly rotated (Haar-distributed orthogonal
   matrix), drawn once from the run's seed alone. The block's similarities are
   ``s = (h_k / ||h_k||) R_k^T`` ``(n, C)``.
3. **Local loss** of block k alone (``loss``): ``"margin"`` (the authors' MLP/CNN loss, margin
   ``m`` = 0.3) ``mean_i sum_{j != y_i} max(0, m + s_ij - s_iy_i)``, or ``"cosine"`` (their
   photonic network's) ``mean_i (1 - s_iy_i)``.
4. **Directional derivatives** (``estimator="directional"``, FFzero): for ``n_dirs`` random unit
   directions ``u`` over the block's ``D_k`` parameters ``theta_k = (W_k, b_k)``, the central
   difference ``(L(theta + eps u) - L(theta - eps u)) / (2 eps)`` from two forward evaluations,
   and the estimate ``g_k = D_k * mean_u[that * u]`` (``E[D u u^T] = I``: unbiased for a smooth
   loss as ``eps -> 0``). ``estimator="exact"`` takes the local loss's exact gradient instead (the
   authors' FF+AD ablation; possible here because block k's map is digital).
5. One optimiser step (``optimizer``: ``"sgd"`` as the authors', or Adam) on every block.
6. **Prediction** (``readout="vote"``, the authors'): each block predicts ``argmax_c s_c``; the
   class with most votes wins, ties to the class whose voters sit deeper (larger sum of 1-based
   block indices), then to the smaller class index. ``readout="linear"`` (a lever of ours) trains
   :class:`HybridNet`'s linear read-out on the last block's output by its exact softmax
   cross-entropy gradient (digital) and predicts its argmax; the blocks still learn only from
   their local losses.

Every block's update uses only its own measured input ``z_k`` (and the labels): a layer with no
gradient at all, an instrument, trains the same way.

Departures from the paper (its code):

* **Where the perturbed evaluations happen.** In the authors' photonic network the trained
  parameters are the mesh phases, so each perturbed evaluation is a physical one. Here the physics
  has no trained parameters: the trained ones are the digital ``W_k, b_k`` after it, and the
  perturbed evaluations re-run block k's digital map on the measured ``z_k`` (FLOPs, no query).
  What stays is the forward-only estimator and the layer-local, prototype loss.
* **All blocks every step.** The authors train layer 1 for every epoch, then layer 2 on its
  outputs, and so on; the run loop (:func:`pnn.train.loop.fit`) steps every block on each
  minibatch (each still from its own loss), so that all methods query the physics alike.
* **Mean over the batch.** The authors' margin loss sums over the batch (their photonic loss
  averages); ours averages, so the learning rate does not scale with the batch size (their
  ``lr`` = 1e-3 on a batch of 256 is about 0.26 here). The margin sum leaves out ``j = y``, a
  constant ``m`` in theirs. Their step ``lr * D * mean(...)`` is ours with ``optimizer="sgd"``.
* **One prototype set per block** over the block's whole output (their CNN keeps one per
  channel); the block width must be at least the number of classes (a simplex of ``C``
  vertices needs ``C - 1`` dimensions; as theirs, we ask ``C <= width``).
* **Directions** are Gaussian, normalised, drawn from the run's generator (checkpointed); theirs
  from the framework's global generator. Adam and the linear read-out are levers of ours.

Cost: the forward pass (:func:`pnn.train.hybrid.physical_forward`), then per block the loss and,
per direction, two evaluations of the block's map and loss plus the vector work on ``theta``
(or, with ``"exact"``, the block's forward and weight gradient and the loss's gradient), the
read-out's gradient with ``"linear"``, and the optimiser.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.config import param
from pnn.cost import Ledger, adam_flops, dense_flops, update_flops
from pnn.train.common import Progress
from pnn.train.hybrid import HybridAlgorithm, HybridConfig, HybridNet, encode, \
    hybrid_layer_shapes, physical_forward
from pnn.train.loop import Result, fit

__all__ = ["Config", "FFzero", "train", "layer_shapes", "simplex_prototypes", "similarities",
           "prototype_loss", "directional_gradient", "vote"]

layer_shapes = hybrid_layer_shapes

#: second word of the seed of the prototype generator (apart from the minibatch generator's)
PROTOTYPE_STREAM = 71


@dataclasses.dataclass(frozen=True)
class Config(HybridConfig):
    """FFzero's hyper-parameters (plus the hybrid network's and the run loop's).

    lr: the optimiser's rate (the authors': 1e-3 on a loss summed over a batch of 256, about
        0.26 on our mean; 0.3 did better than 0.1 on the vowels' validation split).
    loss: ``"margin"`` (the authors' MLP loss) or ``"cosine"`` (their photonic network's).
    margin: the margin ``m`` of the margin loss (the authors': 0.3).
    estimator: ``"directional"`` (FFzero: central differences along random directions) or
        ``"exact"`` (the local loss's exact gradient: the authors' FF+AD ablation).
    eps: the central difference's step along a unit direction (the authors': 1e-3).
    n_dirs: random directions averaged per block per step (the authors': 1; here 64, because
        they cost no physical query, and with 1 a 10-epoch run on vowels stays near 30 %).
    optimizer: ``"sgd"`` (the authors') or ``"adam"``.
    readout: ``"vote"`` (the authors': each block's nearest prototype votes) or ``"linear"``
        (a linear read-out of the last block, trained by its exact gradient).
    """

    lr: float = param(0.3, gt=0, le=10, search=("log", 1e-2, 1.0))
    loss: str = param("margin", choices=("margin", "cosine"))
    margin: float = param(0.3, gt=0, le=2, search=("float", 0.1, 1.0))
    estimator: str = param("directional", choices=("directional", "exact"))
    eps: float = param(1e-3, gt=0, le=1)
    n_dirs: int = param(64, integer=True, ge=1, le=10_000, search=("int", 8, 128))
    optimizer: str = param("sgd", choices=("sgd", "adam"), search=("choice", ["sgd", "adam"]))
    readout: str = param("vote", choices=("vote", "linear"),
                         search=("choice", ["vote", "linear"]))


def haar_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """An ``(n, n)`` orthogonal matrix distributed by the Haar measure on O(n) (QR of a Gaussian
    matrix with the signs of R's diagonal moved into Q; Mezzadri 2007)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def simplex_prototypes(seed: int, widths, n_classes: int) -> list[np.ndarray]:
    """Per block, ``n_classes`` unit vectors ``(n_classes, width)`` at the vertices of a regular
    simplex (pairwise dot product ``-1/(C-1)``, summing to zero), randomly rotated; drawn from a
    generator seeded by ``seed`` alone.

    Raises:
        ValueError: a width smaller than the number of classes.
    """
    C = int(n_classes)
    rng = np.random.default_rng([int(seed), PROTOTYPE_STREAM])
    out = []
    for k, w in enumerate(int(w) for w in widths):
        if w < C:
            raise ValueError(f"FFzero: block {k} has width {w}, but {C} class prototypes need a "
                             f"width of at least {C}; widen the block (hidden) or use fewer "
                             "classes")
        e = np.zeros((C, w))
        e[:, :C] = np.eye(C)
        e -= e.mean(axis=0)
        if C > 1:
            e /= np.linalg.norm(e, axis=1, keepdims=True)
        else:
            e[0, 0] = 1.0
        out.append((e @ haar_orthogonal(rng, w)).astype(np.float32))
    return out


def similarities(h, R):
    """Cosine similarities ``(n, C)`` of outputs ``h`` ``(n, width)`` with unit prototypes
    ``R`` ``(C, width)``."""
    norm = jnp.sqrt(jnp.sum(h * h, axis=-1, keepdims=True))
    return (h / jnp.maximum(norm, 1e-12)) @ R.T


def prototype_loss(h, y, R, kind: str = "margin", margin: float = 0.3):
    """The block's local loss (mean over the batch): ``"margin"``
    ``sum_{j != y} max(0, m + s_j - s_y)`` or ``"cosine"`` ``1 - s_y``."""
    s = similarities(h, R)
    sy = jnp.take_along_axis(s, y[:, None], axis=1)
    if kind == "cosine":
        return jnp.mean(1.0 - sy[:, 0])
    wrong = 1.0 - jax.nn.one_hot(y, s.shape[1], dtype=s.dtype)
    return jnp.mean(jnp.sum(wrong * jax.nn.relu(margin + s - sy), axis=1))


def directional_gradient(f, theta, U, eps: float):
    """Forward-only gradient estimate of the scalar ``f`` at ``theta`` ``(D,)`` from the unit
    directions ``U`` ``(n_dirs, D)``: ``D * mean_u[(f(theta + eps u) - f(theta - eps u)) /
    (2 eps) * u]``. Exact for a quadratic ``f`` when ``U`` is an orthonormal basis."""
    plus = jax.vmap(lambda u: f(theta + eps * u))(U)
    minus = jax.vmap(lambda u: f(theta - eps * u))(U)
    slopes = (plus - minus) / (2.0 * eps)
    return theta.shape[0] * (slopes @ U) / U.shape[0]


def vote(sims) -> np.ndarray:
    """Labels from per-block similarities ``(K, n, C)``: majority of the blocks' argmax, ties to
    the class whose voters sit deeper (sum of 1-based block indices), then the smaller class."""
    sims = np.asarray(sims)
    K, _, C = sims.shape
    picks = np.argmax(sims, axis=2)  # (K, n)
    onehot = np.eye(C, dtype=np.int64)[picks]  # (K, n, C)
    votes = onehot.sum(0)
    depth = (onehot * np.arange(1, K + 1)[:, None, None]).sum(0)
    return np.argmax(votes * (K * (K + 1) + 1) + depth, axis=1)


def block_inputs(net: HybridNet, x0, measured):
    """Each block's digital input ``z_k`` (what ``W_k`` multiplies), each block's output
    ``h_k``, and the read-out's input, recomputed from the measurements (no query)."""
    h, zs, hs = x0, [], []
    for blk, m in zip(net.blocks, measured):
        z = jnp.concatenate([m * blk.cal, blk.bypass(h)], axis=-1)
        h = z @ blk.W.T + blk.b
        zs.append(z)
        hs.append(h)
    return zs, hs, (jnp.concatenate([x0, h], axis=1) if net.skip else h)


def local_gradients(net, prototypes, dirs, x0, measured, y, cfg):
    """Update directions (a tree shaped like the trainable part) and the summed local losses:
    each block's from its own loss on its measured input; the read-out's exact gradient with
    ``readout="linear"`` (zero otherwise: it is not used)."""
    zs, _, u = block_inputs(net, x0, measured)
    values, total = [], 0.0
    for k, (blk, z, R) in enumerate(zip(net.blocks, zs, prototypes)):
        shape = blk.W.shape

        def f(theta, z=z, R=R, shape=shape):
            W = theta[:shape[0] * shape[1]].reshape(shape)
            return prototype_loss(z @ W.T + theta[W.size:], y, R, cfg.loss, cfg.margin)
        theta = jnp.concatenate([blk.W.ravel(), blk.b])
        total = total + f(theta)
        g = (directional_gradient(f, theta, dirs[k], cfg.eps) if cfg.estimator == "directional"
             else jax.grad(f)(theta))
        values += [g[:blk.W.size].reshape(shape), g[blk.W.size:]]
    if cfg.readout != "vote":
        def ce(head):
            logits = u @ head.weight.T + head.bias
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss_head, gh = jax.value_and_grad(ce)(net.head)
        total = total + loss_head
        head = [gh.weight, gh.bias]
    else:
        head = [jnp.zeros_like(net.head.weight), jnp.zeros_like(net.head.bias)]
    return eqx.tree_at(trainable_leaves, eqx.filter(net, net.trainable()), head + values), total


def trainable_leaves(net) -> list:
    """The trained arrays in a fixed order: read-out weight and bias, then each block's."""
    return [net.head.weight, net.head.bias] + [a for b in net.blocks for a in (b.W, b.b)]


def loss_flops(batch: int, width: int, n_classes: int) -> int:
    """FLOPs of one local loss: the norm and division (3 a number), the similarities
    (``2 width C`` a sample), the margins and their sum (4 a class)."""
    return int(batch) * (3 * int(width) + 2 * int(width) * int(n_classes) + 4 * int(n_classes))


class FFzero(HybridAlgorithm):
    """FFzero for the run loop: the hybrid network's state plus ``prototypes`` (the fixed
    ``R_k``); ``rng`` (checkpointed) draws the directions."""

    def __init__(self, layers, data, config, **kw):
        super().__init__(layers, data, config, **kw)
        self.prototypes = simplex_prototypes(self.seed, config.hidden, data.n_classes)

    def make_optimizer(self):
        return (optax.adam if self.config.optimizer == "adam" else optax.sgd)(self.config.lr)

    def init(self) -> dict:
        return {**super().init(), "prototypes": self.prototypes}

    def directions(self, net, rng: np.random.Generator) -> list:
        """Per block, ``n_dirs`` Gaussian directions normalised to unit length ``(n_dirs, D_k)``
        (empty arrays with ``estimator="exact"``)."""
        n = int(self.config.n_dirs) if self.config.estimator == "directional" else 0
        out = []
        for b in net.blocks:
            u = rng.standard_normal((n, b.n_params)).astype(np.float32)
            out.append(jnp.asarray(u / np.linalg.norm(u, axis=1, keepdims=True)))
        return out

    def update(self, params, opt_state, prototypes, dirs, x0, ms, y):
        """One compiled FFzero step: every block's local estimate, the read-out's, the
        optimiser."""
        if self._grad_step is None:
            static, opt, cfg = self.static, self.opt, self.config

            @eqx.filter_jit
            def step(params, opt_state, prototypes, dirs, x0, ms, y):
                g, loss = local_gradients(eqx.combine(params, static), prototypes, dirs, x0, ms,
                                          y, cfg)
                upd, opt_state = opt.update(g, opt_state, params)
                return eqx.apply_updates(params, upd), opt_state, loss
            self._grad_step = step
        return self._grad_step(params, opt_state, prototypes, dirs, x0, ms, y)

    def step_flops(self, net, batch: int) -> int:
        """Digital work of one step beyond the forward pass (see the module's Cost)."""
        cfg, C = self.config, self.data.n_classes
        f = 0
        for b in net.blocks:
            width, fan_in = b.W.shape
            lf = loss_flops(batch, width, C)
            if cfg.estimator == "directional":
                f += lf + cfg.n_dirs * (2 * (dense_flops(batch, fan_in, width) + lf)
                                        + 8 * b.n_params)
            else:
                f += update_flops(batch, [(fan_in, width)]) + 3 * lf
        if cfg.readout != "vote":
            f += dense_flops(batch, net.head.in_features, C) + 6 * batch * C
        n = self.n_params({"params": eqx.partition(net, net.trainable())[0]})
        return int(f + (adam_flops(n) if cfg.optimizer == "adam" else 2 * n))

    def step(self, state, x, y):
        net = self.net(state)
        x0 = encode(x)
        _, ms, _ = physical_forward(net, self.layers, x0, self.ledger)
        dirs = self.directions(net, state["rng"])
        protos = [jnp.asarray(R) for R in state["prototypes"]]
        params, opt_state, loss = self.update(state["params"], state["opt"], protos, dirs, x0,
                                              ms, jnp.asarray(y))
        self.ledger.add_flops(self.step_flops(net, len(y)), "FFzero update")
        return {**state, "params": params, "opt": opt_state}, float(loss)

    def predict(self, state, x):
        if self.config.readout != "vote":
            return super().predict(state, x)
        net, out = self.net(state), []
        protos = [jnp.asarray(R) for R in state["prototypes"]]
        for i in range(0, len(x), 512):
            x0 = encode(x[i:i + 512])
            _, ms, _ = physical_forward(net, self.layers, x0, self.ledger, "eval")
            _, hs, _ = block_inputs(net, x0, ms)
            out.append(vote([similarities(h, R) for h, R in zip(hs, protos)]))
            self.ledger.add_flops(sum(loss_flops(len(x0), R.shape[1], R.shape[0])
                                      for R in protos), "prototype read-out")
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def n_params(self, state) -> int:
        parts = self.params_by_part(state)
        return int(sum(parts["blocks"]) + parts["readout"])

    def params_by_part(self, state) -> dict:
        params = state["params"]
        readout = (int(params.head.weight.size + params.head.bias.size)
                   if self.config.readout != "vote" else 0)
        return {"blocks": [int(b.W.size + b.b.size) for b in params.blocks], "readout": readout}

    def predict_state(self, state):
        return {"net": self.net(state), "prototypes": list(state["prototypes"])}

    def template_state(self):
        return {**super().template_state(), "prototypes": self.prototypes}

    def from_predict_state(self, pstate):
        return {**super().from_predict_state(pstate), "prototypes": list(pstate["prototypes"])}


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None, on_step=None, **kw) -> Result:
    """FFzero; returns ``(record, model)``."""
    return fit("ffzero", FFzero, layers, data, config, seed=seed, ledger=ledger,
               progress=progress, on_step=on_step, **kw)
