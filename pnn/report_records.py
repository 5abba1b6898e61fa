"""The records ``pnn report`` reads and the Markdown it writes them as: :class:`Report` (the
repository's ``experiments/results/``, each file read once), the number and table formatting every
section shares, and what a record says about itself (its methods, where it ran, its data)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pnn.figures import is_digital, system_name
from pnn.network import LEGACY_SKIP

__all__ = ["Report", "ReportError", "RESULTS", "REFERENCE", "LINEAR", "MINUS", "dataset_label"]

#: where the records live, relative to the repository root
RESULTS = Path("experiments") / "results"
#: the minus sign of every number the report writes
MINUS = "\u2212"


class ReportError(ValueError):
    """A marker the report cannot fill (unknown kind, missing records)."""


# --------------------------------------------------------------------------- formatting


def _signed(v: float, digits: int = 1) -> str:
    text = f"{v:+.{digits}f}"
    return text.replace("-", MINUS)


def _plain(v: float, digits: int = 1) -> str:
    return f"{v:.{digits}f}".replace("-", MINUS)


def _pct(v: float) -> str:
    return _plain(100 * v)


def _interval(lo: float, hi: float, *, clip: bool = True, signed: bool = False) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a (1 seed)"
    if clip:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    f = _signed if signed else _plain
    return f"[{f(100 * lo)}, {f(100 * hi)}]"


def _range(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def _table(head: list[str], align: str, rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------- records


@dataclass
class Report:
    """The repository whose documents and records are reported (``root``: its top folder)."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)
        self._cache: dict[Path, object] = {}

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    def load(self, relative: str | Path):
        path = self.results / relative
        if path not in self._cache:
            if not path.is_file():
                raise ReportError(f"no record {path}; run the experiment that writes it (see "
                                  "experiments/) or remove the marker that asks for it")
            self._cache[path] = json.loads(path.read_text(encoding="utf-8"))
        return self._cache[path]

    def compare_records(self, folder: str) -> list[dict]:
        records = self.load(Path(folder) / "results.json")
        if not isinstance(records, list) or not records:
            raise ReportError(f"{self.results / folder / 'results.json'}: expected a list of "
                              "result records (pnn compare writes one)")
        return records


def _methods(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in records))


def _by_method(records: list[dict], method: str) -> list[dict]:
    return [r for r in records if r["method"] == method]


def _runs_on(records: list[dict]) -> str:
    return "digital" if is_digital(records[0]) else system_name(records[0]["system"])


def _bypass(records: list[dict]) -> str:
    """Which digital bypass of the physics a network had: the earlier block's ``|h|/||h||``
    (``skip = "direction"``, what every record before the option had) and a read-out that sees
    the encoded input (``readout_input``)."""
    if is_digital(records[0]):
        return "–"
    cfg = records[0].get("config") or {}
    parts = []
    if cfg.get("skip", LEGACY_SKIP) == LEGACY_SKIP:
        parts.append("block reads the direction of h (skip = direction)")
    if cfg.get("readout_input"):
        parts.append("read-out sees the input")
    return "; ".join(parts) or "none"


_DATASETS = {"peterson_barney": "Peterson & Barney vowels", "hillenbrand": "Hillenbrand vowels",
             "digits": "8×8 digits (scikit-learn)", "mnist": "MNIST",
             "fashion_mnist": "Fashion-MNIST"}
_GROUPS = {"m": "men", "w": "women", "c": "children"}


def dataset_label(data: dict) -> str:
    name = _DATASETS.get(data.get("source", ""), data.get("name", "?"))
    groups = data.get("groups")
    if groups and sorted(groups) != ["c", "m", "w"]:
        name += " (" + ", ".join(_GROUPS.get(g, g) for g in groups) + ")"
    return f"{name}, {len(data.get('classes', []))} classes"


#: the method every comparison is read against
REFERENCE = "phyll"
#: the linear classifier shown beside the papers' numbers
LINEAR = "linear"
