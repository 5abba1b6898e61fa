"""The one run loop every trainer goes through.

A trainer supplies an :class:`Algorithm`: its state (a dict of pytrees, numpy generators and
plain data, so that it checkpoints), one training step on a minibatch, and a predictor. The loop
(:func:`run`) owns everything else:

* epochs and minibatches (shuffled by a generator seeded from the run's seed);
* the evaluation schedule: every ``eval_every`` epochs the model is measured on the
  **validation** split (and on a fixed subset of the training split, a diagnostic); the state
  with the best validation accuracy is kept, ``patience`` evaluations without improvement stop
  the run early, and the record reports the selected epoch (``restore_best``);
* per-batch progress (``on_batch``), per-epoch progress (``progress``), step hooks (``on_step``,
  used by the adaptation experiment to change the physics mid-training);
* device epochs: an algorithm whose config has a ``device_epoch`` field may run a whole epoch
  as one compiled program (:meth:`Algorithm.fused_epoch`) when nothing must run between its
  steps (:func:`device_plan` decides and the record's ``device_epoch`` says); hooks, progress
  and checkpoints then take effect at the epoch's end;
* checkpoints every ``checkpoint_every`` steps and on Ctrl-C, and resume: a resumed run ends
  with the same parameters as an uninterrupted one. The checkpoint holds a fingerprint of
  everything that determines the run; resuming with any difference is refused, naming the keys.

The loop never reads the test split. :func:`fit` runs the loop on a *sealed* copy of the data
(test arrays raise on access) and then measures the selected model on the test split once.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import numpy as np

from pnn.checkpoint import load_checkpoint, save_checkpoint
from pnn.config import ConfigError, Validated, check_seed, param
from pnn.cost import Ledger
from pnn.fits import fit_r2
from pnn.perturb import load_perturbation_states, perturbation_states, perturbations_of
from pnn.train.common import accuracy, result_record

__all__ = ["Algorithm", "LoopConfig", "LoopState", "run", "fit", "Result", "TrainedModel",
           "fingerprint", "ResumeMismatch", "params_digest", "device_plan"]

#: test hook: a run whose environment sets this kills itself with SIGKILL right after the
#: checkpoint of that step is on disk (a deterministic stand-in for a crash, used by the
#: kill-and-resume tests; never set it in normal use)
KILL_ENV = "PNN_TEST_SIGKILL_AFTER_STEP"


@dataclasses.dataclass(frozen=True)
class LoopConfig(Validated):
    """Fields every trainer's Config has (the run loop reads them).

    epochs: passes over the training split (an upper bound when ``patience`` stops early).
    batch_size: samples per training step.
    eval_every: epochs between validation measurements (the last epoch is always measured).
    patience: stop after this many validation measurements without improvement (0: never).
    restore_best: report and keep the state with the best validation accuracy (else the last).
    eval_train_max: training accuracy (a diagnostic) is measured on at most this many samples.
    """

    epochs: int = param(10, integer=True, ge=1, le=100_000)
    batch_size: int = param(64, integer=True, ge=1, le=1_000_000,
                            search=("choice", [16, 32, 64, 128]))
    eval_every: int = param(1, integer=True, ge=1, le=100_000)
    patience: int = param(0, integer=True, ge=0, le=100_000)
    restore_best: bool = param(True, choices=(True, False))
    eval_train_max: int = param(200, integer=True, ge=0, le=10_000_000)


class ResumeMismatch(ValueError):
    """A checkpoint was written by a run that differs from the one asked to resume it."""


class Algorithm(abc.ABC):
    """What a trainer supplies to the loop.

    Constructed with the physical layers, the (sealed) data, the validated config, the seed, the
    cost ledger and trainer-specific ``options``. ``state`` dicts are treated as immutable:
    :meth:`step` returns a new dict (it may share unchanged entries), so that the loop can keep
    the best state without copying.
    """

    def __init__(self, layers, data, config, *, seed: int, ledger: Ledger, **options):
        self.layers = list(layers)
        self.data = data
        self.config = config
        self.seed = seed
        self.ledger = ledger
        if options:
            raise ConfigError(f"{type(self).__name__} takes no options {sorted(options)}")

    @abc.abstractmethod
    def init(self) -> dict:
        """The initial state (may query the physics, e.g. to calibrate)."""

    @abc.abstractmethod
    def step(self, state: dict, x: np.ndarray, y: np.ndarray) -> tuple[dict, float]:
        """One training step on a minibatch; returns the new state and the batch loss."""

    @abc.abstractmethod
    def predict(self, state: dict, x: np.ndarray) -> np.ndarray:
        """Predicted labels ``(batch,)``; physical queries are charged as ``eval``."""

    @abc.abstractmethod
    def params(self, state: dict) -> Any:
        """The trainable parameters (a pytree): what is digested, counted and saved."""

    def before_eval(self, state: dict) -> dict:
        """Called before each scheduled evaluation (a read-out fitted on the training split,
        such as PhyLL's ``readout="linear"``, is refitted here; its costs count as learning)."""
        return state

    def after_step(self, state: dict, step: int) -> dict:
        """Called after every step and its hook (PAT refits its twin here when asked to)."""
        return state

    def finished(self, state: dict) -> bool:
        """True when the algorithm has nothing left to learn (a spent query budget): the loop
        stops after this step, measures the epoch on validation and ends the run."""
        return False

    def extra(self, state: dict) -> dict:
        """Method-specific entries for the result record."""
        return {}

    # -- device epochs (a config with a ``device_epoch`` field: "auto", "on", "off") ---------
    def fused_epoch_obstacles(self) -> list[str] | None:
        """Why an epoch cannot run as one compiled program on these layers (empty: it can);
        ``None``: the algorithm has no such epoch."""
        return None

    def fused_epoch(self, state: dict, xs: list, ys: list) -> tuple[dict, list[float]]:
        """The steps on every batch ``(xs[i], ys[i])`` of an epoch, in order, as :meth:`step`
        takes them; the new state and each batch's loss."""
        raise NotImplementedError

    def fused_epoch_report(self) -> dict:
        """What the record's ``device_epoch`` entry says of the fused epochs (times)."""
        return {}

    def n_params(self, state: dict) -> int:
        leaves = jax.tree_util.tree_leaves(self.params(state))
        return int(sum(np.size(v) for v in leaves if hasattr(v, "shape")))

    def params_by_part(self, state: dict) -> dict:
        """Trained numbers per part (``blocks``: one count per block, ``readout``), summing to
        :meth:`n_params`; a network without such parts reports one ``trainable`` count."""
        return {"trainable": self.n_params(state)}

    # -- saved models (pnn.model_io) ---------------------------------------------------------
    def predict_state(self, state: dict) -> dict:
        """The part of ``state`` that :meth:`predict` reads: what a saved model holds (no
        optimiser state, no generators). Default: every entry but ``opt`` and ``rng``."""
        return {k: v for k, v in state.items() if k not in ("opt", "rng")}

    def template_state(self) -> dict:
        """A :meth:`predict_state` of the right structure (shapes, dtypes) whose values a
        saved model replaces. Never queries the layers: the default takes it from :meth:`init`,
        so an algorithm whose ``init`` measures (calibration, a twin) overrides this."""
        return self.predict_state(self.init())

    def from_predict_state(self, pstate: dict) -> dict:
        """A state :meth:`predict` accepts, from a (loaded) :meth:`predict_state`."""
        return dict(pstate)

    def fitted(self) -> dict:
        """Input preprocessing the algorithm fitted on the training data (JSON-able; saved in
        a model file's header). Default: none."""
        return {}

    def load_fitted(self, fitted: dict) -> None:
        """Restore what :meth:`fitted` returned (instead of refitting it on data)."""
        if fitted:
            raise ValueError(f"{type(self).__name__} fits no preprocessing, but was given "
                             f"{sorted(fitted)}; the model file was written by another method")


def params_digest(tree) -> str:
    """SHA-256 of every array leaf of ``tree`` (to compare runs bit for bit)."""
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        if hasattr(leaf, "shape"):
            h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


class TrainedModel:
    """A trained network: the algorithm (with its layers and config) and the selected state.

    ``predict(x)`` labels standardised feature rows; ``deploy(layers)`` returns the same model
    measured on other layers (a perturbed simulator, instruments).
    """

    def __init__(self, method: str, algorithm: Algorithm, state: dict):
        self.method = method
        self.algorithm = algorithm
        self.state = state

    @property
    def layers(self):
        return self.algorithm.layers

    @property
    def config(self):
        return self.algorithm.config

    def predict(self, x, ledger: Ledger | None = None) -> np.ndarray:
        algo = self.algorithm
        if ledger is not None and ledger is not algo.ledger:
            algo = copy.copy(algo)
            algo.ledger = ledger
        return np.asarray(algo.predict(self.state, np.asarray(x, np.float32)))

    def accuracy(self, x, y, ledger: Ledger | None = None) -> float:
        return accuracy(self.predict(x, ledger), y)

    def deploy(self, layers, ledger: Ledger | None = None) -> "TrainedModel":
        algo = copy.copy(self.algorithm)
        algo.layers = list(layers)
        if ledger is not None:
            algo.ledger = ledger
        return TrainedModel(self.method, algo, self.state)

    @property
    def params(self):
        return self.algorithm.params(self.state)

    @property
    def n_params(self) -> int:
        return self.algorithm.n_params(self.state)


class Result(NamedTuple):
    """What :func:`fit` and every trainer's ``train`` return: ``record, model = train(...)``."""

    record: dict
    model: TrainedModel


def _flat(prefix: str, obj, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (list, tuple)) and obj and any(isinstance(v, (dict, list, tuple))
                                                         for v in obj):
        for i, v in enumerate(obj):
            _flat(f"{prefix}[{i}]", v, out)
    else:
        out[prefix] = obj
    return out


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def layer_physics(layer) -> dict:
    """A simulator's scalar parameters and a digest of its arrays (through any perturbation
    wrappers), for fingerprints; ``{}`` for a driver or a user layer (its spec is what we know)."""
    inner = layer
    for _ in range(64):
        nxt = getattr(inner, "layer", None)
        if nxt is None or nxt is inner:
            break
        inner = nxt
    if not isinstance(inner, eqx.Module):
        return {}
    out = {"type": type(inner).__name__}
    for path, leaf in jax.tree_util.tree_flatten_with_path(inner)[0]:
        if isinstance(leaf, (bool, int, float)) or (hasattr(leaf, "shape") and
                                                    np.ndim(leaf) == 0):
            try:
                out[jax.tree_util.keystr(path)] = float(leaf)
            except Exception:  # traced or not numeric
                pass
    out["arrays_sha256"] = params_digest(inner)
    return out


#: what a record keeps of each physics fit (:func:`pnn.characterize.fit_r2`)
_FIT_KEYS = ("n_samples", "linear", "quadratic")


def physics_fits(ledger: Ledger) -> dict:
    """Per physical layer: how linear it was at the drives it was trained with (held-out R² of
    a linear and of a degree-2 fit, :func:`pnn.characterize.fit_r2`, on the ledger's sample of
    training queries). Empty for methods that do not query physics."""
    out = {}
    for name, (x, y) in ledger.kept_samples().items():
        if len(x) < 20:
            continue
        fit = fit_r2(x, y, seed=0)
        out[name] = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                     for k, v in fit.items()
                     if k in _FIT_KEYS or k.endswith("_note")}
    return out


def fingerprint(method: str, config, seed: int, layers, data, extra: dict | None = None) -> dict:
    """Everything that determines a run, as a JSON-able dict (compared key by key on resume)."""
    fp = {
        "method": method,
        "seed": int(seed),
        "config": dataclasses.asdict(config),
        "data": data.describe() if hasattr(data, "describe") else {},
        "layers": [layer.spec.to_dict() for layer in layers],
        "physics": [layer_physics(layer) for layer in layers],
        "perturbations": [[w.describe() for w in perturbations_of(layer)] for layer in layers],
    }
    if extra:
        fp["extra"] = extra
    return _jsonable(fp)


def _differences(old: dict, new: dict) -> list[str]:
    a, b = _flat("", old, {}), _flat("", new, {})
    return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


def device_plan(algo: Algorithm, config, n_batches: int, *, on_step=None,
                checkpoint_every: int = 0) -> dict | None:
    """Whether each epoch runs as one compiled program (``algo.fused_epoch``) or step by step
    on the host: ``{"mode", "used", "obstacles"}``, or ``None`` for a config without a
    ``device_epoch`` field. ``checkpoint_every``: the steps between checkpoints (0: none).

    Raises:
        ConfigError: ``device_epoch="on"`` where an epoch cannot run as one program, naming why.
    """
    mode = getattr(config, "device_epoch", None)
    if mode is None:
        return None
    reasons = algo.fused_epoch_obstacles()
    reasons = [f"{type(algo).__name__} has no device epoch"] if reasons is None else list(reasons)
    if on_step is not None:
        reasons.append("an on_step hook must run after every step")
    if checkpoint_every and checkpoint_every % n_batches:
        reasons.append(f"checkpoint_every={checkpoint_every} puts checkpoints inside an epoch "
                       f"of {n_batches} steps (a device epoch checkpoints at its end: use a "
                       f"multiple of {n_batches})")
    if type(algo).after_step is not Algorithm.after_step:
        reasons.append(f"{type(algo).__name__}.after_step must run after every step")
    if mode == "on" and reasons:
        raise ConfigError('device_epoch="on": an epoch cannot run as one compiled program '
                          f"here: {'; '.join(reasons)}. Use device_epoch=\"auto\" (the host "
                          'path where needed) or "off"')
    return {"mode": mode, "used": mode != "off" and not reasons, "obstacles": reasons}


def _has_val(data) -> bool:
    y = getattr(data, "y_val", None)
    return y is not None and len(y) > 0


@dataclasses.dataclass
class LoopState:
    """Where a run stands, all of it plain data (a checkpoint holds it): the epoch and batch
    within it, the epoch's data order and losses so far, the evaluated epochs' history, the
    steps taken, the best validation accuracy and its epoch, the evaluations since, whether the
    run stopped early, and the evaluation costs kept apart from learning costs."""

    order: np.ndarray
    epoch: int = 1
    batch: int = 0
    losses: list = dataclasses.field(default_factory=list)
    history: list = dataclasses.field(default_factory=list)
    step: int = 0
    best_val: float = -1.0
    best_epoch: int = 0
    since_best: int = 0
    stopped_early: bool = False
    eval_flops: int = 0
    eval_s: float = 0.0

    def to_dict(self) -> dict:
        """Everything but the data order (a checkpoint stores that array apart)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "order"}


class _Run:
    """One run of :func:`run`: the algorithm, its current and best states, the data-order
    generator and the :class:`LoopState`, with the steps of the loop as methods."""

    def __init__(self, method, algorithm_cls, layers, data, config, *, seed, ledger,
                 fingerprint_extra, options, on_step=None, checkpoint_every=0):
        self.method, self.layers, self.data, self.config = method, layers, data, config
        self.seed, self.ledger = seed, ledger
        self.algo = algorithm_cls(layers, data, config, seed=seed, ledger=ledger,
                                  **(options or {}))
        self.state = self.best = self.algo.init()
        self.rng = np.random.default_rng([seed, 7919])  # data order (and the training subset)
        n_train = len(data.y_train)
        self.eval_idx = np.sort(self.rng.permutation(n_train)[: config.eval_train_max])
        self.has_val = _has_val(data)
        self.n_batches = -(-n_train // config.batch_size)
        self.total_steps = config.epochs * self.n_batches
        self.fp = fingerprint(method, config, seed, layers, data, fingerprint_extra)
        self.plan = device_plan(self.algo, config, self.n_batches, on_step=on_step,
                                checkpoint_every=checkpoint_every)
        if self.plan is not None:  # the path taken: results agree between them to rounding only
            self.fp["device_epoch"] = "device" if self.plan["used"] else "host"
        self.loop = LoopState(order=np.zeros(n_train, np.int64))

    # ------------------------------------------------------------------ checkpoints
    def snapshot(self) -> dict:
        snap = {"rng": self.rng, "order": np.asarray(self.loop.order, np.int64),
                "loop": self.loop.to_dict(), "ledger": self.ledger.state_dict(),
                "perturbations": perturbation_states(self.layers), "fingerprint": self.fp}
        # numpy generators inside a state are stored as top-level entries of their own
        for name, st in (("state", self.state), ("best", self.best)):
            snap[name] = {k: v for k, v in st.items() if not isinstance(v, np.random.Generator)}
            for k, v in st.items():
                if isinstance(v, np.random.Generator):
                    snap[f"{name}.{k}"] = v
        return snap

    @staticmethod
    def _restore(snap: dict, name: str) -> dict:
        out = dict(snap[name])
        for key, v in snap.items():
            if key.startswith(name + "."):
                out[key[len(name) + 1:]] = v
        return out

    def resume(self, checkpoint_dir, progress) -> bool:
        """Continue from the newest good checkpoint, if any; whether one was found.

        Raises:
            ResumeMismatch: the checkpoint was written by a different run."""
        found = load_checkpoint(checkpoint_dir, self.snapshot())
        if found is None:
            return False
        st, _ = found
        diff = _differences(st["fingerprint"], self.fp)
        if diff:
            raise ResumeMismatch(
                f"checkpoint in {checkpoint_dir} was written by a different run; differing "
                f"keys: {', '.join(diff)}. Resume with the same settings, or start afresh "
                "in a new --checkpoint-dir")
        self.state, self.best = self._restore(st, "state"), self._restore(st, "best")
        self.rng = st["rng"]
        self.loop = LoopState(order=np.asarray(st["order"]), **st["loop"])
        self.ledger.load_state_dict(st["ledger"])
        load_perturbation_states(self.layers, st["perturbations"])
        for rec in self.loop.history:
            if progress is not None:
                progress(rec)
        return True

    # ------------------------------------------------------------------ the loop's steps
    def evaluate(self, x, y) -> float:
        """The current model's accuracy on ``(x, y)``; its costs kept apart from learning's."""
        f0, t0 = self.ledger.digital_flops, time.perf_counter()
        acc = accuracy(self.algo.predict(self.state, np.asarray(x, np.float32)), y)
        self.loop.eval_flops += self.ledger.digital_flops - f0
        self.loop.eval_s += time.perf_counter() - t0
        return acc

    def train_epoch(self, fresh_order: bool, hooks: dict, checkpoint_dir, checkpoint_every,
                    stop: dict, kill_at: int) -> None:
        """The epoch's remaining batches (all of them unless resumed mid-epoch)."""
        loop, data, bs = self.loop, self.data, self.config.batch_size
        if fresh_order:
            loop.order, loop.losses, loop.batch = self.rng.permutation(len(data.y_train)), [], 0
        if self.plan is not None and self.plan["used"] and loop.batch == 0:
            self.fused_epoch(hooks, checkpoint_dir, checkpoint_every, stop, kill_at)
            return
        for b in range(loop.batch, self.n_batches):
            idx = loop.order[b * bs:(b + 1) * bs]
            self.state, loss = self.algo.step(self.state, data.x_train[idx], data.y_train[idx])
            loop.losses = [*loop.losses, float(loss)]
            loop.step += 1
            loop.batch = b + 1
            if hooks["on_step"] is not None:
                hooks["on_step"](loop.step, self.evaluate)
            self.state = self.algo.after_step(self.state, loop.step)
            if hooks["on_batch"] is not None:
                hooks["on_batch"](loop.step, self.total_steps, float(loss))
            if checkpoint_dir is not None and (
                    stop["requested"] or (checkpoint_every
                                          and loop.step % checkpoint_every == 0)):
                save_checkpoint(checkpoint_dir, self.snapshot(), step=loop.step)
                if kill_at and loop.step >= kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            if stop["requested"]:
                raise KeyboardInterrupt(f"stopped after step {loop.step}; checkpoint "
                                        f"written to {checkpoint_dir}")
            if self.algo.finished(self.state):
                return

    def fused_epoch(self, hooks: dict, checkpoint_dir, checkpoint_every, stop: dict,
                    kill_at: int) -> None:
        """The epoch as one compiled program (``algo.fused_epoch``); hooks, checkpoints and a
        Ctrl-C stop take effect at its end."""
        loop, data, bs = self.loop, self.data, self.config.batch_size
        idx = [loop.order[b * bs:(b + 1) * bs] for b in range(self.n_batches)]
        self.state, losses = self.algo.fused_epoch(self.state, [data.x_train[i] for i in idx],
                                                   [data.y_train[i] for i in idx])
        first = loop.step
        loop.losses = [*loop.losses, *map(float, losses)]
        loop.step, loop.batch = first + self.n_batches, self.n_batches
        if hooks["on_batch"] is not None:
            for j, loss in enumerate(losses):
                hooks["on_batch"](first + j + 1, self.total_steps, float(loss))
        if checkpoint_dir is not None and (
                stop["requested"] or (checkpoint_every and loop.step % checkpoint_every == 0)):
            save_checkpoint(checkpoint_dir, self.snapshot(), step=loop.step)
            if kill_at and loop.step >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        if stop["requested"]:
            raise KeyboardInterrupt(f"stopped after step {loop.step}; checkpoint "
                                    f"written to {checkpoint_dir}")

    def evaluate_epoch(self, epoch: int, t_epoch: float, progress) -> None:
        """Validation (and training-subset) accuracy, cumulative costs, best state, patience."""
        loop, data, ledger = self.loop, self.data, self.ledger
        self.state = self.algo.before_eval(self.state)
        rec = {"epoch": epoch, "step": loop.step, "loss": float(np.mean(loop.losses))}
        if self.has_val:
            rec["val_accuracy"] = self.evaluate(data.x_val, data.y_val)
        if len(self.eval_idx):
            rec["train_accuracy"] = self.evaluate(data.x_train[self.eval_idx],
                                                  data.y_train[self.eval_idx])
        rec["physical_queries"] = ledger.physical_queries
        # cumulative learning costs at this epoch (evaluation excluded, reported apart)
        rec["train_queries"] = int(ledger.queries_by_purpose.get("train", 0))
        rec["digital_flops"] = int(ledger.digital_flops - loop.eval_flops)
        rec["wall_s"] = round(max(ledger.wall_s - loop.eval_s, 0.0), 4)
        rec["eval_queries"] = int(ledger.queries_by_purpose.get("eval", 0))
        rec["eval_flops"] = int(loop.eval_flops)
        rec["eval_s"] = round(loop.eval_s, 4)
        rec["epoch_s"] = round(time.perf_counter() - t_epoch, 3)
        loop.history = [*loop.history, rec]
        score = rec.get("val_accuracy", -1.0)
        if score > loop.best_val:
            loop.best_val, loop.best_epoch, loop.since_best = score, epoch, 0
            self.best = self.state
        else:
            loop.since_best += 1
            if self.config.patience and loop.since_best >= self.config.patience:
                loop.stopped_early = True
        if progress is not None:
            progress(rec)

    def result(self) -> Result:
        """The record (no test accuracy yet) and the model of the selected epoch."""
        loop, config, algo = self.loop, self.config, self.algo
        history = loop.history
        chosen = self.has_val and config.restore_best
        selected = self.best if chosen else self.state
        sel_epoch = loop.best_epoch if chosen else history[-1]["epoch"]
        sel_rec = next(r for r in history if r["epoch"] == sel_epoch)
        self.ledger.stop()
        record = result_record(
            method=self.method, config=config, seed=self.seed, history=history,
            train_accuracy=sel_rec.get("train_accuracy", float("nan")),
            test_accuracy=float("nan"), ledger=self.ledger, n_params=algo.n_params(selected),
            extra={"val_accuracy": sel_rec.get("val_accuracy"), "selected_epoch": sel_epoch,
                   "epochs_run": history[-1]["epoch"], "stopped_early": loop.stopped_early,
                   "steps": loop.step,
                   "layers": [layer.spec.to_dict() for layer in self.layers],
                   "params_by_part": algo.params_by_part(selected),
                   "physics_fits": physics_fits(self.ledger),
                   "params_sha256": params_digest(algo.params(selected)),
                   "fingerprint": self.fp, **algo.extra(selected)})
        if self.plan is not None:
            record["device_epoch"] = {**self.plan, **algo.fused_epoch_report()}
        del record["test_accuracy"]
        return Result(record, TrainedModel(self.method, algo, selected))


def _sigint_stops(stop: dict):
    """From now on Ctrl-C asks the loop to checkpoint and stop (a second one stops at once);
    returns the handler to put back (``None`` off the main thread, where none is set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigint(signum, frame):
        if stop["requested"]:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        stop["requested"] = True

    return signal.signal(signal.SIGINT, on_sigint)


def run(method: str, algorithm_cls, layers, data, config, *, seed: int = 0,
        ledger: Ledger | None = None, progress: Callable[[dict], None] | None = None,
        on_batch: Callable[[int, int, float], None] | None = None,
        on_step: Callable | None = None, checkpoint_dir=None, checkpoint_every: int = 0,
        resume: bool = False, fingerprint_extra: dict | None = None,
        options: dict | None = None) -> Result:
    """Train ``algorithm_cls`` on ``data`` (train and validation splits only).

    Args:
        progress: called after every evaluated epoch with that epoch's record (``loss``,
            ``val_accuracy``, ``train_accuracy`` on a fixed training subset, queries, time).
        on_batch: ``on_batch(step, total_steps, loss)`` after every step.
        on_step: ``on_step(step, evaluate)`` after every step; ``evaluate(x, y)`` measures the
            current model's accuracy on the given samples (queries charged as ``eval``). The
            hook may change the physics; the next step sees the change.
        checkpoint_dir, checkpoint_every, resume: durable runs (see module docstring).
        fingerprint_extra: more entries for the run's fingerprint (e.g. the experiment).
        options: trainer-specific options passed to the algorithm.

    Returns: :class:`Result` (record without ``test_accuracy``, model).

    Raises:
        ResumeMismatch: when resuming from a checkpoint written by a different run.
    """
    r = _Run(method, algorithm_cls, layers, data, config, seed=check_seed(seed),
             ledger=ledger or Ledger(), fingerprint_extra=fingerprint_extra, options=options,
             on_step=on_step, checkpoint_every=checkpoint_every if checkpoint_dir is not None
             else 0)
    resumed = checkpoint_dir is not None and resume and r.resume(checkpoint_dir, progress)
    stop = {"requested": False}
    handler = _sigint_stops(stop) if checkpoint_dir is not None else None
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    hooks = {"on_step": on_step, "on_batch": on_batch}
    try:
        fresh_order = not resumed
        while r.loop.epoch <= config.epochs and not r.loop.stopped_early:
            epoch, t_epoch = r.loop.epoch, time.perf_counter()
            r.train_epoch(fresh_order, hooks, checkpoint_dir, checkpoint_every, stop, kill_at)
            fresh_order = True
            finished = r.algo.finished(r.state)
            if finished or epoch % config.eval_every == 0 or epoch == config.epochs:
                r.evaluate_epoch(epoch, t_epoch, progress)
            r.loop.epoch = epoch + 1
            if finished:
                r.loop.stopped_early = True
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
    return r.result()


def fit(method: str, algorithm_cls, layers, data, config, *, seed: int = 0, **kw) -> Result:
    """:func:`run` on the sealed data, then one measurement of the selected model on test.

    The test measurement's physical queries are charged to the ledger as ``test``.
    """
    sealed = data.sealed() if hasattr(data, "sealed") else data
    record, model = run(method, algorithm_cls, layers, sealed, config, seed=seed, **kw)
    algo = model.algorithm
    algo.data = data
    ledger = algo.ledger
    t = time.perf_counter()
    with ledger.relabel(eval="test"):
        record["test_accuracy"] = model.accuracy(data.x_test, data.y_test)
    record["test_eval_s"] = round(time.perf_counter() - t, 3)
    # the counters now include the test queries (purpose "test"); the wall clock was stopped
    # at the end of training, so test time is reported apart (test_eval_s)
    record["cost"] = ledger.to_dict()
    return Result(record, model)
