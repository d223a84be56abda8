"""ccdask: out-of-core, parallel reduction of raw CCD frames on Dask.

>>> import ccdask
>>> cat = ccdask.Catalog.scan("raw/")                     # doctest: +SKIP
>>> res = ccdask.combine(cat.select(imagetyp="bias").paths, hdu=1)   # doctest: +SKIP
>>> ccdask.reduce("raw/", "out/")                         # doctest: +SKIP
"""

from __future__ import annotations

from ._version import __version__
from .calibrate import process
from .catalog import Catalog
from .combine import combine  # the function; the subpackage stays importable
from .config import ReduceConfig, load_config
from .night import reduce
from .simulate import simulate_night

__all__ = ["Catalog", "ReduceConfig", "__version__", "combine", "load_config", "process", "reduce", "simulate_night"]
