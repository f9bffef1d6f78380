"""joulebench: measure the energy and time of LLM inference, and how system choices change them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("joulebench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
