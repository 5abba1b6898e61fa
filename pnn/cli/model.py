"""Commands for saved models: ``pnn eval MODEL``, ``pnn predict MODEL input.csv``, and the
``--save PATH`` option of ``pnn train`` (see :mod:`pnn.model_io` for the file format)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from pnn.fileio import atomic_write_text, check_writable

__all__ = ["add_commands", "cmd_eval", "cmd_predict", "save_trained", "task_of"]

#: the data options of ``pnn train`` that determine the split (stored in a model's header)
DATA_OPTIONS = ("vowel_source", "classes", "data_path", "download", "test_fraction",
                "image_source", "n_features", "image_reduce")


def task_of(args, seed: int) -> dict:
    """The task and data options of a ``pnn train``/``pnn demo`` invocation, for the header
    (:meth:`pnn.experiment.TaskSpec.header`)."""
    from pnn.cli.common import task_spec

    return task_spec(args).header(seed)


def save_trained(args, rec: dict, model, data, *, system: str | None, path=None) -> Path:
    """Save a model trained by the CLI (``--save``), with the task options from ``args``."""
    from pnn.model_io import save_model

    path = Path(path if path is not None else args.save)
    save_model(model, path, record=rec, system=system, data=data,
               task=task_of(args, args.seed))
    print(f"model written to {path}")
    return path


def _header_data(header: dict, args, path):
    """The dataset the model was trained on, reloaded with the header's task options (any
    data option given on the command line replaces the saved one)."""
    from pnn.cli import common

    task = header.get("task")
    if not task:
        raise ValueError(f"{path} records no task (it was saved by pnn.save_model without "
                         "task=...); evaluate it in Python on your data: "
                         "pnn.load_model(path).accuracy(x_test, y_test)")
    opts = dict(task["options"])
    for k in DATA_OPTIONS:  # a flag given on the command line replaces the saved value
        if getattr(args, k, None) not in (None, False):
            opts[k] = getattr(args, k)
    name = getattr(args, "task", None) or task["name"]
    data = common.load_data(argparse.Namespace(task=name, **opts), task["seed"], strict=False)
    want_c, want_f = header["classes"], header["preprocessing"]["features"]
    if [str(c) for c in data.classes] != want_c or [str(f) for f in
                                                     data.feature_names] != want_f:
        raise ValueError(f"the data loaded for {path} has classes {list(data.classes)} and "
                         f"features {list(data.feature_names)}, the model expects {want_c} and "
                         f"{want_f}; give the task options the model was trained with")
    st = header["preprocessing"].get("standardisation")
    mean = data.info.get("standardisation_mean")
    if st and mean is not None and (not np.allclose(mean, st["mean"], rtol=1e-12, atol=0)
                                    or not np.allclose(data.info["standardisation_std"],
                                                       st["std"], rtol=1e-12, atol=0)):
        raise ValueError(f"the data loaded for {path} is standardised with other statistics "
                         "than the model was trained with (another split or file); give the "
                         "task options the model was trained with")
    return data


def cmd_eval(args) -> int:
    from pnn.cost import Ledger
    from pnn.model_io import load_model, read_header, rebuild_layers

    if args.out:
        check_writable(args.out, what="--out")  # before any measurement
    path = Path(args.model)
    header = read_header(path)
    data = _header_data(header, args, path)
    method = header["method"]
    ledger = Ledger()
    perturbations = []
    with contextlib.ExitStack() as stack:
        if args.instrument:
            from pnn import registry
            from pnn.cli.common import instrument_layers
            from pnn.config import config_from_dict

            cfg = config_from_dict(registry.get_trainer(method).Config, header["config"],
                                   where=f"{path}: config", stored=True)
            layers = instrument_layers(method, args.instrument, args.profile, cfg, data)
            for layer in layers:  # connected now; left safe (outputs off) on any exit
                stack.enter_context(layer)
            where = ", ".join(f"{i.spec.name} ({i.idn})" for i in layers)
        else:
            layers = rebuild_layers(header, path)
            where = (f"{header['system']['name']} simulator" if header.get("system")
                     else "digital")
        if args.perturb:
            from pnn.perturb import compose, parse_perturbations, perturbations_of

            specs = parse_perturbations(args.perturb)
            seed = header["system"]["seed"] if header.get("system") else header["seed"]
            layers = [compose(layer, *specs, seed=seed * 1000 + k)
                      for k, layer in enumerate(layers)]
            perturbations = [[w.describe() for w in perturbations_of(layer)]
                             for layer in layers]
            where += f", perturbed ({args.perturb})"
        model = load_model(path, layers=layers, ledger=ledger)
        with ledger.relabel(eval="test"):
            pred = model.predict(data.x_test)
    acc = float(np.mean(pred == np.asarray(data.y_test)))
    rec = (header.get("record") or {}).get("test_accuracy")
    recorded = f"; recorded at training: {rec!r}" if rec is not None else ""
    print(f"{method} model {path} on {where}, {data.name}: test accuracy {acc!r} "
          f"({acc:.1%} of {len(pred)} test samples){recorded}; "
          f"{ledger.physical_queries:,} physical queries")
    if args.out:
        out = {"model": str(path), "method": method, "evaluated_on": where,
               "test_accuracy": acc, "recorded_test_accuracy": rec, "n_test": int(len(pred)),
               "physical_queries": int(ledger.physical_queries),
               "queries_by_layer": dict(ledger.queries_by_layer),
               "perturbations": perturbations, "data": data.describe(),
               "predictions": pred.tolist()}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(out, indent=2, default=str))
        print(f"evaluation written to {args.out}")
    return 0


def read_rows(path, features: list[str]) -> np.ndarray:
    """The feature columns of a CSV file (header row with the feature names), in model order."""
    from pnn.numtext import parse_float

    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty; expected a header row with the feature names "
                         f"{','.join(features)} and one row per sample")
    head = [h.strip() for h in rows[0]]
    missing = [n for n in features if n not in head]
    if missing:
        raise ValueError(f"{path}: the header row {head} lacks the feature column(s) "
                         f"{missing}; the model expects {features}")
    cols = [head.index(n) for n in features]
    x = np.zeros((len(rows) - 1, len(features)), np.float64)
    for i, row in enumerate(rows[1:]):
        try:
            x[i] = [parse_float(row[c]) for c in cols]
        except (ValueError, IndexError):
            raise ValueError(f"{path}, line {i + 2}: expected {len(features)} complete numbers "
                             f"in the columns {features}, got {row} (a value cut short, like "
                             f"'1.2e' or '3.', means a truncated file)") from None
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: every feature value must be finite")
    return x


#: standardised features are of order one: rows whose median magnitude exceeds this look raw
RAW_LOOKING = 10.0


def _warn_if_raw(header: dict, x: np.ndarray, path) -> None:
    """Say so when inputs given as standardised look like raw features (formants in Hz, say):
    the model would silently see values hundreds of standard deviations off."""
    if not len(x) or not header["preprocessing"].get("standardisation"):
        return
    med = float(np.median(np.abs(x)))
    if med > RAW_LOOKING:
        print(f"pnn predict: warning: the values in {path} look like raw features (median "
              f"|value| {med:.4g}; standardised features are of order 1), but they are taken "
              f"as standardised; add --raw to standardise them with the model's saved "
              f"statistics", file=sys.stderr)


def cmd_predict(args) -> int:
    from pnn.model_io import load_model, standardise

    if args.out:
        check_writable(args.out, what="--out")
    model = load_model(args.model)
    header = model.header
    x = read_rows(args.input, header["preprocessing"]["features"])
    if args.raw:
        x = standardise(header, x)
    else:
        _warn_if_raw(header, x, args.input)
        x = x.astype(np.float32)
    names = header["classes"]
    labels = [names[int(i)] for i in model.predict(x)] if len(x) else []
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(["class"])
        w.writerows([[c] for c in labels])
        atomic_write_text(args.out, buf.getvalue())
        print(f"{len(labels)} label(s) written to {args.out}", file=sys.stderr)
    else:
        for c in labels:
            print(c)
    return 0


def add_commands(sub) -> None:
    """Register ``pnn eval`` and ``pnn predict``, and ``--save`` on ``pnn train``."""
    from pnn.cli import common

    train = sub.choices.get("train")
    if train is not None:
        train.add_argument("--save", default=None, metavar="PATH",
                           help="write the trained model to this file (pnn.save_model): "
                                "parameters, config, seeds, the simulator's settings and the "
                                "input statistics; use it with `pnn eval` and `pnn predict`")

    e = sub.add_parser("eval", help="measure a saved model on its task's test split",
                       description="Measure a saved model (pnn train --save) on the test split "
                                   "of the task it was trained on, rebuilt from the file, on the "
                                   "simulator it was trained on (optionally perturbed) or on "
                                   "instruments.")
    e.add_argument("model", help="the model file")
    e.add_argument("--perturb", default=None,
                   help="perturbations wrapped around every physical layer, e.g. "
                        "'noise:std=0.02' (see `pnn train --help`)")
    e.add_argument("--instrument", action="append", default=[], metavar="KIND:ADDRESS",
                   help="evaluate on instruments: 'visa:RESOURCE' or 'serial:PORT', one per "
                        "block, in order")
    e.add_argument("--profile", default="emulator",
                   help="instrument profile for --instrument (default %(default)s)")
    e.add_argument("--out", default=None, help="write the evaluation as JSON here")
    common.add_data_options(e)
    for group in e._action_groups:  # data options: only what is given replaces the saved
        if group.title == "data":
            for action in group._group_actions:
                action.default = argparse.SUPPRESS
                text = (action.help or "").replace(" (default %(default)s)", "")
                action.help = text.replace("%(default)s", "as saved") + " (default: as saved " \
                    "in the model)"
    e.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="label the rows of a CSV file with a saved model",
                       description="Label each row of a CSV file (a header row with the model's "
                                   "feature names) with a saved model; prints one class name "
                                   "per row.")
    p.add_argument("model", help="the model file")
    p.add_argument("input", help="CSV file: a header row with the feature names, one row per "
                                 "sample")
    p.add_argument("--raw", action="store_true",
                   help="the values are raw features: standardise them with the statistics "
                        "saved in the model (default: already standardised)")
    p.add_argument("--out", default=None, help="write the labels as CSV (column 'class') here")
    p.set_defaults(func=cmd_predict)
