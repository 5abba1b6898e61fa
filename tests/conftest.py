import atexit
import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

# `pnn` processes the tests start keep their compiled programs in a folder of this test run,
# not in the user's ~/.cache/pnn/xla (pnn.jit_cache); one folder per test process
_cache = None
if not os.environ.get("PNN_COMPILE_CACHE"):
    _cache = tempfile.mkdtemp(prefix="pnn-test-xla-")
    os.environ["PNN_COMPILE_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

# The test processes themselves (both xdist workers) share one persistent compilation cache for
# this run, the same folder as the `pnn` processes they start: the suite is mostly compilation
# of the same few simulators, which the second worker, later tests and child processes then
# load instead of compiling again (XLA returns the same executable). Fresh for every run (no
# state carried between runs); off where pnn.jit_cache says jaxlib rejects cached programs.
if not os.environ.get("PNN_TEST_JAX_CACHE"):
    os.environ["PNN_TEST_JAX_CACHE"] = _cache or tempfile.mkdtemp(prefix="pnn-test-jax-")
    if _cache is None:
        atexit.register(shutil.rmtree, os.environ["PNN_TEST_JAX_CACHE"], ignore_errors=True)
from pnn.jit_cache import default_policy  # noqa: E402

if default_policy()[0]:
    for _key, _value in (("jax_compilation_cache_dir", os.environ["PNN_TEST_JAX_CACHE"]),
                         ("jax_persistent_cache_min_compile_time_secs", 0.0),
                         ("jax_persistent_cache_min_entry_size_bytes", 0)):
        jax.config.update(_key, _value)


@pytest.fixture
def x64():
    """Run a physics test in float64, scoped to the test."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def jax_cache_dir(tmp_path_factory):
    """One persistent JAX compilation cache for the Python processes the tests start.

    Tests that run ``pnn`` in fresh interpreters (kill and resume, notebook kernels, forced
    device counts) would otherwise compile the same programs in every process; XLA's cache
    returns the same executable, so results are unchanged (tests/test_durable.py compares
    parameter hashes across such processes)."""
    shared = os.environ["PNN_TEST_JAX_CACHE"]
    return Path(shared) if default_policy()[0] else tmp_path_factory.mktemp("jax-cache")


@pytest.fixture
def child_jax_cache(jax_cache_dir, monkeypatch):
    """Child processes started by this test share :func:`jax_cache_dir` (every entry cached,
    however quick its compilation). This process's jax read its configuration at import, so
    it is unaffected."""
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(jax_cache_dir))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    return jax_cache_dir


@pytest.fixture
def patient_profile_file(tmp_path):
    """The shipped emulator profile with timeouts that no healthy exchange reaches, however
    loaded the machine, as a TOML file (for ``--profile``)."""
    from pnn.drivers.profile import PROFILE_DIR, load_profile

    long = {"timeout_ms": "120000", "open_timeout_ms": "120000", "measure_timeout_ms": "600000",
            "timeout_s": "120.0", "measure_timeout_s": "600.0"}
    lines = []
    for line in (PROFILE_DIR / "emulator.toml").read_text().splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key} = {long[key]}" if "=" in line and key in long else line)
    f = tmp_path / "patient.toml"
    f.write_text("\n".join(lines) + "\n")
    p = load_profile(f)
    assert (p.visa.timeout_ms, p.serial.timeout_s) == (120_000, 120.0)
    return f
