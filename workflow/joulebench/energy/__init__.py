"""Measuring energy: every reading in joulebench goes through this package.

- :mod:`~joulebench.energy.base`: the typed :class:`Measurement` of a named window, the
  :class:`Meter` protocol (begin/end/cancel a window, a background trace), the idle baseline;
- :mod:`~joulebench.energy.nvml`, :mod:`~joulebench.energy.rapl`,
  :mod:`~joulebench.energy.estimate`: the meters (GPU counter, CPU/DRAM counters, the CPU
  model over this process or a process tree);
- :mod:`~joulebench.energy.choice`: the meter names and the check of a choice (light: config
  checks read it without importing the meters);
- :mod:`~joulebench.energy.meters`: building the meter(s) a config asks for, several at once;
- :mod:`~joulebench.energy.sampler` and :mod:`~joulebench.energy.trace`: the one background
  sampler and the one power-trace type;
- :mod:`~joulebench.energy.attribution`: energy per request over that trace, with checks.
"""
