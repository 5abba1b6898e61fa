"""The sections of an experiment file ([task], [system], [method], [run], [output],
[instrument], [compare], [adapt]): one frozen, validated dataclass each."""

from __future__ import annotations

import dataclasses
from typing import Any

from pnn import registry
from pnn.address import parse_address
from pnn.config import ConfigError, check_seed, config_from_dict
from pnn.data.vowels import PAT_VOWELS
from pnn.experiment.events import Event, parse_event
from pnn.experiment.fields import (TASK_SOURCES, _bool, _check_keys, _fraction, _frozen, _int,
                                   _opt_str, _table)


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
        valid = registry.system_keys(name)
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
        for address in addresses:
            try:
                parse_address(address)
            except ValueError as e:
                raise ConfigError(f"{w} addresses: {str(e).replace('--instrument ', '')}"
                                  ) from None
        profile = d.get("profile", "emulator")
        if not isinstance(profile, str) or not profile:
            raise ConfigError(f"{w} profile = {profile!r}: expected a profile name or a TOML "
                              f"file path")
        return cls(addresses=tuple(addresses), profile=profile)


@dataclasses.dataclass(frozen=True)
class CompareSpec:
    """How ``kind = "compare"`` runs its methods (see :func:`pnn.compare.compare`).

    ``split``: ``"shared"`` (one train/validation/test split, made with ``split_seed``, for
    every seed) or ``"per_seed"`` (each seed its own split, as tuning requires);
    ``tune_trials``: 0, or Optuna trials per method on the first seed's validation split
    (``tune_storage``: journal path or URL, default ``<out>/tune.journal``; ``tune_jobs``:
    parallel trials); ``target``: the validation accuracy the table reports costs to (default:
    95 % of the best method's mean).

    ``workers``: the tuning studies and runs are jobs shared by this many local worker
    processes (:mod:`pnn.experiment.compare_jobs`); ``storage``: the Optuna RDB storage (URL)
    they claim the jobs from and keep the tuning studies in, which processes on other hosts
    join by running the same experiment with the same URL (default with ``workers`` > 1:
    ``sqlite:///OUT/workers.db``). With ``workers = 1`` and no ``storage`` the comparison runs
    in this process. The records are the same either way (wall times apart)."""

    split: str = "shared"
    split_seed: int | None = 0
    tune_trials: int = 0
    tune_storage: str | None = None
    tune_jobs: int = 1
    target: float | None = None
    workers: int = 1
    storage: str | None = None

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
        workers, jobs_url = _workers(w, d, storage)
        return cls(split=split, split_seed=split_seed, tune_trials=trials,
                   tune_storage=storage,
                   tune_jobs=_int(w, "tune_jobs", d.get("tune_jobs", 1), low=1,
                                  hint="parallel tuning trials"),
                   target=None if target is None else float(target),
                   workers=workers, storage=jobs_url)


#: the SQLAlchemy dialects Optuna's RDB storage is known to work with
_RDB = ("sqlite", "postgresql", "mysql")


def _workers(w: str, d: dict, tune_storage: str | None) -> tuple[int, str | None]:
    """``[compare] workers`` and ``storage``, checked (see :class:`CompareSpec`)."""
    workers = _int(w, "workers", d.get("workers", 1), low=1,
                   hint="local worker processes; 1: the comparison runs in this process")
    if workers > 256:
        raise ConfigError(f"{w} workers = {workers}: expected at most 256 local worker "
                          f"processes (more hosts join through storage)")
    url = _opt_str(w, "storage", d.get("storage"))
    if url is not None and url.partition("://")[0].partition("+")[0] not in _RDB:
        raise ConfigError(f"{w} storage = {url!r}: expected an Optuna RDB storage URL "
                          f"(sqlite:///FILE, postgresql://USER@HOST/DB or mysql://...), which "
                          f"every worker claims jobs from; a journal file holds tuning "
                          f"studies only (tune_storage)")
    if (workers > 1 or url) and tune_storage:
        raise ConfigError(f"{w} tune_storage = {tune_storage!r} with workers: the tuning "
                          f"studies live in the workers' storage (storage, default "
                          f"sqlite:///OUT/workers.db); remove tune_storage")
    return workers, url


def _event_text(ev) -> str:
    """An event as the ``--event`` text that :func:`pnn.adapt.parse_event` reads back."""
    parts = [f"epoch={ev.epoch!r}"]
    for f in dataclasses.fields(Event):
        if f.name not in ("kind", "epoch") and getattr(ev, f.name) != f.default:
            parts.append(f"{f.name}={getattr(ev, f.name)}")
    return f"{ev.kind}:{','.join(parts)}"


def _events(where: str, value) -> tuple:
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
