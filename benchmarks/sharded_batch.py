"""Wall time of one batch through the acoustic layer on one device and split over several
(:class:`pnn.sharded.DataParallel`, what ``--devices N`` does).

JAX sees several CPU devices only when the flag is set before it is imported::

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python benchmarks/sharded_batch.py

Forced host devices share the machine's cores, so on a CPU this checks the overhead of the
split, not a speed-up. Each case is warmed up once (compilation excluded), then timed
``--repeats`` times with ``block_until_ready``; the minimum and the median are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    from pnn.registry import make_system
    from pnn.sharded import DataParallel
    from pnn.sim.acoustic import AcousticLayer

    n = len(jax.devices())
    print(f"JAX sees {n} device(s) ({jax.default_backend()})")
    cases = [("registry acoustic 4 -> 6 (32 x 36 cells, 150 steps), batch 64",
              make_system("acoustic", 4, 6, seed=0), 64),
             ("AcousticLayer 8 -> 8 (128 x 128 cells, 1000 steps), batch 32",
              AcousticLayer(8, 8, nx=128, ny=128, n_steps=1000), 32)]
    for name, layer, b in cases:
        x = np.random.default_rng(0).uniform(0, 1, (b, layer.spec.n_in)).astype(np.float32)
        runs = [("1 device", layer)] + ([(f"{n} devices", DataParallel(layer, devices=n))]
                                        if n > 1 else [])
        for label, lay in runs:
            lay(x).block_until_ready()
            ts = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                lay(x).block_until_ready()
                ts.append(time.perf_counter() - t)
            print(f"{name}: {label}: min {1e3 * min(ts):.1f} ms, median "
                  f"{1e3 * statistics.median(ts):.1f} ms")


if __name__ == "__main__":
    main()
