"""Exceptions raised by instrument drivers.

Every driver failure is one of these, so a training script can tell a refused drive (a
``ValueError``: nothing was sent), a misbehaving instrument (:class:`InstrumentError`), a reply
that cannot be trusted (:class:`ReplyFormatError`) and a link that is gone
(:class:`InstrumentConnectionError`) apart. Each message names the layer or resource, what was
expected and what came back.
"""

from __future__ import annotations

__all__ = [
    "InstrumentError",
    "InstrumentConnectionError",
    "ReplyFormatError",
    "ChecksumError",
    "SafetyError",
]


class InstrumentError(RuntimeError):
    """The instrument reported an error (SCPI error queue, or an error frame on serial)."""


class InstrumentConnectionError(InstrumentError):
    """The instrument could not be reached, or the link failed and bounded retries ran out."""


class ReplyFormatError(InstrumentError):
    """A reply of the wrong length or format: raised instead of returning a wrong number."""


class ChecksumError(ReplyFormatError):
    """A serial frame whose checksum does not match its content."""


class SafetyError(ValueError):
    """A drive outside the safety limits was refused; nothing was sent to the instrument."""
