"""The trainable design region against the physics: the exact gradient of the discrete
simulation, the untouched medium when the design is the background, the delay of a slow slab,
the Courant limit at the design bound, and a design trained through the simulator."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn.param_change import with_param
from pnn.registry import SYSTEMS
from pnn.sim.acoustic_design import (DesignedAcousticLayer, accuracy, default_design_region,
                                     fit_design)
from pnn.sim.acoustic_waveform import WaveformAcousticLayer

SMALL = {"sample_rate": 30e3, "nx": 24, "ny": 24, "dx": 5e-3, "pml_width": 4, "n_steps": 110}


def _waves(n, n_in, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, n_in)), jnp.float32)


def test_gradient_matches_a_central_difference():
    # linear medium with disorder, one source, two probes: the derivative of probe 0's intensity
    # along a random direction v of the logits, jax.grad against (I(rho + e v) - I(rho - e v))/2e
    layer = DesignedAcousticLayer(20, 2, design_region=default_design_region(24, 24, 4),
                                  c_nl=0.0, **SMALL)
    x = _waves(2, 20)
    v = jnp.asarray(np.random.default_rng(3).normal(size=layer.rho.shape), jnp.float32)

    def probe0(rho):
        return jnp.sum(eqx.tree_at(lambda m: m.rho, layer, rho).forward(x)[:, 0])

    g = jax.grad(probe0)(layer.rho)
    eps = 1e-2
    fd = (probe0(layer.rho + eps * v) - probe0(layer.rho - eps * v)) / (2 * eps)
    ad = jnp.vdot(g, v)
    print(f"directional derivative: autodiff {float(ad):.6g}, central difference {float(fd):.6g}")
    assert abs(float(ad - fd)) < 1e-2 * abs(float(fd))
    # every design cell the wave reaches has a gradient
    assert float(jnp.mean(jnp.abs(g) > 0)) > 0.9


def test_design_at_the_background_speed_is_the_untrained_medium():
    # speeds in (c0/2, 3c0/2) with the midpoint c0: rho = 0 gives exactly c0, delta = 0
    common = dict(SMALL, c0=343.0, disorder=0.0, dt=4.0e-6, seed=2, n_steps=None)
    plain = WaveformAcousticLayer(20, 3, **common)
    designed = DesignedAcousticLayer(20, 3, design_region=(8, 16, 4, 20), design_c_min=171.5,
                                     design_c_max=514.5, **common)
    assert float(jnp.max(jnp.abs(designed.design_speed - 343.0))) == 0.0
    x = _waves(3, 20)
    np.testing.assert_allclose(np.asarray(designed(x)), np.asarray(plain(x)), rtol=1e-6)
    # and a design away from it changes the reading
    slower = designed.with_design_speed(300.0)
    assert float(np.max(np.abs(np.asarray(slower(x)) / np.asarray(plain(x)) - 1))) > 1e-2


def test_no_design_region_is_the_waveform_layer():
    plain = WaveformAcousticLayer(20, 3, **SMALL)
    layer = DesignedAcousticLayer(20, 3, **SMALL)
    assert layer.rho.shape == (0, 0) and layer.dt == plain.dt
    x = _waves(2, 20)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(plain(x)), rtol=1e-6)


def _peak_time(trace, dt):
    i = int(np.argmax(trace))
    y0, y1, y2 = trace[i - 1], trace[i], trace[i + 1]
    return (i + 1 + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) * dt


def test_a_slow_slab_delays_the_pulse_by_its_extra_transit_time():
    # a Gaussian pulse (sigma 60 us) crosses a full-height slab of 40 cells on the source's row;
    # at 0.8 c0 the slab adds L (1/c1 - 1/c0) to the arrival
    c0, fs, sigma, t_c = 343.0, 50e3, 60e-6, 300e-6
    pulse = np.exp(-0.5 * ((np.arange(40) / fs - t_c) / sigma) ** 2)[None].astype(np.float32)
    region = (40, 80, 0, 120)
    kw = dict(sample_rate=fs, nx=130, ny=120, dx=5e-3, pml_width=8, c0=c0, c_nl=0.0, disorder=0.0,
              n_steps=260, design_region=region, design_c_min=200.0, design_c_max=400.0)
    layer = DesignedAcousticLayer(40, 1, **kw)
    times = {}
    for c1 in (c0, 0.8 * c0):
        trace = np.asarray(layer.with_design_speed(c1).simulate(jnp.asarray(pulse))[0][:, 0, 0])
        times[c1] = _peak_time(trace, layer.dt)
    shift = times[0.8 * c0] - times[c0]
    expected = 40 * layer.medium.dx * (1 / (0.8 * c0) - 1 / c0)
    print(f"delay of the slab: measured {shift * 1e6:.2f} us, L(1/c1 - 1/c0) = "
          f"{expected * 1e6:.2f} us, dt = {layer.dt * 1e6:.3f} us")
    assert abs(shift - expected) < 0.05 * expected


def test_stability_refused_beyond_the_courant_limit_at_the_design_bound():
    # dt stable for the background (Courant 0.65 at c0 (1 + disorder) + c_nl u_sat^2 = 544
    # m/s) but not for a design bound of 900 m/s
    dt = 0.65 * 5e-3 / (343 * 1.15 + 150)
    with pytest.raises(ValueError, match=r"unstable design, Courant number at the design bound"
                                         r".*lower design_c_max to at most"):
        DesignedAcousticLayer(20, 2, dt=dt, design_region=(8, 16, 4, 20), design_c_max=900.0,
                              **SMALL)
    # dt=None picks a step stable at the bound: Courant 0.65 at 900 + 150 m/s
    layer = DesignedAcousticLayer(20, 2, design_region=(8, 16, 4, 20), design_c_max=900.0,
                                  **{**SMALL, "n_steps": None})
    assert layer.c_max * layer.dt / 5e-3 == pytest.approx(0.65)
    # a later speed_scale that keeps the background stable but not the design is refused too
    with pytest.raises(ValueError, match=r"unstable design"):
        with_param(layer, "speed_scale", 1.2)


@pytest.mark.parametrize("kwargs, match", [
    ({"design_region": (2, 10, 4, 20)}, r"design_region = \(2, 10, 4, 20\).*sources' column"),
    ({"design_region": (8, 30, 4, 20)}, r"inside the 24x24 grid"),
    ({"design_c_min": 400.0, "design_c_max": 300.0}, r"0 < design_c_min < design_c_max"),
    ({"design_init": 343.0}, r"design_init = 343.0 m/s must lie strictly inside"),
    ({"n_sources": 3}, r"n_sources = 3 does not divide it"),
])
def test_bad_designs_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DesignedAcousticLayer(20, 2, **{"design_region": (8, 16, 4, 20), **SMALL, **kwargs})


def test_registered_system_reads_its_drive_range_and_trains_only_rho():
    layer = SYSTEMS["acoustic_waveform"](10, 2, seed=0, name="w", n_sources=2, **SMALL)
    assert (layer.spec.lo, layer.spec.hi, layer.layer.n_samples) == (-1.0, 1.0, 5)
    uni = SYSTEMS["acoustic_waveform"](10, 2, unipolar=True, **SMALL)
    assert (uni.spec.lo, uni.spec.hi) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"safe range \[0.0, 1.0\]"):
        uni(-0.5 * np.ones((1, 10), np.float32))
    designed = DesignedAcousticLayer(20, 2, design_region=(8, 16, 4, 20), **SMALL)
    leaves = jax.tree_util.tree_leaves(eqx.filter(designed, designed.trainable()))
    assert len(leaves) == 1 and leaves[0].shape == (8, 16)


def test_training_the_design_separates_two_tones():
    # two classes, tones at 2 and 5 kHz with random phases, one source and two probes, a linear
    # medium: the untrained (uniform) medium sends both tones to the probes alike; a few Adam
    # steps on the design make probe j the louder for class j on held-out tones
    rng = np.random.default_rng(0)
    fs, n = 30e3, 30
    t = np.arange(n) / fs

    def tones(count):
        y = np.arange(count) % 2
        f = np.where(y == 0, 2e3, 5e3)[:, None]
        x = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, (count, 1)))
        return (x * np.hanning(n)).astype(np.float32), y

    x, y = tones(16)
    x_val, y_val = tones(16)
    layer = DesignedAcousticLayer(n, 2, design_region=default_design_region(24, 24, 4),
                                  c_nl=0.0, disorder=0.0, **{**SMALL, "n_steps": 120})
    before = accuracy(layer, x_val, y_val)
    trained, history = fit_design(layer, x, y, epochs=12, batch_size=16, lr=0.3,
                                  x_val=x_val, y_val=y_val)
    after = accuracy(trained, x_val, y_val)
    print(f"two tones: accuracy {before:.2f} untrained, {after:.2f} trained; losses "
          f"{[round(h['loss'], 3) for h in history]}")
    assert before <= 0.5 and after >= 0.9
    assert history[-1]["loss"] < history[0]["loss"]
