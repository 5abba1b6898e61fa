"""JAX simulators of physical systems; each is a :class:`pnn.layer.PhysicalLayer` and a
subclass of :class:`pnn.sim.base.AbstractSimulator`."""

from pnn.sim.acoustic import AcousticLayer
from pnn.sim.base import AbstractSimulator
from pnn.sim.microwave import MicrowaveLayer
from pnn.sim.optical import OpticalLayer

__all__ = ["AbstractSimulator", "AcousticLayer", "MicrowaveLayer", "OpticalLayer"]
