r"""What a physical system offers a network: how nonlinear, how many features, how repeatable,
how stable. ``pnn characterize`` runs it from the command line.

A block of a physical network computes :math:`h = W[P(d); a] + b` with the physics :math:`P`
fixed: only what :math:`P` adds to its drive :math:`d` is worth a physical query. Four numbers
say what that is, for a batch of drives :math:`D` (``n`` rows of ``n_in``) and the responses
:math:`Y = P(D)` (``n`` rows of ``n_out``):

**Held-out R² of a linear and of a degree-2 fit** (:func:`fit_r2`). Least squares from the
drives to the responses on a random part of the pairs, scored on the rest:

.. math:: R^2 = 1 - \frac{\sum_{i \in \text{test}} \sum_j (y_{ij} - \hat y_{ij})^2}
                        {\sum_{i \in \text{test}} \sum_j (y_{ij} - \bar y_j)^2}

pooled over the output channels (so each channel weighs by its variance), with
:math:`\bar y_j` the *training* mean of channel ``j`` (the prediction of a constant model fitted
on the same part: an out-of-sample R², which may be negative). The linear fit has the features
:math:`[1, d_i]`; the degree-2 fit adds every product :math:`d_i d_k`, :math:`i \le k`. A linear
R² near 1 says the layer is nearly a linear map at those drives, and a block on it computes
little more than ``none`` would; the gap between the two says how much of the response is a
second-order function of the drive; a quadratic R² well below 1 says the response has higher
orders (or noise: compare with the repeatability).

**Effective rank** (:func:`effective_rank`) of the responses' covariance (raw channels, not
standardised: a block sees them scaled by one calibration scalar): the participation ratio
:math:`(\sum\lambda)^2 / \sum\lambda^2` of its eigenvalues :math:`\lambda`, the entropy
effective rank :math:`\exp(-\sum p_k \ln p_k)`, :math:`p_k = \sigma_k / \sum \sigma` of the
singular values :math:`\sigma` of the centred responses (Roy & Vetterli, "The effective rank: a
measure of effective dimensionality", EUSIPCO 2007), and the number of components holding 99 %
of the variance: how many distinct features the measured channels carry.

**Repeatability** (:func:`repeatability`): the same drives sent several times; the noise is the
rms over drives and channels of each drive's standard deviation across repeats, the signal the
rms over channels of the standard deviation across drives (of the mean over repeats); reported
as a noise-to-signal ratio and an SNR in dB.

**Drift** (:func:`drift`): one reference batch measured at evenly spaced moments through the
characterisation; its change against the first check, against time (s) and against the number of
queries made, as an rms relative change and a least-squares relative gain.

:func:`characterize` measures all of it for the standard drive sets (uniform over the safe range;
the non-negative unit-norm directions PhyLL's blocks send, :func:`pnn.network.direction` mapped
by :func:`pnn.network.to_drive`) and any sets of the caller's, such as the drives a trained model
sends (:func:`model_drives`). Layers are queried only through the protocol (``layer(x)`` on a
NumPy batch), in batches, the way :meth:`pnn.cost.Ledger.query` does. Results are plain data;
:func:`to_json` writes them as strict JSON (an undefined or infinite value is ``null``, with a
note beside it saying why).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Mapping

import numpy as np
from jaxtyping import Float

from pnn.characterize_report import format_table, plot, to_json, write_report
from pnn.config import check_seed
from pnn.fits import MAX_FEATURES, RIDGE, _as_2d, effective_rank, fit_r2
from pnn.layer import LayerSpec, is_traced, validate_input
from pnn.memory import check_memory
from pnn.model_io import load_model, read_header, rebuild_layers
from pnn.network import direction, to_drive

__all__ = ["fit_r2", "effective_rank", "repeatability", "drift", "characterize", "default_samples",
           "RecordingLayer", "model_drives", "rescale_drives", "format_table", "plot", "to_json",
           "write_report"]

#: every query is sent in batches of at most this many drives
BATCH = 256

_FORMAT = "pnn-characterize"


# ----------------------------------------------------------------------------- measuring
class _Meter:
    """Sends drives to layers in batches and counts what came back (as the ledger does): the
    drive is validated first, a jitted simulator (``pad_batches``) gets every batch padded to
    the same size with ``lo`` (one compilation), only real samples are counted."""

    def __init__(self, batch: int = BATCH, progress: Callable | None = None, total: int = 0):
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch = {batch!r}; expected a positive whole number of drives "
                             f"per query, e.g. 256")
        self.batch, self.progress, self.total = int(batch), progress, int(total)
        self.queries = 0
        self.physical_s = 0.0
        self.by_part: dict[str, int] = {}

    def __call__(self, layer, x, part: str) -> np.ndarray:
        spec = layer.spec
        x = np.asarray(x, dtype=np.float32)
        validate_input(spec, x)
        pad = getattr(layer, "pad_batches", False)
        outs = []
        for s in range(0, len(x), self.batch):
            chunk = x[s:s + self.batch]
            n = len(chunk)
            if pad and n < self.batch:
                chunk = np.concatenate([chunk, np.full((self.batch - n, spec.n_in), spec.lo,
                                                       np.float32)])
            t = time.perf_counter()
            y = np.asarray(layer(chunk), dtype=np.float64)
            self.physical_s += time.perf_counter() - t
            if y.shape != (len(chunk), spec.n_out):
                raise ValueError(f"{spec.name}: returned a measurement of shape {y.shape}, "
                                 f"expected ({len(chunk)}, {spec.n_out})")
            if not np.isfinite(y).all():
                raise ValueError(f"{spec.name}: returned non-finite measurements")
            outs.append(y[:n])
            self.queries += n
            self.by_part[part] = self.by_part.get(part, 0) + n
            if self.progress is not None:
                self.progress(self.queries, self.total)
        return np.concatenate(outs)


def _uniform(spec: LayerSpec, n: int, rng) -> np.ndarray:
    return (spec.lo + (spec.hi - spec.lo) * rng.uniform(size=(n, spec.n_in))).astype(np.float32)


def _directions(spec: LayerSpec, n: int, rng) -> np.ndarray:
    """Non-negative unit-norm directions of Gaussian vectors, mapped into the range as a PhyLL
    block sends its drive (:func:`pnn.network.direction`, :func:`pnn.network.to_drive`)."""
    g = rng.normal(size=(n, spec.n_in)).astype(np.float32)
    return np.asarray(to_drive(direction(g), spec.lo, spec.hi), dtype=np.float32)


def _repeat_stats(ys: np.ndarray) -> dict:
    """``ys``: ``(repeats, drives, n_out)`` responses to the same drives."""
    r, m, _ = ys.shape
    noise_c = np.sqrt(ys.var(axis=0, ddof=1).mean(0))  # per channel, rms over drives
    signal_c = ys.mean(0).std(0, ddof=1)
    noise = float(np.sqrt((noise_c ** 2).mean()))
    signal = float(np.sqrt((signal_c ** 2).mean()))
    out = {"repeats": r, "n_drives": m, "noise": noise, "signal": signal,
           "noise_per_channel": [float(v) for v in noise_c],
           "signal_per_channel": [float(v) for v in signal_c]}
    if noise == 0 and signal == 0:
        out.update(noise_to_signal=float("nan"), snr_db=float("nan"),
                   note="the responses do not vary at all, neither with the drive nor between "
                        "repeats: no signal and no noise (null in JSON)")
    elif noise == 0:
        out.update(noise_to_signal=0.0, snr_db=float("inf"),
                   note=f"no scatter at all between {r} repeats: a deterministic system "
                        f"(a simulator); the SNR is infinite (null in JSON)")
    elif signal == 0:
        out.update(noise_to_signal=float("inf"), snr_db=float("-inf"),
                   note="the responses do not vary with the drive, only between repeats: no "
                        "signal (null in JSON)")
    else:
        out.update(noise_to_signal=noise / signal, snr_db=20 * math.log10(signal / noise))
    return out


def _count(name: str, v, least: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
        raise ValueError(f"{name} = {v!r}; expected a whole number >= {least}")
    return int(v)


def repeatability(layer, drives: Float[np.ndarray, "m n_in"] | None = None, repeats: int = 5,
                  *, n_drives: int = 64, seed: int = 0, batch: int = BATCH,
                  progress: Callable | None = None) -> dict:
    """Send the same drives ``repeats`` times (each time the whole set, in batches) and compare.

    Args:
        layer: any physical layer. drives: ``(m, n_in)`` in the layer's range; default
            ``n_drives`` uniform random drives over ``[lo, hi]`` drawn from ``seed``.
        repeats: passes over the drives (>= 2).
        batch, progress: queries per call; ``progress(done, total)`` after each batch.

    Returns: ``{"noise", "signal", "noise_to_signal", "snr_db", "noise_per_channel",
    "signal_per_channel", "repeats", "n_drives", "physical_queries"}`` (see the module
    docstring); a noiseless layer gives noise 0, noise-to-signal 0 and an infinite SNR, with a
    ``note`` (JSON: null).
    """
    repeats = _count("repeatability: repeats", repeats, 2)
    if drives is None:
        drives = _uniform(layer.spec, _count("repeatability: n_drives", n_drives, 2),
                          np.random.default_rng([int(seed), 43]))
    drives = np.asarray(drives, dtype=np.float32)
    meter = _Meter(batch, progress, repeats * len(drives))
    ys = np.stack([meter(layer, drives, "repeatability") for _ in range(repeats)])
    return {**_repeat_stats(ys), "physical_queries": meter.queries}


def _drift_stats(ys: list, t_s: list, queries: list) -> dict:
    y0 = ys[0]
    norm = float((y0 ** 2).sum())
    out = {"n_checks": len(ys), "n_reference": len(y0), "t_s": [float(t) for t in t_s],
           "queries": [int(q) for q in queries]}
    if norm == 0:
        nan = float("nan")
        return {**out, "relative_change": [nan] * len(ys), "relative_gain": [nan] * len(ys),
                "first_to_last": nan, "first_to_last_gain": nan, "slope_per_s": nan,
                "slope_per_query": nan,
                "note": "the reference responses are all zero: no relative change (null)"}
    rms0 = math.sqrt(norm / y0.size)
    change = [float(np.sqrt(((y - y0) ** 2).mean()) / rms0) for y in ys]
    gain = [float((y * y0).sum() / norm - 1.0) for y in ys]

    def slope(x):
        x = np.asarray(x, np.float64)
        if len(x) < 2 or np.ptp(x) == 0:
            return float("nan")
        xc = x - x.mean()
        return float((xc * np.asarray(gain)).sum() / (xc ** 2).sum())

    return {**out, "relative_change": change, "relative_gain": gain,
            "first_to_last": change[-1], "first_to_last_gain": gain[-1],
            "slope_per_s": slope(t_s), "slope_per_query": slope(queries)}


def _run_with_checks(meter: _Meter, layer, reference, n_checks: int, work: list) -> dict:
    """Measure ``reference`` ``n_checks`` times, the first before and the last after ``work``
    (``(weight, job)`` pairs, ``job()`` taking no argument), the others spread evenly over it by
    weight. A job that returns a whole number sent that many drives itself: they are counted
    (``queries_by_part["between"]``)."""
    t0 = time.perf_counter()
    ys, t_s, queries = [], [], []

    def check():
        t_s.append(time.perf_counter() - t0)
        queries.append(meter.queries)
        ys.append(meter(layer, reference, "drift"))

    check()
    total = float(sum(w for w, _ in work)) or 1.0
    done, k = 0.0, 1
    for w, job in work:
        sent = job()
        if isinstance(sent, (int, np.integer)) and not isinstance(sent, bool) and sent > 0:
            meter.queries += int(sent)
            meter.by_part["between"] = meter.by_part.get("between", 0) + int(sent)
        done += w
        while k < n_checks - 1 and done >= k * total / (n_checks - 1) - 1e-9:
            check()
            k += 1
    while k < n_checks:
        check()
        k += 1
    return _drift_stats(ys, t_s, queries)


def drift(layer, reference_drives: Float[np.ndarray, "m n_in"] | None = None,
          n_checks: int = 5, *, between=(),
          n_reference: int = 32, seed: int = 0, batch: int = BATCH,
          progress: Callable | None = None) -> dict:
    """Measure one reference batch ``n_checks`` times and report how its response moved.

    Args:
        layer: any physical layer. reference_drives: ``(m, n_in)``; default ``n_reference``
            uniform random drives drawn from ``seed``.
        n_checks: measurements of the reference (>= 2): the first at the start, the last at
            the end, the others evenly spaced through ``between``.
        between: callables (no argument) run between the checks, spread evenly over the gaps:
            the other measurements of the caller's, or a pause. One that returns a whole number
            has sent that many drives to the layer: they count as queries.

    Returns: ``{"t_s", "queries"}`` (each check's start: seconds from the first, and drives sent
    before it), ``"relative_change"`` (per check, rms(y_t - y_0) / rms(y_0): it has a floor of
    about sqrt(2) x the noise), ``"relative_gain"`` (per check, the least-squares gain against
    the first, minus 1: noise averages out), ``"first_to_last"`` and ``"first_to_last_gain"``
    (the last check's), ``"slope_per_s"`` and ``"slope_per_query"`` (least-squares slopes of
    the relative gain), ``"n_checks"``, ``"n_reference"``, ``"physical_queries"``. A system
    that does not drift (a simulator) gives 0 everywhere.
    """
    n_checks = _count("drift: n_checks", n_checks, 2)
    if reference_drives is None:
        reference_drives = _uniform(layer.spec, _count("drift: n_reference", n_reference, 1),
                                    np.random.default_rng([int(seed), 47]))
    reference = np.asarray(reference_drives, dtype=np.float32)
    meter = _Meter(batch, progress, n_checks * len(reference))
    out = _run_with_checks(meter, layer, reference, n_checks, [(1, f) for f in between])
    return {**out, "physical_queries": meter.queries}


# ----------------------------------------------------------------------------- the report
def default_samples(n_in: int, holdout: float = 0.3) -> int:
    """Drives per set by default: enough that the degree-2 fit has 2.5 training samples per
    feature (so that over-fitting inflates its held-out error by less than 1.7 x), at least
    1,000 and at most 4,000 (from about 45 drive channels on, fewer samples per feature)."""
    p = int(n_in)
    n_feat = min(1 + p + p * (p + 1) // 2, MAX_FEATURES)
    return min(4000, max(1000, int(math.ceil(2.5 * n_feat / (1 - holdout)))))


def _set_summary(drives: np.ndarray, ys: np.ndarray, holdout: float, seed: int) -> dict:
    return {"n_samples": len(ys), "fit": fit_r2(drives, ys, holdout=holdout, seed=seed),
            "rank": effective_rank(ys),
            "response": {"mean": float(ys.mean()),
                         "std_over_drives": float(np.sqrt(ys.var(0).mean())),
                         "min": float(ys.min()), "max": float(ys.max())},
            "drive": {"mean": float(drives.mean()), "min": float(drives.min()),
                      "max": float(drives.max())}}


def _describe_layer(layer) -> dict:
    d = layer.spec.to_dict()
    d["type"] = type(layer).__name__
    return d


def characterize(layer, *, drive_sets: Mapping | None = None, measured: Mapping | None = None,
                 n_samples: int | None = None, repeats: int = 5, n_repeat_drives: int = 64,
                 n_checks: int = 5, n_reference: int = 32, holdout: float = 0.3,
                 batch: int = BATCH, seed: int = 0, include_standard: bool = True,
                 progress: Callable | None = None) -> dict:
    """Measure what ``layer`` offers a network: the whole report (see the module docstring).

    Args:
        layer: any physical layer (simulator, driver, recorded surrogate, a wrapped one).
        drive_sets: extra sets, name -> drives ``(m, n_in)`` in the layer's range, or name ->
            ``{"drives": ..., "layer": ..., "description": ...}`` (``layer``: measure that set
            on another layer, such as a block's own layer of another shape; both keys
            optional); more than ``n_samples`` rows are subsampled at random.
        measured: name -> ``(drives, responses)`` pairs measured before (a recording): analysed
            without any query.
        n_samples: drives per standard set (default :func:`default_samples`).
        repeats, n_repeat_drives: repeatability: passes over that many uniform drives (0
            repeats: skipped).
        n_checks, n_reference: drift: checks of a reference batch of that many uniform drives
            spread over the whole run (0 checks: skipped).
        holdout: the held-out fraction of every R² fit. batch: drives per query.
        seed: draws every drive set, the subsamples and the R² splits.
        include_standard: measure the sets ``full_range`` (uniform over ``[lo, hi]``) and
            ``unit_direction`` (PhyLL's drives, see the module docstring).
        progress: ``progress(done, total)``, in drives measured, after every batch.

    Returns: ``{"format", "layer", "settings", "drive_sets": {name: {"description",
    "n_samples", "fit", "rank", "response", "drive", ...}}, "repeatability", "drift",
    "physical_queries", "queries_by_part", "wall_s", "physical_s"}``.

    Raises:
        ValueError: a drive set of the wrong width or outside the layer's range (named), bad
            counts, or what the layer raises.
    """
    t_start = time.perf_counter()
    spec = layer.spec
    n = default_samples(spec.n_in, holdout) if n_samples is None else \
        _count("n_samples", n_samples, 8)
    check_memory(f"characterize: n_samples = {n} drives per set",
                 2 * 8 * n * (spec.n_in + spec.n_out),
                 how=f"the drives and responses of the two standard sets, {spec.n_in} + "
                     f"{spec.n_out} values a drive, float64",
                 fix="give fewer samples (--samples)")
    repeats = _count("repeats", repeats, 0)
    n_checks = _count("n_checks", n_checks, 0)
    if repeats == 1 or n_checks == 1:
        raise ValueError(f"repeats = {repeats}, n_checks = {n_checks}: one measurement shows "
                         f"no change; give 0 (skip) or at least 2")
    rng = np.random.default_rng([check_seed(seed), 37])
    sets = _gather_sets(layer, drive_sets, n, include_standard, rng)
    measured = _check_measured(measured)  # before any query: a mistake costs no measurement
    if not sets and not measured:
        raise ValueError("characterize: nothing to measure: include_standard=False and no "
                         "drive_sets or measured pairs given")
    rep_drives = _uniform(spec, _count("n_repeat_drives", n_repeat_drives, 2), rng) \
        if repeats else np.zeros((0, spec.n_in), np.float32)
    reference = _uniform(spec, _count("n_reference", n_reference, 1), rng) if n_checks else None
    total = (sum(len(s["drives"]) for s in sets.values()) + repeats * len(rep_drives)
             + n_checks * (n_reference if n_checks else 0))
    meter = _Meter(batch, progress, total)
    responses, rep_ys, drift_report = _measure_all(meter, layer, sets, rep_drives, repeats,
                                                   reference, n_checks)
    report: dict = {"format": _FORMAT, "version": 1, "layer": _describe_layer(layer),
                    "settings": {"n_samples": n, "repeats": repeats,
                                 "n_repeat_drives": len(rep_drives), "n_checks": n_checks,
                                 "n_reference": n_reference if n_checks else 0,
                                 "holdout": float(holdout), "batch": meter.batch,
                                 "seed": int(seed), "ridge": RIDGE,
                                 "max_features": MAX_FEATURES},
                    "drive_sets": _set_reports(layer, sets, responses, measured, holdout, seed),
                    "repeatability": _repeat_stats(rep_ys) if repeats else None,
                    "drift": drift_report}
    report.update(physical_queries=meter.queries, queries_by_part=dict(meter.by_part),
                  physical_s=round(meter.physical_s, 3),
                  wall_s=round(time.perf_counter() - t_start, 3))
    return report


def _set_reports(layer, sets: dict, responses: dict, measured: dict, holdout: float,
                 seed: int) -> dict:
    """name -> the summary of each drive set measured (in order), then of each recording."""
    out: dict = {}
    for name, s in sets.items():
        entry = out[name] = {
            "description": s["description"],
            **_set_summary(s["drives"].astype(np.float64), responses[name], holdout, seed)}
        if "n_given" in s:
            entry["n_given"] = s["n_given"]
        if s["layer"] is not layer:
            entry["layer"] = _describe_layer(s["layer"])
    for name, (d, y) in measured.items():
        out[name] = {"description": "recorded pairs, analysed as given (no query)",
                     "measured": True, **_set_summary(d, y, holdout, seed)}
    return out


def _gather_sets(layer, drive_sets, n: int, include_standard: bool, rng) -> dict:
    """name -> ``{"layer", "drives", "description"[, "n_given"]}``, every drive checked."""
    spec = layer.spec
    sets: dict[str, dict] = {}
    if include_standard:
        sets["full_range"] = {"layer": layer, "drives": _uniform(spec, n, rng),
                              "description": f"uniform random drives over the safe range "
                                             f"[{spec.lo:g}, {spec.hi:g}]"}
        sets["unit_direction"] = {"layer": layer, "drives": _directions(spec, n, rng),
                                  "description": "lo + (hi - lo) |g| / ||g||, g Gaussian: the "
                                                 "non-negative unit-norm directions a PhyLL "
                                                 "block sends"}
    for name, value in (drive_sets or {}).items():
        if not isinstance(value, Mapping):
            value = {"drives": value}
        target = value.get("layer", layer)
        d = np.asarray(value["drives"], dtype=np.float32)
        try:
            validate_input(target.spec, d)
        except ValueError as e:
            raise ValueError(f"drive set {name!r}: {e}") from None
        entry = {"layer": target, "n_given": len(d),
                 "description": value.get("description", "given by the caller")}
        if len(d) > n:
            d = d[np.sort(rng.choice(len(d), n, replace=False))]
            entry["description"] += f" ({n} of {entry['n_given']} drives, chosen at random)"
        sets[name] = {**entry, "drives": d}
    return sets


def _check_measured(measured) -> dict:
    out = {}
    for name, (d, y) in (measured or {}).items():
        d = _as_2d(d, f"measured {name!r}: drives")
        y = _as_2d(y, f"measured {name!r}: responses")
        if len(d) != len(y):
            raise ValueError(f"measured {name!r}: {len(d)} drives but {len(y)} responses; give "
                             f"one response row per drive row")
        out[name] = (d, y)
    return out


def _measure_all(meter: _Meter, layer, sets: dict, rep_drives, repeats: int, reference,
                 n_checks: int):
    """Every query of a characterisation: the repeats back to back (the short-term scatter,
    not the drift), then every set batch by batch, with the drift checks spread over all of
    it. Returns ``(responses by set, repeats' responses, drift report or None)``."""
    responses: dict[str, list] = {name: [] for name in sets}
    rep_ys: list = []
    work: list = [(len(rep_drives), lambda: rep_ys.append(meter(layer, rep_drives,
                                                                "repeatability")))] * repeats
    for name, s in sets.items():
        for i in range(0, len(s["drives"]), meter.batch):
            chunk = s["drives"][i:i + meter.batch]
            work.append((len(chunk), lambda name=name, chunk=chunk, target=s["layer"]:
                         responses[name].append(meter(target, chunk, "drive sets"))))
    if n_checks:
        drift_report = _run_with_checks(meter, layer, reference, n_checks, work)
    else:
        for _, job in work:
            job()
        drift_report = None
    return ({name: np.concatenate(ys) for name, ys in responses.items()},
            np.stack(rep_ys) if rep_ys else None, drift_report)


# ----------------------------------------------------------------------------- model drives
class RecordingLayer:
    """A physical layer that forwards to ``layer`` and keeps a copy of every drive it is sent
    (host-side; refuses tracing). ``drives`` is their concatenation, ``(n, n_in)``."""

    pad_batches = False  # never padded: only the drives the network sent are recorded

    def __init__(self, layer):
        self.layer = layer
        self.spec = layer.spec
        self._seen: list = []

    def __call__(self, x):
        if is_traced(x):
            raise TypeError(f"{self.spec.name}: a recording layer keeps the drives it is sent "
                            f"and cannot be traced (jit/grad/vmap); call it with arrays")
        self._seen.append(np.array(x, dtype=np.float32, copy=True))
        return self.layer(x)

    @property
    def drives(self) -> np.ndarray:
        if not self._seen:
            return np.zeros((0, self.spec.n_in), np.float32)
        return np.concatenate(self._seen)


def model_drives(path, x: Float[np.ndarray, "n n_features"], *, layers=None) -> list[dict]:
    """The drives each physical block of a saved model (:func:`pnn.load_model`) sends while it
    predicts the inputs ``x`` (standardised features, as ``model.predict`` takes them).

    Args:
        path: the model file. x: ``(n, n_features)``.
        layers: the layers to run it on (default: the simulator rebuilt from the file,
            :func:`pnn.model_io.rebuild_layers`); each is wrapped in a :class:`RecordingLayer`.

    Returns: one ``{"block": k, "spec": LayerSpec, "drives": (m, n_in)}`` per block, the drives
    in that block's layer's range (``spec.lo``, ``spec.hi``).

    Raises:
        ValueError, ModelFileError: from :func:`pnn.load_model` (a damaged file, layers that
            cannot be rebuilt: then pass ``layers``).
    """
    if layers is None:
        layers = rebuild_layers(read_header(path), path)
    rec = [RecordingLayer(layer) for layer in layers]
    model = load_model(path, layers=rec)
    model.predict(np.asarray(x, dtype=np.float32))
    return [{"block": k, "spec": r.spec, "drives": r.drives} for k, r in enumerate(rec)]


def rescale_drives(drives: Float[np.ndarray, "m n_in"], src: LayerSpec,
                   dst: LayerSpec) -> Float[np.ndarray, "m n_in"]:
    """Drives sent into ``src``'s range, mapped into ``dst``'s as a block would send the same
    direction there: ``a = (d - lo_src) / (hi_src - lo_src)``, then ``lo + (hi - lo) a``."""
    a = (np.asarray(drives, np.float64) - src.lo) / (src.hi - src.lo)
    return (dst.lo + (dst.hi - dst.lo) * np.clip(a, 0.0, 1.0)).astype(np.float32)
