"""One apparatus serving several blocks: :class:`Shared` views of one layer (narrower drives
padded with ``lo``, the first ``n_out`` channels read), :func:`share`, and :func:`devices`, the
distinct devices behind a list of layers. :mod:`pnn.layers` ("Shared layers") explains the rules.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from pnn.layer import LayerSpec, is_traced, validate_input
from pnn.layer import device_name as _device_name
from pnn.perturbation import Perturbation

__all__ = ["WidthError", "Shared", "share", "devices", "device_name"]


class WidthError(ValueError):
    """A block wider (in drives or measured channels) than the one layer it must use."""


class Shared:
    """One block's view of a layer that several blocks share (or of a wider layer).

    ``Shared(layer, n_in, n_out, block=k)`` presents ``layer`` as an ``n_in -> n_out`` layer: a
    drive narrower than ``layer.spec.n_in`` is padded with ``layer.spec.lo`` (appended after the
    block's channels), and the first ``n_out`` measured channels are returned. The range and
    units are the layer's. Calls go straight to ``layer``; the view keeps no state of its own, so
    every block's view of one device sees the same physics (and its drift, noise, counters).

    Attributes:
        layer: the shared device (what the perturbation and fingerprint helpers unwrap to).
        block: the block this view serves (``None`` when the view only adapts the shape).
        spec: ``n_in``, ``n_out`` of the block; name ``<device>[block k]`` by default.

    Raises:
        ValueError: when the block needs more drive or measured channels than the layer has.
    """

    def __init__(self, layer, n_in: int | None = None, n_out: int | None = None, *,
                 block: int | None = None, name: str | None = None):
        dev = layer.spec
        n_in = dev.n_in if n_in is None else int(n_in)
        n_out = dev.n_out if n_out is None else int(n_out)
        who = f"block {block}" if block is not None else "the block"
        if n_in > dev.n_in:
            raise WidthError(
                f"{dev.name}: {who} sends {n_in} drive channels, but the shared layer takes "
                f"{dev.n_in}; a shared layer needs n_in >= every block's drive width (narrower "
                f"drives are padded with lo={dev.lo}): build the layer with n_in={n_in} or more, "
                f"or make the block narrower")
        if n_out > dev.n_out:
            raise WidthError(
                f"{dev.name}: {who} reads {n_out} measured channels, but the shared layer "
                f"measures {dev.n_out}; build the layer with n_out={n_out} or more, or lower "
                f"the block's n_meas")
        self.layer = layer
        self.block = block
        if name is None:
            name = f"{dev.name}[block {block}]" if block is not None else dev.name
        self.spec = LayerSpec(n_in=n_in, n_out=n_out, lo=dev.lo, hi=dev.hi, name=name,
                              units=dev.units)

    @property
    def device(self):
        return self.layer

    @property
    def shared_device_name(self) -> str:
        """The name of the one device every view shares (:func:`pnn.layer.device_name`)."""
        return self.layer.spec.name

    @property
    def pad_batches(self) -> bool:
        return bool(getattr(self.layer, "pad_batches", False))

    @property
    def n_pad(self) -> int:
        """Drive channels filled with ``lo`` (appended after the block's own)."""
        return self.layer.spec.n_in - self.spec.n_in

    def __call__(self, x):
        dev = self.layer.spec
        validate_input(self.spec, x)
        b = x.shape[0]
        if self.n_pad:
            if is_traced(x) or not isinstance(x, np.ndarray) and hasattr(x, "at"):
                x = jnp.concatenate([x, jnp.full((b, self.n_pad), dev.lo, x.dtype)], axis=1)
            else:
                x = np.asarray(x)
                x = np.concatenate([x, np.full((b, self.n_pad), dev.lo, x.dtype)], axis=1)
        y = self.layer(x)
        if tuple(y.shape) != (b, dev.n_out):
            raise ValueError(f"{dev.name}: returned a measurement of shape {tuple(y.shape)}, "
                             f"expected ({b}, {dev.n_out})")
        return y[:, : self.spec.n_out] if self.spec.n_out < dev.n_out else y

    def __repr__(self) -> str:
        return (f"Shared({self.layer!r}, n_in={self.spec.n_in}, n_out={self.spec.n_out}, "
                f"block={self.block})")


def share(layer, shapes, *, names=None) -> list[Shared]:
    """One :class:`Shared` view of ``layer`` per block, ``shapes`` being the blocks'
    ``(n_in, n_out)`` (a trainer's ``layer_shapes``). Every block that does not fit is named in
    one error, with the widths the shared layer would need."""
    shapes = [(int(i), int(o)) for i, o in shapes]
    dev = layer.spec
    bad = [f"block {k} needs n_in={i}, n_out={o}" for k, (i, o) in enumerate(shapes)
           if i > dev.n_in or o > dev.n_out]
    if bad:
        need_in = max(i for i, _ in shapes)
        need_out = max(o for _, o in shapes)
        raise ValueError(
            f"{dev.name} (n_in={dev.n_in}, n_out={dev.n_out}) cannot serve every block: "
            f"{'; '.join(bad)}. Blocks share a layer when their drive widths equal its n_in "
            f"(narrower drives are padded with lo, the first n_out channels are read); use a "
            f"layer with n_in >= {need_in} and n_out >= {need_out}, or narrower blocks")
    return [Shared(layer, i, o, block=k, name=None if names is None else names[k])
            for k, (i, o) in enumerate(shapes)]


#: kept here for callers of ``pnn.layers``; defined with the protocol
device_name = _device_name


def devices(layers) -> list:
    """The distinct devices behind ``layers`` (through :class:`Shared` views and perturbation
    wrappers), in order of first use: what to connect, once each."""
    seen: dict[int, Any] = {}
    for layer in layers:
        inner = layer
        while True:
            if isinstance(inner, Shared):
                inner = inner.layer
                continue
            nxt = getattr(inner, "layer", None)
            if nxt is None or nxt is inner or not isinstance(inner, Perturbation):
                break
            inner = nxt
        seen.setdefault(id(inner), inner)
    return list(seen.values())
