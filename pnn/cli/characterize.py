"""``pnn characterize``: what a physical system offers a network (:mod:`pnn.characterize`).

The system is built as ``pnn train`` builds one, but a single layer: ``--system`` (any name the
registry resolves, ``recorded:PATH`` included, with ``--set system.KEY=VALUE``) or
``--instrument KIND:ADDRESS`` with ``--profile``. ``--model FILE`` adds the drives each block of
a saved model sends.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["add_command", "cmd_characterize"]

#: the most recorded pairs of a ``recorded:`` system analysed as they are (a random subset
#: beyond: the fits' cost grows with the rows)
MAX_RECORDED_ROWS = 20_000
OUTPUT_FILES = ("characterize.json", "characterize.png")


def _whole(least: int, *, zero: bool = False):
    def check(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or (v < least and not (zero and v == 0)):
            raise argparse.ArgumentTypeError(
                f"expected a whole number >= {least}{' (or 0 to skip)' if zero else ''}, got "
                f"{text!r}")
        return v
    return check


def _default_shape() -> tuple[int, int]:
    """The widest block of a default PhyLL network: its hidden width in, n_meas out (the shape
    one shared apparatus needs to serve every block, ``pnn train --shared``)."""
    from pnn.train.phyll import PhyLLConfig

    cfg = PhyLLConfig()
    return max(int(h) for h in cfg.hidden), int(cfg.n_meas)


def _system_params(items, system: str) -> dict:
    """``--set system.KEY=VALUE`` (or ``KEY=VALUE``) -> the system's keyword arguments,
    checked against its parameters as ``pnn train --set system.KEY`` is."""
    from pnn.experiment import SystemSpec, parse_override

    kw = {}
    for item in items:
        path, value = parse_override(item, where="--set")
        section, dot, key = path.partition(".")
        if not dot:
            section, key = "system", path
        if section != "system" or not key:
            raise ValueError(f"--set {item!r}: pnn characterize takes the system's physical "
                             f"parameters only, as system.KEY=VALUE (e.g. --set system.c_nl=200)")
        kw[key] = value
    return SystemSpec.from_dict({"name": system, **kw}, where="--set").kwargs


def _instrument(args):
    """The driver layer of ``--instrument`` (not connected yet)."""
    from pnn.drivers.profile import load_profile
    from pnn.drivers.serial import SerialLayer
    from pnn.drivers.visa import VisaLayer

    kind, sep, where = args.instrument.partition(":")
    if not sep or kind not in ("visa", "serial") or not where:
        raise ValueError(f"--instrument {args.instrument!r}: expected 'visa:RESOURCE' (e.g. "
                         f"visa:TCPIP::192.168.0.5::INSTR) or 'serial:PORT' (e.g. "
                         f"serial:/dev/ttyACM0)")
    profile = load_profile(args.profile)
    d_in, d_out = _default_shape()
    shape = {}
    for what, have, given, default in (("n_in", profile.layer.n_in, args.n_in, d_in),
                                       ("n_out", profile.layer.n_out, args.n_out, d_out)):
        if have is not None and given is not None and have != given:
            raise ValueError(f"profile {profile.source} fixes {what}={have}, but "
                             f"--{what.replace('_', '-')} {given} was given; leave it out or "
                             f"give {have}")
        shape[what] = have if have is not None else given if given is not None else default
    cls = VisaLayer if kind == "visa" else SerialLayer
    return cls(profile, where, name=f"{kind}:{where}", **shape)


def _system_layer(args, system: str, kw: dict):
    """The layer of ``--system``; a recorded system's widths are its recording's unless
    ``--n-in``/``--n-out`` ask for a narrower view."""
    from pnn import registry

    n_in, n_out = args.n_in, args.n_out
    if system.startswith("recorded:"):
        if n_in is None or n_out is None:
            probe = registry.resolve_system(system)(1, 1, seed=args.seed, **kw)
            dev = getattr(probe, "layer", probe).spec
            n_in = dev.n_in if n_in is None else n_in
            n_out = dev.n_out if n_out is None else n_out
    else:
        d_in, d_out = _default_shape()
        n_in = d_in if n_in is None else n_in
        n_out = d_out if n_out is None else n_out
    return registry.make_system(system, n_in, n_out, seed=args.seed, name=system, **kw)


def _block_layer(layer, k: int, n_in: int, n_out: int, *, system: str | None, kw: dict,
                 seed: int):
    """The layer block ``k`` of a model (``n_in -> n_out``) is characterised on: ``layer``
    itself when the shapes agree; a fixed-width device (an instrument, a recording) through a
    padded view (:class:`pnn.layers.Shared`); else the system built in the block's shape (seed
    ``1000 * seed + k``, as ``pnn train`` seeds block ``k``)."""
    from pnn import registry
    from pnn.layers import Shared

    spec = layer.spec
    if (n_in, n_out) == (spec.n_in, spec.n_out):
        return layer
    if system is None or system.startswith("recorded:"):
        return Shared(layer, n_in, min(n_out, spec.n_out), block=k)
    return registry.make_system(system, n_in, n_out, seed=1000 * seed + k, name=f"{system}[{k}]",
                                **kw)


def _model_sets(args, layer, system, kw) -> tuple[dict, dict]:
    """The drive sets of ``--model``: name -> (layer, drives), and what the record says."""
    from pnn.characterize import model_drives, rescale_drives
    from pnn.cli.model import _header_data
    from pnn.model_io import read_header

    path = Path(args.model)
    header = read_header(path)
    if not header["layers"]:
        raise ValueError(f"--model {path}: a {header['method']} model has no physical layer, "
                         f"so it sends no drives; give a model of a method with physical layers")
    data = _header_data(header, argparse.Namespace(), path)
    targets = [_block_layer(layer, k, s["n_in"], s["n_out"], system=system, kw=kw,
                            seed=args.seed) for k, s in enumerate(header["layers"])]
    if header.get("system"):
        ran_on, layers = f"the {header['system']['name']} simulator it was trained on", None
    else:  # trained on instruments or a user's layer: run it on the system characterised
        ran_on, layers = "the system characterised (its own layers cannot be rebuilt)", targets
    print(f"recording the drives of {path} ({header['method']}, {len(targets)} block(s)) on "
          f"{len(data.x_train)} training inputs of {data.name}", file=sys.stderr)
    blocks = model_drives(path, data.x_train, layers=layers)
    sets, info = {}, []
    for b, target in zip(blocks, targets):
        sets[f"model block {b['block']}"] = {
            "layer": target, "drives": rescale_drives(b["drives"], b["spec"], target.spec),
            "description": f"the drives block {b['block']} of {path.name} sends on its "
                           f"training split (recorded on {ran_on}), mapped into this layer's "
                           f"range"}
        info.append({"block": b["block"], "n_in": b["spec"].n_in, "n_out": b["spec"].n_out,
                     "drives_recorded": int(len(b["drives"])),
                     "trained_range": [b["spec"].lo, b["spec"].hi],
                     "characterised_on": target.spec.name})
    record = {"path": str(path), "method": header["method"], "data": data.name,
              "inputs": "training split", "ran_on": ran_on, "blocks": info}
    return sets, record


def _recording(system: str, layer, seed: int) -> tuple[dict, dict]:
    """A ``recorded:`` system's own pairs, analysed as they are (``measured``), and what the
    record says of them and of the surrogate fitted to them."""
    from pnn.layers import load_recorded

    x, y, _ = load_recorded(system.partition(":")[2])
    info: dict = {"rows": len(x)}
    if len(x) > MAX_RECORDED_ROWS:
        pick = np.sort(np.random.default_rng([seed, 53]).choice(len(x), MAX_RECORDED_ROWS,
                                                                 replace=False))
        x, y = x[pick], y[pick]
        info["analysed"] = f"{MAX_RECORDED_ROWS} rows chosen at random"
    fit = getattr(getattr(layer, "layer", layer), "report", None) or {}
    info["surrogate"] = {k: fit.get(k) for k in ("model", "noise", "r2", "n_train", "n_holdout")}
    return {"recorded pairs": (x, y)}, info


def cmd_characterize(args) -> int:
    from tqdm import tqdm

    from pnn import __version__, characterize as ch
    from pnn.fileio import check_writable

    t0 = time.perf_counter()
    if args.instrument and args.system is not None:
        raise ValueError(f"give --system or --instrument, not both (got --system "
                         f"{args.system} and --instrument {args.instrument})")
    if args.instrument and args.set:
        raise ValueError("--set system.KEY=VALUE sets a simulator's parameters; an instrument "
                         "takes its settings from --profile")
    out = check_writable(args.out, folder=True, what="--out", files=OUTPUT_FILES)
    system = None if args.instrument else (args.system or "acoustic")
    kw = _system_params(args.set, system) if system else {}
    record: dict = {"pnn": __version__}
    measured = {}
    with contextlib.ExitStack() as stack:
        if args.instrument:
            layer = _instrument(args)
            stack.enter_context(layer)  # connected now; left safe (outputs off) on any exit
            record["instrument"] = {"address": args.instrument, "idn": layer.idn,
                                    "profile": str(layer.profile.source)}
        else:
            layer = _system_layer(args, system, kw)
            record["system"] = {"name": system, "params": kw}
            if system.startswith("recorded:"):
                measured, record["system"]["recording"] = _recording(system, layer, args.seed)
        sets = {}
        if args.model:
            sets, record["model"] = _model_sets(args, layer, system, kw)
        spec = layer.spec
        print(f"pnn characterize: {spec.name} (n_in={spec.n_in}, n_out={spec.n_out}, drives in "
              f"[{spec.lo:g}, {spec.hi:g}] {spec.units})", file=sys.stderr)
        every = 0.1 if sys.stderr.isatty() else 5.0
        bar = tqdm(total=0, desc=f"characterize {spec.name}", unit="query", file=sys.stderr,
                   dynamic_ncols=True, mininterval=every)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            report = ch.characterize(layer, drive_sets=sets, measured=measured,
                                     n_samples=args.samples, repeats=args.repeats,
                                     n_checks=args.checks, batch=args.batch, seed=args.seed,
                                     progress=progress)
        finally:
            bar.close()
        if args.instrument:
            record["instrument"].update(driver=dataclasses.asdict(layer.stats),
                                        safety=dataclasses.asdict(layer.safety.counts))
    report = {**{k: report[k] for k in ("format", "version", "layer")}, **record, **report}
    json_path, png_path = ch.write_report(report, out)
    print(ch.format_table(report))
    print(f"\nwrote {json_path} and {png_path} in {time.perf_counter() - t0:.0f} s")
    return 0


def add_command(sub) -> None:
    """Register ``pnn characterize``."""
    from pnn.cli import common

    c = sub.add_parser(
        "characterize", help="measure what a physical system offers a network: how nonlinear, "
                             "how many features, how repeatable, how stable",
        description="Measure a physical system at random drives over its safe range, at the "
                    "unit-norm directions PhyLL's blocks send, and (--model) at the drives a "
                    "trained network sends: held-out R² of a linear and of a degree-2 fit, the "
                    "effective rank of the responses, repeatability (SNR) and drift. Prints a "
                    "table; writes OUT/characterize.json and OUT/characterize.png. See "
                    "docs/characterize.md for how to read the numbers.")
    c.add_argument("--system", type=common.system_choice, default=None,
                   help=common.system_help().replace("(default %(default)s)", "(default acoustic)"))
    c.add_argument("--instrument", default=None, metavar="KIND:ADDRESS",
                   help="characterise an instrument instead: 'visa:RESOURCE' or 'serial:PORT' "
                        "(try it with `pnn emulate`)")
    c.add_argument("--profile", default="emulator",
                   help="instrument profile for --instrument: a shipped name or a TOML file "
                        "(default %(default)s)")
    c.add_argument("--n-in", type=_whole(1), default=None,
                   help="drive channels (default: the widest block of a default PhyLL network, "
                        "20; a recording's or a profile's own width)")
    c.add_argument("--n-out", type=_whole(1), default=None,
                   help="measured channels (default: PhyLL's n_meas, 20; a recording's or a "
                        "profile's own)")
    c.add_argument("--set", action="append", default=[], metavar="system.KEY=VALUE",
                   help="a physical parameter of the system, e.g. --set system.c_nl=200 or, for "
                        "a recording, --set system.model=ridge (repeatable; checked against the "
                        "system's parameters)")
    c.add_argument("--model", default=None, metavar="FILE",
                   help="a saved model (pnn train --save): add the drives each of its blocks "
                        "sends on its task's training split, each on a layer of the block's "
                        "shape")
    c.add_argument("--samples", type=_whole(8), default=None, metavar="N",
                   help="drives per set (default: enough for the degree-2 fit, 1,000 to 4,000)")
    c.add_argument("--repeats", type=_whole(2, zero=True), default=5, metavar="R",
                   help="repeatability: passes over the same 64 drives (0: skip; default "
                        "%(default)s)")
    c.add_argument("--checks", type=_whole(2, zero=True), default=5, metavar="N",
                   help="drift: measurements of a 32-drive reference batch spread over the run "
                        "(0: skip; default %(default)s)")
    c.add_argument("--batch", type=_whole(1), default=256,
                   help="drives per query (default %(default)s)")
    c.add_argument("--seed", type=common.seed, default=0,
                   help="seeds the system's disorder, the drives and the fits' splits "
                        "(default %(default)s)")
    c.add_argument("--out", default="characterize_results",
                   help="folder for characterize.json and characterize.png (default "
                        "%(default)s)")
    c.set_defaults(func=cmd_characterize)
