"""One apparatus for every block: a two-block PhyLL network trained through a single SCPI
instrument and through a single serial device equals the same network trained on one shared
simulator called directly (``--system acoustic --shared``)."""

import json

import pytest

from pnn.cli import main
from pnn.drivers.emulator import ScpiEmulator, SerialEmulator
from pnn.train import phyll

TRAIN = ["train", "--method", "phyll", "--classes", "iy,uw,aa", "--hidden", "6,6",
         "--n-meas", "6", "--epochs", "1", "--batch-size", "16", "--seed", "0"]


def _device_shape():
    """The shared apparatus: as wide as the widest block's drive and measurement."""
    cfg = phyll.PhyLLConfig(hidden=(6, 6), n_meas=6)
    shapes = phyll.layer_shapes(cfg, 4, 3)  # 4 formants, 3 vowels
    assert len(shapes) == 2 and shapes[0] != shapes[1]  # the blocks really differ in width
    return max(i for i, _ in shapes), max(o for _, o in shapes)


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "sim.json"
    # the instruments run PhyLL's host path (a step at a time, every drive checked): the
    # simulator run takes it too, for a bit-for-bit comparison (the fused device epoch equals
    # it to float round-off: tests/train/test_phyll_device.py)
    assert main([*TRAIN, "--system", "acoustic", "--shared", "--set", "device_epoch=off",
                 "--out", str(out)]) == 0
    return json.loads(out.read_text())


def _check_equal(hw, sim, emu, kind):
    assert hw["params_sha256"] == sim["params_sha256"]
    assert hw["test_accuracy"] == sim["test_accuracy"] > 0.5
    assert [h["loss"] for h in hw["history"]] == [h["loss"] for h in sim["history"]]
    (inst,) = hw["instruments"]  # one device for both blocks
    q = hw["cost"]["physical_queries"]
    assert q == sim["cost"]["physical_queries"] == inst["driver"]["samples"]
    assert q == emu.log.samples_measured
    # the ledger counts per block and per device: both blocks on the one device
    by_layer = hw["cost"]["queries_by_layer"]
    assert len(by_layer) == 2 and sum(by_layer.values()) == q
    (device, n), = hw["cost"]["queries_by_device"].items()
    assert n == q and device.startswith(kind)
    assert not emu.output_on  # left safe at the end


@pytest.mark.slow
def test_two_blocks_through_one_scpi_instrument_equal_the_shared_simulator(
        tmp_path, shared_sim, patient_profile_file):
    n_in, n_out = _device_shape()
    # build_layers seeds the shared device of seed 0 with 0: the emulator runs that simulator
    with ScpiEmulator("acoustic", n_in, n_out, seed=0, max_seconds=600) as emu:
        assert main([*TRAIN, "--instrument", f"visa:{emu.resource}",
                     "--profile", str(patient_profile_file),
                     "--out", str(tmp_path / "hw.json")]) == 0
        _check_equal(json.loads((tmp_path / "hw.json").read_text()), shared_sim, emu, "visa")


@pytest.mark.slow
def test_two_blocks_through_one_serial_device_equal_the_shared_simulator(
        tmp_path, shared_sim, patient_profile_file):
    n_in, n_out = _device_shape()
    with SerialEmulator("acoustic", n_in, n_out, seed=0, max_seconds=600) as emu:
        assert main([*TRAIN, "--instrument", f"serial:{emu.port}",
                     "--profile", str(patient_profile_file),
                     "--out", str(tmp_path / "hw.json")]) == 0
        _check_equal(json.loads((tmp_path / "hw.json").read_text()), shared_sim, emu, "serial")
