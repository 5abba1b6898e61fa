"""Real instruments as physical layers, and virtual ones to test them without a lab.

* :class:`InstrumentLayer` (``pnn.drivers.base``): the instrument, once: validation, safety,
  wire encoding (:mod:`pnn.drivers.wire`), chunking, pacing, retries and counters. The drivers
  below supply only their transport.
* :class:`VisaLayer` (``pnn.drivers.visa``): a source + receiver over SCPI through pyvisa.
* :class:`SerialLayer` (``pnn.drivers.serial``): a microcontroller over a framed serial protocol.
* :class:`SafetyLimits` (``pnn.drivers.safety``): limits on everything sent out.
* :func:`load_profile` (``pnn.drivers.profile``): TOML instrument profiles.
* :class:`ScpiEmulator`, :class:`SerialEmulator` (``pnn.drivers.emulator``): virtual instruments on
  loopback backed by a simulator, with fault injection.

pyvisa and pyserial are imported only when a driver connects, so ``import drivers`` works
without the ``[hardware]`` extra.
"""

from pnn.drivers.base import InstrumentLayer
from pnn.drivers.emulator import EmulatorLog, Faults, Measurement, ScpiEmulator, SerialEmulator
from pnn.drivers.errors import (
    ChecksumError,
    InstrumentConnectionError,
    InstrumentError,
    ReplyFormatError,
    SafetyError,
)
from pnn.drivers.profile import Profile, load_profile
from pnn.drivers.safety import DeviceLimitsWarning, Limits, SafetyLimits, SafetyWarning
from pnn.drivers.serial import SerialLayer
from pnn.drivers.stats import DriverStats
from pnn.drivers.visa import VisaLayer

__all__ = [
    "InstrumentLayer",
    "VisaLayer",
    "SerialLayer",
    "SafetyLimits",
    "Limits",
    "SafetyWarning",
    "DeviceLimitsWarning",
    "Profile",
    "load_profile",
    "DriverStats",
    "ScpiEmulator",
    "SerialEmulator",
    "Faults",
    "EmulatorLog",
    "Measurement",
    "InstrumentError",
    "InstrumentConnectionError",
    "ReplyFormatError",
    "ChecksumError",
    "SafetyError",
]
