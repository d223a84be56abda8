"""Interoperability with astropy's ``CCDData`` (what ccdproc users hold).

- :func:`to_ccddata` turns a calibrated :class:`~ccdask.frame.Frame` into a ``CCDData`` in
  electrons with a ``VarianceUncertainty``, a boolean mask (any DQ bit set) and the DQ bits
  in ``flags``;
- :func:`from_ccddata` turns a ``CCDData`` into lazy float32 data and variance, with masked
  pixels as NaN so that ccdask's NaN-aware steps ignore them. ``ccdask.combine`` and
  ``ccdask.calibrate._process.process`` accept ``CCDData`` through it.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from ..frame import to_ccddata

__all__ = ["from_ccddata", "is_ccddata", "to_ccddata"]


def is_ccddata(obj: Any) -> bool:
    """Whether ``obj`` is an astropy ``CCDData`` (without importing it when it cannot be)."""
    try:
        from astropy.nddata import CCDData
    except ImportError:  # pragma: no cover - astropy is a dependency
        return False
    return isinstance(obj, CCDData)


def from_ccddata(ccd: Any, *, chunks: Any = "auto") -> tuple[da.Array, da.Array | None]:
    """Lazy float32 ``(data, variance)`` of a ``CCDData``; masked pixels become NaN.

    The variance comes from the uncertainty whatever its kind (standard deviation, variance or
    inverse variance); it is None when the ``CCDData`` carries no uncertainty.
    """
    from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

    data = np.asarray(ccd.data, dtype=np.float32)
    var = None
    unc = ccd.uncertainty
    if unc is not None:
        arr = np.asarray(unc.array, dtype=np.float64)
        if isinstance(unc, StdDevUncertainty):
            var = arr * arr
        elif isinstance(unc, VarianceUncertainty):
            var = arr
        elif isinstance(unc, InverseVariance):
            with np.errstate(divide="ignore"):
                var = np.where(arr > 0, 1.0 / arr, np.inf)
        else:
            raise TypeError(f"cannot use a {type(unc).__name__} as a variance")
        var = np.broadcast_to(var, data.shape).astype(np.float32)
    if ccd.mask is not None:
        mask = np.broadcast_to(np.asarray(ccd.mask, dtype=bool), data.shape)
        data = np.where(mask, np.float32(np.nan), data)
        if var is not None:
            var = np.where(mask, np.float32(np.nan), var)
    d = da.from_array(data, chunks=chunks)
    return d, (None if var is None else da.from_array(var, chunks=d.chunks))
