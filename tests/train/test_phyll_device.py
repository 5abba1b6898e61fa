"""PhyLL's device epoch (pnn.train.phyll_device) computes what the host path computes."""

import jax
import numpy as np
import pytest

from pnn.config import ConfigError
from pnn.cost import Ledger
from pnn.perturb import compose
from pnn.sim.ablation import RandomNonlinear
from pnn.sim.acoustic import AcousticLayer
from pnn.train import phyll
from pnn.train.loop import device_plan
from tests.train.test_phyll import RandomQuadraticLayer, blobs

#: a small task: 3 classes, 49 training samples in batches of 16 (the last holds 1); the
#: ledger sends at most 16 drives a call (so the host and the device path each compile the
#: simulator for few shapes: a batch's 32 drives go in two chunks)
CFG = dict(hidden=(6, 6), n_meas=6, epochs=2, batch_size=16, inner_steps=4, eval_train_max=0)
MAX_BATCH = 16


def _data():
    return blobs(n_per_class=30, n_classes=3, n_features=4)


def _layers(cfg, data):
    return [AcousticLayer(n_in, n_out, nx=24, ny=24, n_steps=80, pml_width=4, seed=k,
                          name=f"acoustic[{k}]")
            for k, (n_in, n_out) in enumerate(phyll.layer_shapes(cfg, data.n_features,
                                                                 data.n_classes))]


def _speckle_layers(cfg, data):
    return [RandomNonlinear(n_in, n_out, seed=k, name=f"speckle[{k}]")
            for k, (n_in, n_out) in enumerate(phyll.layer_shapes(cfg, data.n_features,
                                                                 data.n_classes))]


def _train(mode, data, layers=_layers, **kw):
    cfg = phyll.PhyLLConfig(**{**CFG, **kw, "device_epoch": mode})
    ledger = Ledger(max_batch=MAX_BATCH)
    rec, model = phyll.train(layers(cfg, data), data, cfg, seed=3, ledger=ledger)
    return rec, model, ledger


@pytest.mark.parametrize("layers, kw", [
    (_layers, {}),
    (_speckle_layers, {"goodness": "sumsq", "label_scale": "batch", "encoding": "minmax",
                       "negatives": 2, "lr_schedule": "constant", "hidden": (6,)}),
], ids=["acoustic", "speckle-sumsq-batch-all-negatives"])
def test_device_epoch_equals_the_host_path_with_a_ragged_last_batch(layers, kw):
    data = _data()
    assert len(data.y_train) % CFG["batch_size"] == 1  # the last batch holds one sample
    host, m_host, l_host = _train("off", data, layers, **kw)
    dev, m_dev, l_dev = _train("on", data, layers, **kw)
    assert host["device_epoch"]["used"] is False and dev["device_epoch"]["used"] is True
    assert dev["device_epoch"]["fused_epochs"] == kw.get("epochs", CFG["epochs"])
    for a, b in zip(jax.tree_util.tree_leaves(m_host.params), jax.tree_util.tree_leaves(
            m_dev.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([h["loss"] for h in dev["history"]],
                               [h["loss"] for h in host["history"]], rtol=1e-5)
    assert dev["steps"] == host["steps"] == dev["device_epoch"]["fused_epochs"] * 4
    assert dev["test_accuracy"] == host["test_accuracy"]
    # the same queries per layer, device and purpose, the same FLOPs, the same kept samples
    for key in ("queries_by_layer", "queries_by_device", "queries_by_purpose", "flops_by_item"):
        assert dev["cost"][key] == host["cost"][key], key
    for name, (x, y) in l_host.kept_samples().items():
        xd, yd = l_dev.kept_samples()[name]
        np.testing.assert_allclose(xd, x, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(yd, y, rtol=1e-4, atol=1e-7)
    # the ledger's physical time for the fused epochs is attributed, and said to be
    d = dev["device_epoch"]
    assert 0 < d["physical_s_attributed"] <= d["fused_s"] and d["probe_queries"] > 0
    assert "measured by calling each simulator alone" in d["physical_s_method"]


def _plan(layers, mode="auto", **loop):
    data = _data()
    cfg = phyll.PhyLLConfig(**{**CFG, "device_epoch": mode})
    algo = phyll.PhyLL(layers(cfg, data), data, cfg, seed=0, ledger=Ledger())
    return device_plan(algo, cfg, 4, **loop)


def _host_layers(cfg, data):
    return [RandomQuadraticLayer(i, o, seed=k, name=f"quad[{k}]") for k, (i, o) in
            enumerate(phyll.layer_shapes(cfg, data.n_features, data.n_classes))]


def _perturbed_layers(cfg, data):
    layers = _layers(cfg, data)
    return [compose(layers[0], "noise:std=0.01", seed=1), layers[1]]


def test_auto_takes_the_host_path_for_host_layers_perturbations_and_hooks():
    assert _plan(_layers)["used"] is True
    plan = _plan(_host_layers)
    assert plan["used"] is False and "quad[0] is not a pure-JAX simulator" in plan["obstacles"][0]
    plan = _plan(_perturbed_layers)
    assert plan["used"] is False
    assert plan["obstacles"] == ["acoustic[0] carries a perturbation, applied per call on the "
                                 "host"]
    assert _plan(_layers, on_step=lambda step, ev: None)["used"] is False
    assert _plan(_layers, checkpoint_every=3)["used"] is False
    assert _plan(_layers, checkpoint_every=8)["used"] is True  # at the end of every 2nd epoch
    assert _plan(_layers, "off")["used"] is False


@pytest.mark.parametrize("layers, loop, match", [
    (_host_layers, {}, r"quad\[0\] is not a pure-JAX simulator"),
    (_perturbed_layers, {}, r"acoustic\[0\] carries a perturbation"),
    (_layers, {"on_step": lambda step, ev: None}, "an on_step hook must run after every step"),
    (_layers, {"checkpoint_every": 3}, "checkpoint_every=3 puts checkpoints inside an epoch"),
])
def test_on_refuses_where_an_epoch_cannot_be_one_program(layers, loop, match):
    with pytest.raises(ConfigError, match=r'device_epoch="on": an epoch cannot run as one '
                                          r"compiled program here: .*" + match):
        _plan(layers, "on", **loop)


class _Stop(Exception):
    pass


def test_a_device_run_resumed_at_an_epoch_end_ends_bit_for_bit_as_uninterrupted(tmp_path):
    data = _data()
    cfg = phyll.PhyLLConfig(**{**CFG, "device_epoch": "on"})
    ref, _ = phyll.train(_layers(cfg, data), data, cfg, seed=3, ledger=Ledger(MAX_BATCH))

    def stop_after_first(rec):
        if rec["epoch"] == 1:
            raise _Stop

    ck = tmp_path / "ck"
    with pytest.raises(_Stop):  # the checkpoint of the epoch's end is written before this
        phyll.train(_layers(cfg, data), data, cfg, seed=3, checkpoint_dir=ck,
                    checkpoint_every=4, progress=stop_after_first, ledger=Ledger(MAX_BATCH))
    out, _ = phyll.train(_layers(cfg, data), data, cfg, seed=3, checkpoint_dir=ck,
                         checkpoint_every=4, resume=True, ledger=Ledger(MAX_BATCH))
    assert out["device_epoch"]["used"] is True and out["device_epoch"]["fused_epochs"] == 1
    assert out["params_sha256"] == ref["params_sha256"]
    assert [h["loss"] for h in out["history"]] == [h["loss"] for h in ref["history"]]
    assert out["cost"]["physical_queries"] == ref["cost"]["physical_queries"]
    assert out["test_accuracy"] == ref["test_accuracy"]
