r"""Ablation "systems": what a block gets when the physics is replaced by something simpler.

Each class here is a :class:`pnn.sim.base.AbstractSimulator` with the simulators' shapes and drive
range (``n_in`` drives in [0, 1], ``n_out`` non-negative readings), so every trainer, the CLI
(``--system none|random_linear|random_nonlinear``), ``pnn compare`` and the conformance test use
them unchanged. They answer "what does the wave physics contribute?" by comparison:

``none`` (:class:`NoPhysics`)
    :math:`y = \ell\,\mathbf 1` for every drive: a detector that sees a constant ``level``
    :math:`\ell` (default 0, a dark detector). In a block :math:`h = W[c\,y; a] + b` the measured
    columns of ``W`` then meet a constant, so the block is the digital map of its drive,
    :math:`h = W_a a + b` (with :math:`\ell = 0` exactly; with :math:`\ell > 0` the measured
    columns act as a second bias). Why 0 is the default: the calibration
    (:meth:`pnn.network.Block.with_calibration`) maps any non-zero constant to 1, and a constant
    1 in ``n_meas`` columns gives the bias ``n_meas + 1`` Adam-normalised updates per step, a
    change of optimiser rather than of physics; with zeros those columns get no gradient, the
    calibration falls back to 1 (mean |y| = 0), PAT's twin fits a constant (its scale falls back
    to 1), and the trainable parameters stay the same set as with a simulator.

``random_linear`` (:class:`RandomLinear`)
    :math:`y = g\,T d`, a fixed :math:`n_{out}\times n_{in}` matrix with
    :math:`T_{ji} = |G_{ji}|^2 / n_{in}`, :math:`G_{ji}` standard complex Gaussian (so
    :math:`T_{ji}` is exponentially distributed, mean :math:`1/n_{in}`): the intensity
    transmission matrix of a random scattering medium under *incoherent* light, a linear system
    read by intensity detectors. We chose a non-negative map because every simulator reads a
    power or an energy (never negative) and the drive is non-negative, so a physical linear
    system with power detection must have :math:`T \ge 0`. The choice only changes the
    conditioning, not what a block can compute: :math:`W[T d; d]` is a linear map of ``d`` for
    any ``T``, so a PhyLL block on a linear layer computes exactly the maps of ``none``.

``random_nonlinear`` (:class:`RandomNonlinear`)
    ``kind="speckle"`` (default): :math:`y_j = g\,|\sum_i G_{ji} d_i|^2 / n_{in}`, ``G``
    standard complex Gaussian: coherent light through a random medium read by a camera (a
    random quadratic form of the drive per channel; :math:`y(c d) = c^2 y(d)`). This is the
    nonlinearity every coherent wave system with power detection has, without any nonlinear
    medium, so it separates "some nonlinearity" from the simulators' wave physics.
    ``kind="tanh"``: a random two-layer network
    :math:`y = g\,\tfrac12[1 + \tanh(A_2 \tanh(s A_1 d + c_1))]` with :math:`A_1` (``hidden``
    × ``n_in``) and :math:`c_1` standard normal, :math:`A_2` normal with variance
    :math:`1/\mathrm{hidden}`, ``strength`` :math:`s`: a generic smooth nonlinearity of all
    orders, bounded in :math:`[0, g]`.

Every map is drawn once from ``seed`` (NumPy's ``default_rng([seed, tag])``), held as a constant
array, pure JAX, jittable and differentiable (in-silico backpropagation and PAT work). ``gain``
:math:`g` (and ``strength``, ``level``) are the physical scalars (0-d arrays; a drift may vary
them). None carries internal randomness: ``key`` is ignored.

FLOPs per sample follow :mod:`pnn.sim.base`: a real multiply-add is 2.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pnn.layer import LayerSpec, concrete_scalars
from pnn.sim.base import AbstractSimulator, check_seed, require, scalar

__all__ = ["NoPhysics", "RandomLinear", "RandomNonlinear"]

_KINDS = ("speckle", "tanh")


def _rng(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), tag])


def _spec(n_in, n_out, name, output):
    return LayerSpec(n_in=n_in, n_out=n_out, lo=0.0, hi=1.0, name=name,
                     units=f"drive: arb. (0..1); output: {output}")


def _check_positive(layer, names):
    vals = concrete_scalars(layer, names)
    if vals is None:
        return
    for k, v in vals.items():
        require(layer.spec.name, k, v, bool(np.isfinite(v) and v > 0), "must be finite and > 0",
                fix=f"pass {k}=1.0 (the default) or another positive number")


class NoPhysics(AbstractSimulator):
    """The ``none`` ablation: a constant reading ``level`` on every channel, whatever the drive.

    Args:
        n_in, n_out: drive and measured channels.
        level: the constant reading (>= 0; default 0, see the module docstring for why).
        seed: accepted for the registry's signature; nothing is random.
        name: layer name used in error messages.
    """

    physical_scalars = ("level",)

    spec: LayerSpec = eqx.field(static=True)
    level: Array

    def __init__(self, n_in: int = 8, n_out: int = 8, *, level: float = 0.0, seed: int = 0,
                 name: str = "none"):
        self.spec = _spec(n_in, n_out, name, "constant")
        self.level = scalar(level, name, "level")

    def validate_params(self) -> None:
        vals = concrete_scalars(self, self.physical_scalars)
        if vals is None:
            return
        v = vals["level"]
        require(self.spec.name, "level", v, bool(np.isfinite(v) and v >= 0),
                "must be finite and >= 0", why="a detector reading",
                fix="pass level=0.0 (the default: the block sees only its drive)")

    def forward(self, x: Float[Array, "batch n_in"], *, key=None) -> Float[Array, "batch n_out"]:
        return self.level * jnp.ones((x.shape[0], self.spec.n_out), x.dtype)

    @property
    def flops_per_sample(self) -> int:
        return self.spec.n_out  # level x 1 per channel


class RandomLinear(AbstractSimulator):
    """The ``random_linear`` ablation: ``y = gain * T d`` with a fixed non-negative random
    ``T`` (``T_ji = |G_ji|^2 / n_in``, ``G`` standard complex Gaussian drawn from ``seed``).

    Args:
        n_in, n_out: drive and measured channels.
        gain: output scale (> 0).
        seed: draws ``T``.
        name: layer name used in error messages.
    """

    physical_scalars = ("gain",)

    spec: LayerSpec = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    gain: Array
    T: Array

    def __init__(self, n_in: int = 8, n_out: int = 8, *, gain: float = 1.0, seed: int = 0,
                 name: str = "random_linear"):
        self.spec = _spec(n_in, n_out, name, "intensity (arb.)")
        self.seed = check_seed(name, seed)
        self.gain = scalar(gain, name, "gain")
        g = _rng(seed, 1).normal(size=(2, n_out, n_in))
        self.T = jnp.asarray((g[0] ** 2 + g[1] ** 2) / 2.0 / n_in, jnp.float32)

    def validate_params(self) -> None:
        _check_positive(self, self.physical_scalars)

    def forward(self, x: Float[Array, "batch n_in"], *, key=None) -> Float[Array, "batch n_out"]:
        return self.gain * (x @ self.T.T)

    @property
    def flops_per_sample(self) -> int:
        n_in, n_out = self.spec.n_in, self.spec.n_out
        return 2 * n_in * n_out + n_out


class RandomNonlinear(AbstractSimulator):
    """The ``random_nonlinear`` ablation (maps in the module docstring).

    Args:
        n_in, n_out: drive and measured channels.
        kind: ``"speckle"`` (default, ``y = gain |G d|^2 / n_in``) or ``"tanh"`` (a random
            two-layer tanh network, output in [0, gain]).
        gain: output scale (> 0).
        strength: ``kind="tanh"``: scale ``s`` of the first layer's pre-activation (> 0; larger
            is more nonlinear). Unused by ``"speckle"``.
        hidden: ``kind="tanh"``: hidden width; ``None`` = ``2 * max(n_in, n_out)``.
        seed: draws the map.
        name: layer name used in error messages.
    """

    physical_scalars = ("gain", "strength")

    spec: LayerSpec = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)
    gain: Array
    strength: Array
    A1: Array
    A2: Array
    c1: Array

    def __init__(self, n_in: int = 8, n_out: int = 8, *, kind: str = "speckle",
                 gain: float = 1.0, strength: float = 1.0, hidden: int | None = None,
                 seed: int = 0, name: str = "random_nonlinear"):
        if kind not in _KINDS:
            raise ValueError(f"{name}: kind = {kind!r} is not a known map; expected one of "
                             f"{', '.join(map(repr, _KINDS))}")
        hidden = 2 * max(n_in, n_out) if hidden is None else hidden
        if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden < 1:
            raise ValueError(f"{name}: hidden = {hidden!r} must be a positive integer (the tanh "
                             "map's hidden width); pass e.g. hidden=32 or leave it None")
        self.spec = _spec(n_in, n_out, name, "intensity (arb.)" if kind == "speckle"
                          else "arb. (0..gain)")
        self.kind, self.seed, self.hidden = kind, check_seed(name, seed), int(hidden)
        self.gain = scalar(gain, name, "gain")
        self.strength = scalar(strength, name, "strength")
        rng = _rng(seed, 2)
        if kind == "speckle":
            # real and imaginary parts of G / sqrt(2 n_in), stacked: (2, n_out, n_in)
            self.A1 = jnp.asarray(rng.normal(size=(2, n_out, n_in)) / np.sqrt(2.0 * n_in),
                                  jnp.float32)
            self.A2 = jnp.zeros((0,), jnp.float32)
            self.c1 = jnp.zeros((0,), jnp.float32)
        else:
            self.A1 = jnp.asarray(rng.normal(size=(hidden, n_in)), jnp.float32)
            self.c1 = jnp.asarray(rng.normal(size=(hidden,)), jnp.float32)
            self.A2 = jnp.asarray(rng.normal(size=(n_out, hidden)) / np.sqrt(hidden),
                                  jnp.float32)

    def validate_params(self) -> None:
        _check_positive(self, self.physical_scalars)

    def forward(self, x: Float[Array, "batch n_in"], *, key=None) -> Float[Array, "batch n_out"]:
        if self.kind == "speckle":
            re, im = x @ self.A1[0].T, x @ self.A1[1].T
            return self.gain * (re * re + im * im)
        u = jnp.tanh(self.strength * (x @ self.A1.T) + self.c1)
        return self.gain * 0.5 * (1.0 + jnp.tanh(u @ self.A2.T))

    @property
    def flops_per_sample(self) -> int:
        n_in, n_out, H = self.spec.n_in, self.spec.n_out, self.hidden
        if self.kind == "speckle":
            # two real matrix products, |.|^2 (3 per channel), gain (1 per channel)
            return 4 * n_in * n_out + 4 * n_out
        # first layer 2 H n_in, strength H, bias H, tanh (counted 1) H; second 2 n_out H,
        # tanh, +1, x0.5, x gain: 4 per channel
        return 2 * H * n_in + 3 * H + 2 * n_out * H + 4 * n_out
