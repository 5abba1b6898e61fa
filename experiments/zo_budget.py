"""Does zeroth-order (SPSA) training learn with more directions, a larger step or a larger
perturbation? Vowels on the acoustic simulator, seed 0, 6 epochs (the comparison's budget):

    .venv/bin/python experiments/zo_budget.py

Prints the per-epoch test accuracy and the physical queries of each setting.
"""

import dataclasses

from pnn import registry
from pnn.data.vowels import load_vowels
from pnn.train import zo

SETTINGS = [dict(lr=3e-2), dict(lr=1e-2, n_dirs=8), dict(lr=1e-2, c=0.05)]


def main() -> None:
    data = load_vowels(seed=0)
    for kw in SETTINGS:
        cfg = dataclasses.replace(zo.Config(), epochs=6, **kw)
        layers = registry.build_layers("acoustic", "zo", cfg, data, seed=0)
        r = zo.train(layers, data, cfg, seed=0)
        acc = ", ".join(f"{h['test_accuracy']:.3f}" for h in r["history"])
        print(f"{kw}: test accuracy per epoch {acc}; {r['cost']['physical_queries']:,} physical "
              f"queries")


if __name__ == "__main__":
    main()
