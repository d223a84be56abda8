"""ccdask: out-of-core, parallel reduction of raw CCD frames on Dask.

>>> import ccdask
>>> cat = ccdask.Catalog.scan("raw/")                     # doctest: +SKIP
>>> res = ccdask.combine(cat.select(imagetyp="bias").paths, hdu=1)   # doctest: +SKIP
>>> ccdask.reduce("raw/", "out/")                         # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .catalog import Catalog  # noqa: E402
from .combine import combine  # noqa: E402  (the function; the subpackage stays importable)
from .config import ReduceConfig, load_config  # noqa: E402
from .pipeline import reduce  # noqa: E402
from .simulate import simulate_night  # noqa: E402

__all__ = ["Catalog", "ReduceConfig", "__version__", "combine", "load_config", "reduce", "simulate_night"]
