"""Running an experiment: outputs checked before any work, then the runner of its kind
(:mod:`pnn.experiment.runners`: the train, compare and adapt runners), reporting through the
progress hooks of :class:`RunProgress`."""

from __future__ import annotations

from pathlib import Path

from pnn.experiment.outputs import OUTPUT_FILES, check_outputs
from pnn.experiment.spec import Experiment

__all__ = ["RunProgress", "run_experiment", "check_outputs", "check_devices", "OUTPUT_FILES"]


# ------------------------------------------------------------------------------ running
class RunProgress:
    """What :func:`run_experiment` reports while it runs (subclass it; every method is
    optional). ``start`` returns ``(on_epoch, on_batch)`` for the run loop."""

    def start(self, exp: Experiment, seed: int, data, config, layers, where: str):
        return None, None

    def end(self, exp: Experiment, seed: int, record: dict, data) -> None:
        pass

    def written(self, path: Path, records: list) -> None:
        pass

    def saved(self, path: Path) -> None:
        pass

    # compare and adapt experiments
    def item(self, exp: Experiment, i: int, n: int, label: str) -> None:
        """Run ``i`` of ``n`` starts (a method and seed)."""

    def epochs(self, exp: Experiment, label: str, total: int):
        """An object with ``update(history_entry)`` and ``close()`` (a bar over ``total``
        epochs), or ``None``."""
        return None

    def item_done(self, exp: Experiment, record: dict) -> None:
        pass

    def note(self, exp: Experiment, text: str) -> None:
        """A line worth showing (a method tuned, the files written)."""

    def report(self, exp: Experiment, text: str) -> None:
        """The finished experiment's table (Markdown)."""


def _runners():
    """:mod:`pnn.experiment.runners`, imported when an experiment runs: it brings JAX, the
    trainers and the drivers, which ``pnn --help`` and reading experiment files do without."""
    from pnn.experiment import runners

    return runners


def check_devices(exp: Experiment) -> None:
    """Refuse, before anything runs, ``devices = N`` when JAX sees fewer than N devices
    (:func:`pnn.sharded.check_devices`: the message says how to get more on a CPU)."""
    if exp.devices != 1:
        _runners().check_devices(exp)


def run_experiment(exp: Experiment, progress: RunProgress | None = None) -> list[dict]:
    """Run ``exp`` once per method (``methods``, else ``[method]``) and seed; return the
    records.

    Per run: load the task (the split depends on the seed), build the method's physical layers
    (``registry.build_layers`` with the system's parameters; or connect the instruments), wrap
    the perturbations (a trainer that ``needs_differentiable_model`` keeps the unperturbed
    simulators as its model), train through ``Trainer.train`` and add the experiment to the
    record (``record["experiment"]``: the whole experiment, or with ``methods`` the
    single-method experiment that made the record, so every record replays). With ``[output]
    out`` the records are written atomically after every run, so a crash loses no finished
    run.
    """
    progress = progress or RunProgress()
    check_outputs(exp)  # before any data is loaded or anything trains
    check_devices(exp)
    return _runners().run(exp, progress)
