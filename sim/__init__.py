"""JAX simulators of physical systems; each is a :class:`pnn.layer.PhysicalLayer`."""

from pnn.sim.acoustic import AcousticLayer

__all__ = ["AcousticLayer"]
