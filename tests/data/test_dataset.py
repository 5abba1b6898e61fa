"""The Dataset container: validation fields, construction, and the sealed test split."""

import copy
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

import pnn.data
from pnn.data import Dataset, TestSetSealed
from pnn.data.vowels import load_vowels

SEALED = r"test split .* is sealed until the final measurement.*dataset\.released\(\)"


def small(**kw) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = (np.arange(20) % 2).astype(np.int32)
    return Dataset(x[:10], y[:10], x[10:16], y[10:16], classes=("a", "b"),
                   feature_names=("f0", "f1", "f2"), name="small", info={}, **kw)


def test_keyword_and_positional_construction_and_empty_validation_default():
    d = small()  # no validation given: an empty part of the right shape
    assert d.x_val.shape == (0, 3) and d.y_val.shape == (0,)
    assert d.x_val.dtype == np.float32 and d.y_val.dtype == np.int32
    assert d.describe()["n_val"] == 0 and d.describe()["val_fraction"] == 0.0
    x, y = np.ones((4, 3), np.float32), np.array([0, 1, 0, 1], np.int32)
    e = small(x_val=x, y_val=y)
    assert e.describe()["n_val"] == 4 and e.describe()["val_fraction"] == round(4 / 14, 4)
    kw = Dataset(x_train=x, y_train=y, x_val=x[:2], y_val=y[:2], x_test=x, y_test=y,
                 classes=("a", "b"), feature_names=("f0", "f1", "f2"), name="kw", info={})
    assert kw.x_val.shape == (2, 3)
    pos = Dataset(x, y, x, y, ("a", "b"), ("f0", "f1", "f2"), "pos", {})
    assert pos.x_val.shape == (0, 3) and pos.classes == ("a", "b")


def test_malformed_validation_part_is_refused():
    x, y = np.ones((4, 3), np.float32), np.zeros(4, np.int32)
    with pytest.raises(ValueError, match="give both x_val and y_val .* got only x_val"):
        small(x_val=x)
    with pytest.raises(ValueError, match=r"expected x_val of shape \(n_val, 3\) and y_val of shape "
                                         r"\(n_val,\), got \(4, 2\) and \(4,\)"):
        small(x_val=x[:, :2], y_val=y)
    with pytest.raises(ValueError, match=r"got \(4, 3\) and \(3,\)"):
        small(x_val=x, y_val=y[:3])


def test_test_set_sealed_is_a_runtime_error_exported_from_pnn_data():
    assert issubclass(TestSetSealed, RuntimeError)
    assert "TestSetSealed" in pnn.data.__all__ and "Dataset" in pnn.data.__all__


USES = {
    "np.asarray": lambda a: np.asarray(a),
    "np.array": lambda a: np.array(a, dtype=np.float64),
    "jnp.asarray": lambda a: jnp.asarray(a),
    "index": lambda a: a[0],
    "slice": lambda a: a[:3],
    "len": len,
    "iter": lambda a: list(a),
    "for": lambda a: [v for v in a],
    ".shape": lambda a: a.shape,
    ".dtype": lambda a: a.dtype,
    ".T": lambda a: a.T,
    ".mean()": lambda a: a.mean(),
    "+ 1": lambda a: a + 1,
    "1 -": lambda a: 1 - a,
    "ndarray *": lambda a: np.ones(6) * a,
    "jax *": lambda a: jnp.ones(6) * a,
    "==": lambda a: a == 1,
    "ndarray ==": lambda a: np.arange(6) == a,
    "np.mean": lambda a: np.mean(a),
    "np.concatenate": lambda a: np.concatenate([a, a]),
    "ufunc": lambda a: np.exp(a),
    "bool": lambda a: bool(a),
    "float": lambda a: float(a),
    "in": lambda a: 1 in a,
}


@pytest.mark.parametrize("use", sorted(USES))
@pytest.mark.parametrize("field", ["x_test", "y_test"])
def test_every_use_of_a_sealed_test_split_raises(use, field):
    sealed = load_vowels(seed=0).sealed()
    with pytest.raises(TestSetSealed, match=SEALED):
        USES[use](getattr(sealed, field))


def test_sealed_message_names_the_split_and_how_to_release_it():
    sealed = load_vowels(seed=0).sealed()
    with pytest.raises(TestSetSealed) as e:
        len(sealed.y_test)
    msg = str(e.value)
    assert "y_test (the test labels) of vowels/peterson_barney (460 samples)" in msg
    assert "(len())" in msg and "must use x_val / y_val" in msg
    assert "keep the unsealed Dataset" in msg


def test_sealed_dataset_keeps_everything_else_and_releases_the_same_arrays():
    d = load_vowels(seed=0)
    s = d.sealed()
    assert s.is_sealed and not d.is_sealed
    assert s.describe() == {**d.describe(), "test_sealed": True}
    assert s.n_test == 460 and s.n_classes == 10 and s.n_features == 4
    np.testing.assert_array_equal(s.x_train, d.x_train)
    np.testing.assert_array_equal(s.y_val, d.y_val)
    assert "<sealed test split y_test (the test labels): 460 samples>" in repr(s)
    assert s.sealed() is s and d.released() is d
    r = s.released()
    assert not r.is_sealed
    assert r.x_test is d.x_test and r.y_test is d.y_test
    # copies and pickles stay sealed, and release the same data
    for c in (copy.copy(s), copy.deepcopy(s), pickle.loads(pickle.dumps(s))):
        assert c.is_sealed
        with pytest.raises(TestSetSealed):
            np.asarray(c.y_test)
        np.testing.assert_array_equal(c.released().y_test, d.y_test)


def test_selection_on_a_sealed_dataset_uses_validation_then_measures_test_once():
    # model selection (here: the number of nearest-centroid features) reads only train and
    # validation; the test labels are read once, after release
    d = load_vowels(seed=2)
    s = d.sealed()

    def centroid_acc(k, x, y):
        cent = np.stack([s.x_train[s.y_train == c, :k].mean(0) for c in range(s.n_classes)])
        return float((np.argmin(((x[:, None, :k] - cent) ** 2).sum(-1), 1) == y).mean())

    best = max(range(1, s.n_features + 1), key=lambda k: centroid_acc(k, s.x_val, s.y_val))
    with pytest.raises(TestSetSealed):
        centroid_acc(best, s.x_test, s.y_test)
    final = s.released()
    assert 0.5 < centroid_acc(best, final.x_test, final.y_test) <= 1.0
