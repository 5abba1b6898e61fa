"""Result records of experiments: written and read, the experiment embedded in each, and
whether a record on disk is current for an experiment."""

from __future__ import annotations

import json
from pathlib import Path

from pnn import __version__
from pnn.config import ConfigError
from pnn.experiment.spec import Experiment
from pnn.fileio import atomic_write_text


def write_records(path, records: list[dict]) -> None:
    """Write one record (a dict) or several (a list) atomically (:mod:`pnn.fileio`: a
    temporary file beside ``path``, synced, then renamed over it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = records[0] if len(records) == 1 else records
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def read_records(path) -> list[dict]:
    """The records of a file written by :func:`write_records` (one or a list)."""
    obj = json.loads(Path(path).read_text())
    records = obj if isinstance(obj, list) else [obj]
    if not records or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected a result record (a JSON object) or a list of them")
    return records


def _embed(record: dict, exp: Experiment) -> dict:
    """Put the experiment (and the pnn version that ran it) into ``record``, so it replays."""
    record["experiment"] = exp.to_dict()
    record["pnn_version"] = __version__
    return record


def _seeds_text(seeds) -> str:
    seeds = list(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(map(str, seeds))


# ------------------------------------------------------------------------------ currency
def record_status(exp: Experiment) -> tuple[bool, str]:
    """Whether the record at :meth:`Experiment.record_path` is current: it exists, embeds an
    experiment identical to ``exp`` (for every method and seed) and was written by this pnn
    version. Returns ``(current, why)``."""
    path = exp.record_path()
    if path is None:
        return False, "no [output] out, so no record to find"
    if not path.exists():
        return False, f"no record at {path} yet"
    try:
        records = read_records(path)
    except (ValueError, OSError) as e:
        return False, f"{path} unreadable ({e})"
    versions = {r.get("pnn_version") for r in records}
    if versions != {__version__}:
        return False, (f"{path} was written by pnn "
                       f"{', '.join(sorted(map(str, versions)))}, this is {__version__}")
    try:
        held = [Experiment.from_dict(r["experiment"], where=f"{path} (experiment)")
                for r in records]
    except (KeyError, ConfigError):
        return False, f"{path} holds no valid experiment"
    if exp.kind == "train":
        expected = [(v, seed) for v in exp.variants() for seed in v.seeds]
        got = [(h, r.get("seed")) for h, r in zip(held, records)]
    else:
        n = len(exp.methods) * len(exp.seeds) if exp.kind == "compare" else 1
        expected, got = [exp] * n, held
    if got != expected:
        return False, f"{path} holds a different experiment (or runs)"
    return True, f"{path} is current"
