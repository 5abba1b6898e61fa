"""The comparison harness: every method on the same physics, split and seeds, with its cost.

:func:`compare` trains each requested method for each seed on one shared data split (fixed by
``split_seed``), each on freshly built physical layers of the same system, and collects the
result records. :func:`write_report` writes ``results.json`` (every record), ``table.md``
(accuracy mean ± std, physical queries, digital FLOPs, wall time) and ``cost_vs_accuracy.png``
(test accuracy against physical queries and against digital FLOPs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pnn import registry

__all__ = ["compare", "summarise", "markdown_table", "plot_costs", "write_report",
           "COMPARE_DEFAULTS"]

#: per-method settings that keep a 3-seed comparison within minutes on 2 CPU cores
COMPARE_DEFAULTS: dict[str, dict] = {
    "phyll": {"epochs": 12, "eval_train_max": 100},
    "pat": {"epochs": 12},
    "insilico": {"epochs": 12},
    "zo": {"epochs": 6, "lr": 3e-3},
}


def _config(method: str, overrides: dict, n_params: int | None):
    trainer = registry.get_trainer(method)
    fields = {f.name for f in dataclasses.fields(trainer.Config)}
    kw = {k: v for k, v in {**COMPARE_DEFAULTS.get(method, {}), **overrides}.items()
          if k in fields}
    if trainer.matches_parameter_budget and n_params is not None:
        kw.setdefault("n_params", n_params)
    return trainer.Config(**kw)


def compare(system: str, data, methods: list[str], seeds: list[int], *,
            overrides: dict | None = None, on_start: Callable | None = None,
            on_done: Callable | None = None, progress_factory: Callable | None = None,
            checkpoint: Callable | None = None) -> list[dict]:
    """Run ``methods`` x ``seeds``; returns the result records (models dropped).

    ``overrides`` maps a method name to config overrides. The digital MLP (``bp``) gets the
    trainable-parameter budget of the first physical method run with the same seed.
    ``on_start(method, seed, i, n)`` / ``on_done(record)`` report progress;
    ``checkpoint(records)`` is called after every run so nothing finished is lost.
    """
    overrides = overrides or {}
    unknown = [m for m in methods if m not in registry.TRAINERS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid methods: "
                         f"{', '.join(sorted(registry.TRAINERS))}")
    # physical methods first, so that a budget-matched reference can match their size
    order = sorted(methods, key=lambda m: not registry.get_trainer(m).uses_physical_layers)
    records = []
    n = len(order) * len(seeds)
    i = 0
    for seed in seeds:
        budget = None
        for method in order:
            i += 1
            if on_start:
                on_start(method, seed, i, n)
            cfg = _config(method, overrides.get(method, {}), budget)
            layers = registry.build_layers(system, method, cfg, data, seed=seed)
            trainer = registry.get_trainer(method)
            prog = progress_factory(method, seed, cfg) if progress_factory else None
            t = time.perf_counter()
            try:
                rec, _ = trainer.train(layers, data, cfg, seed=seed,
                                       progress=prog.update if prog else None)
            finally:
                if prog:
                    prog.close()
            rec.update({"system": system if layers else "digital", "data": data.describe(),
                        "run_s": round(time.perf_counter() - t, 2)})
            if budget is None and layers:
                budget = rec["n_trainable_params"]
            records.append(rec)
            if on_done:
                on_done(rec)
            if checkpoint:
                checkpoint(records)
    return records


def summarise(records: list[dict]) -> list[dict]:
    """One row a method: means and standard deviations over seeds."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in records):
        rs = [r for r in records if r["method"] == method]
        acc = np.array([r["test_accuracy"] for r in rs])
        rows.append({
            "method": method,
            "system": rs[0]["system"],
            "n_seeds": len(rs),
            "test_acc_mean": float(acc.mean()),
            "test_acc_std": float(acc.std(ddof=1)) if len(rs) > 1 else 0.0,
            "physical_queries": float(np.mean([r["cost"]["physical_queries"] for r in rs])),
            "train_queries": float(np.mean([r["cost"].get("queries_by_purpose", {})
                                            .get("train", 0) for r in rs])),
            "digital_flops": float(np.mean([r["cost"]["digital_flops"] for r in rs])),
            "wall_s": float(np.mean([r["cost"]["wall_s"] for r in rs])),
            "params": int(rs[0]["n_trainable_params"]),
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| method | runs on | test accuracy (mean ± std) | physical queries: all "
             "(training only) | digital FLOPs | wall time (s) | trainable params |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['system']} | {100 * r['test_acc_mean']:.1f} ± "
            f"{100 * r['test_acc_std']:.1f} % | {r['physical_queries']:,.0f} "
            f"({r['train_queries']:,.0f}) | "
            f"{r['digital_flops']:.2e} | {r['wall_s']:.1f} | {r['params']} |")
    return "\n".join(lines) + "\n"


def plot_costs(records: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for j, method in enumerate(dict.fromkeys(r["method"] for r in records)):
        rs = [r for r in records if r["method"] == method]
        acc = [r["test_accuracy"] for r in rs]
        for ax, key in zip(axes, ("physical_queries", "digital_flops")):
            xs = [max(r["cost"][key], 1) for r in rs]
            ax.scatter(xs, acc, color=f"C{j}", label=method, alpha=0.8)
            ax.errorbar(np.mean(xs), np.mean(acc), yerr=np.std(acc), color=f"C{j}", fmt="x",
                        capsize=3)
    axes[0].set_xlabel("physical queries (samples sent through physical layers; 1 = none)")
    axes[1].set_xlabel("digital FLOPs (counted from shapes)")
    axes[0].set_ylabel("test accuracy")
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(records: list[dict], out: Path, title: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(records, indent=2, default=str))
    os.replace(tmp, out / "results.json")
    rows = summarise(records)
    table = markdown_table(rows)
    (out / "table.md").write_text(f"# {title}\n\n{table}")
    plot_costs(records, out / "cost_vs_accuracy.png", title)
    return {"rows": rows, "table": table}
