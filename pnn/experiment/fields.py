"""Checks shared by the sections of an experiment file: tables, booleans, fractions,
integers, seeds, methods and perturbations, each refused with the file, section and key."""

from __future__ import annotations

import math
import os

from pnn import registry
from pnn.config import ConfigError, check_seed


#: the data sources of each task (the first is the default)
TASK_SOURCES = {
    "vowels": ("peterson_barney", "hillenbrand"),
    "images": ("digits", "mnist_subset", "mnist", "fashion_mnist"),
}


def _unknown(where: str, section: str | None, keys, valid) -> ConfigError:
    what = f"[{section}]" if section else "top level"
    return ConfigError(f"{where}: {what}: unknown key(s) {', '.join(sorted(keys))}; valid keys: "
                       f"{', '.join(valid)}")


def _check_keys(where: str, section: str | None, values: dict, valid) -> None:
    unknown = set(values) - set(valid)
    if unknown:
        raise _unknown(where, section, unknown, valid)


def _table(where: str, section: str, value) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{section}] must be a table (section) of key = value, got "
                          f"{type(value).__name__} {value!r}")
    return value


def _opt_str(where: str, key: str, value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ConfigError(f"{where} {key} = {value!r}: expected a string (a path), got "
                      f"{type(value).__name__}")


def _bool(where: str, key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} {key} = {value!r}: expected true or false")
    return value


def _fraction(where: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 < value < 1:
        raise ConfigError(f"{where} {key} = {value!r}: expected a number between 0 and 1 "
                          f"(exclusive), e.g. 0.3")
    return float(value)


def _plain(value):
    """Tuples to lists, recursively (what TOML and JSON give back)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _frozen(value):
    """Lists to tuples, recursively (hashable, and equal after a round trip)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _int(where: str, key: str, value, *, low: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or value != int(value) or value < low:
        raise ConfigError(f"{where} {key} = {value!r}: expected an integer >= {low} ({hint})")
    return int(value)


def _perturb(where: str, value) -> tuple:
    # pnn.perturb brings JAX, which reading an experiment (and ``pnn --help``) does without
    from pnn.perturb import parse_perturbations

    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{where}: perturb = {value!r}: expected a perturbation spec string "
                          f"(e.g. \"noise:std=0.02,dead:channels=[3]\") or a list of them")
    items = tuple(v for v in items if v.strip())
    for text in items:
        try:
            parse_perturbations(text)
        except ValueError as e:
            raise ConfigError(f"{where}: perturb = {text!r}: {e}") from None
    return items


def _methods(where: str, value) -> tuple:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(m, str) for m in value):
        raise ConfigError(f"{where}: methods = {value!r}: expected a list of method names, "
                          f"e.g. [\"phyll\", \"pat\"]; valid methods: "
                          f"{', '.join(sorted(registry.TRAINERS))}")
    unknown = [m for m in value if m not in registry.TRAINERS]
    if unknown:
        raise ConfigError(f"{where}: methods: unknown method(s) {', '.join(unknown)}; valid "
                          f"methods: {', '.join(sorted(registry.TRAINERS))}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: methods = {list(value)}: a method is repeated; give each "
                          f"once")
    return tuple(value)


def _seeds(where: str, value) -> tuple:
    items = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"{where}: seeds = {value!r}: expected a non-empty list of integers, "
                          f"e.g. [0, 1, 2]")
    try:
        seeds = tuple(check_seed(s) for s in items)
    except ConfigError as e:
        raise ConfigError(f"{where}: seeds: {e}") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seeds = {list(seeds)}: a seed is repeated; give each once")
    return seeds
