"""Instrument addresses as the command line, experiments and model files write them:
``visa:RESOURCE`` or ``serial:PORT``. Outside the drivers' package, whose import loads every
driver, so that an experiment file is checked without them (``pnn.drivers.assemble`` and
:class:`pnn.experiment.InstrumentSpec` both read addresses here)."""

from __future__ import annotations

__all__ = ["ADDRESS_KINDS", "parse_address"]

#: the address kinds, each the driver that serves it
ADDRESS_KINDS = ("visa", "serial")


def parse_address(text: str) -> tuple[str, str]:
    """``"visa:RESOURCE"`` or ``"serial:PORT"`` -> ``(kind, where)``.

    Raises:
        ValueError: any other form, with examples of both."""
    kind, sep, where = str(text).partition(":")
    if not sep or kind not in ADDRESS_KINDS or not where:
        raise ValueError(f"--instrument {text!r}: expected 'visa:RESOURCE' (e.g. "
                         f"visa:TCPIP::192.168.0.5::INSTR) or 'serial:PORT' (e.g. "
                         f"serial:/dev/ttyACM0)")
    return kind, where
