"""A fake ``pynvml`` for subprocesses of the tests (``joulebench serve``, Snakemake jobs).

Put this directory first on PYTHONPATH and describe the GPUs in ``JOULEBENCH_FAKE_NVML`` (see
``tests/fakehw.py``): every NVML call is answered by one live :class:`fakehw.FakeNvml`, whose
counters follow square waves on the host's monotonic clock, so the test knows the exact energy
of any window the subprocess measured.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fakehw import FakeNVMLError, nvml_from_env

_NVML = nvml_from_env()
NVMLError = FakeNVMLError


def __getattr__(name: str) -> Any:
    return getattr(_NVML, name)
