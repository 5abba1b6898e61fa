"""The data caches are written through pnn.fileio: a file or symlink planted at a predictable name
in the cache folder is never followed, and a downloaded file lands whole."""

import os
import struct
from pathlib import Path

import pytest

from pnn.data import images, vowels

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "vowdata_small.dat"


def _serve(monkeypatch, module, payload: bytes) -> None:
    class Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return payload

    monkeypatch.setattr(module.urllib.request, "urlopen", lambda url, timeout: Resp())


def _plant(cache: Path, names, victim: Path) -> None:
    for name in names:
        os.symlink(victim, cache / name)


def test_a_vowel_download_never_writes_through_a_planted_link(tmp_path, monkeypatch):
    payload = FIXTURE.read_bytes()
    _serve(monkeypatch, vowels, payload)
    cache, victim = tmp_path / "cache", tmp_path / "victim"
    cache.mkdir()
    victim.write_text("keep me")
    _plant(cache, ["vowdata.dat.part", "vowdata.dat.tmp", "vowdata.dat.sha256.tmp",
                   "vowdata.dat.sha256.part"], victim)
    target, data = vowels._fetch(vowels.HILLENBRAND_URL, cache, download=True)
    assert data == payload and target.read_bytes() == payload and not target.is_symlink()
    assert (cache / "vowdata.dat.sha256").read_text() == vowels._sha256(payload) + "\n"
    assert victim.read_text() == "keep me"


def test_a_first_use_checksum_record_replaces_a_planted_link(tmp_path):
    cache, victim = tmp_path / "cache", tmp_path / "victim"
    cache.mkdir()
    (cache / "vowdata.dat").write_bytes(FIXTURE.read_bytes())
    _plant(cache, ["vowdata.dat.sha256"], victim)  # dangling: the old writer created victim
    vowels._fetch(vowels.HILLENBRAND_URL, cache, download=False)
    assert not victim.exists()
    sidecar = cache / "vowdata.dat.sha256"
    assert not sidecar.is_symlink()
    assert sidecar.read_text() == vowels._sha256(FIXTURE.read_bytes()) + "\n"


def _idx(values: bytes) -> bytes:
    return struct.pack(">BBBBI", 0, 0, 0x08, 1, len(values)) + values


def test_an_idx_download_never_writes_through_a_planted_link(tmp_path, monkeypatch):
    payload = _idx(bytes(range(10)))
    _serve(monkeypatch, images, payload)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = tmp_path / "cache" / "t10k-labels-idx1-ubyte"
    target.parent.mkdir()
    _plant(target.parent, [target.name + ".part", target.name + ".sha256.tmp"], victim)
    assert images._fetch_verified("https://example.org/" + target.name, target, None,
                                  download=True) == payload
    assert target.read_bytes() == payload and not target.is_symlink()
    assert (target.parent / (target.name + ".sha256")).read_text() == \
        images._sha256(payload) + "\n"
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("module", [vowels, images])
def test_no_partial_file_is_left_in_the_cache(module, tmp_path, monkeypatch):
    if module is vowels:
        _serve(monkeypatch, vowels, FIXTURE.read_bytes())
        vowels._fetch(vowels.HILLENBRAND_URL, tmp_path, download=True)
        expected = {"vowdata.dat", "vowdata.dat.sha256"}
    else:
        _serve(monkeypatch, images, _idx(b"\x01\x02"))
        images._fetch_verified("https://example.org/x-idx1-ubyte", tmp_path / "x-idx1-ubyte",
                               None, download=True)
        expected = {"x-idx1-ubyte", "x-idx1-ubyte.sha256"}
    assert {p.name for p in tmp_path.iterdir()} == expected
