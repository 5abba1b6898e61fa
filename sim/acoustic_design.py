r"""A waveform-driven acoustic medium whose wave speed inside a design region is trainable.

The medium is :class:`~pnn.sim.acoustic_waveform.WaveformAcousticLayer`'s (the damped scalar wave
equation of :mod:`pnn.sim.acoustic`, its leapfrog scheme, absorbing layer and optional
nonlinearity; sampled waveforms in, probe intensities out). :class:`DesignedAcousticLayer` adds
one field: inside a rectangular cell box :math:`D` (the design region) the linear wave speed is

.. math::  c(x, y) = c_{min} + (c_{max} - c_{min})\,\mathrm{sigmoid}(\rho(x, y)),
           \qquad (x, y) \in D,

with one unbounded logit :math:`\rho` per cell (``rho``, the trainable parameter) and the bounds
``design_c_min`` < ``design_c_max`` (m/s): every value of :math:`\rho` gives a speed inside
them, so a gradient step can never leave the stable range. Outside :math:`D` the speed is the
medium's, :math:`c_0(1 + \delta)` (disorder :math:`\delta`). Both enter the medium's speed law
:math:`c = s_T[c_0(1 + \delta) + c_{nl}\,m\,\min(u^2, u_{sat}^2)]` through :math:`\delta`: inside
:math:`D`, :math:`\delta = c(x, y)/c_0 - 1`, so the design region holds the absolute speed
:math:`s_T\,c(x, y)` whatever the background :math:`c_0` (a fabricated material does not follow
the background), scaled like every speed by the temperature-like :math:`s_T` (``speed_scale``),
and the nonlinear term still applies where the nonlinear region overlaps it.

Stability: the scheme needs :math:`s_T(\max(c_0(1 + d), c_{max}) + c_{nl} u_{sat}^2)\,\Delta t /
\Delta x \le 1/\sqrt2` (d = ``disorder``). ``dt=None`` picks Courant number 0.65 at that speed;
a given ``dt``, or a later ``speed_scale``, ``c_nl`` or ``u_sat``, that breaks it for the design
bound is refused (:meth:`DesignedAcousticLayer.validate_params`).

Differentiability: the speed map is built from :math:`\rho` inside :meth:`forward` and the time
loop is the medium's ``lax.scan`` (checkpointed in segments), so ``jax.grad`` of any function of
the probe intensities with respect to ``rho`` is the exact gradient of the discrete simulation
(the adjoint of the scheme, by reverse-mode differentiation through the scan).

Which parts are physical: the medium, its design region, the sources and the probes are the
apparatus (one fabricated piece of inhomogeneous material and its transducers); ``rho`` is the
fabrication recipe, chosen in silico by backpropagation through this simulator
(:func:`fit_design`) and frozen before deployment. Nothing digital sits between the waveform and
the probe intensities.

Reference: Hughes, Williamson, Minkov & Fan, "Wave physics as an analog recurrent neural
network", Sci. Adv. 5, eaay6946 (2019) (wavetorch). As there, raw vowel waveforms drive one
source, each probe's time-integrated intensity is a class score, and the wave speed of a design
region between sources and probes is trained through the simulator. Departures: wavetorch blends
two materials, :math:`c = c_0 + (c_1 - c_0)\rho` with :math:`\rho \in [0, 1]` from a projected
(thresholded) density; here the sigmoid bound above, with no projection, so the trained medium
may hold any speed in the range (a graded material). Its loss is cross-entropy on the probe
intensities normalised by their sum; :func:`design_loss` takes :math:`-\log` of the true probe's
share of the intensity, the same quantity read as a probability (no second softmax).
"""

from __future__ import annotations

import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from pnn.layer import LayerSpec, is_traced
from pnn.sim.acoustic import AcousticLayer
from pnn.sim.acoustic_waveform import WaveformAcousticLayer
from pnn.sim.base import AbstractSimulator

__all__ = ["DesignedAcousticLayer", "default_design_region", "design_loss", "probe_shares",
           "fit_design", "accuracy"]


def default_design_region(nx: int, ny: int, pml_width: int) -> tuple[int, int, int, int]:
    """``(x0, x1, y0, y1)``: every interior cell between the sources' column and the probes'
    column, two cells clear of each, inside the absorbing layer."""
    src_x, probe_x = pml_width + 2, nx - pml_width - 3  # AcousticLayer's transducer columns
    return (src_x + 2, probe_x - 1, pml_width, ny - pml_width)


def _check_region(name, region, nx, ny, pml_width):
    """The design box as a tuple of ints, refused when it is not inside the grid or covers a
    source or probe column."""
    box = tuple(region) if isinstance(region, (tuple, list)) else ()
    ok = len(box) == 4 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                               for v in box)
    src_x, probe_x = pml_width + 2, nx - pml_width - 3
    if not ok or not (0 <= box[0] < box[1] <= nx and 0 <= box[2] < box[3] <= ny) \
            or box[0] <= src_x < box[1] or box[0] <= probe_x < box[1]:
        raise ValueError(
            f"{name}: design_region = {region!r}: expected a cell box (x0, x1, y0, y1) of "
            f"integers inside the {nx}x{ny} grid that leaves the sources' column x = {src_x} "
            f"and the probes' column x = {probe_x} outside it; e.g. "
            f"{default_design_region(nx, ny, pml_width)} (every cell between them), or None "
            f"for no design region")
    return tuple(int(v) for v in box)


class DesignedAcousticLayer(AbstractSimulator):
    """:class:`~pnn.sim.acoustic_waveform.WaveformAcousticLayer` with a trainable wave speed in
    a design region (see the module docstring).

    Args:
        n_in: drive channels, ``n_sources * n_samples``: each source's waveform in turn.
        n_out: ``n_probes * n_windows`` outputs (probe intensities, Pa²).
        sample_rate: the waveforms' sample rate (Hz); the audio vowel task's 10 kHz by default.
        n_sources, n_windows, n_steps, source_amplitude, nx, ny, dx, dt, c0, c_nl, u_sat,
            disorder, pml_width, nl_region, speed_scale, remat_every: the medium's
            (:class:`~pnn.sim.acoustic_waveform.WaveformAcousticLayer`,
            :class:`~pnn.sim.acoustic.AcousticLayer`); the grid defaults (64 x 64 cells of 3 cm,
            an 8-cell absorbing layer) resolve the vowels' formants (a 4 kHz wavelength is 2.9
            cells, F1 and F2 are 7-70 cells) at about one step per 36-57 us.
        unipolar: drives in [0, 1] instead of [-1, 1] (the same samples, played as given): for
            networks whose drives are non-negative directions mapped into the range
            (:func:`pnn.network.to_drive`), whose zero is then silence instead of -1.
        design_region: ``(x0, x1, y0, y1)`` cell box of trainable speed, or ``None`` (default:
            no design region, the medium as it is). :func:`default_design_region` gives every
            cell between the sources and the probes.
        design_c_min, design_c_max: the bounds of the design speed (m/s); default ``c0 / 2``
            and ``c0`` (wavetorch's two materials, the background and one half as fast).
        design_init: the initial design speed (m/s), uniform, strictly inside the bounds;
            default their midpoint.
        seed, name: the disorder's seed, the name in messages.

    Raises:
        ValueError: a design region outside the grid or over a transducer column, bounds not
            ordered and positive, an initial speed not strictly inside them, a time step
            beyond the Courant limit at ``design_c_max``, ``n_in`` not a multiple of
            ``n_sources``, and whatever the medium refuses.
    """

    physical_scalars = AcousticLayer.physical_scalars

    spec: LayerSpec = eqx.field(static=True)
    region: tuple = eqx.field(static=True)
    design_c_min: float = eqx.field(static=True)
    design_c_max: float = eqx.field(static=True)
    layer: WaveformAcousticLayer
    rho: Array  # (x1 - x0, y1 - y0) logits of the design speed; (0, 0) without a region

    def __init__(self, n_in: int = 500, n_out: int = 8, *, sample_rate: float = 10e3,
                 n_sources: int = 1, n_windows: int = 1, n_steps: int | None = None,
                 unipolar: bool = False, design_region: tuple | None = None,
                 design_c_min: float | None = None, design_c_max: float | None = None,
                 design_init: float | None = None, nx: int = 64, ny: int = 64,
                 dx: float = 0.03, dt: float | None = None, c0: float = 343.0,
                 c_nl: float = 150.0, u_sat: float = 1.0, disorder: float = 0.15,
                 source_amplitude: float = 4.0e5, pml_width: int = 8,
                 nl_region: tuple | None = None, speed_scale: float = 1.0,
                 remat_every: int | None = None, seed: int = 0,
                 name: str = "acoustic_waveform"):
        if isinstance(n_sources, bool) or not isinstance(n_sources, (int, np.integer)) \
                or n_sources < 1 or n_in % n_sources:
            raise ValueError(f"{name}: n_in = {n_in} drives must be n_sources x n_samples (each "
                             f"source's waveform in turn), but n_sources = {n_sources!r} does "
                             f"not divide it; give a positive n_sources that divides n_in")
        lo, hi = self._bounds(name, c0, design_c_min, design_c_max, design_init)
        if design_region is not None:
            design_region = _check_region(name, design_region, nx, ny, pml_width)
        c_top = max(c0 * (1 + disorder), hi if design_region is not None else 0.0)
        if dt is None and all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                              for v in (dx, c_top, speed_scale)):
            dt = 0.65 * dx / (speed_scale * (c_top + max(c_nl, 0.0) * u_sat**2))
        self.layer = WaveformAcousticLayer(
            n_in // n_sources, n_out, sample_rate=sample_rate, n_sources=n_sources,
            n_windows=n_windows, n_steps=n_steps, seed=seed, name=name, nx=nx, ny=ny, dx=dx,
            dt=dt, c0=c0, c_nl=c_nl, u_sat=u_sat, disorder=disorder, pml_width=pml_width,
            source_amplitude=source_amplitude, nl_region=nl_region, speed_scale=speed_scale,
            remat_every=remat_every)
        s = self.layer.spec
        self.spec = LayerSpec(s.n_in, s.n_out, 0.0 if unipolar else -1.0, 1.0, name,
                              s.units.replace("-1..1", "0..1" if unipolar else "-1..1"))
        self.region = design_region or ()
        self.design_c_min, self.design_c_max = lo, hi
        shape = (self.region[1] - self.region[0], self.region[3] - self.region[2]) \
            if self.region else (0, 0)
        init = 0.5 * (lo + hi) if design_init is None else float(design_init)
        self.rho = jnp.full(shape, math.log((init - lo) / (hi - init)), jnp.float32)

    @staticmethod
    def _bounds(name, c0, c_min, c_max, init):
        """The design bounds (m/s) with their defaults, and the initial speed checked."""
        lo = 0.5 * c0 if c_min is None else float(c_min)
        hi = float(c0) if c_max is None else float(c_max)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise ValueError(f"{name}: design_c_min = {lo!r} and design_c_max = {hi!r} m/s must "
                             f"be finite with 0 < design_c_min < design_c_max")
        if init is not None and not (isinstance(init, (int, float)) and lo < init < hi):
            raise ValueError(f"{name}: design_init = {init!r} m/s must lie strictly inside "
                             f"(design_c_min, design_c_max) = ({lo:.6g}, {hi:.6g}) (the sigmoid "
                             f"reaches the bounds only at infinite logits); give a speed inside")
        return lo, hi

    # the medium's physical scalars, read (and set by eqx.tree_at) through this layer
    c0 = property(lambda self: self.layer.c0)
    c_nl = property(lambda self: self.layer.c_nl)
    u_sat = property(lambda self: self.layer.u_sat)
    speed_scale = property(lambda self: self.layer.speed_scale)
    source_amplitude = property(lambda self: self.layer.source_amplitude)
    dt = property(lambda self: self.layer.dt)
    n_steps = property(lambda self: self.layer.n_steps)
    medium = property(lambda self: self.layer.medium)

    @property
    def design_speed(self) -> Float[Array, "dx dy"]:
        """The wave speed (m/s, before ``speed_scale``) in each cell of the design region."""
        return self.design_c_min + (self.design_c_max - self.design_c_min) * jax.nn.sigmoid(
            self.rho)

    def with_design_speed(self, c) -> "DesignedAcousticLayer":
        """A copy whose design region holds the speeds ``c`` (m/s, the region's shape or a
        scalar), each strictly inside the bounds."""
        c = np.broadcast_to(np.asarray(c, np.float64), self.rho.shape)
        lo, hi = self.design_c_min, self.design_c_max
        if not np.all((c > lo) & (c < hi)):
            raise ValueError(f"{self.spec.name}: design speeds must lie strictly inside "
                             f"({lo:.6g}, {hi:.6g}) m/s, got [{c.min():.6g}, {c.max():.6g}]")
        rho = np.log((c - lo) / (hi - c))
        return eqx.tree_at(lambda m: m.rho, self, jnp.asarray(rho, jnp.float32))

    def trainable(self):
        """An :func:`equinox.partition` filter: ``True`` at ``rho`` only (the design), every
        physical scalar and the medium's fixed maps ``False``."""
        spec = jax.tree_util.tree_map(lambda _: False, self)
        return eqx.tree_at(lambda m: m.rho, spec, replace=True)

    def designed_medium(self) -> WaveformAcousticLayer:
        """The waveform layer with the design speed written into its speed map (traceable)."""
        if not self.region:
            return self.layer
        x0, x1, y0, y1 = self.region
        delta = self.layer.medium.delta.at[x0:x1, y0:y1].set(self.design_speed / self.c0 - 1.0)
        return eqx.tree_at(lambda m: m.medium.delta, self.layer, delta)

    @property
    def c_max(self) -> float:
        """The largest wave speed (m/s) any drive can reach, the design bound included."""
        s, c_nl, u_sat = (float(getattr(self, k)) for k in ("speed_scale", "c_nl", "u_sat"))
        top = self.design_c_max if self.region else 0.0
        return max(self.layer.c_max, s * (top + c_nl * u_sat**2))

    @property
    def flops_per_sample(self) -> int:
        """The waveform layer's (:attr:`WaveformAcousticLayer.flops_per_sample`); building the
        speed map (4 FLOPs per design cell) is done once per call, not per sample."""
        return self.layer.flops_per_sample

    def validate_params(self) -> None:
        """The medium's checks, then the Courant limit at the design bound:
        ``speed_scale * (design_c_max + c_nl * u_sat^2) * dt / dx <= 1/sqrt(2)``, and a finite
        design (``rho``)."""
        self.layer.validate_params()
        v = self.params()
        if v is None or not self.region:
            return
        m = self.layer.medium
        c_lim = m.dx / (math.sqrt(2.0) * m.dt)
        top = v["speed_scale"] * (self.design_c_max + v["c_nl"] * v["u_sat"] ** 2)
        if top > c_lim * (1 + 1e-6):
            raise ValueError(
                f"{self.spec.name}: unstable design, Courant number at the design bound "
                f"speed_scale*(design_c_max + c_nl*u_sat^2)*dt/dx = {top * m.dt / m.dx:.4f} "
                f"exceeds 1/sqrt(2) = 0.7071 (design_c_max = {self.design_c_max:.6g} m/s, "
                f"dt = {m.dt:.4g} s); lower design_c_max to at most "
                f"{c_lim / v['speed_scale'] - v['c_nl'] * v['u_sat'] ** 2:.6g} m/s, or build "
                f"the layer with dt <= {m.dx / (math.sqrt(2.0) * top):.4g} s (or dt=None)")
        if not is_traced(self.rho) and not bool(jnp.all(jnp.isfinite(self.rho))):
            raise ValueError(f"{self.spec.name}: the design logits rho must be finite; set a "
                             f"design with with_design_speed")

    def simulate(self, x: Float[Array, "batch n_in"], *, record=None):
        """:meth:`WaveformAcousticLayer.simulate` of the designed medium (unvalidated)."""
        return self.designed_medium().simulate(x, record=record)

    def forward(self, x: Float[Array, "batch n_in"], *, key=None) -> Float[Array, "batch n_out"]:
        """Mean-square pressure (Pa²) at each probe (and window) of the designed medium for each
        batch of waveforms (unvalidated; deterministic, ``key`` is ignored). Compiled as one
        program even when called outside ``jit`` (op by op, XLA would round the drive's
        interpolation differently: a relative 1e-6 apart from the jitted call)."""
        return _forward_designed(self, x)


@eqx.filter_jit
def _forward_designed(layer: DesignedAcousticLayer, x):
    return layer.designed_medium().forward(x)


def probe_shares(intensity: Float[Array, "batch n_probes"]) -> Float[Array, "batch n_probes"]:
    """Each probe's share of the total intensity (rows sum to 1): the class probabilities of a
    wavetorch classifier."""
    return intensity / (jnp.sum(intensity, axis=-1, keepdims=True) + 1e-30)


def design_loss(layer: DesignedAcousticLayer, x, y) -> Array:
    """Mean ``-log`` of the true class's probe share (probe j scores class j)."""
    p = probe_shares(layer.forward(x))
    return -jnp.mean(jnp.log(jnp.take_along_axis(p, y[:, None], axis=1) + 1e-30))


def accuracy(layer: DesignedAcousticLayer, x, y, batch: int = 64) -> float:
    """Fraction of waveforms whose loudest probe is their class's (the physics alone)."""
    hits = [np.argmax(np.asarray(layer(x[i:i + batch])), 1) == y[i:i + batch]
            for i in range(0, len(y), batch)]
    return float(np.mean(np.concatenate(hits)))


def fit_design(layer: DesignedAcousticLayer, x, y, *, epochs: int = 5, batch_size: int = 32,
               lr: float = 0.1, seed: int = 0, x_val=None, y_val=None, log=None):
    """Train the design logits ``rho`` by Adam on :func:`design_loss` (backpropagation through
    the simulator); every physical scalar stays fixed. Returns ``(layer, history)``: the layer
    of the best validation accuracy (the last when no validation part is given) and one dict per
    epoch (``loss``, ``val_accuracy``, ``seconds``). ``log(text)`` is called once per epoch."""
    params, static = eqx.partition(layer, layer.trainable())
    opt = optax.adam(lr)
    state = opt.init(params)

    @eqx.filter_jit
    def step(params, state, xb, yb):
        loss, g = eqx.filter_value_and_grad(
            lambda p: design_loss(eqx.combine(p, static), xb, yb))(params)
        upd, state = opt.update(g, state, params)
        return eqx.apply_updates(params, upd), state, loss

    rng = np.random.default_rng(seed)
    history, best = [], (-1.0, layer)
    for epoch in range(epochs):
        t0, losses = time.perf_counter(), []
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            params, state, loss = step(params, state, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
            losses.append(float(loss))
        current = eqx.combine(params, static)
        val = accuracy(current, x_val, y_val) if x_val is not None else float("nan")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                        "val_accuracy": val, "seconds": time.perf_counter() - t0})
        if x_val is None or val > best[0]:
            best = (val, current)
        if log is not None:
            log(f"epoch {epoch + 1}: loss {history[-1]['loss']:.4f}, val accuracy {val:.3f}, "
                f"{history[-1]['seconds']:.1f} s")
    return best[1], history
