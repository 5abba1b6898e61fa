"""pnn.sharded: the batch split over devices (DataParallel) gives the bare layer's outputs; the
acoustic grid split over devices (grid_split_simulate) gives the single-device field.

Several CPU devices exist only when XLA_FLAGS is set before jax is imported, so the two-device
checks run in a fresh interpreter."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pnn.registry import make_system
from pnn.sharded import DataParallel, batch_mesh

SIMULATORS = ("acoustic", "optical", "microwave")
# padded (11 rows on 2 devices) everywhere; even and cells-first (16) where the layout changes
# with the batch (acoustic); the gradient where compiling it is quick enough
BATCHES = {"acoustic": (11, 16), "optical": (11,), "microwave": (11,)}
GRAD = ("acoustic", "optical")

_TWO_DEVICES = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from pnn.cost import Ledger
    from pnn.registry import make_system
    from pnn.sharded import DataParallel
    out = {"devices": len(jax.devices())}
    for system, batches in BATCHES.items():
        layer = make_system(system, 5, 6, seed=1)
        for b in batches:
            x = np.random.default_rng(b).uniform(0, 1, (b, 5)).astype(np.float32)
            ref = np.asarray(layer(x))
            one = np.asarray(DataParallel(layer, devices=1)(x))
            two_layer = DataParallel(layer, devices=2)
            two = np.asarray(two_layer(x))
            via_ledger = Ledger().query(two_layer, x)
            scale = float(np.max(np.abs(ref)))
            out[f"{system}/{b}"] = {
                "one": float(np.max(np.abs(one - ref))) / scale,
                "two": float(np.max(np.abs(two - ref))) / scale,
                "ledger": float(np.max(np.abs(via_ledger - ref))) / scale,
                "scale": scale}
        y2 = DataParallel(layer, devices=2)._forward(jnp.asarray(x))
        out[f"{system}/output_devices"] = len(y2.sharding.device_set)
        if system not in GRAD:
            continue
        xg = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (8, 5)), jnp.float32)
        g_ref = jax.grad(lambda v: layer.forward(v).sum())(xg)
        g_two = jax.grad(lambda v: DataParallel(layer, devices=2).forward(v).sum())(xg)
        out[f"{system}/grad"] = float(jnp.max(jnp.abs(g_two - g_ref)) /
                                      jnp.max(jnp.abs(g_ref)))
    from pnn.sim.acoustic import AcousticLayer
    from pnn.sharded import grid_split_simulate
    grid = AcousticLayer(3, 2, nx=24, ny=24, pml_width=3, n_steps=120)
    for b in (3, 9):  # the reference holds (batch, nx, ny) below 8, cells-first from 8
        xg = jnp.asarray(np.random.default_rng(b).uniform(0, 1, (b, 3)), jnp.float32)
        ref_t, ref_f = grid.simulate(xg, record="field")
        t, f = grid_split_simulate(grid, xg, devices=2)
        out[f"grid/{b}"] = {"traces_equal": bool(jnp.array_equal(t, ref_t)),
                            "field_equal": bool(jnp.array_equal(f, ref_f[-1])),
                            "field_max": float(jnp.max(jnp.abs(ref_f[-1]))),
                            "traces_rel": float(jnp.max(jnp.abs(t - ref_t)) /
                                                jnp.max(jnp.abs(ref_t))),
                            "field_rel": float(jnp.max(jnp.abs(f - ref_f[-1])) /
                                               jnp.max(jnp.abs(ref_f[-1])))}
    try:
        grid_split_simulate(AcousticLayer(3, 2, nx=25, ny=24, pml_width=3), xg, devices=2)
        out["odd_rows"] = "accepted"
    except ValueError as e:
        out["odd_rows"] = str(e)
    print("RESULT " + json.dumps(out))
""")


def test_two_cpu_devices_give_the_single_device_outputs():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    script = f"BATCHES = {BATCHES!r}\nGRAD = {GRAD!r}\n" + _TWO_DEVICES
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert res["devices"] == 2
    for system in SIMULATORS:
        for b in BATCHES[system]:
            r = res[f"{system}/{b}"]
            assert r["scale"] > 0
            assert r["one"] <= 1e-6 and r["two"] <= 1e-6 and r["ledger"] <= 1e-6, (system, b, r)
        if system in GRAD:
            assert res[f"{system}/grad"] <= 1e-5, system
        assert res[f"{system}/output_devices"] == 2, system
    # grid split over two devices (halo exchange): the single-device field and probe traces
    for b in (3, 9):
        g = res[f"grid/{b}"]
        assert g["field_max"] > 0
        assert g["traces_rel"] <= 1e-5 and g["field_rel"] <= 1e-5, g  # float32 rounding
    assert "divisible by 2" in res["odd_rows"]


def test_one_device_wrapper_is_the_layer():
    layer = make_system("acoustic", 4, 3, seed=0)
    dp = DataParallel(layer, devices=1)
    assert dp.spec == layer.spec and dp.flops_per_sample == layer.flops_per_sample
    assert dp.layer is layer and dp.n_devices == 1
    x = np.random.default_rng(0).uniform(0, 1, (5, 4)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(dp(x)), np.asarray(layer(x)))


def test_input_and_parameters_still_validated():
    layer = make_system("acoustic", 4, 3, seed=0)
    dp = DataParallel(layer, devices=1)
    with pytest.raises(ValueError, match="acoustic"):
        dp(np.full((2, 4), np.nan, np.float32))
    with pytest.raises(ValueError):
        dp(np.zeros((2, 5), np.float32))


def test_too_many_devices_refused_naming_the_flag():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        batch_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match=">= 1"):
        batch_mesh(0)


def test_grid_split_on_one_device_is_the_field_and_refuses_other_layers():
    from pnn.sharded import grid_split_simulate
    from pnn.sim.acoustic import AcousticLayer

    layer = AcousticLayer(3, 2, nx=24, ny=24, pml_width=3, n_steps=60)
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 3)), jnp.float32)
    traces, field = grid_split_simulate(layer, x, devices=1)
    ref_t, ref_f = layer.simulate(x, record="field")
    np.testing.assert_array_equal(np.asarray(traces), np.asarray(ref_t))
    np.testing.assert_array_equal(np.asarray(field), np.asarray(ref_f[-1]))
    with pytest.raises(TypeError, match="AcousticLayer"):
        grid_split_simulate(make_system("optical", 3, 2), x, devices=1)


def test_only_simulators_can_be_sharded():
    class Driver:
        spec = make_system("acoustic", 4, 3).spec

        def __call__(self, x):
            return np.zeros((len(x), 3))

    with pytest.raises(TypeError, match="simulator"):
        DataParallel(Driver())
