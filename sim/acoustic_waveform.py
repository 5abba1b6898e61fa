r"""Time-domain drive of the nonlinear acoustic medium: sampled waveforms in, probe intensities out.

The medium is :class:`~pnn.sim.acoustic.AcousticLayer`'s, unchanged: the damped scalar wave
equation with an intensity-dependent speed, its leapfrog discretisation, disorder, absorbing
layer, nonlinear region and Courant check (see :mod:`pnn.sim.acoustic` for the equations and
symbols). :class:`WaveformAcousticLayer` holds one such layer (``medium``) and replaces only how
the sources are driven and how the probes are read.

Drive
-----
An input row holds ``n_sources`` waveforms of ``n_samples`` samples each, source after source:
``x[b, i * n_samples + k]`` is sample k of source i's waveform :math:`s_i`, taken at time
:math:`t_k = k / f_s` with :math:`f_s` = ``sample_rate`` (Hz). Samples are signed and dimensionless
in the safe range [-1, 1]. The layer resamples each waveform onto the simulator's steps
:math:`t_n = n\,\Delta t` by linear interpolation,

.. math::  s_i(t_n) = (1 - \phi)\,s_i[k] + \phi\,s_i[k + 1],\quad k = \lfloor t_n f_s\rfloor,
           \ \phi = t_n f_s - k,

the waveform followed by silence (zero samples), and drives source cell i with the force
density :math:`f = A\,s_i(t_n)/\Delta x^2` (A = ``source_amplitude``), the tone-burst layer's
:math:`A\,x_i\,g(t_n)/\Delta x^2` with the burst :math:`x_i g` replaced by the waveform. Linear
interpolation is a low-pass of the waveform only when it is up-sampled, so a ``sample_rate``
above the simulator's step rate :math:`1/\Delta t` (where it would alias) is refused; so is a
simulated time :math:`(n_{steps}-1)\Delta t` too short to emit the whole waveform.

Read-out
--------
Output ``j * n_windows + w`` is the mean-square pressure (Pa²) at probe j over time window w:
the ``n_steps`` steps are cut into ``n_windows`` consecutive windows of (nearly) equal length.
With ``n_windows = 1`` this is the tone-burst layer's time-averaged intensity.

Reference: the waveform-driven FDTD vowel classifier of wavetorch (Hughes, Williamson, Minkov &
Fan, Sci. Adv. 5, eaay6946, 2019), whose source term injects the raw audio sample by sample.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pnn.layer import LayerSpec
from pnn.sim.acoustic import (AcousticLayer, _laplacian_cells_first, _remat_scan,
                              _two_steps_per_iteration, laplacian)
from pnn.sim.base import AbstractSimulator

__all__ = ["WaveformAcousticLayer", "linear_resampling"]


def linear_resampling(n_samples: int, sample_rate: float, n_steps: int, dt: float):
    """``(index, weights)``, both ``(2, n_steps)``, of the linear interpolation of a waveform of
    ``n_samples`` samples at ``sample_rate`` (Hz), followed by silence (zeros), onto the times
    ``n dt`` (s), n < ``n_steps``: ``s(n dt) = weights[0, n] s[index[0, n]] + weights[1, n]
    s[index[1, n]]``. An index past the last sample is clipped to it, with weight 0."""
    pos = np.arange(n_steps, dtype=np.float64) * dt * sample_rate
    near = np.round(pos)
    # a step that falls on a sample up to rounding takes that sample alone
    pos = np.where(np.abs(pos - near) < 1e-9 * np.maximum(1.0, near), near, pos)
    k = np.floor(pos).astype(np.int64)
    phi = pos - k
    weights = np.stack([np.where(k <= n_samples - 1, 1.0 - phi, 0.0),
                        np.where(k + 1 <= n_samples - 1, phi, 0.0)])
    index = np.clip(np.stack([k, k + 1]), 0, n_samples - 1).astype(np.int32)
    return jnp.asarray(index), jnp.asarray(weights)


#: from this batch size on, the medium's framed in-place loop (AcousticLayer._simulate)
FRAMED_FROM_BATCH = 16


class _StepLayout(NamedTuple):
    """How :meth:`WaveformAcousticLayer._simulate_swap` holds a batch's fields (cells-first
    ``(nx, ny, batch)`` or batch-first ``(batch, nx, ny)``) and what it does in that layout."""

    u: Array  # the field at rest
    maps: tuple  # delta, nl_mask, sigma broadcast against u
    lap: Callable  # u -> its Laplacian (times dx^2)
    probes: Callable  # u -> (batch, n_probes)
    batch_first: Callable  # a field in the layout -> (batch, nx, ny)


def _check_drive(name: str, *, n_samples, n_sources, n_windows, n_out, sample_rate) -> None:
    """Refuse a waveform shape, window count or sample rate out of range."""
    for label, v in (("n_samples", n_samples), ("n_sources", n_sources),
                     ("n_windows", n_windows), ("n_out", n_out)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: {label} must be a positive integer, got {v!r}")
    if n_out % n_windows:
        raise ValueError(
            f"{name}: n_out = {n_out} is not a whole number of probes times n_windows = "
            f"{n_windows} (n_out = n_probes * n_windows); give n_out divisible by n_windows")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.number)) \
            or not (math.isfinite(sample_rate) and sample_rate > 0):
        raise ValueError(f"{name}: sample_rate must be a positive finite number of Hz, got "
                         f"{sample_rate!r}")


def _steps_for(name: str, medium: AcousticLayer, n_samples: int, sample_rate: float,
               n_steps) -> int:
    """``n_steps`` checked against the waveform: the simulated time must cover it and the
    step rate must be at least the sample rate; ``None`` picks the waveform's duration plus one
    crossing of the grid's diagonal at c0."""
    dt = medium.dt
    if sample_rate > (1.0 + 1e-9) / dt:
        raise ValueError(
            f"{name}: sample_rate = {sample_rate:.6g} Hz exceeds the simulator's step rate "
            f"1/dt = {1.0 / dt:.6g} Hz; linear interpolation onto the steps would alias; "
            f"resample the waveform to at most {1.0 / dt:.6g} Hz first, or give a smaller dt")
    duration = (n_samples - 1) / sample_rate
    need = int(math.floor(duration / dt * (1.0 + 1e-9))) + 1  # steps up to the last sample
    if n_steps is None:
        crossing = math.hypot(medium.nx, medium.ny) * medium.dx / float(medium.c0)
        return need + int(math.ceil(crossing / dt))
    if n_steps < need:
        raise ValueError(
            f"{name}: n_steps = {n_steps} steps of dt = {dt:.4g} s end before the waveform "
            f"({n_samples} samples at {sample_rate:.6g} Hz, {duration:.4g} s), whose last "
            f"samples would never be emitted; give n_steps >= {need}, or None (the waveform "
            f"plus one crossing of the grid)")
    return int(n_steps)


class WaveformAcousticLayer(AbstractSimulator):
    """The nonlinear acoustic medium of :class:`~pnn.sim.acoustic.AcousticLayer` driven by
    sampled waveforms (see the module docstring for the drive and read-out).

    Args:
        n_samples: samples per waveform (per source); ``n_in = n_sources * n_samples``.
        n_out: ``n_probes * n_windows`` outputs.
        sample_rate: the waveforms' sample rate (Hz), at most the step rate ``1/dt``.
        n_sources: sources on the input column, each with its own waveform (default 1).
        n_windows: consecutive time windows read at each probe (default 1: the whole run).
        n_steps: time steps per sample; ``None`` (default) covers the waveform plus one crossing
            of the grid's diagonal at c0. A run shorter than the waveform is refused.
        seed, name, and every other keyword: :class:`~pnn.sim.acoustic.AcousticLayer`'s
            (grid, dx, dt, c0, c_nl, u_sat, disorder, source_amplitude, pml_width, nl_region,
            speed_scale, remat_every); ``frequency`` and ``burst_cycles`` shape only the
            medium's tone burst (``medium.waveform``), which this layer does not emit.

    The physical scalars are the medium's (read and set through this layer by name, e.g.
    ``with_param(layer, "c0", 340.0)``) and are checked by the medium's ``validate_params``,
    Courant limit included.

    Raises:
        ValueError: for a shape, sample rate or run length out of range (above), and whatever
            :class:`~pnn.sim.acoustic.AcousticLayer` refuses.
    """

    physical_scalars = AcousticLayer.physical_scalars

    spec: LayerSpec = eqx.field(static=True)
    n_samples: int = eqx.field(static=True)
    n_sources: int = eqx.field(static=True)
    n_windows: int = eqx.field(static=True)
    sample_rate: float = eqx.field(static=True)
    medium: AcousticLayer
    sample_index: Array  # (2, n_steps) the waveform samples either side of each step
    sample_weights: Array  # (2, n_steps) their linear-interpolation weights

    def __init__(self, n_samples: int = 64, n_out: int = 8, *, sample_rate: float = 16e3,
                 n_sources: int = 1, n_windows: int = 1, n_steps: int | None = None,
                 seed: int = 0, name: str = "acoustic_waveform", **medium_kwargs):
        _check_drive(name, n_samples=n_samples, n_sources=n_sources, n_windows=n_windows,
                     n_out=n_out, sample_rate=sample_rate)
        n_probes = n_out // n_windows
        sizing = AcousticLayer(n_sources, n_probes, n_steps=1, seed=seed, name=name,
                               **medium_kwargs)  # for dt, fixed by the grid and the speeds
        n_steps = _steps_for(name, sizing, n_samples, float(sample_rate), n_steps)
        if n_windows > n_steps:
            raise ValueError(f"{name}: n_windows = {n_windows} exceeds the {n_steps} time "
                             f"steps; give n_windows <= n_steps")
        self.medium = AcousticLayer(n_sources, n_probes, n_steps=n_steps, seed=seed, name=name,
                                    **medium_kwargs)
        self.spec = LayerSpec(n_in=n_sources * n_samples, n_out=n_out, lo=-1.0, hi=1.0,
                              name=name, units="drive: waveform samples (-1..1, "
                                               f"{float(sample_rate):.6g} Hz); output: Pa^2")
        self.n_samples, self.n_sources, self.n_windows = n_samples, n_sources, n_windows
        self.sample_rate = float(sample_rate)
        self.sample_index, self.sample_weights = linear_resampling(
            n_samples, self.sample_rate, n_steps, self.medium.dt)

    # the medium's physical scalars, read (and set by eqx.tree_at) through this layer
    c0 = property(lambda self: self.medium.c0)
    c_nl = property(lambda self: self.medium.c_nl)
    u_sat = property(lambda self: self.medium.u_sat)
    speed_scale = property(lambda self: self.medium.speed_scale)
    source_amplitude = property(lambda self: self.medium.source_amplitude)

    @property
    def dt(self) -> float:
        """The simulator's time step (s)."""
        return self.medium.dt

    @property
    def n_steps(self) -> int:
        """Time steps simulated per sample."""
        return self.medium.n_steps

    @property
    def c_max(self) -> float:
        """The largest wave speed (m/s) any drive can reach (the medium's)."""
        return self.medium.c_max

    @property
    def flops_per_sample(self) -> int:
        """Real FLOPs of one sample: the medium's 28 per cell and step (:attr:`AcousticLayer.
        flops_per_sample`), 3 per source and step for the interpolation and 2 per probe and
        step for the running mean square, and one division per output at the end:
        ``28 nx ny n_steps + (3 n_sources + 2 n_probes) n_steps + n_out``."""
        m = self.medium
        n_probes = self.spec.n_out // self.n_windows
        return (28 * m.nx * m.ny * m.n_steps + (3 * self.n_sources + 2 * n_probes) * m.n_steps
                + self.spec.n_out)

    def validate_params(self) -> None:
        """The medium's :meth:`~pnn.sim.acoustic.AcousticLayer.validate_params` (the Courant
        limit at the largest reachable speed, signs, finiteness)."""
        self.medium.validate_params()

    def drive(self, x: Float[Array, "batch n_in"]) -> Float[Array, "n_steps batch n_sources"]:
        """The forcing at each source and step, already times dt² (Pa):
        :math:`A\\,s_i(t_n)\\,\\Delta t^2/\\Delta x^2` with the waveforms resampled linearly."""
        m = self.medium
        s = x.reshape(x.shape[0], self.n_sources, self.n_samples)
        i, w = self.sample_index, self.sample_weights.astype(x.dtype)
        v = s[..., i[0]] * w[0] + s[..., i[1]] * w[1]  # (batch, n_sources, n_steps)
        scale = m.source_amplitude * (m.dt**2 / m.dx**2)
        return jnp.moveaxis(scale * v, -1, 0)

    def _source_column(self, v, cells_first: bool):
        """The forcing of every step as ``(column, rows)``, whose product is the forcing field:
        ``column`` is 1 on the sources' column (all sources share one), ``rows`` holds the
        values ``v`` ``(n_steps, batch, n_sources)`` on the sources' rows. Cells-first:
        ``(nx, 1, 1)`` and ``(n_steps, ny, batch)``; batch-first: ``(1, nx, 1)`` and
        ``(n_steps, batch, 1, ny)``. The product is formed inside each step's fused update, so
        no forcing field is scattered or stored per step."""
        m = self.medium
        sy = jnp.array([p[1] for p in m.src_xy])
        rows = jnp.zeros(v.shape[:2] + (m.ny,), v.dtype).at[..., sy].add(v)
        column = jnp.zeros(m.nx, v.dtype).at[m.src_xy[0][0]].set(1.0)
        if cells_first:
            return column[:, None, None], jnp.swapaxes(rows, 1, 2)
        return column[None, :, None], rows[:, :, None, :]

    def _layout(self, batch: int, dtype) -> _StepLayout:
        """The fields of :meth:`_simulate_swap` for a batch: cells-first from a batch of 8, as
        the medium holds them (:meth:`AcousticLayer._cells_first`), batch-first below."""
        m = self.medium
        px = jnp.array([p[0] for p in m.probe_xy])
        py = jnp.array([p[1] for p in m.probe_xy])
        if m._cells_first(batch):
            return _StepLayout(
                jnp.zeros((m.nx, m.ny, batch), dtype),
                tuple(a[..., None] for a in (m.delta, m.nl_mask, m.sigma)),
                _laplacian_cells_first, lambda u: u[px, py, :].T,
                lambda f: jnp.moveaxis(f, -1, 0))
        return _StepLayout(
            jnp.zeros((batch, m.nx, m.ny), dtype), (m.delta, m.nl_mask, m.sigma), laplacian,
            lambda u: u[:, px, py], lambda f: f)

    def simulate(self, x: Float[Array, "batch n_in"], *, record=None):
        """Run the FDTD solver on a batch of waveforms (unvalidated); returns
        ``(probe_traces, extra)``: the probe pressures ``(n_steps, batch, n_probes)`` (Pa),
        ``probe_traces[n]`` at time ``(n + 1) dt``, and, with ``record="field"``, every field
        ``(n_steps, batch, nx, ny)`` (memory-hungry; for tests and plots), else None.

        The time loop is the medium's: from a batch of 16 its framed in-place loop
        (:meth:`AcousticLayer._simulate`), below it one leapfrog step per scan iteration
        (:meth:`_simulate_swap`); both checkpointed in segments of ``remat_every`` steps when no
        record is asked for, both the medium's arithmetic (:meth:`AcousticLayer._leapfrog`)."""
        m = self.medium
        dtype = jnp.result_type(x.dtype, jnp.float32)
        x = jnp.asarray(x, dtype)
        b = x.shape[0]
        if b < FRAMED_FROM_BATCH:
            return self._simulate_swap(x, record)
        column, rows = self._source_column(self.drive(x), cells_first=True)
        lay = m._framed_layout(jnp.ones((b, self.n_sources), dtype), None, dtype)
        lay = lay._replace(src=column)  # times each step's rows: the forcing field
        px = jnp.array([p[0] + 1 for p in m.probe_xy])  # probe cells in the framed field
        py = jnp.array([p[1] + 1 for p in m.probe_xy])
        body = _two_steps_per_iteration(m._framed_step(lay, px, py, record))
        traces, extra = m._run_framed(body, jnp.pad(lay.u, lay.frame), rows, record, b)
        return jnp.swapaxes(traces, 1, 2), extra

    def _simulate_swap(self, x, record):
        """:meth:`simulate` for batches below 16: unframed fields, ``(u_prev, u) -> (u, u_next)``
        each scan iteration."""
        m = self.medium
        lay = self._layout(x.shape[0], x.dtype)
        column, rows = self._source_column(self.drive(x), m._cells_first(x.shape[0]))

        def body(carry, w):
            u_prev, u = carry
            u_next = m._leapfrog(u_prev, u, column * w, lay.lap(u), *lay.maps)
            extra = lay.batch_first(u_next) if record == "field" else None
            return (u, u_next), (lay.probes(u_next), extra)

        if record is None and 0 < m.remat_every < m.n_steps:
            return _remat_scan(body, (lay.u, lay.u), rows, m.remat_every), None
        _, (traces, extra) = jax.lax.scan(body, (lay.u, lay.u), rows)
        return traces, extra

    def forward(self, x: Float[Array, "batch n_in"], *, key=None) -> Float[Array, "batch n_out"]:
        """Mean-square pressure (Pa²) at each probe in each time window, probe-major
        (``j * n_windows + w``), for each batch of waveforms (unvalidated; deterministic, ``key``
        is ignored)."""
        traces, _ = self.simulate(x)
        if self.n_windows == 1:
            return jnp.mean(traces**2, axis=0)
        edges = np.round(np.linspace(0, self.n_steps, self.n_windows + 1)).astype(int)
        means = [jnp.mean(traces[a:b] ** 2, axis=0) for a, b in zip(edges[:-1], edges[1:])]
        return jnp.stack(means, axis=-1).reshape(x.shape[0], -1)
