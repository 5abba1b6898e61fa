"""Bring your own physics: physical layers from your own code, from recorded data, and one
apparatus shared by every block.

Three ways in, besides writing a class with ``spec`` and ``__call__`` (:mod:`pnn.layer`):

* :func:`from_function` wraps any callable, a NumPy function, a PyTorch module, a call to a
  remote machine, as a :class:`~pnn.layer.PhysicalLayer`. The function runs on the host; it
  receives a NumPy array of drives that has already passed the shared input validation (shape,
  finiteness, the range ``[lo, hi]``) and its answer is checked (shape, real numbers, finite)
  before a trainer sees it::

      import numpy as np
      from pnn.layers import from_function

      A = np.random.default_rng(0).normal(size=(20, 20))
      layer = from_function(lambda x: np.tanh(x @ A) ** 2, (20, 20), name="my-rig")

  A PyTorch model works the same way (``lambda x: net(torch.from_numpy(x)).detach().numpy()``,
  or return the tensor: tensors are converted). ``batched=False`` calls the function once per
  drive vector, for an apparatus that takes one setting at a time.

* :func:`from_recorded` fits a surrogate (scikit-learn) to recorded input/output pairs of an
  apparatus and serves it as a layer: a stand-in for an apparatus that is not at hand (the lab is
  busy, the device is on another continent, the measurements were published). The fit is
  checked on held-out pairs (``layer.report``: R² per output and overall) and the layer can add
  measurement noise drawn from the held-out residuals, so training sees the apparatus's own
  spread. The drive range defaults to the range of the recorded inputs: the surrogate is never
  asked to extrapolate::

      layer = from_recorded("cavity.npz", model="mlp", noise="residual", seed=0)
      print(layer.report["r2"], layer.report["r2_per_output"])

  Recorded data: arrays ``inputs`` (N, n_in) and ``outputs`` (N, n_out); or an NPZ file with
  those two keys (optionally ``lo`` and ``hi``, the apparatus's drive range); or a CSV file with
  a header row naming the input columns ``in0, in1, ...`` (also ``in_0`` or ``x0``) and the
  output columns ``out0, out1, ...`` (also ``out_0`` or ``y0``), one row per measurement, in
  any order; other columns (a timestamp, a note) are ignored and listed in the report. From the
  command line: ``pnn train --system recorded:cavity.npz``.

* :class:`Shared` lets one apparatus serve several blocks (time-multiplexed: the blocks' queries
  go through the same device in turn), see "Shared layers" below.

Shared layers
-------------
A lab usually has one physical system, and the PhyLL authors send every block through it. Blocks
may share a layer when their drive widths equal the layer's ``n_in``. A block whose drive is
narrower, such as PhyLL's first block (label slots + features + 1 channels, against the hidden
width of the others), is **padded**: its drive is extended with the layer's lower bound ``lo``
(the "off" setting) up to the layer's ``n_in``, appended after the block's own channels; and a
block that reads fewer channels than the layer measures reads the **first** ``n_out`` of them. A
block that needs more drive channels or more measured channels than the layer has is refused,
naming the block, both widths and the fix. :func:`share` builds the per-block views of one
layer; ``pnn train --shared`` (or one ``--instrument`` for a network of several blocks) does so
from the command line. Each view is named ``<device>[block k]``, so the ledger counts queries per
block (``queries_by_layer``) and per device (``queries_by_device``).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pnn.layer import LayerSpec, is_traced, validate_input
from pnn.layer import device_name as _device_name
from pnn.numtext import parse_float

__all__ = ["from_function", "FunctionLayer", "from_recorded", "RecordedLayer", "load_recorded",
           "Shared", "share", "devices", "device_name", "recorded_system", "SURROGATE_MODELS",
           "WidthError"]


def _fn_name(fn) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        name = type(fn).__name__
    mod = getattr(fn, "__module__", None)
    return f"{mod}.{name}" if mod and mod not in ("__main__", "builtins") else name


def _as_numpy(y) -> np.ndarray:
    """A function's answer as a NumPy array (PyTorch tensors and JAX arrays included)."""
    if hasattr(y, "detach") and hasattr(y, "cpu"):  # a torch tensor, possibly requiring grad
        y = y.detach().cpu().numpy()
    return np.asarray(y)


def _check_output(y, spec: LayerSpec, n: int, what: str) -> np.ndarray:
    """Check a measurement: real numbers, shape ``(n, spec.n_out)``, finite."""
    try:
        y = _as_numpy(y)
    except Exception as e:  # e.g. a list of ragged rows
        raise ValueError(f"{spec.name}: {what} returned something that is not an array of "
                         f"numbers ({type(y).__name__}: {e}); return a (batch, {spec.n_out}) "
                         f"array") from None
    if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y) or y.dtype == bool:
        raise ValueError(f"{spec.name}: {what} returned dtype {y.dtype}, expected real numbers; "
                         f"return a float array of shape ({n}, {spec.n_out})")
    if y.shape != (n, spec.n_out):
        raise ValueError(f"{spec.name}: {what} returned shape {y.shape}, expected ({n}, "
                         f"{spec.n_out}) (one row of {spec.n_out} measured values per drive "
                         f"vector); fix the function or declare n_out={y.shape[-1] if y.ndim else '?'}"
                         f" in the spec")
    finite = np.isfinite(y)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(f"{spec.name}: {what} returned non-finite measurements: "
                         f"{float(y[tuple(bad)])} at (sample {bad[0]}, channel {bad[1]}) and "
                         f"{int((~finite).sum())} non-finite in all; a measurement must be a "
                         f"finite number (check the function for overflow or a failed reading)")
    return y.astype(np.float32, copy=False)


def _refuse_trace(spec: LayerSpec, x, kind: str) -> None:
    if is_traced(x):
        raise TypeError(f"{spec.name}: a {kind} runs on the host and cannot be traced by JAX "
                        f"(jit/grad/vmap); call it with concrete arrays (the model-free trainers "
                        f"do, through pnn.cost.Ledger.query), or give a method that needs "
                        f"gradients a differentiable simulator as its model")


# ----------------------------------------------------------------------------- from_function
class FunctionLayer:
    """A :class:`~pnn.layer.PhysicalLayer` around a host-side callable (see
    :func:`from_function`). ``n_calls`` and ``n_samples`` count what reached the function."""

    pad_batches = False

    def __init__(self, fn: Callable, spec: LayerSpec, *, batched: bool = True):
        self.fn = fn
        self.spec = spec
        self.batched = bool(batched)
        self.n_calls = 0
        self.n_samples = 0

    def __call__(self, x):
        _refuse_trace(self.spec, x, "function layer")
        validate_input(self.spec, x)
        x = np.array(x)  # a copy: the function may modify its argument without harm
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        what = f"the function {_fn_name(self.fn)}"
        if self.batched:
            y = self.fn(x)
            self.n_calls += 1
        else:
            rows = []
            for i, xi in enumerate(x):
                yi = _as_numpy(self.fn(xi))
                self.n_calls += 1
                if yi.shape != (self.spec.n_out,):
                    raise ValueError(
                        f"{self.spec.name}: {what} (batched=False) returned shape {yi.shape} for "
                        f"drive vector {i}, expected ({self.spec.n_out},): one measured vector "
                        f"per call")
                rows.append(yi)
            y = np.stack(rows)
        self.n_samples += len(x)
        return _check_output(y, self.spec, len(x), what)

    def __repr__(self) -> str:
        return f"FunctionLayer({_fn_name(self.fn)}, {self.spec})"


_UNSET: Any = object()


def from_function(fn: Callable, spec_or_shape, *, name: str | None = None, lo: float = _UNSET,
                  hi: float = _UNSET, units: str = _UNSET, batched: bool = True) -> FunctionLayer:
    """Wrap a host-side callable as a physical layer.

    Args:
        fn: ``fn(x) -> y``: with ``batched=True`` (default) ``x`` is a NumPy array of shape
            ``(batch, n_in)`` (float32 from the trainers) and ``y`` must have shape
            ``(batch, n_out)``; with ``batched=False`` it is called once per drive vector,
            ``(n_in,) -> (n_out,)``. NumPy arrays, lists, JAX arrays and PyTorch tensors are
            accepted as answers.
        spec_or_shape: a :class:`~pnn.layer.LayerSpec`, or ``(n_in, n_out)``.
        name: the layer's name in errors and records (default: the function's name).
        lo, hi: the allowed drive range (default ``[0, 1]``); drives outside it are refused
            before the function is called.
        units: units of drive and measurement, for records.

    Returns: a :class:`FunctionLayer`. Its calls validate the drive (shape, finiteness, range:
    :func:`pnn.layer.validate_input`) and the answer (shape ``(batch, n_out)``, real, finite),
    raising ``ValueError`` naming the layer and the function.

    Raises:
        TypeError: ``fn`` is not callable.
        ValueError: ``spec_or_shape`` is neither a LayerSpec nor ``(n_in, n_out)``, or a
            LayerSpec is given together with ``name``/``lo``/``hi``/``units``.
    """
    if not callable(fn):
        raise TypeError(f"from_function: expected a callable fn(x) -> y, got "
                        f"{type(fn).__name__} {fn!r}")
    if isinstance(spec_or_shape, LayerSpec):
        given = [k for k, v in (("name", name), ("lo", lo), ("hi", hi), ("units", units))
                 if v is not _UNSET and v is not None]
        if given:
            raise ValueError(f"from_function: a LayerSpec was given, and also "
                             f"{', '.join(given)}; give either the spec or (n_in, n_out) with "
                             f"the keywords, not both")
        spec = spec_or_shape
    else:
        shape = spec_or_shape
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 2 \
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                           for v in shape):
            raise ValueError(f"from_function: expected a LayerSpec or a shape (n_in, n_out) of "
                             f"two positive integers, got {spec_or_shape!r}")
        spec = LayerSpec(n_in=int(shape[0]), n_out=int(shape[1]),
                         lo=0.0 if lo is _UNSET else float(lo),
                         hi=1.0 if hi is _UNSET else float(hi),
                         name=name or getattr(fn, "__name__", None) or type(fn).__name__,
                         units="arb." if units is _UNSET else str(units))
    return FunctionLayer(fn, spec, batched=batched)


# ----------------------------------------------------------------------------- recorded data
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
    elif suffix == ".csv":
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
            x, y = np.array(rows_x), np.array(rows_y)
    else:
        raise ValueError(f"{path}: unknown recorded-data format {suffix!r}; expected .npz "
                         f"(arrays 'inputs', 'outputs') or .csv (columns in0.., out0..)")
    return _as_2d(x, "inputs", str(path)), _as_2d(y, "outputs", str(path)), meta


#: the surrogate models :func:`from_recorded` offers by name
SURROGATE_MODELS = ("mlp", "ridge", "knn", "forest")


def _make_model(model, seed: int):
    from sklearn.base import clone
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.preprocessing import StandardScaler
    from sklearn.pipeline import make_pipeline

    if not isinstance(model, str):
        if not (hasattr(model, "fit") and hasattr(model, "predict")):
            raise ValueError(f"from_recorded: model must be one of {', '.join(SURROGATE_MODELS)} "
                             f"or a scikit-learn style estimator with fit and predict, got "
                             f"{model!r}")
        try:
            return clone(model)
        except Exception:  # not a scikit-learn estimator: used as given
            return model
    if model == "mlp":
        from sklearn.neural_network import MLPRegressor

        reg = MLPRegressor(hidden_layer_sizes=(64, 64), activation="tanh", solver="adam",
                           learning_rate_init=3e-3, batch_size=64, max_iter=300, tol=1e-5,
                           n_iter_no_change=15, early_stopping=True, validation_fraction=0.1,
                           random_state=seed)
    elif model == "ridge":
        from sklearn.linear_model import RidgeCV

        reg = RidgeCV(alphas=np.logspace(-6, 3, 19))
    elif model == "knn":
        from sklearn.neighbors import KNeighborsRegressor

        reg = KNeighborsRegressor(n_neighbors=5, weights="distance")
    elif model == "forest":
        from sklearn.ensemble import ExtraTreesRegressor

        reg = ExtraTreesRegressor(n_estimators=200, random_state=seed, n_jobs=1)
    else:
        raise ValueError(f"from_recorded: unknown model {model!r}; valid models: "
                         f"{', '.join(SURROGATE_MODELS)}, or a scikit-learn estimator")
    return TransformedTargetRegressor(regressor=make_pipeline(StandardScaler(), reg),
                                      transformer=StandardScaler())


def _one_thread():
    """BLAS on one thread: the surrogates' matrices are small, and several BLAS threads
    contending with JAX's (or other processes') for a few cores made an MLP fit 20-40x slower
    (measured: 2.2 s on one thread against 53 s with the default pool, 1,200 pairs, a loaded
    2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        import contextlib

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
    meta: dict[str, Any] = {}
    if isinstance(inputs, (str, os.PathLike)):
        if outputs is not None:
            raise ValueError("from_recorded: give either a file path alone or the arrays "
                             "inputs and outputs, not a path and outputs")
        x, y, meta = load_recorded(inputs)
        default_name = f"recorded:{Path(inputs).name}"
    else:
        if outputs is None:
            raise ValueError("from_recorded: outputs missing; give from_recorded(inputs, "
                             "outputs) with one row of each per measurement, or a file path")
        x = _as_2d(inputs, "inputs", "from_recorded")
        y = _as_2d(outputs, "outputs", "from_recorded")
        default_name = "recorded"
    where = meta.get("source", "from_recorded")
    if len(x) != len(y):
        raise ValueError(f"{where}: {len(x)} input rows but {len(y)} output rows; give one "
                         f"output row per input row")
    if noise not in _NOISE:
        raise ValueError(f"from_recorded: noise={noise!r}; expected 'residual', 'gaussian' or "
                         f"None")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) \
            or not 0 <= holdout < 1:
        raise ValueError(f"from_recorded: holdout={holdout!r}; expected a fraction in [0, 1), "
                         f"e.g. 0.2")
    n = len(x)
    n_hold = int(round(holdout * n))
    if holdout > 0 and (n_hold < 2 or n - n_hold < 2):
        raise ValueError(f"{where}: {n} recorded pairs are too few to hold out {holdout:g} of "
                         f"them (need at least 2 for fitting and 2 held out); record more pairs "
                         f"or change holdout")
    if noise is not None and n_hold == 0:
        raise ValueError(f"from_recorded: noise={noise!r} draws from held-out residuals, but "
                         f"holdout=0; give holdout > 0 or noise=None")
    lo = meta.get("lo", float(x.min())) if lo is None else float(lo)
    hi = meta.get("hi", float(x.max())) if hi is None else float(hi)
    spec = LayerSpec(n_in=x.shape[1], n_out=y.shape[1], lo=lo, hi=hi,
                     name=name or default_name, units=units)
    perm = np.random.default_rng([int(seed), 31]).permutation(n)
    hold, fit = perm[:n_hold], perm[n_hold:]
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    est = _make_model(model, int(seed))
    target = y[fit, 0] if y.shape[1] == 1 else y[fit]
    with _one_thread(), warnings.catch_warnings():
        # the iteration cap is the fit's budget; the held-out report says how good it is
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x[fit], target)
    report: dict[str, Any] = {
        "model": model if isinstance(model, str) else type(model).__name__,
        "noise": noise, "seed": int(seed), "n_train": int(len(fit)), "n_holdout": int(n_hold),
        "n_in": int(x.shape[1]), "n_out": int(y.shape[1]), "source": meta.get("source"),
        "lo": lo, "hi": hi}
    if "ignored_columns" in meta:
        report["ignored_columns"] = meta["ignored_columns"]
    residuals = None
    if n_hold:
        with _one_thread():
            pred = np.asarray(est.predict(x[hold]), dtype=np.float64).reshape(n_hold,
                                                                              y.shape[1])
        residuals = y[hold] - pred
        per, overall = _r2(y[hold], pred)
        report.update(r2=overall, r2_per_output=per,
                      residual_std=[float(s) for s in residuals.std(0)])
    else:
        report.update(r2=None, r2_per_output=None, residual_std=None)
    return RecordedLayer(est, spec, report, residuals, noise, int(seed))


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


# ----------------------------------------------------------------------------- shared layers
class WidthError(ValueError):
    """A block wider (in drives or measured channels) than the one layer it must use."""


class Shared:
    """One block's view of a layer that several blocks share (or of a wider layer).

    ``Shared(layer, n_in, n_out, block=k)`` presents ``layer`` as an ``n_in -> n_out`` layer: a
    drive narrower than ``layer.spec.n_in`` is padded with ``layer.spec.lo`` (appended after the
    block's channels), and the first ``n_out`` measured channels are returned. The range and
    units are the layer's. Calls go straight to ``layer``; the view keeps no state of its own, so
    every block's view of one device sees the same physics (and its drift, noise, counters).

    Attributes:
        layer: the shared device (what the perturbation and fingerprint helpers unwrap to).
        block: the block this view serves (``None`` when the view only adapts the shape).
        spec: ``n_in``, ``n_out`` of the block; name ``<device>[block k]`` by default.

    Raises:
        ValueError: when the block needs more drive or measured channels than the layer has.
    """

    def __init__(self, layer, n_in: int | None = None, n_out: int | None = None, *,
                 block: int | None = None, name: str | None = None):
        dev = layer.spec
        n_in = dev.n_in if n_in is None else int(n_in)
        n_out = dev.n_out if n_out is None else int(n_out)
        who = f"block {block}" if block is not None else "the block"
        if n_in > dev.n_in:
            raise WidthError(
                f"{dev.name}: {who} sends {n_in} drive channels, but the shared layer takes "
                f"{dev.n_in}; a shared layer needs n_in >= every block's drive width (narrower "
                f"drives are padded with lo={dev.lo}): build the layer with n_in={n_in} or more, "
                f"or make the block narrower")
        if n_out > dev.n_out:
            raise WidthError(
                f"{dev.name}: {who} reads {n_out} measured channels, but the shared layer "
                f"measures {dev.n_out}; build the layer with n_out={n_out} or more, or lower "
                f"the block's n_meas")
        self.layer = layer
        self.block = block
        if name is None:
            name = f"{dev.name}[block {block}]" if block is not None else dev.name
        self.spec = LayerSpec(n_in=n_in, n_out=n_out, lo=dev.lo, hi=dev.hi, name=name,
                              units=dev.units)

    @property
    def device(self):
        return self.layer

    @property
    def shared_device_name(self) -> str:
        """The name of the one device every view shares (:func:`pnn.layer.device_name`)."""
        return self.layer.spec.name

    @property
    def pad_batches(self) -> bool:
        return bool(getattr(self.layer, "pad_batches", False))

    @property
    def n_pad(self) -> int:
        """Drive channels filled with ``lo`` (appended after the block's own)."""
        return self.layer.spec.n_in - self.spec.n_in

    def __call__(self, x):
        dev = self.layer.spec
        validate_input(self.spec, x)
        b = x.shape[0]
        if self.n_pad:
            if is_traced(x) or not isinstance(x, np.ndarray) and hasattr(x, "at"):
                import jax.numpy as jnp

                x = jnp.concatenate([x, jnp.full((b, self.n_pad), dev.lo, x.dtype)], axis=1)
            else:
                x = np.asarray(x)
                x = np.concatenate([x, np.full((b, self.n_pad), dev.lo, x.dtype)], axis=1)
        y = self.layer(x)
        if tuple(y.shape) != (b, dev.n_out):
            raise ValueError(f"{dev.name}: returned a measurement of shape {tuple(y.shape)}, "
                             f"expected ({b}, {dev.n_out})")
        return y[:, : self.spec.n_out] if self.spec.n_out < dev.n_out else y

    def __repr__(self) -> str:
        return (f"Shared({self.layer!r}, n_in={self.spec.n_in}, n_out={self.spec.n_out}, "
                f"block={self.block})")


def share(layer, shapes, *, names=None) -> list[Shared]:
    """One :class:`Shared` view of ``layer`` per block, ``shapes`` being the blocks'
    ``(n_in, n_out)`` (a trainer's ``layer_shapes``). Every block that does not fit is named in
    one error, with the widths the shared layer would need."""
    shapes = [(int(i), int(o)) for i, o in shapes]
    dev = layer.spec
    bad = [f"block {k} needs n_in={i}, n_out={o}" for k, (i, o) in enumerate(shapes)
           if i > dev.n_in or o > dev.n_out]
    if bad:
        need_in = max(i for i, _ in shapes)
        need_out = max(o for _, o in shapes)
        raise ValueError(
            f"{dev.name} (n_in={dev.n_in}, n_out={dev.n_out}) cannot serve every block: "
            f"{'; '.join(bad)}. Blocks share a layer when their drive widths equal its n_in "
            f"(narrower drives are padded with lo, the first n_out channels are read); use a "
            f"layer with n_in >= {need_in} and n_out >= {need_out}, or narrower blocks")
    return [Shared(layer, i, o, block=k, name=None if names is None else names[k])
            for k, (i, o) in enumerate(shapes)]


#: kept here for callers of ``pnn.layers``; defined with the protocol
device_name = _device_name


def devices(layers) -> list:
    """The distinct devices behind ``layers`` (through :class:`Shared` views and perturbation
    wrappers), in order of first use: what to connect, once each."""
    seen: dict[int, Any] = {}
    for layer in layers:
        inner = layer
        while True:
            if isinstance(inner, Shared):
                inner = inner.layer
                continue
            nxt = getattr(inner, "layer", None)
            if nxt is None or nxt is inner or not _is_wrapper(inner):
                break
            inner = nxt
        seen.setdefault(id(inner), inner)
    return list(seen.values())


def _is_wrapper(layer) -> bool:
    try:
        from pnn.perturb import Perturbation
    except ImportError:  # pragma: no cover
        return False
    return isinstance(layer, Perturbation)
