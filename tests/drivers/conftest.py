"""Shared fixtures for the driver tests: a fast stand-in physics and two profiles.

No test here may depend on how fast the machine is (CI runs on a loaded 2-core machine): every
wait ends on an event (a reply, a reset connection, a logged request), and a timeout either is the
thing under test (``silent_profile``, where nobody answers) or only bounds a hang
(``patient_profile``: long enough that no stall can reach it).
"""

import dataclasses
import socket

import numpy as np
import pytest

from pnn.drivers.profile import load_profile
from pnn.layer import LayerSpec, validate_input


class TanhLayer:
    """y = tanh(x W): a deterministic, instant physical layer for protocol tests."""

    def __init__(self, n_in=5, n_out=3, seed=0):
        self.spec = LayerSpec(n_in=n_in, n_out=n_out, name="tanh")
        self.W = np.random.default_rng(seed).normal(size=(n_in, n_out)).astype(np.float32)

    def __call__(self, x):
        validate_input(self.spec, x)
        return np.tanh(np.asarray(x, np.float32) @ self.W)


@pytest.fixture
def fast_layer():
    return TanhLayer(5, 3)


@pytest.fixture
def drives():
    return np.random.default_rng(1).random((12, 5)).astype(np.float32)


@pytest.fixture
def silent_profile():
    """For the tests where a timeout is *meant* to fire because nobody answers (a silent
    instrument): the emulator profile with a short read timeout and no other short wait. Opening
    a loopback socket or a pty never waits, so only the read timeout under test can fire."""
    p = load_profile("emulator")
    visa = dataclasses.replace(p.visa, timeout_ms=300, open_timeout_ms=120_000,
                               measure_timeout_ms=600_000)
    serial = dataclasses.replace(p.serial, timeout_s=0.4, measure_timeout_s=600.0)
    return dataclasses.replace(p, visa=visa, serial=serial)


@pytest.fixture
def patient_profile():
    """The shipped emulator profile with timeouts that never fire in a healthy exchange, however
    loaded the machine: for tests where no reply is meant to go missing, so that every wait ends
    on the reply itself and never on a clock."""
    p = load_profile("emulator")
    visa = dataclasses.replace(p.visa, timeout_ms=120_000, open_timeout_ms=120_000,
                               measure_timeout_ms=600_000)
    serial = dataclasses.replace(p.serial, timeout_s=120.0, measure_timeout_s=600.0)
    return dataclasses.replace(p, visa=visa, serial=serial)


@pytest.fixture
def dead_port():
    """A loopback TCP port that refuses connections for the whole test: bound (so nobody else can
    take it) but not listening. A port that was free a moment ago could be reused meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
