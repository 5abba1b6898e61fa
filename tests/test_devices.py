"""``--devices N`` (``pnn train``, ``compare``, ``tune``) and ``devices = N`` in experiment
files: simulator layers data-parallel over N JAX devices (pnn.sharded.DataParallel).

Several CPU devices exist only when XLA_FLAGS is set before jax is imported, so the two-device
run is a fresh interpreter; the refusals run here, on however many devices this process has."""

import json
import os
import shlex
import subprocess
import sys
import textwrap

import jax
import pytest

from pnn.cli import main
from pnn.config import ConfigError
from pnn.experiment import Experiment

TINY = ["--method", "phyll", "--classes", "iy,uw,aa", "--hidden", "6", "--n-meas", "6",
        "--epochs", "1", "--seed", "0"]


def _documented() -> tuple[dict, list[str]]:
    """docs/workflows.md's two-device command: its environment and its arguments after
    ``pnn``."""
    from tests.docs_examples import blocks

    (ex,) = [b for b in blocks("docs/workflows.md", "bash")
             if "--devices 2" in b.text and "XLA_FLAGS" in b.text]
    (command,) = ex.commands()
    env, _, rest = command.partition(" .venv/bin/pnn ")
    key, _, value = env.partition("=")
    return {key: value}, shlex.split(rest)

_TWO_DEVICES = textwrap.dedent("""
    import json, sys, types
    import jax, numpy as np
    from pnn import registry
    from pnn.cli import main
    from pnn.sharded import DataParallel
    tmp, tiny = sys.argv[1], json.loads(sys.argv[2])
    out = {"devices": len(jax.devices())}
    for n in (1, 2):
        rc = main(["train", *tiny, "--devices", str(n), "--out", f"{tmp}/r{n}.json"])
        out[f"rc{n}"] = rc
    # the layers pnn train builds with --devices 2: the batch sharded over both devices
    cfg = registry.get_trainer("phyll").Config(hidden=(6,), n_meas=6)
    shape = types.SimpleNamespace(n_features=4, n_classes=3)
    (one,) = registry.build_layers("acoustic", "phyll", cfg, shape, seed=0)
    (two,) = registry.build_layers("acoustic", "phyll", cfg, shape, seed=0, devices=2)
    x = np.random.default_rng(0).uniform(0, 1, (10, one.spec.n_in)).astype(np.float32)
    y1, y2 = one(x), two(x)
    out["wrapped"] = type(two).__name__
    out["n_devices"] = getattr(two, "n_devices", None)
    out["output_devices"] = len(y2.sharding.device_set)
    out["shard_rows"] = sorted(s.data.shape[0] for s in y2.addressable_shards)
    out["shard_devices"] = len({s.device for s in y2.addressable_shards})
    out["layer_rel"] = float(np.max(np.abs(np.asarray(y2) - np.asarray(y1)))
                             / np.max(np.abs(np.asarray(y1))))
    rc = main(["train", *tiny, "--devices", "3"])
    out["rc3"] = rc
    print("RESULT " + json.dumps(out))
""")


def test_train_on_two_cpu_devices_gives_the_one_device_run(tmp_path):
    """pnn train --devices 2 on two virtual CPU devices: the same test accuracy, selected
    epoch and validation accuracy as --devices 1 in the same process (identical), losses equal
    to float rounding (relative 1e-5; they differed by about 3e-8 when written); the layer's
    output is split over both devices, five rows each."""
    documented_env, argv = _documented()  # docs/workflows.md's command, as written
    assert argv[0] == "train" and argv[-2:] == ["--devices", "2"]
    env = {**os.environ, **documented_env, "JAX_PLATFORMS": "cpu"}
    p = subprocess.run([sys.executable, "-c", _TWO_DEVICES, str(tmp_path),
                        json.dumps(argv[1:-2])],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert res["devices"] == 2
    assert res["rc1"] == 0 and res["rc2"] == 0, p.stderr[-3000:]
    r1, r2 = (json.loads((tmp_path / f"r{n}.json").read_text()) for n in (1, 2))
    assert r1["devices"] == 1 and r2["devices"] == 2
    assert "devices" not in r1["experiment"] and r2["experiment"]["devices"] == 2
    assert r2["test_accuracy"] == r1["test_accuracy"] > 0.5  # chance 1/3
    assert r2["val_accuracy"] == r1["val_accuracy"]
    assert r2["selected_epoch"] == r1["selected_epoch"]
    assert r2["cost"]["physical_queries"] == r1["cost"]["physical_queries"]
    l1 = [h["loss"] for h in r1["history"]]
    l2 = [h["loss"] for h in r2["history"]]
    assert len(l1) == len(l2) == 1
    assert l2 == pytest.approx(l1, rel=1e-5)
    # the simulator layer really runs on both devices
    assert res["wrapped"] == "DataParallel" and res["n_devices"] == 2
    assert res["output_devices"] == 2 and res["shard_devices"] == 2
    assert res["shard_rows"] == [5, 5]
    assert res["layer_rel"] <= 1e-6
    # more devices than the two there are: a one-line error naming the count and the flag
    assert res["rc3"] == 2
    err = p.stderr.replace("\n", " ")
    assert "JAX sees only 2 devices" in err
    assert "--xla_force_host_platform_device_count=3" in err


@pytest.mark.parametrize("command", [
    ["train", *TINY],
    ["compare", "--methods", "phyll", "--seeds", "1", "--epochs", "1"],
    ["tune", "--methods", "phyll", "--trials", "1", "--epochs", "1"],
])
def test_more_devices_than_jax_sees_is_a_clear_error(command, tmp_path, capsys):
    n = len(jax.devices()) + 1
    assert main([*command, "--out", str(tmp_path / "out"), "--devices", str(n)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert f"devices{'' if command[0] == 'tune' else ' ='} {n}" in err  # experiments say 'devices ='
    assert f"JAX sees only {len(jax.devices())} device" in err
    assert f"XLA_FLAGS=--xla_force_host_platform_device_count={n}" in err
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_devices_must_be_a_positive_number(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--devices", "0"])
    assert "--devices: expected a whole number of devices >= 1, got '0'" in \
        capsys.readouterr().err


def test_instruments_cannot_be_sharded(capsys):
    assert main(["train", *TINY, "--devices", "2", "--instrument", "serial:/dev/null"]) == 2
    err = capsys.readouterr().err
    assert "devices = 2 with [instrument]" in err and "cannot be sharded" in err


def test_devices_in_an_experiment_file(tmp_path):
    base = {"method": {"name": "phyll", "epochs": 1}}
    exp = Experiment.from_dict({**base, "devices": 2})
    assert exp.devices == 2
    assert Experiment.from_dict(exp.to_dict()) == exp
    assert "devices = 2" in exp.to_toml()
    f = tmp_path / "e.toml"
    f.write_text(exp.to_toml())
    assert Experiment.from_toml(f) == exp
    # one device is the default and is not written (records from before keep their meaning)
    one = Experiment.from_dict(base)
    assert one.devices == 1 and "devices" not in one.to_dict()
    assert one.with_overrides(["devices=2"]) == exp
    compare = Experiment.from_dict({"kind": "compare", "methods": ["phyll"], "devices": 2})
    assert compare.devices == 2 and Experiment.from_dict(compare.to_dict()) == compare
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ConfigError, match=r"devices = .*expected an integer >= 1"):
            Experiment.from_dict({**base, "devices": bad})
    with pytest.raises(ConfigError, match="devices belongs to kind = 'train' or 'compare'"):
        Experiment.from_dict({"kind": "adapt", "methods": ["phyll"], "devices": 2,
                              "adapt": {"events": ["jump:epoch=1,factor=0.9"], "epochs": 2}})


def test_a_layer_that_is_not_a_jax_simulator_is_refused():
    from pnn.sharded import data_parallel

    class Driver:
        spec = None

        def __call__(self, x):
            return x

    d = Driver()
    assert data_parallel(d, 1) is d
    with pytest.raises(ValueError, match="devices = 2: the layer 'Driver' .*not a pure-JAX "
                                         "simulator"):
        data_parallel(d, 2)
    with pytest.raises(ValueError, match=">= 1"):
        data_parallel(d, 0)


def test_parameter_perturbations_reach_the_wrapped_simulator():
    """param_drift and jump with param= (and pnn adapt's schedules) name a field of the
    simulator; through DataParallel they change the wrapped simulator's field."""
    import numpy as np

    from pnn.perturb import compose, parse_perturbations, with_param
    from pnn.registry import make_system
    from pnn.sharded import DataParallel

    layer = make_system("acoustic", 4, 3, seed=0)
    dp = DataParallel(layer, devices=1)
    assert float(dp.speed_scale) == float(layer.speed_scale) == 1.0
    moved = with_param(dp, "speed_scale", 1.02)
    assert isinstance(moved, DataParallel)
    assert float(moved.layer.speed_scale) == pytest.approx(1.02)
    assert float(dp.layer.speed_scale) == 1.0  # a copy; the original untouched
    with pytest.raises(AttributeError):
        dp.no_such_field  # noqa: B018
    x = np.random.default_rng(0).uniform(0, 1, (6, 4)).astype(np.float32)
    for text in ("param_drift:param=speed_scale,rate=1e-3",
                 "jump:at=3,param=speed_scale,factor=1.02"):
        specs = parse_perturbations(text)
        np.testing.assert_array_equal(np.asarray(compose(dp, *specs, seed=0)(x)),
                                      np.asarray(compose(layer, *specs, seed=0)(x)))
