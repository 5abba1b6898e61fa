"""pnn.data.audio: the source-filter synthesiser against its definition (spectral peaks at the
formants, harmonics at F0, the resonator's analytic decay), and the waveform loader (splits
identical to the formant task's, shapes, determinism, WAV folders and their refusals)."""

import math
import wave

import numpy as np
import pytest
from scipy.signal import find_peaks, freqz

from pnn import registry
from pnn.data import audio, vowels
from pnn.data.audio import (BANDWIDTHS, load_audio_vowels, read_wav, resonate,
                            resonator_coefficients, synthesise_vowel)
from pnn.data.vowels import PAT_VOWELS, load_vowels


@pytest.fixture(scope="module")
def pb_table():
    """``(F0, F1, F2, F3)`` rows of every Peterson & Barney token (Hz)."""
    rows = vowels.peterson_barney_table()
    return np.array([[float(r[k]) for k in ("F0", "F1", "F2", "F3")] for r in rows])


@pytest.fixture(scope="module")
def default_set():
    return load_audio_vowels(seed=3)


def _power_spectrum(x, fs, pad=16):
    """``(frequencies, power)`` of ``x`` through a Hann window, zero-padded ``pad`` times."""
    n = len(x) * pad
    return np.fft.rfftfreq(n, 1 / fs), np.abs(np.fft.rfft(x * np.hanning(len(x)), n)) ** 2


def _peak_in(f, p, lo, hi):
    band = (f >= lo) & (f < hi)
    return f[band][np.argmax(p[band])]


# --------------------------------------------------------------------------- the synthesiser


def test_spectral_peaks_sit_at_f1_and_f2_for_every_peterson_barney_token(pb_table):
    """Every token of the table at the default settings (10 kHz, 50 ms), its power spectrum
    pre-emphasised by +6 dB/octave (power x f^2, as formant measurement does: it undoes the net
    -6 dB/octave of glottal flow and lip radiation). The strongest line between 0 and the F1-F2
    midpoint lies within max(10 % of F1, F0) of F1 for every token; the strongest between the
    F1-F2 and F2-F3 midpoints within max(10 % of F2, F0) of F2 (one harmonic spacing: a
    harmonic spectrum has lines only at multiples of F0) for every token whose F2 lies 4 or more
    harmonics above F1. Closer pairs can merge into one peak (measured: 2 of 1,520 tokens, at
    2.1 and 3.8 harmonics apart, miss by up to 1.7 tolerances); at most 0.5 % may."""
    errors = []
    for f0, f1, f2, f3 in pb_table:
        f, p = _power_spectrum(synthesise_vowel(f0, (f1, f2, f3)), 10000)
        p = p * f ** 2
        m12, m23 = (f1 + f2) / 2, (f2 + f3) / 2
        e1 = abs(_peak_in(f, p, 0, m12) - f1) / max(0.1 * f1, f0)
        e2 = abs(_peak_in(f, p, m12, m23) - f2) / max(0.1 * f2, f0)
        errors.append((e1, e2, (f2 - f1) / f0))
    e1, e2, separation = np.array(errors).T
    assert e1.max() <= 1.0, f"worst F1 peak error: {e1.max():.2f} tolerances"
    assert e2[separation >= 4].max() <= 1.0, f"worst F2 peak error: {e2.max():.2f} tolerances"
    assert np.mean(e2 > 1) <= 0.005, f"{np.sum(e2 > 1)} tokens miss F2"


def test_harmonic_spacing_is_f0():
    """A non-integer period (8000 / 123.4 samples): the lines of a 0.5 s token's spectrum
    (60-2500 Hz; local maxima within 50 dB of the strongest, at least 40 Hz apart, which keeps
    the Hann window's side lobes out) are F0 apart, each within 2 %."""
    f0, fs = 123.4, 8000
    x = synthesise_vowel(f0, (500, 1500, 2500), duration=0.5, sample_rate=fs)
    f, p = _power_spectrum(x, fs)
    band = (f > 60) & (f < 2500)
    db = 10 * np.log10(p[band])
    peaks, _ = find_peaks(db, height=db.max() - 50, distance=int(40 / (f[1] - f[0])))
    spacing = np.diff(f[band][peaks])
    assert len(peaks) == 20  # every harmonic below 2500 Hz
    np.testing.assert_allclose(spacing, f0, rtol=0.02)
    assert abs(np.mean(spacing) / f0 - 1) < 0.001


@pytest.mark.parametrize("freq, bw", [(1000.0, 60.0), (500.0, 150.0), (2000.0, 90.0)])
def test_resonator_impulse_response_decays_at_pi_bandwidth(freq, bw):
    """y[n] = A x[n] + B y[n-1] + C y[n-2] with Klatt's A, B, C: the energy of the impulse
    response in successive whole periods of F falls by exp(-2 pi BW / F) (envelope
    exp(-pi BW t)); its sum (the gain at 0 Hz) is 1; its magnitude response peaks where
    cos(w) = (1 + r^2) cos(theta) / (2 r) (poles r exp(+-i theta), theta = 2 pi F / fs), and its
    -3 dB width is BW within 5 %."""
    fs = 8000
    period = int(fs / freq)  # these frequencies have a whole number of samples per period
    h = resonate(np.r_[1.0, np.zeros(40 * period - 1)], freq, bw, fs)
    energy = (h ** 2).reshape(-1, period).sum(1)
    np.testing.assert_allclose(energy[1:] / energy[:-1], math.exp(-2 * math.pi * bw / freq),
                               rtol=1e-9)
    np.testing.assert_allclose(resonate(np.ones(20000), freq, bw, fs)[-1], 1.0, rtol=1e-9)
    a, b, c = resonator_coefficients(freq, bw, fs)
    w, resp = freqz([a], [1, -b, -c], worN=2 ** 16, fs=fs)
    power = np.abs(resp) ** 2
    above = w[power >= power.max() / 2]
    r, theta = math.exp(-math.pi * bw / fs), 2 * math.pi * freq / fs
    peak = fs / (2 * math.pi) * math.acos((1 + r * r) * math.cos(theta) / (2 * r))
    assert abs(w[np.argmax(power)] - peak) < 0.1  # Hz: the grid spacing is 0.06 Hz
    assert abs((above.max() - above.min()) / bw - 1) < 0.05


def test_resonator_refuses_a_frequency_past_nyquist():
    with pytest.raises(ValueError, match=r"resonator frequency must be in \(0, sample_rate / 2\)"):
        resonator_coefficients(4100, 90, 8000)


def test_token_shape_ramp_and_jitter_only_when_seeded():
    x = synthesise_vowel(130, (730, 1090, 2440))
    assert x.shape == (500,) and x.dtype == np.float64
    assert abs(x[0]) < 1e-3 * np.abs(x).max() and abs(x[-1]) < 1e-3 * np.abs(x).max()
    with pytest.raises(ValueError, match="jitter > 0 needs rng="):
        synthesise_vowel(130, (730, 1090, 2440), jitter=0.01)
    a = synthesise_vowel(130, (730, 1090, 2440), jitter=0.01, rng=np.random.default_rng(1))
    b = synthesise_vowel(130, (730, 1090, 2440), jitter=0.01, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, x)


# --------------------------------------------------------------------------------- the loader


def test_default_set_shapes_scaling_and_name(default_set):
    d = default_set
    assert d.name == "audio_vowels/peterson_barney" and d.n_classes == 10
    assert d.x_train.shape[1] == d.n_features == 500 and d.x_train.dtype == np.float32
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 1520
    for x in (d.x_train, d.x_val, d.x_test):
        np.testing.assert_allclose(np.abs(x).max(1), 1.0, rtol=1e-6)
    assert d.info["sample_rate"] == 10000 and d.info["n_samples"] == 500
    assert d.info["synthesis"]["bandwidths_hz"] == list(BANDWIDTHS)


def test_splits_are_the_formant_tasks_speaker_splits(default_set):
    for kw in ({"seed": 3}, {"seed": 5, "classes": PAT_VOWELS, "val_fraction": 0.3}):
        a = default_set if kw == {"seed": 3} else load_audio_vowels(**kw)
        f = load_vowels(**kw)
        for part in ("y_train", "y_val", "y_test"):
            np.testing.assert_array_equal(getattr(a, part), getattr(f, part))
        for key in ("test_speakers", "val_speakers", "n_speakers_train"):
            assert a.info[key] == f.info[key]
        assert a.classes == f.classes
    test, val = set(a.info["test_speakers"]), set(a.info["val_speakers"])
    assert test and val and not test & val


def test_determinism_for_a_seed_and_the_registry_entry(default_set):
    again = registry.load_task("audio_vowels", seed=3, download=False, path=None)
    np.testing.assert_array_equal(again.x_train, default_set.x_train)
    np.testing.assert_array_equal(again.x_test, default_set.x_test)
    j1 = load_audio_vowels(seed=3, jitter=0.01, classes=("iy", "aa"))
    j2 = load_audio_vowels(seed=3, jitter=0.01, classes=("iy", "aa"))
    np.testing.assert_array_equal(j1.x_train, j2.x_train)
    assert not np.allclose(j1.x_train, load_audio_vowels(seed=3, classes=("iy", "aa")).x_train)


@pytest.mark.parametrize("kw, match", [
    ({"sample_rate": 500}, r"sample_rate must be a whole number of Hz in \[1000, 192000\]"),
    ({"sample_rate": 8000.5}, r"sample_rate must be a whole number"),
    ({"sample_rate": 8000}, r"sample_rate=8000 Hz is too low.*highest formant is 4380 Hz"),
    ({"duration": 0}, r"duration must be a number of seconds in \(0, 10\]"),
    ({"duration": 11.0}, r"duration must be"),
    ({"duration": 0.001}, r"at least 16 samples"),
    ({"ramp": 0.03}, r"ramp must be a number of seconds in \[0, duration / 2\]"),
    ({"jitter": 0.5}, r"jitter must be a relative period jitter in \[0, 0.1\]"),
    ({"classes": ("iy", "xx")}, r"unknown vowel class\(es\) \['xx'\].*valid: \['aa'"),
    ({"classes": "iy"}, r"classes must be None \(every vowel\) or a non-empty list"),
    ({"classes": []}, r"classes must be None"),
    ({"source": "timit"}, r"unknown audio vowel source 'timit'; valid sources"),
    ({"source": "wav"}, r"source='wav' reads the recordings in path="),
])
def test_bad_options_name_the_option_and_its_range(kw, match):
    with pytest.raises(ValueError, match=match):
        load_audio_vowels(**kw)


# ------------------------------------------------------------------------------- WAV folders


def _write_wav(path, x, rate, channels=1, width=2):
    x = np.clip(np.asarray(x, dtype=np.float64), -1, 1)
    data = ((x * 127 + 128).astype(np.uint8) if width == 1 else (x * 32767).astype("<i2"))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.repeat(data, channels).tobytes())


VOWEL_FORMANTS = {"iy": (270, 2290, 3010), "aa": (730, 1090, 2440)}


def _recordings(folder, names=None):
    """Two vowels of six speakers (three m, three w), 0.1 s at 16 kHz, half-scale; file
    names ``<speaker>_<vowel>.wav`` unless ``names`` maps (speaker, vowel) to another."""
    folder.mkdir(exist_ok=True)
    for g, f0 in (("m", 120), ("w", 210)):
        for i in range(1, 4):
            for v, formants in VOWEL_FORMANTS.items():
                x = synthesise_vowel(f0 + 5 * i, formants, sample_rate=16000, duration=0.1)
                name = (names or {}).get((f"{g}0{i}", v), f"{g}0{i}_{v}.wav")
                _write_wav(folder / name, 0.5 * x / np.abs(x).max(), 16000)
    return folder


def test_wav_folder_loads_with_speaker_splits(tmp_path):
    d = load_audio_vowels(path=_recordings(tmp_path / "rec"), seed=1)
    assert d.name == "audio_vowels/wav" and d.classes == ("aa", "iy")
    assert d.x_train.shape[1] == 500 and d.x_train.dtype == np.float32
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 12
    speakers = np.array([f"{g}0{i}" for g in "mw" for i in range(1, 4) for _ in range(2)])
    test = vowels.speaker_split(speakers, 0.3, 1)
    assert d.info["test_speakers"] == sorted(set(speakers[test]))
    assert not set(d.info["test_speakers"]) & set(d.info["val_speakers"])
    assert d.info["groups"] == ["m", "w"]
    # the resampled 16 kHz recording keeps its formant: the /iy/ F1 line stays near 270 Hz
    f, p = _power_spectrum(d.x_train[d.y_train == 1][0], 10000)
    assert abs(_peak_in(f, p, 0, 1000) - 270) <= 135


def test_labels_csv_and_hillenbrand_names_give_the_same_set(tmp_path):
    plain = load_audio_vowels(path=_recordings(tmp_path / "plain"), seed=2)
    hill = load_audio_vowels(path=_recordings(tmp_path / "hill", {
        (f"{g}0{i}", v): f"{g}0{i}{v}.wav" for g in "mw" for i in range(1, 4)
        for v in VOWEL_FORMANTS}), seed=2)
    pairs = [(f"{g}0{i}", v) for g in "mw" for i in range(1, 4) for v in VOWEL_FORMANTS]
    names = {pair: f"token{k}.WAV" for k, pair in enumerate(pairs)}
    folder = _recordings(tmp_path / "csv", names)
    rows = ["file,speaker,vowel"] + [f"{n},{s},{v}" for (s, v), n in names.items()]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    csv_set = load_audio_vowels(path=folder, seed=2)
    for d in (hill, csv_set):  # records in (speaker, vowel) order, whatever the file names
        for part in ("x_train", "y_train", "x_val", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(d, part), getattr(plain, part))
        assert d.info["test_speakers"] == plain.info["test_speakers"]


def test_wav_resampling_keeps_a_tone_in_place(tmp_path):
    t = np.arange(int(0.2 * 44100)) / 44100
    _write_wav(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), 44100)
    x, rate = read_wav(tmp_path / "tone.wav")
    assert rate == 44100 and abs(np.abs(x).max() - 0.5) < 1e-3
    y = audio._fit_recording(x, rate, 8000, 400)
    f, p = _power_spectrum(y, 8000)
    assert y.shape == (400,) and abs(f[np.argmax(p)] - 1000) < 5


def test_wav_refusals_say_what_is_expected(tmp_path):
    x = np.sin(np.arange(800) / 5.0) * 0.5
    with pytest.raises(FileNotFoundError, match="is not a folder; expected a folder of WAV"):
        load_audio_vowels(path=tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .wav files"):
        load_audio_vowels(path=tmp_path / "empty")
    for name, kw, match in (("stereo", {"channels": 2}, "2 channels; expected an uncompressed "
                             "16-bit PCM mono"), ("eight", {"width": 1}, "8-bit samples")):
        folder = tmp_path / name
        folder.mkdir()
        _write_wav(folder / "m01_iy.wav", x, 8000, **kw)
        with pytest.raises(ValueError, match=match):
            load_audio_vowels(path=folder)
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "m01_iy.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError, match="not a readable WAV file"):
        load_audio_vowels(path=folder)
    folder = _recordings(tmp_path / "named")
    _write_wav(folder / "hello.wav", x, 8000)
    with pytest.raises(ValueError, match=r"hello.wav: unlabelled file"):
        load_audio_vowels(path=folder)
    (folder / "labels.csv").write_text("file,speaker,vowel\nm01_iy.wav,m01,iy\n")
    with pytest.raises(ValueError, match=r"labels.csv: unlabelled file\(s\)"):
        load_audio_vowels(path=folder)
    (folder / "labels.csv").write_text("file,speaker,vowel\ngone.wav,m01,iy\n")
    with pytest.raises(FileNotFoundError, match="lists 'gone.wav', which is not a file"):
        load_audio_vowels(path=folder)
