"""Experiments as data: one validated, frozen :class:`Experiment`, read from TOML, a dict or
command-line flags, run by :func:`run_experiment` and embedded whole in every result record, so
that any record replays.

A TOML experiment (every key but ``[method] name`` optional; defaults shown where short)::

    seeds = [0, 1, 2]                     # one run per seed (split, initialisation, disorder)
    perturb = "noise:std=0.02"            # or a list of specs; see pnn.perturb
    methods = ["phyll", "bp"]             # optional: run each method (the one named in
                                          # [method] with its fields, the others with their
                                          # Config defaults); each record holds its own
                                          # single-method experiment

    [task]
    name = "vowels"                       # registry.TASKS
    source = "peterson_barney"            # vowels: peterson_barney, hillenbrand;
                                          # images: digits, mnist_subset, mnist, fashion_mnist
    classes = ["iy", "uw", "aa"]          # vowels: labels to keep, or "pat"
    test_fraction = 0.3
    val_fraction = 0.2
    n_features = 8                        # images: PCA components
    path = "vowdata.dat"                  # local data file
    download = false

    [system]
    name = "acoustic"                     # registry.SYSTEMS
    c_nl = 150.0                          # any constructor argument of the simulator

    [method]
    name = "phyll"                        # registry.TRAINERS
    epochs = 12                           # any field of the trainer's Config
    hidden = [6]

    [run]
    checkpoint_dir = "ck"                 # several seeds: one sub-folder seed-<n> per seed
    checkpoint_every = 20
    resume = false

    [output]
    out = "r.json"                        # one seed: the record; several: a list of records
    save = "model"                        # the trained model (needs pnn.model_io)

    [instrument]                          # train on instruments instead of the simulator
    addresses = ["visa:TCPIP::192.168.0.5::INSTR"]
    profile = "emulator"

Every section and key is checked: an unknown one is refused naming the file (or "command
line"), the section, the key and the valid keys; values are checked by the trainer's Config
(:mod:`pnn.config`), :func:`pnn.config.check_seed` and :func:`pnn.perturb.parse_perturbations`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Callable

from pnn import registry
from pnn.config import ConfigError, check_seed, config_from_dict

__all__ = ["Experiment", "TaskSpec", "SystemSpec", "MethodSpec", "RunSpec", "OutputSpec",
           "InstrumentSpec", "RunProgress", "run_experiment", "parse_override", "system_keys",
           "write_records", "read_records"]

#: the simulator class of each registered system (its constructor's keywords are the system's
#: parameters); a system registered without an entry here is checked against its factory
SIMULATOR_CLASSES = {
    "acoustic": "pnn.sim.acoustic:AcousticLayer",
    "optical": "pnn.sim.optical:OpticalLayer",
    "microwave": "pnn.sim.microwave:MicrowaveLayer",
}

#: the data sources of each task (the first is the default)
TASK_SOURCES = {
    "vowels": ("peterson_barney", "hillenbrand"),
    "images": ("digits", "mnist_subset", "mnist", "fashion_mnist"),
}

#: constructor arguments that the experiment sets itself (shapes, seeds, names)
_RESERVED = ("self", "n_in", "n_out", "seed", "name")


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


# ------------------------------------------------------------------------------ sections
@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """The task and every data option (see :func:`pnn.data.vowels.load_vowels`,
    :func:`pnn.data.images.load_images`)."""

    name: str = "vowels"
    source: str | None = None
    classes: tuple | str | None = None
    test_fraction: float = 0.3
    val_fraction: float = 0.2
    n_features: int | None = None
    path: str | None = None
    download: bool = False

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "TaskSpec":
        d = dict(_table(where, "task", d))
        valid = [f.name for f in dataclasses.fields(cls)]
        _check_keys(where, "task", d, valid)
        w = f"{where}: [task]"
        name = d.get("name", "vowels")
        if name not in registry.TASKS:
            raise ConfigError(f"{w} name = {name!r}: unknown task; valid tasks: "
                              f"{', '.join(sorted(registry.TASKS))}")
        sources = TASK_SOURCES.get(name)
        source = d.get("source")
        if source is None and sources:
            source = sources[0]
        if sources and source not in sources:
            raise ConfigError(f"{w} source = {source!r}: expected one of {', '.join(sources)} "
                              f"for the task {name!r}")
        classes = d.get("classes")
        if classes is not None:
            if name != "vowels":
                raise ConfigError(f"{w} classes = {classes!r}: only the vowels task keeps a "
                                  f"subset of classes; remove the key")
            if isinstance(classes, str):
                if classes != "pat":
                    classes = tuple(c for c in classes.split(",") if c.strip())
            elif isinstance(classes, (list, tuple)) and classes \
                    and all(isinstance(c, str) for c in classes):
                classes = tuple(classes)
            else:
                raise ConfigError(f"{w} classes = {classes!r}: expected a non-empty list of "
                                  f"vowel labels, e.g. [\"iy\", \"uw\", \"aa\"], or \"pat\"")
        n_features = d.get("n_features")
        if n_features is not None:
            if name != "images":
                raise ConfigError(f"{w} n_features = {n_features!r}: only the images task "
                                  f"reduces its features (vowels have 4 formants); remove the "
                                  f"key")
            if isinstance(n_features, bool) or not isinstance(n_features, (int, float)) \
                    or n_features != int(n_features) or n_features < 1:
                raise ConfigError(f"{w} n_features = {n_features!r}: expected a positive "
                                  f"integer, e.g. 8")
            n_features = int(n_features)
        elif name == "images":
            n_features = 8
        return cls(name=name, source=source, classes=classes,
                   test_fraction=_fraction(w, "test_fraction", d.get("test_fraction", 0.3)),
                   val_fraction=_fraction(w, "val_fraction", d.get("val_fraction", 0.2)),
                   n_features=n_features, path=_opt_str(w, "path", d.get("path")),
                   download=_bool(w, "download", d.get("download", False)))

    def header(self, seed: int) -> dict:
        """How to reload this split, in the form a saved model's header keeps it
        (:func:`pnn.model_io.save_model`'s ``task``: the ``pnn train`` data options)."""
        classes = (None if self.classes is None else
                   self.classes if isinstance(self.classes, str) else ",".join(self.classes))
        images = self.name == "images"
        return {"name": self.name, "seed": int(seed), "options": {
            "vowel_source": "peterson_barney" if images else self.source,
            "image_source": self.source if images else "digits",
            "classes": classes, "data_path": self.path, "download": self.download,
            "test_fraction": self.test_fraction, "n_features": self.n_features or 8}}

    def load(self, seed: int):
        """The dataset for ``seed`` (the split depends on it)."""
        from pnn.data.vowels import PAT_VOWELS

        kw: dict[str, Any] = dict(seed=seed, test_fraction=self.test_fraction,
                                  val_fraction=self.val_fraction, path=self.path,
                                  download=self.download)
        if self.source is not None:
            kw["source"] = self.source
        if self.classes is not None:
            kw["classes"] = PAT_VOWELS if self.classes == "pat" else self.classes
        if self.n_features is not None:
            kw["n_features"] = self.n_features
        return registry.load_task(self.name, **kw)


def system_keys(system: str) -> list[str]:
    """The physical parameters of ``system``: its simulator constructor's keyword arguments
    (less the shapes, seed and name the experiment sets); ``["*"]`` if it takes any."""
    ref = SIMULATOR_CLASSES.get(system)
    if ref is not None:
        mod, _, attr = ref.partition(":")
        import importlib

        target = getattr(importlib.import_module(mod), attr).__init__
    else:
        target = registry.SYSTEMS[system]
    params = inspect.signature(target).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return ["*"]
    return [p.name for p in params if p.name not in _RESERVED
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


@dataclasses.dataclass(frozen=True)
class SystemSpec:
    """The physical system and overrides of its simulator's constructor arguments."""

    name: str = "acoustic"
    params: tuple = ()  # ((key, value), ...), sorted by key

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "SystemSpec":
        d = dict(_table(where, "system", d))
        name = d.pop("name", "acoustic")
        if name not in registry.SYSTEMS:
            raise ConfigError(f"{where}: [system] name = {name!r}: unknown system; valid "
                              f"systems: {', '.join(sorted(registry.SYSTEMS))}")
        valid = system_keys(name)
        if valid != ["*"]:
            unknown = set(d) - set(valid)
            if unknown:
                raise ConfigError(
                    f"{where}: [system] unknown key(s) {', '.join(sorted(unknown))} for the "
                    f"{name} simulator; valid keys: name, {', '.join(valid)}")
        for k, v in d.items():
            if not isinstance(v, (bool, int, float, str, list, tuple)):
                raise ConfigError(f"{where}: [system] {k} = {v!r}: expected a number, a "
                                  f"string, true/false or a list")
        return cls(name=name, params=tuple(sorted((k, _frozen(v)) for k, v in d.items())))

    @property
    def kwargs(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """The training method and its validated Config (every field)."""

    name: str
    config: Any

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "MethodSpec":
        d = dict(_table(where, "method", d))
        name = d.pop("name", "phyll")
        if name not in registry.TRAINERS:
            raise ConfigError(f"{where}: [method] name = {name!r}: unknown method; valid "
                              f"methods: {', '.join(sorted(registry.TRAINERS))}")
        trainer = registry.get_trainer(name)
        try:
            config = config_from_dict(trainer.Config, d, where=f"{where}: [method] {name}")
        except ConfigError as e:
            if str(e).startswith(f"{where}:"):
                raise
            raise ConfigError(f"{where}: [method] {e}") from None
        return cls(name=name, config=config)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Checkpoints and resume (see :func:`pnn.train.loop.run`)."""

    checkpoint_dir: str | None = None
    checkpoint_every: int = 20
    resume: bool = False

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "RunSpec":
        d = dict(_table(where, "run", d))
        _check_keys(where, "run", d, [f.name for f in dataclasses.fields(cls)])
        w = f"{where}: [run]"
        every = d.get("checkpoint_every", 20)
        if isinstance(every, bool) or not isinstance(every, (int, float)) \
                or every != int(every) or every < 1:
            raise ConfigError(f"{w} checkpoint_every = {every!r}: expected a positive integer "
                              f"(batches between checkpoints)")
        out = cls(checkpoint_dir=_opt_str(w, "checkpoint_dir", d.get("checkpoint_dir")),
                  checkpoint_every=int(every), resume=_bool(w, "resume", d.get("resume", False)))
        if out.resume and not out.checkpoint_dir:
            raise ConfigError(f"{w} resume = true needs checkpoint_dir (--resume needs "
                              f"--checkpoint-dir (where the checkpoints are))")
        return out


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """Where the records (``out``) and the trained model (``save``) go."""

    out: str | None = None
    save: str | None = None

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "OutputSpec":
        d = dict(_table(where, "output", d))
        _check_keys(where, "output", d, [f.name for f in dataclasses.fields(cls)])
        w = f"{where}: [output]"
        return cls(out=_opt_str(w, "out", d.get("out")), save=_opt_str(w, "save", d.get("save")))


@dataclasses.dataclass(frozen=True)
class InstrumentSpec:
    """Instruments to train on instead of the simulator: one ``kind:address`` per block
    (``visa:RESOURCE`` or ``serial:PORT``) and the instrument profile."""

    addresses: tuple = ()
    profile: str = "emulator"

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "InstrumentSpec":
        d = dict(_table(where, "instrument", d))
        _check_keys(where, "instrument", d, [f.name for f in dataclasses.fields(cls)])
        w = f"{where}: [instrument]"
        addresses = d.get("addresses", [])
        if isinstance(addresses, str) or not isinstance(addresses, (list, tuple)) \
                or not all(isinstance(a, str) for a in addresses):
            raise ConfigError(f"{w} addresses = {addresses!r}: expected a list of "
                              f"'kind:address' strings, one per block, e.g. "
                              f"[\"serial:/dev/ttyACM0\"]")
        profile = d.get("profile", "emulator")
        if not isinstance(profile, str) or not profile:
            raise ConfigError(f"{w} profile = {profile!r}: expected a profile name or a TOML "
                              f"file path")
        return cls(addresses=tuple(addresses), profile=profile)


def _perturb(where: str, value) -> tuple:
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


# ------------------------------------------------------------------------------ experiment
_SECTIONS = {"task": TaskSpec, "system": SystemSpec, "method": MethodSpec, "run": RunSpec,
             "output": OutputSpec, "instrument": InstrumentSpec}
_TOP = ("seeds", "perturb", "methods")
VALID_TOP = (*_TOP, *_SECTIONS)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: what to train, on what, how often, and where the results go.

    Build it with :meth:`from_toml`, :meth:`from_dict` or the constructor; the sections
    validate themselves (:meth:`from_dict`). ``to_dict()`` gives a plain dict (TOML and JSON
    types) with every data option and every config field, and ``from_dict(to_dict())``
    equals the experiment.
    """

    method: MethodSpec
    task: TaskSpec = TaskSpec()
    system: SystemSpec = SystemSpec()
    perturb: tuple = ()
    seeds: tuple = (0,)
    methods: tuple = ()
    run: RunSpec = RunSpec()
    output: OutputSpec = OutputSpec()
    instrument: InstrumentSpec = InstrumentSpec()

    # -- construction
    @classmethod
    def from_dict(cls, d: dict, *, where: str = "experiment") -> "Experiment":
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a table of sections, got {type(d).__name__}")
        unknown = set(d) - set(VALID_TOP)
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) or key(s) "
                              f"{', '.join(sorted(unknown))}; valid: "
                              f"{', '.join(VALID_TOP)}")
        sections = {name: spec.from_dict(d.get(name, {}), where)
                    for name, spec in _SECTIONS.items()}
        return cls(perturb=_perturb(where, d.get("perturb")),
                   seeds=_seeds(where, d.get("seeds", [0])),
                   methods=_methods(where, d.get("methods", [])), **sections)

    @classmethod
    def from_toml(cls, path) -> "Experiment":
        path = Path(path)
        try:
            with open(path, "rb") as f:
                d = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e}); see the format in "
                              f"pnn/experiment.py") from None
        return cls.from_dict(d, where=str(path))

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"seeds": list(self.seeds)}
        if self.perturb:
            d["perturb"] = list(self.perturb)
        if self.methods:
            d["methods"] = list(self.methods)
        d["task"] = {k: _plain(v) for k, v in dataclasses.asdict(self.task).items()
                     if v is not None}
        d["system"] = {"name": self.system.name, **_plain(self.system.kwargs)}
        d["method"] = {"name": self.method.name,
                       **_plain(dataclasses.asdict(self.method.config))}
        d["run"] = {k: v for k, v in dataclasses.asdict(self.run).items() if v is not None}
        out = {k: v for k, v in dataclasses.asdict(self.output).items() if v is not None}
        if out:
            d["output"] = out
        if self.instrument.addresses:
            d["instrument"] = {"addresses": list(self.instrument.addresses),
                               "profile": self.instrument.profile}
        return d

    def to_toml(self) -> str:
        """The experiment as TOML text (what :meth:`from_toml` reads)."""
        d = self.to_dict()
        lines = [f"{k} = {_toml_value(d[k])}" for k in _TOP if k in d]
        for section in _SECTIONS:
            if section in d:
                lines += ["", f"[{section}]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in d[section].items()]
        return "\n".join(lines) + "\n"

    def with_overrides(self, items, *, where: str = "--set") -> "Experiment":
        """A copy with ``section.key=value`` overrides applied (``seeds=[..]`` and
        ``perturb=...`` at the top level; a bare ``key=value`` sets ``method.key``). Values are
        read as TOML or JSON (numbers, true/false, strings in quotes, lists), else kept as a
        string; the result is validated as a whole."""
        d = self.to_dict()
        method_fields_set = set()
        for item in items or []:
            path, value = parse_override(item, where=where)
            section, dot, key = path.partition(".")
            if not dot:
                if path in _TOP:
                    d[path] = value
                    continue
                section, key = "method", path
            if section not in _SECTIONS:
                raise ConfigError(f"{where} {item!r}: unknown section {section!r}; valid "
                                  f"sections: {', '.join(_SECTIONS)} (and the top-level keys "
                                  f"{', '.join(_TOP)})")
            table = d.setdefault(section, {})
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
        ``[self]`` when ``methods`` is empty."""
        if not self.methods:
            return [self]
        return [dataclasses.replace(self, methods=()) if m == self.method.name else
                dataclasses.replace(self, methods=(),
                                    method=MethodSpec(m, registry.get_trainer(m).Config()))
                for m in self.methods]

    # -- helpers
    @property
    def trainer(self):
        return registry.get_trainer(self.method.name)

    def describe(self) -> str:
        return (f"{self.method.name} on "
                f"{'instruments' if self.instrument.addresses else self.system.name} / "
                f"{self.task.name}, seeds {', '.join(map(str, self.seeds))}")


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


# ------------------------------------------------------------------------------ running
class RunProgress:
    """What :func:`run_experiment` reports while it runs (subclass it; every method is
    optional). ``start`` returns ``(on_epoch, on_batch)`` for the run loop."""

    def start(self, exp: Experiment, seed: int, data, config, layers, where: str):
        return None, None

    def end(self, exp: Experiment, seed: int, record: dict, data) -> None:
        pass

    def written(self, path: Path, records: list) -> None:
        pass

    def saved(self, path: Path) -> None:
        pass


def write_records(path, records: list[dict]) -> None:
    """Write one record (a dict) or several (a list) atomically (:mod:`pnn.fileio`: a
    temporary file beside ``path``, synced, then renamed over it)."""
    from pnn.fileio import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = records[0] if len(records) == 1 else records
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def read_records(path) -> list[dict]:
    """The records of a file written by :func:`write_records` (one or a list)."""
    obj = json.loads(Path(path).read_text())
    records = obj if isinstance(obj, list) else [obj]
    if not records or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected a result record (a JSON object) or a list of them")
    return records


def _instrument_layers(exp: Experiment, cfg, data) -> list:
    from types import SimpleNamespace

    from pnn.cli import _instrument_layers as build

    return build(SimpleNamespace(method=exp.method.name, instrument=list(exp.instrument.addresses),
                                 profile=exp.instrument.profile), cfg, data)


def _instrument_record(layer) -> dict:
    return {"name": layer.spec.name, "idn": layer.idn, "profile": str(layer.profile.source),
            "driver": dataclasses.asdict(layer.stats),
            "safety": dataclasses.asdict(layer.safety.counts)}


def _saver(exp: Experiment) -> Callable | None:
    if not exp.output.save:
        return None
    try:
        from pnn.model_io import save_model
    except ImportError:
        raise ValueError(f"[output] save = {exp.output.save!r}: saving a model needs "
                         f"pnn.model_io.save_model, which this installation lacks; remove the "
                         f"key") from None
    return save_model


def run_experiment(exp: Experiment, progress: RunProgress | None = None) -> list[dict]:
    """Run ``exp`` once per method (``methods``, else ``[method]``) and seed; return the
    records.

    Per run: load the task (the split depends on the seed), build the method's physical layers
    (``registry.build_layers`` with the system's parameters; or connect the instruments), wrap
    the perturbations (a trainer that ``needs_differentiable_model`` keeps the unperturbed
    simulators as its model), train through ``Trainer.train`` and add the experiment to the
    record (``record["experiment"]``: the whole experiment, or with ``methods`` the
    single-method experiment that made the record, so every record replays). With ``[output]
    out`` the records are written atomically after every run, so a crash loses no finished
    run.
    """
    progress = progress or RunProgress()
    variants = exp.variants()
    for v in variants:
        _saver(v)  # refuse before any training
    records: list[dict] = []
    for v in variants:
        for seed in v.seeds:
            rec = _run_one(v, seed, progress, several_methods=len(variants) > 1)
            records.append(rec)
            if exp.output.out:
                write_records(exp.output.out, records)
                progress.written(Path(exp.output.out), records)
    return records


def _run_one(exp: Experiment, seed: int, progress: RunProgress, *,
             several_methods: bool) -> dict:
    from pnn.perturb import compose, parse_perturbations, perturbations_of

    trainer = exp.trainer
    cfg = exp.method.config
    save = _saver(exp)
    specs = [s for text in exp.perturb for s in parse_perturbations(text)]
    data = exp.task.load(seed)
    with contextlib.ExitStack() as stack:
        if exp.instrument.addresses:
            layers = _instrument_layers(exp, cfg, data)
            instruments = list(layers)
            for layer in instruments:  # connected now; left safe (outputs off) on any exit
                stack.enter_context(layer)
        else:
            layers = registry.build_layers(exp.system.name, exp.method.name, cfg, data,
                                           seed=seed, **exp.system.kwargs)
            instruments = []
        options: dict[str, Any] = {}
        if specs and layers:
            if trainer.needs_differentiable_model:
                options["model_layers"] = layers  # the model stays ideal, the system not
            layers = [compose(layer, *specs, seed=seed * 1000 + k)
                      for k, layer in enumerate(layers)]
        kwargs: dict[str, Any] = {}
        if exp.run.checkpoint_dir:
            ck = Path(exp.run.checkpoint_dir)
            if several_methods:
                ck = ck / exp.method.name
            if len(exp.seeds) > 1:
                ck = ck / f"seed-{seed}"
            kwargs.update(checkpoint_dir=ck, checkpoint_every=exp.run.checkpoint_every,
                          resume=exp.run.resume)
        where = (", ".join(f"{i.spec.name} ({i.idn})" for i in instruments) if instruments
                 else exp.system.name if trainer.uses_physical_layers else "digital")
        on_epoch, on_batch = progress.start(exp, seed, data, cfg, layers, where)
        rec, model = trainer.train(layers, data, cfg, seed=seed, progress=on_epoch,
                                   on_batch=on_batch, options=options, **kwargs)
        system = "instrument" if instruments else exp.system.name
        rec.update({"system": system if trainer.uses_physical_layers else "digital",
                    "task": exp.task.name, "data": data.describe(),
                    "perturbations": [[w.describe() for w in perturbations_of(layer)]
                                      for layer in layers] if specs else []})
        if instruments:
            rec["instruments"] = [_instrument_record(i) for i in instruments]
        rec["experiment"] = exp.to_dict()
    progress.end(exp, seed, rec, data)
    if save is not None:
        target = Path(exp.output.save)
        tag = (f"-{exp.method.name}" if several_methods else "") + \
              (f"-seed{seed}" if len(exp.seeds) > 1 else "")
        if tag:
            target = target.with_name(f"{target.stem}{tag}{target.suffix}")
        save(model, target, record=rec, system=None if instruments else exp.system.name,
             system_kwargs=exp.system.kwargs, data=data, system_seed=seed,
             task=exp.task.header(seed))
        rec["saved_model"] = str(target)
        progress.saved(target)
    return rec
