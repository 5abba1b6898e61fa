r"""Nonlinear 2-D acoustic wave layer, solved by finite differences in time and space (FDTD).

Physics
-------
The acoustic pressure :math:`u(x, y, t)` (Pa) obeys the damped scalar wave equation

.. math::  \partial_t^2 u + \sigma(x, y)\,\partial_t u = c(x, y, u)^2 \nabla^2 u + f(x, y, t)

with wave speed (m/s)

.. math::  c = s_T\,\bigl[c_0 (1 + \delta(x, y)) + c_{nl}\,m(x, y)\,\min(u^2, u_{sat}^2)\bigr]

* ``c0`` background speed (m/s); ``delta`` a static random disorder field (relative, smooth,
  amplitude ``disorder``) that scatters and mixes the sources; ``s_T`` (``speed_scale``) a global
  temperature-like scale a drift can move.
* ``c_nl`` (m/s/Pa²) the intensity-dependent speed inside the nonlinear region (mask ``m``);
  the quadratic law is saturated at ``u_sat`` (Pa) so that the largest possible speed, and hence
  the stability limit, is known at construction.
* ``sigma`` (1/s) a graded absorbing layer of ``pml_width`` cells on every edge,
  :math:`\sigma = \sigma_{max}(d/w)^2`, :math:`\sigma_{max} = -3 c_0 \ln R / (2 w\,dx)` with
  reflection target R = 1e-3. Beyond the absorbing layer the field is held at zero (Dirichlet).

Discretisation
--------------
Second-order central differences on a uniform grid (spacing ``dx``, m) and leapfrog in time
(step ``dt``, s), with the damping term centred:

.. math::  u^{n+1} = \frac{2u^n - (1 - \sigma\Delta t/2) u^{n-1} + (c\Delta t/\Delta x)^2 L u^n
           + \Delta t^2 f^n}{1 + \sigma\Delta t/2}

where L is the 5-point Laplacian stencil (times dx²). The scheme is stable when the Courant number
:math:`c_{max}\,\Delta t/\Delta x \le 1/\sqrt2`; a configuration that violates it is refused at
construction. Without damping and with constant c the discrete energy

.. math:: E^{n+1/2} = \tfrac12\sum\bigl((u^{n+1}-u^n)/\Delta t\bigr)^2 \Delta x^2
          + \tfrac{c^2}{2}\sum u^{n+1}(-L u^n)

is exactly conserved by the scheme (:func:`discrete_energy`).

Encoding and read-out
---------------------
Input entry :math:`x_i \in [0, 1]` is the amplitude of a Hann-windowed tone burst (``frequency``
Hz, ``burst_cycles`` cycles) emitted by point source i, :math:`f = A\,x_i\,g(t)/\Delta x^2` with
source strength ``source_amplitude`` (Pa·m²/s²·s² per unit drive). Sources sit on a column near
the left edge, probes on a column near the right edge. Output j is the time-averaged intensity
:math:`\frac{1}{T}\int u(\mathbf{r}_j, t)^2\,dt` (Pa²) at probe j.

Reference: the FDTD wave equation of wavetorch (Hughes, Williamson, Minkov & Fan, Sci. Adv. 5,
eaay6946, 2019), with a Kerr-like intensity-dependent speed instead of its intensity-dependent
wave speed in a material region.
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
from pnn.memory import check_memory
from pnn.sim.base import AbstractSimulator, assign_scalars, check_seed, require

__all__ = ["AcousticLayer", "discrete_energy", "laplacian"]


def laplacian(u: Float[Array, "... nx ny"]) -> Float[Array, "... nx ny"]:
    """5-point Laplacian stencil times dx², with zero (Dirichlet) values beyond the grid."""
    pad = [(0, 0)] * (u.ndim - 2) + [(1, 1), (1, 1)]
    p = jnp.pad(u, pad)
    return (
        p[..., 2:, 1:-1] + p[..., :-2, 1:-1] + p[..., 1:-1, 2:] + p[..., 1:-1, :-2] - 4.0 * u
    )


def _laplacian_cells_first(u: Float[Array, "nx ny ..."]) -> Float[Array, "nx ny ..."]:
    """:func:`laplacian` for fields held cells-first, ``(nx, ny, ...)``."""
    pad = [(1, 1), (1, 1)] + [(0, 0)] * (u.ndim - 2)
    p = jnp.pad(u, pad)
    return p[2:, 1:-1] + p[:-2, 1:-1] + p[1:-1, 2:] + p[1:-1, :-2] - 4.0 * u


def _remat_scan(body, carry, xs, k: int, *, return_carry: bool = False):
    """``jax.lax.scan(body, carry, xs)[1][0]`` (the stacked first outputs) computed as an outer
    scan over segments of ``k`` steps whose inner scan is wrapped in ``jax.checkpoint``: reverse
    mode stores the carry once per segment and recomputes the segment, so memory grows as
    ``n/k + k`` steps instead of ``n``. The same steps in the same order: forward values are
    identical to the plain scan. A remainder of ``n mod k`` steps runs as a plain scan.
    ``return_carry``: return ``(final carry, outputs)``."""
    n = xs.shape[0]
    n_seg = n // k

    def inner(c, seg):
        c, (out, _) = jax.lax.scan(body, c, seg)
        return c, out

    seg_fn = jax.checkpoint(inner, prevent_cse=False)
    head = xs[: n_seg * k].reshape((n_seg, k) + xs.shape[1:])
    carry, outs = jax.lax.scan(seg_fn, carry, head)
    outs = outs.reshape((n_seg * k,) + outs.shape[2:])
    if n_seg * k < n:
        carry, (rest, _) = jax.lax.scan(body, carry, xs[n_seg * k:])
        outs = jnp.concatenate([outs, rest])
    return (carry, outs) if return_carry else outs


def discrete_energy(u_next, u, c, dx, dt):
    """Conserved discrete energy of the leapfrog scheme (undamped, constant c), J-like units.

    Shapes: ``u_next``, ``u`` are ``(..., nx, ny)``; returns ``(...)``.
    """
    kinetic = 0.5 * jnp.sum(((u_next - u) / dt) ** 2, axis=(-2, -1)) * dx**2
    potential = 0.5 * c**2 * jnp.sum(u_next * (-laplacian(u)), axis=(-2, -1))
    return kinetic + potential


def _smooth_disorder(key, nx, ny, amplitude, corr_cells):
    """Gaussian-filtered white noise, normalised to max |delta| = amplitude."""
    if amplitude == 0.0:
        return np.zeros((nx, ny))
    noise = np.asarray(jax.random.normal(key, (nx, ny)))
    kx = np.fft.fftfreq(nx)[:, None]
    ky = np.fft.fftfreq(ny)[None, :]
    filt = np.exp(-0.5 * (2 * np.pi * corr_cells) ** 2 * (kx**2 + ky**2))
    field = np.real(np.fft.ifft2(np.fft.fft2(noise) * filt))
    return amplitude * field / np.max(np.abs(field))


def _spread(n, lo, hi):
    """n integer positions spread evenly over [lo, hi]."""
    if n == 1:
        return np.array([(lo + hi) // 2])
    return np.round(np.linspace(lo, hi, n)).astype(int)


def _check_arguments(name, *, n_in, n_out, nx, ny, dt, n_steps, c_nl, disorder,
                     source_amplitude, pml_width, remat_every, positive: dict) -> int:
    """Refuse a parameter out of its range, a grid too small for its absorbing layer, its
    memory or its sources and probes (in that order); returns ``remat_every`` with its default
    (about sqrt(``n_steps``)) filled in."""
    for label, v in positive.items():
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name}: {label} must be positive and finite, got {v!r}")
    if c_nl < 0 or not np.isfinite(c_nl):
        raise ValueError(f"{name}: c_nl must be >= 0 and finite, got {c_nl!r}")
    if not (np.isfinite(source_amplitude) and source_amplitude >= 0):
        raise ValueError(
            f"{name}: source_amplitude must be >= 0 and finite (the source strength per unit "
            f"drive), got {source_amplitude!r}")
    if dt is not None and not (np.isfinite(dt) and dt > 0):
        raise ValueError(
            f"{name}: dt must be positive and finite (the leapfrog time step, s), got "
            f"{dt!r}; pass dt=None to pick a stable step (Courant number 0.65)")
    if not 0 <= disorder < 0.5:
        raise ValueError(f"{name}: disorder must be in [0, 0.5), got {disorder!r}")
    if n_steps < 1:
        raise ValueError(f"{name}: n_steps must be >= 1, got {n_steps!r}")
    if remat_every is None:
        remat_every = max(1, int(round(math.sqrt(n_steps))))
    if isinstance(remat_every, bool) or int(remat_every) != remat_every or remat_every < 0:
        raise ValueError(f"{name}: remat_every must be an integer >= 0 (0: no checkpointing) "
                         f"or None (about sqrt(n_steps)), got {remat_every!r}")
    if pml_width < 0 or 2 * pml_width + 8 > min(nx, ny):
        raise ValueError(
            f"{name}: a {nx}x{ny} grid cannot hold an absorbing layer of {pml_width} cells "
            f"on each side plus an 8-cell interior; enlarge the grid or thin the layer"
        )
    check_memory(f"{name}: a {nx}x{ny} grid", 5 * 4 * nx * ny,
                 how="the disorder and nonlinearity maps and one sample's pressure and two "
                     "velocity fields, float32",
                 fix="give smaller nx, ny")
    interior_y = ny - 2 * pml_width - 2
    if max(n_in, n_out) > interior_y:
        raise ValueError(
            f"{name}: {max(n_in, n_out)} sources/probes do not fit on the {interior_y} "
            f"interior cells of a column; use ny >= {2 * pml_width + 2 + max(n_in, n_out)}"
        )
    return remat_every


def _stable_time_step(name, dx: float, dt, c_max: float) -> float:
    """The leapfrog step dt (s): Courant number 0.65 at ``c_max`` when ``dt`` is None; refused
    above the stability limit c_max dt/dx <= 1/sqrt(2) (the message gives the largest stable
    dt)."""
    dt_max = dx / (math.sqrt(2.0) * c_max)
    if dt is None:
        dt = 0.65 * dx / c_max
    if dt > dt_max:
        raise ValueError(
            f"{name}: unstable configuration, Courant number c_max*dt/dx = "
            f"{c_max * dt / dx:.4f} exceeds 1/sqrt(2) = 0.7071 (c_max = {c_max:.4g} m/s "
            f"including disorder and saturated nonlinearity); use dt <= {dt_max:.4g} s"
        )
    return dt


def _transducer_cells(n_in: int, n_out: int, nx: int, ny: int, pml_width: int):
    """``(source cells, probe cells)``: (x, y) of each, in a column just inside the absorbing
    layer on either side, spread evenly over the interior rows."""
    lo_y, hi_y = pml_width + 1, ny - pml_width - 2
    src_x = pml_width + 2
    probe_x = nx - pml_width - 3
    return (tuple((src_x, int(y)) for y in _spread(n_in, lo_y, hi_y)),
            tuple((probe_x, int(y)) for y in _spread(n_out, lo_y, hi_y)))


def _nonlinear_mask(name, nl_region, nx: int, ny: int) -> np.ndarray:
    """``(nx, ny)``: 1 in the cell box ``nl_region`` = (x0, x1, y0, y1) of nonlinear material
    (``None``: the central half), 0 elsewhere; a box not inside the grid is refused."""
    if nl_region is None:
        nl_region = (nx // 4, 3 * nx // 4, ny // 4, 3 * ny // 4)
    region = tuple(nl_region) if isinstance(nl_region, (tuple, list)) else ()
    if len(region) != 4 or not all(isinstance(v, (int, np.integer)) and
                                   not isinstance(v, bool) for v in region) \
            or not (0 <= region[0] < region[1] <= nx and 0 <= region[2] < region[3] <= ny):
        # numpy slicing would wrap a negative bound and clip one past the grid, so a box
        # outside it would silently hold no nonlinear material
        raise ValueError(
            f"{name}: nl_region = {nl_region!r}: expected a cell box (x0, x1, y0, y1) of "
            f"integers with 0 <= x0 < x1 <= nx = {nx} and 0 <= y0 < y1 <= ny = {ny}; "
            f"give a box inside the grid, or None for the central half")
    x0, x1, y0, y1 = (int(v) for v in region)
    mask = np.zeros((nx, ny))
    mask[x0:x1, y0:y1] = 1.0
    return mask


def _absorbing_layer(nx: int, ny: int, pml_width: int, c0: float, dx: float) -> Array:
    """``(nx, ny)`` damping sigma (1/s): a quadratic profile over the ``pml_width`` outer cells,
    scaled for a theoretical normal-incidence reflection of 1e-3 (the usual polynomial-profile
    rule, order 2); zero without an absorbing layer."""
    if pml_width <= 0:
        return jnp.zeros((nx, ny))
    sigma_max = -3.0 * c0 * math.log(1e-3) / (2.0 * pml_width * dx)
    ix = np.arange(nx)[:, None]
    iy = np.arange(ny)[None, :]
    dxe = np.maximum(np.maximum(pml_width - ix, 0), np.maximum(ix - (nx - 1 - pml_width), 0))
    dye = np.maximum(np.maximum(pml_width - iy, 0), np.maximum(iy - (ny - 1 - pml_width), 0))
    d = np.maximum(dxe, dye).astype(float)
    return jnp.asarray(sigma_max * (d / pml_width) ** 2)


def _tone_burst(n_steps: int, dt: float, frequency: float, burst_cycles: float) -> np.ndarray:
    """``(n_steps,)``: the source waveform, ``burst_cycles`` cycles of the carrier under a
    sin² window, then silence."""
    t = np.arange(n_steps) * dt
    t_burst = burst_cycles / frequency
    window = np.where(t < t_burst, np.sin(np.pi * t / t_burst) ** 2, 0.0)
    return window * np.sin(2 * np.pi * frequency * t)


class _FramedLayout(NamedTuple):
    """How :meth:`AcousticLayer._simulate` holds a batch: the layout of its fields, the initial
    field and the sources in it, the maps broadcast against it, and its one-cell frame."""

    cells_first: bool
    u: Array  # the initial field, unframed
    src: Array  # the source pattern per unit waveform
    delta: Array
    mask: Array
    sigma: Array
    grid: Callable  # (i, j) -> the index of the two grid axes
    frame: list  # jnp.pad widths of the one-cell frame
    corner: tuple  # where the interior starts in a framed field
    batch_first: Callable  # a field in the layout -> (batch, nx, ny)


def _two_steps_per_iteration(step):
    """The scan body of :meth:`AcousticLayer._simulate`: over the waveform values ``ws`` of one
    iteration, alternately ``a <- step(a, c)`` and ``c <- step(c, a)``, so the carry keeps its
    buffers; returns ``((a, c), stacked step outputs)``."""

    def body(carry, ws):
        a, c = carry
        outs = []
        for i in range(ws.shape[0]):  # ws: the waveform of 2 * pairs steps, in order
            if i % 2 == 0:
                a, o = step(a, c, ws[i])
            else:
                c, o = step(c, a, ws[i])
            outs.append(o)
        return (a, c), jax.tree.map(lambda *v: jnp.stack(v), *outs)

    return body


class AcousticLayer(AbstractSimulator):
    """A nonlinear acoustic scattering region as a :class:`~pnn.layer.PhysicalLayer`.

    Args (all keyword, SI units):
        n_in, n_out: number of sources and probes.
        nx, ny: grid size in cells (including the absorbing layer).
        dx: grid spacing (m). dt: time step (s); ``None`` picks Courant number 0.65 at ``c_max``.
        n_steps: number of time steps simulated per sample.
        c0: background wave speed (m/s). c_nl: nonlinear speed coefficient (m/s/Pa²).
        u_sat: pressure (Pa) above which the nonlinear speed change saturates.
        disorder: relative amplitude of the smooth random speed variation; 0 for homogeneous.
        frequency: tone-burst carrier (Hz). burst_cycles: burst length in carrier cycles.
        source_amplitude: source strength per unit drive.
        pml_width: absorbing-layer thickness in cells (0 = reflecting Dirichlet walls).
        nl_region: (x0, x1, y0, y1) cell box of the nonlinear material; ``None`` = central half.
        speed_scale: global multiplicative speed factor (temperature-like drift parameter).
        seed: seeds the disorder field.
        name: layer name used in error messages.
        remat_every: memory of a gradient through :meth:`forward`: the time loop is split into
            segments of this many steps, each wrapped in ``jax.checkpoint``, so that reverse
            mode keeps one field per segment and recomputes the steps inside a segment instead
            of storing every step's field. ``None`` (default) picks about sqrt(``n_steps``)
            (memory grows as sqrt(n_steps) instead of n_steps, for one extra forward pass in
            the backward pass); ``0`` keeps the plain scan (every step stored). Forward results
            are the same bit for bit either way.

    The physical scalars ``c0``, ``c_nl``, ``u_sat``, ``speed_scale`` and ``source_amplitude``
    are 0-d arrays (traced: a drift or a jump sets them without recompiling); the discretisation
    (``dx``, ``dt``, ``n_steps``, the grid) and ``disorder`` (frozen into the field ``delta``) are
    static. Every change is checked by :meth:`validate_params`, including the Courant limit at
    the largest speed the saturated nonlinearity can reach.

    Raises:
        ValueError: when the Courant condition is violated (the message gives the largest stable
            dt), the grid cannot host the sources and probes, or a parameter is out of range.
    """

    physical_scalars = ("c0", "c_nl", "u_sat", "speed_scale", "source_amplitude")

    spec: LayerSpec = eqx.field(static=True)
    nx: int = eqx.field(static=True)
    ny: int = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    src_xy: tuple = eqx.field(static=True)
    probe_xy: tuple = eqx.field(static=True)
    dx: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    disorder: float = eqx.field(static=True)
    remat_every: int = eqx.field(static=True)
    c0: Array
    c_nl: Array
    u_sat: Array
    speed_scale: Array
    source_amplitude: Array
    delta: Array
    nl_mask: Array
    sigma: Array
    waveform: Array

    def __init__(
        self,
        n_in: int = 8,
        n_out: int = 8,
        *,
        nx: int = 32,
        ny: int = 36,
        dx: float = 5e-3,
        dt: float | None = None,
        n_steps: int = 150,
        c0: float = 343.0,
        c_nl: float = 150.0,
        u_sat: float = 1.0,
        disorder: float = 0.15,
        frequency: float = 8.5e3,
        burst_cycles: float = 3.0,
        source_amplitude: float = 4.0e5,
        pml_width: int = 6,
        nl_region: tuple[int, int, int, int] | None = None,
        speed_scale: float = 1.0,
        seed: int = 0,
        name: str = "acoustic",
        remat_every: int | None = None,
    ):
        remat_every = _check_arguments(
            name, n_in=n_in, n_out=n_out, nx=nx, ny=ny, dt=dt, n_steps=n_steps, c_nl=c_nl,
            disorder=disorder, source_amplitude=source_amplitude, pml_width=pml_width,
            remat_every=remat_every,
            positive={"dx": dx, "c0": c0, "u_sat": u_sat, "frequency": frequency,
                      "burst_cycles": burst_cycles, "speed_scale": speed_scale})
        self.spec = LayerSpec(n_in=n_in, n_out=n_out, lo=0.0, hi=1.0, name=name,
                              units="drive: tone-burst amplitude (0..1); output: Pa^2")
        dt = _stable_time_step(name, dx, dt, c_max=speed_scale * (c0 * (1 + disorder)
                                                                  + c_nl * u_sat**2))
        self.nx, self.ny, self.n_steps = nx, ny, n_steps
        self.dx, self.dt, self.disorder = float(dx), float(dt), float(disorder)
        self.remat_every = int(remat_every)
        assign_scalars(self, name, c0=c0, c_nl=c_nl, u_sat=u_sat, speed_scale=speed_scale,
                       source_amplitude=source_amplitude)
        self.src_xy, self.probe_xy = _transducer_cells(n_in, n_out, nx, ny, pml_width)
        key = jax.random.PRNGKey(check_seed(name, seed))
        self.delta = jnp.asarray(_smooth_disorder(key, nx, ny, disorder, corr_cells=2.5))
        self.nl_mask = jnp.asarray(_nonlinear_mask(name, nl_region, nx, ny))
        self.sigma = _absorbing_layer(nx, ny, pml_width, c0, dx)
        self.waveform = jnp.asarray(_tone_burst(n_steps, dt, frequency, burst_cycles))

    @property
    def flops_per_sample(self) -> int:
        """Real FLOPs of one sample (conventions in :mod:`pnn.sim.base`), counted from
        :meth:`step`: per cell and time step 8 for the speed law (:meth:`speed`), 5 for the
        Laplacian, 14 for the damped leapfrog update and 1 for the source term (28 in all); per
        probe and step 2 for the running mean square, and one division per probe at the end:
        ``28 nx ny n_steps + 2 n_out n_steps + n_out``."""
        n_out = self.spec.n_out
        return 28 * self.nx * self.ny * self.n_steps + 2 * n_out * self.n_steps + n_out

    @property
    def c_max(self) -> float:
        """The largest wave speed (m/s) any drive can reach with the current parameters:
        :math:`s_T[c_0(1 + d) + c_{nl} u_{sat}^2]` with d = ``disorder`` (the nonlinearity saturates at
        ``u_sat``, so no pressure exceeds it)."""
        p = {k: float(getattr(self, k)) for k in ("c0", "c_nl", "u_sat", "speed_scale")}
        return p["speed_scale"] * (p["c0"] * (1 + self.disorder) + p["c_nl"] * p["u_sat"] ** 2)

    # ------------------------------------------------------------------ core solver
    def speed(self, u: Float[Array, "... nx ny"]) -> Float[Array, "... nx ny"]:
        """Local wave speed (m/s) for pressure field ``u``."""
        return self._speed(u, self.delta, self.nl_mask)

    def _speed(self, u, delta, mask):
        lin = self.c0 * (1.0 + delta)
        nl = self.c_nl * mask * jnp.minimum(u**2, self.u_sat**2)
        return self.speed_scale * (lin + nl)

    def step(self, u_prev, u, forcing):
        """One leapfrog step on fields of shape ``(..., nx, ny)``; ``forcing`` has the shape of
        ``u`` (Pa/s², already times dt²)."""
        return self._leapfrog(u_prev, u, forcing, laplacian(u), self.delta, self.nl_mask,
                              self.sigma)

    def _leapfrog(self, u_prev, u, forcing, lap, delta, mask, sigma):
        """The update of :meth:`step` for any layout: ``delta``, ``mask`` and ``sigma``
        broadcast against ``u``, ``lap`` is the Laplacian of ``u`` (times dx²)."""
        c = self._speed(u, delta, mask)
        k = 0.5 * sigma * self.dt
        return (2.0 * u - (1.0 - k) * u_prev + (c * self.dt / self.dx) ** 2 * lap + forcing) / (
            1.0 + k
        )

    def source_field(self, x: Float[Array, "batch n_in"]) -> Float[Array, "batch nx ny"]:
        """Spatial pattern of the sources for each sample (per unit waveform)."""
        return jnp.moveaxis(self._source_cells_first(x), -1, 0)

    def _source_cells_first(self, x):
        sx = jnp.array([p[0] for p in self.src_xy])
        sy = jnp.array([p[1] for p in self.src_xy])
        field = jnp.zeros((self.nx, self.ny, x.shape[0]), dtype=x.dtype)
        scale = self.source_amplitude * (self.dt**2 / self.dx**2)
        return field.at[sx, sy, :].add((scale * x).T)

    def simulate(self, x: Float[Array, "batch n_in"], *, u0=None, record=None):
        """Run the FDTD solver; returns ``(probe_traces, extra)``.

        ``probe_traces`` has shape ``(n_steps, batch, n_out)`` (Pa). ``u0`` optionally sets an
        initial field (at rest) of shape ``(batch, nx, ny)``. ``record`` may be ``"energy"``
        (discrete energy each step, for tests; meaningful undamped) or ``"field"`` (every
        snapshot ``(n_steps, batch, nx, ny)``: memory-hungry, for plots).

        From a batch of 8 the fields are held cells-first, ``(nx, ny, batch)``: the batch is
        the contiguous axis, so one vectorised stencil updates every sample at once (measured on
        a loaded 2-core CPU at 128×128 cells, 1,000 steps, batch 32: 0.37-0.53 s against
        0.61-0.63 s for ``(batch, nx, ny)``). Both layouts do the same arithmetic: the same
        results bit for bit.
        """
        traces, extra = self._simulate(x, u0=u0, record=record)
        return (jnp.swapaxes(traces, 1, 2) if self._cells_first(x.shape[0]) else traces), extra

    @staticmethod
    def _cells_first(batch: int) -> bool:
        # a batch below 8 fills too little of a vector register to pay for the layout
        # (measured at 32x36 cells: batch 1 is about 1.4x slower cells-first)
        return batch >= 8

    def _simulate(self, x, *, u0=None, record=None):
        """:meth:`simulate` with the probe traces as ``(n_steps, n_out, batch)`` when the batch
        is held cells-first (:meth:`_cells_first`), ``(n_steps, batch, n_out)`` otherwise.

        How the time loop is laid out for XLA (the arithmetic is :meth:`_leapfrog`'s, unchanged):

        * Each field is held with a one-cell frame of zeros around the grid (the Dirichlet
          values), so the Laplacian is four slices of the held field and no ``jnp.pad`` runs per
          step (a pad with two consumers is materialised by XLA as a separate pass).
        * The new field overwrites the oldest one in place (``dynamic_update_slice`` into
          ``u_prev``'s frame, which is read only at the cell being written): XLA emits one fused
          loop per step that reads ``u``, ``u_prev`` and the source and writes ``u_next``.
        * One scan iteration runs two steps, ``a <- step(a, b)`` then ``b <- step(b, a)``, so
          the carry keeps its buffers: swapping ``(u_prev, u) -> (u, u_next)`` each step would
          make XLA copy both fields every iteration. An odd last step runs after the scan.
        * Batches below 16 take :meth:`_simulate_swap` (the previous loop), which is faster there.
        """
        if x.shape[0] < 16:
            return self._simulate_swap(x, u0=u0, record=record)
        dtype = jnp.result_type(x.dtype, jnp.float32)
        x = jnp.asarray(x, dtype)
        lay = self._framed_layout(x, u0, dtype)
        # probe cells in the framed field
        px = jnp.array([p[0] + 1 for p in self.probe_xy])
        py = jnp.array([p[1] + 1 for p in self.probe_xy])
        waveform = self.waveform.astype(dtype)
        body = _two_steps_per_iteration(self._framed_step(lay, px, py, record))
        return self._run_framed(body, jnp.pad(lay.u, lay.frame), waveform, record, x.shape[0])

    def _framed_layout(self, x, u0, dtype) -> _FramedLayout:
        """The fields of :meth:`_simulate` for the batch ``x``: cells-first or batch-first
        (:meth:`_cells_first`), the initial field (zero, or ``u0``) and the source pattern in that
        layout, and how a one-cell frame is indexed and padded in it."""
        b = x.shape[0]
        cells_first = self._cells_first(b)
        u = jnp.zeros((b, self.nx, self.ny), dtype) if u0 is None else u0.astype(dtype)
        if cells_first:
            src = self._source_cells_first(x)
            u = jnp.moveaxis(u, 0, -1)
            delta, mask, sigma = (a[..., None] for a in (self.delta, self.nl_mask, self.sigma))
            return _FramedLayout(
                cells_first, u, src, delta, mask, sigma,
                grid=lambda i, j: (i, j), frame=[(1, 1), (1, 1), (0, 0)], corner=(1, 1, 0),
                batch_first=lambda f: jnp.moveaxis(f, -1, 0))
        return _FramedLayout(
            cells_first, u, self.source_field(x), self.delta, self.nl_mask, self.sigma,
            grid=lambda i, j: (slice(None), i, j), frame=[(0, 0), (1, 1), (1, 1)],
            corner=(0, 1, 1), batch_first=lambda f: f)

    def _framed_step(self, lay: _FramedLayout, px, py, record):
        """``step(a, c, w)``: one leapfrog step on framed fields, ``a`` (u_prev) overwritten by
        u_next from ``c`` (u) and the waveform value ``w``; returns ``(a, (probe values at
        (px, py), extra))`` with ``extra`` what ``record`` asks for (or None)."""
        grid = lay.grid
        inner = grid(slice(1, -1), slice(1, -1))

        def step(a, c, w):
            u_cur = c[inner]
            lap = (c[grid(slice(2, None), slice(1, -1))] + c[grid(slice(None, -2), slice(1, -1))]
                   + c[grid(slice(1, -1), slice(2, None))]
                   + c[grid(slice(1, -1), slice(None, -2))] - 4.0 * u_cur)
            u_next = self._leapfrog(a[inner], u_cur, lay.src * w, lap, lay.delta, lay.mask,
                                    lay.sigma)
            a = jax.lax.dynamic_update_slice(a, u_next, lay.corner)
            out = a[px, py, :] if lay.cells_first else a[:, px, py]
            if record == "energy":
                extra = discrete_energy(lay.batch_first(a[inner]), lay.batch_first(u_cur),
                                        self.c0 * self.speed_scale, self.dx, self.dt)
            elif record == "field":
                extra = lay.batch_first(a[inner])
            else:
                extra = None
            return a, (out, extra)

        return step

    def _run_framed(self, body, u, waveform, record, batch: int):
        """Run the scan ``body`` (:func:`_two_steps_per_iteration`) from the framed field ``u``
        (at rest) over the waveform, checkpointed in segments when no record is asked for;
        the steps left over after whole iterations run unrolled. Returns ``(traces, extra)``."""
        n = self.n_steps
        per = 2 * self._pairs_per_iteration(batch)
        n_it = n // per
        carry = (u, u)
        parts = []
        if n_it:
            ws = waveform[: n_it * per].reshape((n_it, per) + waveform.shape[1:])
            if record is None and 0 < self.remat_every < n:
                seg = max(1, round(self.remat_every / per))
                traces = _remat_scan(body, carry, ws, seg, return_carry=True)
                carry, traces = traces
                parts.append((traces.reshape((-1,) + traces.shape[2:]), None))
            else:
                carry, (traces, extra) = jax.lax.scan(body, carry, ws)
                flat = lambda v: v.reshape((-1,) + v.shape[2:])  # noqa: E731
                parts.append((flat(traces), None if extra is None else flat(extra)))
        rest = n - n_it * per
        if rest:
            # the remaining steps, unrolled (fewer than one iteration's worth)
            _, (traces, extra) = body(carry, waveform[n_it * per:])
            parts.append((traces, extra))
        traces = jnp.concatenate([t for t, _ in parts]) if len(parts) > 1 else parts[0][0]
        if record is None:
            return traces, None
        extra = jnp.concatenate([e for _, e in parts]) if len(parts) > 1 else parts[0][1]
        return traces, extra

    def _pairs_per_iteration(self, batch: int) -> int:
        """Pairs of time steps per scan iteration: 1 (two or more pairs per iteration made XLA
        copy the fields again, measured on a 2-core CPU)."""
        cells = self.nx * self.ny * batch
        return 1

    def _simulate_swap(self, x, *, u0=None, record=None):
        """:meth:`_simulate` for batches below 16: unframed fields, one step per scan
        iteration (the in-place update's loop is not vectorised by XLA when the batch, the
        contiguous axis, is shorter than a 512-bit vector: measured 2-3x slower there)."""
        dtype = jnp.result_type(x.dtype, jnp.float32)
        x = jnp.asarray(x, dtype)
        b = x.shape[0]
        cells_first = self._cells_first(b)
        u = jnp.zeros((b, self.nx, self.ny), dtype) if u0 is None else u0.astype(dtype)
        if cells_first:
            src = self._source_cells_first(x)
            u = jnp.moveaxis(u, 0, -1)
            delta, mask, sigma = (a[..., None] for a in (self.delta, self.nl_mask, self.sigma))
            lap, batch_first = _laplacian_cells_first, lambda f: jnp.moveaxis(f, -1, 0)
        else:
            src = self.source_field(x)
            delta, mask, sigma = self.delta, self.nl_mask, self.sigma
            lap, batch_first = laplacian, lambda f: f
        px = jnp.array([p[0] for p in self.probe_xy])
        py = jnp.array([p[1] for p in self.probe_xy])
        waveform = self.waveform.astype(dtype)

        def body(carry, w):
            u_prev, u_cur = carry
            u_next = self._leapfrog(u_prev, u_cur, src * w, lap(u_cur), delta, mask, sigma)
            out = u_next[px, py, :] if cells_first else u_next[:, px, py]
            if record == "energy":
                extra = discrete_energy(batch_first(u_next), batch_first(u_cur),
                                        self.c0 * self.speed_scale, self.dx, self.dt)
            elif record == "field":
                extra = batch_first(u_next)
            else:
                extra = None
            return (u_cur, u_next), (out, extra)

        if record is None and 0 < self.remat_every < self.n_steps:
            traces = _remat_scan(body, (u, u), waveform, self.remat_every)
            return traces, None
        _, (traces, extra) = jax.lax.scan(body, (u, u), waveform)
        return traces, extra

    def forward(self, x: Float[Array, "batch n_in"], *, key=None) -> Float[Array, "batch n_out"]:
        """Mean-square pressure (Pa²) at each probe for each drive vector (unvalidated; the
        layer is deterministic and ignores ``key``)."""
        traces, _ = self._simulate(x)
        y = jnp.mean(traces**2, axis=0)
        return y.T if self._cells_first(x.shape[0]) else y

    def validate_params(self) -> None:
        """Refuse physical scalars that a drift, a jump or a hand edit has moved out of range.

        Each scalar must be finite; ``c0``, ``u_sat`` and ``speed_scale`` positive, ``c_nl`` and
        ``source_amplitude`` non-negative. The time step is fixed at construction, so the
        Courant number at the largest speed any drive can reach, :attr:`c_max` (disorder and
        the saturated nonlinearity included), must stay at or below 1/sqrt(2): a larger
        ``speed_scale``, ``c0``, ``c_nl`` or ``u_sat`` raises it, and beyond the limit the scheme
        blows up. Called at construction, by :meth:`__call__` whenever the values are concrete,
        and by the drift wrappers for every value they set.

        Raises:
            ValueError: naming the parameter, its value, its stable range with the others as
                they are, and the fix.
        """
        v = self.params()
        if v is None:
            return
        name = self.spec.name
        rules = (("c0", "m/s", v["c0"] > 0, "must be positive", "the background wave speed"),
                 ("c_nl", "m/s/Pa^2", v["c_nl"] >= 0, "must be >= 0",
                  "a negative intensity-dependent speed can drive the local speed to zero"),
                 ("u_sat", "Pa", v["u_sat"] > 0, "must be positive",
                  "the pressure at which the nonlinear speed change saturates"),
                 ("speed_scale", "", v["speed_scale"] > 0, "must be positive",
                  "a multiplicative factor on every wave speed"),
                 ("source_amplitude", "", v["source_amplitude"] >= 0, "must be >= 0",
                  "the source strength per unit drive"))
        for k, unit, ok, rule, why in rules:
            finite = math.isfinite(v[k])
            require(name, k, v[k], finite and ok, rule + " and finite", unit=unit, why=why,
                    fix=f"set {k} back to a value in range")
        s, c0, c_nl, u_sat = v["speed_scale"], v["c0"], v["c_nl"], v["u_sat"]
        lin = c0 * (1.0 + self.disorder)  # the largest linear speed per unit speed_scale
        c_max = s * (lin + c_nl * u_sat**2)
        c_lim = self.dx / (math.sqrt(2.0) * self.dt)  # the largest stable speed for this dt
        if c_max <= c_lim * (1 + 1e-6):
            return
        room = c_lim / s - lin  # what is left for the nonlinearity at this speed_scale
        c0_lim = (c_lim / s - c_nl * u_sat**2) / (1.0 + self.disorder)

        def rng(lo, lim, unit=""):
            if lim <= 0:
                return "has no stable value with the others as they are"
            return f"is outside the stable range {lo}{lim:.4g}]{' ' + unit if unit else ''}"

        others = [f"c0 = {c0:.6g} m/s {rng('(0, ', c0_lim, 'm/s')}"]
        if c_nl > 0:
            others.append(f"c_nl = {c_nl:.6g} m/s/Pa^2 "
                          f"{rng('[0, ', room / u_sat**2 if room > 0 else 0.0, 'm/s/Pa^2')}")
            others.append(f"u_sat = {u_sat:.6g} Pa "
                          f"{rng('(0, ', math.sqrt(room / c_nl) if room > 0 else 0.0, 'Pa')}")
        s_lim = c_lim / (lin + c_nl * u_sat**2)
        raise ValueError(
            f"{name}: speed_scale = {s:.6g} is outside the stable range (0, {s_lim:.4f}] and "
            f"{', '.join(others)}: with dt = {self.dt:.4g} s fixed at construction the Courant "
            f"number would be {c_max * self.dt / self.dx:.4f} > 1/sqrt(2) at the largest speed "
            f"the nonlinearity can reach, c_max = speed_scale*(c0*(1 + disorder) + c_nl*u_sat^2) = "
            f"{c_max:.5g} m/s (disorder = {self.disorder:.3g}; the nonlinearity saturates at "
            f"u_sat), and the scheme would blow up; bring one of them back into its range, or "
            f"build the layer with dt <= {self.dx / (math.sqrt(2.0) * c_max):.4g} s to allow "
            f"these speeds")
