"""The command line's persistent compilation cache (pnn.jit_cache): where it goes, how it is
turned off, and that a run served from it gives the same record as the run that filled it."""

import json
import os
import subprocess
import sys
import warnings

import pytest

from pnn import jit_cache
from pnn.jit_cache import default_compile_cache_dir, enable_compile_cache, resolve_compile_cache


def _env(**kw):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "PNN_"))}
    env.update(kw)
    return env


def test_default_folder_is_keyed_by_jaxlib_and_processor(monkeypatch, tmp_path):
    import jaxlib.version

    monkeypatch.setenv("PNN_CACHE", str(tmp_path))
    d = default_compile_cache_dir()
    assert d.parent == tmp_path / "xla"
    assert d.name.startswith(f"jaxlib-{jaxlib.version.__version__}-")
    assert d == default_compile_cache_dir()  # stable within a machine
    monkeypatch.delenv("PNN_CACHE")
    assert default_compile_cache_dir().parts[-4:-1] == (".cache", "pnn", "xla")


def _clean(monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("PNN_COMPILE_CACHE", raising=False)


@pytest.mark.parametrize("value", ["off", "0", "OFF", "false"])
def test_off_leaves_jax_alone(monkeypatch, value):
    _clean(monkeypatch)
    monkeypatch.setenv("PNN_COMPILE_CACHE", value)
    assert resolve_compile_cache() == (None, "PNN_COMPILE_CACHE=off")
    assert enable_compile_cache() is None
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ


def test_a_folder_or_on_forces_it_and_unset_follows_the_platform(monkeypatch, tmp_path):
    _clean(monkeypatch)
    monkeypatch.setenv("PNN_COMPILE_CACHE", str(tmp_path / "c"))
    assert resolve_compile_cache()[0] == tmp_path / "c"
    monkeypatch.setenv("PNN_COMPILE_CACHE", "on")
    assert resolve_compile_cache()[0] == default_compile_cache_dir()
    monkeypatch.delenv("PNN_COMPILE_CACHE")
    monkeypatch.setattr(jit_cache, "default_policy", lambda: (False, "reason"))
    assert resolve_compile_cache() == (None, "reason")
    assert enable_compile_cache() is None and "JAX_COMPILATION_CACHE_DIR" not in os.environ
    monkeypatch.setattr(jit_cache, "default_policy", lambda: (True, ""))
    assert resolve_compile_cache() == (default_compile_cache_dir(), "default")


def test_intel_processors_and_other_systems_default_to_off(monkeypatch):
    monkeypatch.setattr(jit_cache.sys, "platform", "linux")
    monkeypatch.setattr(jit_cache, "_cpu", lambda: ("GenuineIntel", "x"))
    on, why = jit_cache.default_policy()
    assert not on and "jax-ml/jax#38445" in why and "PNN_COMPILE_CACHE=on" in why
    monkeypatch.setattr(jit_cache, "_cpu", lambda: ("AuthenticAMD", "x"))
    assert jit_cache.default_policy() == (True, "")
    monkeypatch.setattr(jit_cache.sys, "platform", "darwin")
    assert not jit_cache.default_policy()[0]


def test_the_users_own_jax_setting_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("PNN_COMPILE_CACHE", str(tmp_path / "pnn"))
    assert enable_compile_cache() == tmp_path / "mine"
    assert not (tmp_path / "pnn").exists()


def test_an_unusable_folder_warns_and_runs_without(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _clean(monkeypatch)
    monkeypatch.setenv("PNN_COMPILE_CACHE", str(blocker / "xla"))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert enable_compile_cache() is None
    assert any("not usable" in str(x.message) and "PNN_COMPILE_CACHE" in str(x.message)
               for x in w)
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ


def test_a_second_cli_run_is_served_from_the_cache_with_the_same_record(tmp_path):
    cache = tmp_path / "xla"
    env = _env(PNN_COMPILE_CACHE=str(cache), PYTHONWARNINGS="ignore")
    records = []
    for k in range(2):
        out = tmp_path / f"rec{k}.json"
        p = subprocess.run([sys.executable, "-m", "pnn", "train", "--system", "microwave",
                            "--method", "phyll", "--classes", "iy,uw,aa", "--hidden", "6",
                            "--n-meas", "6", "--epochs", "2", "--out", str(out)],
                           env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        records.append(json.loads(out.read_text()))
        if k == 0:
            filled = {f.name for f in cache.iterdir()}
            assert len(filled) > 10, filled  # every program, however quick to compile
    # nothing new compiled the second time: every program came from the cache
    assert {f.name for f in cache.iterdir()} == filled
    a, b = records
    assert a["val_accuracy"] == b["val_accuracy"] and a["test_accuracy"] == b["test_accuracy"]
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def _warnings_of(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(x.message) for x in w]


def test_a_folder_others_can_write_is_refused_once(monkeypatch, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # what a root-run CI can check: the mode, whoever the owner
    _clean(monkeypatch)
    monkeypatch.setenv("PNN_COMPILE_CACHE", str(shared))
    result, msgs = _warnings_of(enable_compile_cache)
    assert result is None and "JAX_COMPILATION_CACHE_DIR" not in os.environ
    assert len(msgs) == 1 and "not usable (mode 777: its group or other users may write to it" \
        in msgs[0] and "chmod go-w" in msgs[0] and "PNN_COMPILE_CACHE" in msgs[0]
    assert _warnings_of(enable_compile_cache) == (None, [])  # said once
    shared.chmod(0o770)
    assert "mode 770" in jit_cache.unsafe_folder(shared)
    shared.chmod(0o755)
    assert jit_cache.unsafe_folder(shared) is None


def test_a_folder_another_user_owns_is_refused(monkeypatch, tmp_path):
    mine = tmp_path / "theirs"
    mine.mkdir(mode=0o700)
    owner = os.stat(mine).st_uid
    _clean(monkeypatch)
    monkeypatch.setenv("PNN_COMPILE_CACHE", str(mine))
    monkeypatch.setattr(jit_cache.os, "getuid", lambda: owner + 1)  # as if another user ran pnn
    result, msgs = _warnings_of(enable_compile_cache)
    assert result is None and "JAX_COMPILATION_CACHE_DIR" not in os.environ
    assert len(msgs) == 1 and f"owned by user id {owner}, not by this user ({owner + 1})" in msgs[0]
    # a symlink is judged by the folder it leads to
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert "owned by user id" in jit_cache.unsafe_folder(link)
    assert jit_cache.unsafe_folder(tmp_path / "missing") is not None


def test_folders_pnn_creates_are_private(monkeypatch, tmp_path):
    import jax

    _clean(monkeypatch)
    cache = tmp_path / "a" / "b" / "xla"
    monkeypatch.setenv("PNN_COMPILE_CACHE", str(cache))
    updates = {}
    monkeypatch.setattr(jax.config, "update", lambda k, v: updates.__setitem__(k, v))
    for key in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"):
        monkeypatch.setenv(key, "")  # so that the values enable_compile_cache sets are undone
        monkeypatch.delenv(key)
    assert enable_compile_cache() == cache
    assert updates["jax_compilation_cache_dir"] == str(cache)
    for d in (tmp_path / "a", tmp_path / "a" / "b", cache):
        assert os.stat(d).st_mode & 0o777 == 0o700, d
