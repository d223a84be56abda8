"""Illumination correction of flats: a smooth 2-D Legendre model of twilight ÷ dome.

The dome master has the high signal-to-noise pixel-to-pixel structure; the twilight (sky) master
has the illumination the science frames see. Their ratio, sampled on a fixed grid of every chip
(deterministic, chunk independent) in focal-plane coordinates, is fitted by least squares with a
2-D Legendre polynomial of total degree ``order`` (terms ``P_i(x) P_j(y)``, ``i + j <= order``),
leaving out non-finite samples and, iteratively, samples more than ``sigma`` (MAD-based) from the
model. The model is then evaluated lazily per chip, block by block, as a dask array.

Focal-plane coordinates of a trimmed chip pixel come from the chip's DETSEC (flips and binning
included, pixel centres); without a DETSEC on every chip, each chip is fitted on its own in its
own pixel coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from numpy.polynomial import legendre as L

from ..errors import PlanError
from ..sections import Range, Section
from ..utils import MAD_TO_SIGMA

__all__ = [
    "ILLUMINATION_SAMPLE_PIXELS",
    "ChipCoords",
    "Legendre2D",
    "chip_coords",
    "fit_focal_plane",
    "fit_legendre2d",
    "grid_coords",
    "model_image",
    "sample_grid",
]

ILLUMINATION_SAMPLE_PIXELS = 1 << 14
"""Pixels per chip (at most) of the fixed grid the illumination model is fitted on."""


def terms(order: int) -> list[tuple[int, int]]:
    """The (i, j) degrees of the model's terms: ``i + j <= order``, in a fixed order."""
    return [(i, t - i) for t in range(order + 1) for i in range(t, -1, -1)]


def _scale(v: np.ndarray, lim: tuple[float, float]) -> np.ndarray:
    lo, hi = lim
    if hi <= lo:
        return np.zeros_like(v, dtype=np.float64)
    return (2.0 * (np.asarray(v, np.float64) - lo) / (hi - lo)) - 1.0


def _design(
    x: np.ndarray, y: np.ndarray, order: int, xlim: tuple[float, float], ylim: tuple[float, float]
) -> np.ndarray:
    vx = L.legvander(_scale(x, xlim), order)
    vy = L.legvander(_scale(y, ylim), order)
    return np.stack([vx[..., i] * vy[..., j] for i, j in terms(order)], axis=-1)


@dataclass(frozen=True)
class Legendre2D:
    """``sum c_k P_i(x') P_j(y')`` with x', y' the coordinates mapped from ``xlim``/``ylim`` to [-1, 1]."""

    order: int
    coeffs: tuple[float, ...]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    nused: int = 0
    nsample: int = 0

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
        return _design(x, y, self.order, self.xlim, self.ylim) @ np.asarray(self.coeffs, np.float64)


def fit_legendre2d(
    x: np.ndarray,
    y: np.ndarray,
    v: np.ndarray,
    order: int,
    *,
    sigma: float = 3.0,
    maxiters: int = 5,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
) -> Legendre2D:
    """Least-squares 2-D Legendre fit of ``v(x, y)`` with iterative k-sigma clipping.

    Non-finite values are ignored. After each fit, samples whose residual is more than
    ``sigma`` × 1.4826 MAD from the median residual (of the samples kept) are left out, and the
    fit is redone, until nothing changes or ``maxiters`` refits. ``xlim``/``ylim`` default to
    the range of the finite samples.
    """
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    v = np.asarray(v, np.float64).ravel()
    finite = np.isfinite(v) & np.isfinite(x) & np.isfinite(y)
    nterms = len(terms(order))
    if np.count_nonzero(finite) < nterms:
        raise PlanError(
            f"illumination fit: {np.count_nonzero(finite)} finite samples for {nterms} terms of order {order}"
        )
    xlim = xlim or (float(x[finite].min()), float(x[finite].max()))
    ylim = ylim or (float(y[finite].min()), float(y[finite].max()))
    a = _design(x, y, order, xlim, ylim)
    keep = finite.copy()
    coeffs = np.zeros(nterms)
    for it in range(maxiters + 1):
        coeffs = np.linalg.lstsq(a[keep], v[keep], rcond=None)[0]
        if it == maxiters:
            break
        resid = v - a @ coeffs
        r = resid[keep]
        centre = np.median(r)
        spread = MAD_TO_SIGMA * np.median(np.abs(r - centre))
        if not spread > 0:
            break
        new = finite & (np.abs(resid - centre) <= sigma * spread)
        if np.count_nonzero(new) < nterms or np.array_equal(new, keep):
            break
        keep = new
    return Legendre2D(
        order, tuple(float(c) for c in coeffs), xlim, ylim, nused=int(np.count_nonzero(keep)), nsample=int(v.size)
    )


@dataclass(frozen=True)
class ChipCoords:
    """Focal-plane coordinates of a trimmed chip's pixel centres: ``x = x0 + sx (col + 0.5)``."""

    x0: float
    sx: float
    y0: float
    sy: float

    def x(self, col: np.ndarray) -> np.ndarray:
        return self.x0 + self.sx * (np.asarray(col, np.float64) + 0.5)

    def y(self, row: np.ndarray) -> np.ndarray:
        return self.y0 + self.sy * (np.asarray(row, np.float64) + 0.5)


def chip_coords(shape: tuple[int, int], detsec: Section | None = None) -> ChipCoords:
    """Coordinates from DETSEC (flipped ranges run backwards, binning scales) or the chip's own."""
    ny, nx = shape
    if detsec is None or not detsec.x.resolved or not detsec.y.resolved:
        return ChipCoords(0.0, 1.0, 0.0, 1.0)

    def axis(r: Range, n: int) -> tuple[float, float]:
        if r.start is None or r.stop is None:
            raise ValueError(f"unresolved DETSEC range {r}")
        lo, hi = sorted((r.start, r.stop))
        scale = (hi - lo + 1) / n
        return (hi, -scale) if r.start > r.stop else (lo - 1.0, scale)

    x0, sx = axis(detsec.x, nx)
    y0, sy = axis(detsec.y, ny)
    return ChipCoords(x0, sx, y0, sy)


def sample_grid(shape: tuple[int, int], pixels: int = ILLUMINATION_SAMPLE_PIXELS) -> tuple[slice, slice]:
    """The fixed sample grid ``[s//2::s, s//2::s]`` with at most ``pixels`` pixels."""
    s = max(1, math.ceil(math.sqrt(shape[0] * shape[1] / pixels)))
    return slice(s // 2, None, s), slice(s // 2, None, s)


def grid_coords(shape: tuple[int, int], coords: ChipCoords) -> tuple[np.ndarray, np.ndarray]:
    """Focal-plane (x, y) of the sample grid's pixels, 2-D like ``image[sample_grid(shape)]``."""
    ys, xs = sample_grid(shape)
    rows = np.arange(shape[0])[ys]
    cols = np.arange(shape[1])[xs]
    return np.meshgrid(coords.x(cols), coords.y(rows))


def fit_focal_plane(
    samples: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, int]],
    coords: Mapping[str, ChipCoords],
    order: int,
    *,
    sigma: float,
    maxiters: int,
) -> Legendre2D:
    """One fit over the chips' grid samples (``samples[c] = ratio[sample_grid(shape)]``)."""
    xs, ys, vs = [], [], []
    for c, v in samples.items():
        gx, gy = grid_coords(shapes[c], coords[c])
        xs.append(gx.ravel())
        ys.append(gy.ravel())
        vs.append(np.asarray(v, np.float64).ravel())
    return fit_legendre2d(
        np.concatenate(xs), np.concatenate(ys), np.concatenate(vs), order, sigma=sigma, maxiters=maxiters
    )


def _eval_block(
    block: np.ndarray, model: Legendre2D, coords: ChipCoords, block_info: dict[Any, Any] | None = None
) -> np.ndarray:
    if block_info is None:
        raise RuntimeError("block_info is required: this kernel must be called by map_blocks")
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    x = coords.x(np.arange(c0, c1))[None, :]
    y = coords.y(np.arange(r0, r1))[:, None]
    return model(x, y).astype(np.float32)


def model_image(
    model: Legendre2D,
    shape: tuple[int, int],
    coords: ChipCoords,
    chunks: Sequence[Any] | str = "auto",
    *,
    name: str = "illumination",
) -> da.Array:
    """The model evaluated on every pixel of a chip: lazy, one task per block."""
    base = da.zeros(shape, dtype=np.float32, chunks=chunks)
    token = dask.base.tokenize(model, shape, coords, base.chunks)
    return da.map_blocks(_eval_block, base, model=model, coords=coords, dtype=np.float32, name=f"{name}-{token}")
