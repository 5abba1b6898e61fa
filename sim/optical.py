r"""Nonlinear ultrafast optics: a pulse shaper, a χ(3) fibre or a χ(2) crystal, a spectrometer.

Physics
-------
A pulse with slowly varying envelope :math:`A(z, T)` (√W; :math:`|A|^2` is the power in W) in the
frame moving at the group velocity (T in ps, z in m). The physical field is
:math:`\mathrm{Re}[A\,e^{i(\beta_0 z - \omega_0 t)}]`, so a spectral component
:math:`A \propto e^{-i\Delta\omega T}` sits at the optical frequency :math:`\omega_0 + \Delta\omega`
(``omega``, rad/ps, positive = blue). In code the spectrum is ``fft(A)`` on the grid
``omega = -2π fftfreq(n_t, dt)``.

*Fibre* (``medium="fiber"``), the nonlinear Schrödinger equation (Agrawal, *Nonlinear Fiber
Optics*, 6th ed., eq. 2.3.46 with the Raman term dropped):

.. math::  \partial_z A = -\tfrac{\alpha}{2} A - \tfrac{i\beta_2}{2}\partial_T^2 A
           + \tfrac{\beta_3}{6}\partial_T^3 A + i\gamma |A|^2 A

with ``beta2`` β2 (ps²/m), ``beta3`` β3 (ps³/m), ``gamma`` γ (1/(W·m)), ``alpha`` α (1/m, power
loss). In the spectral domain the linear part is a multiplication by
:math:`\exp[\hat D h]`, :math:`\hat D(\Delta\omega) = i\frac{\beta_2}{2}\Delta\omega^2 +
i\frac{\beta_3}{6}\Delta\omega^3 - \frac{\alpha}{2}`. Dispersion length
:math:`L_D = T_0^2/|\beta_2|`, nonlinear length :math:`L_{NL} = 1/(\gamma P_0)`, soliton order
:math:`N^2 = L_D/L_{NL}`.

*Crystal* (``medium="shg"``), type-0 second-harmonic generation of the fundamental :math:`A_1`
into the second harmonic :math:`A_2` (both √W), in the frame of the fundamental, with the
mismatch absorbed in :math:`B_2 = A_2 e^{-i\Delta k z}` (Boyd, *Nonlinear Optics*, §2.6–2.7):

.. math::  \partial_z A_1 = i\kappa\,B_2 A_1^*, \qquad
           \partial_z B_2 = -\delta\,\partial_T B_2 - i\Delta k\,B_2 + i\kappa A_1^2

``kappa`` κ (1/(√W·m)) the coupling, ``delta_k`` Δk = k(2ω0) − 2k(ω0) (1/m), ``gvm`` δ =
1/v_g(2ω0) − 1/v_g(ω0) (ps/m, group-velocity mismatch), ``crystal_length`` L (m). Energy
:math:`\int(|A_1|^2 + |A_2|^2)dT` is conserved. Without depletion and walk-off the conversion
efficiency is :math:`|A_2(L)|^2/|A_1|^2 = \kappa^2 |A_1|^2 L^2\,\mathrm{sinc}^2(\Delta k L/2)`.

Discretisation
--------------
``n_t`` points over a periodic time window ``time_window`` (ps), step ``dt``. Fibre: symmetric
split-step Fourier (Strang) with ``n_steps`` steps of ``h = length/n_steps``: half a linear step
(exact, spectral), a full nonlinear step (exact: :math:`A e^{i\gamma|A|^2 h}`), half a linear
step; second order in h, and it conserves :math:`\sum|A|^2 dt` to round-off when α = 0.
Crystal: the same splitting with the linear step
:math:`\tilde B_2 \leftarrow \tilde B_2 e^{(-i\Delta k + i\delta\Delta\omega)h/2}` and one classical
RK4 step of the (time-local) coupling per z-step. Both loops are ``jax.lax.scan`` over z, batched
over samples.

Encoding
--------
A transform-limited input pulse :math:`A_0(T) = \sqrt{P_0}\,\mathrm{sech}(T/T_0)` (or
:math:`\sqrt{P_0}e^{-T^2/2T_0^2}`, ``pulse="gaussian"``) goes through a 4f pulse shaper whose
mask is set by the drive. The shaper window of width :math:`W` = ``shaper_span`` × (spectral
FWHM of :math:`|\tilde A_0|^2`), centred on ω0, holds ``n_in`` equal bands with centres
:math:`\omega_i = -W/2 + (i + \tfrac12)W/n_{in}`. The mask profile :math:`m(\Delta\omega)` is the
piecewise-linear interpolant of :math:`(\omega_i, x_i)`, held constant beyond the outer centres
(a smoothed pixelated modulator; the smoothing avoids the time-domain replicas of hard pixel
edges). Then :math:`\tilde A_{in} = \tilde A_0 \cdot M`, with

* ``encoding="phase"`` (default): :math:`M = \exp(i\,\phi_{max} m(\Delta\omega))` over the whole
  spectrum, ``phase_range`` :math:`\phi_{max}` (rad); the pulse energy does not depend on x.
* ``encoding="amplitude"``: :math:`M = m(\Delta\omega)` inside the window and 0 outside it (field
  transmission; the power transmission is :math:`m^2`).

Read-out
--------
A spectrometer bins the output power spectrum of the fundamental (``readout="fundamental"``),
of the second harmonic (``"sh"``, crystal only), or both (``"both"``: the first ⌈n_out/2⌉
channels see the fundamental, the rest the SH). Each spectrum is blurred by a Gaussian
instrument response of FWHM ``resolution`` (rad/ps) and integrated over ``n_ch`` equal bins
spanning ``spectrometer_span`` (rad/ps) centred on ω0 (resp. 2ω0). Output j is
:math:`y_j = n_{out}\,E_j / E_{ref}`, the bin energy in units of the unshaped input pulse energy
:math:`E_{ref} = \int|A_0|^2 dT` per channel (dimensionless). Optional detector noise:
:math:`y \leftarrow \max(0, y(1 + \sigma_{rel}\xi_1) + \sigma_{abs}\xi_2)`, ξ standard normal
(a detector never reads negative energy).

Reference: the optical physical neural network of Wright, Onodera, Stein, Wang, Laydevant,
McMahon, Nature 601, 549 (2022) (spectral-phase encoding, SHG, spectrometer read-out).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float
from scipy.special import erf

from pnn.layer import LayerSpec
from pnn.sim.base import AbstractSimulator, assign_scalars, check_seed, fft_flops, require

__all__ = ["OpticalLayer", "interp_basis"]

_MEDIA = ("fiber", "shg")
_ENCODINGS = ("phase", "amplitude")
_READOUTS = ("fundamental", "sh", "both")
_PULSES = ("sech", "gaussian")
# largest nonlinear phase gamma*P0*h (rad) allowed per split step; a pulse may compress, so the
# real per-step phase can exceed this a few times over before splitting errors grow large
_MAX_NL_PHASE_PER_STEP = 0.5
# largest coupling rotation kappa*sqrt(P0)*h (rad) per RK4 step
_MAX_SHG_ROTATION_PER_STEP = 0.5


def _steps_needed(total: float, per_step: float) -> int:
    """The fewest steps that keep ``total / n <= per_step``, forgiving float32 round-off in the
    stored parameters (2000 * 30 * 1e-3 must ask for 120 steps, not 121)."""
    return max(1, math.ceil(total / per_step * (1 - 1e-6)))


def interp_basis(grid: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Hat-function weights B (len(grid), len(centres)) with ``B @ v`` the piecewise-linear
    interpolant of ``(centres, v)`` at ``grid``, constant beyond the outer centres."""
    n = len(centres)
    out = np.zeros((len(grid), n))
    if n == 1:
        out[:, 0] = 1.0
        return out
    pos = np.clip(np.interp(grid, centres, np.arange(n)), 0, n - 1)
    i0 = np.minimum(np.floor(pos).astype(int), n - 2)
    frac = pos - i0
    rows = np.arange(len(grid))
    out[rows, i0] = 1.0 - frac
    out[rows, i0 + 1] += frac
    return out


def _bin_matrix(omega, lo, hi, n_bins, resolution):
    """R (n_bins, n_t): energy of the Gaussian-blurred spectrum falling in each equal bin."""
    edges = np.linspace(lo, hi, n_bins + 1)
    w = omega[None, :]
    if resolution > 0:
        s = resolution / (2.0 * math.sqrt(2.0 * math.log(2.0))) * math.sqrt(2.0)
        return 0.5 * (erf((edges[1:, None] - w) / s) - erf((edges[:-1, None] - w) / s))
    return ((w >= edges[:-1, None]) & (w < edges[1:, None])).astype(float)


def _check_arguments(name, *, medium, encoding, readout, pulse, n_out, n_steps, n_t, alpha,
                     positive: dict, nonnegative: dict, finite: dict) -> None:
    """Refuse an unknown option, a parameter out of its range, a read-out the medium cannot
    give, or a malformed step count or grid size (in that order)."""
    for label, v, options in (("medium", medium, _MEDIA), ("encoding", encoding, _ENCODINGS),
                              ("readout", readout, _READOUTS), ("pulse", pulse, _PULSES)):
        if v not in options:
            raise ValueError(f"{name}: {label} must be one of {options}, got {v!r}")
    for label, v in positive.items():
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name}: {label} must be positive and finite, got {v!r}")
    for label, v in nonnegative.items():
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name}: {label} must be >= 0 and finite, got {v!r}")
    for label, v in finite.items():
        if not np.isfinite(v):
            raise ValueError(f"{name}: {label} must be finite, got {v!r}")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(
            f"{name}: alpha must be >= 0 (a passive fibre loses power; gain would make the "
            f"pulse energy unbounded), got {alpha!r}"
        )
    if readout != "fundamental" and medium != "shg":
        raise ValueError(
            f"{name}: readout={readout!r} reads the second harmonic, which a χ(3) fibre does "
            f"not generate; use medium='shg' or readout='fundamental'"
        )
    if readout == "both" and n_out < 2:
        raise ValueError(f"{name}: readout='both' needs n_out >= 2, got {n_out}")
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"{name}: n_steps must be a positive integer, got {n_steps!r}")
    if not isinstance(n_t, (int, np.integer)) or n_t < 16 or n_t % 2:
        raise ValueError(f"{name}: n_t must be an even integer >= 16, got {n_t!r}")


def _time_step(name, t0: float, time_window, n_t: int) -> float:
    """The grid's time step dt (ps) for a window of ``time_window`` ps (``None``: 40 T0), refused
    when the window cannot hold the pulse or the step does not resolve it."""
    if time_window is None:
        time_window = 40.0 * t0
    if not (np.isfinite(time_window) and time_window >= 10.0 * t0):
        raise ValueError(
            f"{name}: the time window ({time_window!r} ps) must hold the pulse and its "
            f"dispersed tails; use time_window >= 10 * pulse_width = {10 * t0:.4g} ps"
        )
    dt = time_window / n_t
    if dt > t0 / 2.0:
        raise ValueError(
            f"{name}: the time grid does not resolve the pulse: dt = {dt:.4g} ps > "
            f"pulse_width/2 = {t0 / 2:.4g} ps; use n_t >= {int(2 * time_window / t0) + 1} or a "
            f"shorter time_window"
        )
    return dt


def _input_pulse(pulse: str, peak_power: float, t0: float, n_t: int, dt: float):
    """``(T, omega, A0(T), spectral FWHM)``: the time grid (ps), its angular frequencies
    (rad/ps, ``-2π fftfreq``), the transform-limited input field (√W) and the FWHM (rad/ps) of
    its power spectrum."""
    t = (np.arange(n_t) - n_t // 2) * dt
    omega = -2.0 * np.pi * np.fft.fftfreq(n_t, dt)
    if pulse == "sech":
        a0 = np.sqrt(peak_power) / np.cosh(t / t0)
        fwhm = 2.0 * math.acosh(math.sqrt(2.0)) * 2.0 / (math.pi * t0)  # of sech^2(pi T0 w/2)
    else:
        a0 = np.sqrt(peak_power) * np.exp(-0.5 * (t / t0) ** 2)
        fwhm = 2.0 * math.sqrt(math.log(2.0)) / t0  # of exp(-(T0 w)^2)
    return t, omega, a0, fwhm


def _spectral_windows(name, medium, readout, n_out, dt, fwhm, shaper_span, spectrometer_span,
                      resolution):
    """``(shaper window width, spectrometer span, resolution, fundamental channels)`` (rad/ps),
    the defaults filled in; refused when a window exceeds the grid's bandwidth."""
    w_max = np.pi / dt
    shaper_w = shaper_span * fwhm
    if shaper_w / 2 > 0.9 * w_max:
        raise ValueError(
            f"{name}: the shaper window (±{shaper_w / 2:.4g} rad/ps) exceeds the grid's "
            f"bandwidth (±{w_max:.4g} rad/ps); reduce shaper_span or increase n_t"
        )
    if spectrometer_span is None:
        # SPM broadens the fibre's spectrum; a crystal leaves the fundamental's width alone
        spectrometer_span = (8.0 if medium == "fiber" else 4.0) * fwhm
    if not (np.isfinite(spectrometer_span) and 0 < spectrometer_span / 2 <= w_max):
        raise ValueError(
            f"{name}: spectrometer_span must be positive and within the grid's bandwidth "
            f"2*pi/dt = {2 * w_max:.4g} rad/ps, got {spectrometer_span!r}; increase n_t or "
            f"narrow the spectrometer"
        )
    n_fund = {"fundamental": n_out, "sh": 0, "both": (n_out + 1) // 2}[readout]
    bin_w = spectrometer_span / max(n_fund, n_out - n_fund)
    if resolution is None:
        resolution = 0.5 * bin_w
    if not (np.isfinite(resolution) and 0 <= resolution <= spectrometer_span):
        raise ValueError(
            f"{name}: resolution must lie in [0, spectrometer_span = "
            f"{spectrometer_span:.4g}] rad/ps, got {resolution!r}"
        )
    return shaper_w, spectrometer_span, resolution, n_fund


def _check_step_size(name, medium, n_steps, *, peak_power, gamma, length, kappa,
                     crystal_length) -> None:
    """Refuse z-steps so coarse that the nonlinear phase (fibre) or the coupling rotation
    (crystal) per step is large; the message gives the smallest ``n_steps`` that is not."""
    if medium == "fiber":
        phi = gamma * peak_power * length / n_steps
        if phi > _MAX_NL_PHASE_PER_STEP:
            need = math.ceil(gamma * peak_power * length / _MAX_NL_PHASE_PER_STEP)
            raise ValueError(
                f"{name}: split step too coarse: nonlinear phase per step gamma*P0*h = "
                f"{phi:.3g} rad exceeds {_MAX_NL_PHASE_PER_STEP} rad, so the splitting error "
                f"would dominate; use n_steps >= {need}"
            )
    else:
        rot = kappa * math.sqrt(peak_power) * crystal_length / n_steps
        if rot > _MAX_SHG_ROTATION_PER_STEP:
            need = math.ceil(kappa * math.sqrt(peak_power) * crystal_length
                             / _MAX_SHG_ROTATION_PER_STEP)
            raise ValueError(
                f"{name}: RK4 step too coarse: coupling kappa*sqrt(P0)*h = {rot:.3g} rad per "
                f"step exceeds {_MAX_SHG_ROTATION_PER_STEP}; use n_steps >= {need}"
            )


def _spectrometer_bins(omega, a0, dt, n_out, n_fund, span, resolution):
    """``(bins of the fundamental, bins of the SH)``, each ``(n_ch, n_t)``: the bin matrices
    (:func:`_bin_matrix`) times the Parseval factor dt/n_t and the output normalisation
    n_out/E_ref."""
    n_t = len(omega)
    scale = n_out * dt / n_t / (np.sum(a0**2) * dt)
    half = span / 2
    return tuple(
        jnp.asarray(scale * _bin_matrix(omega, -half, half, n_ch, resolution).reshape(-1, n_t))
        for n_ch in (n_fund, n_out - n_fund))


class _CallCounter:
    """Host-side count of noisy calls, so that each call draws fresh, reproducible noise.

    It never enters a traced computation, so all counters compare equal: layers that differ only
    in their counter share compiled code.
    """

    def __init__(self):
        self.n = 0

    def __eq__(self, other):
        return isinstance(other, _CallCounter)

    def __hash__(self):
        return hash(_CallCounter)

    def next(self) -> int:
        self.n += 1
        return self.n - 1


class OpticalLayer(AbstractSimulator):
    """A shaped femtosecond pulse through a nonlinear medium, read by a spectrometer.

    Args (all keyword; ps, m, W, rad/ps):
        n_in, n_out: shaper bands and spectrometer channels.
        medium: ``"fiber"`` (χ(3), NLSE) or ``"shg"`` (χ(2) crystal).
        encoding: ``"phase"`` or ``"amplitude"`` (see the module docstring).
        readout: ``"fundamental"``, ``"sh"`` or ``"both"`` (the last two need ``medium="shg"``).
        pulse: ``"sech"`` or ``"gaussian"``. pulse_width: T0 (ps), the sech/Gaussian time scale.
        peak_power: P0 (W) of the unshaped pulse.
        length: fibre length (m). gamma: Kerr coefficient γ (1/(W·m)). beta2: GVD β2 (ps²/m).
        beta3: third-order dispersion β3 (ps³/m). alpha: power loss α (1/m).
        crystal_length: L (m). kappa: SHG coupling κ (1/(√W·m)). delta_k: phase mismatch Δk (1/m).
        gvm: group-velocity mismatch δ (ps/m).
        n_steps: z-steps (fibre: split steps; crystal: split steps with one RK4 step each).
        n_t: time-grid points (a power of two is fastest). time_window: grid length (ps);
            ``None`` = 40 T0.
        phase_range: largest spectral phase φmax (rad) for ``encoding="phase"``.
        shaper_span: shaper window in units of the input spectral FWHM.
        spectrometer_span: spectrometer window (rad/ps); ``None`` = 8 (fibre) or 4 (crystal) ×
            the input spectral FWHM.
        resolution: spectrometer FWHM resolution (rad/ps); ``None`` = half a bin; 0 = ideal.
        noise_rel, noise_abs: detector noise (relative, and absolute in output units); 0 = off.
        seed: seeds the detector noise (the layer is otherwise deterministic).
        name: layer name used in error messages.

    Physical scalars are 0-d array fields (traced: changing one, e.g. by a drift, does not
    recompile); the intended drift parameters are ``length`` and ``gamma`` (fibre) and
    ``crystal_length`` and ``delta_k`` (crystal). ``peak_power`` scales the shaped pulse's field
    by sqrt(P0 / P0 at construction) (a laser power drift); the read-out stays in units of the
    design pulse's energy (the spectrometer's calibration). ``pulse_width`` is frozen into the
    time grid, the pulse and the shaper at construction, so it is static.

    Raises:
        ValueError: when a parameter is out of range, the time grid does not resolve the pulse or
            its spectrum, the split step is too coarse for the nonlinearity (the message gives the
            smallest stable ``n_steps``), or the read-out asks for a harmonic the medium lacks.
    """

    physical_scalars = ("peak_power", "phase_range", "length", "gamma", "beta2", "beta3",
                        "alpha", "crystal_length", "kappa", "delta_k", "gvm")

    spec: LayerSpec = eqx.field(static=True)
    medium: str = eqx.field(static=True)
    encoding: str = eqx.field(static=True)
    readout: str = eqx.field(static=True)
    n_t: int = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    n_fund: int = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    noise_rel: float = eqx.field(static=True)
    noise_abs: float = eqx.field(static=True)
    _calls: _CallCounter = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    pulse_width: float = eqx.field(static=True)
    design_power: float = eqx.field(static=True)  # P0 at construction, the power of ``a0``
    # physical scalars are 0-d arrays: traced, so a drift or a new value does not recompile
    peak_power: Array
    phase_range: Array
    beta3: Array
    alpha: Array
    kappa: Array
    gvm: Array
    length: Array
    gamma: Array
    beta2: Array
    crystal_length: Array
    delta_k: Array
    time: Array
    omega: Array
    a0: Array
    e_ref: Array
    shaper_basis: Array
    shaper_window: Array
    bins_fund: Array
    bins_sh: Array

    def __init__(
        self,
        n_in: int = 8,
        n_out: int = 8,
        *,
        medium: str = "fiber",
        encoding: str = "phase",
        readout: str = "fundamental",
        pulse: str = "sech",
        pulse_width: float = 0.1,
        peak_power: float = 900.0,
        length: float = 1.0,
        gamma: float = 0.01,
        beta2: float = -0.01,
        beta3: float = 0.0,
        alpha: float = 0.0,
        crystal_length: float = 1e-3,
        kappa: float = 20.0,
        delta_k: float = 0.0,
        gvm: float = 100.0,
        n_steps: int = 40,
        n_t: int = 256,
        time_window: float | None = None,
        phase_range: float = 2.0 * math.pi,
        shaper_span: float = 3.0,
        spectrometer_span: float | None = None,
        resolution: float | None = None,
        noise_rel: float = 0.0,
        noise_abs: float = 0.0,
        seed: int = 0,
        name: str = "optical",
    ):
        _check_arguments(
            name, medium=medium, encoding=encoding, readout=readout, pulse=pulse, n_out=n_out,
            n_steps=n_steps, n_t=n_t, alpha=alpha,
            positive={"pulse_width": pulse_width, "peak_power": peak_power, "length": length,
                      "crystal_length": crystal_length, "shaper_span": shaper_span,
                      "phase_range": phase_range},
            nonnegative={"gamma": gamma, "kappa": kappa, "noise_rel": noise_rel,
                         "noise_abs": noise_abs},
            finite={"beta2": beta2, "beta3": beta3, "delta_k": delta_k, "gvm": gvm})
        t0 = float(pulse_width)
        dt = _time_step(name, t0, time_window, n_t)
        self.spec = LayerSpec(
            n_in=n_in, n_out=n_out, lo=0.0, hi=1.0, name=name,
            units=f"drive: shaper {encoding} (0..1); output: bin energy / (E_ref/n_out)",
        )
        self.medium, self.encoding, self.readout = medium, encoding, readout
        self.n_t, self.n_steps, self.seed = int(n_t), int(n_steps), check_seed(name, seed)
        self.noise_rel, self.noise_abs = float(noise_rel), float(noise_abs)
        self._calls = _CallCounter()
        self.dt = float(dt)
        self.pulse_width, self.design_power = t0, float(peak_power)
        assign_scalars(self, name, peak_power=peak_power, phase_range=phase_range, beta3=beta3,
                       alpha=alpha, kappa=kappa, gvm=gvm, length=length, gamma=gamma,
                       beta2=beta2, crystal_length=crystal_length, delta_k=delta_k)

        t, omega, a0, fwhm = _input_pulse(pulse, peak_power, t0, n_t, dt)
        shaper_w, spectrometer_span, resolution, self.n_fund = _spectral_windows(
            name, medium, readout, n_out, dt, fwhm, shaper_span, spectrometer_span, resolution)
        _check_step_size(name, medium, n_steps, peak_power=peak_power, gamma=gamma,
                         length=length, kappa=kappa, crystal_length=crystal_length)

        self.time = jnp.asarray(t)
        self.omega = jnp.asarray(omega)
        self.a0 = jnp.asarray(np.fft.fft(a0))
        self.e_ref = jnp.asarray(np.sum(a0**2) * dt)
        centres = -shaper_w / 2 + (np.arange(n_in) + 0.5) * shaper_w / n_in
        self.shaper_basis = jnp.asarray(interp_basis(omega, centres))
        self.shaper_window = jnp.asarray((np.abs(omega) <= shaper_w / 2).astype(float))
        self.bins_fund, self.bins_sh = _spectrometer_bins(
            omega, a0, dt, n_out, self.n_fund, spectrometer_span, resolution)

    # ------------------------------------------------------------------ physics
    def _cdtype(self, dtype):
        return jnp.result_type(dtype, jnp.complex64)

    @eqx.filter_jit
    def shape_pulse(self, x: Float[Array, "batch n_in"]) -> Complex[Array, "batch n_t"]:
        """Spectrum (``fft`` of the field, √W) after the pulse shaper, for each drive vector."""
        dtype = jnp.result_type(x.dtype, jnp.float32)
        m = jnp.asarray(x, dtype) @ self.shaper_basis.astype(dtype).T
        # exactly a0 at the design power (sqrt(1) = 1): a power drift scales the field
        amp = jnp.sqrt(self.peak_power.astype(dtype) / self.design_power)
        a0 = self.a0.astype(self._cdtype(dtype)) * amp.astype(self._cdtype(dtype))
        if self.encoding == "phase":
            return a0 * jnp.exp(1j * (self.phase_range.astype(dtype) * m)).astype(a0.dtype)
        return a0 * (m * self.shaper_window.astype(dtype)).astype(a0.dtype)

    @eqx.filter_jit
    def fiber(self, a: Complex[Array, "batch n_t"], *, spectral: bool = False):
        """Propagate through the fibre by split-step Fourier; returns the output field.

        ``a`` is the input field A(T) (√W) on ``self.time``, or its ``fft`` when
        ``spectral=True``; the result is in the same domain.
        """
        rdtype = jnp.finfo(a.dtype).dtype if jnp.iscomplexobj(a) else a.dtype
        rdtype = jnp.result_type(rdtype, jnp.float32)
        cdtype = self._cdtype(rdtype)
        spec = jnp.asarray(a, cdtype) if spectral else jnp.fft.fft(jnp.asarray(a, cdtype))
        w = self.omega.astype(rdtype)
        h = self.length.astype(rdtype) / self.n_steps
        d = (0.5j * self.beta2.astype(rdtype) * w**2
             + (1j / 6.0) * self.beta3.astype(rdtype) * w**3 - 0.5 * self.alpha.astype(rdtype))
        half = jnp.exp(d * (0.5 * h)).astype(cdtype)
        g = self.gamma.astype(rdtype) * h

        def body(s, _):
            field = jnp.fft.ifft(s * half)
            field = field * jnp.exp(1j * g * (field.real**2 + field.imag**2))
            return jnp.fft.fft(field) * half, None

        spec, _ = jax.lax.scan(body, spec, None, length=self.n_steps)
        return spec if spectral else jnp.fft.ifft(spec)

    @eqx.filter_jit
    def shg(self, a1, a2=None, *, spectral: bool = False):
        """Second-harmonic generation in the crystal; returns ``(A1, A2)`` at its exit.

        ``a1`` (and optionally ``a2``, default zero) are fields A(T) (√W) on ``self.time``, or
        their ``fft`` when ``spectral=True``; the results are in the same domain. The returned
        A2 is the physical SH envelope (the rotating-frame phase e^{iΔkL} restored).
        """
        rdtype = jnp.result_type(jnp.finfo(jnp.result_type(a1)).dtype, jnp.float32)
        cdtype = self._cdtype(rdtype)
        a1 = jnp.asarray(a1, cdtype)
        a2 = jnp.zeros_like(a1) if a2 is None else jnp.asarray(a2, cdtype)
        if spectral:
            a1, a2 = jnp.fft.ifft(a1), jnp.fft.ifft(a2)
        w = self.omega.astype(rdtype)
        length = self.crystal_length.astype(rdtype)
        h = length / self.n_steps
        dk = self.delta_k.astype(rdtype)
        half = jnp.exp((-1j * dk + 1j * self.gvm.astype(rdtype) * w) * (0.5 * h)).astype(cdtype)
        k = self.kappa.astype(rdtype)

        def rhs(u1, u2):
            return 1j * k * u2 * jnp.conj(u1), 1j * k * u1 * u1

        def body(carry, _):
            u1, u2 = carry
            u2 = jnp.fft.ifft(jnp.fft.fft(u2) * half)
            k1 = rhs(u1, u2)
            k2 = rhs(u1 + 0.5 * h * k1[0], u2 + 0.5 * h * k1[1])
            k3 = rhs(u1 + 0.5 * h * k2[0], u2 + 0.5 * h * k2[1])
            k4 = rhs(u1 + h * k3[0], u2 + h * k3[1])
            u1 = u1 + (h / 6.0) * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            u2 = u2 + (h / 6.0) * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
            u2 = jnp.fft.ifft(jnp.fft.fft(u2) * half)
            return (u1, u2), None

        (a1, b2), _ = jax.lax.scan(body, (a1, a2), None, length=self.n_steps)
        a2 = b2 * jnp.exp(1j * dk * length).astype(cdtype)
        if spectral:
            return jnp.fft.fft(a1), jnp.fft.fft(a2)
        return a1, a2

    def measure(self, spec_fund, spec_sh=None) -> Float[Array, "batch n_out"]:
        """Spectrometer read-out (noise-free) from output spectra (``fft`` of the fields)."""
        rdtype = jnp.finfo(spec_fund.dtype).dtype
        outs = []
        if self.n_fund:
            p = spec_fund.real**2 + spec_fund.imag**2
            outs.append(p @ self.bins_fund.astype(rdtype).T)
        if self.spec.n_out - self.n_fund:
            p = spec_sh.real**2 + spec_sh.imag**2
            outs.append(p @ self.bins_sh.astype(rdtype).T)
        return jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]

    def forward(self, x: Float[Array, "batch n_in"], *, key=None) -> Float[Array, "batch n_out"]:
        """Spectrometer channel energies (units of E_ref/n_out), unvalidated; ``key`` draws the
        detector noise (``None``: noise-free)."""
        spec = self.shape_pulse(x)
        if self.medium == "fiber":
            y = self.measure(self.fiber(spec, spectral=True))
        else:
            y = self.measure(*self.shg(spec, spectral=True))
        if key is not None:
            k1, k2 = jax.random.split(key)
            y = (y * (1.0 + self.noise_rel * jax.random.normal(k1, y.shape, y.dtype))
                 + self.noise_abs * jax.random.normal(k2, y.shape, y.dtype))
            y = jnp.maximum(y, 0.0)
        return y

    def noise_key(self, key):
        """With detector noise on, ``key`` or, without it, ``fold_in(PRNGKey(seed), k)`` for
        the k-th call of this layer, so that a run is reproducible from its seed; ``None`` when
        the detector is noise-free."""
        if self.noise_rel == 0 and self.noise_abs == 0:
            return None
        if key is None:
            key = jax.random.fold_in(jax.random.PRNGKey(self.seed), self._calls.next())
        return key

    @property
    def flops_per_sample(self) -> int:
        """Real FLOPs of one sample (conventions in :mod:`pnn.sim.base`), with N = ``n_t``,
        S = ``n_steps``, C(N) = 5 N log2 N the cost of one FFT:

        * shaper: the mask interpolation ``x @ B^T`` 2 n_in N, then 14 N for phase encoding
          (scale, times i, complex exp, complex multiply) or 7 N for amplitude encoding;
        * fibre, per split step: two half linear steps (6 N each), an inverse and a forward FFT,
          and the nonlinear step (|A|^2 3, times gamma*h 1, times i 2, complex exp 5, complex
          multiply 6): 29 N + 2 C(N);
        * crystal: 2 C(N) into the time domain; per step two half linear steps on B2
          (2 C(N) + 6 N each) and one RK4 step (4 right-hand sides of 25 N, 3 stage inputs of
          8 N, the update 28 N: 152 N): 164 N + 4 C(N); then the mismatch phase 6 N and 2 C(N)
          back to spectra;
        * spectrometer: per read harmonic |A|^2 3 N and the bin matrix 2 N n_ch;
        * detector noise (when on): 6 per output (the normal draws are not counted).

        The input spectrum's power scaling and the linear propagators are drive-independent and
        computed once per call, not counted.
        """
        n, steps, c = self.n_t, self.n_steps, fft_flops(self.n_t)
        n_in, n_out, n_fund = self.spec.n_in, self.spec.n_out, self.n_fund
        flops = 2 * n_in * n + (14 if self.encoding == "phase" else 7) * n
        if self.medium == "fiber":
            flops += steps * (29 * n + 2 * c)
        else:
            flops += 2 * c + steps * (164 * n + 4 * c) + 6 * n + 2 * c
        for n_ch in (n_fund, n_out - n_fund):
            if n_ch:
                flops += 3 * n + 2 * n * n_ch
        if self.noise_rel > 0 or self.noise_abs > 0:
            flops += 6 * n_out
        return flops

    def validate_params(self) -> None:
        """Refuse physical scalars that a drift, a jump or a hand edit has moved out of their
        valid range, with the constructor's rules: every scalar finite; ``peak_power``,
        ``phase_range``, ``length`` and ``crystal_length`` positive; ``gamma``, ``kappa`` and
        ``alpha`` non-negative; and the split-step accuracy limit of the medium in use (a longer
        fibre, a larger γ or a stronger pulse raises the nonlinear phase per step; a longer
        crystal, a larger κ or a stronger pulse the coupling rotation per RK4 step). Called at
        construction, by :meth:`__call__` whenever the values are concrete, and by the drift
        wrappers for every value they set.

        Raises:
            ValueError: naming the parameter, its value, the limit and the fix.
        """
        v = self.params()
        if v is None:
            return
        name = self.spec.name
        units = {"peak_power": "W", "phase_range": "rad", "length": "m", "gamma": "1/(W m)",
                 "beta2": "ps^2/m", "beta3": "ps^3/m", "alpha": "1/m", "crystal_length": "m",
                 "kappa": "1/(sqrt(W) m)", "delta_k": "1/m", "gvm": "ps/m"}
        for k, x in v.items():
            require(name, k, x, math.isfinite(x), "must be finite", unit=units[k],
                    fix=f"set {k} to a finite value")
        for k, why in (("peak_power", "the pulse's peak power"),
                       ("phase_range", "the shaper's largest spectral phase"),
                       ("length", "the fibre length"), ("crystal_length", "the crystal length")):
            require(name, k, v[k], v[k] > 0, "must be positive", why=why,
                    fix=f"set {k} to a positive value")
        for k, why in (("gamma", "a Kerr coefficient below 0 is not this model's fibre"),
                       ("kappa", "the SHG coupling"),
                       ("alpha", "a passive fibre loses power; gain would make the pulse "
                                 "energy unbounded")):
            require(name, k, v[k], v[k] >= 0, "must be >= 0", why=why,
                    fix=f"set {k} to a value >= 0")
        if self.medium == "fiber":
            phi = v["gamma"] * v["peak_power"] * v["length"] / self.n_steps
            if phi > _MAX_NL_PHASE_PER_STEP * (1 + 1e-6):
                raise ValueError(
                    f"{name}: gamma = {v['gamma']:.6g}, length = {v['length']:.6g}, peak_power = "
                    f"{v['peak_power']:.6g} make the nonlinear phase per split step {phi:.3g} "
                    f"rad, above {_MAX_NL_PHASE_PER_STEP} rad, where the splitting error "
                    f"dominates; keep gamma*peak_power*length <= "
                    f"{_MAX_NL_PHASE_PER_STEP * self.n_steps:.4g} rad, or build the layer with "
                    f"n_steps >= {_steps_needed(phi * self.n_steps, _MAX_NL_PHASE_PER_STEP)}")
        else:
            rot = v["kappa"] * math.sqrt(v["peak_power"]) * v["crystal_length"] / self.n_steps
            if rot > _MAX_SHG_ROTATION_PER_STEP * (1 + 1e-6):
                raise ValueError(
                    f"{name}: kappa = {v['kappa']:.6g}, crystal_length = "
                    f"{v['crystal_length']:.6g}, peak_power = {v['peak_power']:.6g} make "
                    f"kappa*sqrt(P0)*h = {rot:.3g} rad per RK4 step, above "
                    f"{_MAX_SHG_ROTATION_PER_STEP} rad, where the RK4 error dominates; keep "
                    f"kappa*sqrt(peak_power)*crystal_length <= "
                    f"{_MAX_SHG_ROTATION_PER_STEP * self.n_steps:.4g}, or build the layer with "
                    f"n_steps >= {_steps_needed(rot * self.n_steps, _MAX_SHG_ROTATION_PER_STEP)}")
