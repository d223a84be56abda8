"""A seeded dithered field of reduced frames: what ``ccdask coadd`` takes, with the sky it saw.

:func:`simulate_field` writes ``n_exposures`` files in ccdask's reduced format (an empty primary
HDU with ``EXPTIME``; per chip ``SCI``/``VAR``/``DQ`` extensions with ``EXTVER`` = chip number and
``CCDNAME``, see ``docs/outputs.md``) of a mosaic of ``chips = (rows, columns)`` chips. Every chip
carries a real TAN WCS (``CTYPE = RA---TAN/DEC--TAN``, ``CD`` matrix): each exposure points at the
field centre plus a random dither and turns the camera by a random rotation; the chips of one
exposure share its tangent plane, separated by gaps.

The sky is a constant surface brightness plus point sources with a Gaussian PSF. Each star's charge
is integrated over pixels exactly (differences of error functions), so its total on the detector is
``rate × EXPTIME`` electrons and its position is its (RA, Dec) through the chip's WCS. The pixels
are ``Poisson(sky + stars) + Normal(0, read_noise)``; ``VAR`` is ``read_noise² + sky + stars`` (the
expected signal). Defects:

* one hot column per chip (``+hot_level`` e-) flagged ``DQ = 1`` (bad pixel);
* cosmic rays (single pixels and short tracks, 2000–20000 e-): a fraction ``cr_flagged`` is
  flagged ``DQ = 4`` with its charge left in ``SCI`` (masking must remove it), the rest is not
  flagged at all (rejection must remove it). Every hit is listed in :attr:`SimulatedField.cosmic_rays`.

Nothing else in :mod:`ccdask.simulate` changes: this module only adds a function.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import dq as DQ
from ..errors import ConfigError
from ..utils import atomic_write_text

__all__ = ["FieldExposure", "SimulatedField", "chip_wcs_header", "render_psf", "simulate_field"]


@dataclass(frozen=True)
class FieldExposure:
    """One exposure of the field: where it pointed and how the camera was turned."""

    path: Path
    ra: float
    dec: float
    rotation: float  # degrees, counter-clockwise from north up / east left
    exptime: float


@dataclass(frozen=True)
class SimulatedField:
    """The files written by :func:`simulate_field` and the truth they were made from.

    Attributes
    ----------
    files : list of Path
        The reduced frames, one per exposure.
    exposures : list of FieldExposure
    stars : dict of arrays
        ``ra``, ``dec`` (degrees) and ``rate`` (e-/s) of every star.
    sky_rate : float
        Sky surface brightness in e-/s per (detector) pixel.
    pixel_scale : float
        Detector pixel scale, arcsec.
    fwhm : float
        PSF FWHM, detector pixels.
    read_noise : float
        e- per pixel.
    cosmic_rays : list of dict
        ``file``, ``extver``, ``y``, ``x``, ``charge``, ``flagged`` for every cosmic-ray pixel.
    bad_columns : dict
        ``(file name, extver) -> column`` of each hot column.
    """

    files: list[Path]
    exposures: list[FieldExposure]
    stars: dict[str, np.ndarray]
    sky_rate: float
    pixel_scale: float
    fwhm: float
    read_noise: float
    chip_shape: tuple[int, int]
    cosmic_rays: list[dict[str, Any]] = field(default_factory=list)
    bad_columns: dict[tuple[str, int], int] = field(default_factory=dict)


def chip_wcs_header(
    ra: float, dec: float, rotation: float, pixel_scale: float, crpix: tuple[float, float]
) -> dict[str, Any]:
    """FITS cards of a TAN WCS (CD matrix) pointing at ``(ra, dec)`` at 1-based pixel ``crpix``
    (x, y), turned by ``rotation`` degrees, ``pixel_scale`` arcsec per pixel, east to the left."""
    s = pixel_scale / 3600.0
    c, n = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return {
        "WCSAXES": 2,
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg",
        "CUNIT2": "deg",
        "CRVAL1": float(ra),
        "CRVAL2": float(dec),
        "CRPIX1": float(crpix[0]),
        "CRPIX2": float(crpix[1]),
        "CD1_1": -s * c,
        "CD1_2": s * n,
        "CD2_1": s * n,
        "CD2_2": s * c,
        "RADESYS": "ICRS",
        "EQUINOX": 2000.0,
    }


def render_psf(
    shape: tuple[int, int], y: np.ndarray, x: np.ndarray, flux: np.ndarray, fwhm: float, reach: int = 6
) -> np.ndarray:
    """Gaussian point sources integrated over pixels (0-based centres ``y``, ``x``), float64.

    Each source deposits ``flux`` in total (less what falls off the image).
    """
    from scipy.special import erf

    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    ny, nx = shape
    out = np.zeros(shape, np.float64)
    r = math.ceil(reach * sigma) + 1
    k = 1.0 / (math.sqrt(2.0) * sigma)
    for yc, xc, f in zip(y, x, flux, strict=True):
        y0, y1 = max(0, math.floor(yc) - r), min(ny, math.floor(yc) + r + 2)
        x0, x1 = max(0, math.floor(xc) - r), min(nx, math.floor(xc) + r + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        ey = np.arange(y0, y1 + 1) - 0.5 - yc
        ex = np.arange(x0, x1 + 1) - 0.5 - xc
        py = 0.5 * np.diff(erf(ey * k))
        px = 0.5 * np.diff(erf(ex * k))
        out[y0:y1, x0:x1] += f * np.outer(py, px)
    return out


def simulate_field(
    out: str | Path,
    *,
    n_exposures: int = 6,
    chips: tuple[int, int] = (2, 2),
    chip_shape: tuple[int, int] = (96, 96),
    gap: int = 8,
    ra: float = 150.0,
    dec: float = 2.0,
    pixel_scale: float = 0.25,
    dither: float = 6.0,
    rotation: float = 2.0,
    exptime: float = 60.0,
    sky_rate: float = 10.0,
    read_noise: float = 5.0,
    fwhm: float = 3.0,
    n_stars: int = 40,
    star_rate: tuple[float, float] = (50.0, 2000.0),
    cr_per_chip: int = 6,
    cr_flagged: float = 0.5,
    hot_level: float = 5000.0,
    seed: int = 0,
) -> SimulatedField:
    """Write a seeded dithered field of reduced frames under ``out`` (see the module notes).

    Parameters
    ----------
    dither : float
        Standard deviation of the pointing offsets, arcsec (in RA·cos Dec and Dec).
    rotation : float
        Camera rotation of each exposure drawn uniformly in ``[-rotation, rotation]`` degrees.
    star_rate : (float, float)
        Range of the stars' rates (e-/s), log-uniform.
    """
    if n_exposures < 1:
        raise ConfigError(f"simulate_field: n_exposures = {n_exposures} must be >= 1")
    if not 0.0 <= cr_flagged <= 1.0:
        raise ConfigError(f"simulate_field: cr_flagged = {cr_flagged} must be in [0, 1]")
    from astropy.io import fits
    from astropy.wcs import WCS

    from ..io._write import atomic_writeto

    rng = np.random.default_rng(seed)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rows, cols = chips
    ny, nx = chip_shape
    # focal-plane size (pixels) and each chip's lower-left corner relative to the plane centre
    plane_y = rows * ny + (rows - 1) * gap
    plane_x = cols * nx + (cols - 1) * gap
    # stars over the area every dither can reach, a margin of the PSF beyond it
    half = 0.5 * math.hypot(plane_x, plane_y) * pixel_scale / 3600.0 + 3 * dither / 3600.0
    cosd = math.cos(math.radians(dec))
    star_ra = ra + rng.uniform(-half, half, n_stars) / cosd
    star_dec = dec + rng.uniform(-half, half, n_stars)
    lo, hi = star_rate
    rates = np.exp(rng.uniform(math.log(lo), math.log(hi), n_stars))
    stars = {"ra": star_ra, "dec": star_dec, "rate": rates}

    exposures: list[FieldExposure] = []
    files: list[Path] = []
    crs: list[dict[str, Any]] = []
    hot: dict[tuple[str, int], int] = {}
    for e in range(n_exposures):
        p_ra = ra + rng.normal(0.0, dither) / 3600.0 / cosd
        p_dec = dec + rng.normal(0.0, dither) / 3600.0
        rot = float(rng.uniform(-rotation, rotation))
        name = f"field_{e:03d}.fits"
        path = root / name
        primary = fits.PrimaryHDU()
        primary.header["EXPTIME"] = (exptime, "s")
        primary.header["OBJECT"] = "simulated field"
        primary.header["IMAGETYP"] = "object"
        primary.header["CCDASKSF"] = (seed, "ccdask simulate_field seed")
        hdus: list[Any] = [primary]
        for r in range(rows):
            for c in range(cols):
                extver = r * cols + c + 1
                # the plane centre in this chip's 1-based pixel coordinates
                y_ll = r * (ny + gap) - 0.5 * plane_y
                x_ll = c * (nx + gap) - 0.5 * plane_x
                crpix = (0.5 - x_ll, 0.5 - y_ll)
                cards = chip_wcs_header(p_ra, p_dec, rot, pixel_scale, crpix)
                w = WCS(cards)
                sx, sy = w.all_world2pix(star_ra, star_dec, 0)
                flux = rates * exptime
                signal = sky_rate * exptime + render_psf(chip_shape, sy, sx, flux, fwhm)
                sci = rng.poisson(signal).astype(np.float64) + rng.normal(0.0, read_noise, chip_shape)
                var = read_noise**2 + signal
                dqp = np.zeros(chip_shape, DQ.DQ_DTYPE)
                col = int(rng.integers(2, nx - 2))
                sci[:, col] += hot_level
                dqp[:, col] |= DQ.BAD
                hot[(name, extver)] = col
                for _ in range(cr_per_chip):
                    y0, x0 = int(rng.integers(0, ny)), int(rng.integers(0, nx))
                    length = int(rng.integers(1, 4))
                    flagged = bool(rng.random() < cr_flagged)
                    for t in range(length):
                        yy, xx = y0, min(nx - 1, x0 + t)
                        charge = float(rng.uniform(2000.0, 20000.0))
                        sci[yy, xx] += charge
                        if flagged:
                            dqp[yy, xx] |= DQ.COSMIC
                        crs.append(
                            {"file": name, "extver": extver, "y": yy, "x": xx, "charge": charge, "flagged": flagged}
                        )
                chip = f"CCD{extver}"
                for ext, data in (("SCI", sci.astype(np.float32)), ("VAR", var.astype(np.float32)), ("DQ", dqp)):
                    h = fits.Header()
                    h["EXTNAME"] = ext
                    h["EXTVER"] = extver
                    h["CCDNAME"] = chip
                    h.update(cards)
                    h["BUNIT"] = {"SCI": "electron", "VAR": "electron2", "DQ": ""}[ext]
                    hdus.append(fits.ImageHDU(data=data, header=h))
        atomic_writeto(fits.HDUList(hdus), path)
        files.append(path)
        exposures.append(FieldExposure(path, p_ra, p_dec, rot, exptime))
    truth = {
        "seed": seed,
        "stars": {k: v.tolist() for k, v in stars.items()},
        "sky_rate": sky_rate,
        "pixel_scale": pixel_scale,
        "fwhm": fwhm,
        "read_noise": read_noise,
        "exposures": [
            {"file": x.path.name, "ra": x.ra, "dec": x.dec, "rotation": x.rotation, "exptime": x.exptime}
            for x in exposures
        ],
        "cosmic_rays": crs,
    }
    atomic_write_text(root / "truth.json", json.dumps(truth, indent=1))
    return SimulatedField(
        files=files,
        exposures=exposures,
        stars=stars,
        sky_rate=sky_rate,
        pixel_scale=pixel_scale,
        fwhm=fwhm,
        read_noise=read_noise,
        chip_shape=chip_shape,
        cosmic_rays=crs,
        bad_columns=hot,
    )
