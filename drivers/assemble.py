"""Instrument layers for a network's blocks, from plain values.

:func:`instrument_layers` turns instrument addresses (``visa:RESOURCE``, ``serial:PORT``), a
profile and the blocks' shapes into driver layers (not connected yet): one instrument per block,
or one instrument shared by every block (time-multiplexed, :class:`pnn.layers.Shared`). The
command line, experiments and ``pnn eval --instrument`` all build their layers here.
"""

from __future__ import annotations

from pnn.address import parse_address
from pnn.drivers.profile import load_profile
from pnn.drivers.serial import SerialLayer
from pnn.drivers.visa import VisaLayer
from pnn.layers import WidthError, share

__all__ = ["instrument_layers", "parse_address"]

_KINDS = {"visa": VisaLayer, "serial": SerialLayer}


def instrument_layers(addresses, shapes, *, profile="emulator", what: str = "the network",
                      hint: str = "") -> list:
    """One driver layer per block (not connected yet).

    Args:
        addresses: ``["visa:...", "serial:..."]``: one per block, in order, or a single one
            that every block shares (built as wide as the widest block, or as the profile fixes
            it; each block a padded view, :func:`pnn.layers.share`).
        shapes: ``[(n_in, n_out), ...]``, one per block.
        profile: an instrument profile: a path or a shipped name (default ``"emulator"``).
        what: names the network in messages (e.g. ``"phyll with hidden=(20, 20)"``).
        hint: appended to a message about widths (which flags set them).

    Raises:
        ValueError: a malformed address, a count of addresses that fits neither form, or a
            block shape that the profile's fixed widths cannot serve.
    """
    addresses, shapes = list(addresses), [tuple(s) for s in shapes]
    need = "; ".join(f"block {k}: n_in={i}, n_out={o}" for k, (i, o) in enumerate(shapes))
    prof = load_profile(profile)
    L = prof.layer
    if len(addresses) == 1 and len(shapes) > 1:

        text = addresses[0]
        kind, where = parse_address(text)
        n_in = L.n_in if L.n_in is not None else max(i for i, _ in shapes)
        n_out = L.n_out if L.n_out is not None else max(o for _, o in shapes)
        device = _KINDS[kind](prof, where, n_in=n_in, n_out=n_out, name=f"{kind}:{where}")
        try:
            return share(device, shapes)
        except WidthError as e:
            raise WidthError(f"--instrument {text!r} for every block (profile "
                             f"{prof.source}): {e}" + (f". {hint}" if hint else "")) from None
    if len(addresses) != len(shapes):
        raise ValueError(f"{what} needs {len(shapes)} physical layer(s) ({need}), but "
                         f"{len(addresses)} --instrument was given: give one per block, in "
                         f"order, or a single one that every block shares (or change --hidden)")
    layers = []
    for k, (text, (n_in, n_out)) in enumerate(zip(addresses, shapes)):
        kind, where = parse_address(text)
        for name, have, want in (("n_in", L.n_in, n_in), ("n_out", L.n_out, n_out)):
            if have is not None and have != want:
                raise WidthError(f"profile {prof.source} fixes {name}={have}, but block {k} "
                                 f"needs {name}={want} ({need})" + (f". {hint}" if hint else ""))
        layers.append(_KINDS[kind](prof, where, n_in=n_in, n_out=n_out,
                                   name=f"{kind}[{k}]:{where}"))
    return layers
