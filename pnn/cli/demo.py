"""``pnn demo``: PhyLL on the acoustic simulator beside the two digital references, on one split;
a summary table, the learning curve, the model file."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pnn import registry
from pnn.cli import common

__all__ = ["cmd_demo", "DEMO_PHYLL", "plot_learning_curves"]


def plot_learning_curves(records: dict, path: Path, title: str) -> None:
    """Validation accuracy per epoch of the trained networks (the selected epoch marked), and
    every reference's validation accuracy as a horizontal line. Test accuracy is not plotted:
    it is measured once, at the end, and printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    values = []
    for j, (label, rec) in enumerate(records.items()):
        h = [r for r in rec["history"] if "val_accuracy" in r]
        if len(h) > 1:
            ep = [r["epoch"] for r in h]
            ax.plot(ep, [r["val_accuracy"] for r in h], "o-", color=f"C{j}",
                    label=f"{label} (validation)")
            if all("train_accuracy" in r for r in h):
                ax.plot(ep, [r["train_accuracy"] for r in h], "--", color=f"C{j}", alpha=0.5,
                        label=f"{label} (training subset)")
                values += [r["train_accuracy"] for r in h]
            ax.plot([rec["selected_epoch"]], [rec["val_accuracy"]], "*", ms=12, color=f"C{j}")
            values += [r["val_accuracy"] for r in h]
        elif rec.get("val_accuracy") is not None:
            ax.axhline(rec["val_accuracy"], ls=":", color=f"C{j}",
                       label=f"{label} (validation, selected)")
            values.append(rec["val_accuracy"])
    if values:
        ax.set_ylim(min(values) - 0.03, min(1.0, max(values) + 0.03))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from pnn.fileio import atomic_savefig

    try:
        atomic_savefig(fig, path, dpi=120)
    finally:
        plt.close(fig)


#: the demo's PhyLL: the bypass-free block (``skip="raw"``, the paper's goodness read-out, no
#: ``readout_input``), with the learning rate, theta, inner steps, negatives and batch size that
#: an Optuna study on the validation split of seed 0 chose for the earlier block
#: (experiments/results/compare_acoustic_vowels_phyll_skip/tuned_configs.json), not retuned
DEMO_PHYLL = dict(lr=0.0106, theta=5.1, inner_steps=11, negatives=2, batch_size=32)


def cmd_demo(args) -> int:
    from pnn.train import bp, phyll

    t0 = time.perf_counter()
    from pnn.fileio import check_writable

    common.check_seed_arg(args.seed)
    out = check_writable(args.out, folder=True, what="--out",
                         files=("results.json", "model.pnn", "learning_curve.png"))
    data = common.load_data(args, args.seed)
    cfg = phyll.PhyLLConfig(**{**DEMO_PHYLL, "epochs": args.epochs})
    layers = registry.build_layers("acoustic", "phyll", cfg, data, seed=args.seed)
    print(f"pnn demo: PhyLL (model-free forward-forward) on the nonlinear acoustic simulator, "
          f"{data.name} ({len(data.y_train)} train / {len(data.y_val)} validation / "
          f"{len(data.y_test)} test, split by speaker)", file=sys.stderr)
    bar, on_epoch, on_batch = common.progress_bar(common.steps_total(cfg, data), "phyll/acoustic")
    try:
        rec, model = phyll.train(layers, data, cfg, seed=args.seed, progress=on_epoch,
                                 on_batch=on_batch)
    finally:
        bar.close()
    n_params = rec["n_trainable_params"]
    print("references on the same split: logistic regression (L-BFGS, C chosen on validation), "
          "digital MLP by backpropagation (early stopping on validation)", file=sys.stderr)
    lin, _ = bp.train_linear(data, bp.LinearConfig(), seed=args.seed)
    mlp, _ = bp.train(None, data, bp.BPConfig(n_params=n_params), seed=args.seed)
    records = {"phyll": rec, "linear": lin, "mlp": mlp}
    for r in records.values():
        r.update({"task": args.task, "data": data.describe()})
    rec["system"] = "acoustic"
    common.write_json(out / "results.json", records)
    from pnn.cli.model import save_trained

    save_trained(args, rec, model, data, system="acoustic", path=out / "model.pnn")
    plot_learning_curves(records, out / "learning_curve.png",
                         f"PhyLL on the acoustic simulator, {data.name}, seed {args.seed}")
    print()
    print(common.summary(rec, "acoustic", data))
    print()
    print(f"{'method':<40}{'params':>8}{'val acc':>9}{'test acc':>10}{'phys. queries':>15}")
    rows = [("PhyLL on acoustic simulator", rec),
            (f"logistic regression (C = {lin['C']:g})", lin),
            (f"digital MLP, BP (width {mlp['hidden_width']})", mlp)]
    for name, r in rows:
        print(f"{name:<40}{r['n_trainable_params']:>8}{r['val_accuracy']:>9.1%}"
              f"{r['test_accuracy']:>10.1%}{r['cost']['physical_queries']:>15,}")
    print("(one seed, one split: differences of a few points are within the spread between "
          "seeds; see `pnn compare` for intervals)")
    print(f"\nwrote {out / 'results.json'} and {out / 'learning_curve.png'} in "
          f"{time.perf_counter() - t0:.0f} s")
    return 0

