"""Figures fit for a talk: plain method names, one style, a chance line, seed bands, PNG + SVG.

Shared by ``pnn report`` (:mod:`pnn.report`) and the plots that ``pnn compare`` and ``pnn adapt``
write beside their records.

* :func:`method_name` / :func:`system_name`: the names a reader knows (from the registry's
  records), never internal codes;
* :func:`talk_style`: readable fonts (a figure read from the back of a room), light grid;
* :func:`chance_line`: the accuracy of guessing, ``1 / n_classes``, as a labelled dashed line;
* :func:`mean_band`: mean and two-sided 95 % Student-t band over seeds, point by point;
* :func:`save`: the PNG and an SVG beside it, both written atomically
  (:func:`pnn.fileio.atomic_savefig`); the SVG carries no date and fixed element ids, so a figure
  regenerated from the same records is the same file.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from pnn import registry
from pnn.fileio import atomic_savefig
from pnn.stats import t_interval

__all__ = ["method_name", "is_digital", "talk_style", "chance_line",
           "accuracy_by_method", "learning_curves", "ablation_systems", "adaptation_bands",
           "event_text", "colour", "log_ticks", "mean_band", "save", "system_name"]


def method_name(code: str) -> str:
    """The plain name of a method code (its :class:`~pnn.registry.Trainer`'s display name; the
    code itself when no trainer has it)."""
    return registry.describe_method(code)


def system_name(code: str) -> str:
    """What a system code stands for (its :class:`~pnn.registry.System`'s display name)."""
    return registry.describe_system(code)


def is_digital(record: dict) -> bool:
    """Whether a result record ran without any physical layer."""
    return record.get("system", "digital") == "digital" or not record.get("layers", True)


@contextmanager
def talk_style():
    """Matplotlib settings for figures shown on a slide (fonts of 12-15 pt at the saved size)."""
    matplotlib.use("Agg")
    # pyplot (half a second) loads with the first figure: the names and colours need none of it
    import matplotlib.pyplot as plt

    with plt.rc_context({"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 13,
                         "xtick.labelsize": 11, "ytick.labelsize": 11, "legend.fontsize": 10,
                         "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "lines.linewidth": 2.0,
                         "svg.hashsalt": "pnn", "svg.fonttype": "none"}):
        yield plt


def chance_line(ax, n_classes: int, *, percent: bool = True, label: bool = True) -> None:
    """A dashed grey line at chance accuracy ``1 / n_classes``."""
    if n_classes < 2:
        return
    y = (100.0 if percent else 1.0) / n_classes
    ax.axhline(y, color="0.45", ls="--", lw=1.3, zorder=1,
               label=f"chance (1/{n_classes})" if label else None)


def log_ticks(ax, axis: str = "x") -> None:
    """A log axis labelled like 2e4: at 1, 2 and 5 times each power of ten over a short span,
    at the powers of ten over a long one. Call it after plotting (it reads the limits)."""
    def fmt(v, _):
        if v <= 0:
            return ""
        e = int(math.floor(math.log10(v) + 1e-9))
        m = v / 10 ** e
        return f"{m:.0f}e{e}" if e not in (0, 1, 2) else f"{v:g}"

    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()  # call after plotting
    few = lo > 0 and math.log10(hi / lo) <= 2.5
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if few else (1.0,)))
    a.set_major_formatter(FuncFormatter(fmt))
    a.set_minor_formatter(NullFormatter())


def mean_band(values: Sequence[Sequence[float]], confidence: float = 0.95):
    """Mean and the Student-t interval of the mean over the first axis (seeds).

    ``values``: shape (seeds, points). Returns ``(mean, lo, hi)``, each of shape (points,);
    with one seed the band is the mean itself."""
    a = np.asarray(values, dtype=float)
    mean = a.mean(axis=0)
    n = a.shape[0]
    if n < 2:
        return mean, mean, mean
    from scipy import stats  # about a second to import: only when a band is drawn

    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * a.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def save(fig, path: str | Path, *, dpi: int = 150, description: str | None = None) -> list[Path]:
    """Write ``path`` (a .png) and the same figure as .svg beside it; returns both paths.
    ``description`` goes into both files' metadata (``pnn report`` puts its inputs' digest
    there)."""
    path = Path(path)
    png = path.with_suffix(".png")
    svg = path.with_suffix(".svg")
    extra = {"Description": description} if description else {}
    atomic_savefig(fig, png, dpi=dpi, metadata={"Software": None, **extra})
    atomic_savefig(fig, svg, metadata={"Date": None, "Creator": None, **extra})
    return [png, svg]


# ------------------------------------------------------------------------ report figures

def colour(method: str, j: int = 0) -> str:
    """The method's colour (its :class:`~pnn.registry.Trainer` record's, so that a method keeps
    its colour from figure to figure), else the ``j``-th of the cycle."""
    trainer = registry.TRAINERS.get(method)
    return trainer.colour if trainer is not None and trainer.colour else f"C{j % 10}"


def _n_classes(records: Sequence[dict]) -> int:
    return max((len(r.get("data", {}).get("classes", [])) for r in records), default=0)


def _interval_pct(values: Sequence[float], confidence: float = 0.95):
    iv = t_interval(values, confidence)
    m = 100 * iv["mean"]
    if not math.isfinite(iv["half_width"]):
        return m, m, m
    return m, max(m - 100 * iv["half_width"], 0.0), min(m + 100 * iv["half_width"], 100.0)


def _dot_intervals(ax, groups: list[tuple[str, list[tuple[str, str, list[float]]]]],
                   n_classes: int, xlabel: str) -> None:
    """Horizontal dot-and-interval rows: ``groups`` = [(title, [(code, name, values)])]; a
    group title above each group, a gap between groups; values are accuracies in [0, 1]."""
    rng = np.random.default_rng(0)
    y, ticks, labels = 0.0, [], []
    for g, (title, rows) in enumerate(groups):
        if not rows:
            continue
        if g:
            y += 0.8
            ax.axhline(y - 0.9, color="0.6", lw=0.8)
        ax.text(0.0, y - 0.55, title, transform=ax.get_yaxis_transform(), fontsize=11,
                fontweight="bold", va="center", ha="left", color="0.25", zorder=4,
                bbox=dict(facecolor="white", edgecolor="none", pad=1.0))
        for j, (code, name, values) in enumerate(rows):
            c = colour(code, j)
            m, lo, hi = _interval_pct(values)
            ax.scatter(100 * np.asarray(values), y + rng.uniform(-0.12, 0.12, len(values)),
                       s=18, color=c, alpha=0.45, zorder=2, lw=0)
            ax.errorbar(m, y, xerr=[[m - lo], [hi - m]], fmt="o", color=c, ms=8, capsize=4,
                        lw=2, zorder=3)
            right = max(hi, 100 * max(values))
            ax.text(right + 1.2, y, f"{m:.1f} %", va="center", fontsize=10, color=c)
            ticks.append(y)
            labels.append(name)
            y += 1.0
    ax.set_yticks(ticks, labels)
    ax.set_ylim(y - 0.4, -1.1)
    chance_line(ax, n_classes, label=False)
    if n_classes >= 2:
        ax.axvline(100 / n_classes, color="0.45", ls="--", lw=1.3)
        ax.text(100 / n_classes, y - 0.45, f" chance ({100 / n_classes:.0f} %)", fontsize=10,
                color="0.35", va="bottom")
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)


def accuracy_by_method(records: Sequence[dict], path, *, title: str | None = None,
                       reported: Sequence[tuple[str, float]] = (),
                       description: str | None = None) -> list:
    """Test accuracy of every method of a comparison: mean and 95 % t interval over seeds (the
    bar), each seed a dot; methods on physical layers and digital ones in separate groups.
    ``reported``: (label, accuracy in %) a paper reported on the same task, drawn as dotted
    lines (their systems and protocols differ from ours; the label says whose)."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    physical, digital = [], []
    for code in methods:
        rs = [r for r in records if r["method"] == code]
        row = (code, method_name(code), [r["test_accuracy"] for r in rs])
        (digital if is_digital(rs[0]) else physical).append(row)
    system = next((r["system"] for r in records if not is_digital(r)), None)
    seeds = len({r["seed"] for r in records})
    with talk_style() as plt:
        fig, ax = plt.subplots(figsize=(9, 0.55 * len(methods) + 2.4))
        ax.set_xlim(0, 108)
        _dot_intervals(ax, [(f"on the {system_name(system)}" if system else "physical",
                             physical), ("digital (no physical layer)", digital)],
                       _n_classes(records),
                       f"test accuracy (%; mean and 95 % interval over {seeds} seeds, "
                       "dots: seeds)")
        for k, (label, pct) in enumerate(reported):
            ax.axvline(pct, color="k", ls=":", lw=1.3)
            ax.text(pct - 0.8, 0.02 + 0.07 * k, label, transform=ax.get_xaxis_transform(),
                    ha="right", va="bottom", fontsize=10,
                    bbox=dict(facecolor="white", edgecolor="none", pad=1.0))
        data = records[0].get("data", {})
        ax.set_title(title or f"test accuracy by method, {data.get('name', '')}", loc="left")
        fig.tight_layout()
        try:
            return save(fig, path, description=description)
        finally:
            plt.close(fig)


def learning_curves(records: Sequence[dict], path, *, title: str | None = None,
                    description: str | None = None) -> list:
    """Validation accuracy against the physical queries spent on learning, mean and 95 % band
    over seeds, for the methods on physical layers (log axis); digital methods, which spend no
    physical query, are shown apart in a right panel, never at a made-up query count."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    n_classes = _n_classes(records)
    with talk_style() as plt:
        fig, (ax, side) = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True,
                                       gridspec_kw={"width_ratios": [3, 1.25]})
        digital = []
        for j, code in enumerate(methods):
            rs = [r for r in records if r["method"] == code]
            if is_digital(rs[0]):
                digital.append((code, [r["val_accuracy"] for r in rs]))
                continue
            curves = [[(h["train_queries"], h["val_accuracy"]) for h in r.get("history", [])
                       if "val_accuracy" in h and h.get("train_queries", 0) > 0] for r in rs]
            n = min((len(c) for c in curves), default=0)
            if n == 0:  # learns without querying the physics (in-silico): shown apart
                digital.append((code, [r["val_accuracy"] for r in rs]))
                continue
            q = np.mean([[p[0] for p in c[:n]] for c in curves], axis=0)
            mean, lo, hi = mean_band([[100 * p[1] for p in c[:n]] for c in curves])
            c = colour(code, j)
            ax.fill_between(q, lo, hi, color=c, alpha=0.18, lw=0)
            ax.plot(q, mean, "o-", color=c, ms=4, label=method_name(code))
        log_ticks(ax)
        ax.set_xlabel("physical queries spent on learning (samples through the physical "
                      "layers; log scale)")
        ax.set_ylabel("validation accuracy (%)")
        chance_line(ax, n_classes)
        ax.legend(loc="center right")
        ax.set_ylim(0, 100)
        ax.set_title(title or "learning on the physical layers (mean and 95 % band over "
                              f"{len({r['seed'] for r in records})} seeds)", loc="left")
        for k, (code, values) in enumerate(digital):
            m, lo_, hi_ = _interval_pct(values)
            side.errorbar(k, m, yerr=[[m - lo_], [hi_ - m]], fmt="s", color=colour(code, k),
                          ms=8, capsize=4)
        side.set_xticks(range(len(digital)), [method_name(c) for c, _ in digital],
                        rotation=35, ha="right")
        side.set_xlim(-0.6, max(len(digital) - 0.4, 0.6))
        chance_line(side, n_classes, label=False)
        side.set_title("no physical query for learning\n(validation, selected epoch)",
                       loc="left", fontsize=11)
        side.grid(axis="x", visible=False)
        fig.tight_layout()
        try:
            return save(fig, path, description=description)
        finally:
            plt.close(fig)


def ablation_systems(ablation: dict, path, *, n_classes: int = 0,
                     description: str | None = None) -> list:
    """Test accuracy of PhyLL for every stand-in of the physical layer (ablation.json)."""
    rows = ablation["systems"]
    seeds = ablation.get("meta", {}).get("seeds", rows[0]["test"]["n"])
    with talk_style() as plt:
        fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 2.0))
        ticks = []
        for k, r in enumerate(rows):
            t = r["test"]
            m, lo, hi = 100 * t["mean"], 100 * max(t["lo"], 0), 100 * min(t["hi"], 1)
            c = "#d62728" if r["system"] in ("acoustic", "optical", "microwave") else "0.35"
            ax.errorbar(m, k, xerr=[[m - lo], [hi - m]], fmt="o", color=c, ms=8, capsize=4)
            ax.text(hi + 0.6, k, f"{m:.1f} %", va="center", fontsize=10, color=c)
            ticks.append(system_name(r["label"]))
        ax.set_yticks(range(len(rows)), ticks)
        ax.set_ylim(len(rows) - 0.4, -0.6)
        ax.set_xlim(0, 100)
        if n_classes >= 2:
            ax.axvline(100 / n_classes, color="0.45", ls="--", lw=1.3)
            ax.text(100 / n_classes, len(rows) - 0.45, f" chance ({100 / n_classes:.0f} %)",
                    fontsize=10, color="0.35", va="bottom")
        ax.set_xlabel(f"PhyLL test accuracy (%; mean and 95 % interval over {seeds} seeds)")
        ax.set_title("what the physical layer contributes (PhyLL, Peterson & Barney vowels)",
                     loc="left", fontsize=12)
        ax.grid(axis="y", visible=False)
        fig.tight_layout()
        try:
            return save(fig, path, description=description)
        finally:
            plt.close(fig)


def event_text(ev: dict, param: str) -> str:
    """An adaptation event in words, its size in the parameter's units."""
    p = registry.describe_param(param)
    unit, relative = p.unit, p.relative
    if ev["kind"] == "drift":
        rate = (f"{100 * ev['rate']:+g} %/epoch" if relative
                else f"{ev['rate']:+g} {unit}/epoch")
        return f"drift {rate}"
    if ev["factor"] != 1:
        return f"jump ×{ev['factor']:g}"
    return f"jump {ev['offset']:+g} {unit}"


def adaptation_bands(records: Sequence[dict], path, *, description: str | None = None) -> list:
    """Test accuracy on the current physics while the physics changes, mean and 95 % band over
    the seeds' runs (traces interpolated onto the first run's measurement times); the events
    marked with their size in units; below, the moved parameter."""
    first = records[0]
    param = first["param"]
    p = registry.describe_param(param, first.get("system"))
    name, unit = p.label, p.unit
    with talk_style() as plt:
        fig, (ax, low) = plt.subplots(2, 1, figsize=(11, 6.4), sharex=True,
                                      gridspec_kw={"height_ratios": [3.2, 1]})
        for j, code in enumerate(first["methods"]):
            grid = np.array([t["epoch"] for t in first["methods"][code]["trace"]])
            runs = [np.interp(grid, [t["epoch"] for t in r["methods"][code]["trace"]],
                              [100 * t["test_accuracy"] for t in r["methods"][code]["trace"]])
                    for r in records if code in r["methods"]]
            mean, lo, hi = mean_band(runs)
            c = colour(code, j)
            ax.fill_between(grid, lo, hi, color=c, alpha=0.18, lw=0)
            ax.plot(grid, mean, color=c, label=method_name(code))
        tr = first["methods"][next(iter(first["methods"]))]["trace"]
        if all("param_value" in t for t in tr):
            low.plot([t["epoch"] for t in tr], [t["param_value"] for t in tr], color="k")
        low.set_ylabel(f"{name.split()[-1]}\n({unit})", fontsize=11)
        for ev in first["events"]:
            for a in (ax, low):
                a.axvline(ev["epoch"], color="k", ls=":", lw=1.2)
                if ev["kind"] == "drift":
                    a.axvspan(ev["epoch"], first["epochs"], color="0.9", lw=0, zorder=0)
            ax.text(ev["epoch"] + 0.15, 97, event_text(ev, param), fontsize=11, va="top")
        chance_line(ax, _n_classes([first]))
        ax.set_ylim(0, 100)
        ax.set_ylabel("test accuracy on the\ncurrent physics (%)")
        ax.legend(loc="lower right", ncol=2)
        ax.set_title(f"{system_name(first['system'])}: the {name} changes during training\n"
                     f"mean and 95 % band over {len(records)} seeds; physics-aware training "
                     f"keeps a {first['twin']} twin", loc="left", fontsize=12)
        low.set_xlabel(f"training time (epochs; accuracy measured {first['evals_per_epoch']}× "
                       "an epoch)")
        fig.tight_layout()
        try:
            return save(fig, path, description=description)
        finally:
            plt.close(fig)
