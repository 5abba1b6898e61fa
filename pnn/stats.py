"""Statistics for comparisons: intervals, paired differences, cost to a target, modelled energy.

* :func:`t_interval`: mean, sample standard deviation and a two-sided t interval of the mean
  (scipy's Student t quantile, ``n - 1`` degrees of freedom).
* :func:`paired_differences`: for every method, the differences ``method - reference`` on the
  seeds both were run with (the same seed means the same split and initialisation seed), with
  the t interval of the mean difference and whether that interval excludes zero.
* :func:`cost_to_target`: the learning costs (physical queries of purpose ``train``, digital
  FLOPs, wall time; evaluation excluded) spent until the validation accuracy in a run's
  per-epoch history first reached a target.
* :func:`modelled_energy_j`: energy *modelled* from digital FLOPs and a per-query energy of the
  physical system (assumed constants, not a measurement).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

__all__ = ["t_interval", "paired_differences", "cost_to_target", "default_target",
           "modelled_energy_j", "ENERGY_PER_FLOP_J", "ENERGY_NOTE",
           "summary_rows"]

#: modelled energy of one digital FLOP in J (a CPU core at about 10 GFLOP/J).
ENERGY_PER_FLOP_J: float = 1e-10
ENERGY_NOTE = ("modelled energy = train queries x per-query energy of the system + digital "
               "FLOPs x {flop:g} J/FLOP (assumed constants, not measured)")


def _finite(values, what: str) -> np.ndarray:
    a = np.asarray(list(values), dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{what}: expected a flat sequence of numbers, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: expected finite numbers, got {a.tolist()}; drop runs that "
                         "failed or did not report this value")
    return a


def t_interval(values: Iterable[float], confidence: float = 0.95) -> dict:
    """Mean, sample std (``ddof=1``) and the two-sided Student-t interval of the mean.

    With one value the std is 0 and the interval is ``(nan, nan)`` (no spread to estimate).

    Returns:
        ``{"n", "mean", "std", "lo", "hi", "half_width"}``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}; e.g. 0.95")
    a = _finite(values, "t_interval")
    if len(a) == 0:
        raise ValueError("t_interval: expected at least one value, got none")
    n, mean = len(a), float(a.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": 0.0, "lo": math.nan, "hi": math.nan,
                "half_width": math.nan}
    from scipy import stats  # about a second to import: only when an interval is computed

    std = float(a.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "lo": mean - half, "hi": mean + half,
            "half_width": half}


def paired_differences(records: Sequence[dict], reference: str = "phyll", *,
                       metric: str = "test_accuracy", confidence: float = 0.95) -> dict:
    """``{method: interval of (method - reference)}`` paired by seed.

    Only seeds on which both the method and the reference ran are paired (their number is
    ``n``); each entry has ``mean``, ``std``, ``lo``, ``hi`` as :func:`t_interval`,
    ``seeds`` and ``excludes_zero`` (the interval lies entirely above or below 0). Empty when
    the reference is not among the records.
    """
    by = {}
    for r in records:
        key = (r["method"], int(r["seed"]))
        if key in by:
            raise ValueError(f"paired_differences: method {r['method']!r} has two records for "
                             f"seed {r['seed']}; expected one run per method and seed")
        by[key] = float(r[metric])
    ref = {s: v for (m, s), v in by.items() if m == reference}
    out = {}
    if not ref:
        return out
    for method in dict.fromkeys(r["method"] for r in records):
        if method == reference:
            continue
        seeds = sorted(s for (m, s) in by if m == method and s in ref)
        if not seeds:
            continue
        d = [by[(method, s)] - ref[s] for s in seeds]
        iv = t_interval(d, confidence)
        iv["seeds"] = seeds
        iv["excludes_zero"] = bool(iv["n"] > 1 and (iv["lo"] > 0 or iv["hi"] < 0))
        out[method] = iv
    return out


def cost_to_target(history: Sequence[dict], target: float, *,
                   key: str = "val_accuracy") -> dict | None:
    """Learning costs at the first history entry whose ``key`` reaches ``target``.

    Each history entry must carry cumulative ``train_queries``, ``digital_flops`` and
    ``wall_s`` (the run loop records them; evaluation costs are excluded there and kept in
    ``eval_queries`` / ``eval_flops`` / ``eval_s``). Returns ``{"epoch", "step", key,
    "train_queries", "digital_flops", "wall_s", "eval_queries", "eval_flops", "eval_s"}`` or
    ``None`` when the target was never reached.
    """
    need = ("train_queries", "digital_flops", "wall_s")
    for rec in history:
        if key not in rec:
            continue
        missing = [k for k in need if k not in rec]
        if missing:
            raise ValueError(f"cost_to_target: history entry of epoch {rec.get('epoch')} lacks "
                             f"{', '.join(missing)}; expected cumulative learning costs per "
                             "entry (records written by pnn.train.loop have them; rerun older "
                             "records)")
        if rec[key] >= target:
            out = {"epoch": rec.get("epoch"), "step": rec.get("step"), key: float(rec[key])}
            for k in (*need, "eval_queries", "eval_flops", "eval_s"):
                out[k] = rec.get(k, 0)
            return out
    return None


def default_target(records: Sequence[dict], fraction: float = 0.95) -> float:
    """``fraction`` of the best method's mean (selected-epoch) validation accuracy."""
    if not 0 < fraction <= 1:
        raise ValueError(f"target fraction must be in (0, 1], got {fraction!r}; e.g. 0.95")
    means = []
    for method in dict.fromkeys(r["method"] for r in records):
        v = [r["val_accuracy"] for r in records if r["method"] == method
             and r.get("val_accuracy") is not None]
        if v:
            means.append(float(np.mean(v)))
    if not means:
        raise ValueError("default_target: no record has a val_accuracy; give the target "
                         "explicitly or train with a validation split")
    return fraction * max(means)


def modelled_energy_j(train_queries: float, digital_flops: float, system: str, *,
                      per_query_j: dict | None = None,
                      per_flop_j: float = ENERGY_PER_FLOP_J) -> float:
    """Modelled (not measured) energy in J: queries x per-query energy + FLOPs x per-FLOP.

    ``per_query_j``: ``{system: J}`` (the systems' declared energies,
    :func:`pnn.registry.energy_per_query`); a digital record (``"digital"``) costs none."""
    table = {"digital": 0.0, **(per_query_j or {})}
    base = system.split("[")[0]
    if train_queries and base not in table:
        raise ValueError(f"no per-query energy for system {system!r}; known: "
                         f"{', '.join(sorted(table))}; pass per_query_j={{{system!r}: J}}")
    return float(train_queries) * table.get(base, 0.0) + float(digital_flops) * per_flop_j


def summary_rows(records: Sequence[dict], *, reference: str = "phyll",
                 target: float | None = None, confidence: float = 0.95,
                 per_query_j: dict | None = None) -> tuple[list[dict], float]:
    """One row a method with test-accuracy interval, paired difference to ``reference`` and
    median costs to ``target`` (default :func:`default_target`). Returns ``(rows, target)``.
    ``per_query_j``: the per-query energy of each system (:func:`modelled_energy_j`); a system
    without one gets no modelled energy (NaN) instead of a guess."""
    if target is None:
        target = default_target(records)
    diffs = paired_differences(records, reference, confidence=confidence)
    rows = []
    for method in dict.fromkeys(r["method"] for r in records):
        rs = [r for r in records if r["method"] == method]
        iv = t_interval([r["test_accuracy"] for r in rs], confidence)
        val = [r["val_accuracy"] for r in rs if r.get("val_accuracy") is not None]
        reached = [cost_to_target(r.get("history", []), target) for r in rs]
        hit = [c for c in reached if c is not None]
        system = rs[0].get("system", "digital")

        def med(k):
            return float(np.median([c[k] for c in hit])) if hit else math.nan

        row = {
            "method": method, "system": system, "n_seeds": len(rs),
            "seeds": [int(r["seed"]) for r in rs],
            "test_acc_mean": iv["mean"], "test_acc_std": iv["std"],
            "test_acc_lo": iv["lo"], "test_acc_hi": iv["hi"],
            "val_acc_mean": float(np.mean(val)) if val else math.nan,
            "diff": diffs.get(method),
            "target": target, "reached": len(hit),
            "target_train_queries": med("train_queries"),
            "target_flops": med("digital_flops"), "target_wall_s": med("wall_s"),
            "eval_queries": float(np.mean([r["cost"].get("queries_by_purpose", {})
                                           .get("eval", 0) for r in rs])),
            "test_queries": float(np.mean([r["cost"].get("queries_by_purpose", {})
                                           .get("test", 0) for r in rs])),
            "train_queries": float(np.mean([r["cost"].get("queries_by_purpose", {})
                                            .get("train", 0) for r in rs])),
            "physical_queries": float(np.mean([r["cost"]["physical_queries"] for r in rs])),
            "digital_flops": float(np.mean([r["cost"]["digital_flops"] for r in rs])),
            "wall_s": float(np.mean([r["cost"]["wall_s"] for r in rs])),
            "params": int(rs[0]["n_trainable_params"]),
        }
        known = system.split("[")[0] in {"digital", *(per_query_j or {})}
        row["target_energy_j"] = (modelled_energy_j(row["target_train_queries"],
                                                    row["target_flops"], system,
                                                    per_query_j=per_query_j)
                                  if hit and known else math.nan)
        rows.append(row)
    return rows, target
