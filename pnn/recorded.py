"""Recorded input/output pairs of an apparatus served as a physical layer: :func:`load_recorded`
reads them, :func:`from_recorded` fits a surrogate (:mod:`pnn.surrogate`) and checks it on
held-out pairs, :func:`recorded_system` offers a file as a system (``recorded:PATH``).
:mod:`pnn.layers` explains the file formats and when to use one.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pnn.function_layer import _check_output, _refuse_trace
from pnn.layer import LayerSpec, validate_input
from pnn.numtext import parse_float
from pnn.shared_layer import Shared

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - scikit-learn depends on it
    threadpool_limits = None

__all__ = ["from_recorded", "RecordedLayer", "load_recorded", "recorded_system",
           "SURROGATE_MODELS"]


_IN_COL = re.compile(r"^\s*(?:in|x)_?(\d+)\s*$", re.IGNORECASE)
_OUT_COL = re.compile(r"^\s*(?:out|y)_?(\d+)\s*$", re.IGNORECASE)


def _as_2d(a, what: str, where: str) -> np.ndarray:
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {what} must be an array of numbers ({e})") from None
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{where}: {what} must have shape (n_samples, n_channels), got "
                         f"{a.shape}")
    if not np.isfinite(a).all():
        rows = np.unique(np.argwhere(~np.isfinite(a))[:, 0])
        raise ValueError(f"{where}: {what} hold non-finite values in {len(rows)} row(s) (first: "
                         f"row {rows[0]}); remove or repair those measurements")
    return a


def load_recorded(path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read recorded pairs from a file: ``(inputs, outputs, meta)``.

    * ``.npz``: arrays ``inputs`` (N, n_in) and ``outputs`` (N, n_out); optional scalars
      ``lo`` and ``hi`` (the apparatus's drive range) come back in ``meta``.
    * ``.csv``: a header row, then one measurement per row; input columns named ``in0``,
      ``in1``, ... (or ``in_0``, ``x0``), output columns ``out0``, ... (or ``out_0``, ``y0``),
      ordered by their number; other columns are ignored (``meta["ignored_columns"]``).

    Raises:
        FileNotFoundError, ValueError: naming the file and what is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give recorded pairs as .npz (arrays "
                                f"'inputs' and 'outputs') or .csv (columns in0.., out0..)")
    suffix = path.suffix.lower()
    meta: dict[str, Any] = {"source": str(path)}
    if suffix == ".npz":
        x, y = _read_npz(path, meta)
    elif suffix == ".csv":
        x, y = _read_csv(path, meta)
    else:
        raise ValueError(f"{path}: unknown recorded-data format {suffix!r}; expected .npz "
                         f"(arrays 'inputs', 'outputs') or .csv (columns in0.., out0..)")
    return _as_2d(x, "inputs", str(path)), _as_2d(y, "outputs", str(path)), meta


def _read_npz(path: Path, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """The arrays ``inputs`` and ``outputs`` of an NPZ file; its ``lo`` and ``hi`` go to
    ``meta``."""
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable NPZ file ({e})") from None
    with z:
        missing = [k for k in ("inputs", "outputs") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {', '.join(missing)}; expected keys "
                             f"'inputs' (N, n_in) and 'outputs' (N, n_out), optional 'lo', "
                             f"'hi'; found {', '.join(z.files) or 'none'}")
        x, y = z["inputs"], z["outputs"]
        for k in ("lo", "hi"):
            if k in z.files:
                v = np.asarray(z[k])
                if v.size != 1:
                    raise ValueError(f"{path}: '{k}' must be a single number (the drive "
                                     f"range's bound), got shape {v.shape}")
                meta[k] = float(v.reshape(()))
    return x, y


def _read_csv(path: Path, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """The input and output columns of a CSV file, ordered by their numbers; the names of the
    other columns go to ``meta["ignored_columns"]``."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty file; expected a header row naming the columns "
                             f"in0, in1, ..., out0, out1, ...")
        ins = sorted((int(m.group(1)), j) for j, h in enumerate(header)
                     if (m := _IN_COL.match(h)))
        outs = sorted((int(m.group(1)), j) for j, h in enumerate(header)
                      if (m := _OUT_COL.match(h)))
        if not ins or not outs:
            raise ValueError(f"{path}: header {header} names no "
                             f"{'input' if not ins else 'output'} column; expected input "
                             f"columns in0, in1, ... and output columns out0, out1, ...")
        used = {j for _, j in ins + outs}
        meta["ignored_columns"] = [h for j, h in enumerate(header) if j not in used]
        rows_x, rows_y = [], []
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                rows_x.append([parse_float(row[j]) for _, j in ins])
                rows_y.append([parse_float(row[j]) for _, j in outs])
            except (ValueError, IndexError):
                raise ValueError(f"{path}, line {line}: expected a number in every input "
                                 f"and output column, got {row} (a value cut short, like '1.2e' "
                                 f"or '3.', means a truncated file)") from None
    if not rows_x:
        raise ValueError(f"{path}: a header but no measurements")
    return np.array(rows_x), np.array(rows_y)


#: the surrogate models :func:`from_recorded` offers by name
SURROGATE_MODELS = ("mlp", "ridge", "knn", "forest")


def _check_model(model) -> None:
    """Refuse a ``model`` that names no surrogate and is no estimator."""
    if not isinstance(model, str):
        if not (hasattr(model, "fit") and hasattr(model, "predict")):
            raise ValueError(f"from_recorded: model must be one of {', '.join(SURROGATE_MODELS)} "
                             f"or a scikit-learn style estimator with fit and predict, got "
                             f"{model!r}")
    elif model not in SURROGATE_MODELS:
        raise ValueError(f"from_recorded: unknown model {model!r}; valid models: "
                         f"{', '.join(SURROGATE_MODELS)}, or a scikit-learn estimator")


def _one_thread():
    """BLAS on one thread: the surrogates' matrices are small, and several BLAS threads
    contending with JAX's (or other processes') for a few cores made an MLP fit 20-40x slower
    (measured: 2.2 s on one thread against 53 s with the default pool, 1,200 pairs, a loaded
    2-core machine)."""
    if threadpool_limits is None:  # pragma: no cover - scikit-learn depends on threadpoolctl
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[list[float], float]:
    """R² per output and overall (1 - total squared error / total variance, all outputs)."""
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    per = [float(1 - r / t) if t > 0 else (1.0 if r == 0 else float("-inf"))
           for r, t in zip(ss_res, ss_tot)]
    overall = float(1 - ss_res.sum() / ss_tot.sum()) if ss_tot.sum() > 0 else per[0]
    return per, overall


class RecordedLayer:
    """A surrogate of an apparatus fitted to recorded pairs (see :func:`from_recorded`).

    Attributes:
        spec: the layer's spec (drive range: the recorded inputs' range unless given).
        report: the fit's quality on held-out pairs: ``r2`` (overall), ``r2_per_output``,
            ``residual_std`` (per output), ``n_train``, ``n_holdout``, ``model``, ``noise``,
            ``seed``, ``source``.
        residuals: the held-out residuals (measured minus predicted), shape
            ``(n_holdout, n_out)``; the noise model draws from them.
    """

    pad_batches = False

    def __init__(self, model, spec: LayerSpec, report: dict, residuals: np.ndarray | None,
                 noise: str | None, seed: int):
        self.model = model
        self.spec = spec
        self.report = report
        self.residuals = residuals
        self.noise = noise
        self.seed = int(seed)
        self.rng = np.random.default_rng([self.seed, 29])
        self.n_samples = 0

    def reseeded(self, seed: int, name: str | None = None) -> "RecordedLayer":
        """The same fitted surrogate with its own noise generator (and optionally name): one
        fit serves several blocks or seeds."""
        spec = self.spec if name is None else LayerSpec(
            self.spec.n_in, self.spec.n_out, self.spec.lo, self.spec.hi, name, self.spec.units)
        return RecordedLayer(self.model, spec, {**self.report, "seed": int(seed)},
                             self.residuals, self.noise, seed)

    def predict(self, x) -> np.ndarray:
        """The surrogate's noiseless prediction (no validation, no noise)."""
        with _one_thread():
            y = np.asarray(self.model.predict(np.asarray(x, dtype=np.float64)),
                           dtype=np.float64)
        return y.reshape(len(x), self.spec.n_out)

    def __call__(self, x):
        _refuse_trace(self.spec, x, "recorded-data surrogate")
        validate_input(self.spec, x)
        x = np.asarray(x)
        y = self.predict(x)
        if self.noise == "residual":
            y = y + self.residuals[self.rng.integers(0, len(self.residuals), size=len(x))]
        elif self.noise == "gaussian":
            y = y + self.rng.normal(size=y.shape) * np.asarray(self.report["residual_std"])
        self.n_samples += len(x)
        return _check_output(y, self.spec, len(x), f"the {self.report['model']} surrogate")

    def __repr__(self) -> str:
        return (f"RecordedLayer({self.spec.name!r}, model={self.report['model']!r}, "
                f"r2={self.report['r2']:.4f}, noise={self.noise!r})")


_NOISE = ("residual", "gaussian", None)


def from_recorded(inputs, outputs=None, *, model="mlp", noise: str | None = "residual",
                  seed: int = 0, holdout: float = 0.2, lo: float | None = None,
                  hi: float | None = None, name: str | None = None,
                  units: str = "arb.") -> RecordedLayer:
    """A physical layer that stands in for an apparatus, fitted to its recorded pairs.

    Args:
        inputs: drives sent, shape ``(N, n_in)``; or a path to an ``.npz``/``.csv`` file (then
            ``outputs`` is omitted; see :func:`load_recorded` for the keys and columns).
        outputs: what was measured for each drive, shape ``(N, n_out)``.
        model: ``"mlp"`` (default: a 2x64 tanh network, Adam, early stopping), ``"ridge"``
            (linear, regularisation by cross-validation), ``"knn"``, ``"forest"``, or any
            scikit-learn style estimator (cloned, then fitted on standardised columns as
            given).
        noise: ``"residual"`` (default) adds to every prediction a residual vector drawn at
            random from the held-out residuals (measured minus predicted: the apparatus's
            spread plus the surrogate's error, correlations between outputs kept);
            ``"gaussian"`` adds independent normal noise with each output's residual standard
            deviation; ``None`` returns the surrogate's prediction.
        seed: seeds the holdout split, the model's initialisation and the noise; the same seed
            gives the same layer and the same noise sequence.
        holdout: fraction of the pairs held out to measure the fit (``report``) and to draw
            noise from; ``0`` fits on everything (then ``noise`` must be ``None``).
        lo, hi: the drive range; default: the smallest and largest recorded input (from the file's
            ``lo``/``hi`` when it has them). Drives outside are refused, so the surrogate never
            extrapolates beyond what was measured unless the range is widened here.
        name, units: for errors and records (default name: ``recorded:<file>`` or ``recorded``).

    Returns: a :class:`RecordedLayer`; ``layer.report`` holds the held-out R² per output and
    overall.

    Raises:
        ValueError: mismatched or malformed data, too few pairs for the holdout, an unknown
            model or noise, or ``noise`` without a holdout.
    """
    x, y, meta, default_name = _recorded_pairs(inputs, outputs)
    where = meta.get("source", "from_recorded")
    n_hold = _n_holdout(where, len(x), len(y), noise, holdout)
    lo = meta.get("lo", float(x.min())) if lo is None else float(lo)
    hi = meta.get("hi", float(x.max())) if hi is None else float(hi)
    spec = LayerSpec(n_in=x.shape[1], n_out=y.shape[1], lo=lo, hi=hi,
                     name=name or default_name, units=units)
    perm = np.random.default_rng([int(seed), 31]).permutation(len(x))
    hold, fit = perm[:n_hold], perm[n_hold:]
    est = _fit(model, int(seed), x[fit], y[fit, 0] if y.shape[1] == 1 else y[fit])
    report: dict[str, Any] = {
        "model": model if isinstance(model, str) else type(model).__name__,
        "noise": noise, "seed": int(seed), "n_train": int(len(fit)), "n_holdout": int(n_hold),
        "n_in": int(x.shape[1]), "n_out": int(y.shape[1]), "source": meta.get("source"),
        "lo": lo, "hi": hi}
    if "ignored_columns" in meta:
        report["ignored_columns"] = meta["ignored_columns"]
    residuals = _held_out(est, x[hold], y[hold], report)
    return RecordedLayer(est, spec, report, residuals, noise, int(seed))


def _recorded_pairs(inputs, outputs) -> tuple[np.ndarray, np.ndarray, dict, str]:
    """``(x, y, meta, default name)`` from a file path or from two arrays."""
    if isinstance(inputs, (str, os.PathLike)):
        if outputs is not None:
            raise ValueError("from_recorded: give either a file path alone or the arrays "
                             "inputs and outputs, not a path and outputs")
        x, y, meta = load_recorded(inputs)
        return x, y, meta, f"recorded:{Path(inputs).name}"
    if outputs is None:
        raise ValueError("from_recorded: outputs missing; give from_recorded(inputs, "
                         "outputs) with one row of each per measurement, or a file path")
    x = _as_2d(inputs, "inputs", "from_recorded")
    y = _as_2d(outputs, "outputs", "from_recorded")
    return x, y, {}, "recorded"


def _n_holdout(where: str, n: int, n_y: int, noise, holdout) -> int:
    """The number of pairs held out, after checking the rows, ``noise`` and ``holdout``."""
    if n != n_y:
        raise ValueError(f"{where}: {n} input rows but {n_y} output rows; give one "
                         f"output row per input row")
    if noise not in _NOISE:
        raise ValueError(f"from_recorded: noise={noise!r}; expected 'residual', 'gaussian' or "
                         f"None")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) \
            or not 0 <= holdout < 1:
        raise ValueError(f"from_recorded: holdout={holdout!r}; expected a fraction in [0, 1), "
                         f"e.g. 0.2")
    n_hold = int(round(holdout * n))
    if holdout > 0 and (n_hold < 2 or n - n_hold < 2):
        raise ValueError(f"{where}: {n} recorded pairs are too few to hold out {holdout:g} of "
                         f"them (need at least 2 for fitting and 2 held out); record more pairs "
                         f"or change holdout")
    if noise is not None and n_hold == 0:
        raise ValueError(f"from_recorded: noise={noise!r} draws from held-out residuals, but "
                         f"holdout=0; give holdout > 0 or noise=None")
    return n_hold


def _fit(model, seed: int, x: np.ndarray, target: np.ndarray):
    """The surrogate ``model`` fitted to ``(x, target)`` on one BLAS thread."""
    _check_model(model)
    # scikit-learn takes about a second to import: paid only when a surrogate is fitted
    from pnn import surrogate

    est = surrogate.make_model(model, seed)
    with _one_thread():
        surrogate.fit(est, x, target)
    return est


def _held_out(est, x: np.ndarray, y: np.ndarray, report: dict) -> np.ndarray | None:
    """The held-out residuals (``None`` without a holdout); adds the fit's R² and the
    residuals' spread to ``report``."""
    if not len(x):
        report.update(r2=None, r2_per_output=None, residual_std=None)
        return None
    with _one_thread():
        pred = np.asarray(est.predict(x), dtype=np.float64).reshape(len(x), y.shape[1])
    residuals = y - pred
    per, overall = _r2(y, pred)
    report.update(r2=overall, r2_per_output=per,
                  residual_std=[float(s) for s in residuals.std(0)])
    return residuals


_RECORDED_CACHE: dict[tuple, RecordedLayer] = {}


def recorded_system(path) -> Callable:
    """A system factory (``registry.SYSTEMS`` form) serving recorded pairs from ``path``:
    ``factory(n_in, n_out, *, seed, name, model="mlp", noise="residual", holdout=0.2,
    fit_seed=0, lo=None, hi=None)``. The surrogate is fitted once per file and options
    (``fit_seed`` seeds the split and the model); every layer built gets its own noise
    (``seed``). A block narrower than the recorded apparatus is padded (see :class:`Shared`).
    ``pnn train --system recorded:PATH`` uses it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recorded:{path}: no such file; give recorded pairs as .npz "
                                f"(arrays 'inputs', 'outputs') or .csv (columns in0.., out0..)")

    def factory(n_in: int, n_out: int, *, seed: int = 0, name: str | None = None,
                model: str = "mlp", noise: str | None = "residual", holdout: float = 0.2,
                fit_seed: int = 0, lo: float | None = None, hi: float | None = None):
        if noise in ("none", "None", ""):
            noise = None
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size, model, noise, holdout,
               fit_seed, lo, hi)
        base = _RECORDED_CACHE.get(key)
        if base is None:
            base = _RECORDED_CACHE[key] = from_recorded(
                path, model=model, noise=noise, seed=fit_seed, holdout=holdout, lo=lo, hi=hi)
        dev = base.reseeded(seed, name=name or base.spec.name)
        if (n_in, n_out) == (dev.spec.n_in, dev.spec.n_out):
            return dev
        return Shared(dev, n_in, n_out, name=dev.spec.name)

    factory.__name__ = f"recorded:{path}"
    return factory
