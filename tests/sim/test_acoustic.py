"""The acoustic FDTD layer against the physics it claims: speed, energy, (non)linearity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn.sim.acoustic import AcousticLayer


def test_measured_speed_matches_c0(x64):
    # A Gaussian pulse at rest at the centre spreads as a ring moving at c0. Track the ring's
    # peak along the centre row at two times; the speed is the slope (the 2-D tail behind the
    # front shifts both peaks alike and cancels in the difference).
    c0, dx, n = 343.0, 5e-3, 280
    layer = AcousticLayer(1, 1, nx=n, ny=n, dx=dx, c0=c0, c_nl=0.0, disorder=0.0,
                          pml_width=0, n_steps=200, source_amplitude=0.0)
    ix = jnp.arange(n, dtype=jnp.float64)
    r2 = (ix[:, None] - n // 2) ** 2 + (ix[None, :] - n // 2) ** 2
    u0 = jnp.exp(-0.5 * r2 / 3.0**2)[None]
    _, field = layer.simulate(jnp.zeros((1, 1)), u0=u0, record="field")
    row = np.asarray(field[:, 0, n // 2, :])  # (steps, n)

    def ring_radius(step):
        prof = row[step, n // 2 + 10:]
        i = int(np.argmax(prof))
        y0, y1, y2 = prof[i - 1], prof[i], prof[i + 1]
        return 10 + i + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)  # parabolic sub-cell peak

    n1, n2 = 60, 199  # 0.65 cells a step: radius ~40 -> ~130 cells, before any wall
    speed = (ring_radius(n2) - ring_radius(n1)) * dx / ((n2 - n1) * layer.dt)
    assert speed == pytest.approx(c0, rel=0.02)


def test_energy_conserved_without_damping_or_nonlinearity():
    layer = AcousticLayer(1, 1, nx=40, ny=40, c_nl=0.0, disorder=0.0, pml_width=0,
                          n_steps=2000, source_amplitude=0.0)
    ix = jnp.arange(40.0)
    u0 = jnp.exp(-((ix[:, None] - 20) ** 2 + (ix[None, :] - 17) ** 2) / 8.0)[None]
    _, energy = layer.simulate(jnp.zeros((1, 1)), u0=u0, record="energy")
    e = np.asarray(energy[:, 0], dtype=np.float64)
    assert e[0] > 0
    assert np.max(np.abs(e - e[0])) / e[0] < 0.01
    # the waves really moved: the pulse has crossed the box many times (energy exchange)
    assert layer.n_steps * layer.c0 * layer.dt / layer.dx > 5 * 40


def test_superposition_holds_when_linear():
    layer = AcousticLayer(4, 3, c_nl=0.0)
    rng = np.random.default_rng(0)
    x1, x2 = rng.uniform(0, 0.5, (2, 4)), rng.uniform(0, 0.5, (2, 4))
    t1, _ = layer.simulate(jnp.asarray(x1, jnp.float32))
    t2, _ = layer.simulate(jnp.asarray(x2, jnp.float32))
    t12, _ = layer.simulate(jnp.asarray(x1 + x2, jnp.float32))
    rel = float(jnp.max(jnp.abs(t12 - (t1 + t2))) / jnp.max(jnp.abs(t12)))
    assert rel < 1e-5


def test_superposition_broken_by_nonlinearity():
    layer = AcousticLayer(4, 3)  # default c_nl > 0
    rng = np.random.default_rng(0)
    x1, x2 = rng.uniform(0, 0.5, (2, 4)), rng.uniform(0, 0.5, (2, 4))
    t1, _ = layer.simulate(jnp.asarray(x1, jnp.float32))
    t2, _ = layer.simulate(jnp.asarray(x2, jnp.float32))
    t12, _ = layer.simulate(jnp.asarray(x1 + x2, jnp.float32))
    rel = float(jnp.max(jnp.abs(t12 - (t1 + t2))) / jnp.max(jnp.abs(t12)))
    assert rel > 1e-2


def test_output_intensity_scales_quadratically_only_when_linear():
    x = np.full((1, 5), 0.8, np.float32)
    lin = AcousticLayer(5, 4, c_nl=0.0)
    nl = AcousticLayer(5, 4)
    r_lin = np.asarray(lin(x)) / np.asarray(lin(x / 2))
    r_nl = np.asarray(nl(x)) / np.asarray(nl(x / 2))
    np.testing.assert_allclose(r_lin, 4.0, rtol=1e-4)
    assert np.max(np.abs(r_nl - 4.0)) > 0.1


def test_cfl_violation_refused_with_limit():
    with pytest.raises(ValueError, match=r"unstable configuration.*use dt <= [0-9.e-]+ s"):
        AcousticLayer(2, 2, dt=1e-4)


def test_speed_scale_moved_beyond_the_stable_range_is_refused():
    """A drift or jump cannot silently push the fixed-dt scheme past its Courant limit."""
    import equinox as eqx

    from pnn.adapt import ScheduledPhysics
    from pnn.perturb import Jump, ParameterDrift

    layer = AcousticLayer(3, 2, nx=24, ny=24, pml_width=4, n_steps=40)
    limit = 1 / (0.65 * np.sqrt(2))  # default dt: Courant 0.65 at speed_scale 1
    x = np.full((2, 3), 0.5, np.float32)
    fast = eqx.tree_at(lambda m: m.speed_scale, layer, 1.1)  # by hand, around __init__
    with pytest.raises(ValueError, match=rf"speed_scale = 1.1 is outside the stable range "
                                         rf"\(0, {limit:.4f}\].*Courant number would be 0.7150"):
        fast(x)
    w = ScheduledPhysics(layer, "speed_scale")
    w.set_value(1.08)  # still stable
    assert np.all(np.isfinite(np.asarray(w(x))))
    with pytest.raises(ValueError, match="outside the stable range"):
        w.set_value(1.15)
    assert w.value == pytest.approx(1.08)  # the refused value was not applied
    with pytest.raises(ValueError, match="outside the stable range"):
        Jump(layer, at=0, factor=1.2, param="speed_scale")
    ramp = ParameterDrift(layer, "speed_scale", rate=0.05, resolution="sample")
    ramp(np.full((2, 3), 0.5, np.float32))  # speed_scale 1.0, 1.05
    with pytest.raises(ValueError, match="speed_scale = 1.1 is outside"):
        ramp(np.full((2, 3), 0.5, np.float32))  # 1.10 and 1.15: refused before measuring
    # slower waves are always stable
    assert np.all(np.isfinite(np.asarray(
        eqx.tree_at(lambda m: m.speed_scale, layer, jnp.asarray(0.8))(x))))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"c0": -1.0}, "c0 must be positive"),
        ({"c_nl": -1.0}, "c_nl must be >= 0"),
        ({"disorder": 0.7}, "disorder must be in"),
        ({"nx": 12, "pml_width": 6}, "cannot hold an absorbing layer"),
    ],
)
def test_bad_parameters_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AcousticLayer(2, 2, **kwargs)


def test_too_many_sources_refused():
    with pytest.raises(ValueError, match="do not fit.*use ny >="):
        AcousticLayer(40, 2, ny=36)


def test_conformance_shapes_jit_vmap_determinism():
    layer = AcousticLayer(3, 5, seed=1)
    x = np.random.default_rng(0).uniform(0, 1, (4, 3)).astype(np.float32)
    y = np.asarray(layer(x))
    assert y.shape == (4, 5) and y.dtype == np.float32 and np.all(y >= 0)
    np.testing.assert_array_equal(y, np.asarray(AcousticLayer(3, 5, seed=1)(x)))
    # each sample is independent of the others in its batch
    np.testing.assert_allclose(np.asarray(layer(x[1:2]))[0], y[1], rtol=1e-5)
    # differentiable (the in-silico baseline needs it) and finite
    g = jax.grad(lambda z: layer._forward(z).sum())(jnp.asarray(x))
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    # absorbing layer: a long run leaves little energy behind
    assert layer.sigma.max() > 0


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((3,)), r"acoustic: expected a batch of drives of shape \(batch, 3\), got an array of rank 1"),
        (np.zeros((2, 4)), r"acoustic: expected 3 drive channels .* got shape \(2, 4\)"),
        (np.array([[0.1, np.nan, 0.2]]), r"acoustic: drives must be finite, got nan"),
        (np.array([[0.1, 1.5, 0.2]]), r"acoustic: drives must lie in the safe range \[0.0, 1.0\].*got values in \[0.1, 1.5\]"),
    ],
)
def test_bad_input_messages(x, match):
    with pytest.raises(ValueError, match=match):
        AcousticLayer(3, 2)(x)
