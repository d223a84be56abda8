"""Bleed trails: the charge a saturated star spills along its readout columns (DQ bit 32).

A pixel holds a limited charge (its full well); what a saturated star collects beyond that
flows along the column, up and down the parallel register, and fills the pixels above and below
to the full well: a trail many pixels long and one or a few wide. Its pixels often read below
the amplifier's ``saturate`` level (the ADC or header limit is above the full well, or the
trail's end pixels are only partly filled), so the saturation mask misses them.

The idea is that of IRAF mscred's ``ccdproc`` (``bleed``, ``btrail``, ``bgrow``): in the raw
frame, a *trail* is a run of consecutive pixels along a column, all at or above a bleed level,
at least ``length`` pixels long. Stars are far shorter than that above the level (a few FWHM at
most), so only the spilled charge of saturated stars is found. The trails are brought to the
trimmed, assembled frame like the saturation mask and grown by ``grow`` pixels (square
dilation) to catch the partly filled ends and the neighbouring columns.

The bleed level of each amplifier is ``level`` times its ``saturate`` level in raw ADU (the
same units as the saturation mask: raw values before the overscan). An amplifier without a
saturation level has no trails.

Runs are along the raw frame's y axis (the parallel, readout direction of every layout ccdask
knows). The dask form gathers whole columns (the candidate pixels as one byte each, in strips
of columns), so a trail crossing any number of chunks is found exactly as on the whole frame:
the result equals the numpy form for any chunking.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..errors import ConfigError
from ..profiles._layout import ChipLayout
from ._masks import _BOOL_META, _saturated_block, _saturation_rects, grow_mask, grow_mask_np
from ._regions import whole_block

__all__ = ["bleed_history", "bleed_mask", "bleed_mask_np", "column_runs_np"]

#: bytes of one strip of whole columns in the dask form (one byte per pixel)
_STRIP_BYTES = 2**21


def _check(level: float, length: int, grow: int) -> None:
    if not (isinstance(level, (int, float)) and 0 < float(level) <= 1):
        raise ConfigError(f"bleed trails: level must be a fraction of the saturation level in (0, 1], got {level!r}")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
        raise ConfigError(f"bleed trails: length must be an integer >= 2 pixels, got {length!r}")
    if isinstance(grow, bool) or not isinstance(grow, (int, np.integer)) or grow < 0:
        raise ConfigError(f"bleed trails: grow must be a non-negative integer, got {grow!r}")


def column_runs_np(candidate: np.ndarray, length: int) -> np.ndarray:
    """Pixels of the runs of True along each column (axis 0) that are at least ``length`` long.

    Parameters
    ----------
    candidate : numpy.ndarray
        2-D boolean.
    length : int
        Minimum run length (pixels).

    Returns
    -------
    numpy.ndarray
        Boolean, same shape: True on every pixel of a long enough run.
    """
    b = np.asarray(candidate, dtype=bool)
    ny, nx = b.shape
    if b.size == 0 or not b.any():
        return np.zeros(b.shape, dtype=bool)
    # columns one after another, each closed by a False, so runs never join across columns
    flat = np.zeros((nx, ny + 1), dtype=np.int8)
    flat[:, :ny] = b.T
    edges = np.diff(flat.ravel(), prepend=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    keep = (ends - starts) >= int(length)
    marks = np.zeros(flat.size + 1, dtype=np.int32)
    np.add.at(marks, starts[keep], 1)
    np.add.at(marks, ends[keep], -1)
    runs = np.cumsum(marks[:-1]).astype(bool).reshape(nx, ny + 1)[:, :ny]
    return np.ascontiguousarray(runs.T)


def _levels(
    layout: ChipLayout, raw_shape: tuple[int, ...], level: float
) -> tuple[tuple[int, int, int, int, float], ...]:
    return tuple((y0, y1, x0, x1, float(level) * sat) for y0, y1, x0, x1, sat in _saturation_rects(raw_shape, layout))


def bleed_mask_np(
    raw: np.ndarray, layout: ChipLayout, *, level: float = 0.5, length: int = 10, grow: int = 1
) -> np.ndarray:
    """:func:`bleed_mask` on a whole raw chip held in memory."""
    from ._assemble import assemble_np

    _check(level, length, grow)
    arr = np.asarray(raw)
    cand = _saturated_block(arr, amps=_levels(layout, arr.shape, level), block_info=whole_block(arr.shape))
    return grow_mask_np(assemble_np(column_runs_np(cand, length), layout), grow)


def bleed_mask(raw: da.Array, layout: ChipLayout, *, level: float = 0.5, length: int = 10, grow: int = 1) -> da.Array:
    """Bleed trails of a raw chip, lazily, in the trimmed chip (DQ bit 32, :data:`ccdask.dq.BLEED`).

    Parameters
    ----------
    raw : dask.array.Array
        One raw chip in ADU, shape ``layout.raw_shape``.
    layout : ChipLayout
        The chip's amplifiers (data sections and ``saturate`` levels).
    level : float
        A pixel can belong to a trail when its raw value is at least ``level`` times its
        amplifier's saturation level.
    length : int
        Minimum length of a trail along the column (pixels).
    grow : int
        Pixels to grow the trails by (square dilation), in the trimmed frame.

    Returns
    -------
    dask.array.Array
        Boolean, shape ``layout.trimmed_shape``; equal to :func:`bleed_mask_np` for any chunking.
    """
    from . import assemble

    _check(level, length, grow)
    arr = da.asarray(raw)
    cand = arr.map_blocks(
        _saturated_block,
        amps=_levels(layout, arr.shape, level),
        dtype=bool,
        meta=_BOOL_META,
        token=f"bleed-candidates-{layout.name}",
    )
    ny, nx = arr.shape
    cols = max(1, min(nx, _STRIP_BYTES // max(ny, 1)))
    runs = cand.rechunk({0: -1, 1: cols}).map_blocks(
        column_runs_np, int(length), dtype=bool, meta=_BOOL_META, token=f"bleed-trails-{layout.name}"
    )
    return grow_mask(assemble(runs.rechunk(arr.chunks), layout), int(grow))


def bleed_history(level: float, length: int, grow: int) -> str:
    """The HISTORY line of the bleed-trail mask."""
    return (
        f"bleed trails: column runs >= {int(length)} px at >= {float(level):g} x saturate (raw ADU), "
        f"grown by {int(grow)}, DQ bit 32"
    )
