"""Counters every driver keeps: what was measured, and what it took."""

from __future__ import annotations

import dataclasses

__all__ = ["DriverStats"]


@dataclasses.dataclass
class DriverStats:
    """Batches (transfers of at most ``max_batch`` drives) and samples the caller received: each
    counted once, whatever the retries, and only when the call returned them (a call that raises
    counts nothing, even if some of its transfers were measured); retries (a transfer or frame
    sent again after a failure); connects (sessions opened, the first included)."""

    batches: int = 0
    samples: int = 0
    retries: int = 0
    connects: int = 0
