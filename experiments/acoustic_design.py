"""A wavetorch-style reference: vowels classified by an acoustic medium whose design region is
trained in silico (issue 26, item 3).

Raw vowel waveforms (``--task audio_vowels``: synthesised Peterson & Barney tokens, 10 kHz,
50 ms, speaker-disjoint splits) drive one source of
:class:`pnn.sim.acoustic_design.DesignedAcousticLayer`; probe j's time-averaged intensity is
class j's score, and the prediction is the loudest probe: no digital parameter anywhere. The
wave speed of every cell between the source and the probes (``default_design_region``) is
trained by Adam through the simulator (:func:`pnn.sim.acoustic_design.fit_design`); the
reference point is the same medium before training (the design region uniform at its initial
speed). Hughes et al., Sci. Adv. 5, eaay6946 (2019) did this with wavetorch.

    nice .venv/bin/python experiments/acoustic_design.py                 # 3 vowels, 4 epochs
    nice .venv/bin/python experiments/acoustic_design.py --classes iy ih eh ae ah aa ao uh uw er

Prints the accuracies (validation each epoch, test once at the end, of the epoch with the best
validation accuracy) and the timings; ``--out design.npz`` keeps the trained speeds.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", nargs="+", default=["ae", "iy", "uw"])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--grid", type=int, default=64, help="cells per side")
    p.add_argument("--dx", type=float, default=0.03, help="cell size (m)")
    p.add_argument("--c-nl", type=float, default=0.0, help="nonlinear speed coefficient")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the trained design speeds (npz)")
    args = p.parse_args(argv)

    from pnn.data.audio import load_audio_vowels
    from pnn.sim.acoustic_design import (DesignedAcousticLayer, accuracy, default_design_region,
                                         fit_design)

    data = load_audio_vowels(classes=tuple(args.classes), seed=args.seed)
    n = args.grid
    layer = DesignedAcousticLayer(
        data.n_features, len(args.classes), nx=n, ny=n, dx=args.dx, c_nl=args.c_nl,
        disorder=0.0, design_region=default_design_region(n, n, 8), seed=args.seed)
    print(f"{len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test tokens "
          f"of {args.classes}; grid {n}x{n} of {args.dx} m, dt {layer.dt * 1e6:.1f} us, "
          f"{layer.n_steps} steps, design region {layer.region} "
          f"({layer.design_c_min:.0f}-{layer.design_c_max:.0f} m/s)")
    t0 = time.perf_counter()
    untrained = {"val": accuracy(layer, data.x_val, data.y_val),
                 "test": accuracy(layer, data.x_test, data.y_test)}
    t_eval = time.perf_counter() - t0
    print(f"untrained medium: val {untrained['val']:.3f}, test {untrained['test']:.3f} "
          f"({t_eval:.1f} s)")
    t0 = time.perf_counter()
    trained, history = fit_design(layer, data.x_train, data.y_train, epochs=args.epochs,
                                  batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                  x_val=data.x_val, y_val=data.y_val, log=print)
    t_train = time.perf_counter() - t0
    result = {"classes": args.classes, "untrained": untrained,
              "trained": {"val": max(h["val_accuracy"] for h in history),
                          "test": accuracy(trained, data.x_test, data.y_test)},
              "history": history, "train_seconds": t_train,
              "chance": 1.0 / len(args.classes)}
    print(json.dumps({k: result[k] for k in ("untrained", "trained", "train_seconds",
                                             "chance")}))
    if args.out:
        np.savez(args.out, design_speed=np.asarray(trained.design_speed),
                 region=np.asarray(trained.region))
    return result


if __name__ == "__main__":
    main()
