"""``pnn emulate --kind scpi-pair``: a virtual AWG and a virtual scope on two sockets, served by
one command, and ``pnn train`` through them with the shipped two-address profile."""

import json
import re
import signal

import pytest

from pnn.cli import main
from pnn.drivers.profile import PROFILE_DIR
from tests.drivers.test_hardware_cli import TRAIN, _block_shape, _finish, _read_resource, _start
from tests.drivers.test_visa_two_address import _profile


@pytest.mark.slow
def test_training_through_the_emulated_awg_and_scope(tmp_path):
    n_in, n_out = _block_shape()
    proc = _start(["--kind", "scpi-pair", "--n-in", str(n_in), "--n-out", str(n_out),
                   "--seed", "0", "--max-seconds", "600"])
    try:
        resource, lines = _read_resource(proc)
        source, receiver = resource.split("+")
        assert source != receiver and all(r.startswith("TCPIP::127.0.0.1::") for r in
                                          (source, receiver))
        profile = _profile(tmp_path)  # the shipped emulator_pair profile, patient timeouts
        out = tmp_path / "hw.json"
        assert main([*TRAIN, "--instrument", f"visa:{resource}", "--profile", str(profile),
                     "--out", str(out)]) == 0
        proc.send_signal(signal.SIGINT)  # training is over: the event that ends the emulator
        printed, err = _finish(proc, lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    # the profile it speaks, named after the resource line
    assert f"profile:  {PROFILE_DIR / 'emulator_pair.toml'}" in printed, printed
    rec = json.loads(out.read_text())
    (inst,) = rec["instruments"]
    text = json.dumps(inst)
    assert "Emulator-AWG" in text and "Emulator-Scope" in text  # both identities recorded
    assert inst["profile_contents"]["name"] == "pnn emulator pair", inst["profile_contents"]
    served = re.search(r"(\d+) samples measured; output off", printed)
    assert served, printed
    # every measurement the trainer counted was taken once by the pair, and the AWG left off
    assert int(served.group(1)) == rec["cost"]["physical_queries"] == inst["driver"]["samples"]
    assert rec["test_accuracy"] > 0.5  # 3 vowels: chance is 1/3


def test_a_pair_needs_an_even_n_out(capsys):
    assert main(["emulate", "--kind", "scpi-pair", "--n-out", "3", "--max-seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert "--n-out must be even" in err and "Traceback" not in err


def test_a_serial_emulator_refuses_a_port(capsys):
    assert main(["emulate", "--kind", "serial", "--port", "5025", "--max-seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert "--port 5025: a serial emulator serves a pseudo-terminal" in err
    assert "Traceback" not in err
