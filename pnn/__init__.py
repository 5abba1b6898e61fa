"""pnn: deep physical neural networks, trained without backpropagation through the physics."""

from pnn.cost import Ledger
from pnn.layer import LayerSpec, PhysicalLayer, validate_input

__all__ = ["LayerSpec", "PhysicalLayer", "validate_input", "Ledger"]
__version__ = "0.1.0"
