"""Optional packages some outputs need, probed without importing them (a probe stays cheap)."""

from __future__ import annotations

import importlib.util


def renderer_available() -> bool:
    """Whether vl-convert-python, altair's PNG/SVG renderer (and HTML inliner), is importable."""
    return importlib.util.find_spec("vl_convert") is not None
