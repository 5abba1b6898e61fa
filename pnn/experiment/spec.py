"""The experiment: its kinds, its sections put together and checked against each other, the
TOML it writes, and ``--set`` overrides."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from pnn import registry
from pnn.config import ConfigError, config_from_dict
from pnn.experiment.events import ev_param
from pnn.experiment.fields import _frozen, _int, _methods, _perturb, _plain, _seeds, _table
from pnn.experiment.sections import (AdaptSpec, CompareSpec, InstrumentSpec, MethodSpec,
                                     OutputSpec, RunSpec, SystemSpec, TaskSpec, _event_text)


#: the physical parameters of a system (kept here for callers of ``pnn.experiment``)
system_keys = registry.system_keys


# ------------------------------------------------------------------------------ experiment
#: what an experiment does: train (each method of ``methods`` or ``[method]``, seed by seed),
#: compare (:func:`pnn.compare.compare`: the methods on the same system and seeds, with the
#: table, statistics and plot) or adapt (:func:`pnn.adapt.run_adaptation`: the physics changes
#: during training)
KINDS = ("train", "compare", "adapt")


_SECTIONS = {"task": TaskSpec, "system": SystemSpec, "method": MethodSpec, "run": RunSpec,
             "output": OutputSpec, "instrument": InstrumentSpec, "compare": CompareSpec,
             "adapt": AdaptSpec}


_TOP = ("seeds", "perturb", "methods", "devices")


#: the top-level keys and sections each kind reads
VALID_BY_KIND = {
    "train": ("seeds", "perturb", "methods", "task", "system", "method", "run", "output",
              "instrument", "devices", "kind"),
    "compare": ("kind", "seeds", "methods", "task", "system", "method", "compare", "output",
                "devices"),
    "adapt": ("kind", "seeds", "methods", "task", "system", "method", "adapt", "output"),
}


VALID_TOP = VALID_BY_KIND["train"]


def _kind(where: str, value) -> str:
    if value not in KINDS:
        raise ConfigError(f"{where}: kind = {value!r}: expected one of "
                          f"{', '.join(repr(k) for k in KINDS)} (default \"train\")")
    return value


def _per_method(where: str, kind: str, value, methods: tuple) -> tuple:
    """``[method.<name>]`` tables of a compare or adapt experiment, validated by each method's
    Config: ``((name, ((key, value), ...)), ...)`` in the order of ``methods``."""
    value = _table(where, "method", value)
    example = f"[method.{methods[0] if methods else 'phyll'}]\nepochs = 12"
    for name, table in value.items():
        if name not in registry.TRAINERS:
            raise ConfigError(
                f"{where}: [method]: {name!r} is not a method; a {kind} experiment sets each "
                f"method's Config in its own table ({example!r}); valid methods: "
                f"{', '.join(sorted(registry.TRAINERS))}")
        if not isinstance(table, dict):
            raise ConfigError(
                f"{where}: [method] {name} = {table!r}: a {kind} experiment has no "
                f"single [method]; set each method's Config in its own table, e.g. "
                f"{example!r}")
        if name not in methods:
            raise ConfigError(f"{where}: [method.{name}]: {name} is not in methods = "
                              f"{list(methods)}; add it there or remove the table")
    out = []
    for name in methods:
        given = dict(value.get(name, {}))
        if kind == "compare":
            trainer = registry.get_trainer(name)
            fields = {f.name for f in dataclasses.fields(trainer.Config)}
            given = {**{k: v for k, v in trainer.compare_defaults.items()
                        if k in fields}, **given}
        if kind == "adapt":
            fixed = sorted({"epochs", "restore_best"} & set(given))
            if fixed:
                raise ConfigError(f"{where}: [method.{name}] {', '.join(fixed)}: an adapt "
                                  f"experiment sets these itself ([adapt] epochs; "
                                  f"restore_best = false: the run ends on the changed "
                                  f"physics); remove them")
        try:
            cfg = config_from_dict(registry.get_trainer(name).Config, given,
                                   where=f"{where}: [method.{name}]")
        except ConfigError as e:
            if str(e).startswith(f"{where}:"):
                raise
            raise ConfigError(f"{where}: [method.{name}] {e}") from None
        # a key set to None where None is the default is no setting (and TOML, with no
        # null, could not write it back)
        defaults = {f.name: f.default for f in dataclasses.fields(type(cfg))}
        given = [k for k in given if getattr(cfg, k) is not None or defaults[k] is not None]
        if given:
            out.append((name, tuple(sorted((k, _frozen(getattr(cfg, k))) for k in given))))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: what to train, on what, how often, and where the results go.

    Build it with :meth:`from_toml`, :meth:`from_dict` or the constructor; the sections
    validate themselves (:meth:`from_dict`). ``to_dict()`` gives a plain dict (TOML and JSON
    types) with every data option and every config field, and ``from_dict(to_dict())``
    equals the experiment.

    ``kind = "train"`` trains ``[method]`` (or each of ``methods``) on every seed;
    ``kind = "compare"`` and ``kind = "adapt"`` run ``methods`` through :mod:`pnn.compare` or
    :mod:`pnn.adapt`, each method's Config set in ``[method.<name>]`` (``per_method``), with
    the ``[compare]`` or ``[adapt]`` section; their output is a folder.
    """

    method: MethodSpec | None = None
    task: TaskSpec = TaskSpec()
    system: SystemSpec = SystemSpec()
    perturb: tuple = ()
    seeds: tuple = (0,)
    methods: tuple = ()
    run: RunSpec = RunSpec()
    output: OutputSpec = OutputSpec()
    instrument: InstrumentSpec = InstrumentSpec()
    kind: str = "train"
    per_method: tuple = ()
    compare: CompareSpec | None = None
    adapt: AdaptSpec | None = None
    devices: int = 1

    # -- construction
    @classmethod
    def from_dict(cls, d: dict, *, where: str = "experiment") -> "Experiment":
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a table of sections, got {type(d).__name__}")
        kind = _kind(where, d.get("kind", "train"))
        valid = VALID_BY_KIND[kind]
        unknown = set(d) - set(valid)
        if unknown:
            elsewhere = {k: [n for n in KINDS if k in VALID_BY_KIND[n]] for k in unknown}
            hints = "".join(f"; {k} belongs to kind = {' or '.join(repr(n) for n in ks)}"
                            for k, ks in sorted(elsewhere.items()) if ks)
            raise ConfigError(f"{where}: unknown section(s) or key(s) "
                              f"{', '.join(sorted(unknown))}; valid: {', '.join(valid)}"
                              + (f" (kind = {kind!r})" if kind != "train" else "") + hints)
        seeds = _seeds(where, d.get("seeds", [0]))
        common = dict(task=TaskSpec.from_dict(d.get("task", {}), where),
                      system=SystemSpec.from_dict(d.get("system", {}), where),
                      output=OutputSpec.from_dict(d.get("output", {}), where), seeds=seeds,
                      devices=_int(f"{where}:", "devices", d.get("devices", 1), low=1,
                                   hint="JAX devices the simulator layers run on, "
                                        "data-parallel; 1: no sharding"))
        if kind == "train":
            sections = {name: _SECTIONS[name].from_dict(d.get(name, {}), where)
                        for name in ("method", "run", "instrument")}
            if common["devices"] > 1 and sections["instrument"].addresses:
                raise ConfigError(f"{where}: devices = {common['devices']} with [instrument]: "
                                  f"an instrument measures its own batches and cannot be "
                                  f"sharded over JAX devices; remove devices (--devices) or "
                                  f"the instruments")
            return cls(perturb=_perturb(where, d.get("perturb")),
                       methods=_methods(where, d.get("methods", [])), **common, **sections)
        if "methods" not in d:
            raise ConfigError(f"{where}: a {kind} experiment needs methods = [...], e.g. "
                              f"methods = [\"phyll\", \"pat\", \"insilico\"]; valid methods: "
                              f"{', '.join(sorted(registry.TRAINERS))}")
        methods = _methods(where, d["methods"])
        if not methods:
            raise ConfigError(f"{where}: methods = []: a {kind} experiment needs at least one "
                              f"method")
        if common["output"].save:
            raise ConfigError(f"{where}: [output] save = {common['output'].save!r}: a {kind} "
                              f"experiment keeps no models (its output is the folder [output] "
                              f"out); remove the key")
        extra: dict[str, Any] = {}
        if kind == "compare":
            extra["compare"] = CompareSpec.from_dict(d.get("compare", {}), where)
            if extra["compare"].tune_trials and common["system"].params:
                raise ConfigError(f"{where}: [compare] tune_trials = "
                                  f"{extra['compare'].tune_trials} with physical parameters "
                                  f"in [system] ({', '.join(common['system'].kwargs)}): "
                                  f"tuning builds the simulator with its default parameters; "
                                  f"remove one or the other")
        else:
            spec = AdaptSpec.from_dict(d.get("adapt", {}), where)
            extra["adapt"] = spec
            digital = [m for m in methods
                       if not registry.get_trainer(m).uses_physical_layers]
            if digital:
                physical = [n for n, t in registry.TRAINERS.items() if t.uses_physical_layers]
                raise ConfigError(f"{where}: methods: {', '.join(digital)} has no physical "
                                  f"layer, and adapt changes the physics during training; "
                                  f"valid methods: {', '.join(physical)}")
            if len(seeds) != 1:
                raise ConfigError(f"{where}: seeds = {list(seeds)}: an adapt experiment runs "
                                  f"one seed (its record is one adapt.json); write one file "
                                  f"per seed, e.g. seeds = [{seeds[0]}]")
            try:
                ev_param(list(spec.events), common["system"].name)
            except ValueError as e:
                raise ConfigError(f"{where}: [adapt] events: {e}") from None
        return cls(kind=kind, methods=methods,
                   per_method=_per_method(where, kind, d.get("method", {}), methods),
                   **common, **extra)

    @classmethod
    def from_toml(cls, path) -> "Experiment":
        path = Path(path)
        try:
            with open(path, "rb") as f:
                d = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e}); see the format in "
                              f"pnn/experiment/__init__.py") from None
        return cls.from_dict(d, where=str(path))

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "seeds": list(self.seeds)}
        if self.perturb:
            d["perturb"] = list(self.perturb)
        if self.methods:
            d["methods"] = list(self.methods)
        if self.devices != 1:
            d["devices"] = self.devices
        d["task"] = {k: _plain(v) for k, v in dataclasses.asdict(self.task).items()
                     if v is not None}
        d["system"] = {"name": self.system.name, **_plain(self.system.kwargs),
                       **({"shared": True} if self.system.shared else {})}
        if self.kind == "train":
            d["method"] = {"name": self.method.name,
                           **_plain(dataclasses.asdict(self.method.config))}
            d["run"] = {k: v for k, v in dataclasses.asdict(self.run).items() if v is not None}
        elif self.per_method:
            d["method"] = {name: {k: _plain(v) for k, v in items}
                           for name, items in self.per_method}
        out = {k: v for k, v in dataclasses.asdict(self.output).items() if v is not None}
        if out:
            d["output"] = out
        if self.instrument.addresses:
            d["instrument"] = {"addresses": list(self.instrument.addresses),
                               "profile": self.instrument.profile}
        if self.compare is not None:
            d["compare"] = {k: v for k, v in dataclasses.asdict(self.compare).items()
                            if v is not None}
        if self.adapt is not None:
            d["adapt"] = {"events": [_event_text(e) for e in self.adapt.events],
                          **{k: v for k, v in dataclasses.asdict(self.adapt).items()
                             if k != "events"}}
        return d

    def to_toml(self) -> str:
        """The experiment as TOML text (what :meth:`from_toml` reads)."""
        d = self.to_dict()
        lines = [f"{k} = {_toml_value(d[k])}" for k in ("kind", *_TOP) if k in d]
        for section in _SECTIONS:
            if section not in d:
                continue
            if section == "method" and self.kind != "train":
                for name, table in d[section].items():
                    lines += ["", f"[method.{name}]"]
                    lines += _toml_lines(f"[method.{name}]", table,
                                         self._unset_method_value(name))
                continue
            lines += ["", f"[{section}]"]
            absent = (self._unset_method_value(self.method.name) if section == "method"
                      else lambda key: None)
            lines += _toml_lines(f"[{section}]", d[section], absent)
        return "\n".join(lines) + "\n"

    def _unset_method_value(self, name: str):
        """What a key missing from ``[method]`` (``[method.<name>]``) reads back as: the
        Config default (after a compare experiment's ``compare_defaults``)."""
        trainer = registry.get_trainer(name)
        defaults = {f.name: f.default for f in dataclasses.fields(trainer.Config)}
        if self.kind == "compare":
            defaults.update(trainer.compare_defaults)
        return lambda key: defaults.get(key)

    def with_overrides(self, items, *, where: str = "--set") -> "Experiment":
        """A copy with ``section.key=value`` overrides applied (``seeds=[..]``, ``methods=[..]``,
        ``perturb=...`` and ``kind=...`` at the top level; a bare ``key=value`` sets
        ``method.key``; a compare or adapt experiment sets a method's field with
        ``method.<name>.key=value``). Values are read as TOML or JSON (numbers, true/false,
        strings in quotes, lists), else kept as a string; the result is validated as a
        whole."""
        d = self.to_dict()
        method_fields_set = set()
        for item in items or []:
            path, value = parse_override(item, where=where)
            section, dot, key = path.partition(".")
            if not dot:
                if path in (*_TOP, "kind"):
                    d[path] = value
                    continue
                if d.get("kind", "train") != "train":
                    raise ConfigError(f"{where} {item!r}: expected section.key=value (a "
                                      f"{d['kind']} experiment sets a method's field with "
                                      f"method.<name>.{path}=...)")
                section, key = "method", path
            if section not in _SECTIONS:
                raise ConfigError(f"{where} {item!r}: unknown section {section!r}; valid "
                                  f"sections: {', '.join(_SECTIONS)} (and the top-level keys "
                                  f"kind, {', '.join(_TOP)})")
            table = d.setdefault(section, {})
            if section == "method" and d.get("kind", "train") != "train":
                name, dot, key = key.partition(".")
                if not dot:
                    raise ConfigError(f"{where} {item!r}: a {d['kind']} experiment sets a "
                                      f"method's field with method.<name>.<key>=value, e.g. "
                                      f"method.bp.epochs=5")
                table.setdefault(name, {})[key] = value
                continue
            if section == "method" and key == "name" and value != table.get("name"):
                # another method: its own Config defaults, plus the fields set here
                table = d["method"] = {k: v for k, v in table.items() if k in method_fields_set}
            if section == "method":
                method_fields_set.add(key)
            table[key] = value
        return Experiment.from_dict(d, where=where)

    def variants(self) -> list["Experiment"]:
        """One single-method experiment per entry of ``methods`` (the method named in
        ``[method]`` keeps its fields; the others run with their Config defaults), or
        ``[self]`` when ``methods`` is empty (or the experiment is not ``kind = "train"``)."""
        if not self.methods or self.kind != "train":
            return [self]
        return [dataclasses.replace(self, methods=()) if m == self.method.name else
                dataclasses.replace(self, methods=(),
                                    method=MethodSpec(m, registry.get_trainer(m).Config()))
                for m in self.methods]

    # -- helpers
    def settings(self, method: str) -> dict:
        """The Config values a compare or adapt experiment sets for ``method``."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for name, items in self.per_method if name == method for k, v in items}

    @property
    def trainer(self):
        if self.method is None:
            raise ValueError(f"a {self.kind} experiment has no single method; its methods: "
                             f"{', '.join(self.methods)}")
        return registry.get_trainer(self.method.name)

    def record_path(self) -> Path | None:
        """Where the run writes the record that embeds this experiment (``None``: nowhere)."""
        if not self.output.out:
            return None
        out = Path(self.output.out)
        return {"train": out, "compare": out / "results.json",
                "adapt": out / "adapt.json"}[self.kind]

    def describe(self) -> str:
        seeds = f"seeds {', '.join(map(str, self.seeds))}"
        if self.kind == "compare":
            return (f"compare {', '.join(self.methods)} on {self.system.name} / "
                    f"{self.task.name}, {seeds}")
        if self.kind == "adapt":
            return (f"adapt {', '.join(self.methods)} on {self.system.name} / "
                    f"{self.task.name}, {len(self.adapt.events)} event(s), {seeds}")
        return (f"{self.method.name} on "
                f"{'instruments' if self.instrument.addresses else self.system.name} / "
                f"{self.task.name}, {seeds}")


def _toml_lines(header: str, table: dict, absent) -> list[str]:
    """``key = value`` lines of one table. TOML has no null: a key whose value is ``None``
    is left out (a comment says so), which reads back as ``absent(key)``; a ``None`` that
    would read back as something else cannot be written and is refused."""
    lines = []
    for k, v in table.items():
        if v is None:
            default = absent(k)
            if default is not None:
                raise ConfigError(f"{header} {k} = None cannot be written as TOML: TOML has "
                                  f"no null, and a missing {k} reads back as its default "
                                  f"{default!r}; set {k} to a value")
            lines.append(f"# {k}: not set (TOML has no null; a missing key is None)")
            continue
        lines.append(f"{k} = {_toml_value(v)}")
    return lines


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else
                                                 ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} ({type(v).__name__}) as a TOML value")


def parse_override(item: str, *, where: str = "--set") -> tuple[str, Any]:
    """``"section.key=value"`` -> ``("section.key", value)``; the value read as a TOML value
    (``0.01``, ``true``, ``[20, 20]``, ``"text"``), then as JSON (``null``), else the text."""
    if not isinstance(item, str):
        raise ConfigError(f"{where} {item!r}: expected a string section.key=value")
    path, sep, text = item.partition("=")
    path = path.strip()
    if not sep or not path:
        raise ConfigError(f"{where} {item!r}: expected section.key=value, e.g. "
                          f"--set method.lr=0.01 or --set system.c_nl=200")
    text = text.strip()
    try:
        return path, tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return path, json.loads(text)
    except json.JSONDecodeError:
        return path, text
