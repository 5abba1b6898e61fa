"""Counters every driver keeps: what was measured, and what it took."""

from __future__ import annotations

import dataclasses

__all__ = ["DriverStats"]


@dataclasses.dataclass
class DriverStats:
    """Batches and samples measured (each counted once, whatever the retries), retries (a batch
    or frame sent again after a failure), connects (sessions opened, the first included)."""

    batches: int = 0
    samples: int = 0
    retries: int = 0
    connects: int = 0
