"""The microwave cavity against the physics it claims: reciprocity, passivity, GOE statistics,
linear power response when linear, and the self-consistent nonlinear element."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from pnn.sim.microwave import MicrowaveLayer, semicircle_cdf


def _unit_drives(n, n_in, seed=0):
    h = np.random.default_rng(seed).normal(size=(n, n_in))
    return (np.abs(h) / np.linalg.norm(h, axis=1, keepdims=True)).astype(np.float32)


def _transpose(s):
    return jnp.swapaxes(s, -1, -2)


@pytest.fixture(scope="module")
def cavity64():
    """One float64 cavity (and its lossless twin) probed at three metasurface states; shared,
    because compiling the complex linear algebra dominates the cost of these tests."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (3, 6)))
        lossy, lossless = MicrowaveLayer(6, 8), MicrowaveLayer(6, 8, loss_width=0.0)
        out = {"x": x, "lossy": lossy, "lossless": lossless}
        for key, layer in (("lossy", lossy), ("lossless", lossless)):
            out[key + "_lin"] = layer.scattering_matrix(x)
            out[key + "_nl"] = layer.scattering_matrix(x, nonlinear=True)
            out[key + "_solve"] = layer.solve(x)
        yield out


def test_reciprocity_in_the_linear_regime(cavity64):
    s = cavity64["lossy_lin"]
    layer = cavity64["lossy"]
    assert s.dtype == jnp.complex128
    assert s.shape == (3, layer.freqs.shape[0], layer.n_ports, layer.n_ports)
    assert float(jnp.max(jnp.abs(s - _transpose(s))) / jnp.max(jnp.abs(s))) < 1e-9
    # also at the nonlinear operating point: the element's detuning is real, H stays symmetric
    s = cavity64["lossy_nl"]
    assert float(jnp.max(jnp.abs(s - _transpose(s))) / jnp.max(jnp.abs(s))) < 1e-9
    # the metasurface really changes S (so the Woodbury dressing is exercised)
    assert float(jnp.max(jnp.abs(s[0] - s[1]))) > 1e-2


def test_passivity_and_unitarity_without_absorption(cavity64):
    for key in ("lossy_lin", "lossy_nl"):
        sv = jnp.linalg.svd(cavity64[key], compute_uv=False)
        assert float(sv.max()) <= 1.0 + 1e-12
        assert float(sv.max()) < 0.999  # absorption makes it strictly sub-unitary
    # with no absorption every wave leaves through a port: S is unitary
    sv = jnp.linalg.svd(cavity64["lossless_lin"], compute_uv=False)
    assert float(jnp.max(jnp.abs(sv - 1.0))) < 1e-9
    # ... and so is the nonlinear steady state: outgoing power equals incoming power
    b, delta, _ = cavity64["lossless_solve"]
    s = cavity64["lossless"].incident(cavity64["x"])
    p_in = jnp.sum(jnp.abs(s) ** 2, axis=1)[:, None]
    p_out = jnp.sum(jnp.abs(b) ** 2, axis=2)
    assert float(jnp.min(jnp.abs(delta))) > 1.0  # the element is really detuned
    assert float(jnp.max(jnp.abs(p_out / p_in - 1))) < 1e-9


def test_relaxation_reaches_the_self_consistent_detuning(cavity64):
    # default relax = 0.5 and n_iter = 12 settle the element to well under 1 % of its detuning
    _, delta, energy = cavity64["lossy_solve"]
    kerr = float(cavity64["lossy"].kerr)
    np.testing.assert_allclose(np.asarray(delta), kerr * np.asarray(energy), rtol=1e-2)
    assert float(jnp.min(delta)) > 1.0  # a detuning of more than a mode spacing


def test_mode_spacings_follow_the_wigner_surmise(x64):
    m = 400
    layer = MicrowaveLayer(2, 2, n_modes=m, mode_spacing=1.0, seed=0)
    levels = np.sort(np.asarray(layer.mode_frequencies()))
    radius = 2 * m * 1.0 / np.pi
    unfolded = semicircle_cdf(levels, radius, m)  # mean spacing 1 after unfolding
    spacings = np.diff(unfolded[m // 4: 3 * m // 4])  # bulk only: the edges unfold poorly
    assert np.mean(spacings) == pytest.approx(1.0, abs=0.05)
    wigner = stats.kstest(spacings, lambda s: 1 - np.exp(-np.pi * s**2 / 4))
    poisson = stats.kstest(spacings, "expon")
    assert wigner.pvalue > 0.05  # consistent with level repulsion (observed p = 0.52)
    assert poisson.pvalue < 1e-6  # and not with uncorrelated levels (observed p = 2e-13)


def test_output_power_linear_in_input_power_only_without_the_element(x64):
    x = _unit_drives(4, 6, seed=1).astype(np.float64)
    lin = MicrowaveLayer(6, 8, encoding="ports", kerr=0.0)
    r = np.asarray(lin(0.5 * x)) / np.asarray(lin(0.2 * x))
    np.testing.assert_allclose(r, 6.25, rtol=1e-9)  # (0.5/0.2)^2: power in, power out
    nl = MicrowaveLayer(6, 8, encoding="ports")  # default kerr
    r = np.asarray(nl(0.5 * x)) / np.asarray(nl(0.2 * x))
    assert np.max(np.abs(r / 6.25 - 1)) > 0.1
    # metasurface encoding: the same holds for the source power
    weak, strong = (MicrowaveLayer(6, 8, kerr=0.0, drive_power=p) for p in (0.04, 0.1))
    np.testing.assert_allclose(np.asarray(strong(x)) / np.asarray(weak(x)), 2.5, rtol=1e-9)
    weak, strong = (MicrowaveLayer(6, 8, drive_power=p) for p in (0.04, 0.1))
    assert np.max(np.abs(np.asarray(strong(x)) / np.asarray(weak(x)) / 2.5 - 1)) > 0.1


X16 = _unit_drives(16, 14)  # one batch shape for every float32 test: one compilation


def test_default_response_is_nonlinear_in_the_drive():
    x = _unit_drives(64, 14, seed=5).reshape(4, 16, 14)
    layer = MicrowaveLayer(14, 20)
    y = np.concatenate([np.asarray(layer(xi)) for xi in x])
    x = x.reshape(64, 14)
    assert np.all(np.isfinite(y)) and np.all(y >= 0)
    assert 0.05 < float(np.median(y)) < 20.0  # order-one outputs (mW)
    assert float(np.median(y.std(0) / y.mean(0))) > 0.2  # the drive moves every channel
    xa = np.c_[x, np.ones(len(x))]
    res = y - xa @ np.linalg.lstsq(xa, y, rcond=None)[0]
    assert float(np.mean(res.var(0) / y.var(0))) > 0.3  # far from affine in the drive


def test_drift_parameter_changes_the_output_without_rebuilding():
    layer = MicrowaveLayer(14, 20)
    shifted = eqx.tree_at(lambda l: l.detuning, layer, layer.detuning + 0.5)
    assert isinstance(layer.detuning, jax.Array) and layer.detuning.ndim == 0
    np.testing.assert_allclose(np.asarray(shifted.mode_frequencies()),
                               np.asarray(layer.mode_frequencies()) + 0.5, atol=1e-4)
    assert float(np.max(np.abs(np.asarray(shifted(X16)) / np.asarray(layer(X16)) - 1))) > 1e-2


def test_parameters_moved_out_of_range_after_construction_are_refused():
    from pnn.adapt import ScheduledPhysics
    from pnn.perturb import ParameterDrift

    layer = MicrowaveLayer(14, 20)
    for field, value, match in [("relax", 1.5, r"relax = 1.5 must lie in \(0, 1\]"),
                                ("loss_width", -0.2, r"loss_width = -0.2 must be >= 0"),
                                ("detuning", 40.0, r"detuning = 40 MHz moves the probe band "
                                                   r"beyond 50% .* keep \|detuning\| <= ")]:
        bad = eqx.tree_at(lambda l: getattr(l, field), layer, jnp.asarray(value))
        with pytest.raises(ValueError, match=match):
            bad(X16)
    w = ScheduledPhysics(layer, "detuning")
    with pytest.raises(ValueError, match="moves the probe band"):
        w.set_value(40.0)
    ramp = ParameterDrift(layer, "relax", rate=0.3, resolution="call")  # per sample
    ramp(X16[:2])  # relax 0.5 for this call
    with pytest.raises(ValueError, match=r"relax = 1.1 must lie in"):
        ramp(X16[:2])  # 0.5 + 2 x 0.3: refused before measuring


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss_width": -0.1}, r"loss_width must be >= 0 \(a negative absorption width is gain"),
        ({"relax": 1.5}, r"relax must lie in \(0, 1\]: above 1 the relaxation step overshoots"),
        ({"bandwidth": 50.0}, r"probe band .* reaches beyond 50% .* use n_modes >= 79"),
        ({"detuning": 15.0}, r"probe band .* use n_modes >= \d+ or a narrower band"),
        ({"n_modes": 8}, r"8 modes are too few .* use n_modes >= 16"),
        ({"encoding": "phase"}, r"encoding must be one of"),
        ({"coupling": 0.0}, r"coupling must be positive"),
        ({"n_iter": -1}, r"n_iter must be an integer >= 0"),
    ],
)
def test_bad_configurations_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MicrowaveLayer(2, 2, **kwargs)


def test_seed_draws_a_different_cavity():
    y1, y2 = (np.asarray(MicrowaveLayer(14, 20, seed=s)(X16)) for s in (1, 2))
    assert not np.allclose(y1, y2)


# ---------------------------------------------------------------------------- hardening
@pytest.mark.parametrize(
    "param, value, match",
    [
        ("drive_power", 0.0, r"drive_power = 0 must be positive \(the total incident power; in "
                             r"W\); set drive_power back into its range"),
        ("element_strength", -1.0, r"element_strength = -1 must be >= 0"),
        ("loss_width", -0.5, r"loss_width = -0.5 must be >= 0 \(a negative absorption width is "
                             r"gain"),
        ("kerr", math.inf, r"kerr = inf must be finite \(in MHz/nJ\)"),
        ("relax", 0.0, r"relax = 0 must lie in \(0, 1\]"),
        ("detuning", -40.0, r"detuning = -40 MHz moves the probe band .* keep \|detuning\| <= "
                            r"[0-9.]+ MHz, or build the layer with more modes"),
    ],
)
def test_scalars_out_of_range_after_construction_are_refused_by_name(param, value, match):
    from pnn.perturb import with_param

    with pytest.raises(ValueError, match=rf"microwave: {match}"):
        with_param(MicrowaveLayer(4, 4), param, value)


def test_mode_spacing_is_frozen_at_construction():
    from pnn.perturb import ParameterDrift

    with pytest.raises(ValueError, match=r"field 'mode_spacing' of MicrowaveLayer is static"):
        ParameterDrift(MicrowaveLayer(4, 4), "mode_spacing", rate=1e-3)
