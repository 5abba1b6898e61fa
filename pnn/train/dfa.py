"""Direct feedback alignment (DFA; Nøkland 2016) of the hybrid network on measured physics.

Paper: A. Nøkland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks",
NeurIPS 2016 (arXiv:1609.01596). For physical systems, S. Sunada et al., "Blending optimal control
and biologically plausible learning for noise-robust physical neural networks" (arXiv:2502.19053)
pair DFA with an optimal-control method for a continuous-time optoelectronic delay system.

The network is :class:`pnn.train.hybrid.HybridNet`: blocks ``h_k = W_k z_k + b_k`` with
``z_k = [cal_k P_k(d_k); s(h_{k-1})]`` (the measurement of the physical layer ``P_k`` driven by
the direction ``d_k`` of ``h_{k-1}``, beside the bypass ``s``), then ``logits = V u + c`` with
``u = h_K`` (or ``[x0; h_K]`` with ``readout_input``). Each step, for a minibatch of ``n``:

1. **Forward, measured.** The physical layers are queried (``K * n`` queries); nothing is
   differentiated through them and no model of them is used.
2. **Output error.** ``e = softmax(logits) - onehot(y)`` ``(n, C)``, the gradient of the mean
   softmax cross-entropy times ``n``.
3. **Read-out** (digital): its true gradient, ``g_V = e^T u / n``, ``g_c = mean(e)``.
4. **Blocks**: the error reaches block k through a fixed random feedback matrix ``B_k``
   ``(width_k, C)``: ``delta_k = e B_k^T`` (times ``f'(a_k)``: the blocks are affine, their only
   nonlinearity is the physics downstream, so ``f' = 1``), and ``g_W_k = delta_k^T z_k / n``,
   ``g_b_k = mean(delta_k)``.
5. One Adam step on all of it, the blocks' step multiplied by ``feedback_scale``.

``B_k`` entries are drawn once, uniform in ``[-1, 1] / sqrt(C)``, from a generator seeded by the
run's seed alone (the same seed gives the same matrices), and never change; they are part of the
training state (checkpointed), not of the trained model.

Departures from the paper:

* **No derivative of the activation.** Nøkland's ``delta_k = (B_k e) ⊙ f'(a_k)`` uses the
  hidden layer's own nonlinearity; here the block is affine and the nonlinearity between blocks is
  the physical layer, whose derivative is unknown to a model-free method, so ``f' = 1``.
* **Adam**, not the paper's plain SGD (with momentum in some experiments). Adam divides each
  parameter's step by its gradient's RMS, so a scale of ``B_k`` would cancel: what the scale of
  ``B`` sets under SGD, the size of the blocks' steps relative to the read-out's, is set here by
  ``feedback_scale``, which multiplies the blocks' Adam steps.
* **Feedback initialisation.** We could not verify the paper's exact scale for ``B``; under Adam
  it does not matter (above). The weights start from :class:`pnn.network.Block`'s random
  initialisation, not from zero as in some of the paper's experiments (zero blocks would send a
  constant drive to the physics).
* **From arXiv:2502.19053** only the abstract could be read here: we take its premise (DFA so that
  no backward pass crosses the physics) and not its optimal-control part (the physical layers
  here have no trainable continuous-time parameters: every trained parameter is digital).

Like PhyLL and SPSA it is model-free and runs on instruments. Cost: the forward pass (counted by
:func:`pnn.train.hybrid.physical_forward`), then per block the feedback projection and the weight
gradient, the read-out's weight gradient, and Adam.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pnn.config import param
from pnn.cost import Ledger, adam_flops, dense_flops
from pnn.train.common import Progress
from pnn.train.hybrid import HybridAlgorithm, HybridConfig, encode, hybrid_layer_shapes, \
    physical_forward
from pnn.train.loop import Result, fit

__all__ = ["Config", "DFA", "train", "layer_shapes", "feedback_matrices", "dfa_gradients"]

layer_shapes = hybrid_layer_shapes

#: second word of the seed of the feedback generator (apart from the minibatch generator's)
FEEDBACK_STREAM = 53


@dataclasses.dataclass(frozen=True)
class Config(HybridConfig):
    """feedback_scale: the blocks' Adam steps relative to the read-out's (what the scale of the
    feedback matrices sets under plain SGD)."""

    lr: float = param(1e-2, gt=0, le=10, search=("log", 1e-3, 1e-1))
    feedback_scale: float = param(1.0, gt=0, le=1000, search=("log", 0.1, 10.0))


def feedback_matrices(seed: int, widths, n_classes: int) -> list[np.ndarray]:
    """The fixed feedback matrices ``B_k`` ``(width_k, n_classes)``, uniform in
    ``[-1, 1] / sqrt(n_classes)``, from a generator seeded by ``seed`` alone."""
    rng = np.random.default_rng([int(seed), FEEDBACK_STREAM])
    return [(rng.uniform(-1.0, 1.0, size=(int(w), int(n_classes))) / np.sqrt(n_classes))
            .astype(np.float32) for w in widths]


def block_inputs(net, x0, measured):
    """Each block's digital input ``z_k = [cal m_k; s(h_{k-1})]`` (what ``W_k`` multiplies) and
    the read-out's input, recomputed from the measurements (no query)."""
    h, zs = x0, []
    for blk, m in zip(net.blocks, measured):
        z = jnp.concatenate([m * blk.cal, blk.bypass(h)], axis=-1)
        zs.append(z)
        h = z @ blk.W.T + blk.b
    return zs, (jnp.concatenate([x0, h], axis=1) if net.skip else h)


def dfa_gradients(net, feedback, x0, measured, y):
    """The DFA update directions (a tree shaped like the network's trainable part) and the
    batch loss: the read-out's true gradient, each block's from its projected error."""
    zs, u = block_inputs(net, x0, measured)
    logits = u @ net.head.weight.T + net.head.bias
    n = x0.shape[0]
    e = jax.nn.softmax(logits) - jax.nn.one_hot(y, logits.shape[1])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    deltas = [e @ B.T for B in feedback]
    values = [e.T @ u / n, e.mean(0)] + [a for d, z in zip(deltas, zs)
                                         for a in (d.T @ z / n, d.mean(0))]
    trainable = eqx.filter(net, net.trainable())
    return eqx.tree_at(trainable_leaves, trainable, values), loss


def trainable_leaves(net) -> list:
    """The trained arrays in a fixed order: read-out weight and bias, then each block's."""
    return [net.head.weight, net.head.bias] + [a for b in net.blocks for a in (b.W, b.b)]


def scale_blocks(updates, factor: float):
    """The updates with every block's entries multiplied by ``factor`` (the read-out's kept)."""
    blocks = [jax.tree_util.tree_map(lambda v: v * factor, b) for b in updates.blocks]
    return eqx.tree_at(lambda u: u.blocks, updates, blocks)


class DFA(HybridAlgorithm):
    """DFA for the run loop: the hybrid network's state plus ``feedback`` (the fixed ``B_k``)."""

    def init(self) -> dict:
        state = super().init()
        widths = [int(w) for w in self.config.hidden]
        return {**state, "feedback": feedback_matrices(self.seed, widths, self.data.n_classes)}

    def update(self, params, opt_state, feedback, x0, ms, y):
        """One compiled DFA step: update directions, Adam, the blocks' steps scaled."""
        if self._grad_step is None:
            static, opt, factor = self.static, self.opt, float(self.config.feedback_scale)

            @eqx.filter_jit
            def step(params, opt_state, feedback, x0, ms, y):
                g, loss = dfa_gradients(eqx.combine(params, static), feedback, x0, ms, y)
                upd, opt_state = opt.update(g, opt_state, params)
                return eqx.apply_updates(params, scale_blocks(upd, factor)), opt_state, loss
            self._grad_step = step
        return self._grad_step(params, opt_state, feedback, x0, ms, y)

    def step_flops(self, net, batch: int) -> int:
        """Digital work of one step beyond the forward pass: per block the feedback projection
        and the weight gradient, the read-out's weight gradient, Adam and the block scaling."""
        n_classes = net.head.out_features
        f = sum(dense_flops(batch, n_classes, b.W.shape[0]) + dense_flops(batch, b.W.shape[1],
                                                                          b.W.shape[0])
                for b in net.blocks)
        f += dense_flops(batch, net.head.in_features, n_classes)
        return int(f + adam_flops(net.n_params) + sum(b.n_params for b in net.blocks))

    def step(self, state, x, y):
        net = self.net(state)
        x0 = encode(x)
        _, ms, _ = physical_forward(net, self.layers, x0, self.ledger)
        feedback = [jnp.asarray(B) for B in state["feedback"]]
        params, opt_state, loss = self.update(state["params"], state["opt"], feedback, x0, ms,
                                              jnp.asarray(y))
        self.ledger.add_flops(self.step_flops(net, len(y)), "DFA update")
        return {**state, "params": params, "opt": opt_state}, float(loss)


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None, on_step=None, **kw) -> Result:
    """Direct feedback alignment; returns ``(record, model)``."""
    return fit("dfa", DFA, layers, data, config, seed=seed, ledger=ledger, progress=progress,
               on_step=on_step, **kw)
