"""One conformance test for every simulator in the registry: the contract of
:class:`pnn.sim.base.AbstractSimulator` (shapes, dtype, jit, vmap, gradient, determinism,
validation of the input and of the physical scalars, FLOP counts)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn.layer import PhysicalLayer
from pnn.perturb import with_param
from pnn.registry import SYSTEMS
from pnn.sim.acoustic import AcousticLayer
from pnn.sim.base import AbstractSimulator
from pnn.sim.microwave import MicrowaveLayer
from pnn.sim.optical import OpticalLayer

N_IN, N_OUT = 5, 6
#: systems whose reading does not depend on the drive by design (sim/ablation.py: ``none``)
DRIVE_INDEPENDENT = {"none"}


def _drives(n, lo=0.0, hi=1.0, n_in=N_IN, seed=0):
    """Drives drawn uniformly over a layer's declared safe range ``[lo, hi]``."""
    return np.random.default_rng(seed).uniform(lo, hi, (n, n_in)).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(SYSTEMS))
def case(request):
    """(name, layer, x, y = layer(x)) for one registered system, built once per module; the
    drives span the range the layer declares (``spec.lo``, ``spec.hi``)."""
    name = request.param
    layer = SYSTEMS[name](N_IN, N_OUT, seed=1, name=name)
    x = _drives(4, layer.spec.lo, layer.spec.hi)
    return name, layer, x, np.asarray(layer(x))


def test_implements_the_protocol_and_the_base(case):
    name, layer, _, _ = case
    assert isinstance(layer, AbstractSimulator) and isinstance(layer, PhysicalLayer)
    assert (layer.spec.n_in, layer.spec.n_out, layer.spec.name) == (N_IN, N_OUT, name)
    # every physical scalar in one form: a 0-d floating JAX array (a traced leaf under jit)
    assert layer.physical_scalars
    for k in layer.physical_scalars:
        v = getattr(layer, k)
        assert isinstance(v, jax.Array) and v.ndim == 0 and jnp.issubdtype(v.dtype, jnp.floating)


def test_shapes_dtype_and_determinism(case):
    name, layer, x, y = case
    assert y.shape == (4, N_OUT) and y.dtype == np.float32
    assert np.all(np.isfinite(y)) and np.all(y >= 0)
    if name in DRIVE_INDEPENDENT:
        assert float(np.ptp(y)) == 0
    else:
        assert float(np.ptp(y)) > 0  # the output depends on the drive
    again = SYSTEMS[name](N_IN, N_OUT, seed=1, name=name)
    np.testing.assert_array_equal(np.asarray(again(x)), y)
    np.testing.assert_array_equal(np.asarray(layer(x)), y)


def test_jit_vmap_and_sample_independence(case):
    _, layer, x, y = case
    jitted = eqx.filter_jit(lambda m, z: m(z))(layer, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(jitted), y, rtol=1e-6)
    per_sample = jax.vmap(lambda xi: layer(xi[None])[0])(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(per_sample), y, rtol=1e-4, atol=1e-7 * np.abs(y).max())
    # a sample's output does not depend on the others in its batch
    x2 = x[::-1].copy()
    x2[-1] = 0.5 * (layer.spec.lo + layer.spec.hi)
    np.testing.assert_allclose(np.asarray(layer(x2))[:-1], y[::-1][:-1], rtol=1e-4,
                               atol=1e-7 * np.abs(y).max())


def test_forward_is_differentiable(case):
    name, layer, x, _ = case
    g = jax.grad(lambda z: layer.forward(z).sum())(jnp.asarray(x))
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    # a drive-independent reading has a zero gradient; every other layer a non-zero one
    assert (float(jnp.abs(g).max()) == 0) == (name in DRIVE_INDEPENDENT)
    # the old private name stays for callers that used it
    np.testing.assert_allclose(np.asarray(layer._forward(jnp.asarray(x))),
                               np.asarray(layer.forward(jnp.asarray(x))), rtol=1e-6)


def _out_of_range(spec):
    """Drives inside the declared range but one, ``hi + 0.5``; and the message naming it."""
    lo, hi = spec.lo, spec.hi
    row = lo + (hi - lo) * np.array([0.1, 0.9, 0.2, 0.3, 0.4])
    row[1] = hi + 0.5
    return row[None], (rf"drives must lie in the safe range \[{lo}, {hi}\].*got values in "
                       rf"\[{row.min():g}, {row.max():g}\]")


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((N_IN,)), rf"expected a batch of drives of shape \(batch, {N_IN}\), got an "
                            rf"array of rank 1"),
        (np.zeros((2, N_IN + 1)), rf"expected {N_IN} drive channels .* got shape "
                                  rf"\(2, {N_IN + 1}\)"),
        (np.array([[0.1, np.nan, 0.2, 0.3, 0.4]]), r"drives must be finite, got nan"),
        ("out of range", None),
    ],
)
def test_bad_input_refused(case, bad, match):
    """Refused with the layer's name; the range check reads the range the layer declares
    (for [0, 1]: [[0.1, 1.5, 0.2, 0.3, 0.4]], values in [0.1, 1.5])."""
    name, layer, _, _ = case
    if match is None:
        bad, match = _out_of_range(layer.spec)
    with pytest.raises(ValueError, match=f"{name}: {match}"):
        layer(bad)


def test_bad_input_refused_under_jit(case):
    """Inside a transformation the values are unknown on the host: checked on the device."""
    name, layer, x, _ = case
    call = eqx.filter_jit(lambda m, z: m(z))
    for bad in (np.where(np.arange(N_IN) == 2, layer.spec.hi + 0.5, x[:1]),
                np.full((1, N_IN), np.nan)):
        with pytest.raises(eqx.EquinoxRuntimeError,
                           match=rf"{name}: drives must be finite and lie in the safe range"):
            call(layer, jnp.asarray(bad, jnp.float32))


def test_flops_per_sample_declared(case):
    _, layer, _, _ = case
    f = layer.flops_per_sample
    assert isinstance(f, int) and f > 0


def test_nan_parameter_refused_everywhere(case):
    """Every physical scalar: NaN is refused by with_param (the perturbation wrappers' path)
    and by a call on a copy edited around it."""
    name, layer, x, _ = case
    for k in layer.physical_scalars:
        with pytest.raises(ValueError, match=rf"{name}: {k} = nan must be"):
            with_param(layer, k, math.nan)
        edited = eqx.tree_at(lambda m: getattr(m, k), layer, jnp.asarray(math.nan))
        with pytest.raises(ValueError, match=rf"{name}: {k} = nan must be"):
            edited(x)


def test_parameters_set_by_name_keep_the_output(case):
    """Setting each scalar to its own value through the wrappers' path changes nothing."""
    _, layer, x, y = case
    for k in layer.physical_scalars:
        same = with_param(layer, k, float(getattr(layer, k)))
        np.testing.assert_allclose(np.asarray(same(x)), y, rtol=1e-6)


def test_call_is_final():
    with pytest.raises(TypeError, match=r"__call__ is final .* implement forward\(\) instead"):
        class Bad(AcousticLayer):
            def __call__(self, x):
                return x


def test_a_python_float_scalar_is_refused_at_construction():
    class Loose(AbstractSimulator):
        physical_scalars = ("gain",)
        spec: object
        gain: float

        def __init__(self):
            from pnn.layer import LayerSpec
            self.spec = LayerSpec(n_in=1, n_out=1, name="loose")
            self.gain = 2.0

        def forward(self, x, *, key=None):
            return self.gain * x

        def validate_params(self):
            pass

        @property
        def flops_per_sample(self):
            return 1

    with pytest.raises(TypeError, match=r"loose: physical scalar 'gain' must be held as a 0-d "
                                        r"floating JAX array"):
        Loose()


# ---------------------------------------------------------------------------- FLOP hand counts
# Small configurations counted by hand from each simulator's operations (conventions in
# pnn.sim.base: complex multiply 6, complex add 2, complex multiply-add 8, FFT 5 N log2 N).
def _acoustic_small():
    # 20 x 20 cells, 10 steps, 3 probes: 28 per cell and step, 2 per probe and step, 3 divisions
    return AcousticLayer(2, 3, nx=20, ny=20, pml_width=4, n_steps=10), 28 * 400 * 10 + 60 + 3


def _fibre_small():
    # N = 32, 2 steps, FFT 5*32*5 = 800; shaper 2*2*32 + 14*32 = 576; per step 29*32 + 2*800 =
    # 2528, two steps 5056; spectrometer 3*32 + 2*32*3 = 288
    layer = OpticalLayer(2, 3, n_t=32, time_window=1.0, n_steps=2, gamma=0.001)
    return layer, 576 + 5056 + 288


def _shg_small():
    # amplitude shaper 2*2*32 + 7*32 = 352; crystal 2*800 + 2*(164*32 + 4*800) + 6*32 + 2*800 =
    # 20288; spectrometer: fundamental 3*32 + 2*32*2 = 224, SH 3*32 + 2*32*1 = 160; noise 6*3
    layer = OpticalLayer(2, 3, medium="shg", readout="both", encoding="amplitude", n_t=32,
                         time_window=1.0, n_steps=2, noise_rel=0.1)
    return layer, 352 + 20288 + 224 + 160 + 18


def _cavity_small():
    # F = 2 tones, P = 3 ports, J = 4, n = 2 elements, 2 right-hand sides, 3 iterations:
    # Y_JJ r 8*2*2*16 = 512; metasurface 2 + 64 + 256 + 48 + 2*(21 + 64) + 256 + 32 = 828;
    # element 6 + 3*(18 + 6) + 20 + 26 + 96 = 220; detection 4*2*2 + 2*3*2*2 = 40
    layer = MicrowaveLayer(2, 3, n_modes=16, n_src=1, n_rx=2, tones_per_band=1, n_iter=3)
    return layer, 512 + 828 + 220 + 40


def _ports_small():
    # P = 4 (2 sources, 2 receivers), J = 5: 8*2*2*25 = 800; drive scaling 2;
    # element 6 + 72 + 20 + 26 + 16*2*4 = 252; detection 40
    layer = MicrowaveLayer(2, 3, encoding="ports", n_modes=16, n_rx=2, tones_per_band=1,
                           n_iter=3)
    return layer, 800 + 2 + 252 + 40


@pytest.mark.parametrize("build", [_acoustic_small, _fibre_small, _shg_small, _cavity_small,
                                   _ports_small])
def test_flops_match_a_hand_count(build):
    layer, expected = build()
    assert layer.flops_per_sample == expected
