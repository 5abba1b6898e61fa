"""Hyperparameter tuning on the validation split, with the same budget for every method.

:func:`tune` runs one Optuna study per method: every trial builds the method's Config from
``base_config`` plus values drawn from the search space declared next to the Config's fields
(:meth:`pnn.registry.Trainer.search_space`), trains one run through the run loop and returns
the run's selected **validation** accuracy. The data given to the trials is **sealed**
(:meth:`pnn.data.vowels.Dataset.sealed`): any use of the test arrays raises
:class:`~pnn.data.vowels.TestSetSealed`, and the trial (and the study) fail loudly. Nothing is
measured on test here.

Studies persist in an Optuna storage: by default a journal file (``JournalFileBackend``) in
the output folder, or any URL Optuna accepts (``sqlite:///tune.db``, ``postgresql://...``), or
a storage object (the comparison's workers pass theirs, :mod:`pnn.experiment.compare_jobs`).
Studies are opened with ``load_if_exists=True``, so a sweep resumes after a crash and several
processes (or machines sharing a database) can work on one study. ``n_trials`` is the number of
*completed* trials the study should hold: a call runs only the missing ones, so every method
gets the same budget even when a sweep was interrupted and resumed (``restart`` runs a
partial study again from its first trial instead, for the result of an uninterrupted one).
Every result holds the tuning curve (``curve``: each completed trial's validation accuracy in
trial order and the best so far), so a reader sees whether the trials were enough.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from pnn import registry
from pnn.config import ConfigError, check_seed
from pnn.fileio import OutputPathError
from pnn.train.loop import run

__all__ = ["tune", "suggest", "open_storage", "TuneMismatch", "default_study_name"]


class TuneMismatch(ValueError):
    """An existing study was created with different settings than the ones asked for."""


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def suggest(trial, name: str, spec) -> Any:
    """Draw ``name`` from a declared search spec (see :mod:`pnn.config`)."""
    if not isinstance(spec, (tuple, list)) or not spec:
        raise ConfigError(f"search space of {name!r} = {spec!r}: expected ('log', lo, hi), "
                          "('float', lo, hi), ('int', lo, hi), ('choice', [...]) or "
                          "('widths', depths, widths)")
    kind = spec[0]
    if kind == "log":
        return trial.suggest_float(name, float(spec[1]), float(spec[2]), log=True)
    if kind == "float":
        return trial.suggest_float(name, float(spec[1]), float(spec[2]))
    if kind == "int":
        return trial.suggest_int(name, int(spec[1]), int(spec[2]))
    if kind == "choice":
        return trial.suggest_categorical(name, list(spec[1]))
    if kind == "widths":
        depths, widths = list(spec[1]), list(spec[2])
        depth = trial.suggest_categorical(f"{name}.depth", depths)
        return tuple(trial.suggest_categorical(f"{name}[{i}]", widths) for i in range(depth))
    raise ConfigError(f"search space of {name!r} = {spec!r}: unknown kind {kind!r}; expected "
                      "one of log, float, int, choice, widths")


def open_storage(storage, out: str | Path = "tune_results"):
    """An Optuna storage: ``None`` -> a journal file ``<out>/tune.journal``; a string with
    ``://`` -> that URL (RDB storages); any other string or path -> a journal file there.

    A journal file is appended to: it must be a regular file or not exist yet (it is then
    created without following a symlink), never a symlink, whose target would be written.

    Raises:
        OutputPathError: (a ``ValueError``) when the journal path is a symlink, a folder, a
            FIFO or any other non-regular file.
    """
    optuna = _optuna()
    if storage is None:
        storage = Path(out) / "tune.journal"
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if isinstance(storage, str) and storage.startswith("sqlite://"):
        # several processes write one file: wait up to a minute for its lock, not 5 s
        return optuna.storages.RDBStorage(storage,
                                          engine_kwargs={"connect_args": {"timeout": 60}})
    if isinstance(storage, str) and "://" in storage:
        return storage
    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    _create_journal(path)
    journal = optuna.storages.journal
    return journal.JournalStorage(journal.JournalFileBackend(str(path)))


def _create_journal(path: Path) -> None:
    """Make sure ``path`` is a regular file (creating it, empty, if missing) that is no symlink.

    Raises:
        OutputPathError: naming the path, what it is, and the fix.
    """
    def refuse(what: str) -> OutputPathError:
        return OutputPathError(f"tuning storage {str(path)!r} is {what}, not a regular file; "
                               f"the journal is appended to, so it must be a file of its own: "
                               f"remove it or give another path (--storage)")

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise refuse(f"a symlink (to {os.readlink(path)!r}), whose target would be written")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise refuse("a folder" if stat.S_ISDIR(st.st_mode) else "a special file")
    # O_NOFOLLOW: a symlink placed here since the check is refused, not followed; O_NONBLOCK:
    # a FIFO placed here cannot block the open
    flags = (os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_NONBLOCK", 0))
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if os.path.islink(path):
            raise refuse(f"a symlink (to {os.readlink(path)!r}), whose target would be "
                         f"written") from None
        raise OutputPathError(f"tuning storage {str(path)!r} cannot be opened "
                              f"({e.strerror or e}); give another path (--storage)") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise refuse("a special file")
    finally:
        os.close(fd)


def default_study_name(method: str, system: str, task_options: dict, seed: int,
                       base_config: dict) -> str:
    digest = hashlib.sha256(json.dumps(_jsonable([task_options, base_config]), sort_keys=True)
                            .encode()).hexdigest()[:10]
    return f"{method}-{system}-seed{seed}-{digest}"


def _load_data(task_options: dict, seed: int):
    opts = dict(task_options or {})
    task = opts.pop("task", "vowels")
    opts.setdefault("seed", seed)
    return registry.load_task(task, **opts)


def tune(method: str, system: str, task_options: dict | None = None, *, n_trials: int,
         seed: int = 0, storage=None, study_name: str | None = None, jobs: int = 1,
         base_config: dict | None = None, out: str | Path = "tune_results", data=None,
         timeout: float | None = None, progress=None, devices: int = 1,
         system_kwargs: dict | None = None, system_search: dict | None = None,
         restart: bool = False) -> dict:
    """Tune ``method`` on the validation split; returns the best configuration.

    Args:
        method: a name in :data:`pnn.registry.TRAINERS`.
        system: a name in :data:`pnn.registry.SYSTEMS` (ignored by digital methods).
        task_options: ``{"task": name, **loader options}``; the data split seed is
            ``task_options["seed"]`` if given, else ``seed``.
        n_trials: completed trials the study should hold (a resumed study runs the rest).
        seed: seeds the TPE sampler, the split (see above) and every trial's training run.
        storage: ``None`` (journal file ``<out>/tune.journal``), a journal file path, an
            Optuna URL (``sqlite:///...``, ``postgresql://...``) or an Optuna storage.
        study_name: default: method, system, seed and a digest of the task and base config.
        jobs: trials run in parallel threads (Optuna ``n_jobs``).
        base_config: fixed Config values (e.g. ``{"epochs": 3}``); searched fields override.
        data: an already loaded Dataset (used instead of loading ``task_options``); it is
            sealed before any trial sees it.
        system_kwargs: fixed physical parameters of the system (its factory's keywords).
        system_search: physical parameters searched beside the method's fields, as
            ``{key: search spec}`` (e.g. :attr:`pnn.registry.System.levers`); drawn as
            ``system.KEY``; the best values are returned as ``best_system`` (with the fixed
            ones).
        devices: every trial's simulator layers run data-parallel over the first ``devices``
            JAX devices (:func:`pnn.registry.build_layers`). Not part of the study's settings:
            the outputs are the same on any number of devices (to float rounding), so a study
            resumes on another count.
        restart: a partial study of that name (a run died in it) is run again from its
            first trial: an uninterrupted study's result (see :func:`_drop_partial`).

    Returns:
        ``{"method", "study_name", "storage", "best_config" (every Config value),
        "best_system" (the system's parameters of the best trial, fixed and searched),
        "best_params" (the searched values), "best_val_accuracy", "best_trial",
        "n_complete", "trials" (number, state, params, val_accuracy, selected_epoch),
        "curve" (completed trials in order: ``trial``, ``val_accuracy``, best so far
        ``best_val_accuracy``), "search_space", "data"}``.

    Raises:
        TestSetSealed: a trainer read the test split during a trial.
        TuneMismatch: the named study exists with a different method, system, task, seed or
            base config.
    """
    optuna = _optuna()
    trainer = registry.get_trainer(method)
    seed = check_seed(seed)
    _check_counts(n_trials, jobs)
    registry.resolve_system(system)  # an unknown system fails here, before any trial
    base_config = dict(base_config or {})
    task_options = dict(task_options or {})
    system_kwargs = dict(system_kwargs or {})
    system_search = dict(system_search or {}) if trainer.uses_physical_layers else {}
    space = trainer.search_space()
    _check_base_config(method, trainer, base_config)
    if data is None:
        data = _load_data(task_options, seed)
    sealed = data.sealed()  # trials can never read the test split
    study_name = study_name or default_study_name(method, system, task_options, seed,
                                                  base_config)
    store = open_storage(storage, out)
    # a method without a search space (e.g. the linear reference, whose C is chosen on
    # validation inside its run) is deterministic: one trial is its whole study
    target = n_trials if space or system_search else 1
    if restart:
        _drop_partial(optuna, study_name, store, target)
    settings = _jsonable({"method": method, "system": system, "task_options": task_options,
                          "seed": seed, "base_config": base_config, "data": sealed.describe(),
                          "search_space": space,
                          **({"system_kwargs": system_kwargs} if system_kwargs else {}),
                          **({"system_search": system_search} if system_search else {})})
    study = _open_study(optuna, study_name, store, seed, settings, storage)
    objective = _Objective(method, system, trainer, sealed, seed, devices, space, base_config,
                           system_kwargs, system_search, progress)
    _complete(optuna, study, objective, target, jobs, timeout)
    return _result(optuna, study, method, system, study_name, storage, out, system_kwargs,
                   space, system_search, settings["data"])


def _optuna():
    """Optuna, loaded when a study is opened: a comparison without tuning never needs it."""
    import optuna

    return optuna


def _check_counts(n_trials, jobs) -> None:
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials = {n_trials!r}: expected a positive integer (the number "
                         "of completed trials per method)")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs = {jobs!r}: expected a positive integer (parallel trials)")


def _check_base_config(method: str, trainer, base_config: dict) -> None:
    """Refuse, before any trial, a base config with unknown keys or values its Config refuses."""
    fields = {f.name for f in dataclasses.fields(trainer.Config)}
    unknown = sorted(set(base_config) - fields)
    if unknown:
        raise ConfigError(f"base_config for {method}: unknown key(s) {', '.join(unknown)}; "
                          f"valid keys: {', '.join(sorted(fields))}")
    trainer.Config(**base_config)  # fail before any trial on a bad base config


def _drop_partial(optuna, study_name: str, store, target: int) -> None:
    """Delete the study ``study_name`` unless it is absent or holds ``target`` completed
    trials and no other (:func:`tune`'s ``restart``): a resumed study's sampler starts afresh
    and proposes other values than an uninterrupted one, so a partial study is run again from
    its first trial; a complete one is used as it is."""
    try:
        old = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        return
    trials = old.get_trials(deepcopy=False)
    if len(trials) >= target and all(t.state == optuna.trial.TrialState.COMPLETE
                                      for t in trials):
        return
    optuna.delete_study(study_name=study_name, storage=store)


def _open_study(optuna, study_name: str, store, seed: int, settings: dict, storage):
    """The study ``study_name`` in ``store`` (created, or loaded to resume), its settings
    stored on creation.

    Raises:
        TuneMismatch: the study exists with other settings.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=store, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                load_if_exists=True)
    old = study.user_attrs.get("settings")
    if old is None:
        study.set_user_attr("settings", settings)
    elif old != settings:
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise TuneMismatch(f"study {study_name!r} in {storage or store} was created with other "
                           f"settings (differing: {', '.join(diff)}); use the same settings to "
                           "resume it, or another study_name / storage for a new sweep")
    return study


class _Objective:
    """One trial: the method's Config and the system's parameters drawn from their search
    spaces, one training run on the sealed data; returns its validation accuracy and keeps
    what the run cost in the trial's user attributes."""

    def __init__(self, method: str, system: str, trainer, sealed, seed: int, devices: int,
                 space: dict, base_config: dict, system_kwargs: dict, system_search: dict,
                 progress):
        self.method, self.system, self.trainer, self.sealed = method, system, trainer, sealed
        self.seed, self.devices, self.space, self.base_config = seed, devices, space, base_config
        self.system_kwargs, self.system_search = system_kwargs, system_search
        self.progress = progress

    def __call__(self, trial) -> float:
        method, trainer, sealed, seed = self.method, self.trainer, self.sealed, self.seed
        values = {name: suggest(trial, name, spec) for name, spec in self.space.items()}
        physics = {**self.system_kwargs, **{k: suggest(trial, f"system.{k}", spec)
                                            for k, spec in self.system_search.items()}}
        cfg = trainer.Config(**{**self.base_config, **values})
        layers = (registry.build_layers(self.system, method, cfg, sealed, seed=seed,
                                        devices=self.devices, **physics)
                  if trainer.uses_physical_layers else [])
        rec, _ = run(method, trainer.Algorithm, layers, sealed, cfg, seed=seed)
        val = rec.get("val_accuracy")
        if val is None or not math.isfinite(val):
            raise ValueError(f"{method}: the run reported no validation accuracy; tuning needs "
                             "a validation split (val_fraction > 0)")
        trial.set_user_attr("config", _jsonable(dataclasses.asdict(cfg)))
        trial.set_user_attr("system", _jsonable(physics))
        trial.set_user_attr("val_accuracy", float(val))
        trial.set_user_attr("selected_epoch", rec.get("selected_epoch"))
        trial.set_user_attr("data_sealed", bool(sealed.is_sealed))
        trial.set_user_attr("train_queries",
                            rec["cost"].get("queries_by_purpose", {}).get("train", 0))
        trial.set_user_attr("digital_flops", rec["cost"]["digital_flops"])
        trial.set_user_attr("wall_s", rec["cost"]["wall_s"])
        if self.progress is not None:
            self.progress(trial.number, float(val))
        return float(val)


def _result(optuna, study, method: str, system: str, study_name: str, storage, out,
            system_kwargs: dict, space: dict, system_search: dict, data: dict) -> dict:
    """What :func:`tune` returns: the best trial's configuration and physics, and every trial.

    Raises:
        RuntimeError: no trial of the study completed.
    """
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"study {study_name!r}: no trial completed; see the errors above")
    best = study.best_trial
    done = sorted(complete, key=lambda t: t.number)
    values = [float(t.value) for t in done]
    return {
        "method": method,
        "system": system,
        "study_name": study_name,
        # an RDB storage object by its URL
        "storage": (str(getattr(storage, "url", storage)) if storage is not None
                    else str(Path(out) / "tune.journal")),
        "best_config": dict(best.user_attrs["config"]),
        "best_system": dict(best.user_attrs.get("system", system_kwargs)),
        "best_params": dict(best.params),
        "best_val_accuracy": float(best.value),
        "best_trial": best.number,
        "n_complete": len(complete),
        "search_space": _jsonable({**space, **{f"system.{k}": v
                                               for k, v in system_search.items()}}),
        "data": data,
        "trials": [{"number": t.number, "state": t.state.name, "params": dict(t.params),
                    "val_accuracy": t.user_attrs.get("val_accuracy"),
                    "selected_epoch": t.user_attrs.get("selected_epoch"),
                    "data_sealed": t.user_attrs.get("data_sealed")} for t in trials],
        "curve": {"trial": [t.number for t in done], "val_accuracy": values,
                  "best_val_accuracy": list(itertools.accumulate(values, max))},
    }


def _complete(optuna, study, objective, target: int, jobs: int, timeout) -> None:
    """Run the trials the study misses to hold ``target`` completed ones."""
    done = sum(t.state == optuna.trial.TrialState.COMPLETE
               for t in study.get_trials(deepcopy=False))
    missing = target - done
    if missing > 0:
        stop = optuna.study.MaxTrialsCallback(target,
                                              states=(optuna.trial.TrialState.COMPLETE,))
        study.optimize(objective, n_trials=missing, n_jobs=jobs, callbacks=[stop],
                       timeout=timeout, catch=())
