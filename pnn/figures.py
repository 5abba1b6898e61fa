"""Figures fit for a talk: plain method names, one style, a chance line, seed bands, PNG + SVG.

Shared by ``pnn report`` (:mod:`pnn.report`) and the plots that ``pnn compare`` and ``pnn adapt``
write beside their records.

* :data:`METHOD_NAMES` / :func:`method_name`: the names a reader knows, never internal codes;
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

import numpy as np

__all__ = ["METHOD_NAMES", "method_name", "is_digital", "talk_style", "chance_line",
           "mean_band", "save", "SYSTEM_NAMES", "system_name"]

#: registry code -> the name a reader knows
METHOD_NAMES: dict[str, str] = {
    "phyll": "PhyLL",
    "pat": "physics-aware training",
    "insilico": "in-silico backprop",
    "zo": "zeroth-order (SPSA)",
    "linear": "logistic regression",
    "bp": "digital MLP (backprop)",
    "ff": "Forward-Forward",
    "mf": "Mono-Forward",
}

#: system code -> what it is
SYSTEM_NAMES: dict[str, str] = {
    "acoustic": "acoustic simulator",
    "optical": "optical simulator",
    "microwave": "microwave simulator",
    "digital": "digital",
    "none": "no physics (zero reading)",
    "random_linear": "fixed random linear map",
    "random_nonlinear": "fixed random speckle map |Gd|²",
    "random_nonlinear[kind=tanh]": "fixed random tanh network",
}


def method_name(code: str) -> str:
    """The plain name of a method code (the code itself when it has none)."""
    return METHOD_NAMES.get(code, code)


def system_name(code: str) -> str:
    return SYSTEM_NAMES.get(code, code)


def is_digital(record: dict) -> bool:
    """Whether a result record ran without any physical layer."""
    return record.get("system", "digital") == "digital" or not record.get("layers", True)


@contextmanager
def talk_style():
    """Matplotlib settings for figures shown on a slide (fonts of 12-15 pt at the saved size)."""
    import matplotlib

    matplotlib.use("Agg")
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


def mean_band(values: Sequence[Sequence[float]], confidence: float = 0.95):
    """Mean and the Student-t interval of the mean over the first axis (seeds).

    ``values``: shape (seeds, points). Returns ``(mean, lo, hi)``, each of shape (points,);
    with one seed the band is the mean itself."""
    a = np.asarray(values, dtype=float)
    mean = a.mean(axis=0)
    n = a.shape[0]
    if n < 2:
        return mean, mean, mean
    from scipy import stats

    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * a.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def save(fig, path: str | Path, *, dpi: int = 150) -> list[Path]:
    """Write ``path`` (a .png) and the same figure as .svg beside it; returns both paths."""
    from pnn.fileio import atomic_savefig

    path = Path(path)
    png = path.with_suffix(".png")
    svg = path.with_suffix(".svg")
    atomic_savefig(fig, png, dpi=dpi, metadata={"Software": None})
    atomic_savefig(fig, svg, metadata={"Date": None, "Creator": None})
    return [png, svg]
