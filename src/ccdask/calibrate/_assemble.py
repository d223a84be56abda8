"""Trim and assemble: cut each amplifier's data section and place it in the trimmed chip."""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..errors import ShapeMismatchError
from ..profiles._layout import ChipLayout
from ._regions import Rect, check_disjoint, rect_of

__all__ = ["assemble", "assemble_np", "trim"]


def assemble(array: da.Array, layout: ChipLayout) -> da.Array:
    """The trimmed, assembled chip: each amplifier's data section placed at its ``ccdsec``.

    Works for any dtype (float pixels, boolean or integer masks computed on raw coordinates),
    and keeps it. Flipped data sections (``[1024:1,...]``) are read in their stated direction,
    so a flipped amplifier comes out in sky orientation. The pieces are joined with
    concatenations (a guillotine split of the ``ccdsec`` tiling, which covers every grid and
    row/column band layout); a tiling no straight cut can split falls back to block assignment.

    Parameters
    ----------
    array : dask.array.Array or numpy.ndarray
        A raw-coordinate chip, shape ``layout.raw_shape``.
    layout : ChipLayout
        The chip's amplifiers.

    Returns
    -------
    dask.array.Array
        Lazy array of shape ``layout.trimmed_shape`` and the input's dtype.

    Raises
    ------
    ShapeMismatchError
        ``array`` does not have the layout's raw shape.
    ProfileError
        Two amplifiers' ``ccdsec`` overlap.
    """
    arr = array if isinstance(array, da.Array) else da.asarray(array)
    if tuple(arr.shape) != tuple(layout.raw_shape):
        raise ShapeMismatchError(
            f"chip {layout.name}: cannot assemble an array of shape {tuple(arr.shape)}; the "
            f"layout's raw shape is {tuple(layout.raw_shape)}"
        )
    check_disjoint(layout, {a.name: rect_of(a.ccdsec) for a in layout.amplifiers}, "ccdsecs")
    pieces = [(rect_of(a.ccdsec), arr[a.datasec.slices]) for a in layout.amplifiers]
    ny, nx = layout.trimmed_shape
    out = _guillotine(pieces, Rect(0, ny, 0, nx))
    if out is None:
        out = _assign(pieces, (ny, nx), arr.dtype)
    return out


def assemble_np(array: np.ndarray, layout: ChipLayout) -> np.ndarray:
    """:func:`assemble` on a whole raw-coordinate chip held in memory (any dtype, kept)."""
    arr = np.asarray(array)
    if tuple(arr.shape) != tuple(layout.raw_shape):
        raise ShapeMismatchError(
            f"chip {layout.name}: cannot assemble an array of shape {tuple(arr.shape)}; the "
            f"layout's raw shape is {tuple(layout.raw_shape)}"
        )
    check_disjoint(layout, {a.name: rect_of(a.ccdsec) for a in layout.amplifiers}, "ccdsecs")
    out = np.empty(layout.trimmed_shape, dtype=arr.dtype)
    for a in layout.amplifiers:
        r = rect_of(a.ccdsec)
        out[r.y0 : r.y1, r.x0 : r.x1] = arr[a.datasec.slices]
    return out


def trim(array: da.Array, layout: ChipLayout) -> da.Array:
    """Alias of :func:`assemble`, reading better for a single-amplifier chip.

    Parameters
    ----------
    array : dask.array.Array or numpy.ndarray
        A raw-coordinate chip, shape ``layout.raw_shape``.
    layout : ChipLayout
        The chip's amplifiers (one or more).

    Returns
    -------
    dask.array.Array
        The data section(s), shape ``layout.trimmed_shape``.
    """
    return assemble(array, layout)


def _guillotine(pieces: list[tuple[Rect, da.Array]], region: Rect) -> da.Array | None:
    """Join pieces tiling ``region`` by recursive straight cuts; None if no cut exists."""
    if len(pieces) == 1:
        return pieces[0][1]
    for axis in (0, 1):
        lo = region.y0 if axis == 0 else region.x0
        starts = sorted({(r.y0 if axis == 0 else r.x0) for r, _ in pieces} - {lo})
        for cut in starts:

            def side(r: Rect, c: int = cut, ax: int = axis) -> int:
                a0, a1 = (r.y0, r.y1) if ax == 0 else (r.x0, r.x1)
                return -1 if a1 <= c else (1 if a0 >= c else 0)

            sides = [side(r) for r, _ in pieces]
            if 0 in sides:
                continue
            first = [p for p, s in zip(pieces, sides, strict=True) if s < 0]
            second = [p for p, s in zip(pieces, sides, strict=True) if s > 0]
            if axis == 0:
                r1, r2 = region._replace(y1=cut), region._replace(y0=cut)
            else:
                r1, r2 = region._replace(x1=cut), region._replace(x0=cut)
            a, b = _guillotine(first, r1), _guillotine(second, r2)
            if a is None or b is None:
                return None
            return da.concatenate([a, b], axis=axis)
    return None


def _assign(pieces: list[tuple[Rect, da.Array]], shape: tuple[int, int], dtype: np.dtype) -> da.Array:
    out = da.zeros(shape, dtype=dtype)
    for rect, piece in pieces:
        out[rect.y0 : rect.y1, rect.x0 : rect.x1] = piece
    return out
