"""ccdask: out-of-core, parallel reduction of raw CCD frames on Dask.

>>> import ccdask
>>> cat = ccdask.Catalog.scan("raw/")                     # doctest: +SKIP
>>> res = ccdask.combine(cat.select(imagetyp="bias").paths, hdu=1)   # doctest: +SKIP
>>> ccdask.reduce("raw/", "out/")                         # doctest: +SKIP

The public names are imported on first use (``import ccdask`` itself loads neither dask.array,
astropy nor numba), so the command line and ``ccdask.__version__`` start fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .calibrate import process
    from .catalog import Catalog
    from .coadd import coadd
    from .combine import combine
    from .config import ReduceConfig, load_config
    from .night import reduce
    from .simulate import simulate_night

#: public name -> the module it lives in (imported on first access)
_LAZY = {
    "Catalog": "ccdask.catalog",
    "coadd": "ccdask.coadd",  # the function, as combine
    "ReduceConfig": "ccdask.config",
    "combine": "ccdask.combine",  # the function; the subpackage stays importable as ccdask.combine
    "load_config": "ccdask.config",
    "process": "ccdask.calibrate",
    "reduce": "ccdask.night",
    "simulate_night": "ccdask.simulate",
}

__all__ = [
    "Catalog",
    "ReduceConfig",
    "__version__",
    "coadd",
    "combine",
    "load_config",
    "process",
    "reduce",
    "simulate_night",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ccdask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """``ccdask``'s module type: ``ccdask.combine`` (and ``ccdask.coadd``) stays the function when the subpackage of
    the same name is imported (the import system sets the package attribute to the submodule;
    ``sys.modules["ccdask.combine"]`` keeps the subpackage)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("combine", "coadd") and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
