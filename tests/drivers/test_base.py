"""The instrument base: one path for every driver (validate, clip, safety, wire, chunk, pace,
retry, count), with a transport that only moves data."""

import dataclasses

import numpy as np
import pytest

from pnn.drivers.base import InstrumentLayer, TransientError
from pnn.drivers.emulator import ScpiEmulator, SerialEmulator
from pnn.drivers.errors import InstrumentConnectionError, InstrumentError, SafetyError
from pnn.drivers.serial import SerialLayer
from pnn.drivers.visa import VisaLayer

from tests.drivers.conftest import TanhLayer


class MemoryWire(InstrumentLayer):
    """A transport that keeps everything in memory: what the base asks of a driver, no more."""

    _section = "visa"
    _kind = "MemoryWire"
    _encoding_key = "[visa.drive]"

    def __init__(self, profile, *, physics, failures=(), max_batch=2):
        self._v = self._load_settings(profile)
        self._init_instrument(n_in=physics.spec.n_in, n_out=physics.spec.n_out, name="mem",
                              safety=None)
        self.physics, self.failures, self.max_batch = physics, list(failures), max_batch
        self.link = False
        self.sent, self.log = [], []

    _wire_datatype = "f"

    def to_instrument(self, x):
        return np.asarray(x, np.float64)

    def _open_link(self):
        self.log.append("open")
        self.link = True

    def _link_open(self):
        return self.link

    def _discard(self):
        self.link = False

    def _make_safe(self, was_connected):
        self.log.append("safe")
        return None

    def _batch_limit(self):
        return self.max_batch

    def _max_retries(self):
        return 2

    def _prepare(self, values, encoded):
        return encoded.copy()

    def _exchange(self, request, attempt):
        self.log.append(("send", len(request), attempt))
        if self.failures and self.failures[0] == len(self.sent):
            self.failures.pop(0)
            self.link = False
            raise TransientError(ConnectionResetError("link dropped"))
        self.sent.append(request)
        return np.asarray(self.physics(request), np.float64)

    def _gave_up(self, n_values, tries, last):
        return InstrumentConnectionError(f"mem: gave up after {tries}: {last}")


def test_both_drivers_use_the_one_path():
    for cls in (VisaLayer, SerialLayer):
        for name in ("__call__", "_transfer", "_with_retries", "__enter__", "__exit__"):
            assert name not in vars(cls), f"{cls.__name__} overrides {name}"
        assert getattr(cls, "__call__") is InstrumentLayer.__call__


def test_chunks_retries_and_counts_once(patient_profile):
    physics = TanhLayer(5, 3)
    x = np.random.default_rng(0).random((5, 5)).astype(np.float32)
    # the second transfer's first attempt drops the link: re-opened and resent, once
    with MemoryWire(patient_profile, physics=physics, failures=[1]) as layer:
        y = layer(x)
    np.testing.assert_array_equal(y, np.concatenate([physics(x[i : i + 2]) for i in (0, 2, 4)]))
    assert [len(s) for s in layer.sent] == [2, 2, 1]
    assert layer.log == ["open", ("send", 2, 0), ("send", 2, 0), "open", ("send", 2, 1),
                         ("send", 1, 0), "safe"]
    assert (layer.stats.batches, layer.stats.samples, layer.stats.retries,
            layer.stats.connects) == (3, 5, 1, 2)


def test_nothing_is_counted_when_a_later_transfer_fails(patient_profile):
    physics = TanhLayer(5, 3)
    x = np.random.default_rng(0).random((4, 5)).astype(np.float32)
    with MemoryWire(patient_profile, physics=physics, failures=[1, 1, 1]) as layer:
        with pytest.raises(InstrumentConnectionError, match="mem: gave up after 3: link dropped"):
            layer(x)
        assert (layer.stats.batches, layer.stats.samples, layer.stats.retries) == (0, 0, 2)
        assert len(layer.sent) == 1  # the first transfer was measured, never received


def test_the_base_refuses_before_the_transport_sees_anything(patient_profile):
    layer = MemoryWire(patient_profile, physics=TanhLayer(5, 3))
    with pytest.raises(InstrumentError, match="mem: not connected; use `with layer:`"):
        layer(np.zeros((1, 5)))
    with layer:
        with pytest.raises(ValueError, match="outside"):
            layer(np.full((1, 5), 1.5))  # outside the layer's [0, 1]
        layer.safety.restrict(hi=0.5, max_amplitude=0.5)
        with pytest.raises(SafetyError, match=r"entries outside \[0, 0.5\]"):
            layer(np.full((1, 5), 0.6))
    assert layer.sent == [] and layer.log == ["open", "safe"]


# ---------------------------------------------------------------------------- real transports
class FailsOnCall:
    """The physics behind an emulator: fails (ValueError) on its ``n``-th call."""

    def __init__(self, n):
        self.inner, self.n, self.calls = TanhLayer(5, 3), n, 0
        self.spec = self.inner.spec

    def __call__(self, x):
        self.calls += 1
        if self.calls == self.n:
            raise ValueError("detector saturated")
        return self.inner(x)


def _max_batch(profile, n):
    return dataclasses.replace(profile, visa=dataclasses.replace(profile.visa, max_batch=n),
                               serial=dataclasses.replace(profile.serial, max_batch=n))


def test_visa_counts_nothing_when_the_second_transfer_fails(patient_profile, drives):
    with ScpiEmulator(layer=FailsOnCall(2), n_in=5, n_out=3, max_seconds=600) as emu:
        with VisaLayer(_max_batch(patient_profile, 6), emu.resource, n_in=5, n_out=3) as layer:
            with pytest.raises(InstrumentError, match="detector saturated"):
                layer(drives)  # 12 drives: two transfers of 6; the second fails
            assert (layer.stats.batches, layer.stats.samples) == (0, 0)
            assert [m.deliveries for m in emu.log.measurements] == [1]  # measured, not received
            layer(drives[:6])
            assert (layer.stats.batches, layer.stats.samples) == (1, 6)


def test_serial_counts_nothing_when_the_second_transfer_fails(patient_profile, drives):
    with SerialEmulator(layer=FailsOnCall(2), n_in=5, n_out=3, max_seconds=600) as emu:
        with SerialLayer(_max_batch(patient_profile, 6), emu.port, n_in=5, n_out=3) as layer:
            with pytest.raises(InstrumentError, match=r"device reported error -4 .*detector "
                                                      r"saturated"):
                layer(drives)
            assert (layer.stats.batches, layer.stats.samples) == (0, 0)
            assert [m.deliveries for m in emu.log.measurements] == [1]
            layer(drives[:6])
            assert (layer.stats.batches, layer.stats.samples) == (1, 6)
