"""What every instrument driver shares: the context-manager life cycle.

A driver does no I/O in its constructor; ``with layer:`` (or :meth:`connect`) opens the link and
leaving the block calls :meth:`close`, which leaves the instrument safe. A failing ``close()``
during an exception is reported as a warning so that it never masks the error that is already
propagating.
"""

from __future__ import annotations

import warnings

__all__ = ["InstrumentLayer"]


class InstrumentLayer:
    """Base of the drivers: subclasses provide ``spec``, ``connect()`` and ``close()``."""

    def connect(self):  # pragma: no cover - every driver implements it
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - every driver implements it
        raise NotImplementedError

    def __enter__(self):
        return self.connect()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as e:  # do not mask the error that is already propagating
            warnings.warn(f"{self.spec.name}: close() failed while handling {exc_type.__name__}: "
                          f"{e}", RuntimeWarning, stacklevel=2)
