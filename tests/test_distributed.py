"""Two processes, one simulation (pnn.distributed): two local processes started with
docs/workflows.md's environment run the data-parallel acoustic layer, the acoustic grid split
and one PhyLL step on ``--devices 2`` layers over the devices of both; each is compared with the
same computation in one process (this one), to float32 rounding.

Process 0 has two virtual CPU devices, process 1 one, joined by gloo over TCP on a free port.
They are synchronised only on their exit codes and the files they write (atomically, by
rename); the timeouts only bound a failure. The page's full ``pnn train`` in two processes is
not run here (two trainings with every program compiled for the runtime, and the reference:
about 55 s of CPU in all, measured); its environment and commands are checked and used.

Skipped, with the reason, only where this JAX has no CPU collectives between processes."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pnn import distributed
from pnn.cli import build_parser, main
from tests.docs_examples import ROOT, blocks

IMPL, WHY = distributed.cpu_collectives()
needs_collectives = pytest.mark.skipif(
    IMPL is None, reason=f"this JAX build lacks CPU collectives between processes: {WHY}")

#: one PhyLL training step (12 samples, 4 features, 3 classes; hidden 6, 6 measured channels)
#: on the layers ``registry.build_layers`` makes with ``devices=DEVICES``; leaves ``layers``,
#: the ``ledger``, the step's ``loss`` and the block's updated ``params`` (one flat array)
_PHYLL_STEP = textwrap.dedent("""
    cfg = registry.get_trainer("phyll").Config(hidden=(6,), n_meas=6, batch_size=12)
    rng = np.random.default_rng(5)
    data = types.SimpleNamespace(n_features=4, n_classes=3, y_train=np.arange(12) % 3,
                                 x_train=rng.uniform(-1, 1, (12, 4)).astype(np.float32))
    layers = registry.build_layers("acoustic", "phyll", cfg, data, seed=0, devices=DEVICES)
    ledger = Ledger()
    trainer = PhyLL(layers, data, cfg, seed=0, ledger=ledger)
    state, loss = trainer.step(trainer.init(), data.x_train, data.y_train)
    params = np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(
        eqx.filter(state["blocks"][0], eqx.is_inexact_array))])
""")

_WORKER = textwrap.dedent("""
    import json, os, sys, types
    from pnn import distributed
    joined = distributed.initialize_from_env()  # what `pnn` does first, from PNN_*
    import equinox as eqx, jax, numpy as np
    from pnn import registry
    from pnn.cost import Ledger
    from pnn.sharded import DataParallel, grid_split_simulate
    from pnn.sim.acoustic import AcousticLayer
    from pnn.train.phyll import PhyLL
    out = sys.argv[1]
    res = {"joined": joined, "processes": jax.process_count(), "index": jax.process_index(),
           "devices": len(jax.devices()), "local": jax.local_device_count()}
    # (a) the acoustic layer's batch over all three devices, through the ledger
    layer = registry.make_system("acoustic", 5, 6, seed=1)
    x = np.random.default_rng(9).uniform(0, 1, (10, 5)).astype(np.float32)
    every = DataParallel(layer)  # 10 rows padded to 12: 4 a device
    y = every(x)
    res["mesh_processes"] = sorted({d.process_index for d in every.mesh.devices.flat})
    res["output_devices"] = len(y.sharding.device_set)
    res["replicated"] = bool(y.is_fully_replicated)
    arrays = {"dp": Ledger().query(every, x)}
    try:
        DataParallel(layer, devices=1)
        res["one_device"] = "accepted"
    except ValueError as e:
        res["one_device"] = str(e)
    # (b) the acoustic grid's 24 rows over the three devices, 8 each
    grid = AcousticLayer(3, 2, nx=24, ny=24, pml_width=3, n_steps=120)
    xg = np.random.default_rng(3).uniform(0, 1, (4, 3)).astype(np.float32)
    traces, field = grid_split_simulate(grid, xg)
    arrays["traces"], arrays["field"] = np.asarray(traces), np.asarray(field)
    # (c) one PhyLL step on layers built as `--devices 2` builds them
    DEVICES = 2
    """) + _PHYLL_STEP + textwrap.dedent("""
    (layer2,) = layers
    res["phyll_processes"] = sorted({d.process_index for d in layer2.mesh.devices.flat})
    res["phyll_loss"], res["phyll_queries"] = float(loss), ledger.physical_queries
    arrays["phyll_params"] = params
    np.savez(out + ".tmp.npz", **arrays)
    os.replace(out + ".tmp.npz", out + ".npz")
    with open(out + ".tmp", "w") as f:
        json.dump(res, f)
    os.replace(out + ".tmp", out + ".json")
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _documented() -> tuple[dict[str, str], list[list[str]]]:
    """docs/workflows.md's two-process block: the exported environment, and each process's
    own environment assignments and arguments after ``pnn``, in order."""
    (ex,) = [b for b in blocks("docs/workflows.md", "bash") if "PNN_COORDINATOR=" in b.text]
    env, runs = {}, []
    for command in ex.commands():
        words = shlex.split(command)
        if words[0] == "export":
            env.update(w.split("=", 1) for w in words[1:])
            continue
        if words == ["wait"]:
            continue
        own = {}
        while "=" in words[0] and not words[0].startswith((".", "/")):
            key, _, value = words.pop(0).partition("=")
            own[key] = value
        assert Path(words[0]).name == "pnn", command
        runs.append((own, [w for w in words[1:] if w != "&"]))
    return env, runs


def _reference() -> dict:
    """This process (one device, no runtime): the bare acoustic layer, the single-device FDTD
    and the PhyLL step on one device, on the workers' inputs."""
    import types

    import equinox as eqx
    import jax

    from pnn import registry
    from pnn.cost import Ledger
    from pnn.sim.acoustic import AcousticLayer
    from pnn.train.phyll import PhyLL

    layer = registry.make_system("acoustic", 5, 6, seed=1)
    x = np.random.default_rng(9).uniform(0, 1, (10, 5)).astype(np.float32)
    grid = AcousticLayer(3, 2, nx=24, ny=24, pml_width=3, n_steps=120)
    xg = np.random.default_rng(3).uniform(0, 1, (4, 3)).astype(np.float32)
    traces, fields = grid.simulate(xg, record="field")
    ns = {"np": np, "jax": jax, "eqx": eqx, "types": types, "registry": registry,
          "Ledger": Ledger, "PhyLL": PhyLL, "DEVICES": 1}
    exec(_PHYLL_STEP, ns)
    return {"dp": np.asarray(layer(x)), "traces": np.asarray(traces),
            "field": np.asarray(fields[-1]), "phyll_loss": float(ns["loss"]),
            "phyll_queries": ns["ledger"].physical_queries, "phyll_params": ns["params"],
            "phyll_layer": type(ns["layers"][0]).__name__}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Two processes started with docs/workflows.md's environment (on a free port), process 0
    with two CPU devices; while they run, this process computes the references. Returns
    (per process: its result and arrays; the reference)."""
    tmp = tmp_path_factory.mktemp("distributed")
    env, runs = _documented()
    env["PNN_COORDINATOR"] = f"127.0.0.1:{_free_port()}"  # the one change: a free port
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = []
    for i, (own, _) in enumerate(runs):
        penv = {**base, **env, **own, "JAX_PLATFORMS": "cpu", "PNN_COORDINATOR_TIMEOUT": "120",
                **({"PNN_CPU_DEVICES": "2"} if i == 0 else {})}
        log = open(tmp / f"p{i}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp / f"w{i}")],
                                       cwd=ROOT, env=penv, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    try:
        ref = _reference()
        for p, _ in procs:
            p.wait(timeout=300)
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    out = []
    for i, (p, _) in enumerate(procs):
        assert p.returncode == 0, (tmp / f"p{i}.log").read_text()[-3000:]
        out.append((json.loads((tmp / f"w{i}.json").read_text()),
                    dict(np.load(tmp / f"w{i}.npz"))))
    return out, ref


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


def test_the_documented_launch_is_what_pnn_reads():
    """docs/workflows.md's block: every variable it sets is one pnn reads at startup, the
    process ids are 0 .. N-1 once each, and each process's command is the same pnn command
    (but its --out), one pnn's parser accepts, with --devices N spanning the processes."""
    env, runs = _documented()
    n = int(env["PNN_NUM_PROCESSES"])
    assert set(env) | {k for own, _ in runs for k in own} <= set(distributed.ENV)
    assert sorted(int(own["PNN_PROCESS_ID"]) for own, _ in runs) == list(range(n)) == [0, 1]
    argvs = [argv for _, argv in runs]
    for argv in argvs:
        args = build_parser().parse_args(argv)
        assert args.command == "train" and args.devices >= n
    outs = [argv[argv.index("--out") + 1] for argv in argvs]
    assert len(set(outs)) == n
    assert len({tuple(a for a in argv if a not in outs) for argv in argvs}) == 1


@needs_collectives
def test_two_processes_join_as_documented(two):
    """The workers, started with the documented environment, joined one runtime: two
    processes, three devices (two of process 0, one of process 1)."""
    procs, _ = two
    for i, (res, _) in enumerate(procs):
        assert res["joined"] and res["processes"] == 2 and res["index"] == i
        assert res["devices"] == 3
    assert [procs[0][0]["local"], procs[1][0]["local"]] == [2, 1]


@needs_collectives
def test_data_parallel_layer_over_two_processes(two):
    """The acoustic layer's batch over the three devices of both processes, through the
    ledger: each process reads the whole output, which is the bare layer's in one process to
    float32 rounding; a mesh that leaves a process out is refused."""
    procs, ref = two
    for res, arrays in procs:
        assert res["mesh_processes"] == [0, 1]
        assert res["output_devices"] == 3 and res["replicated"]
        assert arrays["dp"].shape == ref["dp"].shape == (10, 6)
        assert _rel(arrays["dp"], ref["dp"]) <= 1e-6
        assert "without one" in res["one_device"] and "at least 2 devices" in res["one_device"]
    np.testing.assert_array_equal(procs[0][1]["dp"], procs[1][1]["dp"])


@needs_collectives
def test_grid_split_over_two_processes(two):
    """The acoustic FDTD's 24 rows split 8/8/8 over the three devices (a halo crossing between
    the processes every step): each process holds the single-device traces and final field to
    float32 rounding."""
    procs, ref = two
    assert np.max(np.abs(ref["field"])) > 0
    for _, arrays in procs:
        assert arrays["field"].shape == ref["field"].shape == (4, 24, 24)
        assert _rel(arrays["traces"], ref["traces"]) <= 1e-5
        assert _rel(arrays["field"], ref["field"]) <= 1e-5


@needs_collectives
def test_a_phyll_step_over_two_processes(two):
    """One PhyLL step (calibration, 24 drives through the layer, 15 Adam steps of the block) on
    a layer built as ``--devices 2`` builds it, one device of each process: the loss and the
    block's parameters of the same step in one process on one device, to float rounding."""
    procs, ref = two
    assert ref["phyll_layer"] != "DataParallel"  # the reference: the bare layer
    for res, arrays in procs:
        assert res["phyll_processes"] == [0, 1]
        assert res["phyll_queries"] == ref["phyll_queries"] == 24
        assert res["phyll_loss"] == pytest.approx(ref["phyll_loss"], rel=1e-5)
        assert _rel(arrays["phyll_params"], ref["phyll_params"]) <= 1e-5
    np.testing.assert_array_equal(procs[0][1]["phyll_params"], procs[1][1]["phyll_params"])


# ------------------------------------------------------------------ refusals, in this process
@pytest.mark.parametrize("coordinator, n, i, match", [
    ("10.0.0.1", 2, 0, "expected 'host:port'"),
    ("10.0.0.1:0", 2, 0, "port 1 to 65535"),
    ("no-such-host.invalid:29500", 2, 1, "does not resolve"),
    ("127.0.0.1:29500", 2, 2, r"process_id \(of num_processes = 2\) = 2"),
    ("127.0.0.1:29500", 0, 0, "num_processes = 0"),
])
def test_bad_arguments_are_refused_before_connecting(coordinator, n, i, match):
    with pytest.raises(ValueError, match=match):
        distributed.initialize(coordinator, n, i)


def test_after_jax_started_is_refused_and_the_environment_is_read():
    import jax

    jax.numpy.zeros(1).block_until_ready()  # JAX has started in this process
    with pytest.raises(RuntimeError, match="before anything uses JAX"):
        distributed.initialize("127.0.0.1:29500", 2, 0)
    assert distributed.initialize_from_env({}) is False  # nothing set: nothing done
    with pytest.raises(ValueError, match="needs PNN_NUM_PROCESSES and PNN_PROCESS_ID"):
        distributed.initialize_from_env({"PNN_COORDINATOR": "127.0.0.1:29500"})
    with pytest.raises(ValueError, match="PNN_PROCESS_ID='one'"):
        distributed.initialize_from_env({"PNN_COORDINATOR": "127.0.0.1:29500",
                                         "PNN_NUM_PROCESSES": "2", "PNN_PROCESS_ID": "one"})
    with pytest.raises(ValueError, match="without PNN_COORDINATOR"):
        distributed.initialize_from_env({"PNN_NUM_PROCESSES": "2", "PNN_PROCESS_ID": "0"})


def test_pnn_reads_the_environment_before_any_command(monkeypatch, capsys):
    """pnn's main joins the runtime from PNN_* before the command runs: a bad value there is
    the command's one-line error, and nothing trains."""
    monkeypatch.setenv("PNN_COORDINATOR", "127.0.0.1:29500")
    monkeypatch.setenv("PNN_NUM_PROCESSES", "2")
    monkeypatch.setenv("PNN_PROCESS_ID", "2")
    assert main(["train", "--method", "phyll", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pnn train: error: process_id"), err
    assert "from 0 to 1" in err
