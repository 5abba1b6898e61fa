import numpy as np
import pytest

from pnn.cost import Ledger
from pnn.layer import LayerSpec, PhysicalLayer, validate_input


def test_spec_rejects_bad_sizes_and_ranges():
    with pytest.raises(ValueError, match="LayerSpec 'x': n_in must be a positive integer, got 0"):
        LayerSpec(n_in=0, n_out=2, name="x")
    with pytest.raises(ValueError, match="LayerSpec 'x': input range must be finite with lo < hi"):
        LayerSpec(n_in=1, n_out=2, lo=1.0, hi=1.0, name="x")


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((2, 3, 1)), r"dev: expected a batch of drives of shape \(batch, 3\), got an array of rank 3"),
        (np.zeros((2, 5)), r"dev: expected 3 drive channels \(shape \(batch, 3\)\), got shape \(2, 5\)"),
        (np.zeros((0, 3)), r"dev: expected at least one drive vector, got an empty batch"),
        (np.array([[0.0, np.inf, 0.0]]), r"dev: drives must be finite, got inf at \(sample 0, channel 1\)"),
        (np.array([[0.0, -0.5, 0.2]]), r"dev: drives must lie in the safe range \[-0.25, 0.25\] V, got values in \[-0.5, 0.2\] \(1 entries outside\)"),
        (np.array([["a", "b", "c"]]), r"dev: expected real-valued drives, got dtype <U1"),
    ],
)
def test_validate_input_messages(x, match):
    spec = LayerSpec(n_in=3, n_out=1, lo=-0.25, hi=0.25, name="dev", units="V")
    with pytest.raises(ValueError, match=match):
        validate_input(spec, x)


def test_validate_input_accepts_in_range():
    spec = LayerSpec(n_in=2, n_out=1)
    x = np.array([[0.0, 1.0], [0.5, 0.25]])
    assert validate_input(spec, x) is x


class _Doubler:
    """A minimal host-side layer (no JAX) that records what it was sent."""

    pad_batches = False

    def __init__(self, n):
        self.spec = LayerSpec(n_in=n, n_out=n, name="doubler")
        self.calls = []

    def __call__(self, x):
        validate_input(self.spec, x)
        self.calls.append(np.array(x))
        return 2 * np.asarray(x)


def test_ledger_counts_splits_and_refuses_before_sending():
    layer = _Doubler(3)
    assert isinstance(layer, PhysicalLayer)
    ledger = Ledger(max_batch=4)
    y = ledger.query(layer, np.full((10, 3), 0.5))
    np.testing.assert_allclose(y, 1.0)
    assert [len(c) for c in layer.calls] == [4, 4, 2]
    assert ledger.physical_queries == 10
    with pytest.raises(ValueError, match="doubler: drives must lie in the safe range"):
        ledger.query(layer, np.full((2, 3), 7.0))
    assert len(layer.calls) == 3 and ledger.physical_queries == 10
    rec = ledger.to_dict()
    assert rec["queries_by_layer"] == {"doubler": 10}
    assert rec["wall_s"] >= rec["physical_s"] >= 0


def test_ledger_rejects_wrong_measurement_shape():
    class Bad(_Doubler):
        def __call__(self, x):
            return np.zeros((len(x), 1))

    with pytest.raises(ValueError, match=r"doubler: returned a measurement of shape \(2, 1\), expected \(2, 3\)"):
        Ledger().query(Bad(3), np.zeros((2, 3)))
