"""ccdask: out-of-core, parallel reduction of raw CCD frames on Dask."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
