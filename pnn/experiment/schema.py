"""A JSON Schema of experiment files, generated from the experiment's sections, the registered
systems (their physical parameters) and trainers (each Config's fields, with the ranges
declared by :func:`pnn.config.param`), so that an editor (VS Code with Even Better TOML,
taplo, JetBrains) checks an experiment file as it is typed.

The schema describes the keys, the types, the choices and the numeric ranges; the loader
(:meth:`pnn.experiment.Experiment.from_dict`) remains the authority, and also checks what a
schema says poorly (a key valid for one kind only, a table that depends on another's value).
``pnn run --schema`` prints it; experiments/experiment.schema.json is the committed copy
(a test checks it is current).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pnn import registry
from pnn.config import MAX_SEED
from pnn.experiment.fields import TASK_SOURCES
from pnn.experiment.sections import (AdaptSpec, CompareSpec, InstrumentSpec, OutputSpec,
                                     RunSpec, TaskSpec)
from pnn.experiment.spec import KINDS

__all__ = ["experiment_schema", "config_schema", "SCHEMA_ID"]

SCHEMA_ID = "https://pnn.invalid/experiment.schema.json"

_SEED = {"type": "integer", "minimum": 0, "maximum": MAX_SEED}
_NUMBER = {"type": "number"}


def _field_type(tp) -> dict:
    """The JSON Schema of a dataclass field's annotation (``int | None`` -> integer, since TOML
    has no null: an optional key is one left out)."""
    if isinstance(tp, str):
        tp = eval(tp, {"Any": Any}, {})  # annotations are strings (from __future__)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", ())) \
            and args:
        kinds = [_field_type(a) for a in args]
        return kinds[0] if len(kinds) == 1 else {"anyOf": kinds}
    return {bool: {"type": "boolean"}, int: {"type": "integer"}, float: _NUMBER,
            str: {"type": "string"}, tuple: {"type": "array"}}.get(tp, {})


def _param_schema(f: dataclasses.Field) -> dict:
    """A Config field declared with :func:`pnn.config.param`: its choices or its range."""
    m = f.metadata.get("pnn")
    if m is None:
        return _field_type(f.type)
    if m["choices"] is not None:
        out: dict[str, Any] = {"enum": [c for c in m["choices"] if c is not None]}
    elif m["widths"]:
        out = {"type": "array", "items": {"type": "integer", "minimum": 1}}
    else:
        base = _field_type(f.type)
        if base.get("type") in ("string", "boolean", "array") or "anyOf" in base:
            out = base
        else:
            out = {"type": "integer" if m["integer"] else "number"}
            for key, word in (("gt", "exclusiveMinimum"), ("ge", "minimum"),
                              ("lt", "exclusiveMaximum"), ("le", "maximum")):
                if m[key] is not None:
                    out[word] = m[key]
    if m["doc"]:
        out["description"] = m["doc"]
    default = f.default
    if default is not dataclasses.MISSING and default is not None:
        out["default"] = list(default) if isinstance(default, tuple) else default
    return out


def config_schema(config_cls) -> dict:
    """The schema of one trainer's Config table: every field, nothing else."""
    return {"type": "object", "additionalProperties": False,
            "properties": {f.name: _param_schema(f) for f in dataclasses.fields(config_cls)}}


def _section(cls, **override) -> dict:
    """A section dataclass: every field with the type of its annotation, ``override`` on top."""
    props = {f.name: _field_type(f.type) for f in dataclasses.fields(cls)}
    props.update(override)
    return {"type": "object", "additionalProperties": False, "properties": props}


def _task() -> dict:
    sources = sorted({s for ss in TASK_SOURCES.values() for s in ss})
    fraction = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
    return _section(
        TaskSpec, name={"enum": sorted(registry.TASKS)}, source={"enum": sources},
        classes={"anyOf": [{"const": "pat"}, {"type": "string"},
                           {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
        n_features={"type": "integer", "minimum": 1}, reduce={"enum": ["pca", "resize"]},
        test_fraction=fraction, val_fraction=fraction)


def _system() -> dict:
    """``name`` (a registered system, ``module:factory`` or ``recorded:PATH``), ``shared``, and
    the physical parameters of the named system (any key for a plug-in)."""
    value = {"type": ["number", "string", "boolean", "array"]}
    names = registry.system_names()
    branches = [{"if": {"not": {"required": ["name"]}},  # the default system
                 "then": {"propertyNames": {"enum": ["shared", *registry.system_keys(
                     "acoustic")]}}}]
    for name in names:
        keys = registry.system_keys(name)
        branches.append({"if": {"properties": {"name": {"const": name}}},
                         "then": {"propertyNames": {"enum": ["name", "shared", *keys]}}})
    return {"type": "object",
            "properties": {"name": {"anyOf": [{"enum": names},
                                              {"type": "string", "pattern": ":"}]},
                           "shared": {"type": "boolean"}},
            "additionalProperties": value, "allOf": branches}


def _method() -> dict:
    """``[method]`` of a train experiment (``name`` and that method's Config) or the
    ``[method.<name>]`` tables of a compare or adapt experiment."""
    single = []
    for name, trainer in sorted(registry.TRAINERS.items()):
        cfg = config_schema(trainer.Config)
        single.append({"if": {"required": ["name"], "properties": {"name": {"const": name}}},
                       "then": {**cfg, "properties": {**cfg["properties"],
                                                      "name": {"const": name}}}})
    per_method = {name: config_schema(t.Config) for name, t in sorted(registry.TRAINERS.items())}
    return {"type": "object", "properties": {"name": {"enum": sorted(registry.TRAINERS)}},
            "allOf": single,
            "anyOf": [{"required": ["name"]},  # train: name and that method's fields
                      {"not": {"required": ["name"]}, **config_schema(  # train, default method
                          registry.get_trainer("phyll").Config)},
                      {"not": {"required": ["name"]}, "properties": per_method,  # compare, adapt
                       "additionalProperties": False}]}


def experiment_schema() -> dict:
    """The JSON Schema (draft 2020-12) of an experiment file read as TOML."""
    methods = {"type": "array", "items": {"enum": sorted(registry.TRAINERS)}, "uniqueItems": True}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "pnn experiment",
        "description": "An experiment file for `pnn run` (see pnn.experiment); generated by "
                       "`pnn run --schema`.",
        "type": "object", "additionalProperties": False,
        "properties": {
            "kind": {"enum": list(KINDS), "default": "train"},
            "seeds": {"type": "array", "items": _SEED, "minItems": 1},
            "methods": methods,
            "devices": {"type": "integer", "minimum": 1},
            "perturb": {"anyOf": [{"type": "string"},
                                  {"type": "array", "items": {"type": ["string", "object"]}}]},
            "task": _task(), "system": _system(), "method": _method(),
            "run": _section(RunSpec, checkpoint_every={"type": "integer", "minimum": 1}),
            "output": _section(OutputSpec),
            "instrument": _section(InstrumentSpec, addresses={
                "type": "array", "items": {"type": "string", "pattern": "^(visa|serial):"}}),
            "compare": _section(
                CompareSpec, split={"enum": ["shared", "per_seed"]}, split_seed=_SEED,
                tune_trials={"type": "integer", "minimum": 0},
                tune_jobs={"type": "integer", "minimum": 1},
                target={"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
            "adapt": _section(
                AdaptSpec, events={"anyOf": [{"type": "string"}, {"type": "object"},
                                             {"type": "array", "minItems": 1,
                                              "items": {"type": ["string", "object"]}}]},
                epochs={"type": "integer", "minimum": 1},
                evals_per_epoch={"type": "integer", "minimum": 1},
                pat_twin={"enum": ["stale", "refit"]}),
        },
    }
