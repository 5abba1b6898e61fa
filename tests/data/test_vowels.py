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
    assert len(d.y_train) + len(d.y_test) == 1520
    assert d.info["n_speakers_train"] + d.info["n_speakers_test"] == 76
    np.testing.assert_allclose(d.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.std(0), 1, atol=1e-4)
    assert np.abs(d.x_test.mean(0)).max() > 1e-4  # test statistics were not used
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
    with pytest.raises(ValueError, match="vowdata line 1: non-numeric value"):
        parse_hillenbrand("w01ae 300 220 680 2290 2860 4410 680 2290 2870 710 2160 2870 700 1970 abc\n")
    with pytest.raises(ValueError, match="no Hillenbrand measurement lines found"):
        parse_hillenbrand("<html>not found</html>")


def test_hillenbrand_loader_from_local_file_women_only_drops_unmeasured():
    d = load_vowels("hillenbrand", path=FIXTURE, test_fraction=0.25, seed=0)
    # women only (m01 dropped); w04ae and w03iy lack only F4 (unused) and stay; w04iy lacks
    # F1 at 50 % and is dropped
    assert d.classes == ("ae", "iy", "uw")
    assert len(d.y_train) + len(d.y_test) == 13 - 1 - 1
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
