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


# ------------------------------------------------------------------------------ figures
def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    return fig, plt


def test_a_figure_is_rendered_in_memory_and_written_atomically(tmp_path):
    fig, plt = _figure()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "plot.png"
    for name in (f".{out.name}.tmp", f"{out.name}.tmp"):  # predictable names, pre-planted
        os.symlink(victim, tmp_path / name)
    try:
        assert fileio.atomic_savefig(fig, out, dpi=50) == out
    finally:
        plt.close(fig)
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and not out.is_symlink()
    assert victim.read_text() == "keep me"
    assert _leftovers(tmp_path, {"plot.png", "victim.txt", ".plot.png.tmp", "plot.png.tmp"}) == []


def test_a_figure_symlinked_destination_is_replaced_not_followed(tmp_path):
    fig, plt = _figure()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "plot.svg"
    os.symlink(victim, out)
    try:
        fileio.atomic_savefig(fig, out)
    finally:
        plt.close(fig)
    assert not out.is_symlink() and b"<svg" in out.read_bytes()
    assert victim.read_text() == "keep me"


def test_a_figure_format_must_be_known(tmp_path):
    fig, plt = _figure()
    try:
        with pytest.raises(ValueError, match=r"format 'xyz' is not one matplotlib writes "
                                             r"\(.*png.*\); change the suffix"):
            fileio.atomic_savefig(fig, tmp_path / "plot.xyz")
        with pytest.raises(ValueError, match="no file suffix to tell the format"):
            fileio.atomic_savefig(fig, tmp_path / "plot")
    finally:
        plt.close(fig)
    assert _leftovers(tmp_path, set()) == []


def test_no_pnn_module_writes_a_file_another_way():
    """Every writer goes through pnn.fileio (checkpoints keep their own exclusive temp name)."""
    import re
    from pathlib import Path

    root = Path(fileio.__file__).resolve().parent.parent
    plain = re.compile(r"\.write_text\(|\.write_bytes\(|\.savefig\(|open\([^)]*['\"][wax]b?['\"]")
    found = []
    for folder in ("pnn", "sim", "drivers"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.name in ("fileio.py", "checkpoint.py"):
                continue
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if plain.search(line.split("#")[0]):
                    found.append(f"{path.relative_to(root)}:{lineno}: {line.strip()}")
    assert found == []


# ------------------------------------------------------------------------------ check_writable
def test_check_writable_accepts_new_and_existing_locations(tmp_path):
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / "results").mkdir()
    os.symlink(tmp_path / "results", tmp_path / "linked")
    assert fileio.check_writable(tmp_path / "old.json") == tmp_path / "old.json"
    assert fileio.check_writable(tmp_path / "new" / "deeper" / "r.json")  # creatable
    assert fileio.check_writable(tmp_path / "results", folder=True, files=["a.json"])
    assert fileio.check_writable(tmp_path / "linked", folder=True)  # a link to a folder is fine
    assert fileio.check_writable(tmp_path / "fresh" / "out", folder=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linked", "old.json", "results"]
    assert list((tmp_path / "results").iterdir()) == []  # the probe left nothing


@pytest.mark.parametrize("make, kwargs, match", [
    (lambda d: (d / "x").mkdir(), {},
     r"--out '.*x': is a directory, a file was expected; give a file name, e\.g\. '.*x/result"),
    (lambda d: os.symlink(d / "victim", d / "x"), {},
     r"--out '.*x': is a symlink \(to '.*victim'\); the file would replace the link, not be "
     r"written where it points; give the real path, or remove the link"),
    (lambda d: (d / "f").write_text(""), {"sub": "f/x"},
     r"--out '.*f/x': '.*f' is not a directory \(a file or a dangling symlink is in the way\)"),
    (lambda d: (d / "f").write_text(""), {"sub": "f/a/b/x"},
     r"'.*f' is not a directory"),
    (lambda d: (d / "x").write_text(""), {"folder": True},
     r"--out '.*x': is a file, not a folder; give a folder \(new or existing\)"),
    (lambda d: os.symlink(d / "nowhere", d / "x"), {"folder": True},
     r"--out '.*x': is a dangling symlink; give a folder"),
    (lambda d: (d / "x" / "results.json").mkdir(parents=True),
     {"folder": True, "files": ["results.json"]},
     r"results\.json in it is a directory, where a file will be written; remove or rename"),
    (lambda d: ((d / "x").mkdir(), os.symlink(d / "victim", d / "x" / "results.json")),
     {"folder": True, "files": ["results.json"]},
     r"results\.json in it is a symlink \(to '.*victim'\), which would be replaced"),
])
def test_check_writable_refuses_with_the_path_the_reason_and_the_fix(tmp_path, make, kwargs,
                                                                      match):
    make(tmp_path)
    sub = kwargs.pop("sub", "x")
    with pytest.raises(fileio.OutputPathError, match=match):
        fileio.check_writable(tmp_path / sub, what="--out", **kwargs)
    assert issubclass(fileio.OutputPathError, ValueError)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes to any folder whatever its permission bits")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        with pytest.raises(fileio.OutputPathError, match=r"its folder '.*ro': cannot create "
                                                         r"files there \(Permission denied\)"):
            fileio.check_writable(ro / "r.json", what="--out")
        with pytest.raises(fileio.OutputPathError, match=r"'.*ro/new' cannot be created in"):
            fileio.check_writable(ro / "new" / "r.json", what="--out")
        with pytest.raises(fileio.OutputPathError, match="cannot create files in this folder"):
            fileio.check_writable(ro, folder=True, what="--out")
    finally:
        os.chmod(ro, 0o700)


def test_check_writable_probes_for_real_so_root_is_refused_too(tmp_path, monkeypatch):
    """The check creates (and removes) a file where the output goes, so a read-only file system
    or an ACL refuses it even when permission bits (or root) would allow."""
    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    with pytest.raises(fileio.OutputPathError, match=r"cannot create files there \(Read-only "
                                                     r"file system\); choose a location"):
        fileio.check_writable(tmp_path / "r.json", what="--out")
