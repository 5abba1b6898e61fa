"""Perturbation injectors: statistics, exact timing, composition, parsing, reproducibility."""

import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn.cost import Ledger
from pnn.layer import LayerSpec, PhysicalLayer, validate_input
from pnn.perturb import (
    PERTURBATIONS,
    AdditiveNoise,
    DeadChannels,
    Drift,
    Jump,
    Latency,
    MultiplicativeNoise,
    ParameterDrift,
    Perturbation,
    PerturbationSpec,
    Quantize,
    ShotNoise,
    StuckChannels,
    compose,
    load_perturbation_states,
    parse_perturbations,
    perturbation_states,
    perturbations_of,
    unwrap,
)


class ConstantLayer:
    """Host-side layer that reads ``level[j]`` on channel j whatever the drive."""

    pad_batches = False

    def __init__(self, level, n_in=2, lo=0.0, hi=1.0, name="const"):
        self.level = np.atleast_1d(np.asarray(level, np.float64))
        self.spec = LayerSpec(n_in=n_in, n_out=len(self.level), lo=lo, hi=hi, name=name)
        self.n_calls = 0
        self.seen = []

    def __call__(self, x):
        validate_input(self.spec, x)
        self.n_calls += 1
        self.seen.append(np.array(x))
        return np.tile(self.level, (len(x), 1))


class IdentityLayer(ConstantLayer):
    """Reads back its drive: y = x."""

    def __init__(self, n=3, lo=0.0, hi=1.0):
        super().__init__(np.zeros(n), n_in=n, lo=lo, hi=hi, name="identity")

    def __call__(self, x):
        super().__call__(x)
        return np.array(x, np.float64)


class TinySim(eqx.Module):
    """A pure-JAX layer with a float field and a static field: y = gain * sum(x) * ones."""

    spec: LayerSpec = eqx.field(static=True)
    n_rep: int = eqx.field(static=True)
    gain: float

    def __call__(self, x):
        validate_input(self.spec, x)
        return self.gain * jnp.sum(x, axis=1, keepdims=True) * jnp.ones((1, self.n_rep))


def drives(n, n_in=2, seed=0, lo=0.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, (n, n_in)).astype(np.float32)


def run_in_chunks(layer, x, sizes):
    out, i = [], 0
    for s in sizes:
        out.append(layer(x[i : i + s]))
        i += s
    assert i == len(x)
    return np.concatenate(out)


def z_ok(estimate, expected, sd, k=5.0):
    return abs(estimate - expected) <= k * sd


# ------------------------------------------------------------------ protocol and validation
@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_every_wrapper_is_a_physical_layer_with_the_same_spec(name):
    base = ConstantLayer([1.0, 2.0, 3.0])
    params = {
        "noise": dict(std=0.1), "gain_noise": dict(std=0.1), "shot_noise": dict(scale=0.1),
        "drift": dict(rate=0.01), "jump": dict(at=2, factor=2.0), "dead": dict(channels=[0]),
        "stuck": dict(channels=[1], value=5.0), "quantize": dict(drive_bits=4),
        "latency": dict(seconds=0.0), "param_drift": dict(param="gain", rate=0.1),
    }[name]
    if name == "param_drift":
        base = TinySim(LayerSpec(n_in=2, n_out=3, name="const"), 3, 2.0)
    w = PerturbationSpec(name, params).build(base, seed=3)
    assert isinstance(w, PhysicalLayer) and isinstance(w, Perturbation)
    assert w.spec is base.spec and w.pad_batches is False
    y = w(drives(4))
    assert y.shape == (4, 3) and np.all(np.isfinite(y))
    d = w.describe()
    assert d["name"] == name and all(d[k] == v for k, v in params.items() if k != "channels")
    # out-of-range, wrong-shape and non-finite drives are refused before the layer sees them
    n = getattr(base, "n_calls", None)
    with pytest.raises(ValueError, match=r"const: drives must lie in the safe range"):
        w(np.full((2, 2), 1.5))
    with pytest.raises(ValueError, match=r"expected 2 drive channels"):
        w(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"must be finite"):
        w(np.array([[0.1, np.nan]]))
    assert getattr(base, "n_calls", None) == n and w.n_queried == 4


def test_wrappers_refuse_traced_input():
    w = AdditiveNoise(ConstantLayer([1.0]), std=0.1, seed=0)
    with pytest.raises(TypeError, match=r"stateful host-side wrapper and cannot be traced"):
        jax.jit(w)(jnp.zeros((1, 2)))


def test_wrapping_something_that_is_not_a_layer_is_refused():
    with pytest.raises(TypeError, match=r"can only wrap a PhysicalLayer"):
        AdditiveNoise(lambda x: x, std=0.1, seed=0)


# ------------------------------------------------------------------ noise statistics
def test_additive_noise_mean_and_variance():
    std, n = 0.3, 5000
    w = AdditiveNoise(ConstantLayer([2.0, -1.0, 0.0, 5.0]), std=std, seed=1)
    e = (w(drives(n)) - np.array([2.0, -1.0, 0.0, 5.0])).ravel()
    m = e.size
    assert z_ok(e.mean(), 0.0, std / np.sqrt(m))
    assert z_ok(e.var(), std**2, std**2 * np.sqrt(2 / (m - 1)))


def test_multiplicative_noise_is_a_gain_of_one_plus_normal():
    std, n, c = 0.2, 5000, np.array([1.0, 3.0])
    y = MultiplicativeNoise(ConstantLayer(c), std=std, seed=2)(drives(n))
    gain = (y / c).ravel()
    assert z_ok(gain.mean(), 1.0, std / np.sqrt(gain.size))
    assert z_ok(gain.var(), std**2, std**2 * np.sqrt(2 / (gain.size - 1)))


def test_shot_noise_variance_is_proportional_to_the_signal():
    scale, n, c = 0.05, 8000, np.array([0.5, 2.0, 8.0, 0.0])
    y = ShotNoise(ConstantLayer(c), scale=scale, seed=3)(drives(n))
    for j in range(3):
        expected = scale * c[j]
        assert z_ok(y[:, j].mean(), c[j], np.sqrt(expected / n))
        assert z_ok(y[:, j].var(), expected, expected * np.sqrt(2 / (n - 1)))
    np.testing.assert_array_equal(y[:, 3], 0.0)  # no signal, no shot noise


def test_noise_does_not_depend_on_how_the_drives_are_batched():
    x = drives(100)
    a = AdditiveNoise(ConstantLayer([1.0, 2.0]), std=0.1, seed=4)(x)
    b = run_in_chunks(AdditiveNoise(ConstantLayer([1.0, 2.0]), std=0.1, seed=4), x,
                      [1, 30, 2, 67])
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ drift
@pytest.mark.parametrize("on", ["gain", "offset"])
def test_ramp_drift_is_exact_per_sample_whatever_the_batching(on):
    c, rate = 2.0, 0.01
    w = Drift(ConstantLayer([c]), rate=rate, on=on)
    y = run_in_chunks(w, drives(50), [3, 1, 20, 26])[:, 0]
    n = np.arange(50)
    expected = c * (1 + rate * n) if on == "gain" else c + rate * n
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert w.current[0] == pytest.approx(rate * 50)
    assert w.describe() == {"name": "drift", "mode": "ramp", "on": on, "per": "sample",
                            "rate": rate}


def test_ramp_drift_per_call_advances_once_a_call():
    w = Drift(ConstantLayer([1.0]), rate=0.5, on="offset", per="call")
    ys = [w(drives(k)) for k in (3, 1, 4)]
    for call, y in enumerate(ys):
        np.testing.assert_array_equal(y, 1.0 + 0.5 * call)


def test_random_walk_variance_grows_linearly_with_steps():
    step, n_chan, n = 0.05, 4000, 161
    w = Drift(ConstantLayer(np.zeros(n_chan)), step=step, on="offset", independent=True, seed=5)
    d = w(drives(n))  # d[k] = sum of k steps, one independent walk per channel
    np.testing.assert_array_equal(d[0], 0.0)
    for k in (10, 40, 160):
        var = d[k].var()
        assert z_ok(var, k * step**2, k * step**2 * np.sqrt(2 / (n_chan - 1)))
        assert z_ok(d[k].mean(), 0.0, step * np.sqrt(k / n_chan))
    # increments are independent: the variance of d[160] - d[40] is that of 120 steps
    assert z_ok((d[160] - d[40]).var(), 120 * step**2,
                120 * step**2 * np.sqrt(2 / (n_chan - 1)))


def test_random_walk_is_chunk_invariant_and_shared_by_default():
    x = drives(60)
    a = Drift(ConstantLayer([1.0, 1.0]), step=0.1, seed=6)(x)
    b = run_in_chunks(Drift(ConstantLayer([1.0, 1.0]), step=0.1, seed=6), x, [7, 1, 52])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, 0], a[:, 1])  # one shared gain


def test_drift_arguments_are_checked():
    base = ConstantLayer([1.0])
    with pytest.raises(ValueError, match=r"give exactly one of rate= .* or step="):
        Drift(base)
    with pytest.raises(ValueError, match=r"give exactly one of rate="):
        Drift(base, rate=0.1, step=0.1)
    with pytest.raises(ValueError, match=r"mode='walk' takes step="):
        Drift(base, rate=0.1, mode="walk")
    with pytest.raises(ValueError, match=r"needs an explicit integer seed"):
        Drift(base, step=0.1)
    with pytest.raises(ValueError, match=r"on must be one of 'gain', 'offset', got 'phase'"):
        Drift(base, rate=0.1, on="phase")


# ------------------------------------------------------------------ jumps
@pytest.mark.parametrize("sizes", [[13], [3, 3, 3, 4], [7, 6], [1] * 13])
def test_jump_lands_on_the_configured_sample(sizes):
    w = Jump(ConstantLayer([1.0, 2.0]), at=7, factor=3.0, offset=0.5)
    y = run_in_chunks(w, drives(13), sizes)
    np.testing.assert_array_equal(y[:7], np.tile([1.0, 2.0], (7, 1)))
    np.testing.assert_array_equal(y[7:], np.tile([3.5, 6.5], (6, 1)))
    assert w.jumped


def test_jump_needs_a_change():
    with pytest.raises(ValueError, match=r"Jump: changes nothing"):
        Jump(ConstantLayer([1.0]), at=3)
    with pytest.raises(ValueError, match=r"value= sets a parameter; give param="):
        Jump(ConstantLayer([1.0]), at=3, value=2.0)


# ------------------------------------------------------------------ faulty channels
def test_dead_and_stuck_channels():
    base = ConstantLayer([1.0, 2.0, 3.0, 4.0])
    y = DeadChannels(base, channels=[1, 3])(drives(5))
    np.testing.assert_array_equal(y, np.tile([1.0, 0.0, 3.0, 0.0], (5, 1)))
    y = StuckChannels(base, channels=[0, 2], value=[9.0, -1.0])(drives(5))
    np.testing.assert_array_equal(y, np.tile([9.0, 2.0, -1.0, 4.0], (5, 1)))
    y = StuckChannels(base, channels=2, value=7.0)(drives(2))
    np.testing.assert_array_equal(y[:, 2], 7.0)
    with pytest.raises(ValueError, match=r"a channel index must be <= 3, got 4"):
        DeadChannels(base, channels=[4])
    with pytest.raises(ValueError, match=r"channels must be distinct"):
        DeadChannels(base, channels=[1, 1])
    with pytest.raises(ValueError, match=r"got 3 values for 2 channels"):
        StuckChannels(base, channels=[0, 1], value=[1.0, 2.0, 3.0])


# ------------------------------------------------------------------ quantisation
def test_drive_quantisation_levels_range_and_error():
    lo, hi, bits = -1.0, 2.0, 3
    base = IdentityLayer(3, lo=lo, hi=hi)
    w = Quantize(base, drive_bits=bits)
    x = drives(400, n_in=3, lo=lo, hi=hi)
    x[0] = [lo, hi, lo - 5e-7]  # ends and a value within validate_input's tolerance
    y = w(x)
    levels = lo + np.arange(2**bits) * (hi - lo) / (2**bits - 1)
    assert w.drive_step == pytest.approx((hi - lo) / 7)
    assert np.all(np.min(np.abs(y[..., None] - levels), axis=-1) < 1e-6)
    assert np.all(np.abs(y - x) <= w.drive_step / 2 + 1e-6)
    sent = base.seen[-1]
    assert sent.min() >= lo and sent.max() <= hi  # never out of range, not even by rounding
    assert set(np.round(np.unique(y), 5)) == set(np.round(levels, 5))


def test_readout_quantisation_error_and_saturation():
    base = ConstantLayer(np.linspace(-0.2, 1.3, 301))
    w = Quantize(base, readout_bits=4, readout_range=(0.0, 1.0))
    y = w(drives(2))[0]
    step = 1.0 / 15
    inside = (base.level >= 0) & (base.level <= 1)
    assert np.all(np.abs(y - base.level)[inside] <= step / 2 + 1e-12)
    np.testing.assert_allclose(np.unique(np.round(y / step, 9)), np.arange(16))
    np.testing.assert_array_equal(y[base.level < 0], 0.0)
    np.testing.assert_array_equal(y[base.level > 1], 1.0)
    assert w.n_saturated == 2 * int((~inside).sum())
    with pytest.raises(ValueError, match=r"readout_bits= and readout_range=\(lo, hi\) go together"):
        Quantize(base, readout_bits=4)
    with pytest.raises(ValueError, match=r"give drive_bits= and/or readout_bits="):
        Quantize(base)


def test_latency_sleeps():
    w = Latency(ConstantLayer([1.0]), seconds=0.03, per_sample=0.001)
    t = time.perf_counter()
    w(drives(10))
    assert time.perf_counter() - t >= 0.04


# ------------------------------------------------------------------ composition
def test_composition_order_matters_and_is_recorded():
    base = ConstantLayer([1.0, 1.0])
    inner_dead = compose(base, "dead:channels=[0]", "noise:std=0.1", seed=0)
    y = inner_dead(drives(200))
    assert y[:, 0].std() > 0.05  # noise added after the channel died
    outer_dead = compose(base, "noise:std=0.1", "dead:channels=[0]", seed=0)
    np.testing.assert_array_equal(outer_dead(drives(200))[:, 0], 0.0)
    # the stack, innermost first, with the seeds that compose derived
    stack = [p.describe() for p in perturbations_of(inner_dead)]
    assert [d["name"] for d in stack] == ["dead", "noise"]
    assert stack[0]["channels"] == [0] and isinstance(stack[1]["seed"], int)
    assert unwrap(inner_dead) is base and perturbations_of(base) == []
    # compose with a spec equals building it by hand with the recorded seed
    by_hand = AdditiveNoise(DeadChannels(base, [0]), std=0.1, seed=stack[1]["seed"])
    inner_dead.reset()
    x = drives(20)
    np.testing.assert_array_equal(inner_dead(x), by_hand(x))


def test_compose_accepts_specs_strings_and_callables():
    base = ConstantLayer([1.0, 2.0])
    layer = compose(base, PerturbationSpec("drift", {"rate": 0.1}),
                    functools.partial(StuckChannels, channels=[1], value=0.0),
                    "jump:at=2,factor=10", seed=1)
    assert [type(p) for p in perturbations_of(layer)] == [Drift, StuckChannels, Jump]
    y = layer(drives(3))
    np.testing.assert_allclose(y[:, 0], [1.0, 1.1, 12.0])
    np.testing.assert_array_equal(y[:, 1], [0.0, 0.0, 0.0])
    with pytest.raises(TypeError, match=r"must be a PerturbationSpec, a string or a callable"):
        compose(base, 3)


def test_reset_restores_the_whole_stack():
    layer = compose(ConstantLayer([1.0]), "drift:step=0.1", "noise:std=0.1", seed=7)
    x = drives(30)
    first = layer(x)
    assert not np.array_equal(layer(x), first)
    layer.reset()
    np.testing.assert_array_equal(layer(x), first)
    assert all(p.n_queried == 30 for p in perturbations_of(layer))


def test_saved_state_continues_the_noise_and_drift_exactly():
    import json

    spec = ("param_drift:param=gain,step=0.02;drift:step=0.01,on=offset,independent=true;"
            "shot_noise:scale=0.1;jump:at=45,factor=2;noise:std=0.1")
    x = drives(60)

    def stack():
        base = TinySim(spec=LayerSpec(n_in=2, n_out=3, name="tiny"), n_rep=3, gain=1.0)
        return [compose(base, spec, seed=5), base]

    whole = stack()
    uninterrupted = np.concatenate([whole[0](x[:30]), whole[0](x[30:])])
    first = stack()
    head = first[0](x[:30])
    saved = json.loads(json.dumps(perturbation_states(first)))  # what a checkpoint keeps
    assert saved[1] is None and saved[0]["name"] == "noise" and saved[0]["n_queried"] == 30
    resumed = stack()
    load_perturbation_states(resumed, saved)
    tail = resumed[0](x[30:])
    np.testing.assert_array_equal(np.concatenate([head, tail]), uninterrupted)
    # a fresh stack (what resuming used to do) does not continue the run
    assert not np.allclose(stack()[0](x[30:]), tail)


def test_saved_state_is_refused_by_another_stack():
    base = ConstantLayer([1.0, 2.0])
    saved = perturbation_states([compose(base, "noise:std=0.1", seed=1)])
    with pytest.raises(ValueError, match="saved perturbation state is for 'noise', this wrapper "
                                         "is 'dead'"):
        load_perturbation_states([compose(base, "dead:channels=[0]")], saved)
    with pytest.raises(ValueError, match="is not perturbed, but the saved run had 'noise'"):
        load_perturbation_states([base], saved)
    with pytest.raises(ValueError, match="for 1 layer\\(s\\), got 2"):
        load_perturbation_states([base, base], saved)
    with pytest.raises(ValueError, match="differ in what they wrap"):
        load_perturbation_states([compose(base, "dead:channels=[0]", "noise:std=0.1", seed=1)],
                                 saved)


def test_stack_is_reproducible_from_its_seed_and_ledger_chunking():
    spec = "drift:step=0.01,on=offset;gain_noise:std=0.05;jump:at=37,offset=1.0;noise:std=0.1"
    x = drives(100)

    def run(seed, max_batch):
        layer = compose(ConstantLayer([1.0, 2.0, 3.0]), spec, seed=seed)
        return Ledger(max_batch=max_batch).query(layer, x)

    a = run(11, 512)
    np.testing.assert_array_equal(a, run(11, 512))
    np.testing.assert_allclose(a, run(11, 9), rtol=1e-6)  # same samples, other chunks
    assert not np.allclose(a, run(12, 512))


# ------------------------------------------------------------------ parsing
def test_parse_perturbations_good_specs():
    specs = parse_perturbations("drift:rate=0.01,noise:std=0.02")
    assert specs == [PerturbationSpec("drift", {"rate": 0.01}),
                     PerturbationSpec("noise", {"std": 0.02})]
    specs = parse_perturbations(
        " drift:step=1e-3, mode=walk, independent=true; dead:channels=[0, 3] ;"
        "quantize:drive_bits=8,readout_bits=12,readout_range=[-1,1.5]; latency:seconds=0"
    )
    assert [s.name for s in specs] == ["drift", "dead", "quantize", "latency"]
    assert specs[0].params == {"step": 1e-3, "mode": "walk", "independent": True}
    assert specs[1].params == {"channels": [0, 3]}
    assert specs[2].params["readout_range"] == [-1, 1.5]
    assert parse_perturbations("") == []
    # a spec prints back to a string that parses to the same spec
    for s in specs:
        assert parse_perturbations(str(s)) == [s]


@pytest.mark.parametrize("text, match", [
    ("wobble:std=1", r"unknown perturbation 'wobble'; valid perturbations: noise, gain_noise, "
                     r"shot_noise, drift, param_drift, jump, dead, stuck, quantize, latency"),
    ("noise:sigma=0.1", r"perturbation 'noise' has no parameter 'sigma'; valid parameters: "
                        r"std, seed"),
    ("noise", r"perturbation 'noise' needs 'std'; valid parameters: std, seed"),
    ("std=0.1", r"comes before any perturbation name"),
    ("noise:std", r"malformed parameter 'std'"),
    ("noise:std=0.1,std=0.2", r"parameter 'std' given twice"),
    ("dead:channels=[0,1", r"unbalanced '\['"),
    ("noise:std=0.1,,drift:rate=1", r"empty entry"),
])
def test_parse_perturbations_bad_specs(text, match):
    with pytest.raises(ValueError, match=match):
        parse_perturbations(text)


def test_bad_values_are_reported_when_built():
    (spec,) = parse_perturbations("noise:std=-0.1")
    with pytest.raises(ValueError, match=r"perturbation 'noise:std=-0.1': AdditiveNoise: std "
                                         r"must be >= 0.0, got -0.1"):
        spec.build(ConstantLayer([1.0]), seed=0)
    with pytest.raises(ValueError, match=r"a channel index must be <= 0, got 5"):
        compose(ConstantLayer([1.0]), "dead:channels=[5]")


# ------------------------------------------------------------------ physical parameters
def test_parameter_drift_per_sample_matches_the_ramp_exactly():
    sim = TinySim(LayerSpec(n_in=2, n_out=3, name="tiny"), 3, 2.0)
    x = drives(9)
    w = ParameterDrift(sim, "gain", rate=0.5, resolution="sample")
    y = run_in_chunks(w, x, [4, 5])
    np.testing.assert_allclose(y[:, 0], (2.0 + 0.5 * np.arange(9)) * x.sum(1), rtol=1e-6)
    # resolution "call": one value per call, the value at the call's first sample
    w = ParameterDrift(sim, "gain", rate=0.5)
    y = run_in_chunks(w, x, [4, 5])
    gains = np.r_[np.full(4, 2.0), np.full(5, 4.0)]
    np.testing.assert_allclose(y[:, 0], gains * x.sum(1), rtol=1e-6)
    assert w.current_value == pytest.approx(2.0 + 0.5 * 9) and sim.gain == 2.0


def test_parameter_drift_refuses_what_it_cannot_move():
    sim = TinySim(LayerSpec(n_in=2, n_out=3, name="tiny"), 3, 2.0)
    with pytest.raises(ValueError, match=r"TinySim has no field 'temperature'; its fields are "
                                         r"spec, n_rep, gain"):
        ParameterDrift(sim, "temperature", rate=0.1)
    with pytest.raises(ValueError, match=r"field 'n_rep' of TinySim is static"):
        ParameterDrift(sim, "n_rep", rate=0.1)
    with pytest.raises(ValueError, match=r"field 'spec' must be a real scalar"):
        ParameterDrift(sim, "spec", rate=0.1)
    with pytest.raises(TypeError, match=r"needs an equinox-module simulator, got ConstantLayer"):
        ParameterDrift(ConstantLayer([1.0]), "level", rate=0.1)


@pytest.fixture(scope="module")
def acoustic():
    from pnn.sim.acoustic import AcousticLayer

    return AcousticLayer(2, 2, nx=24, ny=24, pml_width=4, n_steps=60)


def test_parameter_drift_moves_the_acoustic_speed_without_recompiling(acoustic):
    x = np.full((2, 2), 0.6, np.float32)
    y_ref = np.asarray(acoustic(x))
    compiles = []

    def listener(event, duration, **kw):
        if "backend_compile" in event:
            compiles.append(event)

    w = ParameterDrift(acoustic, "speed_scale", rate=0.01)
    w(x)  # compiles once for a traced speed_scale
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        ys = [w(x) for _ in range(3)]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []  # a new value is a new traced scalar, not a new compilation
    assert w.current_value == pytest.approx(1.08)
    # the output follows the parameter: each value differs, and matches a rebuilt copy
    assert all(not np.allclose(a, b, rtol=1e-4) for a, b in zip(ys, ys[1:]))
    moved = eqx.tree_at(lambda m: m.speed_scale, acoustic, 1.06)
    np.testing.assert_allclose(ys[-1], np.asarray(moved(x)), rtol=1e-5)
    # the wrapped simulator is untouched
    assert acoustic.speed_scale == 1.0
    np.testing.assert_array_equal(np.asarray(acoustic(x)), y_ref)
    assert w.describe() == {"name": "param_drift", "param": "speed_scale", "initial": 1.0,
                            "mode": "ramp", "resolution": "call", "rate": 0.01}


def test_parameter_jump_on_the_acoustic_layer_splits_the_batch(acoustic):
    # shapes and leaf types as in the test above, so the compiled simulator is reused
    x = np.full((2, 2), 0.6, np.float32)
    w = Jump(acoustic, at=1, param="speed_scale", factor=1.05)
    y = w(x)  # the batch straddles the jump: one sample before, one after
    before = np.asarray(acoustic(x))[0]
    after = np.asarray(eqx.tree_at(lambda m: m.speed_scale, acoustic, jnp.float32(1.05))(x))[0]
    np.testing.assert_allclose(y[0], before, rtol=1e-5)
    np.testing.assert_allclose(y[1], after, rtol=1e-5)
    assert not np.allclose(before, after, rtol=1e-3)
    np.testing.assert_allclose(w(x), np.tile(after, (2, 1)), rtol=1e-5)
    assert acoustic.speed_scale == 1.0
    assert w.describe() == {"name": "jump", "at": 1, "param": "speed_scale", "initial": 1.0,
                            "value": pytest.approx(1.05)}


def test_parameter_random_walk_is_reproducible(acoustic):
    x = np.full((2, 2), 0.6, np.float32)
    a = ParameterDrift(acoustic, "speed_scale", step=0.005, seed=9)
    b = ParameterDrift(acoustic, "speed_scale", step=0.005, seed=9)
    ya = [a(x) for _ in range(2)]
    yb = [b(x) for _ in range(2)]
    np.testing.assert_array_equal(ya, yb)
    assert a.current_value == b.current_value != 1.0
    a.reset()
    np.testing.assert_array_equal(a(x), ya[0])


def test_a_changed_parameter_reuses_the_undisturbed_layers_compilation(acoustic):
    """with_param keeps the scalar's JAX type (weak float, as simulators hold it), so the first
    jump or drift of a run does not compile the simulator again for every batch shape."""
    from pnn.perturb import with_param

    x = np.full((3, 2), 0.4, np.float32)  # a batch shape of its own in this module
    acoustic(x)  # compiled for the undisturbed layer
    compiles = []

    def listener(event, duration, **kw):
        if "backend_compile" in event:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        moved = with_param(acoustic, "speed_scale", 1.07)
        y = moved(x)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert not np.allclose(np.asarray(y), np.asarray(acoustic(x)), rtol=1e-4)
