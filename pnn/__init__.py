"""pnn: deep physical neural networks, trained without backpropagation through the physics."""

from importlib import import_module as _import_module

__all__ = ["LayerSpec", "PhysicalLayer", "validate_input", "Ledger", "save_model", "load_model"]

#: where each public name lives; imported on first use, so that ``import pnn`` (and ``pnn
#: --help``) does not pay for JAX
_LAZY = {"LayerSpec": "pnn.layer", "PhysicalLayer": "pnn.layer", "validate_input": "pnn.layer",
         "Ledger": "pnn.cost", "save_model": "pnn.model_io", "load_model": "pnn.model_io"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(_import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pnn' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__version__ = "0.1.0"
