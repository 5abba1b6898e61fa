"""End to end: PhyLL trained through real sockets and a real pty equals PhyLL on the simulator.

The same acoustic simulator (same seed) is used once directly and once behind each virtual
instrument: through pyvisa-py to the SCPI emulator, and through pyserial to the serial emulator.
Drives and measurements cross the wire as float32 (the simulator's own precision) and the driver
sends each batch whole, so the two runs must agree exactly, not just within noise.
"""

import numpy as np
import pytest

from pnn.drivers.emulator import ScpiEmulator, SerialEmulator
from pnn.drivers.serial import SerialLayer
from pnn.drivers.visa import VisaLayer
from pnn.data.vowels import Dataset
from pnn.registry import make_system
from pnn.train import phyll

SEED = 0
SYSTEM_SEED = 3
CFG = phyll.PhyLLConfig(hidden=(6,), n_meas=6, epochs=2, batch_size=16, inner_steps=10)


def blobs(seed=0, n_train=48, n_test=24, n_classes=3, n_features=4) -> Dataset:
    """Three well-separated Gaussian blobs in 4-D, standardised with training statistics."""
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.normal(size=(n_classes, n_features))

    def draw(n):
        y = np.repeat(np.arange(n_classes), n // n_classes)
        return centers[y] + 0.5 * rng.normal(size=(len(y), n_features)), y

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    mu, sd = x_tr.mean(0), x_tr.std(0)
    return Dataset(((x_tr - mu) / sd).astype(np.float32), y_tr,
                   ((x_te - mu) / sd).astype(np.float32), y_te,
                   classes=tuple("abc"[:n_classes]),
                   feature_names=tuple(f"f{i}" for i in range(n_features)),
                   name="blobs", info={"synthetic": True})


@pytest.fixture(scope="module")
def data():
    return blobs()


@pytest.fixture(scope="module")
def shape(data):
    ((n_in, n_out),) = phyll.layer_shapes(CFG, data.n_features, data.n_classes)
    return n_in, n_out


@pytest.fixture(scope="module")
def direct(data, shape):
    """PhyLL on the simulator itself: the reference."""
    sim = make_system("acoustic", *shape, seed=SYSTEM_SEED)
    return phyll.train([sim], data, CFG, seed=SEED).record


def _same_training(rec, ref):
    assert rec["test_accuracy"] == ref["test_accuracy"]
    assert rec["train_accuracy"] == ref["train_accuracy"]
    assert len(rec["history"]) == len(ref["history"]) == CFG.epochs
    for h, g in zip(rec["history"], ref["history"]):
        assert h["loss"] == pytest.approx(g["loss"], rel=1e-6, abs=1e-7)
        # blobs() has no validation split, so the history has no val_accuracy
        assert h["train_accuracy"] == g["train_accuracy"]
        assert h["physical_queries"] == g["physical_queries"]
    assert rec["cost"]["physical_queries"] == ref["cost"]["physical_queries"]


@pytest.mark.slow
def test_phyll_through_scpi_emulator_matches_the_simulator(data, shape, direct, patient_profile):
    n_in, n_out = shape
    with ScpiEmulator("acoustic", n_in, n_out, seed=SYSTEM_SEED, max_seconds=600) as emu:
        with VisaLayer(patient_profile, emu.resource, n_in=n_in, n_out=n_out) as layer:
            rec, _ = phyll.train([layer], data, CFG, seed=SEED)
    _same_training(rec, direct)
    assert rec["test_accuracy"] > 1 / data.n_classes  # it learned something
    # every physical query crossed the socket exactly once
    assert emu.log.samples_measured == rec["cost"]["physical_queries"] == layer.stats.samples
    assert layer.stats.retries == 0 and not emu.output_on


@pytest.mark.slow
def test_phyll_through_serial_emulator_matches_the_simulator(data, shape, direct, patient_profile):
    n_in, n_out = shape
    with SerialEmulator("acoustic", n_in, n_out, seed=SYSTEM_SEED, max_seconds=600) as emu:
        with SerialLayer(patient_profile, emu.port, n_in=n_in, n_out=n_out) as layer:
            rec, _ = phyll.train([layer], data, CFG, seed=SEED)
    _same_training(rec, direct)
    assert emu.log.samples_measured == rec["cost"]["physical_queries"] == layer.stats.samples
    assert layer.stats.retries == 0 and not emu.output_on


def test_the_hardware_page_training_script_runs_as_written(monkeypatch, capsys):
    """docs/hardware.md's ``hil_train.py``, taken from the page and run against an emulated
    SCPI instrument: its printed accuracies are the record's (the page's code cannot rot)."""
    from pathlib import Path

    from pnn.drivers.emulator import ScpiEmulator

    text = (Path(__file__).resolve().parents[2] / "docs" / "hardware.md").read_text()
    start = text.index("```python", text.index("(`hil_train.py`):")) + len("```python\n")
    code = text[start:text.index("```", start)]
    with ScpiEmulator("acoustic", 19, 8, seed=0, max_seconds=600) as emu:
        monkeypatch.setattr("sys.argv", ["hil_train.py", emu.resource])
        exec(compile(code, "docs/hardware.md (hil_train.py)", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "through PNN,Emulator-SCPI,acoustic-19x8-seed0" in out
    accs = [line.split("test accuracy ")[1].split("%")[0] for line in out.splitlines()
            if "test accuracy" in line]
    assert len(accs) == 2 and accs[0] == accs[1]  # the instrument is the simulator, over a wire
