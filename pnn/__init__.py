"""pnn: deep physical neural networks, trained without backpropagation through the physics."""

from pnn.cost import Ledger
from pnn.layer import LayerSpec, PhysicalLayer, validate_input

__all__ = ["LayerSpec", "PhysicalLayer", "validate_input", "Ledger", "save_model", "load_model"]


def __getattr__(name):  # lazy: saving and loading models imports JAX-heavy modules
    if name in ("save_model", "load_model"):
        from pnn import model_io

        return getattr(model_io, name)
    raise AttributeError(f"module 'pnn' has no attribute {name!r}")


__version__ = "0.1.0"
