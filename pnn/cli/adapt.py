"""``pnn adapt``: train while the physics changes. The flags become a ``kind = "adapt"``
experiment (:func:`pnn.cli.experiment.experiment_from_adapt_args`), run as ``pnn run`` runs
one: recovery times printed, record (embedding the experiment) and figure written."""

from __future__ import annotations

__all__ = ["cmd_adapt"]


def cmd_adapt(args) -> int:
    from pnn.cli.experiment import _run, experiment_from_adapt_args

    _run(experiment_from_adapt_args(args), "adapt")
    return 0
