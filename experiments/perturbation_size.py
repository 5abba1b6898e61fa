"""How much does each adaptation event change what the layer measures?

Relative RMS change of a 19-input, 20-output layer's outputs on 128 random drive directions,
before and after the parameter change used in ``run_all.sh``'s adaptation runs:

    .venv/bin/python experiments/perturbation_size.py
"""

import numpy as np

from pnn import registry
from pnn.adapt import ScheduledPhysics
from pnn.registry import make_system

CHANGES = [("acoustic", "x1.05", 1.05, 0.0), ("acoustic", "x0.92", 0.92, 0.0),
           ("optical", "x1.3", 1.3, 0.0), ("microwave", "+0.5", 1.0, 0.5)]


def main() -> None:
    rng = np.random.default_rng(0)
    g = np.abs(rng.normal(size=(128, 19)))
    x = (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
    for system, label, factor, offset in CHANGES:
        layer = make_system(system, 19, 20, seed=0)
        xs = np.clip(x, layer.spec.lo, layer.spec.hi)
        y0 = np.asarray(layer(xs))
        changed = ScheduledPhysics(layer, registry.SYSTEMS[system].drift_param)
        changed.set_value(changed.value * factor + offset)
        y1 = np.asarray(changed(xs))
        rel = np.sqrt(np.mean((y1 - y0) ** 2) / np.mean(y0 ** 2))
        print(f"{system:>9} {registry.SYSTEMS[system].drift_param} {label}: outputs change by {rel:.1%} RMS")


if __name__ == "__main__":
    main()
