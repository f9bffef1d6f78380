"""Measuring energy: every reading in joulebench goes through this package.

- :mod:`~joulebench.energy.base`: the typed :class:`Measurement` of a named window, the
  :class:`Meter` protocol (begin/end/cancel a window, a background trace), the idle baseline;
- :mod:`~joulebench.energy.nvml`, :mod:`~joulebench.energy.rapl`,
  :mod:`~joulebench.energy.estimate`: the meters (GPU counter, CPU/DRAM counters, the CPU
  model over this process or a process tree);
- :mod:`~joulebench.energy.meters`: building the meter(s) a config asks for, several at once;
- :mod:`~joulebench.energy.sampler` and :mod:`~joulebench.energy.trace`: the one background
  sampler and the one power-trace type;
- :mod:`~joulebench.energy.attribution`: energy per request over that trace, with checks.
"""

from joulebench.energy.base import Measurement, Meter, idle_baseline
from joulebench.energy.meters import HARDWARE_METERS, METERS, make_meter, meter_names
from joulebench.energy.trace import PowerTrace

__all__ = [
    "HARDWARE_METERS",
    "METERS",
    "Measurement",
    "Meter",
    "PowerTrace",
    "idle_baseline",
    "make_meter",
    "meter_names",
]
