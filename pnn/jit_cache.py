"""A persistent XLA compilation cache for pnn's command line.

A ``pnn`` process spends seconds compiling before it computes anything: the simulators' time
loops, every trainer's update, the per-shape helpers. The programs are the same from one run to
the next (learning rates, seeds and data are arguments, not constants), so ``pnn`` keeps JAX's
persistent compilation cache on disk and a second run, a tuning trial in a new process or a
resumed run loads them instead of compiling them again. The cache returns the executable that
compiling would have produced, so results are unchanged.

Where: ``$PNN_COMPILE_CACHE`` when it names a folder; ``off`` (or ``0``, ``no``, ``false``)
turns the cache off; otherwise ``$PNN_CACHE/xla`` (default ``~/.cache/pnn/xla``). A
``JAX_COMPILATION_CACHE_DIR`` set by the user is left alone (JAX then uses it with JAX's own
thresholds).

From Python, call :func:`enable_compile_cache` before the first computation.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

__all__ = ["enable_compile_cache", "default_compile_cache_dir"]

_OFF = ("0", "off", "no", "false", "none")


def default_compile_cache_dir() -> Path:
    """``$PNN_CACHE/xla``, or ``~/.cache/pnn/xla`` when ``PNN_CACHE`` is unset."""
    return Path(os.environ.get("PNN_CACHE", Path.home() / ".cache" / "pnn")) / "xla"


def enable_compile_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache for this process and the processes it starts
    (through the environment): every compiled program is cached, however quick to compile.

    Returns the cache folder, or None when it is turned off (``PNN_COMPILE_CACHE=off``) or the
    folder cannot be created (a warning says why; pnn then runs without it).
    """
    import jax

    own = os.environ.get("JAX_COMPILATION_CACHE_DIR", "").strip()
    if own:
        return Path(own)
    setting = os.environ.get("PNN_COMPILE_CACHE", "").strip()
    if setting.lower() in _OFF:
        return None
    path = Path(setting).expanduser() if setting else default_compile_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        warnings.warn(f"pnn: compilation cache {path} not usable ({e.strerror or e}); running "
                      "without it (set PNN_COMPILE_CACHE to another folder, or to off)",
                      stacklevel=2)
        return None
    settings = {"jax_compilation_cache_dir": str(path),
                "jax_persistent_cache_min_compile_time_secs": 0.0,
                "jax_persistent_cache_min_entry_size_bytes": 0}
    for key, value in settings.items():
        jax.config.update(key, value)
        os.environ[key.upper()] = str(value)  # child processes (tuning jobs, notebooks)
    return path
