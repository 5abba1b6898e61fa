"""What every trainer shares: the result record, versions, minibatches and progress reporting.

Every trainer module exposes ``train(layers, data, config, *, seed, ledger=None, progress=None)``
(trainers of physical layers also take ``on_step``, a :data:`StepHook`) and returns the record built by :func:`result_record`, so results from different methods can be
compared field by field.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from typing import Callable

import jax
import numpy as np

from pnn.cost import Ledger

__all__ = ["result_record", "versions", "machine", "minibatches", "Progress", "StepHook", "accuracy"]

#: progress callback: called once per epoch with a dict of that epoch's metrics
Progress = Callable[[dict], None]

#: step hook: called after every training step with the number of steps done so far and a
#: function that measures the current model's test accuracy on the deployed layers (its
#: physical queries are charged to the ledger as "eval"). The hook may change the physics;
#: the next step sees the change. Used by the adaptation experiment (:mod:`pnn.adapt`).
StepHook = Callable[[int, Callable[[], float]], None]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("pnn", "jax", "jaxlib", "equinox", "optax", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def machine() -> dict:
    """Where a run ran: results can differ in the last digits between processors (vector
    instructions change float rounding), so a record says which one."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    model = value.strip()
                    break
    except OSError:
        pass
    try:
        backend, device = jax.default_backend(), str(jax.devices()[0].device_kind)
    except Exception:  # noqa: BLE001 - the record must be written whatever JAX says
        backend, device = None, None
    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": model or platform.processor() or None, "jax_backend": backend,
            "device": device}


def minibatches(rng: np.random.Generator, n: int, batch_size: int):
    """Indices of one shuffled epoch, in batches (the last may be smaller)."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def logistic_regression():
    """scikit-learn's ``(LogisticRegression, ConvergenceWarning)``, imported by the first linear
    fit (the linear reference, PhyLL's linear read-out): scikit-learn takes a second to import,
    which every other run does without."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression, ConvergenceWarning


def accuracy(pred, y) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(y)))


def result_record(
    *,
    method: str,
    config,
    seed: int,
    history: list[dict],
    train_accuracy: float,
    test_accuracy: float,
    ledger: Ledger,
    n_params: int,
    extra: dict | None = None,
) -> dict:
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    rec = {
        "method": method,
        "test_accuracy": float(test_accuracy),
        "train_accuracy": float(train_accuracy),
        "n_trainable_params": int(n_params),
        "history": history,
        "cost": ledger.to_dict(),
        "config": cfg,
        "seed": int(seed),
        "versions": versions(),
        "machine": machine(),
    }
    if extra:
        rec.update(extra)
    return rec
