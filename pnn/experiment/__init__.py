"""Experiments as data: one validated, frozen :class:`Experiment`, read from TOML, a dict or
command-line flags, run by :func:`run_experiment` and embedded whole in every result record, so
that any record replays.

A TOML experiment (every key but ``[method] name`` optional; defaults shown where short)::

    seeds = [0, 1, 2]                     # one run per seed (split, initialisation, disorder)
    perturb = "noise:std=0.02"            # or a list of specs; see pnn.perturb
    methods = ["phyll", "bp"]             # optional: run each method (the one named in
                                          # [method] with its fields, the others with their
                                          # Config defaults); each record holds its own
                                          # single-method experiment
    devices = 1                           # simulator layers data-parallel over the first N
                                          # JAX devices (pnn.sharded; train and compare)

    [task]
    name = "vowels"                       # registry.TASKS
    source = "peterson_barney"            # vowels: peterson_barney, hillenbrand;
                                          # images: digits, mnist_subset, mnist, fashion_mnist
    classes = ["iy", "uw", "aa"]          # vowels: labels to keep, or "pat"
    test_fraction = 0.3
    val_fraction = 0.2
    n_features = 8                        # images: PCA components
    path = "vowdata.dat"                  # local data file
    download = false

    [system]
    name = "acoustic"                     # registry.SYSTEMS
    c_nl = 150.0                          # any constructor argument of the simulator

    [method]
    name = "phyll"                        # registry.TRAINERS
    epochs = 12                           # any field of the trainer's Config
    hidden = [6]

    [run]
    checkpoint_dir = "ck"                 # several seeds: one sub-folder seed-<n> per seed
    checkpoint_every = 20
    resume = false

    [output]
    out = "r.json"                        # one seed: the record; several: a list of records
    save = "model"                        # the trained model (needs pnn.model_io)

    [instrument]                          # train on instruments instead of the simulator
    addresses = ["visa:TCPIP::192.168.0.5::INSTR"]
    profile = "emulator"

``kind = "compare"`` (run by :func:`pnn.compare.compare`, the report in the folder ``[output]
out``) and ``kind = "adapt"`` (:func:`pnn.adapt.run_adaptation`, one seed) take ``methods``, one
``[method.<name>]`` table of Config fields per method, and a ``[compare]`` (``split = "shared"``
with ``split_seed``, or ``"per_seed"``; ``tune_trials``, ``tune_storage``, ``tune_jobs``,
``target``; ``workers`` and ``storage``: jobs of worker processes, docs/cluster.md) or ``[adapt]`` section (``events`` as ``pnn adapt --event`` strings or tables,
``epochs``, ``evals_per_epoch``, ``pat_twin``, ``tolerance``); see experiments/*.toml.

Every section and key is checked: an unknown one is refused naming the file (or "command
line"), the section, the key and the valid keys; values are checked by the trainer's Config
(:mod:`pnn.config`), :func:`pnn.config.check_seed` and :func:`pnn.perturb.parse_perturbations`.
"""

from pnn.experiment.records import read_records, record_status, write_records
from pnn.experiment.run import (OUTPUT_FILES, RunProgress, check_devices, check_outputs,
                                run_experiment)
from pnn.experiment.sections import (AdaptSpec, CompareSpec, InstrumentSpec, MethodSpec,
                                     OutputSpec, RunSpec, SystemSpec, TaskSpec)
from pnn.experiment.spec import KINDS, Experiment, parse_override, system_keys

__all__ = ["Experiment", "TaskSpec", "SystemSpec", "MethodSpec", "RunSpec", "OutputSpec",
           "InstrumentSpec", "CompareSpec", "AdaptSpec", "KINDS", "RunProgress",
           "run_experiment", "check_outputs", "check_devices", "record_status",
           "parse_override", "system_keys", "write_records", "read_records", "OUTPUT_FILES"]
