"""Vowel classification from formant measurements: two real data sets behind one loader.

* ``"peterson_barney"`` (offline default): Peterson & Barney (1952), "Control methods used in a
  study of the vowels", J. Acoust. Soc. Am. 24, 175-184. 1,520 utterances (76 speakers: men,
  women, children; 10 vowels, two repetitions each), features F0-F3 (Hz). The table ships inside
  ``praat-parselmouth`` (Praat's "Create formant table (Peterson & Barney 1952)"), so no network
  is needed.
* ``"hillenbrand"``: Hillenbrand, Getty, Clark & Wheeler (1995), J. Acoust. Soc. Am. 97,
  3099-3111, the data PAT and PhyLL used. ``vowdata.dat`` is downloaded from the authors'
  published page on request (``download=True``), cached under ``cache_dir``, and parsed. Features:
  F1-F3 at steady state and at 20%, 50% and 80% of the vowel's duration (12 values, Hz); tokens
  with an unmeasurable formant (recorded as 0) are dropped. By default the adult female talkers,
  as in PAT and PhyLL. The cached file is checked against the SHA-256 recorded beside it
  (``vowdata.dat.sha256``) on every load; no published checksum of ``vowdata.dat`` is pinned
  (none could be established), so a file cached without a record has its SHA-256 recorded on
  first use and verified from then on.

Splits are by *speaker*: every utterance of a speaker lands in one part, so validation and test
hold unseen voices. The test speakers are a seeded ``test_fraction`` of all speakers
(:func:`speaker_split`); the validation speakers a seeded ``val_fraction`` of the remaining
(training) speakers, stratified by talker group (:func:`speaker_val_split`). Features are
standardised with the mean and std of the train part only (validation and test excluded).

Every :class:`Dataset` can be *sealed* (:meth:`Dataset.sealed`): its test arrays then raise
:class:`TestSetSealed` on any use until :meth:`Dataset.released` is called for the final
measurement, which proves that model selection never read the test split.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
import numbers
import os
import re
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from pnn.fileio import atomic_write_bytes, atomic_write_text
from pnn.numtext import parse_float

__all__ = [
    "Dataset",
    "TestSetSealed",
    "load_vowels",
    "parse_hillenbrand",
    "parse_hillenbrand_csv",
    "peterson_barney_table",
    "PAT_VOWELS",
    "HILLENBRAND_URL",
    "speaker_split",
    "speaker_val_split",
    "check_val_fraction",
]

HILLENBRAND_URL = "https://homepages.wmich.edu/~hillenbr/voweldata/vowdata.dat"
#: the 7 vowels of PAT (Wright et al. 2022) and PhyLL (Momeni et al. 2023)
PAT_VOWELS = ("ae", "ah", "aw", "er", "ih", "iy", "uw")
_HILL_FEATURES = (
    "F1_ss", "F2_ss", "F3_ss", "F1_20", "F2_20", "F3_20",
    "F1_50", "F2_50", "F3_50", "F1_80", "F2_80", "F3_80",
)
_HILL_VOWELS = ("ae", "ah", "aw", "eh", "er", "ei", "ih", "iy", "oa", "oo", "uh", "uw")


# ------------------------------------------------------------------------------ sealed test


class TestSetSealed(RuntimeError):
    """Raised on any use of a sealed test split (see :meth:`Dataset.sealed`)."""

    __test__ = False  # not a pytest test class despite the name


def _sealed_refusal(split, op: str) -> TestSetSealed:
    n, what, name = split._sealed_n, split._sealed_what, split._sealed_name
    return TestSetSealed(
        f"{what} of {name} ({n} samples) is sealed until the final measurement, and was used "
        f"({op}): model selection and tuning must use x_val / y_val. For the one final test "
        f"measurement call dataset.released() (or keep the unsealed Dataset you called "
        f".sealed() on) and read x_test / y_test from that."
    )


def _refuse(op):
    def method(self, *args, **kwargs):
        raise _sealed_refusal(self, op)

    method.__name__ = op
    return method


class _SealedSplit:
    """Stands in for ``x_test`` or ``y_test`` of a sealed :class:`Dataset`: every use raises
    :class:`TestSetSealed` (conversion to an array, NumPy functions and ufuncs, JAX conversion,
    indexing, ``len``, iteration, attributes such as ``.shape``, arithmetic, comparison, truth
    value). ``repr`` works and shows only the sample count. Copies and pickles stay sealed."""

    __slots__ = ("_sealed_value", "_sealed_n", "_sealed_what", "_sealed_name")

    def __init__(self, value, n: int, what: str, name: str):
        self._sealed_value = value
        self._sealed_n = int(n)
        self._sealed_what = what
        self._sealed_name = name

    def __getattr__(self, attr):
        # only reached for names that are not slots: every array attribute (.shape, .dtype, .T,
        # .mean, .aval...) is refused; unknown dunders stay AttributeErrors so that protocol
        # probes (copy, pickle, __array_interface__) fall through to the refusing methods
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        raise _sealed_refusal(self, f".{attr}")

    def __repr__(self):
        return f"<sealed {self._sealed_what}: {self._sealed_n} samples>"

    def __reduce__(self):
        return (_SealedSplit, (self._sealed_value, self._sealed_n, self._sealed_what, self._sealed_name))

    __hash__ = None  # unhashable, like an array

    __array__ = _refuse("conversion to an array")
    __array_ufunc__ = _refuse("a NumPy ufunc")
    __array_function__ = _refuse("a NumPy function")
    __len__ = _refuse("len()")
    __iter__ = _refuse("iteration")
    __reversed__ = _refuse("iteration")
    __contains__ = _refuse("'in'")
    __getitem__ = _refuse("indexing")
    __setitem__ = _refuse("item assignment")
    __bool__ = _refuse("truth value")
    __int__ = __float__ = __complex__ = __index__ = _refuse("conversion to a number")
    __neg__ = __pos__ = __abs__ = __invert__ = _refuse("arithmetic")
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse("comparison")


for _op in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "divmod", "pow",
            "lshift", "rshift", "and", "xor", "or"):
    for _fmt in ("__{}__", "__r{}__", "__i{}__"):
        setattr(_SealedSplit, _fmt.format(_op), _refuse("arithmetic"))
del _op, _fmt


def _n_rows(a) -> int:
    return a._sealed_n if isinstance(a, _SealedSplit) else int(len(a))


# ---------------------------------------------------------------------------------- Dataset


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A standardised classification split into train, validation and test parts.

    Shapes: x ``(n, n_features)``, y ``(n,)`` int, for each part. The validation part is for
    every selection (early stopping, hyper-parameters, seeds); the test part is measured once
    at the end (seal it with :meth:`sealed` to enforce that).

    ``x_val`` and ``y_val`` are keyword-only (so positional construction with the four
    train/test arrays first keeps working); left out, they are empty ``(0, n_features)`` and
    ``(0,)`` arrays (no validation part).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray = dataclasses.field(default=None, kw_only=True)
    y_val: np.ndarray = dataclasses.field(default=None, kw_only=True)
    classes: tuple
    feature_names: tuple
    name: str
    info: dict

    def __post_init__(self):
        if (self.x_val is None) != (self.y_val is None):
            raise ValueError(
                "Dataset: give both x_val and y_val (the validation part) or neither, got only "
                + ("y_val" if self.x_val is None else "x_val")
            )
        if self.x_val is None:
            x = self.x_train
            n_feat = np.shape(x)[1] if np.ndim(x) == 2 else 0
            object.__setattr__(self, "x_val", np.zeros((0, n_feat), dtype=getattr(x, "dtype", np.float32)))
            object.__setattr__(self, "y_val", np.zeros(0, dtype=getattr(self.y_train, "dtype", np.int32)))
        xs, ys, xt = np.shape(self.x_val), np.shape(self.y_val), np.shape(self.x_train)
        if len(xs) != 2 or len(ys) != 1 or xs[0] != ys[0] or (len(xt) == 2 and xs[1] != xt[1]):
            raise ValueError(
                f"Dataset: expected x_val of shape (n_val, {xt[1] if len(xt) == 2 else 'n_features'}) "
                f"and y_val of shape (n_val,), got {xs} and {ys}"
            )

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_test(self) -> int:
        """Number of test samples; available on a sealed dataset too."""
        return _n_rows(self.y_test)

    @property
    def is_sealed(self) -> bool:
        return isinstance(self.y_test, _SealedSplit) or isinstance(self.x_test, _SealedSplit)

    def sealed(self) -> "Dataset":
        """A copy whose ``x_test`` and ``y_test`` raise :class:`TestSetSealed` on any use.

        Everything else (train and validation arrays, ``classes``, ``n_features``,
        ``describe()``, ``n_test``) works as before. Sealing a sealed dataset returns it.
        """
        if self.is_sealed:
            return self
        n = _n_rows(self.y_test)
        return dataclasses.replace(
            self,
            x_test=_SealedSplit(self.x_test, n, "test split x_test", self.name),
            y_test=_SealedSplit(self.y_test, n, "test split y_test (the test labels)", self.name),
        )

    def released(self) -> "Dataset":
        """The unsealed dataset (the real ``x_test`` / ``y_test``), for the final measurement."""
        if not self.is_sealed:
            return self
        unwrap = lambda a: a._sealed_value if isinstance(a, _SealedSplit) else a  # noqa: E731
        return dataclasses.replace(self, x_test=unwrap(self.x_test), y_test=unwrap(self.y_test))

    def describe(self) -> dict:
        n_train, n_val = int(len(self.y_train)), int(len(self.y_val))
        return {
            "name": self.name,
            "n_train": n_train,
            "n_val": n_val,
            "n_test": self.n_test,
            # the requested fraction (loaders record it in info); else the realised one
            "val_fraction": self.info.get(
                "val_fraction", round(n_val / (n_train + n_val), 4) if n_train + n_val else 0.0),
            "test_sealed": self.is_sealed,
            "classes": list(self.classes),
            "features": list(self.feature_names),
            **self.info,
        }


def check_val_fraction(val_fraction) -> float:
    """``val_fraction`` as a float, or a ValueError saying what is valid."""
    ok = isinstance(val_fraction, numbers.Real) and not isinstance(val_fraction, bool)
    if not ok or not 0 <= float(val_fraction) < 1:
        raise ValueError(
            f"val_fraction must be a number in [0, 1) (the fraction of the training part held "
            f"out for validation; 0 for none), got {val_fraction!r}"
        )
    return float(val_fraction)


def peterson_barney_table():
    """Rows of the Peterson & Barney table from Praat: (type, speaker, vowel, F0..F3)."""
    # lazy: Praat (parselmouth) is loaded only when this table is read
    from parselmouth.praat import call

    table = call("Create formant table (Peterson & Barney 1952)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pb.tsv")
        call(table, "Save as tab-separated file", path)
        lines = Path(path).read_text().strip().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    return rows


def parse_hillenbrand(text: str, origin: str = "vowdata") -> list[dict]:
    """Parse the measurement lines of Hillenbrand's ``vowdata.dat``.

    Each data line is ``<filename> <16 - 1 numbers>``: duration (ms), f0, F1-F4 at steady state,
    then F1-F3 at 20%, 50%, 80% of the vowel. The filename codes the talker group (m, w, b, g),
    talker number and vowel. Header and comment lines are skipped. ``origin`` (the file name)
    starts every error message.

    Raises:
        ValueError: when no measurement line is found, a measurement line does not hold exactly
            15 numbers, holds a non-numeric or non-finite (inf, nan) value, or is the last line
            of a text that does not end with a line break (a truncated file: its last number may
            be cut short, e.g. 1544 read as 15). The message names ``origin``, the line number
            and its content.
    """
    rows = []
    pat = re.compile(r"^([mwbg])(\d\d)([a-z]{2})$")
    lines = text.splitlines()
    complete = text.endswith(("\n", "\r"))
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or not pat.match(parts[0]):
            continue
        m = pat.match(parts[0])
        where = f"{origin} line {lineno}"
        if m.group(3) not in _HILL_VOWELS:
            raise ValueError(f"{where}: unknown vowel code {m.group(3)!r} in {line!r}")
        if len(parts) != 16:
            raise ValueError(
                f"{where}: expected a filename and 15 numbers, got {len(parts) - 1} values in "
                f"{line!r} (a truncated or damaged file; download it again)"
            )
        if lineno == len(lines) and not complete:
            raise ValueError(
                f"{where}: the file ends inside this measurement line (expected a line break "
                f"after it), so its last number may be cut short: {line!r}. The file is "
                f"truncated; download it again"
            )
        try:
            vals = [parse_float(v) for v in parts[1:]]
        except ValueError as e:
            raise ValueError(f"{where}: non-numeric or cut-short value in {line!r} ({e}); "
                             f"expected 15 complete numbers") from e
        bad = [v for v, x in zip(parts[1:], vals) if not math.isfinite(x)]
        if bad:
            raise ValueError(
                f"{where}: non-finite value(s) {bad} in {line!r}; expected finite numbers (0 marks "
                f"an unmeasurable formant)"
            )
        rows.append({
            "group": m.group(1),
            "speaker": m.group(1) + m.group(2),
            "vowel": m.group(3),
            "duration": vals[0],
            "f0": vals[1],
            "features": [vals[2], vals[3], vals[4]] + vals[6:15],
        })
    if not rows:
        raise ValueError(
            f"{origin}: no Hillenbrand measurement lines found (expected lines like "
            f"'w01ae 305 ...')"
        )
    return rows


_CSV_HEADER = ("speaker", "vowel")


def parse_hillenbrand_csv(text: str, origin: str = "hillenbrand.csv") -> list[dict]:
    """Parse the CSV form of the Hillenbrand measurements (as distributed with the PhyLL
    paper's code): a header ``speaker,vowel,<12 formant columns>`` (F1-F3 at steady state, then
    at 20 %, 50 % and 80 % of the vowel, in that order), one token a row, speakers coded like
    ``w01``. Same checks as :func:`parse_hillenbrand` (column count, numbers, finiteness, a
    complete last line); rows carry no duration or f0.

    Raises:
        ValueError: naming ``origin``, the line and what was expected.
    """
    lines = text.splitlines()
    if not text.endswith(("\n", "\r")):
        raise ValueError(f"{origin} line {len(lines)}: the file ends inside this row (expected a "
                         f"line break after it), so its last number may be cut short; the file "
                         f"is truncated")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or tuple(h.strip() for h in header[:2]) != _CSV_HEADER or len(header) != 14:
        raise ValueError(f"{origin} line 1: expected the header speaker,vowel and 12 formant "
                         f"columns, got {header!r}")
    pat = re.compile(r"^([mwbg])(\d\d)$")
    rows = []
    for lineno, parts in enumerate(reader, 2):
        if not parts:
            continue
        where = f"{origin} line {lineno}"
        if len(parts) != 14:
            raise ValueError(f"{where}: expected 14 columns, got {len(parts)} in {parts!r}")
        m = pat.match(parts[0].strip())
        if not m:
            raise ValueError(f"{where}: speaker {parts[0]!r} is not like 'w01'")
        vowel = parts[1].strip()
        if vowel not in _HILL_VOWELS:
            raise ValueError(f"{where}: unknown vowel code {vowel!r}")
        try:
            vals = [parse_float(v) for v in parts[2:]]
        except ValueError as e:
            raise ValueError(f"{where}: non-numeric or cut-short value in {parts!r} ({e}); "
                             f"expected 12 complete numbers") from e
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{where}: non-finite value in {parts!r}; expected finite numbers")
        rows.append({"group": m.group(1), "speaker": parts[0].strip(), "vowel": vowel,
                     "duration": float("nan"), "f0": float("nan"), "features": vals})
    if not rows:
        raise ValueError(f"{origin}: no rows after the header")
    return rows


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(url: str, cache_dir: Path, download: bool) -> tuple[Path, bytes]:
    """The cached file for ``url`` and its bytes, downloading it first if allowed.

    A download is parsed before it is cached (nothing that is not the data is cached) and its
    SHA-256 is written beside it (``<file>.sha256``). A cached file is checked against that
    record on every load; a cached file without one has its SHA-256 recorded on first use.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / Path(url).name
    sidecar = cache_dir / (target.name + ".sha256")
    if target.exists():
        data = target.read_bytes()
        fix = (f"delete {target} and {sidecar.name} and load again with download=True "
               f"(CLI: --download) to fetch a fresh copy from {url}")
        if sidecar.exists():
            recorded = sidecar.read_text().strip()
            if not re.fullmatch(r"[0-9a-f]{64}", recorded):
                raise ValueError(
                    f"checksum record {sidecar} is damaged: expected 64 hex digits (the SHA-256 "
                    f"of {target.name}), got {recorded[:80]!r}; {fix}"
                )
            if _sha256(data) != recorded:
                raise ValueError(
                    f"cached file {target} is corrupt or was edited: its SHA-256 {_sha256(data)} "
                    f"differs from the {recorded} recorded at download in {sidecar}; {fix}"
                )
        else:
            # trust on first use, verify from now on
            atomic_write_text(sidecar, _sha256(data) + "\n")
        return target, data
    if not download:
        raise FileNotFoundError(
            f"{target} is not cached; pass download=True (CLI: --download) to fetch it from {url}, "
            f"or pass path= to a local copy"
        )
    with urllib.request.urlopen(url, timeout=60) as r:
        data = r.read()
    parse_hillenbrand(data.decode("latin-1"), origin=f"download of {url}")  # refuse non-data
    # the record before the file, so the file is never cached unrecorded (both atomic: a
    # temporary file of a random name, never a predictable one that could be planted)
    atomic_write_text(sidecar, _sha256(data) + "\n")
    atomic_write_bytes(target, data)
    return target, data


def default_cache_dir() -> Path:
    return Path(os.environ.get("PNN_CACHE", Path.home() / ".cache" / "pnn"))


def speaker_split(speakers: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask: a seeded random ``test_fraction`` of the distinct speakers."""
    uniq = np.array(sorted(set(speakers.tolist())))
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(test_fraction * len(uniq))))
    if n_test >= len(uniq):
        raise ValueError(
            f"test_fraction={test_fraction} leaves no training speaker out of {len(uniq)}"
        )
    test_speakers = set(rng.permutation(uniq)[:n_test].tolist())
    return np.array([s in test_speakers for s in speakers])


def speaker_val_split(
    speakers: np.ndarray, groups: np.ndarray, test: np.ndarray, val_fraction: float, seed: int
) -> np.ndarray:
    """Boolean validation mask: a seeded ``val_fraction`` of the *training* speakers.

    Only speakers outside ``test`` are drawn, whole speakers at a time, stratified by talker
    group (``groups[i]`` is the group of utterance i, e.g. m / w / c): the
    ``round(val_fraction * n_train_speakers)`` validation speakers (at least one when
    ``val_fraction > 0``) are shared out over the groups in proportion to their training
    speakers, by largest remainder (ties to the group first in sorted order), and drawn at
    random within each group. The draw uses its own random stream (``[seed, 1]``), so the test
    split (:func:`speaker_split`, stream ``seed``) is the same whatever ``val_fraction``.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1), or one that leaves no training speaker.
    """
    val_fraction = check_val_fraction(val_fraction)
    speakers, groups, test = np.asarray(speakers), np.asarray(groups), np.asarray(test, dtype=bool)
    group_of = dict(zip(speakers[~test].tolist(), groups[~test].tolist()))
    train_spk = sorted(group_of)
    n_val = int(round(val_fraction * len(train_spk)))
    if val_fraction > 0:
        n_val = max(1, n_val)
    if n_val and n_val >= len(train_spk):
        raise ValueError(
            f"val_fraction={val_fraction} would put all {len(train_spk)} training speakers in "
            f"validation and leave none to train on; use a smaller val_fraction (or 0)"
        )
    names = sorted(set(group_of.values()))
    counts = np.array([sum(g == name for g in group_of.values()) for name in names])
    quota = n_val * counts / max(1, len(train_spk))
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n_val - take.sum()]] += 1
    rng = np.random.default_rng([seed, 1])
    val_spk: set = set()
    for name, k in zip(names, take):
        members = np.array([s for s in train_spk if group_of[s] == name])
        val_spk.update(rng.permutation(members)[:k].tolist())
    return np.array([s in val_spk for s in speakers.tolist()], dtype=bool)


def load_vowels(
    source: str = "peterson_barney",
    *,
    classes: tuple | list | None = None,
    groups: tuple | list | None = None,
    test_fraction: float = 0.3,
    val_fraction: float = 0.2,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
    url: str = HILLENBRAND_URL,
) -> Dataset:
    """Load a vowel data set, split by speaker into train / validation / test, standardised
    with the train part's statistics.

    Args:
        source: ``"peterson_barney"`` (offline) or ``"hillenbrand"``.
        classes: vowel labels to keep, e.g. :data:`PAT_VOWELS`; ``None`` keeps all.
            Peterson & Barney labels are ARPAbet-like (iy ih eh ae ah aa ao uh uw er); the
            PAT names ``aw`` maps to ``ao`` there.
        groups: talker groups to keep (Peterson & Barney: m, w, c; Hillenbrand: m, w, b, g).
            Default: all for Peterson & Barney, ``("w",)`` for Hillenbrand (as PAT/PhyLL).
        test_fraction: fraction of all speakers held out for testing (:func:`speaker_split`;
            the same speakers as before validation existed, for the same seed).
        val_fraction: fraction of the remaining (training) speakers held out for validation,
            stratified by talker group (:func:`speaker_val_split`); 0 gives an empty
            validation part. In [0, 1).
        seed: seeds the speaker splits.
        path: a local ``vowdata.dat``, or the CSV form of the same measurements (header
            ``speaker,vowel,...``, see :func:`parse_hillenbrand_csv`) (Hillenbrand only); skips
            the cache and download.
        cache_dir: where downloads are cached (default ``$PNN_CACHE`` or ``~/.cache/pnn``).
        download: allow fetching ``url`` when the file is not cached.

    Raises:
        ValueError: unknown source, class or group names (listing the valid ones), a
            ``test_fraction`` / ``val_fraction`` out of range, a split that leaves a class
            without training samples, or a damaged data file (a cached file that fails its
            recorded SHA-256, a truncated file, a malformed or non-finite value).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    val_fraction = check_val_fraction(val_fraction)
    if source == "peterson_barney":
        recs, groups, all_groups, names, aliases, info = _peterson_barney_records(groups)
    elif source == "hillenbrand":
        recs, groups, all_groups, names, aliases, info = _hillenbrand_records(
            groups, path, cache_dir, download, url)
    else:
        raise ValueError(
            f"unknown vowel source {source!r}; valid sources: 'peterson_barney', 'hillenbrand'"
        )
    recs, classes = _select(recs, source, groups, all_groups, classes, aliases)
    feats, labels, speakers, talker_groups = _measured(recs, classes)
    test = speaker_split(speakers, test_fraction, seed)
    val = speaker_val_split(speakers, talker_groups, test, val_fraction, seed)
    train = ~test & ~val
    _check_every_class(labels[train], classes, test_fraction, val_fraction, seed)
    xtr = feats[train]
    mu, sd = xtr.mean(0), xtr.std(0)
    sd = np.where(sd > 0, sd, 1.0)

    def part(mask):
        return ((feats[mask] - mu) / sd).astype(np.float32), labels[mask].astype(np.int32)

    info.update({
        "source": source, "groups": list(groups), "seed": seed, "test_fraction": test_fraction,
        "val_fraction": val_fraction, **_split_info(speakers, train, val, test),
        "standardised_with": "train part mean/std (validation and test excluded)",
        # x_standardised = (x_raw - mean) / std, per feature (in feature_names order)
        "standardisation_mean": [float(v) for v in mu],
        "standardisation_std": [float(v) for v in sd],
    })
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = part(train), part(val), part(test)
    return Dataset(
        x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, x_val=x_va, y_val=y_va,
        classes=tuple(classes), feature_names=tuple(names), name=f"vowels/{source}", info=info,
    )


def _peterson_barney_records(groups):
    """``(records, groups, all groups, feature names, class aliases, info)`` of the Peterson &
    Barney table; a record is ``(group, speaker, vowel, features)``; ``groups`` defaults to
    all."""
    rows = peterson_barney_table()
    all_groups = ("m", "w", "c")
    groups = tuple(groups) if groups is not None else all_groups
    recs = [
        (r["Type"], r["Type"] + r["Speaker"], r["Vowel"],
         [float(r["F0"]), float(r["F1"]), float(r["F2"]), float(r["F3"])])
        for r in rows
    ]
    info = {"reference": "Peterson & Barney (1952), JASA 24:175, via Praat/parselmouth"}
    return recs, groups, all_groups, ("F0", "F1", "F2", "F3"), {"aw": "ao"}, info


def _hillenbrand_records(groups, path, cache_dir, download, url):
    """As :func:`_peterson_barney_records`, for Hillenbrand's measurements: read from ``path``
    (``vowdata.dat`` or its CSV form), or from the cache (downloaded first when allowed);
    ``groups`` defaults to the adult female talkers."""
    if path is not None:
        fpath = Path(path)
        data = fpath.read_bytes()
    else:
        cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        fpath, data = _fetch(url, cdir, download)
    origin = str(fpath)
    text = data.decode("latin-1")
    if text.lstrip().lower().startswith("speaker,vowel"):  # the CSV form
        rows = parse_hillenbrand_csv(text, origin=origin)
    else:
        rows = parse_hillenbrand(text, origin=origin)
    groups = tuple(groups) if groups is not None else ("w",)
    recs = [(r["group"], r["speaker"], r["vowel"], r["features"]) for r in rows]
    info = {"reference": "Hillenbrand et al. (1995), JASA 97:3099", "file": origin,
            "sha256": _sha256(data)}
    return recs, groups, ("m", "w", "b", "g"), _HILL_FEATURES, {}, info


def _select(recs, source, groups, all_groups, classes, aliases):
    """``(records, classes)``: the records of the talker ``groups`` and vowel ``classes``
    (``None``: every vowel present, sorted; PAT names mapped by ``aliases``); unknown names
    are refused, listing the valid ones."""
    bad_groups = [g for g in groups if g not in all_groups]
    if bad_groups:
        raise ValueError(f"unknown talker group(s) {bad_groups} for {source}; valid: {list(all_groups)}")
    recs = [r for r in recs if r[0] in groups]
    present = sorted({r[2] for r in recs})
    if classes is None:
        classes = tuple(present)
    else:
        classes = tuple(aliases.get(c, c) for c in classes)
        missing = [c for c in classes if c not in present]
        if missing:
            raise ValueError(f"unknown vowel class(es) {missing} for {source}; valid: {present}")
    return [r for r in recs if r[2] in classes], classes


def _measured(recs, classes):
    """``(features, labels, speakers, talker groups)`` of the records whose formants were all
    measured (0 marks an unmeasurable formant), one row a token."""
    feats = np.array([r[3] for r in recs], dtype=np.float64)
    keep = np.all(feats > 0, axis=1)
    recs = [r for r, k in zip(recs, keep) if k]
    labels = np.array([classes.index(r[2]) for r in recs])
    speakers = np.array([r[1] for r in recs])
    return feats[keep], labels, speakers, np.array([r[0] for r in recs])


def _check_every_class(train_labels, classes, test_fraction, val_fraction, seed) -> None:
    """Refuse a speaker split that leaves a class without a training sample."""
    for c in range(len(classes)):
        if not np.any(train_labels == c):
            raise ValueError(
                f"class {classes[c]!r} has no training sample after the split (test_fraction="
                f"{test_fraction}, val_fraction={val_fraction}, seed={seed}); use a smaller "
                f"val_fraction or test_fraction, or another seed"
            )


def _split_info(speakers, train, val, test) -> dict:
    """What :func:`load_vowels` records of its speaker split."""
    return {
        "n_speakers_train": int(len(set(speakers[train]))),
        "n_speakers_val": int(len(set(speakers[val]))),
        "n_speakers_test": int(len(set(speakers[test]))),
        "test_speakers": sorted(set(speakers[test].tolist())),
        "val_speakers": sorted(set(speakers[val].tolist())),
        "split": "by speaker: test drawn from all speakers, validation from the other speakers "
                 "(stratified by talker group)",
    }
