"""Real instruments as physical layers, and virtual ones to test them without a lab.

* :class:`VisaLayer` (``drivers.visa``): a source + receiver over SCPI through pyvisa.
* :class:`SerialLayer` (``drivers.serial``): a microcontroller over a framed serial protocol.
* :class:`SafetyLimits` (``drivers.safety``): limits on everything sent out.
* :func:`load_profile` (``drivers.profile``): TOML instrument profiles.
* :class:`ScpiEmulator`, :class:`SerialEmulator` (``drivers.emulator``): virtual instruments on
  loopback backed by a simulator, with fault injection.

pyvisa and pyserial are imported only when a driver connects, so ``import drivers`` works
without the ``[hardware]`` extra.
"""

from drivers.emulator import EmulatorLog, Faults, Measurement, ScpiEmulator, SerialEmulator
from drivers.errors import (
    ChecksumError,
    InstrumentConnectionError,
    InstrumentError,
    ReplyFormatError,
    SafetyError,
)
from drivers.profile import Profile, load_profile
from drivers.safety import Limits, SafetyLimits, SafetyWarning
from drivers.serial import SerialLayer
from drivers.stats import DriverStats
from drivers.visa import VisaLayer

__all__ = [
    "VisaLayer",
    "SerialLayer",
    "SafetyLimits",
    "Limits",
    "SafetyWarning",
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
