"""The ledger's hand-counted FLOPs against XLA's own count of the same compiled computation.

Each trainer charges its digital work to :class:`pnn.cost.Ledger` from array shapes
(:func:`pnn.cost.dense_flops`, :func:`pnn.cost.adam_flops`, ``3 x forward`` for a training
step). Here every counted computation runs once at small representative shapes (vowels-like:
12 features, 7 classes, blocks 20 wide, batch 32): the hand count is read from the trainer's own
ledger, and XLA's count (:func:`pnn.cost.xla_flops`: multiply-add = 2, transcendental ops apart)
from the trainer's own compiled function where it can be reached, else from the same few lines
rebuilt here.

Outcomes, measured on the CPU backend (numbers in each test). The hand counts were corrected
after this comparison first ran (the numbers before and after are in each test):

* within 10 %: a dense forward pass; forward + backward of a layer, with its input gradient
  where one is taken and without it where the layer's input is data (the first layer of a
  network, every PhyLL block: :func:`pnn.cost.update_flops`); Adam as optax runs it (13 a
  parameter, 14 with the learning rate as data, 15 for AdamW: :func:`pnn.cost.adam_flops`);
  PhyLL's block update, goodness pass and feature pass; PAT's twin fit, its frozen twins'
  forward and input gradients, and its network update; the hybrid forward pass; the digital
  MLP's update; a logistic read-out's loss and gradient.
* a known under-count (``xfail(strict=True)``, so that a fix shows): the L-BFGS read-out fit
  charges one loss evaluation per iteration, and scipy makes more (1.19).
"""

from __future__ import annotations

from types import SimpleNamespace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

from pnn.cost import Ledger, adam_flops, dense_flops, update_flops, xla_cost, xla_flops
from pnn.network import direction, to_drive
from pnn.train import bp, pat, phyll
from pnn.train.hybrid import HybridAlgorithm, HybridNet, encode

from .train.test_phyll import RandomQuadraticLayer, blobs

F, C, B = 12, 7, 32  # features, classes, batch
TOL = 0.10
f32 = np.float32


def _ratio(xla: float, hand: float) -> float:
    return float(xla) / float(hand)


# ---------------------------------------------------------------- the helper, the building blocks

def test_xla_counts_a_multiply_add_as_two_and_transcendentals_apart():
    x, w = jnp.ones((8, 5)), jnp.ones((5, 3))
    assert xla_flops(lambda x, w: x @ w, x, w) == 2 * 8 * 5 * 3
    assert xla_cost(jnp.tanh, x) == {"flops": 0.0, "transcendentals": 40.0}


def test_xla_counts_a_loop_body_once_whatever_its_trip_count():
    """Why the scanned loops below are counted one step at a time."""
    x, w = jnp.ones((8, 5)), jnp.ones((5, 5))

    def loop(x, w, n):
        return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=n)[0]

    one = xla_flops(lambda x, w: x @ w, x, w)
    for n in (2, 10):
        assert one <= xla_flops(lambda x, w: loop(x, w, n), x, w) < 1.1 * one


def test_dense_forward_matches_xla_exactly():
    """``dense_flops(64, 52, 20)`` = 134,400 = XLA's count of ``x @ W.T + b``."""
    x, W, b = jnp.ones((2 * B, 52)), jnp.ones((20, 52)), jnp.ones(20)
    assert xla_flops(lambda x, W, b: x @ W.T + b, x, W, b) == dense_flops(2 * B, 52, 20)


def test_three_times_forward_holds_when_the_input_gradient_is_needed_and_not_otherwise():
    """3 x 134,400 = 403,200 hand; XLA 401,919 (1.00) with the input gradient, 268,799 (0.67)
    without it (the weight gradient alone costs one forward pass)."""
    x, W, b = jnp.ones((2 * B, 52)), jnp.ones((20, 52)), jnp.ones(20)
    hand = 3 * dense_flops(2 * B, 52, 20)

    def loss(W, b, x):
        return jnp.sum(x @ W.T + b)
    with_dx = xla_flops(jax.value_and_grad(loss, argnums=(0, 1, 2)), W, b, x)
    without_dx = xla_flops(jax.value_and_grad(loss, argnums=(0, 1)), W, b, x)
    assert abs(_ratio(with_dx, hand) - 1) <= TOL
    assert abs(_ratio(without_dx, 2 * hand / 3) - 1) <= TOL


def _adam_update_flops(opt, n: int) -> float:
    p = jnp.ones(n)

    def update(g, s, p):
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s
    return xla_flops(update, p, opt.init(p), p)


def test_adam_flops_matches_optax_adam():
    """XLA 13 a parameter (13,009 for 1,000) plus one square root (a transcendental, not in
    ``flops``); ``adam_flops`` charged 12 before this comparison, 13 now. ``optax.adam`` is
    PAT's twin fit and hybrid update."""
    n = 1000
    assert abs(_ratio(_adam_update_flops(optax.adam(1e-3), n), adam_flops(n)) - 1) <= TOL


@pytest.mark.parametrize("which", ["phyll._ADAM", "adamw"])
def test_adam_flops_matches_injected_adam_and_adamw(which):
    """PhyLL's Adam takes the learning rate as data (``phyll._ADAM``: XLA 14,015 for 1,000) and
    bp's AdamW decays the weights (15,009); ``adam_flops`` charged both 12 a parameter (1.17,
    1.25) before this comparison."""
    if which == "phyll._ADAM":
        opt, hand = phyll._ADAM, adam_flops(1000, lr_as_data=True)
    else:
        opt, hand = optax.adamw(1e-3, weight_decay=1e-4), adam_flops(1000, weight_decay=True)
    assert abs(_ratio(_adam_update_flops(opt, 1000), hand) - 1) <= TOL


# ---------------------------------------------------------------- PhyLL

@pytest.fixture(scope="module")
def phyll_run():
    """A one-block PhyLL (20 wide, 20 measurements, 15 inner steps) after one training step,
    the ledger's counts of the step, a goodness pass and a feature pass."""
    data = blobs(n_per_class=30, n_classes=C, n_features=F)
    cfg = phyll.PhyLLConfig(hidden=(20,), n_meas=20, batch_size=B, inner_steps=15,
                            readout="linear", readout_input=True)
    (n_in, n_out), = phyll.layer_shapes(cfg, F, C)
    alg = phyll.PhyLL([RandomQuadraticLayer(n_in, n_out)], data, cfg, seed=0, ledger=Ledger())
    x, y = data.x_train[:B], data.y_train[:B]
    state, _ = alg.step(alg.init(), x, y)
    counts = {"step": alg.ledger.flops_by_item["trainable update"]}
    for name, call in (("scores", lambda: alg.scores(state, x)),
                       ("features", lambda: alg.features(state, x))):
        alg.ledger = Ledger()
        call()
        counts[name] = alg.ledger.flops_by_item["trainable forward"]
    return SimpleNamespace(alg=alg, state=state, data=data, cfg=cfg, counts=counts, n_in=n_in,
                           n_out=n_out)


def _phyll_block_step_xla(run) -> float:
    """XLA's count of the trainer's own compiled ``_block_train`` call with ``inner_steps``
    steps: its loop body is counted once, so the call less the forward pass after the loop is
    one inner step."""
    blk, cfg = run.state["blocks"][0], run.cfg
    params, static = eqx.partition(blk, blk.trainable())
    n = 2 * B  # positives, then one negative each
    m, h = jnp.ones((n, run.n_out)), jnp.ones((n, run.n_in))
    call = xla_flops(phyll._block_train_jit, cfg.goodness, B, params, static,
                     run.state["opt"][0], m, h, f32(cfg.theta), f32(0.0), f32(1.0),
                     f32(cfg.drive_gain), run.alg.inner_rates(0))

    def after_loop(params, m, h):
        h_next = eqx.combine(params, static)(m, h)
        return h_next, to_drive(direction(h_next), 0.0, 1.0, 1.0)
    rest = xla_flops(after_loop, params, m, h)
    return cfg.inner_steps * (call - rest) + rest


def test_phyll_block_update_matches_xla(phyll_run):
    """One block, 64 drives (32 positive, 32 negative), fan-in 52 (20 measured + 32 bypass),
    15 inner steps. Charged before this comparison: 6,373,200 (3 x forward + 12 a parameter;
    XLA 4,862,459, 0.76: the block's inputs are fixed measurements and the previous output, so
    its backward pass is the weight gradient alone). Now: forward and weight gradient, the
    goodness and the loss (6 a drive and output entry), Adam with the rate as data."""
    run = phyll_run
    hand = run.counts["step"]
    W = run.state["blocks"][0].W
    n, (width, fan_in) = 2 * B, W.shape
    assert hand == run.cfg.inner_steps * (update_flops(n, [(fan_in, width)])
                                          + 6 * n * (fan_in + width)
                                          + adam_flops(W.size + width, lr_as_data=True)
                                          ) + dense_flops(n, fan_in, width)
    assert abs(_ratio(_phyll_block_step_xla(run), hand) - 1) <= TOL


def _eval_block_xla(run, rows: int, features: bool) -> float:
    """XLA's count of the trainer's compiled ``_eval_block`` (with the trainer's argument types),
    plus, for a feature pass, the output's direction that :meth:`PhyLL.features` takes."""
    blk = run.state["blocks"][0]
    m, h = jnp.ones((rows, run.n_out)), jnp.ones((rows, run.n_in))
    n = xla_flops(phyll._eval_block, blk, m, h, 0.0, 1.0, f32(run.cfg.drive_gain),
                  kind=run.cfg.goodness)
    return n + xla_flops(direction, jnp.ones((rows, blk.W.shape[0]))) if features else n


def test_phyll_goodness_pass_matches_xla(phyll_run):
    """Every label embedded (7 x 32 rows): hand 567,168 (forward + 6 a drive and output entry
    for the goodness and the next drives); XLA 534,056 (0.94)."""
    xla = _eval_block_xla(phyll_run, C * B, features=False)
    assert abs(_ratio(xla, phyll_run.counts["scores"]) - 1) <= TOL


def test_phyll_feature_pass_matches_xla(phyll_run):
    """32 rows: charged 67,200 before this comparison (the forward pass only; XLA 79,560, 1.18:
    the same compiled pass computes the goodness and the next drives, and the features are the
    outputs' directions); now as the goodness pass: 6 more a drive and output entry."""
    xla = _eval_block_xla(phyll_run, B, features=True)
    assert abs(_ratio(xla, phyll_run.counts["features"]) - 1) <= TOL


@pytest.fixture(scope="module")
def readout_fit(phyll_run):
    """PhyLL's linear read-out fitted once: the ledger's count, the L-BFGS iterations and
    function evaluations scipy made (recorded around ``scipy.optimize.minimize``, which
    scikit-learn calls), and the features' shape."""
    run, made = phyll_run, []
    minimize = scipy.optimize.minimize

    def recording(*args, **kwargs):
        res = minimize(*args, **kwargs)
        made.append((int(res.nit), int(res.nfev)))
        return res
    run.alg.ledger = Ledger()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scipy.optimize, "minimize", recording)
        run.alg.before_eval(run.state)
    assert len(made) == 1
    n, width = len(run.data.y_train), run.alg.readout_width()
    return SimpleNamespace(hand=run.alg.ledger.flops_by_item["read-out fit"], nit=made[0][0],
                           nfev=made[0][1], n=n, width=width)


def _logistic_eval_xla(n: int, width: int) -> float:
    """One loss-and-gradient evaluation of an L2-penalised multinomial logistic regression."""
    def loss(coef, icpt, f, y):
        logits = f @ coef.T + icpt
        return (optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
                + 0.5 * jnp.sum(coef**2))
    return xla_flops(jax.value_and_grad(loss, argnums=(0, 1)), jnp.ones((C, width)),
                     jnp.ones(C), jnp.ones((n, width)), jnp.zeros(n, jnp.int32))


def test_logistic_readout_evaluation_matches_xla(readout_fit):
    """Per evaluation (115 samples, 45 features: 20 block outputs and the 25 encoded inputs,
    7 classes), the hand count's ``4 n d C`` = 144,900 against XLA's loss and gradient,
    155,390 (1.07)."""
    r = readout_fit
    assert r.hand == r.nit * 4 * r.n * r.width * C
    assert abs(_ratio(_logistic_eval_xla(r.n, r.width), 4 * r.n * r.width * C) - 1) <= TOL


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "the read-out fit (PhyLL linear read-out, bp.Linear) charges one loss evaluation per L-BFGS "
    "iteration; scipy evaluates once before the first iteration and again in line searches "
    "(here 20 evaluations for 18 iterations), and the softmax adds 7 %: XLA x nfev = "
    "3,107,800 against 2,608,200 charged (1.19). An under-count of this item, about half of "
    "PhyLL's learning cost in the acoustic protocol; scikit-learn reports the iterations, not "
    "the evaluations, so the count cannot follow them."))
def test_readout_fit_counts_every_evaluation(readout_fit):
    r = readout_fit
    xla = r.nfev * _logistic_eval_xla(r.n, r.width)
    assert abs(_ratio(xla, r.hand) - 1) <= TOL


# ---------------------------------------------------------------- PAT and the hybrid network

class _MeasuredOnly(HybridAlgorithm):
    """The hybrid update with every measurement a constant: the network's part of PAT's step."""

    def measure(self, net, k, a, extra):
        return extra[0][k]

    def step(self, state, x, y):  # pragma: no cover - never trained
        raise NotImplementedError


@pytest.fixture(scope="module")
def pat_run():
    """A two-block PAT (blocks 20 wide, 20 measurements, twins 96 wide) after one training
    step, with the ledger's counts and XLA's count of the compiled update (whole, and with the
    twins left out). The first twin is fitted by :func:`pnn.train.pat.fit_twin` (100 samples:
    one 64-sample minibatch an epoch, 2 epochs) for its ledger count; the second is built
    untrained (cheaper; its FLOPs are counted as ``fit_twin`` counts, checked on the first)."""
    data = blobs(n_per_class=30, n_classes=C, n_features=F)
    cfg = pat.Config(hidden=(20, 20), n_meas=20, batch_size=B, twin_samples=100, twin_epochs=2)
    layers = [RandomQuadraticLayer(n_in, n_out, seed=k, name=f"L{k}")
              for k, (n_in, n_out) in enumerate(pat.layer_shapes(cfg, F, C))]
    alg = pat.PAT(layers, data, cfg, seed=0, ledger=Ledger())
    net = HybridNet(alg.shapes, cfg.hidden, C, key=jax.random.PRNGKey(0))
    params, alg.static = eqx.partition(net, net.trainable())
    alg.opt = alg.make_optimizer()
    (n0, m0), (n1, m1) = alg.shapes
    d = np.random.default_rng(0).uniform(size=(cfg.twin_samples, n0)).astype(np.float32)
    fit_ledger = Ledger()
    twin0, _, fwd0 = pat.fit_twin(d, d[:, :m0] ** 2, cfg, key=jax.random.PRNGKey(1),
                                  ledger=fit_ledger)
    sizes = [[n, cfg.twin_hidden, cfg.twin_hidden, m] for n, m in alg.shapes]
    fwds = [sum(dense_flops(1, a, b) for a, b in zip(s[:-1], s[1:])) for s in sizes]
    assert fwds[0] == fwd0
    twins = [twin0, pat.Twin(bp.MLP(sizes[1], key=jax.random.PRNGKey(2)),
                             jnp.asarray(1.0, jnp.float32))]
    alg.twin_fwd = fwds
    state = {"params": params, "opt": alg.opt.init(params), "twins": twins,
             "rng": np.random.default_rng(0)}
    x, y = data.x_train[:B], data.y_train[:B]
    alg.step(state, x, y)
    x0, yj = encode(x), jnp.asarray(y)
    ms = [jnp.ones((B, s.n_out)) for s in alg.specs]
    whole = xla_flops(alg._grad_step, params, state["opt"], x0, yj, (ms, twins))
    measured_only = _MeasuredOnly(layers, data, cfg, seed=0, ledger=Ledger())
    measured_only.static, measured_only.opt = alg.static, alg.opt
    network = xla_flops(lambda p, o, x0, y, ms: measured_only.gradient_step(p, o, x0, y, (ms,)),
                        params, state["opt"], x0, yj, ms)
    return SimpleNamespace(alg=alg, state=state, cfg=cfg, x=x, twin_fit=fit_ledger.flops_by_item[
        "twin fit"], counts=dict(alg.ledger.flops_by_item), whole=whole, network=network)


def _twin_step_xla(twin, bs: int, lr: float) -> float:
    """One minibatch step of :func:`pnn.train.pat.fit_twin`'s loop (its scan body)."""
    params, static = eqx.partition(twin, eqx.is_inexact_array)
    opt = optax.adam(lr)
    n_in, n_out = twin.mlp.layers[0].in_features, twin.mlp.layers[-1].out_features

    def step(p, s, xb, yb):
        loss, g = jax.value_and_grad(
            lambda p: jnp.mean((eqx.combine(p, static)(xb) - yb) ** 2))(p)
        u, s = opt.update(g, s, p)
        return eqx.apply_updates(p, u), s, loss
    return xla_flops(step, params, opt.init(params), jnp.ones((bs, n_in)), jnp.ones((bs, n_out)))


def test_pat_twin_fit_matches_xla(pat_run):
    """Twin 25->96->96->20, minibatch 64, 2 epochs of one step: hand 10,807,008 (3 x forward
    + Adam a step); XLA 10,311,388 (0.95: the first layer's input gradient is not needed)."""
    run = pat_run
    n_tr = run.cfg.twin_samples - max(1, int(run.cfg.twin_val_fraction * run.cfg.twin_samples))
    bs = min(64, n_tr)
    steps = run.cfg.twin_epochs * (n_tr // bs)
    xla = steps * _twin_step_xla(run.state["twins"][0], bs, run.cfg.twin_lr)
    assert abs(_ratio(xla, run.twin_fit) - 1) <= TOL


def test_pat_network_update_matches_xla(pat_run):
    """Network 25->20->20->7 (two blocks and the read-out), batch 32: charged 380,436 before
    this comparison (3 x forward + 12 a parameter; XLA 325,333, 0.86: the first block's input
    is data, so its input gradient, 57,600, is never computed); now without it."""
    run = pat_run
    assert abs(_ratio(run.network, run.counts["trainable update"]) - 1) <= TOL


def test_pat_twin_backward_is_what_a_frozen_twin_needs(pat_run):
    """XLA's twin share of PAT's update (the update less its network part) is the first twin's
    forward pass (its input is data: no gradient) and the second twin's forward pass and
    input gradient (the twins are not trained here: no weight gradient): 2,557,824 by that
    reckoning, XLA 2,614,400 (1.02)."""
    run = pat_run
    fwd0, fwd1 = run.alg.twin_fwd
    assert abs(_ratio(run.whole - run.network, B * fwd0 + 2 * B * fwd1) - 1) <= TOL


def test_pat_twin_forward_backward_matches_xla(pat_run):
    """Charged 3 x forward of every twin before this comparison (5,146,368 for a batch of 32;
    XLA 2,614,400, 0.51): the twins are frozen while the network trains, and the first one's
    input is data. Now: the first twin's forward, each later one's forward and input
    gradient."""
    run = pat_run
    assert abs(_ratio(run.whole - run.network, run.counts["twin forward/backward"]) - 1) <= TOL


def test_hybrid_forward_matches_xla(pat_run):
    """The host-side forward pass of :func:`pnn.train.hybrid.physical_forward` (directions,
    drives, blocks, read-out), batch 32: hand 119,264; XLA 129,088 (1.08: the directions and
    drives are not in the hand count)."""
    run = pat_run
    net = run.alg.net(run.state)
    x0 = encode(run.x)
    ms = [jnp.ones((B, s.n_out)) for s in run.alg.specs]

    def forward(net, x0, ms):
        h, drives = x0, []
        for k, blk in enumerate(net.blocks):
            drives.append(to_drive(direction(h), 0.0, 1.0, net.gain))
            h = blk(ms[k], h)
        return net.logits(x0, h), drives
    xla = xla_flops(forward, net, x0, ms)
    assert abs(_ratio(xla, run.counts["trainable forward"]) - 1) <= TOL


# ---------------------------------------------------------------- the digital MLP reference

def test_bp_update_matches_xla():
    """MLP 12->75->7 (1,507 parameters), batch 32: charged 299,556 before this comparison
    (3 x forward + 12 a parameter; XLA 255,528, 0.85: the input layer's input gradient, 57,600,
    is not computed, and AdamW costs 15 a parameter); now without it, and AdamW's 15."""
    data = blobs(n_per_class=30, n_classes=C, n_features=F)
    tr = bp.MLPTrainer([], data, bp.BPConfig(batch_size=B), seed=0, ledger=Ledger())
    state = tr.init()
    x, y = jnp.asarray(data.x_train[:B]), jnp.asarray(data.y_train[:B])
    tr.step(state, x, y)
    hand = tr.ledger.flops_by_item["trainable update"]
    xla = xla_flops(tr._update, state["model"], state["opt"], x, y)
    assert abs(_ratio(xla, hand) - 1) <= TOL
