"""``pnn instruments`` and ``pnn emulate``."""

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from pnn.drivers.emulator import ScpiEmulator
from pnn.drivers.serial import SerialLayer
from pnn.drivers.visa import VisaLayer
from pnn.cli import main
from pnn.registry import make_system

ROOT = Path(__file__).resolve().parents[2]


def test_instruments_lists_idn_and_reports_failures_per_resource(fast_layer, dead_port, capsys):
    dead = f"TCPIP::127.0.0.1::{dead_port}::SOCKET"
    with ScpiEmulator(layer=fast_layer, n_in=5, n_out=3, max_seconds=600) as emu:
        # a timeout that never fires: the live one answers, the dead one refuses at once
        rc = main(["instruments", "--no-scan", "--resource", emu.resource, "--resource", dead,
                   "--timeout-ms", "120000"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert any(line.startswith(emu.resource) and "PNN,Emulator-SCPI,tanh-5x3" in line
               for line in out)
    assert any(line.startswith(dead) and "no answer to *IDN?" in line and "refused" in line
               for line in out)


def test_instruments_with_nothing_to_query(capsys):
    assert main(["instruments", "--no-scan"]) == 0
    assert "no VISA resources found" in capsys.readouterr().out


def _start(args):
    return subprocess.Popen([sys.executable, "-m", "pnn.cli", "emulate", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


_EOF = None  # what the reader thread puts on the queue when stdout closes


def _read_resource(proc, timeout=120.0):
    """The address printed by ``pnn emulate`` (its 'resource:' line), and the queue of the
    further stdout lines (ended by ``_EOF``)."""
    lines = queue.Queue()

    def reader():  # a thread: a pipe's buffered readline and select() do not mix
        for line in iter(proc.stdout.readline, ""):
            lines.put(line)
        lines.put(_EOF)

    threading.Thread(target=reader, daemon=True).start()
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout)  # a bound against a hang, not a synchronisation
        except queue.Empty:
            break
        if line is _EOF:
            break
        seen.append(line)
        if line.startswith("resource:"):
            return line.split(None, 1)[1].strip(), lines
    proc.kill()
    pytest.fail(f"pnn emulate printed no resource line; stdout so far: {seen!r}, "
                f"stderr: {proc.stderr.read()!r}")


def _finish(proc, lines, timeout=120.0):
    """Wait for exit and for the end of stdout; return (all further stdout, stderr).

    Every wait ends on an event (the process exits, its stdout closes); the timeouts only bound
    a hang.
    """
    proc.wait(timeout)
    err = proc.stderr.read()
    out = []
    while (line := lines.get(timeout=timeout)) is not _EOF:
        out.append(line)
    return "".join(out), err


@pytest.mark.slow
def test_emulate_scpi_serves_until_ctrl_c(patient_profile):
    proc = _start(["--kind", "scpi", "--n-in", "5", "--n-out", "3", "--seed", "2",
                   "--max-seconds", "600"])
    try:
        resource, lines = _read_resource(proc)
        assert resource.startswith("TCPIP::127.0.0.1::") and resource.endswith("::SOCKET")
        x = np.random.default_rng(0).random((4, 5)).astype(np.float32)
        with VisaLayer(patient_profile, resource, n_in=5, n_out=3) as layer:
            y = layer(x)
        np.testing.assert_array_equal(y, np.asarray(make_system("acoustic", 5, 3, seed=2)(x)))
        proc.send_signal(signal.SIGINT)
        out, err = _finish(proc, lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "interrupted" in err
    assert "served 24 requests over 1 connection(s); 1 batches, 4 samples measured; " \
           "output off" in out


@pytest.mark.parametrize("kind", ["scpi", "serial"])
def test_emulate_takes_ctrl_c_as_soon_as_it_names_its_resource(kind):
    """The 'resource:' line is the handshake: Ctrl-C sent the moment it is read (while the
    emulator may still be printing its other lines) stops it cleanly, with its summary."""
    proc = _start(["--kind", kind, "--system", "none", "--max-seconds", "600"])
    try:
        _, lines = _read_resource(proc)
        proc.send_signal(signal.SIGINT)
        out, err = _finish(proc, lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert err.splitlines()[-1:] == ["pnn emulate: interrupted"] and "Traceback" not in err
    assert out.endswith("served 0 requests over 1 connection(s); 0 batches, 0 samples "
                        "measured; output off\n"), out


@pytest.mark.slow
def test_emulate_serial_stops_after_its_request_limit(patient_profile):
    proc = _start(["--kind", "serial", "--n-in", "5", "--n-out", "3", "--max-requests", "3",
                   "--max-seconds", "600"])
    try:
        port, lines = _read_resource(proc)
        assert port.startswith("/dev/")
        # SAFE, the third request, is the emulator's last: its reply must still reach close()
        with SerialLayer(patient_profile, port, n_in=5, n_out=3) as layer:
            layer(np.full((2, 5), 0.5, np.float32))
        assert layer.stats.retries == 0
        out, err = _finish(proc, lines)  # HELLO, MEASURE, SAFE: it stops by itself
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "served 3 requests" in out and "2 samples measured" in out


# ------------------------------------------------------------------ pnn train --instrument
TRAIN = ["train", "--method", "phyll", "--classes", "iy,uw,aa", "--hidden", "6", "--n-meas", "6",
         "--epochs", "1", "--batch-size", "16", "--seed", "0"]


def _block_shape():
    from pnn.train import phyll

    cfg = phyll.PhyLLConfig(hidden=(6,), n_meas=6)
    ((n_in, n_out),) = phyll.layer_shapes(cfg, 4, 3)  # 4 formants, 3 vowels
    return n_in, n_out


@pytest.mark.slow
def test_train_on_a_visa_instrument_equals_training_on_its_simulator(tmp_path, capsys,
                                                                     patient_profile_file):
    import json

    n_in, n_out = _block_shape()
    # the instrument runs PhyLL's host path; so does this simulator run (bit-for-bit equal;
    # the fused device epoch equals it to round-off: tests/train/test_phyll_device.py)
    main([*TRAIN, "--system", "acoustic", "--set", "device_epoch=off",
          "--out", str(tmp_path / "sim.json")])
    # build_layers seeds block 0 of seed 0 with 0: the emulator runs that very simulator
    with ScpiEmulator("acoustic", n_in, n_out, seed=0, max_seconds=600) as emu:
        assert main([*TRAIN, "--instrument", f"visa:{emu.resource}",
                     "--profile", str(patient_profile_file),
                     "--out", str(tmp_path / "hw.json")]) == 0
        assert not emu.output_on  # left safe at the end
    sim = json.loads((tmp_path / "sim.json").read_text())
    hw = json.loads((tmp_path / "hw.json").read_text())
    assert hw["system"] == "instrument" and hw["params_sha256"] == sim["params_sha256"]
    assert hw["test_accuracy"] == sim["test_accuracy"] > 0.5
    (inst,) = hw["instruments"]
    assert inst["idn"].startswith("PNN,Emulator-SCPI,acoustic")
    q = hw["cost"]["physical_queries"]
    assert q == sim["cost"]["physical_queries"] == inst["driver"]["samples"]
    assert q == emu.log.samples_measured and inst["safety"]["refused_batches"] == 0
    assert "on visa[0]:" in capsys.readouterr().err


def test_train_on_a_serial_instrument_with_the_shape_checks(tmp_path, capsys,
                                                            patient_profile_file):
    from pnn.drivers.emulator import SerialEmulator
    from tests.drivers.conftest import TanhLayer

    n_in, n_out = _block_shape()
    with SerialEmulator(layer=TanhLayer(n_in, n_out), n_in=n_in, n_out=n_out,
                        max_seconds=600) as emu:
        out = tmp_path / "r.json"
        assert main([*TRAIN, "--instrument", f"serial:{emu.port}",
                     "--profile", str(patient_profile_file), "--out", str(out)]) == 0
        assert not emu.output_on
        assert emu.log.commands[0] == "HELLO" and emu.log.commands[-1] == "SAFE"
        # three instruments for a two-block network: the message lists what each block needs
        assert main([*TRAIN, "--hidden", "6,6", *["--instrument", f"serial:{emu.port}"] * 3]) == 2
        err = capsys.readouterr().err
        assert "needs 2 physical layer(s) (block 0: n_in=" in err and "block 1: n_in=6, n_out=6" in err
    import json

    rec = json.loads(out.read_text())
    assert rec["instruments"][0]["driver"]["samples"] == rec["cost"]["physical_queries"] > 0
    # the profile's whole contents, not only its path (the file may change after the run)
    contents = rec["instruments"][0]["profile_contents"]
    assert contents["source"] == str(patient_profile_file)
    assert contents["serial"]["timeout_s"] == 120.0 and contents["safety"]["max_rate_hz"] == "inf"


@pytest.mark.parametrize("extra, message", [
    (["--instrument", "gpib:7"], "expected 'visa:RESOURCE'"),
    (["--method", "insilico", "--instrument", "visa:X"], "'insilico' needs a differentiable"),
    (["--method", "bp", "--instrument", "visa:X"], "'bp' has no physical layer"),
])
def test_train_instrument_bad_input_is_a_clear_error(extra, message, capsys):
    assert main([*TRAIN, *extra]) == 2
    assert message in capsys.readouterr().err
