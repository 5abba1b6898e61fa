"""Validated configuration: one mechanism for every trainer's Config.

A Config is a frozen dataclass whose fields are declared with :func:`param`, which records the
valid range (or choices) and, optionally, the tuning search space next to the field::

    @dataclasses.dataclass(frozen=True)
    class Config(Validated):
        lr: float = param(3e-3, gt=0, le=10, search=("log", 1e-4, 3e-2))
        hidden: tuple = param((20, 20), widths=True)

On construction every field is checked (:meth:`Validated.__post_init__`) and a bad value raises
:class:`ConfigError` (a ``ValueError``) naming the class, the field, the value and the valid
range. Integers given as floats with an integral value (``8.0``, as TOML and JSON may give) are
accepted and stored as ``int``; lists given for tuple fields are stored as tuples, so that a
config read back from a record compares equal to the one written.

Search spaces (``search=``) are read by :mod:`pnn.tune`: ``("log", lo, hi)``, ``("float", lo,
hi)``, ``("int", lo, hi)``, ``("choice", [..])`` or, for block widths, ``("widths", depths,
widths)``.

A field added after configs were first saved declares ``legacy=``: the value that reproduces
what a config saved before the field existed did (:func:`config_from_dict` with ``stored=True``
fills it in for a model file or a record; a new experiment gets the default).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["param", "Validated", "ConfigError", "check_seed", "search_space", "config_from_dict",
           "legacy_values", "MAX_SEED"]

#: seeds are used as numpy and JAX PRNG seeds and multiplied by 1000 for per-layer seeds
MAX_SEED = 2**31 // 1000 - 1


class ConfigError(ValueError):
    """A configuration value outside its valid range, of the wrong type, or an unknown key."""


#: ``param(legacy=...)`` not given: a stored config without the field gets the default
_NO_LEGACY = object()


def param(default, *, gt=None, ge=None, lt=None, le=None, choices=None, integer: bool = False,
          widths: bool = False, optional: bool = False, search=None, doc: str = "",
          legacy=_NO_LEGACY):
    """A dataclass field with its validity rule and (optionally) its tuning search space and
    the value a config stored before the field existed stands for (``legacy``)."""
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices, "integer": integer,
            "widths": widths, "optional": optional, "search": search, "doc": doc}
    if legacy is not _NO_LEGACY:
        meta["legacy"] = legacy
    return dataclasses.field(default=default, metadata={"pnn": meta})


def _range_text(m) -> str:
    if m["choices"] is not None:
        return "one of " + ", ".join(repr(c) for c in m["choices"])
    lo = f"> {m['gt']}" if m["gt"] is not None else f">= {m['ge']}" if m["ge"] is not None else ""
    hi = f"< {m['lt']}" if m["lt"] is not None else f"<= {m['le']}" if m["le"] is not None else ""
    kind = "an integer" if m["integer"] else "a finite number"
    return kind + (" " + " and ".join(t for t in (lo, hi) if t) if lo or hi else "")


def _check_number(owner: str, name: str, value, m):
    what = f"{owner}.{name} = {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what}: expected {_range_text(m)}, got {type(value).__name__}")
    if m["integer"]:
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise ConfigError(f"{what}: expected {_range_text(m)}")
            value = int(value)
    else:
        if not math.isfinite(float(value)):
            raise ConfigError(f"{what}: expected {_range_text(m)}")
        value = float(value)
    bad = ((m["gt"] is not None and not value > m["gt"])
           or (m["ge"] is not None and not value >= m["ge"])
           or (m["lt"] is not None and not value < m["lt"])
           or (m["le"] is not None and not value <= m["le"]))
    if bad:
        raise ConfigError(f"{what}: expected {_range_text(m)}")
    return value


def _check_field(owner: str, f: dataclasses.Field, value):
    m = f.metadata.get("pnn")
    if m is None:
        return value
    if value is None and m["optional"]:
        return None
    if m["choices"] is not None:
        if value not in m["choices"]:
            raise ConfigError(f"{owner}.{f.name} = {value!r}: expected {_range_text(m)}")
        return value
    if m["widths"]:
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{owner}.{f.name} = {value!r}: expected a non-empty list of "
                              "positive integer widths, e.g. (20, 20)")
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 1:
                raise ConfigError(f"{owner}.{f.name} = {value!r}: every width must be a "
                                  f"positive integer, got {v!r}")
            out.append(int(v))
        return tuple(out)
    return _check_number(owner, f.name, value, m)


class Validated:
    """Mixin for frozen dataclasses whose fields are declared with :func:`param`."""

    def __post_init__(self):
        owner = type(self).__name__
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            checked = _check_field(owner, f, value)
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        self.check()

    def check(self) -> None:
        """Cross-field rules (override); raise :class:`ConfigError`."""


def check_seed(seed) -> int:
    """A seed as an int in [0, MAX_SEED]; raises :class:`ConfigError` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or seed != int(seed) \
            or not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"seed = {seed!r}: expected an integer in [0, {MAX_SEED}]")
    return int(seed)


def search_space(config_cls) -> dict[str, Any]:
    """``{field: search spec}`` for every field of ``config_cls`` that declares one."""
    out = {}
    for f in dataclasses.fields(config_cls):
        m = f.metadata.get("pnn")
        if m and m["search"] is not None:
            out[f.name] = m["search"]
    return out


def legacy_values(config_cls, values: dict) -> dict:
    """``values`` with every field that declares ``legacy=`` and is missing filled in: how a
    config stored before that field existed is read back."""
    out = dict(values)
    for f in dataclasses.fields(config_cls):
        m = f.metadata.get("pnn") or {}
        if "legacy" in m and f.name not in out:
            out[f.name] = m["legacy"]
    return out


def config_from_dict(config_cls, values: dict, *, where: str = "config", stored: bool = False):
    """Build ``config_cls`` from a dict; an unknown key names ``where``, the key and the valid
    keys. ``stored=True`` (a model file's or a record's config) fills the fields added since
    with their ``legacy`` values (:func:`legacy_values`)."""
    names = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for "
                          f"{config_cls.__name__}; valid keys: {', '.join(names)}")
    if stored:
        values = legacy_values(config_cls, values)
    return config_cls(**values)
