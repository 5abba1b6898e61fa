"""The ``pnn`` command line: each sub-command parses its flags and calls the library.

Run ``pnn <command> --help`` for every option. The library never imports this package; the
commands live in its modules (``experiment``: train and run; ``compare``: compare and tune;
``adapt``, ``demo``, ``model``: eval and predict; ``characterize``, ``report``), and what they
share in :mod:`pnn.cli.common`. Heavy modules are imported when a command runs, so ``pnn
--help`` stays quick.
"""

from __future__ import annotations

import argparse
import os
import sys

from pnn import registry
from pnn.cli import common

__all__ = ["main", "build_parser", "run"]


def cmd_train(args) -> int:
    """``pnn train``: the flags become an experiment (:mod:`pnn.cli.experiment`), which runs."""
    from pnn.cli.experiment import cmd_train as run_train

    return run_train(args)


def cmd_compare(args) -> int:
    from pnn.cli.compare import cmd_compare as run_compare

    return run_compare(args)


def cmd_tune(args) -> int:
    from pnn.cli.compare import cmd_tune as run_tune

    return run_tune(args, common.load_data)


def cmd_demo(args) -> int:
    from pnn.cli.demo import cmd_demo as run_demo

    return run_demo(args)


def cmd_adapt(args) -> int:
    from pnn.cli.adapt import cmd_adapt as run_adapt

    return run_adapt(args)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``pnn emulate: error: argument --port:
    ...; see 'pnn emulate --help'``) and exit with status 2, like every other user error; the
    full usage stays one ``--help`` away. Sub-commands' parsers are of this class as well."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see "
                     f"'{self.prog} --help'\n")


def _add_train(sub) -> None:
    """``pnn train``."""
    t = sub.add_parser("train", help="train one method on one physical system and task",
                       description="Train one method on one physical system and task, with a "
                                   "progress bar, a summary, and a JSON result record.")
    t.add_argument("--system", type=common.system_choice, default="acoustic",
                   help=common.system_help())
    t.add_argument("--shared", action="store_true",
                   help="one physical layer for every block (one apparatus, time-multiplexed): "
                        "built as wide as the widest block; narrower drives (PhyLL's first "
                        "block) are padded with the layer's lower bound and each block reads "
                        "the first n_meas channels; the ledger counts queries per block and "
                        "per device. One --instrument for several blocks does the same")
    t.add_argument("--method", type=common.choice(registry.METHODS, "method"), default="phyll",
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
    _add_method_options(t)
    t.add_argument("--instrument", action="append", default=[], metavar="KIND:ADDRESS",
                   help="train on instruments instead of a simulator: 'visa:RESOURCE' or "
                        "'serial:PORT', one per block, in order (the shapes each block needs "
                        "are printed if the count is wrong). Methods: "
                        + ", ".join(n for n, t in registry.TRAINERS.items()
                                    if t.runs_on_instruments)
                        + ". Try it with `pnn emulate`")
    t.add_argument("--profile", default="emulator",
                   help="instrument profile for --instrument: a shipped name or a TOML file "
                        "(SCPI commands, serial settings, safety ceiling; default %(default)s)")
    t.add_argument("--perturb", default=None,
                   help="perturbations wrapped around every physical layer, innermost first, "
                        "e.g. 'noise:std=0.02,drift:rate=1e-6' or 'dead:channels=[0,3]'; names: "
                        "noise, gain_noise, shot_noise, drift, param_drift, jump, dead, stuck, "
                        "quantize, latency (see pnn.perturb). In-silico training keeps the "
                        "unperturbed simulator as its model")
    _add_durable_options(t)
    common.add_devices_option(t)
    common.add_data_options(t)
    t.set_defaults(func=cmd_train)


def _add_method_options(t) -> None:
    """The flags of ``pnn train`` that set a method's config fields."""
    g = t.add_argument_group("method options (defaults: the method's own)")
    g.add_argument("--hidden", type=common.parse_ints, default=None,
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


def _add_durable_options(t) -> None:
    """Checkpoints and resume for ``pnn train``."""
    k = t.add_argument_group("durable runs (phyll)")
    k.add_argument("--checkpoint-dir", default=None,
                   help="write the training state here atomically (temporary file, fsync, "
                        "rename; SHA-256 checked) every --checkpoint-every batches and on Ctrl-C")
    k.add_argument("--checkpoint-every", type=int, default=20,
                   help="batches between checkpoints (default %(default)s)")
    k.add_argument("--resume", action="store_true",
                   help="continue from the newest good checkpoint in --checkpoint-dir; ends "
                        "with the same parameters as an uninterrupted run")


def _add_demo(sub) -> None:
    """``pnn demo``."""
    d = sub.add_parser("demo", help="PhyLL on the acoustic simulator vs. linear and MLP "
                                    "references, with a learning-curve plot",
                       description="The main job: train PhyLL on the nonlinear acoustic simulator "
                                   "with the offline vowel data, beside a linear classifier and a "
                                   "digital MLP of the same trainable size on the same split.")
    d.add_argument("--epochs", type=int, default=10, help="PhyLL epochs (default %(default)s)")
    d.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    d.add_argument("--out", default="demo_results",
                   help="folder for results.json and learning_curve.png (default %(default)s)")
    common.add_data_options(d)
    d.set_defaults(func=cmd_demo)


def _add_compare(sub) -> None:
    """``pnn compare``."""
    c = sub.add_parser("compare", help="every method on the same physics, split and seeds; "
                                       "a table and a cost-vs-accuracy plot",
                       description="Run several methods on the same physical system, data split "
                                   "and seeds; write results.json, table.md and "
                                   "cost_vs_accuracy.png.")
    c.add_argument("--system", type=common.system_choice, default="acoustic",
                   help=common.system_help())
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
                        "(sqlite:///tune.db, postgresql://...); default OUT/tune.journal. With "
                        "--workers: the RDB URL the workers claim jobs from (default "
                        "sqlite:///OUT/workers.db); run the same command with the same URL on "
                        "other hosts to join (see docs/cluster.md)")
    c.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run the tuning studies and runs as jobs of N local worker processes "
                        "sharing an Optuna storage; the records equal a one-process run's "
                        "(default: one process, no storage)")
    c.add_argument("--jobs", type=int, default=1, help="parallel tuning trials")
    c.add_argument("--target", type=float, default=None,
                   help="validation accuracy (0..1) to report costs to (default: 95 %% of the "
                        "best method's mean validation accuracy)")
    c.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method's setting, repeatable (e.g. --set bp.epochs=5); fixed during "
                        "tuning")
    common.add_devices_option(c)
    common.add_data_options(c)
    c.set_defaults(func=cmd_compare)


def _add_tune(sub) -> None:
    """``pnn tune``."""
    tu = sub.add_parser("tune", help="tune methods on the validation split (Optuna; test "
                                     "sealed); studies resume from their storage",
                        description="Tune each method's declared search space with the same "
                                    "number of Optuna trials, maximising validation accuracy; "
                                    "write tuned_configs.json.")
    tu.add_argument("--system", type=common.choice(registry.SYSTEMS, "system"), default="acoustic",
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
    common.add_devices_option(tu)
    common.add_data_options(tu)
    tu.set_defaults(func=cmd_tune)


def _add_adapt(sub) -> None:
    """``pnn adapt``."""
    a = sub.add_parser("adapt", help="change the physics during training and measure each "
                                     "method's drop and recovery",
                       description="Train phyll, pat and insilico while the physics changes "
                                   "(sudden jumps, slow drifts of a physical parameter); write "
                                   "adapt.json and adapt.png with recovery times.")
    a.add_argument("--system", type=common.choice(registry.SYSTEMS, "system"), default="acoustic",
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
    common.add_data_options(a)
    a.set_defaults(func=cmd_adapt)


def build_parser() -> argparse.ArgumentParser:
    """The ``pnn`` parser with every sub-command (each added by its own function)."""
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

    for add in (_add_train, _add_demo, _add_compare, _add_tune, _add_adapt):
        add(sub)
    from pnn.cli.experiment import add_run_command; add_run_command(sub)  # `pnn run`
    from pnn.cli.report import add_report_command; add_report_command(sub)  # `pnn report`
    from pnn.cli.characterize import add_command; add_command(sub)  # `pnn characterize`
    # hardware commands (`pnn instruments`, `pnn emulate`) live with the drivers
    try:
        from pnn.cli.hardware import add_commands
    except ImportError:
        pass
    else:
        add_commands(sub)
    from pnn.cli.model import add_commands as add_model_commands  # eval, predict, train --save

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


def main(argv=None, *, before_run=None) -> int:
    """Run ``pnn`` with ``argv``; returns the exit status. A user's mistake (see
    :func:`user_errors`) prints one line ``pnn COMMAND: error: ...`` on stderr and returns 2;
    with ``--debug`` it propagates with its traceback. ``before_run()`` is called once the
    arguments parsed (``--help`` and usage errors never reach it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if before_run is not None:
        before_run()
    try:
        from pnn.distributed import initialize_from_env  # PNN_COORDINATOR & co.: one of several

        initialize_from_env()  # processes (docs/workflows.md); nothing when they are not set
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
    def compile_cache():  # after parsing: `pnn --help` does not import JAX
        from pnn.jit_cache import enable_compile_cache

        enable_compile_cache()

    rc = main(before_run=compile_cache)
    if "emulate" in [a for a in sys.argv[1:3] if a != "--debug"][:1]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc

