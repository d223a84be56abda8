"""The coadd's pixel grid: a tangent-plane WCS and a shape.

:func:`auto_footprint` builds the grid covering every input chip: the tangent point at the mean
direction of the chips' corners, the median pixel scale and the median rotation of the chips (or
the ones given), and the smallest pixel box containing every chip's outline. Its ``CRPIX`` are
whole numbers, so shifting it by a tile offset is exact. :meth:`Footprint.from_file` takes the grid
of an existing image (``--footprint FILE.fits`` / ``--wcs-from FILE``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, FitsReadError, WcsError
from ._frames import ChipFrame, chip_wcs, wcs_cards, wcs_from_text

__all__ = ["Footprint", "auto_footprint", "chip_outline", "outline_bbox", "pixel_scale", "rotation"]

#: Points per chip edge sampled to map its outline (the corners included).
_EDGE_POINTS = 9


@dataclass(frozen=True)
class Footprint:
    """The output grid: its WCS cards ``wcs_text`` and ``shape`` (ny, nx).

    :attr:`wcs` is the ``astropy.wcs.WCS`` (0-based pixels) built from the cards, the same in
    every process (see :func:`~ccdask.coadd._frames.wcs_from_text`); :meth:`of_wcs` makes a
    footprint from a WCS object.
    """

    wcs_text: str
    shape: tuple[int, int]

    @classmethod
    def of_wcs(cls, wcs: Any, shape: tuple[int, int]) -> Footprint:
        """The footprint of an ``astropy.wcs.WCS`` (its celestial cards) and ``shape``."""
        hdr = wcs.to_header()
        for key in ("DATEREF", "MJDREFI", "MJDREFF", "MJD-OBS", "DATE-OBS"):
            hdr.remove(key, ignore_missing=True)
        return cls(wcs_cards(hdr), (int(shape[0]), int(shape[1])))

    @property
    def wcs(self) -> Any:
        return wcs_from_text(self.wcs_text)

    def header(self) -> Any:
        """The WCS cards of the grid (``astropy.io.fits.Header``)."""
        from astropy.io import fits

        return fits.Header.fromstring(self.wcs_text)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], hdu: Any = None, *, shape: bool = True) -> Footprint:
        """The grid of an image HDU of ``path`` (its first image HDU with a celestial WCS, or
        ``hdu``). ``shape=False`` keeps only its WCS (the shape is then ``(0, 0)``: see
        :func:`auto_footprint`'s ``wcs=``)."""
        from astropy.io import fits

        from ..io import scan_file

        p = os.fspath(path)
        if not os.path.isfile(p):
            raise FitsReadError(f"{p}: no such file")
        infos = scan_file(p)
        if hdu is not None:
            chosen = [
                i
                for i in infos
                if i.index == hdu or (isinstance(hdu, str) and (i.extname or "").upper() == hdu.upper())
            ]
            if not chosen:
                raise FitsReadError(f"{p}: no image HDU {hdu!r}")
        else:
            chosen = [i for i in infos if any(str(i.header.get(f"CTYPE{k}", "")).strip() for k in (1, 2))]
            if not chosen:
                raise WcsError(f"{p}: no image HDU with a WCS to take the footprint from")
        info = chosen[0]
        label = f"{p}[{info.extname or info.index}]"
        text = wcs_cards(info.header)
        chip_wcs(fits.Header.fromstring(text), label)
        ny, nx = (int(v) for v in info.shape)
        return cls(text, (ny, nx) if shape else (0, 0))


def pixel_scale(wcs: Any) -> float:
    """Mean pixel scale of a celestial WCS at its reference point, arcsec."""
    m = np.asarray(wcs.pixel_scale_matrix, dtype=np.float64)
    return float(math.sqrt(abs(np.linalg.det(m))) * 3600.0)


def rotation(wcs: Any) -> float:
    """Angle (degrees) of the pixel y axis from north, counter-clockwise (east of north)."""
    m = np.asarray(wcs.pixel_scale_matrix, dtype=np.float64)
    return float(math.degrees(math.atan2(m[1, 0], m[1, 1])))


def chip_outline(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel coordinates ``(x, y)`` along the outer edges of a ``shape`` image."""
    ny, nx = shape
    t = np.linspace(0.0, 1.0, _EDGE_POINTS)
    x0, x1, y0, y1 = -0.5, nx - 0.5, -0.5, ny - 0.5
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full_like(t, x1), x1 - (x1 - x0) * t, np.full_like(t, x0)])
    ys = np.concatenate([np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1), y1 - (y1 - y0) * t])
    return xs, ys


def outline_bbox(chip: ChipFrame, wcs_out: Any) -> tuple[float, float, float, float] | None:
    """``(xmin, xmax, ymin, ymax)`` of ``chip``'s outline in ``wcs_out``'s 0-based pixels (None if
    the chip does not project onto that plane)."""
    xs, ys = chip_outline(chip.shape)
    ra, dec = chip.wcs.all_pix2world(xs, ys, 0)
    with np.errstate(invalid="ignore"):
        X, Y = wcs_out.all_world2pix(ra, dec, 0)
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        return None
    return float(X.min()), float(X.max()), float(Y.min()), float(Y.max())


def _tan_wcs(ra: float, dec: float, scale_arcsec: float, rot_deg: float) -> Any:
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [1.0, 1.0]
    s = scale_arcsec / 3600.0
    c, n = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    w.wcs.cd = [[-s * c, s * n], [s * n, s * c]]
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    w.wcs.set()
    return w


def _mean_direction(chips: Sequence[ChipFrame]) -> tuple[float, float]:
    vecs = []
    for chip in chips:
        xs, ys = chip_outline(chip.shape)
        ra, dec = chip.wcs.all_pix2world(xs, ys, 0)
        r, d = np.radians(ra), np.radians(dec)
        vecs.append(np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=1))
    v = np.concatenate(vecs).sum(axis=0)
    v /= np.linalg.norm(v)
    return float(math.degrees(math.atan2(v[1], v[0])) % 360.0), float(math.degrees(math.asin(v[2])))


def auto_footprint(
    chips: Sequence[ChipFrame],
    *,
    pixel_scale_arcsec: float | None = None,
    rotation_deg: float | None = None,
    wcs: Any = None,
) -> Footprint:
    """The grid covering every chip (see the module notes).

    ``wcs``: use this projection (tangent point, scale, rotation) and only size the box, moving
    its ``CRPIX`` by whole pixels so the box starts at pixel 0.
    """
    if not chips:
        raise ConfigError("coadd needs at least one chip to build a footprint from")
    if pixel_scale_arcsec is not None and not (math.isfinite(pixel_scale_arcsec) and pixel_scale_arcsec > 0):
        raise ConfigError(f"pixel scale {pixel_scale_arcsec} arcsec must be a positive number")
    if wcs is None:
        scale = (
            pixel_scale_arcsec
            if pixel_scale_arcsec is not None
            else float(np.median([pixel_scale(c.wcs) for c in chips]))
        )
        if rotation_deg is None:
            angles = np.array([rotation(c.wcs) for c in chips])
            ref = angles[0]
            rot = float(np.median((angles - ref + 180.0) % 360.0 - 180.0) + ref)
        else:
            rot = float(rotation_deg)
        ra, dec = _mean_direction(chips)
        out = _tan_wcs(ra, dec, scale, rot)
    else:
        out = wcs.deepcopy()
    boxes = [outline_bbox(c, out) for c in chips]
    for c, b in zip(chips, boxes, strict=True):
        if b is None:
            raise WcsError(f"{c.label}: the chip does not project onto the footprint's tangent plane")
    xmin = min(b[0] for b in boxes if b is not None)
    xmax = max(b[1] for b in boxes if b is not None)
    ymin = min(b[2] for b in boxes if b is not None)
    ymax = max(b[3] for b in boxes if b is not None)
    # output pixel i covers [i - 0.5, i + 0.5]: the first and last pixels touched by the outlines
    i0, i1 = math.floor(xmin + 0.5), math.ceil(xmax - 0.5)
    j0, j1 = math.floor(ymin + 0.5), math.ceil(ymax - 0.5)
    out.wcs.crpix = [out.wcs.crpix[0] - i0, out.wcs.crpix[1] - j0]
    out.wcs.set()
    shape = (int(j1 - j0 + 1), int(i1 - i0 + 1))
    if shape[0] * shape[1] > 2**31:
        raise ConfigError(f"the footprint would be {shape[1]} x {shape[0]} pixels; check the inputs' WCS")
    return Footprint.of_wcs(out, shape)
