"""Throughput of every simulator in the registry: samples per second at a few batch sizes.

Each system is built at its default size with ``n_in=14, n_out=20`` (the PhyLL vowel setting),
called through its public ``__call__`` (host-side validation included, as a trainer calls it)
on unit-norm drives, warmed up (compilation excluded), then timed over ``--repeats`` rounds of at
least ``--min-time`` seconds each. The table gives the median and the best round: on a shared
machine the best is the better estimate of what the code can do, the median of what it did.

    python benchmarks/sim_throughput.py [--systems acoustic,optical] [--batches 1,64]
                                        [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

from pnn.registry import SYSTEMS, make_system


def unit_drives(batch: int, n_in: int, seed: int = 0) -> np.ndarray:
    h = np.random.default_rng(seed).normal(size=(batch, n_in))
    return (np.abs(h) / np.linalg.norm(h, axis=1, keepdims=True)).astype(np.float32)


def measure(layer, batch: int, *, repeats: int, min_time: float) -> dict:
    x = unit_drives(batch, layer.spec.n_in)
    t0 = time.perf_counter()
    np.asarray(layer(x))  # compile
    compile_s = time.perf_counter() - t0
    np.asarray(layer(x))  # warm
    rates = []
    for _ in range(repeats):
        n, t = 0, time.perf_counter()
        while True:
            np.asarray(layer(x))
            n += 1
            elapsed = time.perf_counter() - t
            if elapsed >= min_time:
                break
        rates.append(n * batch / elapsed)
    return {
        "batch": batch,
        "samples_per_s_median": statistics.median(rates),
        "samples_per_s_best": max(rates),
        "ms_per_call_best": 1e3 * batch / max(rates),
        "first_call_s": compile_s,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated names")
    ap.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    ap.add_argument("--n-in", type=int, default=14)
    ap.add_argument("--n-out", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per timed round")
    ap.add_argument("--out", help="write the results as JSON to this path")
    args = ap.parse_args(argv)

    systems = [s for s in args.systems.split(",") if s]
    batches = [int(b) for b in args.batches.split(",") if b]
    rows = []
    for system in systems:
        layer = make_system(system, args.n_in, args.n_out, seed=0)
        for batch in batches:
            r = measure(layer, batch, repeats=args.repeats, min_time=args.min_time)
            rows.append({"system": system, **r})
            print(f"  {system:<10} batch {batch:>4}: {r['samples_per_s_best']:>10.1f} samples/s "
                  f"(best), {r['samples_per_s_median']:>10.1f} (median)", file=sys.stderr)

    header = (f"{'system':<10} {'batch':>5} {'samples/s best':>15} {'samples/s median':>17} "
              f"{'ms/call best':>13} {'first call s':>13}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['system']:<10} {r['batch']:>5} {r['samples_per_s_best']:>15.1f} "
              f"{r['samples_per_s_median']:>17.1f} {r['ms_per_call_best']:>13.2f} "
              f"{r['first_call_s']:>13.2f}")

    if args.out:
        record = {
            "benchmark": "sim_throughput",
            "n_in": args.n_in,
            "n_out": args.n_out,
            "repeats": args.repeats,
            "min_time_s": args.min_time,
            "results": rows,
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
