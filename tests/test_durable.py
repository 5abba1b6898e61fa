"""Kill a real training process with SIGKILL mid-epoch, resume it, and get identical results."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["train", "--system", "acoustic", "--method", "phyll", "--classes", "iy,uw,aa",
        "--hidden", "6", "--n-meas", "6", "--epochs", "2", "--batch-size", "16", "--seed", "3",
        # 0.1 s of latency on every physical call makes the run slow enough to kill mid-epoch;
        # readout noise and a random-walk drift carry state that the resumed run must continue
        "--perturb", "latency:seconds=0.1,noise:std=0.02,drift:step=0.002"]


def _run(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "pnn.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(autouse=True)
def _shared_compilation_cache(child_jax_cache):
    """The reference, killed and resumed processes compile the same programs: compile once."""


def _steps(d: Path):
    return sorted(int(p.stem.split("-")[1]) for p in d.glob("ckpt-*.npz"))


#: every method that trains physical layers; each gets small settings that keep the run short
METHOD_ARGS = {
    "phyll": ["--method", "phyll", "--hidden", "6", "--n-meas", "6"],
    "pat": ["--method", "pat", "--hidden", "6", "--n-meas", "6", "--set", "twin_samples=200",
            "--set", "twin_epochs=5"],
    "insilico": ["--method", "insilico", "--hidden", "6", "--n-meas", "6"],
    "zo": ["--method", "zo", "--hidden", "6", "--n-meas", "6"],
    "dfa": ["--method", "dfa", "--hidden", "6", "--n-meas", "6"],
    "ffzero": ["--method", "ffzero", "--hidden", "6", "--n-meas", "6", "--set", "n_dirs=4"],
}
COMMON = ["train", "--system", "acoustic", "--classes", "iy,uw,aa", "--epochs", "2",
          "--batch-size", "16", "--seed", "3",
          # readout noise and a random-walk drift carry state the resumed run must continue
          "--perturb", "noise:std=0.02,drift:step=0.002"]


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, method):
    """The process kills itself with SIGKILL right after the checkpoint of step 7 is on disk
    (mid-epoch 1: 252 training samples / 16 = 16 steps an epoch): a real crash at a
    deterministic point, so the test does not depend on timing."""
    args = [*COMMON, *METHOD_ARGS[method]]
    ref_out = tmp_path / "ref.json"
    ref = _run([*args, "--out", str(ref_out)])
    assert ref.wait(timeout=600) == 0, ref.stderr.read()

    ck = tmp_path / "ck"
    env = {**os.environ, "PNN_TEST_SIGKILL_AFTER_STEP": "7"}
    p = _run([*args, "--checkpoint-dir", str(ck), "--checkpoint-every", "7"], env=env)
    p.wait(timeout=600)
    assert p.returncode == -signal.SIGKILL, p.stderr.read()
    assert _steps(ck) == [7]

    out = tmp_path / "resumed.json"
    r = _run([*args, "--checkpoint-dir", str(ck), "--checkpoint-every", "7", "--resume",
              "--out", str(out)])
    assert r.wait(timeout=600) == 0, r.stderr.read()
    a, b = json.loads(ref_out.read_text()), json.loads(out.read_text())
    assert b["params_sha256"] == a["params_sha256"]
    assert [h["loss"] for h in b["history"]] == [h["loss"] for h in a["history"]]
    assert b["val_accuracy"] == a["val_accuracy"] and b["test_accuracy"] == a["test_accuracy"]
    # no sample lost or counted twice
    assert b["cost"]["physical_queries"] == a["cost"]["physical_queries"]
    assert b["cost"]["digital_flops"] == a["cost"]["digital_flops"]


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_naming_the_keys(tmp_path):
    args = [*COMMON, *METHOD_ARGS["phyll"]]
    ck = tmp_path / "ck"
    env = {**os.environ, "PNN_TEST_SIGKILL_AFTER_STEP": "3"}
    p = _run([*args, "--checkpoint-dir", str(ck), "--checkpoint-every", "3"], env=env)
    p.wait(timeout=600)
    assert _steps(ck) == [3]
    changed = [a.replace("noise:std=0.02", "noise:std=0.03") for a in args]
    changed = [*changed, "--set", "theta=4.0"]
    r = _run([*changed, "--checkpoint-dir", str(ck), "--resume"])
    err = r.communicate(timeout=600)[1]
    assert r.returncode == 2, err
    assert "written by a different run; differing keys:" in err
    assert "config.theta" in err and "perturbations[0][0].std" in err


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_and_stops_cleanly(tmp_path):
    import re

    ck = tmp_path / "ck"
    p = _run([*ARGS, "--checkpoint-dir", str(ck), "--checkpoint-every", "2"])
    deadline = time.time() + 240
    while time.time() < deadline and not _steps(ck):  # training is under way
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130, err
    m = re.search(r"interrupted: stopped after step (\d+); checkpoint written", err)
    assert m, err
    assert int(m.group(1)) in _steps(ck)  # the state at the moment of stopping is on disk
