"""What an experiment writes, checked before any work: the record file or report folder of
``[output] out``, the model files of ``[output] save`` and the checkpoint folder."""

from __future__ import annotations

from pathlib import Path

from pnn.experiment.spec import Experiment
from pnn.fileio import check_writable

__all__ = ["OUTPUT_FILES", "check_outputs"]

#: the files a compare / adapt experiment writes into its ``[output] out`` folder
OUTPUT_FILES = {"compare": ("results.json", "results.partial.json", "stats.json", "table.md",
                            "cost_vs_accuracy.png", "cost_vs_accuracy.svg", "tuned_configs.json",
                            "tune.journal", "tuning_curves.png", "tuning_curves.svg",
                            "workers.db"),
                "adapt": ("adapt.json", "adapt.md", "adapt.png", "adapt.svg")}


def _save_path(exp: Experiment, seed: int, several_methods: bool) -> Path:
    """Where ``[output] save`` puts the model of ``seed`` (tagged by method and seed when the
    experiment makes several)."""
    target = Path(exp.output.save)
    tag = (f"-{exp.method.name}" if several_methods else "") + \
          (f"-seed{seed}" if len(exp.seeds) > 1 else "")
    return target.with_name(f"{target.stem}{tag}{target.suffix}") if tag else target


def check_outputs(exp: Experiment) -> None:
    """Refuse, before anything runs, an experiment whose outputs cannot be written: ``[output]
    out`` (a record file for ``kind = "train"``, a folder for compare and adapt), every model
    file of ``[output] save`` and ``[run] checkpoint_dir`` (:func:`pnn.fileio.check_writable`).

    Raises:
        pnn.fileio.OutputPathError: (a ``ValueError``) naming the key, the path and the fix.
    """
    if exp.output.out:
        if exp.kind == "train":
            check_writable(exp.output.out, what="[output] out (--out)")
        else:
            check_writable(exp.output.out, folder=True, what="[output] out (--out)",
                           files=OUTPUT_FILES[exp.kind])
    if exp.kind == "train":
        variants = exp.variants()
        for v in variants:
            if v.output.save:
                for seed in v.seeds:
                    check_writable(_save_path(v, seed, len(variants) > 1),
                                   what="[output] save (--save)")
        if exp.run.checkpoint_dir:
            check_writable(exp.run.checkpoint_dir, folder=True,
                           what="[run] checkpoint_dir (--checkpoint-dir)")
