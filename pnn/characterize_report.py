"""The report of :func:`pnn.characterize.characterize` as a text table, a figure and strict
JSON (re-exported by :mod:`pnn.characterize`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np

from pnn.fileio import atomic_savefig, atomic_write_text
from pnn.fits import FIT_KINDS


__all__ = ["format_table", "plot", "to_json", "write_report"]


def _f(v, fmt: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v, fmt)


def format_table(report: dict) -> str:
    """The report as text: one row per drive set, then repeatability, drift and the cost."""
    lay = report["layer"]
    lines = [f"{lay['name']} ({lay['type']}): n_in={lay['n_in']}, n_out={lay['n_out']}, drive "
             f"range [{lay['lo']:g}, {lay['hi']:g}] ({lay['units']})", ""]
    head = (f"{'drive set':<24}{'samples':>8}{'R² linear':>11}{'R² quadratic':>14}"
            f"{'partic. ratio':>15}{'entropy rank':>14}{'99 % var.':>11}")
    lines += [head, "-" * len(head)]
    notes = []
    for name, s in report["drive_sets"].items():
        fit, rank = s["fit"], s["rank"]
        lines.append(f"{name:<24}{s['n_samples']:>8}{_f(fit['linear']):>11}"
                     f"{_f(fit['quadratic']):>14}{_f(rank['participation_ratio'], '.2f'):>15}"
                     f"{_f(rank['entropy_rank'], '.2f'):>14}{rank['n_components']:>11}")
        for key in ("linear_note", "quadratic_note"):
            if key in fit:
                notes.append(f"{name}: {key.split('_')[0]} fit: {fit[key]}")
        if "note" in rank:
            notes.append(f"{name}: {rank['note']}")
        if "layer" in s:
            notes.append(f"{name}: measured on {s['layer']['name']} (n_in={s['layer']['n_in']}, "
                         f"n_out={s['layer']['n_out']})")
    lines.append("")
    r = report.get("repeatability")
    if r:
        lines.append(f"repeatability ({r['repeats']} repeats of {r['n_drives']} drives): noise "
                     f"{_f(r['noise'], '.4g')}, signal {_f(r['signal'], '.4g')}, "
                     f"noise-to-signal {_f(r['noise_to_signal'], '.4g')}, SNR "
                     f"{_f(r['snr_db'], '.1f')} dB" + (f" ({r['note']})" if "note" in r else ""))
    d = report.get("drift")
    if d:
        lines.append(f"drift ({d['n_checks']} checks of {d['n_reference']} drives over "
                     f"{d['t_s'][-1]:.1f} s, {d['queries'][-1]:,} queries): relative change "
                     f"first to last {_f(d['first_to_last'], '.3g')} (gain "
                     f"{_f(d['first_to_last_gain'], '+.3g')}); gain slope "
                     f"{_f(d['slope_per_s'], '.3g')} /s, "
                     f"{_f(d['slope_per_query'], '.3g')} /query"
                     + (f" ({d['note']})" if "note" in d else ""))
    lines.append(f"{report['physical_queries']:,} physical queries, {report['wall_s']:.1f} s "
                 f"({report['physical_s']:.1f} s in the layer)")
    if notes:
        lines += ["", "notes:"] + [f"  {t}" for t in notes]
    return "\n".join(lines)


def plot(report: dict, path) -> Path:
    """Two panels: held-out R² (linear, quadratic) per drive set, and each set's explained
    variance per principal component of the responses (log scale). Written atomically."""
    matplotlib.use("Agg")
    # pyplot (half a second) loads with the figure: the table and the JSON need none of it
    import matplotlib.pyplot as plt

    sets = report["drive_sets"]
    names = list(sets)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = np.arange(len(names))
    width = 0.38
    for j, (key, label) in enumerate((("linear", "linear fit"), ("quadratic", "degree-2 fit"))):
        vals = [sets[s]["fit"][key] for s in names]
        shown = [0.0 if v is None or not math.isfinite(v) else max(v, -0.2) for v in vals]
        bars = ax1.bar(xs + (j - 0.5) * width, shown, width, label=label, color=f"C{j}")
        for b, v in zip(bars, vals):
            ax1.text(b.get_x() + b.get_width() / 2, max(b.get_height(), 0) + 0.01, _f(v, ".2f"),
                     ha="center", va="bottom", fontsize=7)
    ax1.set_xticks(xs, names, rotation=20, ha="right", fontsize=8)
    ax1.set_ylim(min(-0.05, *[min(0, max(sets[s]["fit"][k], -0.2)) for s in names
                               for k in FIT_KINDS
                               if sets[s]["fit"][k] is not None
                               and math.isfinite(sets[s]["fit"][k])]))
    ax1.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax1.set_ylim(top=1.3)
    ax1.set_ylabel("held-out R²")
    ax1.set_title("how nonlinear: R² of a linear and a degree-2 fit", fontsize=10)
    ax1.legend(fontsize=8, loc="upper center", ncol=2)
    for j, s in enumerate(names):
        ev = np.asarray(sets[s]["rank"]["explained_variance"], np.float64)
        ev = ev[ev > 0]
        if len(ev):
            r = sets[s]["rank"]
            ax2.semilogy(np.arange(1, len(ev) + 1), ev, "o-", ms=3, color=f"C{j}",
                         label=f"{s} (PR {r['participation_ratio']:.1f}, 99 %: "
                               f"{r['n_components']})")
    ax2.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax2.set_xlabel("principal component of the responses")
    ax2.set_ylabel("fraction of the variance")
    ax2.set_title("how many features: the response spectrum", fontsize=10)
    ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend(fontsize=7)
    lay = report["layer"]
    sub = []
    rep = report.get("repeatability")
    if rep:
        snr = rep["snr_db"]
        sub.append("no scatter between repeats" if rep["noise"] == 0 else
                   f"SNR {_f(snr, '.1f')} dB")
    if report.get("drift"):
        sub.append(f"drift first to last {_f(report['drift']['first_to_last'], '.2g')}")
    fig.suptitle(f"{lay['name']}: n_in={lay['n_in']}, n_out={lay['n_out']}"
                 + (f"; {', '.join(sub)}" if sub else ""), fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return atomic_savefig(fig, path, dpi=110)
    finally:
        plt.close(fig)


def _strict(obj):
    """Plain JSON data: NaN and infinities become None (the notes beside them say why)."""
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist())
    return obj


def to_json(report: dict) -> str:
    """The report as strict JSON (no NaN or Infinity: ``null``, with its note)."""
    return json.dumps({**_strict(report), "null": "an undefined or infinite value (an "
                       "infinite SNR, an R² not fitted): see the note beside it"},
                      indent=1, allow_nan=False)


def write_report(report: dict, folder) -> tuple[Path, Path]:
    """Write ``folder/characterize.json`` and ``folder/characterize.png``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    js = atomic_write_text(folder / "characterize.json", to_json(report) + "\n")
    return js, plot(report, folder / "characterize.png")
