"""The cost ledger: what a training run spent.

Every trainer sends each physical query through :meth:`Ledger.query` and reports the digital work
it does with :meth:`Ledger.add_flops`. The ledger records

* ``physical_queries``: samples sent through each physical layer (total, per layer, and per
  purpose: ``train`` for learning, twin data and calibration, ``eval`` for measuring accuracy),
  and per device (``queries_by_device``: one entry for a layer that several blocks share, see
  :class:`pnn.layers.Shared`, whose per-block views are the entries of ``queries_by_layer``);
* ``digital_flops``: floating-point operations of the trainable digital parts, of any digital twin
  and of the optimiser, *counted from array shapes* (a multiply-add is 2 FLOPs; the count is
  stated per item in ``flops_by_item``);
* ``wall_s`` split into ``physical_s`` (time inside physical layers) and ``digital_s`` (the rest);
* ``peak_rss_mb``: the process's peak resident memory (``getrusage``), a coarse upper bound.
"""

from __future__ import annotations

try:  # Unix only; elsewhere peak memory is reported as None
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None
import sys
import time
import contextlib
from collections import defaultdict

import jax
import numpy as np

from pnn.layer import device_name, validate_input

__all__ = ["Ledger", "dense_flops", "adam_flops", "update_flops", "xla_cost", "xla_flops"]


def dense_flops(batch: int, n_in: int, n_out: int) -> int:
    """Forward FLOPs of ``x @ W + b`` for a batch (multiply-add = 2)."""
    return int(batch) * (2 * int(n_in) * int(n_out) + int(n_out))


def adam_flops(n_params: int, *, lr_as_data: bool = False, weight_decay: bool = False) -> int:
    """FLOPs of one Adam update (moments, bias correction, step) as XLA counts optax's: 13 a
    parameter (its square root is a transcendental, counted apart), 14 when the learning rate
    is an input rather than a constant (``optax.inject_hyperparams``), 2 more for AdamW's
    weight decay (tests/test_flops_xla.py checks each against XLA)."""
    return (13 + int(lr_as_data) + 2 * int(weight_decay)) * int(n_params)


def update_flops(batch: int, sizes, *, input_gradient: bool = False) -> int:
    """FLOPs of a forward and backward pass through dense layers ``sizes`` (n_in, n_out pairs):
    each layer's forward, its weight gradient (one forward's worth) and, except for a first
    layer whose input is data (``input_gradient=False``), its input gradient (another)."""
    fwd = [dense_flops(batch, a, b) for a, b in sizes]
    first_input_grad = 2 * int(batch) * int(sizes[0][0]) * int(sizes[0][1]) if sizes else 0
    return 3 * sum(fwd) - (0 if input_gradient else first_input_grad)


def xla_cost(fn, *args, **kwargs) -> dict[str, float]:
    """XLA's own count of one call of ``fn(*args, **kwargs)``: ``{"flops", "transcendentals"}``.

    ``fn`` is lowered for these arguments and compiled for the default backend, and the
    compiled program's cost analysis is read. A function that is already compiled on call
    (``jax.jit``, ``equinox.filter_jit``: anything with a ``lower`` method) is lowered as it is,
    with its own static arguments, so the program counted is the one it runs; any other function
    is wrapped in ``jax.jit``, which traces every argument (bind static ones with
    :func:`functools.partial` first). What XLA counts (checked on its CPU backend):

    * ``flops``: a dot or matmul ``(m, k) @ (k, n)`` as ``2 m k n`` (a multiply-add is 2, as
      :func:`dense_flops` counts); every elementwise arithmetic op as 1 per element (add,
      multiply, divide, negate, abs, max, clip, compare, select, type conversion: ``where(x >
      0, a, b)`` is 2 per element); a reduction over ``n`` entries as ``n - 1``;
    * ``transcendentals``, kept apart from ``flops``: exp, log, log1p, tanh, sqrt, rsqrt and
      the like, 1 per element (``softplus`` is 2 of them plus 6 flops per element);
    * nothing for data movement (concatenate, slice, gather, broadcast, transpose);
    * the compiled (optimised, fused) program, so what XLA simplified away is not counted;
    * the body of a loop (``lax.scan``, ``fori_loop``, ``while_loop``) once, not times its
      trip count: count one step of a scanned loop by itself and multiply.

    The count is the backend's: another backend may fuse or decompose differently.
    """
    lower = fn.lower if hasattr(fn, "lower") else jax.jit(fn).lower
    compiled = lower(*args, **kwargs).compile()
    # equinox.filter_jit's compiled object wraps JAX's (as ``compiled``)
    cost = getattr(compiled, "compiled", compiled).cost_analysis()
    if isinstance(cost, (list, tuple)):  # one dict per device program in some JAX versions
        cost = cost[0] if cost else {}
    cost = cost or {}
    return {"flops": float(cost.get("flops", 0.0)),
            "transcendentals": float(cost.get("transcendentals", 0.0))}


def xla_flops(fn, *args, **kwargs) -> float:
    """XLA's FLOP count of one call of ``fn(*args, **kwargs)``, transcendental ops excluded
    (see :func:`xla_cost` for what is counted and how)."""
    return xla_cost(fn, *args, **kwargs)["flops"]


def _device_name(layer) -> str:
    return device_name(layer)


class Ledger:
    """Counts physical queries, digital FLOPs, wall time and memory for one run.

    Args:
        max_batch: the largest batch sent to a layer in one call; larger batches are split.
        sample_cap: per layer, at most this many (drive, measurement) pairs of the training
            queries are kept (a uniform reservoir sample over the run, from a fixed generator):
            what the record's physics fits (how linear the layer was at the drives it was
            trained with) are computed from. 0 keeps none.
    """

    def __init__(self, max_batch: int = 512, sample_cap: int = 2048):
        self.max_batch = int(max_batch)
        self.sample_cap = int(sample_cap)
        #: layer name -> [drives (cap, n_in), measurements (cap, n_out), rows seen]
        self.samples: dict[str, list] = {}
        self._sample_rng = np.random.default_rng(20231117)
        self.queries_by_layer: dict[str, int] = defaultdict(int)
        self.queries_by_purpose: dict[str, int] = defaultdict(int)
        self.queries_by_device: dict[str, int] = defaultdict(int)
        self.flops_by_item: dict[str, int] = defaultdict(int)
        self.physical_s = 0.0
        self._t0 = time.perf_counter()
        self._stopped: float | None = None
        self._relabel: dict[str, str] = {}

    @property
    def physical_queries(self) -> int:
        return int(sum(self.queries_by_layer.values()))

    @property
    def digital_flops(self) -> int:
        return int(sum(self.flops_by_item.values()))

    def add_flops(self, n: int, item: str = "trainable") -> None:
        self.flops_by_item[item] += int(n)

    def query(self, layer, x, purpose: str = "train") -> np.ndarray:
        """Send a batch through a physical layer and return the measurement as a numpy array.

        The drive is validated on the host first (a bad drive never reaches the layer), split
        into chunks of at most ``max_batch`` samples and, for layers that declare
        ``pad_batches = True`` (jitted simulators: one compilation per chunk size), the last
        chunk is padded with the range's lower bound; only real samples are counted.

        A chunk is counted when the layer returns its measurement, as an instrument driver counts
        it (``layer.stats``): when a later chunk fails, the chunks measured before it stay
        counted, so the ledger and the driver agree in every fault path.

        Raises:
            ValueError: from :func:`pnn.layer.validate_input`, or when the layer returns an
                array of the wrong shape or with non-finite values.
        """
        x = np.asarray(x, dtype=np.float32)
        spec = layer.spec
        validate_input(spec, x)
        pad = getattr(layer, "pad_batches", False)
        outs = []
        t = time.perf_counter()
        try:
            for i in range(0, len(x), self.max_batch):
                chunk = x[i : i + self.max_batch]
                n = len(chunk)
                if pad and n < self.max_batch and len(x) > self.max_batch:
                    chunk = np.concatenate(
                        [chunk, np.full((self.max_batch - n, spec.n_in), spec.lo, np.float32)]
                    )
                out = np.asarray(layer(chunk))[:n]
                self.queries_by_layer[spec.name] += n  # measured and returned: counted
                self.queries_by_device[_device_name(layer)] += n
                self.queries_by_purpose[self._relabel.get(purpose, purpose)] += n
                outs.append(out)
        finally:
            self.physical_s += time.perf_counter() - t
        if self.sample_cap and self._relabel.get(purpose, purpose) == "train" and outs:
            n_done = sum(len(o) for o in outs)
            self._keep_samples(spec.name, x[:n_done], np.concatenate(outs))
        y = np.concatenate(outs)
        if y.shape != (len(x), spec.n_out):
            raise ValueError(
                f"{spec.name}: returned a measurement of shape {y.shape}, expected "
                f"({len(x)}, {spec.n_out})"
            )
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{spec.name}: returned non-finite measurements")
        return y

    def _keep_samples(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        """Reservoir sampling (Vitter's algorithm R, vectorised per batch)."""
        cap = self.sample_cap
        if name not in self.samples:
            self.samples[name] = [np.zeros((cap, x.shape[1]), np.float32),
                                  np.zeros((cap, y.shape[1]), np.float32), 0]
        bx, by, seen = self.samples[name]
        if bx.shape[1] != x.shape[1] or by.shape[1] != y.shape[1]:
            return  # two layers of one name with other shapes (should not happen): keep the first
        idx = seen + np.arange(len(x))
        slot = np.where(idx < cap, idx, self._sample_rng.integers(0, idx + 1))
        keep = slot < cap
        bx[slot[keep]] = x[keep]
        by[slot[keep]] = np.asarray(y, np.float32)[keep]
        self.samples[name][2] = seen + len(x)

    def kept_samples(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per layer name, the kept training (drive, measurement) pairs."""
        out = {}
        for name, (bx, by, seen) in self.samples.items():
            n = min(seen, self.sample_cap)
            out[name] = (bx[:n].copy(), by[:n].copy())
        return out

    @contextlib.contextmanager
    def relabel(self, **mapping: str):
        """Count queries of one purpose under another while inside, e.g. ``relabel(eval=
        "test")`` for the final test measurement (so evaluation and test costs stay apart)."""
        old = self._relabel
        self._relabel = {**old, **mapping}
        try:
            yield self
        finally:
            self._relabel = old

    def restart_clock(self) -> None:
        """Let the wall clock run again after :meth:`stop` (the time stopped is not counted)."""
        if self._stopped is not None:
            self._t0 += time.perf_counter() - self._stopped
            self._stopped = None

    def state_dict(self) -> dict:
        """Counters to checkpoint (plain data), including the wall time spent so far."""
        return {"queries_by_layer": dict(self.queries_by_layer),
                "queries_by_purpose": dict(self.queries_by_purpose),
                "queries_by_device": dict(self.queries_by_device),
                "flops_by_item": dict(self.flops_by_item), "physical_s": self.physical_s,
                "wall_s": self.wall_s}

    def load_state_dict(self, state: dict) -> None:
        """Continue counting from a checkpointed state (wall time included)."""
        self.queries_by_layer.clear()
        self.queries_by_layer.update({k: int(v) for k, v in state["queries_by_layer"].items()})
        self.queries_by_purpose.clear()
        self.queries_by_purpose.update(
            {k: int(v) for k, v in state.get("queries_by_purpose", {}).items()})
        self.queries_by_device.clear()
        # a checkpoint from before per-device counts: every layer its own device
        self.queries_by_device.update({k: int(v) for k, v in state.get(
            "queries_by_device", state["queries_by_layer"]).items()})
        self.flops_by_item.clear()
        self.flops_by_item.update({k: int(v) for k, v in state["flops_by_item"].items()})
        self.physical_s = float(state["physical_s"])
        self._t0 = time.perf_counter() - float(state["wall_s"])

    def stop(self) -> None:
        self._stopped = time.perf_counter()

    @property
    def wall_s(self) -> float:
        end = self._stopped if self._stopped is not None else time.perf_counter()
        return end - self._t0

    @staticmethod
    def peak_rss_mb() -> float | None:
        """Peak resident memory of this process in MB, or None where the OS does not say."""
        if resource is None:
            return None
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0

    def to_dict(self) -> dict:
        wall = self.wall_s
        return {
            "physical_queries": self.physical_queries,
            "queries_by_layer": dict(self.queries_by_layer),
            "queries_by_purpose": dict(self.queries_by_purpose),
            "queries_by_device": dict(self.queries_by_device),
            "digital_flops": self.digital_flops,
            "flops_by_item": dict(self.flops_by_item),
            "flops_method": "counted from array shapes (multiply-add = 2 FLOPs)",
            "wall_s": round(wall, 3),
            "physical_s": round(self.physical_s, 3),
            "digital_s": round(max(wall - self.physical_s, 0.0), 3),
            "peak_rss_mb": None if (rss := self.peak_rss_mb()) is None else round(rss, 1),
        }
