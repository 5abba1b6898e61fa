"""The base of every perturbation injector (:mod:`pnn.perturb`): the :class:`Perturbation`
wrapper, the argument checks and measurement helpers its subclasses share, and the functions that
walk a stack of wrappers (:func:`perturbations_of`, :func:`unwrap`) and save or restore its state
(:func:`perturbation_states`, :func:`load_perturbation_states`).

Host-side only (NumPy and the protocol, :mod:`pnn.layer`): nothing here loads equinox, so
modules that only need to recognise a wrapper (:func:`pnn.layers.devices`) import it cheaply.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from pnn.layer import LayerSpec, check_representable, is_traced, validate_input

__all__ = ["Perturbation", "perturbation_states", "load_perturbation_states", "perturbations_of",
           "unwrap"]


# --------------------------------------------------------------------------- argument checks
def _real(owner: str, label: str, v, *, min_value=None, positive=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{owner}: {label} must be a real number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{owner}: {label} must be finite, got {v!r}")
    check_representable(owner, label, v)
    if positive and v <= 0:
        raise ValueError(f"{owner}: {label} must be > 0, got {v!r}")
    if min_value is not None and v < min_value:
        raise ValueError(f"{owner}: {label} must be >= {min_value}, got {v!r}")
    return v


def _int(owner: str, label: str, v, *, min_value=None, max_value=None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{owner}: {label} must be an integer, got {v!r}")
    v = int(v)
    if min_value is not None and v < min_value:
        raise ValueError(f"{owner}: {label} must be >= {min_value}, got {v}")
    if max_value is not None and v > max_value:
        raise ValueError(f"{owner}: {label} must be <= {max_value}, got {v}")
    return v


def _choice(owner: str, label: str, v, options: Sequence[str]) -> str:
    if v not in options:
        raise ValueError(f"{owner}: {label} must be one of {', '.join(map(repr, options))}, "
                         f"got {v!r}")
    return v


def _seed(owner: str, seed, *, required: bool):
    if seed is None:
        if required:
            raise ValueError(f"{owner}: needs an explicit integer seed (seed=...), got None")
        return None
    return _int(owner, "seed", seed, min_value=0)


def _spec_of(layer, owner: str) -> LayerSpec:
    spec = getattr(layer, "spec", None)
    if not isinstance(spec, LayerSpec) or not callable(layer):
        raise TypeError(
            f"{owner}: can only wrap a PhysicalLayer (a callable with a LayerSpec `spec`), got "
            f"{type(layer).__name__}"
        )
    return spec


def _channels(owner: str, channels, n_out: int) -> tuple[int, ...]:
    if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
        channels = (channels,)
    try:
        chans = tuple(channels)
    except TypeError:
        raise ValueError(f"{owner}: channels must be a list of output-channel indices, "
                         f"got {channels!r}") from None
    if not chans:
        raise ValueError(f"{owner}: channels must name at least one output channel, got none")
    chans = tuple(_int(owner, "a channel index", c, min_value=0, max_value=n_out - 1)
                  for c in chans)
    if len(set(chans)) != len(chans):
        raise ValueError(f"{owner}: channels must be distinct, got {list(chans)}")
    return chans


def _mode(owner: str, mode, rate, step) -> tuple[str, float | None, float | None]:
    """Resolve the drift law from ``mode`` and whichever of ``rate`` (ramp) / ``step`` (walk)."""
    if mode is None:
        if (rate is None) == (step is None):
            raise ValueError(f"{owner}: give exactly one of rate= (a ramp, per sample) or step= "
                             f"(a random walk's step std), got rate={rate!r}, step={step!r}")
        mode = "ramp" if rate is not None else "walk"
    _choice(owner, "mode", mode, ("ramp", "walk"))
    if mode == "ramp":
        if rate is None or step is not None:
            raise ValueError(f"{owner}: mode='ramp' takes rate= (change per sample) and no step=, "
                             f"got rate={rate!r}, step={step!r}")
        return mode, _real(owner, "rate", rate), None
    if step is None or rate is not None:
        raise ValueError(f"{owner}: mode='walk' takes step= (step std per sample) and no rate=, "
                         f"got rate={rate!r}, step={step!r}")
    return mode, None, _real(owner, "step", step, min_value=0.0)


# --------------------------------------------------------------------------- layer calls
def _measure(layer, x: np.ndarray) -> np.ndarray:
    """Call ``layer`` on ``x`` and return a writable float copy, checked for shape."""
    return _checked(layer(x), layer.spec, len(x))


def _checked(y, spec: LayerSpec, n: int) -> np.ndarray:
    y = np.array(y)
    if not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float32)
    if y.shape != (n, spec.n_out):
        raise ValueError(f"{spec.name}: returned a measurement of shape {y.shape}, expected "
                         f"({n}, {spec.n_out})")
    return y


def _measure_padded(layer, x: np.ndarray, size: int) -> np.ndarray:
    """Like :func:`_measure`, padding ``x`` to ``size`` rows (at ``lo``) for a jitted layer."""
    n = len(x)
    if getattr(layer, "pad_batches", False) and n < size:
        pad = np.full((size - n, x.shape[1]), layer.spec.lo, dtype=x.dtype)
        return _measure(layer, np.concatenate([x, pad]))[:n]
    return _measure(layer, x)


# --------------------------------------------------------------------------- the base class
class Perturbation:
    """A physical layer that wraps another and perturbs it; the base of every injector.

    Subclasses set ``name`` (the key in :data:`pnn.perturb.PERTURBATIONS` and in
    :func:`pnn.perturb.parse_perturbations`), store their parameters before calling
    ``Perturbation.__init__``, and override :meth:`_forward` (or just :meth:`_perturb_output`
    for a change of the measurement only).

    Attributes:
        layer: the wrapped layer (never modified). spec: ``layer.spec``, unchanged.
        n_queried: samples sent through this wrapper since construction or :meth:`reset`.
        n_calls: calls since construction or :meth:`reset`.
    """

    name: ClassVar[str] = "perturbation"
    #: see :mod:`pnn.perturb` ("Batch padding")
    pad_batches: ClassVar[bool] = False

    def __init__(self, layer, *, seed: int | None = None):
        self.spec = _spec_of(layer, type(self).__name__)
        self.layer = layer
        self.seed = seed
        self._reset_state()

    # -- state
    def _reset_state(self) -> None:
        self.n_queried = 0
        self.n_calls = 0
        self.rng = np.random.default_rng(self.seed) if self.seed is not None else None

    def reset(self) -> None:
        """Restore the state at construction, here and in every wrapper beneath this one."""
        self._reset_state()
        if isinstance(self.layer, Perturbation):
            self.layer.reset()

    def state_dict(self) -> dict[str, Any]:
        """The running state (counters, noise generator, drift position) of this wrapper and
        every wrapper beneath it, as plain JSON-able data; :meth:`load_state_dict` restores it,
        so that a resumed run sees the same noise and drift as an uninterrupted one."""
        d = {"name": self.name, "n_queried": int(self.n_queried), "n_calls": int(self.n_calls),
             "rng": None if self.rng is None else self.rng.bit_generator.state,
             **self._extra_state()}
        if isinstance(self.layer, Perturbation):
            d["inner"] = self.layer.state_dict()
        return d

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (of a wrapper stack of the same kinds).

        Raises:
            ValueError: when ``state`` was taken from a different stack of wrappers.
        """
        if not isinstance(state, Mapping) or state.get("name") != self.name:
            got = state.get("name") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"{self.spec.name}: saved perturbation state is for {got!r}, "
                             f"this wrapper is {self.name!r}")
        if (state["rng"] is None) != (self.rng is None):
            raise ValueError(f"{self.spec.name}: saved {self.name!r} state "
                             f"{'has no' if state['rng'] is None else 'has a'} noise generator, "
                             f"this wrapper {'has one' if self.rng is not None else 'has none'}")
        inner = isinstance(self.layer, Perturbation)
        if inner != ("inner" in state):
            raise ValueError(f"{self.spec.name}: saved {self.name!r} state and this wrapper "
                             f"differ in what they wrap")
        self.n_queried, self.n_calls = int(state["n_queried"]), int(state["n_calls"])
        if self.rng is not None:
            self.rng.bit_generator.state = dict(state["rng"])
        self._load_extra_state(state)
        if inner:
            self.layer.load_state_dict(state["inner"])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    # -- the protocol
    def __call__(self, x):
        """Perturbed measurement of a batch ``(batch, n_in)`` → numpy array ``(batch, n_out)``.

        Raises:
            TypeError: when called inside a JAX transformation (wrappers are stateful, host-side).
            ValueError: from :func:`pnn.layer.validate_input`, before anything reaches the layer.
        """
        if is_traced(x):
            raise TypeError(
                f"{self.spec.name}: the {self.name!r} perturbation is a stateful host-side "
                f"wrapper and cannot be traced (jit/grad/vmap); call it with concrete arrays"
            )
        validate_input(self.spec, x)
        x = np.asarray(x)
        y = self._forward(x, self.n_queried)
        self.n_queried += len(x)
        self.n_calls += 1
        return y

    def _forward(self, x: np.ndarray, start: int) -> np.ndarray:
        return self._perturb_output(_measure(self.layer, x), start)

    def _perturb_output(self, y: np.ndarray, start: int) -> np.ndarray:
        return y

    # -- records
    def _params(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., <every parameter>: ...}``: what a result record states."""
        return {"name": self.name, **self._params()}

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({self.layer!r}{args})"


# --------------------------------------------------------------------------- wrapper stacks
def perturbation_states(layers) -> list[dict[str, Any] | None]:
    """The state of every perturbation stack in ``layers`` (``None`` for a bare layer)."""
    return [layer.state_dict() if isinstance(layer, Perturbation) else None for layer in layers]


def load_perturbation_states(layers, states) -> None:
    """Restore :func:`perturbation_states` onto the same arrangement of layers.

    Raises:
        ValueError: when the layers are not wrapped as they were when the state was taken.
    """
    states = list(states)
    if len(states) != len(layers):
        raise ValueError(f"saved perturbation state is for {len(states)} layer(s), "
                         f"got {len(layers)}")
    for k, (layer, st) in enumerate(zip(layers, states)):
        if isinstance(layer, Perturbation):
            if st is None:
                raise ValueError(f"layer {k} ({layer.spec.name}) is wrapped in {layer.name!r}, "
                                 f"but the saved run had no perturbation there")
            layer.load_state_dict(st)
        elif st is not None:
            raise ValueError(f"layer {k} ({layer.spec.name}) is not perturbed, but the saved "
                             f"run had {st['name']!r} there")



def perturbations_of(layer) -> list[Perturbation]:
    """The perturbation wrappers around ``layer``, innermost first (``[]`` for a bare layer)."""
    stack = []
    while isinstance(layer, Perturbation):
        stack.append(layer)
        layer = layer.layer
    return stack[::-1]


def unwrap(layer):
    """The layer beneath every perturbation wrapper."""
    while isinstance(layer, Perturbation):
        layer = layer.layer
    return layer
