"""Shared fixtures for the driver tests: a fast stand-in physics and a quick-timeout profile."""

import dataclasses

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
def fast_profile():
    """The shipped emulator profile with timeouts short enough for fault tests."""
    p = load_profile("emulator")
    visa = dataclasses.replace(p.visa, timeout_ms=300, open_timeout_ms=500,
                               measure_timeout_ms=1500, max_retries=2)
    serial = dataclasses.replace(p.serial, timeout_s=0.4, measure_timeout_s=1.0, max_retries=3,
                                 resync_gap_s=0.05)
    return dataclasses.replace(p, visa=visa, serial=serial)
