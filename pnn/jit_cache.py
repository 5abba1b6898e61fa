"""A persistent XLA compilation cache for pnn's command line.

A ``pnn`` process spends seconds compiling before it computes anything: the simulators' time
loops, every trainer's update, the per-shape helpers. The programs are the same from one run to
the next (learning rates, seeds and data are arguments, not constants), so ``pnn`` can keep
JAX's persistent compilation cache on disk: a second run, a tuning trial in a new process or a
resumed run then loads them instead of compiling them again. The cache returns the executable
that compiling would have produced, so results are unchanged.

``PNN_COMPILE_CACHE`` decides:

* a folder: the cache lives there;
* ``on``: the default folder, ``$PNN_CACHE/xla/<jaxlib version>-<machine>-<CPU digest>``
  (``PNN_CACHE`` defaults to ``~/.cache/pnn``); keyed by the jaxlib version and the processor so
  that no program compiled by another jaxlib or for another CPU is ever loaded;
* ``off`` (or ``0``, ``no``, ``false``): no cache;
* unset: ``on`` where it is known to work, ``off`` elsewhere (:func:`default_policy`): on Intel
  processors jaxlib's CPU loader rejects every cached program with an error line each
  (jax-ml/jax#38445, open when this was written: the cache would only add noise), and outside
  Linux it is not tested here.

A ``JAX_COMPILATION_CACHE_DIR`` set by the user is left alone (JAX then uses it with JAX's own
thresholds). From Python, call :func:`enable_compile_cache` before the first computation.

The cache holds programs this process will run, so only its user may write there: folders pnn
creates get mode ``0o700``, and a folder that another user owns, or that its group or others may
write to, is refused (:func:`unsafe_folder`): a warning, once, says why and pnn runs without the
cache.
"""

from __future__ import annotations

import hashlib
import os
import platform
import stat
import sys
import warnings
from pathlib import Path

from pnn.data.vowels import default_cache_dir

try:
    from jaxlib import version as _jaxlib_version  # light: loads no XLA runtime
except ImportError:  # pragma: no cover - jaxlib is a dependency of jax
    _jaxlib_version = None

__all__ = ["enable_compile_cache", "resolve_compile_cache", "default_compile_cache_dir",
           "default_policy", "unsafe_folder"]

_OFF = ("0", "off", "no", "false", "none")
_ON = ("1", "on", "yes", "true")


def _cpu() -> tuple[str, str]:
    """The processor's vendor and a digest of its model and feature flags."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("vendor_id", "model name", "flags", "Features") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break  # the first processor describes them all
    except OSError:
        pass
    vendor = fields.get("vendor_id", "")
    text = "|".join([platform.machine(), platform.processor(), vendor,
                     fields.get("model name", ""), fields.get("flags", fields.get("Features", ""))])
    return vendor, hashlib.sha256(text.encode()).hexdigest()[:12]


def default_compile_cache_dir() -> Path:
    """``$PNN_CACHE/xla/jaxlib-<version>-<machine>-<CPU digest>`` (``PNN_CACHE`` defaults to
    ``~/.cache/pnn``)."""
    jl = "unknown" if _jaxlib_version is None else _jaxlib_version.__version__
    return (default_cache_dir() / "xla"
            / f"jaxlib-{jl}-{platform.machine() or 'unknown'}-{_cpu()[1]}")


def default_policy() -> tuple[bool, str]:
    """Whether the cache is on when ``PNN_COMPILE_CACHE`` is unset, and why not when not."""
    if not sys.platform.startswith("linux"):
        return False, f"not tested on {sys.platform}; PNN_COMPILE_CACHE=on turns it on"
    if _cpu()[0] == "GenuineIntel":
        return False, ("on Intel processors jaxlib's CPU loader rejects cached programs "
                       "(jax-ml/jax#38445); PNN_COMPILE_CACHE=on turns it on")
    return True, ""


def resolve_compile_cache() -> tuple[Path | None, str]:
    """The cache folder ``PNN_COMPILE_CACHE`` and the platform call for (None: no cache), and a
    reason when there is none. Changes nothing."""
    own = os.environ.get("JAX_COMPILATION_CACHE_DIR", "").strip()
    if own:
        return Path(own), "JAX_COMPILATION_CACHE_DIR"
    setting = os.environ.get("PNN_COMPILE_CACHE", "").strip()
    if setting.lower() in _OFF:
        return None, "PNN_COMPILE_CACHE=off"
    if setting.lower() in _ON:
        return default_compile_cache_dir(), "PNN_COMPILE_CACHE=on"
    if setting:
        return Path(setting).expanduser(), "PNN_COMPILE_CACHE"
    on, why = default_policy()
    return (default_compile_cache_dir(), "default") if on else (None, why)


#: folders already warned about in this process (each is reported once)
_warned: set[str] = set()


def _warn_once(path: Path, why: str) -> None:
    if str(path) in _warned:
        return
    _warned.add(str(path))
    warnings.warn(f"pnn: compilation cache {path} not usable ({why}); running without it (set "
                  "PNN_COMPILE_CACHE to another folder, or to off)", stacklevel=3)


def _make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents with mode ``0o700`` (``mkdir(parents=True)``
    would give the parents the default mode)."""
    missing = []
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile: checked below like any existing folder


def unsafe_folder(path: Path) -> str | None:
    """Why ``path`` (an existing folder) must not hold this process's compiled programs, or
    ``None``: it is not a directory, another user owns it, or its group or others may write
    to it (anyone who can write there can replace a program this process will load and run)."""
    try:
        st = os.stat(path)  # a symlink is judged by the folder it leads to
    except OSError as e:
        return e.strerror or str(e)
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return (f"owned by user id {st.st_uid}, not by this user ({os.getuid()}): its owner "
                f"could replace the programs pnn runs")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"mode {stat.S_IMODE(st.st_mode):o}: its group or other users may write to it "
                f"and replace the programs pnn runs; chmod go-w {path} to use it")
    return None


def enable_compile_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache for this process and the processes it starts
    (through the environment) where :func:`resolve_compile_cache` says so: every compiled
    program is cached, however quick to compile.

    Missing folders are created with mode ``0o700``; the folder must belong to this user and be
    writable by nobody else (:func:`unsafe_folder`).

    Returns the cache folder, or None when there is none (turned off, not the default on this
    platform, or the folder cannot be created or is not safe: a warning, once per folder, then
    says why and pnn runs without).
    """
    path, why = resolve_compile_cache()
    if path is None or why == "JAX_COMPILATION_CACHE_DIR":
        return path
    try:
        _make_private_dirs(path)
    except OSError as e:
        _warn_once(path, e.strerror or str(e))
        return None
    unsafe = unsafe_folder(path)
    if unsafe is not None:
        _warn_once(path, unsafe)
        return None
    import jax  # here: with the cache off, a command that needs no JAX loads none

    settings = {"jax_compilation_cache_dir": str(path),
                "jax_persistent_cache_min_compile_time_secs": 0.0,
                "jax_persistent_cache_min_entry_size_bytes": 0}
    for key, value in settings.items():
        jax.config.update(key, value)
        os.environ[key.upper()] = str(value)  # child processes (tuning jobs, notebooks)
    return path
