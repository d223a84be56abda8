"""Coadds: reduced chips reprojected onto one tangent-plane footprint and stacked, out of core.

:func:`coadd` is the entry point (lazy; reduced files in, :class:`CoaddResult` out). It reads the
chips' headers (:func:`read_chips`), builds or takes the output grid (:func:`auto_footprint`,
:class:`Footprint`), and maps one task per footprint tile: every chip reaching the tile is
resampled onto it with the ``reproject`` package (:func:`reproject_tile`) and the planes are
stacked along the frame axis by the combine engine's rejection and inverse-variance weights
(:func:`stack_tile`). :meth:`CoaddResult.write` stores the tiles straight into the output FITS
file (:func:`write_coadd`).

>>> import ccdask
>>> res = ccdask.coadd(["reduced/a.fits", "reduced/b.fits"])  # doctest: +SKIP
>>> res.write("coadd.fits")                                    # doctest: +SKIP
"""

from __future__ import annotations

from ._config import DEFAULT_REJECT_BITS, CoaddConfig
from ._footprint import Footprint, auto_footprint
from ._frames import ChipFrame, read_chips
from ._reproject import reproject_tile
from ._result import CoaddResult
from ._stack import coadd, coadd_tile, coadd_tile_shape, noise_clip, overlap_depth, place_chips, stack_tile
from ._write import write_coadd

__all__ = [
    "DEFAULT_REJECT_BITS",
    "ChipFrame",
    "CoaddConfig",
    "CoaddResult",
    "Footprint",
    "auto_footprint",
    "coadd",
    "coadd_tile",
    "coadd_tile_shape",
    "noise_clip",
    "overlap_depth",
    "place_chips",
    "read_chips",
    "reproject_tile",
    "stack_tile",
    "write_coadd",
]
