"""Vowels as sampled sound: a source-filter synthesiser and a loader of waveform data sets.

Two sources behind :func:`load_audio_vowels`, split by speaker exactly as
:func:`pnn.data.vowels.load_vowels` splits the formant task:

* ``"peterson_barney"`` (offline default): every token of the Peterson & Barney (1952) table
  synthesised from its measured F0 and F1-F3 by the source-filter model below.
* ``"wav"``: a folder of recordings (``path=``), 16-bit PCM mono WAV files read with the
  standard library's :mod:`wave`, resampled to ``sample_rate`` (layout in
  :func:`wav_records`).

Source-filter model
-------------------
Glottal source: Rosenberg's trigonometric glottal-flow pulse (Rosenberg 1971, "Effect of glottal
pulse shape on the quality of natural vowels", J. Acoust. Soc. Am. 49, 583-590, his shape B),
repeated at the speaker's fundamental F0 = 1 / T0. With the phase ``p = tau / T0`` of time
``tau`` inside a period, the flow is::

    g(p) = 1/2 (1 - cos(pi p / P))             0 <= p <= P          (opening)
    g(p) = cos(pi (p - P) / (2 N))             P <  p <= P + N      (closing)
    g(p) = 0                                   P + N < p < 1        (closed phase)

with the opening fraction ``P = 0.40`` and closing fraction ``N = 0.16`` of the period
(:data:`RISE_FRACTION`, :data:`FALL_FRACTION`: the shape Rosenberg's listeners preferred). The
pulse is evaluated at each sample's exact phase, ``p[n] = (n / fs) F0 mod 1``, so F0 is not
rounded to a whole number of samples and the harmonics lie at exactly k F0.

Optional jitter (only with a seeded generator, so every token is reproducible): the periods are
``T_k = T0 exp(j e_k)`` with ``e_k`` independent standard normal draws, ``j`` the relative
period jitter (natural voices: about 0.005-0.01); ``j = 0`` (default) draws nothing.

Vocal tract: a cascade of three second-order digital resonators at the token's F1, F2, F3
(Klatt 1980, "Software for a cascade/parallel formant synthesizer", J. Acoust. Soc. Am. 67,
971-995, eq. for the resonator)::

    y[n] = A x[n] + B y[n-1] + C y[n-2]
    C = -exp(-2 pi BW T),   B = 2 exp(-pi BW T) cos(2 pi F T),   A = 1 - B - C

with ``T = 1 / fs``. The poles are ``r exp(+-i 2 pi F T)``, ``r = exp(-pi BW T)``, so the impulse
response rings at F with an envelope decaying as ``exp(-pi BW t)`` (-3 dB bandwidth BW), and
``A`` makes the gain 1 at 0 Hz: the cascade then gives the formants their natural relative
amplitudes without per-formant gains (Klatt's reason for the cascade). Bandwidths (fixed, Hz):
``BW1, BW2, BW3 = 60, 90, 150`` (:data:`BANDWIDTHS`): those of the neutral-vowel example
frame of Klatt's synthesiser (KLSYN88: F1 500 / B1 60, F2 1500 / B2 90, F3 2500 / B3 150 Hz),
of the order measured on natural vowels (tens of Hz for F1, rising with formant number). The
Peterson & Barney table has no bandwidths, so they are held fixed: the class information is then
carried by the formant frequencies alone, as in the formant task. (The -3 dB width equals BW
to within a few per cent while BW is small against the sample rate; the tests check 5 %.)

Radiation at the lips: the first difference ``s[n] = v[n] - v[n-1]`` of the tract output
(Klatt 1980: +6 dB/octave), which also removes the flow's mean. Onset and offset: raised-cosine
ramps of ``ramp`` seconds (default 5 ms) multiply the two ends, so the token starts and stops
without a click (a step would spread energy over every frequency).

Defaults: ``sample_rate = 10000`` Hz and ``duration = 0.05`` s (500 samples). 10 kHz is the
lowest round rate whose Nyquist frequency (5 kHz) lies above F1-F3 of every Peterson & Barney
token (the highest F3 in the table is 4,380 Hz, a child's: 8 kHz would cut it off) and the rate
of Klatt's synthesiser; 50 ms holds 4 or more glottal periods even of the lowest voices
(F0 >= 91 Hz in the table) and resolves their harmonics (a 50 ms window resolves lines 20 Hz
apart), while keeping the drive of a time-domain wave simulator short (its cost grows with the
number of samples). Other rates must stay above twice the highest formant of the tokens
(checked).

Scaling: every token is divided by its own peak, ``x / max|x|`` (:func:`peak_normalise`), so
``max|x| = 1`` for every token of every split. A per-token bound is what a physical drive needs
(a source amplitude inside the simulator's safe range for every token, test tokens included),
loudness carries no vowel identity (and a recording's gain is arbitrary), and the statistic of
one token never leaks into another, so no train statistics are involved.
"""

from __future__ import annotations

import csv
import math
import numbers
import re
import wave
from pathlib import Path

import numpy as np
from scipy.signal import lfilter, resample_poly

from pnn.data.vowels import (
    Dataset,
    _check_every_class,
    _measured,
    _peterson_barney_records,
    _select,
    _split_info,
    check_val_fraction,
    speaker_split,
    speaker_val_split,
)

__all__ = [
    "BANDWIDTHS",
    "RISE_FRACTION",
    "FALL_FRACTION",
    "resonator_coefficients",
    "resonate",
    "glottal_pulse",
    "pulse_phases",
    "onset_offset_ramp",
    "synthesise_vowel",
    "peak_normalise",
    "read_wav",
    "wav_records",
    "load_audio_vowels",
]

#: fixed formant bandwidths BW1, BW2, BW3 (Hz) of the cascade resonators
BANDWIDTHS = (60.0, 90.0, 150.0)
#: Rosenberg pulse: the opening phase, as a fraction of the period
RISE_FRACTION = 0.40
#: Rosenberg pulse: the closing phase, as a fraction of the period
FALL_FRACTION = 0.16
SOURCES = ("peterson_barney", "wav")
_RATE_RANGE = (1000, 192000)  # Hz
_MAX_DURATION = 10.0  # s
_MAX_JITTER = 0.1
_LABELS_FILE = "labels.csv"
_WAV_NAME = re.compile(r"^(?:(?P<speaker>.+)_(?P<vowel>[A-Za-z]+)"
                       r"|(?P<hspeaker>[A-Za-z]+\d+)(?P<hvowel>[A-Za-z]+))\.wav$", re.IGNORECASE)


# ------------------------------------------------------------------------------ synthesiser


def resonator_coefficients(frequency: float, bandwidth: float, sample_rate: float):
    """``(A, B, C)`` of Klatt's resonator ``y[n] = A x[n] + B y[n-1] + C y[n-2]`` at
    ``frequency`` (Hz) with -3 dB ``bandwidth`` (Hz), sampled at ``sample_rate`` (Hz).

    Raises:
        ValueError: a frequency outside (0, sample_rate / 2) or a bandwidth that is not > 0.
    """
    if not 0 < frequency < sample_rate / 2:
        raise ValueError(f"resonator frequency must be in (0, sample_rate / 2) = (0, "
                         f"{sample_rate / 2:g}) Hz, got {frequency!r} Hz; raise sample_rate")
    if not bandwidth > 0:
        raise ValueError(f"resonator bandwidth must be > 0 Hz, got {bandwidth!r}")
    t = 1.0 / sample_rate
    c = -math.exp(-2 * math.pi * bandwidth * t)
    b = 2 * math.exp(-math.pi * bandwidth * t) * math.cos(2 * math.pi * frequency * t)
    return 1.0 - b - c, b, c


def resonate(x, frequency: float, bandwidth: float, sample_rate: float) -> np.ndarray:
    """``x`` (last axis: time) through one Klatt resonator, starting from rest."""
    a, b, c = resonator_coefficients(frequency, bandwidth, sample_rate)
    return lfilter([a], [1.0, -b, -c], np.asarray(x, dtype=np.float64), axis=-1)


def glottal_pulse(phase) -> np.ndarray:
    """Rosenberg's glottal flow ``g(p)`` at the phases ``p`` in [0, 1) of a period (peak 1 at
    ``p = RISE_FRACTION``, zero through the closed phase)."""
    p = np.asarray(phase, dtype=np.float64)
    opening = 0.5 * (1.0 - np.cos(np.pi * p / RISE_FRACTION))
    closing = np.cos(0.5 * np.pi * (p - RISE_FRACTION) / FALL_FRACTION)
    return np.where(p <= RISE_FRACTION, opening,
                    np.where(p <= RISE_FRACTION + FALL_FRACTION, closing, 0.0))


def pulse_phases(f0: float, n: int, sample_rate: float, *, jitter: float = 0.0,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """The phase in [0, 1) of each of ``n`` samples inside its glottal period.

    Without jitter the periods are exactly ``1 / f0``; with ``jitter > 0`` they are
    ``exp(jitter e_k) / f0`` with ``e_k`` standard normal draws of ``rng``.

    Raises:
        ValueError: ``jitter > 0`` without a seeded ``rng`` (the token would not be
            reproducible).
    """
    t = np.arange(n) / sample_rate
    if jitter == 0:
        return np.mod(t * f0, 1.0)
    if rng is None:
        raise ValueError("jitter > 0 needs rng= (a seeded numpy Generator), so that every token "
                         "is reproducible; pass rng=np.random.default_rng(seed) or jitter=0")
    # twice the periods the span needs: running out would take a mean period below T0 / 2
    n_periods = int(math.ceil(2 * n / sample_rate * f0)) + 2
    periods = np.exp(jitter * rng.standard_normal(n_periods)) / f0
    starts = np.concatenate([[0.0], np.cumsum(periods)])
    k = np.searchsorted(starts, t, side="right") - 1
    return (t - starts[k]) / periods[k]


def onset_offset_ramp(n: int, n_ramp: int) -> np.ndarray:
    """A window of ``n`` ones whose first and last ``n_ramp`` samples rise and fall as half
    a raised cosine (``0.5 (1 - cos(pi (i + 1/2) / n_ramp))``)."""
    w = np.ones(n)
    if n_ramp > 0:
        rise = 0.5 * (1.0 - np.cos(np.pi * (np.arange(n_ramp) + 0.5) / n_ramp))
        w[:n_ramp] = rise
        w[n - n_ramp:] = np.minimum(w[n - n_ramp:], rise[::-1])
    return w


def synthesise_vowel(f0: float, formants, *, sample_rate: float = 10000, duration: float = 0.05,
                     bandwidths=BANDWIDTHS, ramp: float = 0.005, jitter: float = 0.0,
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """One vowel token: Rosenberg pulses at ``f0`` (Hz) through Klatt resonators at
    ``formants`` (Hz, e.g. F1-F3, each with the bandwidth of the same index in
    ``bandwidths``), lip radiation and onset/offset ramps (module docstring).

    Returns:
        float64 ``(round(duration * sample_rate),)`` in arbitrary pressure units (not
        normalised; see :func:`peak_normalise`).

    Raises:
        ValueError: a formant at or above ``sample_rate / 2``, more formants than bandwidths,
            options out of range (see :func:`load_audio_vowels`).
    """
    sample_rate, duration, ramp, jitter = _check_synthesis_options(
        sample_rate, duration, ramp, jitter)
    if not f0 > 0:
        raise ValueError(f"f0 must be > 0 Hz, got {f0!r}")
    if len(formants) > len(bandwidths):
        raise ValueError(f"{len(formants)} formants but {len(bandwidths)} bandwidths; give one "
                         f"bandwidth per formant")
    n = _n_samples(sample_rate, duration)
    v = glottal_pulse(pulse_phases(f0, n, sample_rate, jitter=jitter, rng=rng))
    for f, bw in zip(formants, bandwidths):
        v = resonate(v, f, bw, sample_rate)
    s = np.diff(v, prepend=0.0)  # radiation at the lips
    return s * onset_offset_ramp(n, int(round(ramp * sample_rate)))


def peak_normalise(waves) -> np.ndarray:
    """Each row of ``waves`` ``(n, n_samples)`` divided by its own peak ``max|x|``.

    Raises:
        ValueError: a silent row (peak 0), naming its index.
    """
    waves = np.asarray(waves, dtype=np.float64)
    peak = np.max(np.abs(waves), axis=-1, keepdims=True)
    silent = np.flatnonzero(peak.ravel() == 0)
    if silent.size:
        raise ValueError(f"token(s) {silent[:10].tolist()} are silent (all samples 0): a "
                         f"silent token has no peak to normalise by")
    return waves / peak


def _n_samples(sample_rate: float, duration: float) -> int:
    return int(round(duration * sample_rate))


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_synthesis_options(sample_rate, duration, ramp, jitter):
    """The options as numbers, or a ValueError naming the option and its valid range."""
    lo, hi = _RATE_RANGE
    if not _is_number(sample_rate) or sample_rate != int(sample_rate) \
            or not lo <= sample_rate <= hi:
        raise ValueError(f"sample_rate must be a whole number of Hz in [{lo}, {hi}], got "
                         f"{sample_rate!r}")
    sample_rate = int(sample_rate)
    if not _is_number(duration) or not 0 < duration <= _MAX_DURATION \
            or _n_samples(sample_rate, duration) < 16:
        raise ValueError(f"duration must be a number of seconds in (0, {_MAX_DURATION:g}] that "
                         f"holds at least 16 samples at sample_rate={sample_rate} Hz (>= "
                         f"{16 / sample_rate:.4g} s), got {duration!r}")
    if not _is_number(ramp) or not 0 <= ramp <= duration / 2:
        raise ValueError(f"ramp must be a number of seconds in [0, duration / 2] = [0, "
                         f"{duration / 2:g}], got {ramp!r}")
    if not _is_number(jitter) or not 0 <= jitter <= _MAX_JITTER:
        raise ValueError(f"jitter must be a relative period jitter in [0, {_MAX_JITTER:g}] "
                         f"(natural voices: about 0.005-0.01), got {jitter!r}")
    return sample_rate, float(duration), float(ramp), float(jitter)


# -------------------------------------------------------------------------------- WAV files


def read_wav(path) -> tuple[np.ndarray, int]:
    """``(samples, sample rate)`` of a 16-bit PCM mono WAV file, samples as float64 in
    [-1, 1) (the integer value / 32768).

    Raises:
        ValueError: a file that is not an uncompressed 16-bit mono WAV (stereo, 8-bit,
            24-bit, float, compressed, damaged) or holds no samples, naming the file.
    """
    expected = "expected an uncompressed 16-bit PCM mono WAV file"
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{path}: not a readable WAV file ({e}); {expected}") from e
    if channels != 1:
        raise ValueError(f"{path}: {channels} channels; {expected} (mix it down to one "
                         f"channel first)")
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit samples; {expected} (convert it first)")
    x = np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0
    if x.size == 0:
        raise ValueError(f"{path}: no samples; {expected} holding the vowel")
    return x, int(rate)


def wav_records(folder) -> list[tuple[str, str, str, Path]]:
    """``(talker group, speaker, vowel, file)`` of every WAV file in ``folder``, sorted by
    speaker, vowel and file name (so the order does not depend on how the files are named).

    Labels come from ``folder/labels.csv`` when it exists (header ``file,speaker,vowel`` and
    optionally ``group``; one row per WAV file, every WAV file of the folder listed), else from
    the file names: ``<speaker>_<vowel>.wav`` (e.g. ``w01_ae.wav``, ``anna_iy.wav``) or
    Hillenbrand's ``<group letters><number><vowel>.wav`` (e.g. ``w01ae.wav``). A speaker's talker
    group (the validation split's strata) is the ``group`` column, else the letters that start a
    speaker named like ``w01`` (``w``), else one group ``"all"``.

    Raises:
        FileNotFoundError: a missing folder, or a file listed in ``labels.csv`` that is not there.
        ValueError: a folder without WAV files, an unlabelled file (a name of neither form, or
            a file missing from ``labels.csv``), a damaged ``labels.csv``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"path={str(folder)!r} is not a folder; expected a folder of "
                                f"WAV files (see pnn.data.audio.wav_records for the layout)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    if not files:
        raise ValueError(f"{folder}: no .wav files; expected WAV files named "
                         f"<speaker>_<vowel>.wav or labelled by {_LABELS_FILE}")
    if (folder / _LABELS_FILE).exists():
        return _labelled_by_csv(folder, files)
    records = []
    for p in files:
        m = _WAV_NAME.match(p.name)
        if not m:
            raise ValueError(f"{p}: unlabelled file: its name is neither <speaker>_<vowel>.wav "
                             f"(e.g. w01_ae.wav) nor <group><number><vowel>.wav (e.g. "
                             f"w01ae.wav), and {folder} has no {_LABELS_FILE} to label it")
        speaker = m.group("speaker") or m.group("hspeaker")
        vowel = m.group("vowel") or m.group("hvowel")
        records.append((_group_of(speaker), speaker, vowel.lower(), p))
    return sorted(records, key=_record_order)


def _record_order(record):
    return record[1], record[2], record[3].name


def _group_of(speaker: str) -> str:
    m = re.match(r"([A-Za-z]+)\d+$", speaker)
    return m.group(1) if m else "all"


def _labelled_by_csv(folder: Path, files: list[Path]) -> list[tuple[str, str, str, Path]]:
    """The records of ``folder/labels.csv`` (see :func:`wav_records`)."""
    where = folder / _LABELS_FILE
    with open(where, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"file", "speaker", "vowel"} <= set(rows[0]):
        raise ValueError(f"{where}: expected a header with the columns file,speaker,vowel "
                         f"(and optionally group) and one row per WAV file")
    by_name = {}
    for i, row in enumerate(rows, 2):
        name, speaker, vowel = (str(row.get(k) or "").strip() for k in ("file", "speaker", "vowel"))
        if not (name and speaker and vowel):
            raise ValueError(f"{where} line {i}: empty file, speaker or vowel in {row!r}")
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{where} line {i}: lists {name!r}, which is not a file in "
                                    f"{folder}")
        group = str(row.get("group") or "").strip() or _group_of(speaker)
        by_name[name] = (group, speaker, vowel.lower(), folder / name)
    unlabelled = [p.name for p in files if p.name not in by_name]
    if unlabelled:
        raise ValueError(f"{where}: unlabelled file(s) {unlabelled[:5]}: every WAV file in "
                         f"{folder} needs a row file,speaker,vowel")
    return sorted(by_name.values(), key=_record_order)


def _fit_recording(x: np.ndarray, rate: int, sample_rate: int, n: int) -> np.ndarray:
    """A recording resampled to ``sample_rate`` and cut to ``n`` samples: the window of ``n``
    centred on the recording's energy centroid (the vowel nucleus of an isolated word), moved
    inside the recording; a shorter recording is zero-padded at its end."""
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g)
    if len(x) <= n:
        return np.pad(x, (0, n - len(x)))
    energy = x * x
    total = energy.sum()
    centre = int(round((np.arange(len(x)) * energy).sum() / total)) if total > 0 else len(x) // 2
    start = min(max(centre - n // 2, 0), len(x) - n)
    return x[start:start + n]


# ----------------------------------------------------------------------------------- loader


def load_audio_vowels(
    source: str = "peterson_barney",
    *,
    classes: tuple | list | None = None,
    groups: tuple | list | None = None,
    sample_rate: int = 10000,
    duration: float = 0.05,
    ramp: float = 0.005,
    jitter: float = 0.0,
    seed: int = 0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.2,
    path=None,
) -> Dataset:
    """Vowel waveforms split by speaker into train / validation / test.

    Args:
        source: ``"peterson_barney"`` (synthesised, offline) or ``"wav"`` (the recordings in
            ``path``; giving ``path`` selects it).
        classes: vowel labels to keep (Peterson & Barney: iy ih eh ae ah aa ao uh uw er;
            ``aw`` maps to ``ao``); ``None`` keeps all.
        groups: talker groups to keep (Peterson & Barney: m, w, c); ``None`` keeps all.
        sample_rate: samples per second (Hz), a whole number in [1000, 192000]; synthesis also
            needs it above twice the highest formant.
        duration: seconds per token, in (0, 10]; every token has ``round(duration *
            sample_rate)`` samples.
        ramp: raised-cosine onset and offset (s), in [0, duration / 2].
        jitter: relative glottal period jitter (synthesis only), in [0, 0.1]; drawn per token
            from the stream ``[seed, 2, i]`` (``i``: the token's index among the selected
            tokens, in table order), so fixed by ``seed``.
        seed, test_fraction, val_fraction: the speaker split, as in
            :func:`pnn.data.vowels.load_vowels` (the same speakers for the same arguments).
        path: a folder of WAV files (:func:`wav_records`).

    Returns:
        A :class:`~pnn.data.vowels.Dataset` with float32 x ``(n, n_samples)``, each token
        peak-normalised (``max|x| = 1``), named ``"audio_vowels/<source>"``; ``info`` holds
        the synthesis or reading settings and the split.

    Raises:
        ValueError: an unknown source, class or group (listing the valid ones), an option out
            of range (naming it and the range), a split that leaves a class without training
            samples, an unreadable or unlabelled WAV file.
        FileNotFoundError: a missing ``path``.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    val_fraction = check_val_fraction(val_fraction)
    sample_rate, duration, ramp, jitter = _check_synthesis_options(
        sample_rate, duration, ramp, jitter)
    classes = _check_classes(classes)
    timing = {"sample_rate": sample_rate, "duration": duration, "ramp": ramp,
              "n_samples": _n_samples(sample_rate, duration)}
    source = _check_source(source, path)
    if source == "wav":
        waves, labels, speakers, talkers, classes, info = _recorded(path, classes, groups, timing)
    else:
        waves, labels, speakers, talkers, classes, info = _synthesised(
            classes, groups, timing, jitter, seed)
    test = speaker_split(speakers, test_fraction, seed)
    val = speaker_val_split(speakers, talkers, test, val_fraction, seed)
    train = ~test & ~val
    _check_every_class(labels[train], classes, test_fraction, val_fraction, seed)
    x = peak_normalise(waves).astype(np.float32)
    info.update({
        "source": source, "groups": sorted(set(talkers.tolist())), "seed": seed,
        "test_fraction": test_fraction, "val_fraction": val_fraction, **timing,
        "scaling": "peak-normalised per token (max |x| = 1); no train statistics used",
        **_split_info(speakers, train, val, test),
    })
    y = labels.astype(np.int32)
    return Dataset(
        x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test],
        x_val=x[val], y_val=y[val], classes=tuple(classes),
        feature_names=tuple(f"s{i}" for i in range(timing["n_samples"])),
        name=f"audio_vowels/{source}", info=info,
    )


def _check_source(source, path) -> str:
    """The source to read: ``"wav"`` whenever ``path`` is given; a ValueError for an unknown
    source, or ``"wav"`` without a ``path``."""
    if source not in SOURCES:
        raise ValueError(f"unknown audio vowel source {source!r}; valid sources: "
                         f"{', '.join(map(repr, SOURCES))}")
    if path is not None:
        return "wav"
    if source == "wav":
        raise ValueError("source='wav' reads the recordings in path=: give path= a folder of "
                         "WAV files (CLI: --data-path DIR)")
    return source


def _check_classes(classes):
    """``classes`` as a tuple (or None), or a ValueError saying what is valid."""
    if classes is None:
        return None
    if isinstance(classes, str) or not isinstance(classes, (list, tuple)) or not classes \
            or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"classes must be None (every vowel) or a non-empty list of vowel "
                         f"labels, e.g. ['iy', 'uw', 'aa'], got {classes!r}")
    return tuple(classes)


def _synthesised(classes, groups, timing, jitter, seed):
    """``(waves, labels, speakers, talker groups, classes, info)`` of the Peterson & Barney
    tokens, selected and ordered exactly as :func:`pnn.data.vowels.load_vowels` does."""
    recs, groups, all_groups, _, aliases, info = _peterson_barney_records(groups)
    recs, classes = _select(recs, "peterson_barney", groups, all_groups, classes, aliases)
    feats, labels, speakers, talkers = _measured(recs, classes)
    rate = timing["sample_rate"]
    top = float(feats[:, 1:].max()) if len(feats) else 0.0
    if top >= rate / 2:
        raise ValueError(f"sample_rate={rate} Hz is too low for these tokens: their highest "
                         f"formant is {top:g} Hz, above the Nyquist frequency {rate / 2:g} Hz; "
                         f"use sample_rate > {2 * top:g}")
    waves = np.stack([
        synthesise_vowel(
            f[0], f[1:4], sample_rate=rate, duration=timing["duration"], ramp=timing["ramp"],
            jitter=jitter, rng=np.random.default_rng([seed, 2, i]) if jitter else None)
        for i, f in enumerate(feats)
    ])
    info["synthesis"] = {
        "model": "source-filter: Rosenberg (1971) glottal pulses at F0 -> Klatt (1980) "
                 "cascade resonators at F1-F3 -> lip radiation (first difference) -> "
                 "raised-cosine onset/offset",
        "rise_fraction": RISE_FRACTION, "fall_fraction": FALL_FRACTION,
        "bandwidths_hz": list(BANDWIDTHS), "jitter": jitter,
    }
    return waves, labels, speakers, talkers, classes, info


def _recorded(path, classes, groups, timing):
    """As :func:`_synthesised`, for the WAV files in the folder ``path``."""
    recs = wav_records(path)
    all_groups = tuple(sorted({r[0] for r in recs}))
    groups = tuple(groups) if groups is not None else all_groups
    recs, classes = _select(recs, f"the WAV files in {path}", groups, all_groups, classes, {})
    rate, n = timing["sample_rate"], timing["n_samples"]
    window = onset_offset_ramp(n, int(round(timing["ramp"] * rate)))
    waves = []
    for _, _, _, file in recs:
        x, file_rate = read_wav(file)
        token = _fit_recording(x, file_rate, rate, n) * window
        if not np.any(token):
            raise ValueError(f"{file}: silent (all samples 0) in the {n}-sample window; "
                             f"expected a recorded vowel")
        waves.append(token)
    labels = np.array([classes.index(r[2]) for r in recs])
    info = {"reference": f"WAV recordings in {path}", "folder": str(path), "n_files": len(recs),
            "resampling": "scipy.signal.resample_poly (polyphase FIR, Kaiser window) from each "
                          "file's rate to sample_rate",
            "window": "n_samples centred on the recording's energy centroid; shorter "
                      "recordings zero-padded at the end"}
    return (np.stack(waves), labels, np.array([r[1] for r in recs]),
            np.array([r[0] for r in recs]), classes, info)
