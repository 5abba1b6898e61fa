"""Sizes refused before any work: an estimate of the memory a run, a simulator or a measurement
needs, compared with the machine's.

Every estimate is a lower bound read from the shapes alone (the arrays that must exist at once,
4 bytes a float32), so a refusal is never a false alarm; the limit is the machine's whole memory
(``psutil.virtual_memory().total``), generous on purpose: what is refused could not run here at
all, where without the check it would fail after minutes of swapping or be killed.
"""

from __future__ import annotations

import psutil

__all__ = ["MemoryEstimateError", "check_memory", "check_run", "machine_bytes", "run_bytes",
           "gib"]

#: bytes of one float32
F32 = 4


class MemoryEstimateError(ValueError):
    """A size whose estimated memory exceeds the machine's memory."""


def machine_bytes() -> int:
    """This machine's physical memory, bytes."""
    return int(psutil.virtual_memory().total)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB"


def check_memory(what: str, n_bytes: float, *, how: str, fix: str) -> None:
    """Raise :class:`MemoryEstimateError` when ``n_bytes`` exceeds the machine's memory.

    The message reads ``"<what> needs at least <n> GiB (<how>; a lower bound from the shapes),
    more than this machine's <m> GiB of memory; <fix>"``.
    """
    total = machine_bytes()
    if n_bytes > total:
        raise MemoryEstimateError(f"{what} needs at least {gib(n_bytes)} ({how}; a lower bound "
                                  f"from the shapes), more than this machine's {gib(total)} of "
                                  f"memory; {fix}")


def run_bytes(shapes, config, n_features: int, n_classes: int, n_train: int) -> tuple[int, str]:
    """A lower bound of a training run's memory and how it was counted.

    Counted: the digital weights between consecutive blocks (block ``k``'s ``n_out`` readings
    to block ``k+1``'s ``n_in`` drives) and, for a digital MLP (``config.width``), its two
    weight matrices, each four times (the weights, their gradient and Adam's two moments), and
    one batch's drives and readings (``min(batch_size, n_train)`` rows).
    """
    shapes = [(int(a), int(b)) for a, b in shapes]
    weights = sum(o * i for (_, o), (i, _) in zip(shapes, shapes[1:]))
    width = getattr(config, "width", None)
    if width:
        weights += (int(n_features) + 1) * int(width) + (int(width) + 1) * int(n_classes)
    batch = min(int(getattr(config, "batch_size", 1) or 1), max(int(n_train), 1))
    widths = sum(i + o for i, o in shapes) + (int(width) if width else 0)
    n = 4 * weights * F32 + batch * widths * F32
    return n, (f"{weights:,} weights x 4 (weights, gradient, Adam's two moments) and a batch of "
               f"{batch:,} rows x {widths:,} drives and readings, float32")


def check_run(trainer, config, data, *, what: str) -> None:
    """Refuse a run of ``trainer`` with ``config`` on ``data`` whose :func:`run_bytes` exceeds
    the machine's memory (before any layer is built)."""
    shapes = trainer.shapes(config, data.n_features, data.n_classes) \
        if trainer.uses_physical_layers else []
    n, how = run_bytes(shapes, config, data.n_features, data.n_classes, len(data.y_train))
    fields = [f for f in ("hidden", "n_meas", "width", "batch_size") if hasattr(config, f)]
    check_memory(what, n, how=how,
                 fix="give smaller " + ", ".join(f"{f} (now {getattr(config, f)!r})"
                                                 for f in fields))
