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
    devices = 1                           # simulator layers data-parallel over the first N
                                          # JAX devices (pnn.sharded; train and compare)

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

``kind = "compare"`` (run by :func:`pnn.compare.compare`, the report in the folder ``[output]
out``) and ``kind = "adapt"`` (:func:`pnn.adapt.run_adaptation`, one seed) take ``methods``, one
``[method.<name>]`` table of Config fields per method, and a ``[compare]`` (``split = "shared"``
with ``split_seed``, or ``"per_seed"``; ``tune_trials``, ``tune_storage``, ``tune_jobs``,
``target``) or ``[adapt]`` section (``events`` as ``pnn adapt --event`` strings or tables,
``epochs``, ``evals_per_epoch``, ``pat_twin``, ``tolerance``); see experiments/*.toml.

Every section and key is checked: an unknown one is refused naming the file (or "command
line"), the section, the key and the valid keys; values are checked by the trainer's Config
(:mod:`pnn.config`), :func:`pnn.config.check_seed` and :func:`pnn.perturb.parse_perturbations`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Callable

from pnn import registry
from pnn.config import ConfigError, check_seed, config_from_dict

__all__ = ["Experiment", "TaskSpec", "SystemSpec", "MethodSpec", "RunSpec", "OutputSpec",
           "InstrumentSpec", "CompareSpec", "AdaptSpec", "KINDS", "RunProgress",
           "run_experiment", "check_outputs", "check_devices", "record_status",
           "parse_override", "system_keys", "write_records", "read_records"]

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
    #: images: ``"pca"`` (the default, None) or ``"resize"`` (a k x k grid of pixels)
    reduce: str | None = None

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
        reduce = d.get("reduce")
        if reduce is not None:
            if name != "images":
                raise ConfigError(f"{w} reduce = {reduce!r}: only the images task reduces "
                                  f"its pixels; remove the key")
            if reduce not in ("pca", "resize"):
                raise ConfigError(f"{w} reduce = {reduce!r}: expected \"pca\" (principal "
                                  f"axes) or \"resize\" (a k x k grid of pixels)")
            if reduce == "pca":
                reduce = None
        return cls(name=name, source=source, classes=classes, reduce=reduce,
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
            "test_fraction": self.test_fraction, "n_features": self.n_features or 8,
            **({"image_reduce": self.reduce} if self.reduce else {})}}

    def cli_options(self) -> dict:
        """The data options as ``pnn compare`` / ``pnn tune`` name them in a study's settings
        (:func:`pnn.tune.tune`'s ``task_options``), so a study resumes from either."""
        images = self.name == "images"
        return {"task": self.name, "vowel_source": "peterson_barney" if images else self.source,
                "classes": (None if self.classes is None else self.classes
                            if isinstance(self.classes, str) else ",".join(self.classes)),
                "test_fraction": self.test_fraction,
                "image_source": self.source if images else "digits",
                "n_features": self.n_features or 8,
                **({"image_reduce": self.reduce} if self.reduce else {})}

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
        if self.reduce is not None:
            kw["reduce"] = self.reduce
        return registry.load_task(self.name, **kw)


#: the physical parameters of a system (kept here for callers of ``pnn.experiment``)
system_keys = registry.system_keys


@dataclasses.dataclass(frozen=True)
class SystemSpec:
    """The physical system and overrides of its simulator's constructor arguments.

    ``name``: a registered system, an installed package's ``pnn.systems`` entry point,
    ``package.module:factory`` or ``recorded:PATH`` (see :func:`pnn.registry.resolve_system`);
    the keys of a plug-in system are passed to its factory, which validates them.
    ``shared``: one layer of the system serves every block (see :class:`pnn.layers.Shared`)."""

    name: str = "acoustic"
    params: tuple = ()  # ((key, value), ...), sorted by key
    shared: bool = False

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "SystemSpec":
        d = dict(_table(where, "system", d))
        name = d.pop("name", "acoustic")
        shared = _bool(f"{where}: [system]", "shared", d.pop("shared", False))
        if not isinstance(name, str) or (":" not in name
                                         and name not in registry.system_names()):
            raise ConfigError(f"{where}: [system] name = {name!r}: unknown system; valid "
                              f"systems: {', '.join(registry.system_names())}; or "
                              f"'package.module:factory' or 'recorded:PATH'")
        try:
            registry.resolve_system(name)
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(f"{where}: [system] name = {name!r}: {e}") from None
        valid = system_keys(name)
        if valid != ["*"]:
            unknown = set(d) - set(valid)
            if unknown:
                raise ConfigError(
                    f"{where}: [system] unknown key(s) {', '.join(sorted(unknown))} for the "
                    f"{name} simulator; valid keys: name, shared, {', '.join(valid)}")
        for k, v in d.items():
            if not isinstance(v, (bool, int, float, str, list, tuple)):
                raise ConfigError(f"{where}: [system] {k} = {v!r}: expected a number, a "
                                  f"string, true/false or a list")
        return cls(name=name, params=tuple(sorted((k, _frozen(v)) for k, v in d.items())),
                   shared=shared)

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


def _int(where: str, key: str, value, *, low: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or value != int(value) or value < low:
        raise ConfigError(f"{where} {key} = {value!r}: expected an integer >= {low} ({hint})")
    return int(value)


@dataclasses.dataclass(frozen=True)
class CompareSpec:
    """How ``kind = "compare"`` runs its methods (see :func:`pnn.compare.compare`).

    ``split``: ``"shared"`` (one train/validation/test split, made with ``split_seed``, for
    every seed) or ``"per_seed"`` (each seed its own split, as tuning requires);
    ``tune_trials``: 0, or Optuna trials per method on the first seed's validation split
    (``tune_storage``: journal path or URL, default ``<out>/tune.journal``; ``tune_jobs``:
    parallel trials); ``target``: the validation accuracy the table reports costs to (default:
    95 % of the best method's mean)."""

    split: str = "shared"
    split_seed: int | None = 0
    tune_trials: int = 0
    tune_storage: str | None = None
    tune_jobs: int = 1
    target: float | None = None

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "CompareSpec":
        d = dict(_table(where, "compare", d))
        _check_keys(where, "compare", d, [f.name for f in dataclasses.fields(cls)])
        w = f"{where}: [compare]"
        trials = _int(w, "tune_trials", d.get("tune_trials", 0), low=0,
                      hint="Optuna trials per method; 0: no tuning")
        split = d.get("split", "per_seed" if trials else "shared")
        if split not in ("shared", "per_seed"):
            raise ConfigError(f"{w} split = {split!r}: expected \"shared\" (one split for "
                              f"every seed, made with split_seed) or \"per_seed\" (each seed "
                              f"its own split)")
        if trials and split != "per_seed":
            raise ConfigError(f"{w} split = {split!r} with tune_trials = {trials}: tuning "
                              f"runs each seed on its own split; set split = \"per_seed\" or "
                              f"remove the key")
        if split == "per_seed":
            if d.get("split_seed") is not None:
                raise ConfigError(f"{w} split_seed = {d['split_seed']!r} with split = "
                                  f"\"per_seed\": each seed makes its own split; remove "
                                  f"split_seed or set split = \"shared\"")
            split_seed = None
        else:
            try:
                split_seed = check_seed(d.get("split_seed", 0))
            except ConfigError as e:
                raise ConfigError(f"{w} split_{e}") from None
        target = d.get("target")
        if target is not None and (isinstance(target, bool)
                                   or not isinstance(target, (int, float))
                                   or not 0 < target <= 1):
            raise ConfigError(f"{w} target = {target!r}: expected a validation accuracy in "
                              f"(0, 1], e.g. 0.9, or no key (95 % of the best method's mean)")
        storage = _opt_str(w, "tune_storage", d.get("tune_storage"))
        if storage and not trials:
            raise ConfigError(f"{w} tune_storage = {storage!r} without tune_trials: set "
                              f"tune_trials = N (trials per method) or remove the key")
        return cls(split=split, split_seed=split_seed, tune_trials=trials,
                   tune_storage=storage,
                   tune_jobs=_int(w, "tune_jobs", d.get("tune_jobs", 1), low=1,
                                  hint="parallel tuning trials"),
                   target=None if target is None else float(target))


def _event_text(ev) -> str:
    """An event as the ``--event`` text that :func:`pnn.adapt.parse_event` reads back."""
    from pnn.adapt import Event

    parts = [f"epoch={ev.epoch!r}"]
    for f in dataclasses.fields(Event):
        if f.name not in ("kind", "epoch") and getattr(ev, f.name) != f.default:
            parts.append(f"{f.name}={getattr(ev, f.name)}")
    return f"{ev.kind}:{','.join(parts)}"


def _events(where: str, value) -> tuple:
    from pnn.adapt import Event, parse_event

    names = [f.name for f in dataclasses.fields(Event)]
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{where} events = {value!r}: expected a non-empty list of events, "
                          f"each a string like \"jump:epoch=10.5,factor=1.05\" or a table "
                          f"like {{kind = \"drift\", epoch = 15.5, rate = 0.005}}")
    out = []
    for i, item in enumerate(value):
        try:
            if isinstance(item, str):
                ev = parse_event(item)
            elif isinstance(item, dict):
                unknown = sorted(set(item) - set(names))
                if unknown:
                    raise ValueError(f"unknown key(s) {', '.join(unknown)}; valid keys: "
                                     f"{', '.join(names)}")
                bad = [k for k, v in item.items() if isinstance(v, bool)
                       or not isinstance(v, (int, float, str))]
                if bad:
                    raise ValueError(f"{', '.join(bad)}: expected a number (param: a name)")
                # the same checks as the text form
                ev = parse_event(f"{item.get('kind')}:" + ",".join(
                    f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in item.items() if k != "kind"))
            else:
                raise ValueError(f"expected a string or a table, got {type(item).__name__}")
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where} events[{i}] = {item!r}: {e}") from None
        out.append(ev)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class AdaptSpec:
    """What ``kind = "adapt"`` changes and measures (see :func:`pnn.adapt.run_adaptation`):
    the ``events`` (``--event`` strings or tables), the training ``epochs``, test-accuracy
    measurements per epoch, PAT's twin after an event (``"stale"`` or ``"refit"``) and the
    recovery tolerance (accuracy points, as a fraction)."""

    events: tuple = ()
    epochs: int = 16
    evals_per_epoch: int = 3
    pat_twin: str = "stale"
    tolerance: float = 0.02

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "AdaptSpec":
        d = dict(_table(where, "adapt", d))
        _check_keys(where, "adapt", d, [f.name for f in dataclasses.fields(cls)])
        w = f"{where}: [adapt]"
        if "events" not in d:
            raise ConfigError(f"{w}: no events; give events = [\"jump:epoch=10.5,"
                              f"factor=1.05\", ...] (the same text as pnn adapt --event)")
        events = _events(w, d["events"])
        epochs = _int(w, "epochs", d.get("epochs", 16), low=1, hint="training epochs")
        last = max(e.epoch for e in events)
        if last >= epochs:
            raise ConfigError(f"{w} epochs = {epochs}: the last event is at epoch {last:g}; "
                              f"give more epochs than that, so that recovery is measured")
        twin = d.get("pat_twin", "stale")
        if twin not in ("stale", "refit"):
            raise ConfigError(f"{w} pat_twin = {twin!r}: expected \"stale\" (PAT keeps its "
                              f"twin) or \"refit\" (refits it after each event)")
        tol = d.get("tolerance", 0.02)
        return cls(events=events, epochs=epochs,
                   evals_per_epoch=_int(w, "evals_per_epoch", d.get("evals_per_epoch", 3),
                                        low=1, hint="test measurements per epoch"),
                   pat_twin=twin, tolerance=_fraction(w, "tolerance", tol))


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
            from pnn.adapt import ev_param

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
                              f"pnn/experiment.py") from None
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
                    lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
                continue
            lines += ["", f"[{section}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in d[section].items()]
        return "\n".join(lines) + "\n"

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

    # compare and adapt experiments
    def item(self, exp: Experiment, i: int, n: int, label: str) -> None:
        """Run ``i`` of ``n`` starts (a method and seed)."""

    def epochs(self, exp: Experiment, label: str, total: int):
        """An object with ``update(history_entry)`` and ``close()`` (a bar over ``total``
        epochs), or ``None``."""
        return None

    def item_done(self, exp: Experiment, record: dict) -> None:
        pass

    def note(self, exp: Experiment, text: str) -> None:
        """A line worth showing (a method tuned, the files written)."""

    def report(self, exp: Experiment, text: str) -> None:
        """The finished experiment's table (Markdown)."""


def _hook(progress, name: str):
    """``progress.name``, or a no-op when the progress object does not define it."""
    return getattr(progress, name, None) or (lambda *a, **k: None)


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
    from pnn.drivers.assemble import instrument_layers

    method = exp.method.name
    trainer = registry.check_runs_on_instruments(method)
    return instrument_layers(exp.instrument.addresses,
                             trainer.shapes(cfg, data.n_features, data.n_classes),
                             profile=exp.instrument.profile,
                             what=f"{method} with hidden={tuple(cfg.hidden)}")


def _instrument_record(layer) -> dict:
    return {"name": layer.spec.name, "idn": layer.idn, "profile": str(layer.profile.source),
            # the profile's full contents: the file may change or vanish after the run
            "profile_contents": layer.profile_dict(),
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


#: the files a compare / adapt experiment writes into its ``[output] out`` folder
OUTPUT_FILES = {"compare": ("results.json", "results.partial.json", "stats.json", "table.md",
                            "cost_vs_accuracy.png", "cost_vs_accuracy.svg", "tuned_configs.json",
                            "tune.journal"),
                "adapt": ("adapt.json", "adapt.md", "adapt.png", "adapt.svg")}


def _save_path(exp: Experiment, seed: int, several_methods: bool) -> Path:
    """Where ``[output] save`` puts the model of ``seed`` (tagged by method and seed when the
    experiment makes several)."""
    target = Path(exp.output.save)
    tag = (f"-{exp.method.name}" if several_methods else "") + \
          (f"-seed{seed}" if len(exp.seeds) > 1 else "")
    return target.with_name(f"{target.stem}{tag}{target.suffix}") if tag else target


def check_outputs(exp: Experiment) -> None:
    """Refuse, before anything runs, an experiment whose outputs cannot be written: ``[output]
    out`` (a record file for ``kind = "train"``, a folder for compare and adapt), every model
    file of ``[output] save`` and ``[run] checkpoint_dir`` (:func:`pnn.fileio.check_writable`).

    Raises:
        pnn.fileio.OutputPathError: (a ``ValueError``) naming the key, the path and the fix.
    """
    from pnn.fileio import check_writable

    if exp.output.out:
        if exp.kind == "train":
            check_writable(exp.output.out, what="[output] out (--out)")
        else:
            check_writable(exp.output.out, folder=True, what="[output] out (--out)",
                           files=OUTPUT_FILES[exp.kind])
    if exp.kind == "train":
        variants = exp.variants()
        for v in variants:
            if v.output.save:
                for seed in v.seeds:
                    check_writable(_save_path(v, seed, len(variants) > 1),
                                   what="[output] save (--save)")
        if exp.run.checkpoint_dir:
            check_writable(exp.run.checkpoint_dir, folder=True,
                           what="[run] checkpoint_dir (--checkpoint-dir)")


def check_devices(exp: Experiment) -> None:
    """Refuse, before anything runs, ``devices = N`` when JAX sees fewer than N devices
    (:func:`pnn.sharded.check_devices`: the message says how to get more on a CPU)."""
    if exp.devices != 1:
        from pnn.sharded import check_devices as check

        check(exp.devices, what="devices")


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
    check_outputs(exp)  # before any data is loaded or anything trains
    check_devices(exp)
    if exp.kind == "compare":
        return _run_compare(exp, progress)
    if exp.kind == "adapt":
        return [_run_adapt(exp, progress)]
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
            from pnn.layers import devices

            instruments = devices(layers)  # one entry per device, however many blocks use it
            for layer in instruments:  # connected now; left safe (outputs off) on any exit
                stack.enter_context(layer)
        else:
            layers = registry.build_layers(exp.system.name, exp.method.name, cfg, data,
                                           seed=seed, shared=exp.system.shared,
                                           devices=exp.devices, **exp.system.kwargs)
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
                    # the JAX devices the simulator layers ran on (pnn.sharded)
                    "devices": exp.devices if layers and not instruments else 1,
                    "perturbations": [[w.describe() for w in perturbations_of(layer)]
                                      for layer in layers] if specs else []})
        if instruments:
            rec["instruments"] = [_instrument_record(i) for i in instruments]
        _embed(rec, exp)
    progress.end(exp, seed, rec, data)
    if save is not None:
        target = _save_path(exp, seed, several_methods)
        save(model, target, record=rec, system=None if instruments else exp.system.name,
             system_kwargs=exp.system.kwargs, data=data, system_seed=seed,
             task=exp.task.header(seed))
        rec["saved_model"] = str(target)
        progress.saved(target)
    return rec


def _embed(record: dict, exp: Experiment) -> dict:
    """Put the experiment (and the pnn version that ran it) into ``record``, so it replays."""
    from pnn import __version__

    record["experiment"] = exp.to_dict()
    record["pnn_version"] = __version__
    return record


def _seeds_text(seeds) -> str:
    seeds = list(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _run_compare(exp: Experiment, progress) -> list[dict]:
    """``kind = "compare"``: :func:`pnn.compare.compare` over ``methods`` x ``seeds`` with each
    method's ``[method.<name>]`` settings; with ``[output] out`` (a folder) the report of
    :func:`pnn.compare.write_report` (results.json holds every record, each embedding the
    experiment), tuned_configs.json when tuned, results.partial.json while it runs."""
    from pnn.compare import _write_json, compare, resumable, write_report

    spec = exp.compare
    seeds = list(exp.seeds)
    out = Path(exp.output.out) if exp.output.out else None
    cache: dict[int, Any] = {}

    def split(seed):
        if seed not in cache:
            cache[seed] = exp.task.load(seed)
        return cache[seed]

    if spec.split == "per_seed":
        data, first, splits = split, split(seeds[0]), "a split per seed"
    else:
        data = first = split(spec.split_seed)
        splits = f"split seed {spec.split_seed}"
    trials = spec.tune_trials
    title = (f"{exp.system.name} / {first.name}: {len(first.y_train)} train, "
             f"{len(first.y_val)} val, {first.n_test} test; seeds {_seeds_text(seeds)} "
             f"({splits})" + (f"; tuned, {trials} trials a method" if trials else ""))
    _hook(progress, "note")(exp, f"{', '.join(exp.methods)} on {exp.system.name}, "
                                 f"{first.name}, {len(seeds)} seed(s), {splits}"
                                 + (f", {trials} tuning trials a method" if trials else "")
                                 + (f"; results in {out}" if out else ""))
    tuned_all: dict[str, dict] = {}

    def on_tuned(method, res):
        tuned_all[method] = res
        if out:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "tuned_configs.json", tuned_all)
        _hook(progress, "note")(exp, f"{method}: tuned, best validation "
                                     f"{res['best_val_accuracy']:.1%} ({res['n_complete']} "
                                     f"trials): {res['best_params']}")

    def checkpoint(records):
        if out:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "results.partial.json", records)

    def on_done(rec):
        _embed(rec, exp)
        _hook(progress, "item_done")(exp, rec)

    tune_options = {"out": out or "tune_results", "jobs": spec.tune_jobs,
                    "storage": spec.tune_storage, "task_options": exp.task.cli_options()}
    done = resumable(out / "results.partial.json") if out else []
    if done:
        _hook(progress, "note")(exp, f"{out / 'results.partial.json'} holds {len(done)} run(s) "
                                     f"of an interrupted comparison: each run with the same "
                                     f"settings is reused (delete the file to start afresh)")
    records = compare(
        exp.system.name, data, list(exp.methods), seeds,
        overrides={m: exp.settings(m) for m in exp.methods},
        on_start=lambda m, seed, i, n: _hook(progress, "item")(exp, i, n, f"{m}, seed {seed}"),
        on_done=on_done,
        progress_factory=lambda m, seed, cfg: _hook(progress, "epochs")(
            exp, f"{m}/seed {seed}", cfg.epochs) or _NoBar(),
        checkpoint=checkpoint, tune_trials=trials, tune_options=tune_options,
        on_tuned=on_tuned, system_kwargs=exp.system.kwargs, devices=exp.devices, done=done)
    if out:
        report = write_report(records, out, title, target=spec.target)
        (out / "results.partial.json").unlink(missing_ok=True)
        _hook(progress, "report")(exp, report["table"])
        written = ["results.json", "stats.json", "table.md", "cost_vs_accuracy.png"]
        if tuned_all:
            written.append("tuned_configs.json")
        _hook(progress, "note")(exp, "wrote " + ", ".join(str(out / w) for w in written))
    return records


class _NoBar:
    def update(self, rec):
        pass

    def close(self):
        pass


def _run_adapt(exp: Experiment, progress) -> dict:
    """``kind = "adapt"``: :func:`pnn.adapt.run_adaptation` with the ``[adapt]`` events on the
    one seed; the record embeds the experiment; with ``[output] out`` (a folder) adapt.json,
    adapt.md and adapt.png."""
    from pnn.adapt import run_adaptation, table, write_record

    spec = exp.adapt
    seed = exp.seeds[0]
    data = exp.task.load(seed)
    n = len(exp.methods)
    step = iter(range(1, n + 1))

    def bar(method, cfg):
        _hook(progress, "item")(exp, next(step), n, f"{method}, seed {seed}")
        return _hook(progress, "epochs")(exp, f"{method}/{exp.system.name}", cfg.epochs) \
            or _NoBar()

    record = run_adaptation(exp.system.name, data, list(exp.methods), list(spec.events),
                            epochs=spec.epochs, seed=seed, twin=spec.pat_twin,
                            progress_factory=bar, tolerance=spec.tolerance,
                            evals_per_epoch=spec.evals_per_epoch,
                            overrides={m: exp.settings(m) for m in exp.methods},
                            system_kwargs=exp.system.kwargs)
    _embed(record, exp)
    _hook(progress, "report")(exp, table(record))
    if exp.output.out:
        out = Path(exp.output.out)
        write_record(record, out)
        _hook(progress, "note")(exp, f"wrote {out / 'adapt.json'}, {out / 'adapt.md'} and "
                                     f"{out / 'adapt.png'}")
    return record


# ------------------------------------------------------------------------------ currency
def record_status(exp: Experiment) -> tuple[bool, str]:
    """Whether the record at :meth:`Experiment.record_path` is current: it exists, embeds an
    experiment identical to ``exp`` (for every method and seed) and was written by this pnn
    version. Returns ``(current, why)``."""
    from pnn import __version__

    path = exp.record_path()
    if path is None:
        return False, "no [output] out, so no record to find"
    if not path.exists():
        return False, f"no record at {path} yet"
    try:
        records = read_records(path)
    except (ValueError, OSError) as e:
        return False, f"{path} unreadable ({e})"
    versions = {r.get("pnn_version") for r in records}
    if versions != {__version__}:
        return False, (f"{path} was written by pnn "
                       f"{', '.join(sorted(map(str, versions)))}, this is {__version__}")
    try:
        held = [Experiment.from_dict(r["experiment"], where=f"{path} (experiment)")
                for r in records]
    except (KeyError, ConfigError):
        return False, f"{path} holds no valid experiment"
    if exp.kind == "train":
        expected = [(v, seed) for v in exp.variants() for seed in v.seeds]
        got = [(h, r.get("seed")) for h, r in zip(held, records)]
    else:
        n = len(exp.methods) * len(exp.seeds) if exp.kind == "compare" else 1
        expected, got = [exp] * n, held
    if got != expected:
        return False, f"{path} holds a different experiment (or runs)"
    return True, f"{path} is current"
