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
  as in PAT and PhyLL.

Splits are by *speaker*: every utterance of a speaker lands on the same side, so the test set
holds unseen voices. Features are standardised with the training split's mean and std only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "load_vowels",
    "parse_hillenbrand",
    "peterson_barney_table",
    "PAT_VOWELS",
    "HILLENBRAND_URL",
    "speaker_split",
]

HILLENBRAND_URL = "https://homepages.wmich.edu/~hillenbr/voweldata/vowdata.dat"
#: the 7 vowels of PAT (Wright et al. 2022) and PhyLL (Momeni et al. 2023)
PAT_VOWELS = ("ae", "ah", "aw", "er", "ih", "iy", "uw")
_HILL_FEATURES = (
    "F1_ss", "F2_ss", "F3_ss", "F1_20", "F2_20", "F3_20",
    "F1_50", "F2_50", "F3_50", "F1_80", "F2_80", "F3_80",
)
_HILL_VOWELS = ("ae", "ah", "aw", "eh", "er", "ei", "ih", "iy", "oa", "oo", "uh", "uw")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A standardised classification split. Shapes: x ``(n, n_features)``, y ``(n,)`` int."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple
    feature_names: tuple
    name: str
    info: dict

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "n_train": int(len(self.y_train)),
            "n_test": int(len(self.y_test)),
            "classes": list(self.classes),
            "features": list(self.feature_names),
            **self.info,
        }


def peterson_barney_table():
    """Rows of the Peterson & Barney table from Praat: (type, speaker, vowel, F0..F3)."""
    import parselmouth
    from parselmouth.praat import call

    table = call("Create formant table (Peterson & Barney 1952)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pb.tsv")
        call(table, "Save as tab-separated file", path)
        lines = Path(path).read_text().strip().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    del parselmouth
    return rows


def parse_hillenbrand(text: str) -> list[dict]:
    """Parse the measurement lines of Hillenbrand's ``vowdata.dat``.

    Each data line is ``<filename> <16 - 1 numbers>``: duration (ms), f0, F1-F4 at steady state,
    then F1-F3 at 20%, 50%, 80% of the vowel. The filename codes the talker group (m, w, b, g),
    talker number and vowel. Header and comment lines are skipped.

    Raises:
        ValueError: when no measurement line is found, or a measurement line is malformed (the
            message gives the line number and content).
    """
    rows = []
    pat = re.compile(r"^([mwbg])(\d\d)([a-z]{2})$")
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or not pat.match(parts[0]):
            continue
        m = pat.match(parts[0])
        if m.group(3) not in _HILL_VOWELS:
            raise ValueError(f"vowdata line {lineno}: unknown vowel code {m.group(3)!r} in {line!r}")
        if len(parts) != 16:
            raise ValueError(
                f"vowdata line {lineno}: expected a filename and 15 numbers, got "
                f"{len(parts) - 1} values in {line!r}"
            )
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError as e:
            raise ValueError(f"vowdata line {lineno}: non-numeric value in {line!r}") from e
        rows.append({
            "group": m.group(1),
            "speaker": m.group(1) + m.group(2),
            "vowel": m.group(3),
            "duration": vals[0],
            "f0": vals[1],
            "features": [vals[2], vals[3], vals[4]] + vals[6:15],
        })
    if not rows:
        raise ValueError("no Hillenbrand measurement lines found (expected lines like 'w01ae 305 ...')")
    return rows


def _fetch(url: str, cache_dir: Path, download: bool) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / Path(url).name
    if target.exists():
        return target
    if not download:
        raise FileNotFoundError(
            f"{target} is not cached; pass download=True (CLI: --download) to fetch it from {url}, "
            f"or pass path= to a local copy"
        )
    tmp = target.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=60) as r:
        data = r.read()
    parse_hillenbrand(data.decode("latin-1"))  # refuse to cache something that is not the data
    tmp.write_bytes(data)
    os.replace(tmp, target)
    (cache_dir / (target.name + ".sha256")).write_text(hashlib.sha256(data).hexdigest() + "\n")
    return target


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


def load_vowels(
    source: str = "peterson_barney",
    *,
    classes: tuple | list | None = None,
    groups: tuple | list | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
    url: str = HILLENBRAND_URL,
) -> Dataset:
    """Load a vowel data set, split by speaker and standardised with training statistics.

    Args:
        source: ``"peterson_barney"`` (offline) or ``"hillenbrand"``.
        classes: vowel labels to keep, e.g. :data:`PAT_VOWELS`; ``None`` keeps all.
            Peterson & Barney labels are ARPAbet-like (iy ih eh ae ah aa ao uh uw er); the
            PAT names ``aw`` maps to ``ao`` there.
        groups: talker groups to keep (Peterson & Barney: m, w, c; Hillenbrand: m, w, b, g).
            Default: all for Peterson & Barney, ``("w",)`` for Hillenbrand (as PAT/PhyLL).
        test_fraction: fraction of speakers held out for testing.
        seed: seeds the speaker split.
        path: a local ``vowdata.dat`` (Hillenbrand only); skips the cache and download.
        cache_dir: where downloads are cached (default ``$PNN_CACHE`` or ``~/.cache/pnn``).
        download: allow fetching ``url`` when the file is not cached.

    Raises:
        ValueError: unknown source, class or group names (listing the valid ones), or a split
            that leaves a class without training samples.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if source == "peterson_barney":
        rows = peterson_barney_table()
        all_groups = ("m", "w", "c")
        groups = tuple(groups) if groups is not None else all_groups
        names = ("F0", "F1", "F2", "F3")
        aliases = {"aw": "ao"}
        recs = [
            (r["Type"], r["Type"] + r["Speaker"], r["Vowel"],
             [float(r["F0"]), float(r["F1"]), float(r["F2"]), float(r["F3"])])
            for r in rows
        ]
        info = {"reference": "Peterson & Barney (1952), JASA 24:175, via Praat/parselmouth"}
    elif source == "hillenbrand":
        if path is not None:
            text = Path(path).read_text(encoding="latin-1")
            origin = str(path)
        else:
            cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            fpath = _fetch(url, cdir, download)
            text = fpath.read_text(encoding="latin-1")
            origin = str(fpath)
        rows = parse_hillenbrand(text)
        all_groups = ("m", "w", "b", "g")
        groups = tuple(groups) if groups is not None else ("w",)
        names = _HILL_FEATURES
        aliases = {}
        recs = [(r["group"], r["speaker"], r["vowel"], r["features"]) for r in rows]
        info = {"reference": "Hillenbrand et al. (1995), JASA 97:3099", "file": origin}
    else:
        raise ValueError(
            f"unknown vowel source {source!r}; valid sources: 'peterson_barney', 'hillenbrand'"
        )
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
    recs = [r for r in recs if r[2] in classes]
    feats = np.array([r[3] for r in recs], dtype=np.float64)
    keep = np.all(feats > 0, axis=1)  # 0 marks an unmeasurable formant
    recs = [r for r, k in zip(recs, keep) if k]
    feats = feats[keep]
    labels = np.array([classes.index(r[2]) for r in recs])
    speakers = np.array([r[1] for r in recs])
    test = speaker_split(speakers, test_fraction, seed)
    xtr, xte = feats[~test], feats[test]
    ytr, yte = labels[~test], labels[test]
    for c in range(len(classes)):
        if not np.any(ytr == c):
            raise ValueError(f"class {classes[c]!r} has no training sample after the split")
    mu, sd = xtr.mean(0), xtr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    info.update({
        "source": source, "groups": list(groups), "seed": seed, "test_fraction": test_fraction,
        "n_speakers_train": int(len(set(speakers[~test]))),
        "n_speakers_test": int(len(set(speakers[test]))),
        "split": "by speaker", "standardised_with": "training split mean/std",
    })
    return Dataset(
        x_train=((xtr - mu) / sd).astype(np.float32), y_train=ytr.astype(np.int32),
        x_test=((xte - mu) / sd).astype(np.float32), y_test=yte.astype(np.int32),
        classes=tuple(classes), feature_names=tuple(names), name=f"vowels/{source}", info=info,
    )
