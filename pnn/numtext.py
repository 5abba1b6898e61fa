"""Numbers read from text (CSV cells, data files, instrument replies), refused when cut short.

Python's ``float`` takes ``"3."`` and ``"-.5"``, so a value cut after its decimal point (a
file truncated mid-line, a reply cut by a timeout) would be read as another number. A number
here is complete: digits on both sides of a decimal point, and an exponent with its digits::

    [+-]? (digits (. digits)? | . digits) ([eE] [+-]? digits)?

``inf``, ``infinity`` and ``nan`` (any case, signed) are read as ``float`` reads them, so that
callers' finiteness checks keep their messages.
"""

from __future__ import annotations

import re

__all__ = ["parse_float"]

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?")
_SPECIAL = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def parse_float(text: str) -> float:
    """``text`` (surrounding white space allowed) as a float.

    Raises:
        ValueError: ``text`` is not a complete number, e.g. ``"1.2e"``, ``"3."`` or ``""``.
    """
    s = text.strip()
    if not (_NUMBER.fullmatch(s) or _SPECIAL.fullmatch(s)):
        raise ValueError(f"{text!r} is not a complete number (cut short?)")
    return float(s)
