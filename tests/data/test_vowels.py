import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from pnn.data import vowels
from pnn.data.vowels import PAT_VOWELS, load_vowels, parse_hillenbrand

FIXTURE = Path(__file__).parent.parent / "fixtures" / "vowdata_small.dat"
SHARED_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "hillenbrand1995_women_7vowels.csv"


def test_peterson_barney_table_is_the_published_corpus():
    rows = vowels.peterson_barney_table()
    assert len(rows) == 1520
    assert len({r["Type"] + r["Speaker"] for r in rows}) == 76
    assert len({r["Vowel"] for r in rows}) == 10
    # the first utterance of the table: a man saying /i/ (heed)
    first = rows[0]
    assert (first["Type"], first["Vowel"], first["F1"], first["F2"]) == ("m", "iy", "240", "2280")


def test_split_is_by_speaker_and_standardised_on_train_only():
    d = load_vowels(seed=3)
    assert d.n_features == 4 and d.n_classes == 10
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 1520
    assert (d.info["n_speakers_train"] + d.info["n_speakers_val"] + d.info["n_speakers_test"]
            == 76)
    np.testing.assert_allclose(d.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.std(0), 1, atol=1e-4)
    assert np.abs(d.x_test.mean(0)).max() > 1e-4  # test statistics were not used
    assert np.abs(d.x_val.mean(0)).max() > 1e-4  # nor validation statistics
    # speakers are disjoint: reconstruct from the table
    rows = vowels.peterson_barney_table()
    spk = np.array([r["Type"] + r["Speaker"] for r in rows])
    test = vowels.speaker_split(spk, 0.3, 3)
    assert not set(spk[test]) & set(spk[~test])
    assert test.sum() == len(d.y_test)


def test_split_is_deterministic_by_seed():
    a, b, c = load_vowels(seed=1), load_vowels(seed=1), load_vowels(seed=2)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert a.x_test.shape != c.x_test.shape or not np.array_equal(a.x_test, c.x_test)


def test_class_subset_with_pat_names():
    d = load_vowels(classes=PAT_VOWELS)
    assert d.classes == ("ae", "ah", "ao", "er", "ih", "iy", "uw")
    assert set(np.unique(d.y_train)) == set(range(7))


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match=r"unknown vowel class\(es\) \['xx'\].*valid: \['aa'"):
        load_vowels(classes=("iy", "xx"))
    with pytest.raises(ValueError, match="unknown vowel source 'timit'; valid sources"):
        load_vowels("timit")
    with pytest.raises(ValueError, match=r"unknown talker group\(s\) \['z'\]"):
        load_vowels(groups=("z",))


def test_parse_hillenbrand_fixture():
    rows = parse_hillenbrand(FIXTURE.read_text())
    assert len(rows) == 13
    r = rows[0]
    assert (r["speaker"], r["vowel"], r["group"]) == ("w01", "ae", "w")
    # F1-F3 steady state, then F1-F3 at 20, 50, 80 %; F4 (col 7) is skipped
    assert r["features"] == [680, 2290, 2860, 680, 2290, 2870, 710, 2160, 2870, 700, 1970, 2900]


def test_parse_hillenbrand_rejects_malformed_lines():
    with pytest.raises(ValueError, match="vowdata line 1: expected a filename and 15 numbers, got 3"):
        parse_hillenbrand("w01ae 300 220 680\n")
    with pytest.raises(ValueError, match="vowdata line 1: non-numeric or cut-short value"):
        parse_hillenbrand("w01ae 300 220 680 2290 2860 4410 680 2290 2870 710 2160 2870 700 1970 abc\n")
    with pytest.raises(ValueError, match="no Hillenbrand measurement lines found"):
        parse_hillenbrand("<html>not found</html>")


def test_hillenbrand_loader_from_local_file_women_only_drops_unmeasured():
    d = load_vowels("hillenbrand", path=FIXTURE, test_fraction=0.25, seed=0)
    # women only (m01 dropped); w04ae and w03iy lack only F4 (unused) and stay; w04iy lacks
    # F1 at 50 % and is dropped
    assert d.classes == ("ae", "iy", "uw")
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 13 - 1 - 1
    assert d.n_features == 12


def test_hillenbrand_download_uses_cache_and_never_network_when_cached(tmp_path, monkeypatch):
    # Cached file: read from disk; the network function must not be called.
    (tmp_path / "vowdata.dat").write_text(FIXTURE.read_text())
    monkeypatch.setattr(vowels.urllib.request, "urlopen",
                        lambda *a, **k: pytest.fail("network used although the file is cached"))
    d = load_vowels("hillenbrand", cache_dir=tmp_path, test_fraction=0.25)
    assert d.info["file"] == str(tmp_path / "vowdata.dat")


def test_hillenbrand_not_cached_without_download_says_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass download=True"):
        load_vowels("hillenbrand", cache_dir=tmp_path)


def test_hillenbrand_download_path_caches_and_checksums(tmp_path, monkeypatch):
    payload = FIXTURE.read_bytes()

    class Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return payload

    calls = []
    monkeypatch.setattr(vowels.urllib.request, "urlopen", lambda url, timeout: calls.append(url) or Resp())
    load_vowels("hillenbrand", cache_dir=tmp_path, download=True, test_fraction=0.25)
    load_vowels("hillenbrand", cache_dir=tmp_path, download=True, test_fraction=0.25)
    assert calls == [vowels.HILLENBRAND_URL]  # second load came from the cache
    assert (tmp_path / "vowdata.dat").read_bytes() == payload
    assert len((tmp_path / "vowdata.dat.sha256").read_text().strip()) == 64


@pytest.mark.skipif(not SHARED_CSV.exists(), reason="development data beside the project not present")
def test_pat_subset_counts_match_the_phyll_distribution():
    # The PhyLL code's 7-vowel subset (women, rows with all 12 formants) has 37 tokens per
    # vowel (36 for uw); our Hillenbrand parser + filter selects the same kind of subset.
    import csv

    with open(SHARED_CSV) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 258
    # write those rows in vowdata.dat format and load them through our parser
    lines = []
    for r in rows:
        v = [r[k] for k in list(r)[2:]]
        f1, f2, f3 = v[0:3]
        lines.append(f"{r['speaker']}{r['vowel']} 300 200 {f1} {f2} {f3} 4000 " + " ".join(v[3:]))
    text = "\n".join(lines) + "\n"
    parsed = parse_hillenbrand(text)
    assert len(parsed) == 258
    counts = {v: sum(p["vowel"] == v for p in parsed) for v in PAT_VOWELS}
    assert counts == {"ae": 37, "ah": 37, "aw": 37, "er": 37, "ih": 37, "iy": 37, "uw": 36}


# ------------------------------------------------------------------ train / validation / test

#: test speakers of load_vowels(seed=s) (test_fraction=0.3), computed with the code *before*
#: validation splits existed (commit 76733b8): published test sets must not move
PB_TEST_SPEAKERS = {
    0: ["c66", "c67", "c70", "m10", "m13", "m14", "m17", "m20", "m23", "m28", "m31", "m4", "m5",
        "m7", "m9", "w36", "w44", "w47", "w48", "w50", "w56", "w57", "w58"],
    1: ["c65", "c68", "c76", "m1", "m10", "m11", "m14", "m20", "m24", "m26", "m27", "m28", "m30",
        "m31", "m7", "w40", "w41", "w46", "w48", "w51", "w57", "w58", "w59"],
    2: ["c67", "c69", "c73", "c76", "m12", "m13", "m19", "m25", "m26", "m27", "m28", "m30", "m31",
        "m32", "m5", "m7", "w38", "w45", "w48", "w49", "w54", "w55", "w61"],
}


def pb_raw():
    """Features, labels, speakers and groups of the Peterson & Barney table, in table order."""
    rows = vowels.peterson_barney_table()
    x = np.array([[float(r[k]) for k in ("F0", "F1", "F2", "F3")] for r in rows])
    classes = sorted({r["Vowel"] for r in rows})
    y = np.array([classes.index(r["Vowel"]) for r in rows])
    spk = np.array([r["Type"] + r["Speaker"] for r in rows])
    return x, y, spk, np.array([r["Type"] for r in rows])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_parts_are_speaker_disjoint_and_rebuild_from_the_raw_table(seed):
    x, y, spk, _ = pb_raw()
    d = load_vowels(seed=seed)
    test_spk, val_spk = set(d.info["test_speakers"]), set(d.info["val_speakers"])
    train_spk = set(spk) - test_spk - val_spk
    assert sorted(test_spk) == PB_TEST_SPEAKERS[seed]  # the test split did not move
    assert not test_spk & val_spk and len(train_spk) == d.info["n_speakers_train"] == 42
    assert len(val_spk) == d.info["n_speakers_val"] == 11  # round(0.2 * 53)
    tr, va, te = (np.isin(spk, sorted(s)) for s in (train_spk, val_spk, test_spk))
    # every part holds exactly its speakers' utterances, standardised with the train part's
    # statistics (and not those of train + validation, or of everything)
    mu, sd = x[tr].mean(0), x[tr].std(0)
    for xs, ys, mask in ((d.x_train, d.y_train, tr), (d.x_val, d.y_val, va), (d.x_test, d.y_test, te)):
        np.testing.assert_array_equal(ys, y[mask])
        np.testing.assert_allclose(xs, (x[mask] - mu) / sd, rtol=1e-5, atol=1e-5)
    leaky = x[tr | va].std(0)
    assert np.abs(leaky - sd).max() > 1.0  # Hz: the check above can tell the two apart
    # every class is present in all three parts
    for ys in (d.y_train, d.y_val, d.y_test):
        assert set(ys.tolist()) == set(range(10))


@pytest.mark.parametrize("val_fraction", [0.0, 0.1, 0.5])
def test_test_split_does_not_depend_on_val_fraction(val_fraction):
    d = load_vowels(seed=1, val_fraction=val_fraction)
    assert d.info["test_speakers"] == PB_TEST_SPEAKERS[1]
    assert len(d.y_test) == 460 and d.info["val_fraction"] == val_fraction
    assert not set(d.info["val_speakers"]) & set(PB_TEST_SPEAKERS[1])


def test_validation_is_stratified_by_talker_group():
    _, _, spk, grp = pb_raw()
    group_of = dict(zip(spk.tolist(), grp.tolist()))
    for seed in range(3):
        d = load_vowels(seed=seed, val_fraction=0.3)
        train_pool = set(spk) - set(d.info["test_speakers"])
        n_val = round(0.3 * len(train_pool))
        assert len(d.info["val_speakers"]) == n_val
        for g in "mwc":
            pool_g = sum(group_of[s] == g for s in train_pool)
            val_g = sum(group_of[s] == g for s in d.info["val_speakers"])
            assert abs(val_g - n_val * pool_g / len(train_pool)) < 1, (seed, g)


def test_val_fraction_zero_gives_empty_validation_and_the_old_train_part():
    d = load_vowels(seed=0, val_fraction=0)
    assert d.x_val.shape == (0, 4) and d.y_val.shape == (0,)
    assert d.x_val.dtype == np.float32 and d.y_val.dtype == np.int32
    assert len(d.y_train) == 1060 and d.info["val_speakers"] == []  # the pre-validation split
    desc = d.describe()
    assert desc["n_val"] == 0 and desc["val_fraction"] == 0.0
    desc = load_vowels(seed=0).describe()
    assert (desc["n_train"], desc["n_val"], desc["n_test"], desc["val_fraction"]) == (840, 220, 460, 0.2)


@pytest.mark.parametrize("bad", [-0.1, 1, 1.5, float("nan"), "0.2", True, None])
def test_val_fraction_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\) .*got "
                                         + re.escape(repr(bad))):
        load_vowels(val_fraction=bad)


def test_val_fraction_that_leaves_no_training_speaker_or_class_is_refused(tmp_path):
    # the fixture has 4 women; test_fraction=0.25 leaves 3 training speakers
    with pytest.raises(ValueError, match="val_fraction=0.9 would put all 3 training speakers in "
                                         "validation and leave none to train on"):
        load_vowels("hillenbrand", path=FIXTURE, test_fraction=0.25, val_fraction=0.9)
    # only w01 says /u/; seed 0 and val_fraction 0.5 put w01 in validation
    lines = [ln for ln in FIXTURE.read_text().splitlines(keepends=True)
             if not ln.startswith(("w02uw", "w03uw", "w04uw"))]
    f = tmp_path / "vowdata.dat"
    f.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"class 'uw' has no training sample after the split "
                                         r"\(test_fraction=0.25, val_fraction=0.5, seed=0\); use a "
                                         r"smaller val_fraction"):
        load_vowels("hillenbrand", path=f, test_fraction=0.25, val_fraction=0.5, seed=0)
    # with less validation the same file loads, and /u/ is in the train part
    d = load_vowels("hillenbrand", path=f, test_fraction=0.25, val_fraction=0.2, seed=0)
    assert d.classes.index("uw") in d.y_train


def test_hillenbrand_parts_are_speaker_disjoint():
    d = load_vowels("hillenbrand", path=FIXTURE, test_fraction=0.25, val_fraction=0.2, seed=0)
    assert d.info["test_speakers"] == ["w03"]  # as before validation existed (seed 0)
    assert d.info["val_speakers"] == ["w04"] and d.info["n_speakers_train"] == 2
    assert d.x_val.shape == (2, 12)  # w04ae and w04uw (w04iy lacks F1 at 50 %)


# ---------------------------------------------------------------------- verified downloads


def serve_vowdata(monkeypatch, payload: bytes) -> list:
    calls = []

    class Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return payload

    monkeypatch.setattr(vowels.urllib.request, "urlopen", lambda url, timeout: calls.append(url) or Resp())
    return calls


def test_edited_cache_file_is_refused_with_how_to_redownload(tmp_path, monkeypatch):
    serve_vowdata(monkeypatch, FIXTURE.read_bytes())
    d = load_vowels("hillenbrand", cache_dir=tmp_path, download=True, test_fraction=0.25)
    assert d.info["sha256"] == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    cached = tmp_path / "vowdata.dat"
    # an edit that still parses: one formant changed
    cached.write_text(FIXTURE.read_text().replace(" 680 2290 2860 4410", " 690 2290 2860 4410"))
    monkeypatch.setattr(vowels.urllib.request, "urlopen",
                        lambda *a, **k: pytest.fail("network used although the file is cached"))
    with pytest.raises(ValueError, match=r"cached file .*vowdata.dat is corrupt or was edited: its "
                                         r"SHA-256 [0-9a-f]{64} differs from the [0-9a-f]{64} "
                                         r"recorded at download in .*vowdata.dat.sha256; delete .* "
                                         r"and load again with download=True"):
        load_vowels("hillenbrand", cache_dir=tmp_path, test_fraction=0.25)


def test_cache_without_record_is_recorded_on_first_use_then_verified(tmp_path):
    cached = tmp_path / "vowdata.dat"
    cached.write_bytes(FIXTURE.read_bytes())
    load_vowels("hillenbrand", cache_dir=tmp_path, test_fraction=0.25)
    sidecar = tmp_path / "vowdata.dat.sha256"
    assert sidecar.read_text().strip() == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    cached.write_bytes(FIXTURE.read_bytes()[:-40] + b"\n")
    with pytest.raises(ValueError, match="is corrupt or was edited"):
        load_vowels("hillenbrand", cache_dir=tmp_path, test_fraction=0.25)
    sidecar.write_text("not a checksum\n")
    with pytest.raises(ValueError, match=r"checksum record .*vowdata.dat.sha256 is damaged: "
                                         r"expected 64 hex digits .* got 'not a checksum'"):
        load_vowels("hillenbrand", cache_dir=tmp_path, test_fraction=0.25)


def test_truncated_or_non_finite_download_is_refused_and_not_cached(tmp_path, monkeypatch):
    text = FIXTURE.read_bytes()
    serve_vowdata(monkeypatch, text[: text.rindex(b"2760")] + b"27")  # cut inside the last number
    with pytest.raises(ValueError, match=r"download of https://\S+vowdata.dat line 24: the file "
                                         r"ends inside this measurement line"):
        load_vowels("hillenbrand", cache_dir=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_parser_refuses_a_file_cut_inside_its_last_number(tmp_path):
    text = FIXTURE.read_text()
    cut = text[: text.rindex("2760")] + "27"  # "w04uw ... 2760" cut to "... 27"
    # the last line still has 16 fields: only the missing line break shows the cut
    assert len(cut.splitlines()[-1].split()) == 16
    f = tmp_path / "vowdata.dat"
    f.write_text(cut)
    with pytest.raises(ValueError, match=rf"{re.escape(str(f))} line 24: the file ends inside this "
                                         r"measurement line \(expected a line break after it\), so "
                                         r"its last number may be cut short: 'w04uw .* 27'\. The "
                                         r"file is truncated; download it again"):
        load_vowels("hillenbrand", path=f, test_fraction=0.25)
    # cut inside a line: too few values
    f.write_text(text[: text.rindex("970 2760")] + "9")
    with pytest.raises(ValueError, match=rf"{re.escape(str(f))} line 24: expected a filename and 15 "
                                         r"numbers, got 14 values"):
        load_vowels("hillenbrand", path=f, test_fraction=0.25)
    # a complete last line without a line break after a comment is fine; so is CRLF
    rows = parse_hillenbrand(text.replace("\n", "\r\n"))
    assert len(rows) == 13
    assert len(parse_hillenbrand(text + "end of data")) == 13


@pytest.mark.parametrize("bad", ["inf", "nan", "-inf", "Infinity", "NaN"])
def test_parser_refuses_non_finite_values(bad, tmp_path):
    text = FIXTURE.read_text().replace("w02iy 260 225  430", f"w02iy 260 225  {bad}")
    f = tmp_path / "vowdata.dat"
    f.write_text(text)
    with pytest.raises(ValueError, match=rf"{re.escape(str(f))} line 18: non-finite value\(s\) "
                                         rf"\['{bad}'\] in 'w02iy .*'; expected finite numbers"):
        load_vowels("hillenbrand", path=f, test_fraction=0.25)


@pytest.mark.skipif(not SHARED_CSV.exists(), reason="development data beside the project not present")
def test_pat_task_has_every_vowel_in_all_three_speaker_disjoint_parts(tmp_path):
    import csv

    with open(SHARED_CSV) as f:
        rows = list(csv.DictReader(f))
    lines = []
    for r in rows:
        v = [r[k] for k in list(r)[2:]]
        lines.append(f"{r['speaker']}{r['vowel']} 300 200 {v[0]} {v[1]} {v[2]} 4000 " + " ".join(v[3:]))
    path = tmp_path / "vowdata.dat"
    path.write_text("\n".join(lines) + "\n")
    speakers = {r["speaker"] for r in rows}
    for seed in range(3):
        d = load_vowels("hillenbrand", path=path, classes=PAT_VOWELS, seed=seed)
        test, val = set(d.info["test_speakers"]), set(d.info["val_speakers"])
        assert not test & val and test | val < speakers
        assert (len(d.y_train), len(d.y_val), len(d.y_test)) == [(144, 36, 78), (150, 36, 72),
                                                                  (149, 38, 71)][seed]
        for y in (d.y_train, d.y_val, d.y_test):
            assert sorted(set(y.tolist())) == list(range(7))


def test_the_csv_form_of_hillenbrand_loads_like_vowdata(tmp_path):
    import numpy as np

    from pnn.data.vowels import load_vowels

    rng = np.random.default_rng(0)
    header = "speaker,vowel," + ",".join(f"F{i}" for i in range(12))
    lines, dat = [header], []
    for spk in range(1, 13):
        for v in PAT_VOWELS:
            vals = [int(x) for x in rng.integers(300, 3000, size=12)]
            lines.append(f"w{spk:02d},{v}," + ",".join(map(str, vals)))
            dat.append(f"w{spk:02d}{v} 300 200 {vals[0]} {vals[1]} {vals[2]} 4000 "
                       + " ".join(map(str, vals[3:])))
    csv_path, dat_path = tmp_path / "h.csv", tmp_path / "vowdata.dat"
    csv_path.write_text("\n".join(lines) + "\n")
    dat_path.write_text("\n".join(dat) + "\n")
    a = load_vowels("hillenbrand", path=csv_path, classes=PAT_VOWELS, seed=1)
    b = load_vowels("hillenbrand", path=dat_path, classes=PAT_VOWELS, seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    csv_path.write_text("\n".join(lines)[:-2])  # cut inside the last number
    with pytest.raises(ValueError, match=r"h\.csv line 85: the file ends inside this row"):
        load_vowels("hillenbrand", path=csv_path, classes=PAT_VOWELS)
