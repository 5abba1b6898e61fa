r"""Chaotic microwave reverberation cavity with a programmable metasurface and a nonlinear element.

Physics
-------
Coupled-mode (effective Hamiltonian) model of a wave-chaotic cavity (Mahaux & Weidenmüller;
Verbaarschot, Weidenmüller & Zirnbauer, Phys. Rep. 129, 367 (1985)). All frequencies are
ordinary frequencies in MHz, measured from the band centre ``f_center``.

* ``n_modes`` M modes with a real symmetric Hamiltonian :math:`H = \sigma (A + A^T)/\sqrt2`,
  A standard normal (the Gaussian orthogonal ensemble), scaled so that the mean level spacing
  at the band centre is ``mode_spacing`` Δ: :math:`\sigma = \Delta\sqrt M/\pi`, semicircle
  radius :math:`R = 2M\Delta/\pi`.
* P ports with real couplings :math:`W_{\mu p} \sim \mathcal N(0, w^2)`, :math:`w^2 = x\Delta/\pi^2`
  for ``coupling`` x, i.e. the transmission coefficient :math:`T = 4x/(1+x)^2` of each port.
* uniform absorption: every mode has the loss width ``loss_width`` Γ (MHz), Q = f_center/Γ.
* ``detuning`` f_d (MHz) shifts every mode (a temperature- or geometry-like drift).
* metasurface element k and the nonlinear element are rank-one perturbations
  :math:`c_k u_k u_k^T` with random unit vectors :math:`u_k` (the local coupling of a small
  scatterer to the modes of a chaotic cavity).

With :math:`K = \sqrt{2\pi}\,W` the effective Hamiltonian and the scattering matrix are

.. math::  H_{eff} = H + f_d + \sum_k c_k u_k u_k^T + \delta\,u_{nl}u_{nl}^T
           - \tfrac{i}{2}KK^T - \tfrac{i}{2}\Gamma, \qquad
           S(f) = I - i K^T (f - H_{eff})^{-1} K

i.e. :math:`S = I - 2\pi i W^T(f - H + i\pi WW^T + i\Gamma/2)^{-1}W` (time convention
:math:`e^{-i2\pi ft}`; with Γ > 0 S is sub-unitary, and it is symmetric because H, W, u are real).
Incoming wave amplitudes s (√W) excite the modes :math:`a = (f - H_{eff})^{-1}K s` and leave as
:math:`b = S s`. :math:`|a|^2/2\pi` is the stored energy (µJ when f is in MHz and s in √W; the code
works in nJ).

Nonlinear element
-----------------
The element's detuning δ (MHz) follows the energy stored at the element, summed over all probe
tones (a slow element, e.g. a thermally or rectifier-biased varactor, that sees the
time-averaged multi-tone field):

.. math::  \mathcal E(\delta) = \frac{10^3}{2\pi}\sum_f |u_{nl}^T a_f|^2\ \mathrm{nJ}, \qquad
           \delta_{n+1} = \delta_n + \eta\,[\chi\,\mathcal E(\delta_n) - \delta_n],
           \quad \delta_0 = 0

``kerr`` χ (MHz/nJ), ``relax`` η = Δt/τ. This is the explicit Euler step of the element's
relaxation :math:`\tau\dot\delta = \chi\mathcal E - \delta` while the cavity (which rings down much
faster) follows adiabatically; the read-out is taken after ``n_iter`` steps (``lax.scan``). Where
the steady state is unique and stable this converges to it; in a bistable regime it is the state
reached from a cold element. δ stays bounded because :math:`\mathrm{Im}\,u^TG u < 0`.

Because each element is rank one, the fields are evaluated with the Woodbury identity. At
construction :math:`A = H - \tfrac{i}{2}KK^T` is diagonalised once, :math:`A = V\Lambda V^T` with
:math:`V^TV = I` (A is complex symmetric), so that for :math:`Q = [K, U, u_{nl}]`
:math:`Y_f = Q^T(f - H_0)^{-1}Q = P^T\mathrm{diag}(f - f_d + i\Gamma/2 - \lambda)^{-1}P`,
:math:`P = V^TQ`, costs no solve per call (f_d and Γ stay free, traced parameters). Per sample,
an ``n_in``×``n_in`` solve per tone dresses Y with the metasurface, and the nonlinear element
enters by Sherman–Morrison, a scalar update per tone. H, K, U and u are frozen into (Λ, P) at
construction; ``H`` is kept for :meth:`MicrowaveLayer.mode_frequencies`.

Encoding and read-out
---------------------
* ``encoding="metasurface"`` (default): element k has :math:`c_k = c_{max} x_k`
  (``element_strength`` :math:`c_{max}`, MHz; a continuously tunable, lossless element) and
  ``n_src`` source ports send a fixed random unit pattern with total power ``drive_power``
  spread evenly over the tones. The output depends nonlinearly on x even without the nonlinear
  element, by multiple scattering (the matrix inverse).
* ``encoding="ports"``: input k drives source port k with amplitude
  :math:`s_k = \sqrt{P_d/F}\,x_k` on every tone (real, in phase; :math:`P_d` = ``drive_power``,
  F tones), so a unit-norm drive carries ``drive_power`` in all. Without metasurface.

``n_rx`` receiving ports (no incoming wave). The probe band of width ``bandwidth`` (MHz) around
the centre holds ``n_bands × tones_per_band`` equally spaced tones, ``n_bands = ⌈n_out/n_rx⌉``.
Output j is the square-law detected power at port ``j mod n_rx`` summed over the tones of band
``j // n_rx``, :math:`y_j = \sum_{f\in b(j)}|b_{r(j)}(f)|^2` in mW.

Reference: PhyLL microwave experiments: Momeni, Rahmani, Malléjac, del Hougne & Fleury, Science
382, 1297 (2023); metasurface-programmable chaotic cavities: del Hougne & Lerosey, Phys. Rev. X 8,
041037 (2018).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from pnn.layer import LayerSpec
from pnn.memory import check_memory
from pnn.sim.base import AbstractSimulator, assign_scalars, check_seed, require

__all__ = ["MicrowaveLayer", "semicircle_cdf"]

_ENCODINGS = ("metasurface", "ports")
# the probe band must stay where the semicircle density is at least ~85% of its central value
_MAX_BAND_FRACTION = 0.5


def semicircle_cdf(e, radius: float, n: int):
    """Expected number of GOE levels below ``e`` (the smooth staircase used for unfolding)."""
    u = np.clip(np.asarray(e, float) / radius, -1.0, 1.0)
    return n * (0.5 + (u * np.sqrt(1.0 - u**2) + np.arcsin(u)) / np.pi)


def _modal_decomposition(h, k, q, name):
    r"""Eigen-decompose :math:`A = H - \tfrac{i}{2}KK^T` (complex symmetric) as
    :math:`A = V\Lambda V^T` with :math:`V^TV = I`, and project: returns (Λ, P = V^T Q)."""
    a = h - 0.5j * (k @ k.T)
    lam, v = np.linalg.eig(a)
    v = v / np.sqrt(np.sum(v * v, axis=0))[None, :]
    err = np.max(np.abs(v.T @ v - np.eye(len(lam))))
    if not err < 1e-8:
        raise ValueError(
            f"{name}: the cavity's effective Hamiltonian has (nearly) degenerate modes, so its "
            f"modal decomposition is inaccurate (|V^T V - I| = {err:.2g}); use another seed"
        )
    return jnp.asarray(lam), jnp.asarray(v.T @ q)


def _unit_columns(rng, m, k):
    v = rng.standard_normal((m, k))
    return v / np.linalg.norm(v, axis=0, keepdims=True)


def _check_arguments(name, *, encoding, n_iter, n_modes, loss_width, element_strength, relax,
                     counts: dict, positive: dict, finite: dict) -> None:
    """Refuse an unknown encoding, a malformed count, a cavity too large for memory or with too
    few modes, a parameter out of its range, or gain (in that order)."""
    if encoding not in _ENCODINGS:
        raise ValueError(f"{name}: encoding must be one of {_ENCODINGS}, got {encoding!r}")
    for label, v in counts.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: {label} must be a positive integer, got {v!r}")
    if not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
        raise ValueError(f"{name}: n_iter must be an integer >= 0, got {n_iter!r}")
    check_memory(f"{name}: n_modes = {n_modes}", 3 * 8 * n_modes**2,
                 how="the M x M random matrix, its transpose sum and eigenvectors, float64",
                 fix="give a smaller n_modes")
    if n_modes < 16:
        raise ValueError(
            f"{name}: {n_modes} modes are too few for a chaotic (random-matrix) cavity; "
            f"use n_modes >= 16"
        )
    for label, v in positive.items():
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name}: {label} must be positive and finite, got {v!r}")
    if not np.isfinite(loss_width) or loss_width < 0:
        raise ValueError(
            f"{name}: loss_width must be >= 0 (a negative absorption width is gain: the "
            f"cavity would be active and S non-passive), got {loss_width!r}"
        )
    for label, v in finite.items():
        if not np.isfinite(v):
            raise ValueError(f"{name}: {label} must be finite, got {v!r}")
    if element_strength < 0:
        raise ValueError(f"{name}: element_strength must be >= 0, got {element_strength!r}")
    if not (np.isfinite(relax) and 0 < relax <= 1):
        raise ValueError(
            f"{name}: relax must lie in (0, 1]: above 1 the relaxation step overshoots and "
            f"the element's detuning oscillates instead of settling; got {relax!r}"
        )


def _probe_band(name, n_modes: int, mode_spacing: float, bandwidth, detuning: float) -> float:
    """The probe band's width (MHz; ``None``: 0.6 R), refused when it (shifted by the
    detuning) reaches beyond :data:`_MAX_BAND_FRACTION` of the semicircle's half-width R."""
    radius = 2.0 * n_modes * mode_spacing / math.pi
    if bandwidth is None:
        bandwidth = 0.6 * radius
    if not (np.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"{name}: bandwidth must be positive and finite, got {bandwidth!r}")
    reach = bandwidth / 2 + abs(detuning)
    if reach > _MAX_BAND_FRACTION * radius:
        need = math.ceil(math.pi * reach / (2 * _MAX_BAND_FRACTION * mode_spacing))
        raise ValueError(
            f"{name}: the probe band (±{bandwidth / 2:.4g} MHz, detuning {detuning:.4g} MHz) "
            f"reaches beyond {_MAX_BAND_FRACTION:.0%} of the modal spectrum's half-width "
            f"R = {radius:.4g} MHz, where the model runs out of modes and the statistics are "
            f"not those of a cavity; use n_modes >= {need} or a narrower band"
        )
    return bandwidth


def _random_cavity(rng, m: int, name, *, mode_spacing, coupling, n_src, n_rx, n_el):
    """``(H, Λ, P, drive)`` of a cavity drawn from ``rng``: the GOE Hamiltonian, its modal
    decomposition with the port couplings K, the ``n_el`` metasurface vectors and the
    nonlinear element's (:func:`_modal_decomposition`), and the sources' unit drive pattern."""
    a = rng.standard_normal((m, m))
    sigma = mode_spacing * math.sqrt(m) / math.pi
    h = sigma * (a + a.T) / math.sqrt(2.0)
    w = math.sqrt(coupling * mode_spacing) / math.pi
    k = math.sqrt(2.0 * math.pi) * w * rng.standard_normal((m, n_src + n_rx))
    u = _unit_columns(rng, m, n_el)
    u_nl = _unit_columns(rng, m, 1)
    modes, proj = _modal_decomposition(h, k, np.concatenate([k, u, u_nl], axis=1), name)
    v = rng.standard_normal(n_src) + 1j * rng.standard_normal(n_src)
    return jnp.asarray(h), modes, proj, jnp.asarray(v / np.linalg.norm(v))


def _tones_and_readout(n_out: int, n_rx: int, tones_per_band: int, bandwidth: float):
    """``(tones (n_f,), read-out map (n_out, n_f, n_rx))``: equally spaced tones over the band,
    and which tones and receiving port each output sums."""
    n_bands = -(-n_out // n_rx)
    n_f = n_bands * tones_per_band
    freqs = jnp.asarray(-bandwidth / 2 + (np.arange(n_f) + 0.5) * bandwidth / n_f)
    r = np.zeros((n_out, n_f, n_rx))
    for j in range(n_out):
        band = j // n_rx
        r[j, band * tones_per_band:(band + 1) * tones_per_band, j % n_rx] = 1.0
    return freqs, jnp.asarray(r)


class MicrowaveLayer(AbstractSimulator):
    """A reverberation cavity driven through ports and reconfigured by a metasurface.

    Args (all keyword; frequencies in MHz, power in W):
        n_in, n_out: metasurface elements (or source ports) and output channels.
        encoding: ``"metasurface"`` or ``"ports"`` (see the module docstring).
        n_modes: M, modes in the model. mode_spacing: Δ, mean level spacing at the centre (MHz).
        loss_width: Γ, absorption width of every mode (MHz). coupling: x, port coupling strength
            (T = 4x/(1+x)^2). f_center: band centre (MHz), only used to report Q.
        n_src: source ports for the metasurface encoding. n_rx: receiving ports.
        bandwidth: probe band (MHz); ``None`` = 0.6 R. tones_per_band: tones summed per channel.
        element_strength: c_max, a metasurface element's largest perturbation (MHz).
        drive_power: total incident power (W), summed over tones (ports: for a unit-norm x).
        kerr: χ (MHz/nJ), 0 = linear. relax: η in (0, 1]. n_iter: relaxation steps.
        detuning: f_d, global mode shift (MHz), a drift-able field.
        seed: seeds the cavity (H, W, element positions, drive pattern).
        name: layer name used in error messages.

    The physical scalars (``detuning``, ``loss_width``, ``element_strength``, ``drive_power``,
    ``kerr``, ``relax``) are 0-d array fields: traced, so drifting one does not recompile.
    ``detuning`` is the intended drift parameter (a temperature- or geometry-like mode shift).
    ``mode_spacing`` and ``f_center`` are static: the spacing is frozen into the modes at
    construction, and the centre frequency only labels the band.

    Raises:
        ValueError: a parameter out of range, an active (gain) cavity, a probe band reaching
            the edge of the modal spectrum where the model has no modes (the message gives the
            smallest ``n_modes`` that fits), or (vanishingly rare) degenerate modes that make the
            modal decomposition inaccurate.
    """

    physical_scalars = ("loss_width", "element_strength", "drive_power", "kerr", "relax",
                        "detuning")

    spec: LayerSpec = eqx.field(static=True)
    encoding: str = eqx.field(static=True)
    n_src: int = eqx.field(static=True)
    n_rx: int = eqx.field(static=True)
    n_iter: int = eqx.field(static=True)
    n_el: int = eqx.field(static=True)
    f_center: float = eqx.field(static=True)
    mode_spacing: float = eqx.field(static=True)
    # physical scalars are 0-d arrays: traced, so a drift or a new value does not recompile
    loss_width: Array
    element_strength: Array
    drive_power: Array
    kerr: Array
    relax: Array
    detuning: Array
    H: Array
    modes: Array
    proj: Array
    drive: Array
    freqs: Array
    readout: Array

    def __init__(
        self,
        n_in: int = 8,
        n_out: int = 8,
        *,
        encoding: str = "metasurface",
        n_modes: int = 64,
        mode_spacing: float = 1.0,
        loss_width: float = 1.0,
        coupling: float = 0.5,
        f_center: float = 5000.0,
        n_src: int = 2,
        n_rx: int = 4,
        bandwidth: float | None = None,
        tones_per_band: int = 4,
        element_strength: float = 80.0,
        drive_power: float = 0.1,
        kerr: float = 300.0,
        relax: float = 0.5,
        n_iter: int = 12,
        detuning: float = 0.0,
        seed: int = 0,
        name: str = "microwave",
    ):
        _check_arguments(
            name, encoding=encoding, n_iter=n_iter, n_modes=n_modes, loss_width=loss_width,
            element_strength=element_strength, relax=relax,
            counts={"n_modes": n_modes, "n_src": n_src, "n_rx": n_rx,
                    "tones_per_band": tones_per_band},
            positive={"mode_spacing": mode_spacing, "coupling": coupling,
                      "drive_power": drive_power, "f_center": f_center},
            finite={"element_strength": element_strength, "kerr": kerr, "detuning": detuning})
        bandwidth = _probe_band(name, n_modes, mode_spacing, bandwidth, detuning)

        drive_kind = "metasurface element state" if encoding == "metasurface" else "port amplitude"
        self.spec = LayerSpec(
            n_in=n_in, n_out=n_out, lo=0.0, hi=1.0, name=name,
            units=f"drive: {drive_kind} (0..1); output: mW",
        )
        self.encoding = encoding
        n_src = n_in if encoding == "ports" else int(n_src)
        n_rx = min(int(n_rx), n_out)
        self.n_src, self.n_rx, self.n_iter = n_src, n_rx, int(n_iter)
        self.f_center = float(f_center)
        self.mode_spacing = float(mode_spacing)
        assign_scalars(self, name, loss_width=loss_width, element_strength=element_strength,
                       drive_power=drive_power, kerr=kerr, relax=relax, detuning=detuning)

        self.n_el = n_in if encoding == "metasurface" else 0
        self.H, self.modes, self.proj, self.drive = _random_cavity(
            np.random.default_rng(check_seed(name, seed)), int(n_modes), name,
            mode_spacing=mode_spacing, coupling=coupling, n_src=n_src, n_rx=n_rx, n_el=self.n_el)
        self.freqs, self.readout = _tones_and_readout(n_out, n_rx, tones_per_band, bandwidth)

    # ------------------------------------------------------------------ physics
    @property
    def n_ports(self) -> int:
        return self.n_src + self.n_rx

    @property
    def quality_factor(self) -> float:
        """Q = f_center / Γ of the absorption alone (inf when lossless)."""
        gamma = float(self.loss_width)
        return self.f_center / gamma if gamma > 0 else math.inf

    @eqx.filter_jit
    def mode_frequencies(self) -> Float[Array, " n_modes"]:
        """Sorted eigenfrequencies (MHz from the centre) of the closed, unperturbed cavity."""
        return jnp.linalg.eigvalsh(self.H) + self.detuning

    def _dtypes(self, dtype):
        rd = jnp.result_type(dtype, jnp.float32)
        return rd, jnp.result_type(rd, jnp.complex64)

    def bare_response(self, dtype=jnp.float32) -> Complex[Array, "n_f nq nq"]:
        r""":math:`Y = Q^T (f - H_0)^{-1} Q` at every tone, Q = [K, U, u_nl], H_0 without the
        metasurface and the nonlinear element; by the modal decomposition
        :math:`Y_f = P^T \mathrm{diag}(1/(f - f_d + i\Gamma/2 - \lambda)) P`. Independent of
        the drive: once per call."""
        rd, cd = self._dtypes(dtype)
        z = (self.freqs.astype(rd) - self.detuning.astype(rd)
             + 0.5j * self.loss_width.astype(rd)).astype(cd)
        r = 1.0 / (z[:, None] - self.modes.astype(cd)[None, :])  # (F, M)
        p = self.proj.astype(cd)
        return jnp.einsum("mi,fm,mj->fij", p, r, p)

    def _split(self, y):
        """Blocks of Y: J = [ports, element] rows/cols, m = metasurface elements."""
        p, n = self.n_ports, self.n_el
        jj = np.r_[np.arange(p), y.shape[-1] - 1]
        return y[:, jj][:, :, jj], y[:, jj][:, :, p:p + n], y[:, p:p + n][:, :, p:p + n]

    def _dress(self, x, rhs_j):
        r""":math:`Q_J^T G_1 Q_J\,r` for right-hand sides ``rhs_j`` (B or 1, F, P+1, k), with
        :math:`G_1 = (f - H_0 - \sum_k c_k u_k u_k^T)^{-1}` (Woodbury; one n_in×n_in solve)."""
        rd, cd = self._dtypes(x.dtype)
        y_jj, y_jm, y_mm = self._split(self.bare_response(rd))
        out = jnp.einsum("fjl,bflk->bfjk", y_jj, rhs_j)
        if self.encoding != "metasurface":
            return jnp.broadcast_to(out, (x.shape[0],) + out.shape[1:])
        n = y_mm.shape[-1]
        c = (self.element_strength.astype(rd) * jnp.asarray(x, rd)).astype(cd)  # (B, n)
        lhs = jnp.eye(n, dtype=cd) - c[:, None, :, None] * y_mm[None]
        rhs = c[:, None, :, None] * jnp.einsum("fjm,bfjk->bfmk", y_jm, rhs_j)
        z = jnp.linalg.solve(lhs, rhs)  # (B, F, n, k)
        return out + jnp.einsum("fjm,bfmk->bfjk", y_jm, z)

    def dressed_response(self, x: Float[Array, "batch n_in"]) -> Complex[Array, "batch F J J"]:
        """Response restricted to J = [ports, nonlinear element] with the metasurface set by x:
        :math:`Q_J^T G_1 Q_J`, shape ``(batch, F, P + 1, P + 1)``, :math:`Q_J = [K, u_{nl}]`."""
        _, cd = self._dtypes(x.dtype)
        eye = jnp.eye(self.n_ports + 1, dtype=cd)
        return self._dress(x, jnp.broadcast_to(eye, (1, self.freqs.shape[0]) + eye.shape))

    def incident(self, x: Float[Array, "batch n_in"]) -> Complex[Array, "batch P"]:
        """Incoming amplitudes (√W, per tone) at every port for each drive vector."""
        rd, cd = self._dtypes(x.dtype)
        per_tone = jnp.sqrt(self.drive_power.astype(rd) / self.freqs.shape[0])
        b = x.shape[0]
        if self.encoding == "ports":
            src = per_tone * jnp.asarray(x, rd).astype(cd)
        else:
            src = jnp.broadcast_to(per_tone * self.drive.astype(cd), (b, self.n_src))
        return jnp.concatenate([src, jnp.zeros((b, self.n_rx), cd)], axis=1)

    @eqx.filter_jit
    def solve(self, x: Float[Array, "batch n_in"], *, nonlinear: bool = True):
        """Self-consistent fields; returns ``(b, delta, energy)``.

        ``b`` (batch, F, P) outgoing amplitudes (√W), ``delta`` (batch,) the element's final
        detuning (MHz), ``energy`` (batch,) the energy stored at the element (nJ) at that δ.
        """
        _, cd = self._dtypes(x.dtype)
        s = self.incident(x)
        p, n_f = self.n_ports, self.freqs.shape[0]
        # two right-hand sides: the incident wave, and a unit source at the element
        r_s = jnp.concatenate([s, jnp.zeros((s.shape[0], 1), cd)], axis=1)
        r_s = jnp.broadcast_to(r_s[:, None, :], (s.shape[0], n_f, p + 1))
        r_u = jnp.broadcast_to(jnp.zeros(p + 1, cd).at[p].set(1.0), (s.shape[0], n_f, p + 1))
        gr = self._dress(x, jnp.stack([r_s, r_u], axis=-1))  # (B, F, P+1, 2)
        t, g_ju = gr[..., 0], gr[..., 1]  # fields without the element; element's column of g
        t_u, g_uu, g_pu = t[..., p], g_ju[..., p], g_ju[..., :p]
        rd = jnp.finfo(t.dtype).dtype
        t_u2 = t_u.real**2 + t_u.imag**2

        def energy(delta):
            den = 1.0 - delta[:, None] * g_uu
            return 1e3 * jnp.sum(t_u2 / (den.real**2 + den.imag**2), axis=1) / (2.0 * math.pi)

        delta = jnp.zeros(x.shape[0], rd)
        if nonlinear and self.n_iter > 0:  # with kerr = 0, delta stays exactly 0
            kerr, relax = self.kerr.astype(rd), self.relax.astype(rd)

            def body(d, _):
                return d + relax * (kerr * energy(d) - d), None

            delta, _ = jax.lax.scan(body, delta, None, length=self.n_iter)
        scat = delta[:, None] / (1.0 - delta[:, None] * g_uu)
        b = s[:, None, :] - 1j * (t[..., :p] + g_pu * (scat * t_u)[..., None])
        return b, delta, energy(delta)

    @eqx.filter_jit
    def scattering_matrix(self, x: Float[Array, "batch n_in"], *, nonlinear: bool = False):
        """S (batch, F, P, P) at every tone; with ``nonlinear=True`` at the element's final
        detuning for this drive (the small-signal S seen around that operating point)."""
        g = self.dressed_response(x)
        p = self.n_ports
        _, delta, _ = self.solve(x, nonlinear=nonlinear)
        g_uu = g[..., p, p]
        scat = delta[:, None] / (1.0 - delta[:, None] * g_uu)
        gk = g[..., :p, :p] + scat[..., None, None] * g[..., :p, p, None] * g[..., p, None, :p]
        return jnp.eye(p, dtype=g.dtype) - 1j * gk

    def forward(self, x: Float[Array, "batch n_in"], *, key=None) -> Float[Array, "batch n_out"]:
        """Received power (mW) per output channel for each drive vector (unvalidated; the
        layer is deterministic and ignores ``key``)."""
        b, _, _ = self.solve(x)
        rx = b[..., self.n_src:]
        power = 1e3 * (rx.real**2 + rx.imag**2)  # mW, (B, F, n_rx)
        return jnp.einsum("bfr,jfr->bj", power, self.readout.astype(power.dtype))

    @property
    def flops_per_sample(self) -> int:
        """Real FLOPs of one sample (conventions in :mod:`pnn.sim.base`), counted from
        :meth:`solve` with F tones, P ports, J = P + 1, n metasurface elements, I = ``n_iter``:

        * the fields without the nonlinear element for two right-hand sides (the incident wave,
          a unit source at the element): ``Y_JJ r``, 8·2·F·J² (complex multiply-adds);
        * metasurface (``encoding="metasurface"``): c = c_max x (n), the n×n system
          ``1 - c Y_mm`` (8 F n²), its right-hand sides ``c Y_mJ r`` (8·2·F·n·J + 6·2·F·n), one
          LU solve per tone (F(8n³/3 + 8n²·2)) and the correction ``Y_Jm z`` (8·2·F·J·n +
          2·2·F·J); ports encoding: the drive scaling, n_in;
        * the self-consistent element: |t_u|² (3F); per relaxation step the stored energy (9F + 2:
          1 - δ g, |·|², the division, the sum and the units) and the update (4); the energy once
          more at the final δ; then the outgoing waves (Sherman–Morrison: 13F + 16FP, a complex
          division, two complex multiplies, and the sum with the incident wave);
        * detection: |b|² in mW at the receivers (4 F n_rx) and the band sums (2 n_out F n_rx).

        The nonlinear iteration costs only O(F) a step: the element is rank one, so the matrix
        solves (the metasurface) are done once per sample, not once per iteration. The bare
        response Y (F·M·q² complex multiply-adds for M modes and q = P + n + 1 columns) does
        not depend on the drive and is computed once per call, not counted.
        """
        f, p, n, it = self.freqs.shape[0], self.n_ports, self.n_el, self.n_iter
        j, k = p + 1, 2
        flops = 8 * k * f * j * j
        if self.encoding == "metasurface":
            flops += (n + 8 * f * n * n + 8 * k * f * n * j + 6 * k * f * n
                      + f * (8 * n**3 // 3 + 8 * n * n * k) + 8 * k * f * j * n + 2 * k * f * j)
        else:
            flops += self.spec.n_in
        flops += 3 * f + it * (9 * f + 2 + 4) + (9 * f + 2) + 13 * f + 16 * f * p
        flops += 4 * f * self.n_rx + 2 * self.spec.n_out * f * self.n_rx
        return flops

    def validate_params(self) -> None:
        """Refuse physical scalars that a drift, a jump or a hand edit has moved out of their
        valid range (the constructor's rules): every scalar finite; ``drive_power`` positive;
        ``loss_width`` and ``element_strength`` non-negative; ``relax`` in (0, 1]; and the probe
        band, shifted by ``detuning``, inside the central part of the modal spectrum where the
        model has modes. Called at construction, by :meth:`__call__` whenever the values are
        concrete, and by the drift wrappers for every value they set.

        Raises:
            ValueError: naming the parameter, its value, the limit and the fix.
        """
        v = self.params()
        if v is None:
            return
        name = self.spec.name
        units = {"loss_width": "MHz", "element_strength": "MHz", "drive_power": "W",
                 "kerr": "MHz/nJ", "relax": "", "detuning": "MHz"}
        for k, x in v.items():
            require(name, k, x, math.isfinite(x), "must be finite", unit=units[k],
                    fix=f"set {k} to a finite value")
        rules = (("loss_width", v["loss_width"] >= 0, "must be >= 0",
                  "a negative absorption width is gain: the cavity would be active and S "
                  "non-passive"),
                 ("element_strength", v["element_strength"] >= 0, "must be >= 0",
                  "the largest perturbation of a metasurface element"),
                 ("drive_power", v["drive_power"] > 0, "must be positive",
                  "the total incident power"),
                 ("relax", 0 < v["relax"] <= 1, "must lie in (0, 1]",
                  "above 1 the relaxation oscillates instead of settling"))
        for k, ok, rule, why in rules:
            require(name, k, v[k], ok, rule, unit=units[k], why=why,
                    fix=f"set {k} back into its range")
        radius = 2.0 * self.H.shape[0] * self.mode_spacing / math.pi
        half_band = float(np.max(np.abs(np.asarray(self.freqs))))  # host-side: no device op
        reach = half_band + abs(v["detuning"])
        if reach > _MAX_BAND_FRACTION * radius:
            raise ValueError(
                f"{name}: detuning = {v['detuning']:.6g} MHz moves the probe band beyond "
                f"{_MAX_BAND_FRACTION:.0%} of the modal spectrum's half-width R = {radius:.4g} "
                f"MHz, where the model runs out of modes; keep |detuning| <= "
                f"{_MAX_BAND_FRACTION * radius - half_band:.4g} MHz, or build the layer with "
                f"more modes")
