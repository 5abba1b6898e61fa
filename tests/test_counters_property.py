"""Counters that agree (property test): whatever the faults on the wire, a batch is counted in the
driver's stats and in the ledger exactly when its measurement reaches the caller, and what the
caller receives is the measurement of what it sent.

The transport is in memory and scripted: every exchange, re-open and after-batch step takes the
next fault from its own list (a dropped link, a reply lost after the instrument measured, a garbled
reply, an instrument error, a failed re-open, a failed step after the batch), so hypothesis can
shrink a failing sequence to the shortest one. Nothing depends on time.
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pnn.cost import Ledger  # noqa: E402
from pnn.drivers.base import InstrumentLayer, TransientError  # noqa: E402
from pnn.drivers.errors import (  # noqa: E402
    InstrumentConnectionError,
    InstrumentError,
    ReplyFormatError,
    SafetyError,
)
from pnn.drivers.profile import load_profile  # noqa: E402

N_IN, N_OUT = 3, 2
W = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]])

EXCHANGE = ("ok", "drop", "lost_reply", "garbled", "instrument_error")
REOPEN = ("ok", "refuse")
AFTER = ("ok", "fail", "drop")


def physics(x: np.ndarray) -> np.ndarray:
    return np.tanh(np.asarray(x, np.float64) @ W)


class ScriptedWire(InstrumentLayer):
    """An in-memory transport whose faults come from three scripts (consumed in order; ``ok``
    once a script runs out)."""

    _section = "visa"
    _kind = "ScriptedWire"
    _encoding_key = "[visa.drive]"
    _wire_datatype = "f"

    def __init__(self, *, exchange, reopen, after, max_batch, max_retries):
        self._v = self._load_settings(load_profile("emulator"))
        self._init_instrument(n_in=N_IN, n_out=N_OUT, name="scripted", safety=None)
        self.scripts = {"exchange": list(exchange), "reopen": list(reopen),
                        "after": list(after)}
        self.max_batch, self.max_retries = max_batch, max_retries
        self.link = False
        self.opened = 0
        self.measured = 0  # samples the instrument measured (delivered or not)
        self.returned = self.returned_transfers = 0  # what layer(x) handed back to its caller

    def __call__(self, x):
        y = super().__call__(x)
        self.returned += len(y)
        self.returned_transfers += -(-len(y) // self.max_batch)
        return y

    def _next(self, script: str) -> str:
        s = self.scripts[script]
        return s.pop(0) if s else "ok"

    def to_instrument(self, x):
        return np.asarray(x, np.float64)

    def _open_link(self):
        self.opened += 1
        if self.opened > 1 and self._next("reopen") == "refuse":  # the first open always works
            raise InstrumentConnectionError("scripted: re-open refused")
        self.link = True

    def _link_open(self):
        return self.link

    def _discard(self):
        self.link = False

    def _make_safe(self, was_connected):
        return None

    def _batch_limit(self):
        return self.max_batch

    def _max_retries(self):
        return self.max_retries

    def _prepare(self, values, encoded):
        return np.asarray(encoded, np.float64).copy()

    def _exchange(self, request, attempt):
        fault = self._next("exchange")
        if fault == "drop":  # the request never arrived
            self.link = False
            raise TransientError(ConnectionResetError("scripted: link dropped"))
        self.measured += len(request)
        if fault == "lost_reply":  # measured, but the reply never came back
            self.link = False
            raise TransientError(TimeoutError("scripted: reply lost"))
        if fault == "garbled":
            raise ReplyFormatError("scripted: reply of the wrong length")
        if fault == "instrument_error":
            raise InstrumentError("scripted: -222 data out of range")
        return physics(request)

    def _after_exchange(self):
        fault = self._next("after")
        if fault == "fail":  # e.g. the error-queue query after OUTP OFF
            raise InstrumentError("scripted: error queue query failed after the batch")
        if fault == "drop":  # the link went after the data was in hand: re-opened later
            self.link = False

    def _on_bad_reply(self):
        self.link = False

    def _gave_up(self, n_values, tries, last):
        return InstrumentConnectionError(f"scripted: gave up after {tries} tries: {last}")


call = st.tuples(st.integers(1, 9), st.booleans())  # (batch size, one drive over the limit)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(calls=st.lists(call, min_size=1, max_size=8),
       exchange=st.lists(st.sampled_from(EXCHANGE), max_size=25),
       reopen=st.lists(st.sampled_from(REOPEN), max_size=6),
       after=st.lists(st.sampled_from(AFTER), max_size=10),
       max_batch=st.integers(1, 4), max_retries=st.integers(0, 3),
       ledger_batch=st.integers(1, 12))
def test_stats_and_ledger_count_exactly_what_the_caller_received(calls, exchange, reopen, after,
                                                                 max_batch, max_retries,
                                                                 ledger_batch):
    layer = ScriptedWire(exchange=exchange, reopen=reopen, after=after, max_batch=max_batch,
                         max_retries=max_retries)
    layer.safety.restrict(hi=0.8, max_amplitude=0.8)
    ledger = Ledger(max_batch=ledger_batch)
    rng = np.random.default_rng(0)
    delivered = 0
    with layer:
        for n, over in calls:
            x = rng.uniform(0.0, 0.8, (n, N_IN)).astype(np.float32)
            if over:
                x[0, 0] = 0.95  # inside the layer's range, outside the safety limit
            try:
                y = ledger.query(layer, x)
            except SafetyError:
                assert over
                continue
            except (InstrumentError, ValueError) as e:
                assert not isinstance(e, SafetyError)
                continue
            assert not over
            np.testing.assert_allclose(y, physics(x).astype(np.float32), rtol=1e-6)
            delivered += n
    # the driver and the ledger count what the layer handed back, each sample once
    assert layer.stats.samples == ledger.physical_queries == layer.returned
    assert layer.stats.batches == layer.returned_transfers
    # a query the trainer received is all counted; a measurement may be lost, none invented
    assert delivered <= layer.returned <= layer.measured
    if ledger_batch >= max(n for n, _ in calls):  # one layer call a query: nothing in between
        assert layer.returned == delivered


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(1, 9), max_batch=st.integers(1, 4),
       exchange=st.lists(st.sampled_from(("drop", "lost_reply")), max_size=12),
       reopen=st.lists(st.sampled_from(REOPEN), max_size=4))
def test_retries_are_counted_and_a_cured_batch_once(n, max_batch, exchange, reopen):
    """Only curable faults, and retries enough for every one: the batch always arrives, counted
    once, and every extra attempt is a counted retry."""
    retries = len(exchange) + len(reopen)
    layer = ScriptedWire(exchange=exchange, reopen=reopen, after=(), max_batch=max_batch,
                         max_retries=retries)
    x = np.full((n, N_IN), 0.5, np.float32)
    ledger = Ledger()
    with layer:
        y = ledger.query(layer, x)
    np.testing.assert_allclose(y, physics(x).astype(np.float32), rtol=1e-6)
    assert (layer.stats.samples, ledger.physical_queries) == (n, n)
    assert layer.stats.batches == -(-n // max_batch)
    used_exchange = exchange[:len(exchange) - len(layer.scripts["exchange"])]
    used_reopen = reopen[:len(reopen) - len(layer.scripts["reopen"])]
    failed_attempts = len(used_exchange) + used_reopen.count("refuse")  # each one retried
    assert layer.stats.retries == failed_attempts
    assert layer.scripts["exchange"] == []  # every scripted fault was met (and cured)
