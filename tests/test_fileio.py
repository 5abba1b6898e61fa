"""pnn.fileio: atomic, durable writes that never follow a planted symlink."""

import os
import stat

import pytest

from pnn import fileio
from pnn.fileio import atomic_write_bytes, atomic_write_text


def _leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_writes_the_whole_text_and_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "results.json"
    assert atomic_write_text(out, '{"accuracy": 0.9}\n') == out
    assert out.read_text() == '{"accuracy": 0.9}\n'
    assert _leftovers(tmp_path, {"results.json"}) == []


def test_a_large_write_is_complete(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)
    out = tmp_path / "blob.bin"
    atomic_write_bytes(out, data)
    assert out.read_bytes() == data


def test_replaces_an_existing_file_and_keeps_its_permissions(tmp_path):
    out = tmp_path / "r.json"
    out.write_text("old")
    os.chmod(out, 0o640)
    atomic_write_text(out, "new")
    assert out.read_text() == "new"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640


def test_a_new_file_gets_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "n.txt", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "n.txt").st_mode) == 0o644


def test_a_symlink_planted_at_the_old_tmp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out.json"
    planted = tmp_path / "out.json.tmp"  # the name a naive "write <out>.tmp, rename" would use
    planted.symlink_to(victim)
    atomic_write_text(out, "result")
    assert out.read_text() == "result"
    assert victim.read_text() == "precious"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert _leftovers(tmp_path, {"victim.txt", "out.json", "out.json.tmp"}) == []


def test_a_symlink_at_the_destination_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out.json"
    out.symlink_to(victim)
    atomic_write_text(out, "result")
    assert not out.is_symlink() and out.read_text() == "result"
    assert victim.read_text() == "precious"


def test_an_error_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    out.write_text("old")

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left on device"):
        atomic_write_text(out, "new")
    assert out.read_text() == "old"
    assert _leftovers(tmp_path, {"r.json"}) == []


def test_a_failed_rename_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a_directory"
    target.mkdir()
    with pytest.raises(OSError):
        atomic_write_text(target, "x")  # a directory cannot be replaced by a file
    assert target.is_dir() and _leftovers(tmp_path, {"a_directory"}) == []


def test_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"its directory '.*nowhere' does not exist; "
                                                r"create it first"):
        atomic_write_text(tmp_path / "nowhere" / "r.json", "x")


def test_wrong_types_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match="data must be bytes, got str; use atomic_write_text"):
        atomic_write_bytes(tmp_path / "a", "text")
    with pytest.raises(TypeError, match="text must be str, got bytes; use atomic_write_bytes"):
        atomic_write_text(tmp_path / "a", b"bytes")
    assert _leftovers(tmp_path, set()) == []
