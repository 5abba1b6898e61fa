"""The waveform-driven acoustic layer against the physics: arrival time, (non)linearity, and the
tone-burst layer it must reproduce."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn.param_change import with_param
from pnn.sim.acoustic import AcousticLayer
from pnn.sim.acoustic_waveform import WaveformAcousticLayer, linear_resampling


def _peak_time(trace, dt, last):
    """Time (s) of the largest value of ``trace[:last]`` (``trace[n]`` at ``(n + 1) dt``),
    refined by a parabola through the three samples around it."""
    i = int(np.argmax(trace[:last]))
    y0, y1, y2 = trace[i - 1], trace[i], trace[i + 1]
    return (i + 1 + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) * dt


def _green_2d_peak(pulse, t0, r_over_c):
    """Time of the peak of a 2-D point source's far-and-near-field response to the force
    ``pulse(t)``: u(t) ∝ ∫ f(t - s) / sqrt(s² - (r/c)²) ds over s > r/c, written with
    s = r/c + q² so that the integrand 2 f(t - r/c - q²) / sqrt(2 r/c + q²) is smooth."""
    q = np.linspace(0.0, np.sqrt(4 * t0), 2001)[None, :]
    t = np.linspace(r_over_c, r_over_c + 2 * t0, 1201)[:, None]
    u = np.trapezoid(2 * pulse(t - r_over_c - q**2) / np.sqrt(2 * r_over_c + q**2), q, axis=1)
    return float(t[np.argmax(u), 0])


def test_a_pulse_reaches_the_probe_after_distance_over_c0():
    # a Gaussian force pulse at 50 kHz (sigma 3 samples: > 12 cells a wavelength where it has
    # energy) in a homogeneous linear medium; one source and one probe on the same row, 109
    # cells apart, in a grid wide enough (120 rows) that echoes of the absorbing layer's
    # residual reflection arrive after the pulse
    c0, fs, sigma, t_c = 343.0, 50e3, 60e-6, 300e-6
    layer = WaveformAcousticLayer(40, 1, sample_rate=fs, nx=130, ny=120, pml_width=8, c0=c0,
                                  c_nl=0.0, disorder=0.0, n_steps=240)
    (sx, sy), (px, py) = layer.medium.src_xy[0], layer.medium.probe_xy[0]
    assert sy == py
    d = (px - sx) * layer.medium.dx
    pulse = lambda t: np.exp(-0.5 * ((t - t_c) / sigma) ** 2)  # noqa: E731
    wave = pulse(np.arange(40) / fs)[None].astype(np.float32)
    trace = np.asarray(layer.simulate(jnp.asarray(wave))[0][:, 0, 0])
    measured = _peak_time(trace, layer.dt, last=int((t_c + 4 * sigma + d / c0) / layer.dt))
    # the 2-D Green's function's tail behind its front (d / c0) delays the peak: the exact
    # response's peak, and the plain t_c + d / c0 within 3 % of the travel time
    expected = _green_2d_peak(pulse, t_c, d / c0)
    print(f"delay: measured {measured * 1e6:.2f} us, analytic peak {expected * 1e6:.2f} us, "
          f"t_c + d/c0 = {(t_c + d / c0) * 1e6:.2f} us, dt = {layer.dt * 1e6:.3f} us")
    assert abs(measured - expected) < 2 * layer.dt
    assert abs(measured - (t_c + d / c0)) < 0.03 * d / c0
    # the front: nothing arrives before d / c0 (the source starts at t = 0, 5 sigma before t_c)
    early = trace[: int(d / c0 / layer.dt) - 2]
    assert np.max(np.abs(early)) < 1e-3 * np.max(np.abs(trace))


def _pair(layer, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    a, b = (scale * rng.uniform(-1, 1, (2, layer.spec.n_in)) for _ in range(2))
    return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)


def _superposition_error(layer, a, b):
    """max |F(a + b) - F(a) - F(b)| / max |F(a + b)| over every pressure field."""
    fa, fb, fab = (layer.simulate(x, record="field")[1] for x in (a, b, a + b))
    return float(jnp.max(jnp.abs(fab - fa - fb)) / jnp.max(jnp.abs(fab)))


def test_superposition_holds_in_the_field_when_linear():
    layer = WaveformAcousticLayer(24, 3, sample_rate=40e3, n_sources=2, c_nl=0.0)
    err = _superposition_error(layer, *_pair(layer))
    print(f"superposition error, linear: {err:.3g}")
    assert err < 1e-5


def test_superposition_broken_by_the_nonlinearity():
    layer = WaveformAcousticLayer(24, 3, sample_rate=40e3, n_sources=2)  # default c_nl > 0
    err = _superposition_error(layer, *_pair(layer))
    print(f"superposition error, nonlinear: {err:.3g}")
    assert err > 1e-2


def test_the_tone_burst_as_a_waveform_reproduces_the_tone_burst_layer():
    """One source, sampled at the step rate: the waveform x * g(t_n) is the tone-burst drive."""
    tone = AcousticLayer(1, 3, seed=3)  # nonlinear, disordered: every part of the medium
    layer = WaveformAcousticLayer(tone.n_steps, 3, sample_rate=1.0 / tone.dt,
                                  n_steps=tone.n_steps, seed=3)
    assert layer.dt == tone.dt
    amp = np.linspace(0.1, 1.0, 16, dtype=np.float32)[:, None]  # 16: the framed loop
    waves = amp * np.asarray(tone.waveform, np.float32)[None]
    y_tone, y_wave = np.asarray(tone(amp)), np.asarray(layer(waves))
    print(f"tone burst vs waveform: max relative difference "
          f"{np.max(np.abs(y_wave - y_tone) / y_tone):.3g}")
    np.testing.assert_allclose(y_wave, y_tone, rtol=1e-5)
    # the step-by-step loop, cells-first (9 samples) and batch-first (1): the same numbers
    np.testing.assert_allclose(np.asarray(layer(waves[:9])), y_wave[:9], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(waves[-1:]))[0], y_wave[-1], rtol=1e-5)


def test_time_windows_split_the_time_average():
    whole = WaveformAcousticLayer(16, 2, sample_rate=20e3, n_steps=240)
    split = WaveformAcousticLayer(16, 16, sample_rate=20e3, n_steps=240, n_windows=8)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 16)).astype(np.float32)
    y = np.asarray(split(x)).reshape(2, 2, 8)  # (batch, probe, window)
    np.testing.assert_allclose(y.mean(axis=-1), np.asarray(whole(x)), rtol=1e-5)
    # causality: the first window (30 steps) ends before sound crosses the 15 cells from the
    # sources to the probes (at most 0.41 * 1.15 cells a step in the linear medium)
    print("window means / max:", np.round(y[0] / y.max(), 6))
    assert np.all(y[..., 0] < 1e-6 * y.max())
    assert np.all(y[..., 2:5] > 1e-3 * y.max())


def test_linear_resampling_interpolates_then_falls_silent():
    index, w = linear_resampling(3, 10.0, 8, 0.04)  # t = 0, .04, ..., .28 s; samples at .1 s
    s = np.array([1.0, 3.0, -1.0])
    got = np.asarray(w[0]) * s[np.asarray(index[0])] + np.asarray(w[1]) * s[np.asarray(index[1])]
    want = np.interp(np.arange(8) * 0.04, [0, 0.1, 0.2, 0.3], [1.0, 3.0, -1.0, 0.0])
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.fixture(scope="module")
def small():
    return WaveformAcousticLayer(20, 2, sample_rate=30e3, nx=24, ny=24, pml_width=4, n_steps=110)


@pytest.mark.parametrize("x, match", [
    (np.zeros((2, 21)), r"expected 20 drive channels"),
    (np.full((1, 20), 1.5), r"safe range \[-1.0, 1.0\].*got values in \[1.5, 1.5\]"),
    (np.full((1, 20), np.nan), r"drives must be finite"),
])
def test_bad_waveforms_refused(small, x, match):
    with pytest.raises(ValueError, match=match):
        small(x.astype(np.float32))


def test_signed_waveforms_accepted_and_gradients_finite(small):
    # 16 waveforms: through the framed loop; 2: through the step-by-step loop
    x16 = jnp.asarray(np.linspace(-1, 1, 320, dtype=np.float32).reshape(16, 20))
    g = jax.grad(lambda v: jnp.sum(small(v)))(x16 * 0.9)
    assert np.all(np.isfinite(np.asarray(g))) and np.all(np.abs(np.asarray(g)).sum(1) > 0)
    x = x16[::8]
    # the medium's scalars are set through the layer by name, and checked (Courant limit)
    gc = jax.grad(lambda c: jnp.sum(eqx.tree_at(lambda m: m.c0, small, c).forward(x)))(343.0)
    assert np.isfinite(float(gc)) and float(gc) != 0
    with pytest.raises(ValueError, match="c0 = 1029 m/s is outside the stable range"):
        with_param(small, "c0", 1029.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"sample_rate": 1e6}, r"exceeds the simulator's step rate .*resample the waveform"),
    ({"n_steps": 10}, r"end before the waveform.*give n_steps >= [0-9]+, or None"),
    ({"n_out": 3, "n_windows": 2}, r"n_out = 3 is not a whole number of probes"),
    ({"n_sources": 0}, r"n_sources must be a positive integer"),
    ({"sample_rate": -1.0}, r"sample_rate must be a positive finite"),
    ({"dt": 1e-4}, r"unstable configuration"),
])
def test_bad_configurations_refused(kwargs, match):
    args = {"n_samples": 20, "n_out": 2, "sample_rate": 30e3, "nx": 24, "ny": 24,
            "pml_width": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        WaveformAcousticLayer(**args)
