"""One chip's SCI/VAR/DQ reprojected onto one tile of the footprint (numpy, inside a task).

:func:`reproject_tile` reads only the region of the chip that the tile can see (its outline
mapped into the chip, padded), masks the pixels whose DQ has any of the rejected bits (or a
non-finite SCI/VAR), and resamples with the ``reproject`` package:

* ``interp``: ``reproject_interp`` (bilinear). The variance is resampled with the same weights
  and multiplied by ``g(fx) g(fy)``, ``g(f) = (1 - f)² + f² = 1 - 2f(1 - f)`` with ``(fx, fy)`` the
  fractional input position: the variance of a bilinear interpolate of independent pixels of
  locally constant variance (``Σ wᵢ² σ²`` rather than ``Σ wᵢ σ²``), so VAR stays the variance
  of each coadd pixel. An output pixel any of whose four neighbours is masked is dropped.
* ``exact``: ``reproject_exact`` (spherical-polygon overlap: flux-conserving drizzle with
  ``pixfrac = 1``); ``adaptive``: ``reproject_adaptive`` (DeForest's anti-aliased resampling).
  Masked pixels get weight 0: the resampled values are renormalised by the good weight
  ``1 - m`` (``m`` the resampled mask) and pixels with ``m > MASKED_WEIGHT`` are dropped. VAR is
  resampled with the same weights and *not* reduced for the smoothing these kernels do: it is the
  variance of the inputs under the pixel, an upper bound of the pixel's own variance.

Both tile and cutout WCS are :class:`astropy.wcs.wcsapi.SlicedLowLevelWCS` views of the full
WCS: the full transformation sees exactly the same pixel coordinates whatever the tiling, so a
coadd pixel does not depend on the tile it falls in (bitwise).

SCI is in electrons per input pixel; it is multiplied by the pixel-area ratio
``A_out / A_in`` (at the reference points) so sources keep their flux, VAR by its square.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeAlias

import numpy as np

from ..errors import FitsReadError
from ._footprint import Footprint, chip_outline
from ._frames import ChipFrame

__all__ = ["MASKED_WEIGHT", "PAD", "ReprojectMethod", "chip_region", "reproject_tile"]

ReprojectMethod: TypeAlias = Literal["interp", "adaptive", "exact"]

#: Input pixels read beyond the tile's outline mapped into the chip, per method.
PAD = {"interp": 2, "exact": 2, "adaptive": 6}
#: ``exact``/``adaptive``: an output pixel whose resampled mask exceeds this is dropped.
MASKED_WEIGHT = 0.05


def _sliced(wcs: Any, rows: slice, cols: slice) -> Any:
    from astropy.wcs.wcsapi import HighLevelWCSWrapper, SlicedLowLevelWCS

    return HighLevelWCSWrapper(SlicedLowLevelWCS(wcs, (rows, cols)))


def _area(wcs: Any) -> float:
    return float(abs(np.linalg.det(np.asarray(wcs.pixel_scale_matrix, dtype=np.float64))))


def chip_region(
    chip: ChipFrame, footprint: Footprint, rows: slice, cols: slice, pad: int
) -> tuple[slice, slice] | None:
    """The chip pixels ``(rows, cols)`` a footprint tile can see (its outline mapped into the
    chip, ``pad`` pixels wider), or None if none."""
    ty, tx = rows.stop - rows.start, cols.stop - cols.start
    xs, ys = chip_outline((ty, tx))
    ra, dec = footprint.wcs.all_pix2world(xs + cols.start, ys + rows.start, 0)
    with np.errstate(invalid="ignore"):
        X, Y = chip.wcs.all_world2pix(ra, dec, 0)
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        return None
    ny, nx = chip.shape
    x0 = max(0, math.floor(X.min()) - pad)
    x1 = min(nx, math.ceil(X.max()) + pad + 1)
    y0 = max(0, math.floor(Y.min()) - pad)
    y1 = min(ny, math.ceil(Y.max()) + pad + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _read(chip: ChipFrame, rows: slice, cols: slice, reject_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SCI, VAR (float64, 0 where masked) and the mask (float64 0/1) of a chip region."""
    sci = chip.sci.read(rows, cols).astype(np.float64)
    if chip.var is None:
        raise FitsReadError(f"{chip.path}[VAR,{chip.extver}]: no VAR extension; coadd weights need the variance")
    var = chip.var.read(rows, cols).astype(np.float64)
    bad = ~(np.isfinite(sci) & np.isfinite(var) & (var > 0))
    if chip.dq is not None and reject_bits:
        dq = chip.dq.read_integers(rows, cols).astype(np.int64)
        bad |= (dq & reject_bits) != 0
    sci[bad] = 0.0
    var[bad] = 0.0
    return sci, var, bad.astype(np.float64)


def _bilinear_variance_factor(chip: ChipFrame, footprint: Footprint, rows: slice, cols: slice) -> np.ndarray:
    """``g(fx) g(fy)`` at every pixel of the tile (see the module notes)."""
    from astropy.wcs.utils import pixel_to_pixel

    yy, xx = np.mgrid[rows, cols]
    X, Y = pixel_to_pixel(footprint.wcs, chip.wcs, xx.astype(np.float64), yy.astype(np.float64))
    fx = X - np.floor(X)
    fy = Y - np.floor(Y)
    return (1.0 - 2.0 * fx * (1.0 - fx)) * (1.0 - 2.0 * fy * (1.0 - fy))


def reproject_tile(
    chip: ChipFrame,
    footprint: Footprint,
    rows: slice,
    cols: slice,
    *,
    method: ReprojectMethod = "interp",
    reject_bits: int = 0,
) -> tuple[np.ndarray, np.ndarray] | None:
    """``chip``'s SCI and VAR on the footprint tile ``[rows, cols]`` (float32, NaN where the chip
    gives nothing), or None when the chip does not reach the tile."""
    from reproject import reproject_adaptive, reproject_exact, reproject_interp

    region = chip_region(chip, footprint, rows, cols, PAD[method])
    if region is None:
        return None
    r_in, c_in = region
    sci, var, bad = _read(chip, r_in, c_in, reject_bits)
    w_in = _sliced(chip.wcs, r_in, c_in)
    w_out = _sliced(footprint.wcs, rows, cols)
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    if method == "interp":
        planes = reproject_interp(
            (np.stack([sci, var, bad]), w_in), w_out, shape_out=(3, *shape), order="bilinear", return_footprint=False
        )
        s_out, v_out, m_out = planes[0], planes[1], planes[2]
        valid = np.isfinite(s_out) & (m_out == 0.0)
        v_out = v_out * _bilinear_variance_factor(chip, footprint, rows, cols)
    else:
        if method == "exact":

            def resample(a: np.ndarray) -> np.ndarray:
                return reproject_exact((a, w_in), w_out, shape_out=shape, return_footprint=False)
        else:

            def resample(a: np.ndarray) -> np.ndarray:
                return reproject_adaptive(
                    (a, w_in),
                    w_out,
                    shape_out=shape,
                    return_footprint=False,
                    conserve_flux=False,
                    boundary_mode="strict",
                )

        s_out, v_out, m_out = resample(sci), resample(var), resample(bad)
        with np.errstate(invalid="ignore", divide="ignore"):
            good = 1.0 - m_out
            valid = np.isfinite(s_out) & np.isfinite(m_out) & (m_out <= MASKED_WEIGHT) & (good > 0)
            s_out = s_out / good
            v_out = v_out / good
    if not valid.any():
        return None
    ratio = _area(footprint.wcs) / _area(chip.wcs)
    s32 = np.where(valid, s_out * ratio, np.nan).astype(np.float32)
    v32 = np.where(valid, v_out * (ratio * ratio), np.nan).astype(np.float32)
    return s32, v32
