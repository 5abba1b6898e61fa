"""The acoustic FDTD layer against the physics it claims: speed, energy, (non)linearity."""

import math

import equinox as eqx
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


# ---------------------------------------------------------------------------- hardening
def _small():
    return AcousticLayer(3, 2, nx=24, ny=24, pml_width=4, n_steps=40)


@pytest.mark.parametrize(
    "param, factor, blows_up, match",
    [
        ("c0", 3.0, True, r"c0 = 1029 m/s is outside the stable range \(0, 384.6\] m/s.*Courant number "
                    r"would be 1.5918 > 1/sqrt\(2\) at the largest speed the nonlinearity can "
                    r"reach, "
                    r"c_max = .* = 1333.3 m/s.*build the layer with dt <= 2.652e-06 s"),
        ("c_nl", 100.0, True, r"c_nl = 15000 m/s/Pa\^2 is outside the stable range \[0, 197.8\] "
                        r"m/s/Pa\^2.*Courant number would be 18.3789"),
        # a bound, not a prediction: these drives never reach u_sat, so this one is refused
        # although this run would have stayed stable; a stronger drive would not
        ("u_sat", 2.0, False, r"u_sat = 2 Pa is outside the stable range \(0, 1.148\] Pa"),
    ],
)
def test_speed_parameters_moved_past_the_courant_limit_are_refused(param, factor, blows_up,
                                                                  match):
    """c0, c_nl and u_sat raise the largest reachable speed as speed_scale does; every path
    that sets them (by name, a jump, a schedule, a hand edit) is refused before simulating."""
    from pnn.adapt import ScheduledPhysics
    from pnn.perturb import Jump, with_param

    layer = _small()
    x = np.full((2, 3), 0.5, np.float32)
    value = float(getattr(layer, param)) * factor
    with pytest.raises(ValueError, match=match):
        with_param(layer, param, value)
    with pytest.raises(ValueError, match=match):
        Jump(layer, at=0, factor=factor, param=param)
    w = ScheduledPhysics(layer, param)
    with pytest.raises(ValueError, match=match):
        w.set_value(value)
    assert w.value == float(getattr(layer, param))  # the refused value was not applied
    edited = eqx.tree_at(lambda m: getattr(m, param), layer, jnp.asarray(value))
    with pytest.raises(ValueError, match=match):
        edited(x)
    if blows_up:  # the refusal guards a real instability: the unvalidated physics blows up
        y = np.asarray(edited.forward(jnp.asarray(x)))
        assert not np.all(np.isfinite(y)) or np.max(y) > 1e6 * np.max(np.asarray(layer(x)))


def test_the_courant_limit_is_the_largest_reachable_speed():
    """Just inside the limit for c0 runs (finite output); just outside is refused."""
    from pnn.perturb import with_param

    layer = _small()
    c_lim = layer.dx / (np.sqrt(2) * layer.dt)
    c0_lim = (c_lim - float(layer.c_nl) * float(layer.u_sat) ** 2) / (1 + layer.disorder)
    x = np.full((2, 3), 1.0, np.float32)
    assert np.all(np.isfinite(np.asarray(with_param(layer, "c0", 0.999 * c0_lim)(x))))
    with pytest.raises(ValueError, match=r"c0 = [0-9.]+ m/s is outside the stable range"):
        with_param(layer, "c0", 1.001 * c0_lim)
    assert layer.c_max == pytest.approx(343 * 1.15 + 150)


@pytest.mark.parametrize(
    "param, value, match",
    [
        ("c0", -343.0, r"c0 = -343 must be positive and finite \(the background wave speed; in "
                       r"m/s\); set c0 back to a value in range"),
        ("speed_scale", 0.0, r"speed_scale = 0 must be positive and finite"),
        ("u_sat", math.inf, r"u_sat = inf must be positive and finite"),
        ("c_nl", -1.0, r"c_nl = -1 must be >= 0 and finite"),
        ("source_amplitude", -1.0, r"source_amplitude = -1 must be >= 0 and finite"),
    ],
)
def test_scalars_out_of_range_after_construction_are_refused(param, value, match):
    from pnn.perturb import with_param

    with pytest.raises(ValueError, match=rf"acoustic: {match}"):
        with_param(_small(), param, value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dt": 0.0}, r"dt must be positive and finite \(the leapfrog time step, s\), got 0.0; "
                      r"pass dt=None"),
        ({"dt": math.nan}, r"dt must be positive and finite .* got nan"),
        ({"source_amplitude": math.nan}, r"source_amplitude must be >= 0 and finite"),
        ({"c0": math.nan}, r"c0 must be positive and finite, got nan"),
        ({"c_nl": math.inf}, r"c_nl must be >= 0 and finite, got inf"),
        ({"speed_scale": math.nan}, r"speed_scale must be positive and finite"),
        ({"dx": 0.0}, r"dx must be positive and finite"),
    ],
)
def test_non_finite_or_zero_scalars_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=rf"acoustic: {match}"):
        AcousticLayer(2, 2, **kwargs)


def test_discretisation_is_static_and_cannot_be_drifted():
    from pnn.perturb import ParameterDrift

    with pytest.raises(ValueError, match=r"field 'dt' of AcousticLayer is static"):
        ParameterDrift(_small(), "dt", rate=1e-9)


@pytest.mark.parametrize("n", [3, 9])  # both layouts: (batch, nx, ny) and (nx, ny, batch)
def test_cells_first_solver_matches_the_documented_step(n):
    """simulate() holds fields as (nx, ny, batch); the public step() on (batch, nx, ny) fields,
    scanned by hand, gives the same probe traces."""
    layer = _small()
    x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (n, 3)), jnp.float32)
    src = layer.source_field(x)
    px, py = (jnp.array([p[i] for p in layer.probe_xy]) for i in (0, 1))

    def body(carry, w):
        u_prev, u = carry
        u_next = layer.step(u_prev, u, src * w)
        return (u, u_next), u_next[:, px, py]

    z = jnp.zeros((n, layer.nx, layer.ny))
    _, ref = jax.lax.scan(body, (z, z), layer.waveform)
    traces, _ = layer.simulate(x)
    assert traces.shape == (layer.n_steps, n, 2)
    np.testing.assert_allclose(np.asarray(traces), np.asarray(ref), rtol=1e-6,
                               atol=1e-6 * float(jnp.abs(ref).max()))
    assert float(jnp.abs(ref).max()) > 0


@pytest.mark.parametrize("n", [3, 9])  # both layouts
def test_checkpointed_time_loop_gives_the_same_forward_bit_for_bit(n):
    """The segmented, jax.checkpoint-ed scan (the default) and the plain scan agree exactly on
    the forward pass (including a remainder segment: 157 steps in segments of 13), and their
    gradients agree to float rounding."""
    x = jnp.asarray(np.random.default_rng(2).uniform(0, 1, (n, 3)), jnp.float32)
    plain = AcousticLayer(3, 2, nx=24, ny=24, pml_width=3, n_steps=157, remat_every=0)
    remat = AcousticLayer(3, 2, nx=24, ny=24, pml_width=3, n_steps=157)
    assert remat.remat_every == 13
    assert np.array_equal(np.asarray(plain(x)), np.asarray(remat(x)))
    g_plain = jax.grad(lambda v: plain.forward(v).sum())(x)
    g_remat = jax.grad(lambda v: remat.forward(v).sum())(x)
    np.testing.assert_allclose(np.asarray(g_remat), np.asarray(g_plain), rtol=1e-5,
                               atol=1e-6 * float(jnp.abs(g_plain).max()))


def test_checkpointed_gradient_memory_grows_sublinearly_with_the_steps():
    """XLA's compiled memory plan (deterministic, no timing): the plain scan's backward pass
    keeps every step's field (grows 4x for 4x the steps); the checkpointed one about 2x."""
    x = jnp.full((4, 3), 0.5, jnp.float32)

    def temp_bytes(n_steps, remat_every):
        layer = AcousticLayer(3, 2, nx=24, ny=24, pml_width=3, n_steps=n_steps,
                              remat_every=remat_every)
        grad = jax.jit(jax.grad(lambda v: layer.forward(v).sum()))
        return grad.lower(x).compile().memory_analysis().temp_size_in_bytes

    plain = [temp_bytes(n, 0) for n in (200, 800)]
    remat = [temp_bytes(n, None) for n in (200, 800)]
    assert plain[1] / plain[0] > 3.5
    assert remat[1] / remat[0] < 2.5
    assert remat[1] < plain[1] / 5


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_bad_remat_every_refused(value):
    with pytest.raises(ValueError, match="remat_every"):
        AcousticLayer(3, 2, remat_every=value)
