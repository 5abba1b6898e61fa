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


def _steps(d: Path):
    return sorted(int(p.stem.split("-")[1]) for p in d.glob("ckpt-*.npz"))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    ref_out = tmp_path / "ref.json"
    ref = _run([*ARGS, "--out", str(ref_out)])
    assert ref.wait(timeout=300) == 0, ref.stderr.read()

    ck = tmp_path / "ck"
    out = tmp_path / "resumed.json"
    p = _run([*ARGS, "--checkpoint-dir", str(ck), "--checkpoint-every", "3"])
    deadline = time.time() + 240
    # 318 training samples / 16 = 20 batches an epoch: kill after step 6, in epoch 1
    while time.time() < deadline and not any(s >= 6 for s in _steps(ck)):
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    killed_at = max(_steps(ck))
    assert 6 <= killed_at < 20, killed_at  # really mid-epoch

    r = _run([*ARGS, "--checkpoint-dir", str(ck), "--checkpoint-every", "3", "--resume",
              "--out", str(out)])
    assert r.wait(timeout=300) == 0, r.stderr.read()
    a, b = json.loads(ref_out.read_text()), json.loads(out.read_text())
    assert b["params_sha256"] == a["params_sha256"]
    assert [h["loss"] for h in b["history"]] == [h["loss"] for h in a["history"]]
    assert b["test_accuracy"] == a["test_accuracy"]
    # no sample lost or counted twice
    assert b["cost"]["physical_queries"] == a["cost"]["physical_queries"]
    assert b["cost"]["digital_flops"] == a["cost"]["digital_flops"]


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_and_stops_cleanly(tmp_path):
    import re

    ck = tmp_path / "ck"
    p = _run([*ARGS, "--checkpoint-dir", str(ck), "--checkpoint-every", "5"])
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
