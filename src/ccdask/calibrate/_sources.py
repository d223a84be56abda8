"""Stars, for the cosmic-ray step: the seeing of a chip, and the test that keeps a star's own
pixels out of the cosmic-ray mask (numpy, one chip).

Why
---
L.A.Cosmic separates cosmic rays from stars by their sharpness: a hit's Laplacian stands out
of the fine-structure image, a star's does not. On well-sampled bright stars (FWHM 2.5-5 px,
peaks of 5,000-100,000 e-) that test alone flags a few percent of the core pixels: measured on
simulated frames, whole cores (20-45 pixels) of isolated, unsaturated stars, seeded by one or
two pixels and grown into the star by the 3x3 growth steps of the following iterations (see
``benchmarks/RESULTS.md``, "Cosmic rays and stars").

The test
--------
Every candidate pixel is checked against the star that may lie under it, a Gaussian of the
chip's measured seeing: within a window of radius ``R`` around the pixel, the local sky is the
median of the window's outer ring, the star's centre the flux-weighted centroid of the
window's other pixels (neither candidates nor masked) within ``R`` of the pixel, and its
amplitude the least-squares fit of the pixel-integrated Gaussian to those pixels. The star
predicts ``m`` electrons in the candidate pixel. The candidate belongs to the star (and is
dropped from the cosmic-ray mask) when the star is real there (``m > 3 sigma``, sigma the
pixel's noise) and explains the pixel: ``data - sky - m < k sigma + f m``, ``k`` the
significance and ``f`` the tolerance for a PSF that is not exactly Gaussian. A cosmic ray on
sky has ``m`` near 0 and stays flagged; one on a star stands above the star's prediction by its
charge and stays flagged when that charge exceeds ``k sigma + f m``.

Everything the test and the seeing estimate read lies within a fixed distance of the pixel,
so both give the same answer on a whole chip and on overlapping tiles of it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

__all__ = ["block_sigmas", "fwhm_of", "measure_fwhm", "psf_veto", "star_pixels", "star_sigmas", "veto_radius"]

#: Half-side of the window a star is measured in (pixels): FWHM up to ~7 px.
SEEING_RADIUS = 8

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _windows(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, r: int, fill: float) -> np.ndarray:
    """``(n, 2r+1, 2r+1)`` windows of ``img`` around (rows, cols); outside the image: ``fill``."""
    return _padded_view(np.pad(img, r, mode="constant", constant_values=fill), r)[rows, cols]


def _padded_view(padded: np.ndarray, r: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(padded, (2 * r + 1, 2 * r + 1))


def _ring(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.maximum(np.abs(yy), np.abs(xx)) >= r - 1


def _ring_median(win: np.ndarray, ok: np.ndarray, r: int) -> np.ndarray:
    ring = _ring(r)
    vals = np.where(ok & ring, win, np.nan).reshape(win.shape[0], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a ring with no usable pixel: sky 0
        med = np.nanmedian(vals, axis=1)
    return np.where(np.isfinite(med), med, 0.0)


def _gauss_pixels(cy: np.ndarray, cx: np.ndarray, sigma: float, r: int) -> np.ndarray:
    """The pixel-integrated unit-flux Gaussian centred at (cy, cx) (window coordinates, the
    window's centre at 0) on the ``(2r+1)²`` window, per row of (cy, cx)."""
    off = np.arange(-r, r + 1, dtype=np.float64)
    gy = ndtr((off[None, :] + 0.5 - cy[:, None]) / sigma) - ndtr((off[None, :] - 0.5 - cy[:, None]) / sigma)
    gx = ndtr((off[None, :] + 0.5 - cx[:, None]) / sigma) - ndtr((off[None, :] - 0.5 - cx[:, None]) / sigma)
    return gy[:, :, None] * gx[:, None, :]


#: Gauss-Newton steps of the star fit of :func:`psf_veto`.
GN_STEPS = 4
#: The star explaining a candidate is centred within this many FWHM of it (a neighbour's wing,
#: fitted, centres on the neighbour; measured: 1.0 loses 0.7 % of the hits near bright stars).
CENTRE_LIMIT = 0.6


def _profile(c: np.ndarray, sigma: float, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixel-integrated unit Gaussian along one axis of the window, centred at ``c``, and its
    derivative with respect to ``c``."""
    off = np.arange(-r, r + 1, dtype=np.float64)
    hi = (off[None, :] + 0.5 - c[:, None]) / sigma
    lo = (off[None, :] - 0.5 - c[:, None]) / sigma
    g = ndtr(hi) - ndtr(lo)
    pdf = 1.0 / math.sqrt(2.0 * math.pi)
    dg = -(np.exp(-0.5 * hi * hi) - np.exp(-0.5 * lo * lo)) * pdf / sigma
    return g, dg


def _amplitude(d: np.ndarray, okf: np.ndarray, psf: np.ndarray) -> np.ndarray:
    fit = psf * okf
    denom = (fit * psf).sum(axis=(1, 2))
    return np.where(denom > 0, (fit * d).sum(axis=(1, 2)) / np.where(denom > 0, denom, 1.0), 0.0)


def _peaks(data: np.ndarray, noise: np.ndarray, bad: np.ndarray, min_snr: float) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima (9x9) of the 3x3-smoothed image that stand ``min_snr`` sigma above the
    lowest smoothed value within the seeing window and have no masked pixel in the window."""
    r = SEEING_RADIUS
    smooth = ndimage.uniform_filter(np.where(bad, 0.0, data).astype(np.float32), 3, mode="nearest")
    top = ndimage.maximum_filter(smooth, 9, mode="nearest")
    low = ndimage.minimum_filter(smooth, 2 * r + 1, mode="nearest")
    near_bad = ndimage.maximum_filter(bad.view(np.uint8), 2 * r + 1, mode="constant", cval=0).view(bool)
    peak = (smooth == top) & ~near_bad & (smooth - low > min_snr * noise / 3.0)
    peak[:r, :] = peak[-r:, :] = False
    peak[:, :r] = peak[:, -r:] = False
    rows, cols = np.nonzero(peak)
    return rows, cols


def star_sigmas(data: np.ndarray, noise: np.ndarray, bad: np.ndarray, *, min_snr: float = 50.0) -> np.ndarray:
    """The Gaussian sigma (pixels) of every bright, isolated, unmasked star of the image.

    Stars: :func:`_peaks` above ``min_snr``; each measured by adaptive Gaussian-weighted second
    moments (the weight's width follows the star's until they agree), corrected for the pixel
    (1/12 px²). Peaks narrower than 0.6 px (cosmic rays) or whose moments do not converge are
    dropped, and so are stars with another peak of more than a tenth of their flux in the window.
    """
    rows, cols = _peaks(data, noise, bad, min_snr)
    return _measure(data, rows, cols)


def _measure(data: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if rows.size == 0:
        return np.zeros(0)
    r = SEEING_RADIUS
    win = _windows(data.astype(np.float64), rows, cols, r, 0.0)
    ok = np.ones(win.shape, dtype=bool)
    sky = _ring_median(win, ok, r)
    d = win - sky[:, None, None]
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    cy = np.zeros(rows.size)
    cx = np.zeros(rows.size)
    sw = np.full(rows.size, 1.5)
    good = np.ones(rows.size, dtype=bool)
    for _ in range(12):
        w = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / (2.0 * sw[:, None, None] ** 2))
        wd = w * d
        tot = wd.sum(axis=(1, 2))
        good &= tot > 0
        tot = np.where(tot > 0, tot, 1.0)
        cy = np.clip((wd * yy).sum(axis=(1, 2)) / tot, -2.0, 2.0)
        cx = np.clip((wd * xx).sum(axis=(1, 2)) / tot, -2.0, 2.0)
        r2 = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2
        m = (wd * r2).sum(axis=(1, 2)) / tot / 2.0  # the weighted variance per axis
        inv = 1.0 / np.maximum(m, 1e-6) - 1.0 / sw**2
        good &= inv > 0
        sw = np.where(inv > 0, 1.0 / np.sqrt(np.where(inv > 0, inv, 1.0)), sw)
        sw = np.clip(sw, 0.3, r / 2.0)
    sig2 = sw**2 - 1.0 / 12.0
    good &= sig2 > 0.36
    # isolation: no second local maximum brighter than 10 % of the peak in the window
    centre = d[:, r, r]
    second = np.where(np.hypot(yy, xx) > 2.5 * np.sqrt(np.maximum(sig2, 0.36))[:, None, None], d, -np.inf).max(
        axis=(1, 2)
    )
    good &= second < 0.1 * centre
    return np.sqrt(sig2[good])


#: Pixels around a block that :func:`star_sigmas` reads to decide and measure a star whose peak
#: lies in the block (peak filters, isolation and measuring windows).
SEEING_DEPTH = SEEING_RADIUS + 4


def block_sigmas(data: np.ndarray, noise: np.ndarray, bad: np.ndarray, core: tuple[int, int, int, int]) -> np.ndarray:
    """:func:`star_sigmas` of the stars whose peak lies in ``core`` = (y0, y1, x0, x1) of this
    block (a tile with its overlap): the tiles of a chip give together the whole chip's stars."""
    y0, y1, x0, x1 = core
    rows, cols = _peaks(data, noise, bad, 50.0)
    keep = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    return _measure(data, rows[keep], cols[keep])


def measure_fwhm(data: np.ndarray, noise: np.ndarray, bad: np.ndarray, *, min_stars: int = 3) -> float | None:
    """The seeing of a chip: the median FWHM (pixels) of its bright isolated stars
    (:func:`star_sigmas`), or None when fewer than ``min_stars`` were measured."""
    return fwhm_of(star_sigmas(np.asarray(data), np.asarray(noise), np.asarray(bad, dtype=bool)), min_stars)


def fwhm_of(sigmas: np.ndarray, min_stars: int = 3) -> float | None:
    """The median FWHM (pixels) of stars of Gaussian ``sigmas``; None below ``min_stars``."""
    if sigmas.size < min_stars:
        return None
    return float(np.median(sigmas) * _FWHM_PER_SIGMA)


def veto_radius(fwhm: float) -> int:
    """The radius of the window :func:`psf_veto` reads around a candidate (pixels)."""
    return max(3, math.ceil(1.5 * fwhm))


def psf_veto(
    data: np.ndarray,
    noise: np.ndarray,
    excluded: np.ndarray,
    test: np.ndarray,
    *,
    fwhm: float,
    significance: float,
    tolerance: float,
) -> np.ndarray:
    """The pixels of ``test`` that a Gaussian star of ``fwhm`` explains (the module's test):
    boolean image. ``excluded`` (candidates and masked pixels) are left out of the star's fit."""
    out = np.zeros(test.shape, dtype=bool)
    rows, cols = np.nonzero(test)
    if rows.size == 0:
        return out
    sigma = fwhm / _FWHM_PER_SIGMA
    r = veto_radius(fwhm)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    start = np.hypot(yy, xx) <= max(1.5, fwhm)
    # pad only the neighbourhood of the candidates: a bounding box grown by r
    y0, y1 = max(int(rows.min()) - r, 0), min(int(rows.max()) + r + 1, data.shape[0])
    x0, x1 = max(int(cols.min()) - r, 0), min(int(cols.max()) + r + 1, data.shape[1])
    box = (slice(y0, y1), slice(x0, x1))
    dview = _padded_view(np.pad(data[box].astype(np.float64), r, mode="constant", constant_values=0.0), r)
    eview = _padded_view(np.pad(excluded[box], r, mode="constant", constant_values=True), r)
    for s in range(0, rows.size, 4096):
        rr, cc = rows[s : s + 4096], cols[s : s + 4096]
        win = dview[rr - y0, cc - x0]
        ok = ~eview[rr - y0, cc - x0]
        sky = _ring_median(win, ok, r)
        d = win - sky[:, None, None]
        # the star: a Gaussian of the seeing fitted (amplitude and centre, Gauss-Newton) to the
        # usable pixels, started at the brightest of them near the candidate
        pos = np.where(ok & start, d, -np.inf).reshape(rr.size, -1)
        best = np.argmax(pos, axis=1)
        has = np.isfinite(pos[np.arange(rr.size), best])
        cy = np.where(has, yy.ravel()[best], 0.0)
        cx = np.where(has, xx.ravel()[best], 0.0)
        okf = ok.astype(np.float64)
        amp = _amplitude(d, okf, _gauss_pixels(cy, cx, sigma, r))
        for _ in range(GN_STEPS):
            gy, dgy = _profile(cy, sigma, r)
            gx, dgx = _profile(cx, sigma, r)
            psf = gy[:, :, None] * gx[:, None, :]
            jac = np.stack(
                [
                    psf,
                    amp[:, None, None] * dgy[:, :, None] * gx[:, None, :],
                    amp[:, None, None] * gy[:, :, None] * dgx[:, None, :],
                ],
                axis=1,
            )  # (n, 3, w, w)
            res = (d - amp[:, None, None] * psf) * okf
            jw = jac * okf[:, None]
            hess = np.einsum("nawh,nbwh->nab", jw, jac) + 1e-9 * np.eye(3)[None]
            grad = np.einsum("nawh,nwh->na", jw, res)
            step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
            amp = amp + step[:, 0]
            cy = np.clip(cy + np.clip(step[:, 1], -1.0, 1.0), -r / 2.0, r / 2.0)
            cx = np.clip(cx + np.clip(step[:, 2], -1.0, 1.0), -r / 2.0, r / 2.0)
        psf = _gauss_pixels(cy, cx, sigma, r)
        amp = _amplitude(d, okf, psf)
        amp = np.maximum(amp, 0.0)
        model = amp * psf[:, r, r]
        sig = noise[rr, cc].astype(np.float64)
        excess = d[:, r, r] - model
        centred = np.hypot(cy, cx) <= CENTRE_LIMIT * fwhm
        star = has & centred & (model > 3.0 * sig) & (excess < significance * sig + tolerance * model)
        out[rr[star], cc[star]] = True
    return out


def star_pixels(
    data: np.ndarray, noise: np.ndarray, bad: np.ndarray, fwhm: float, *, min_snr: float = 5.0
) -> np.ndarray:
    """The pixels of detected sources: where the image smoothed by the seeing's Gaussian stands
    ``min_snr`` sigma (of the smoothed noise) above the local sky (the median of a 4-FWHM
    window border, estimated on the smoothed image). For QA: the fraction of these flagged."""
    sigma = fwhm / _FWHM_PER_SIGMA
    filled = np.where(bad, np.nan, data.astype(np.float32))
    fill = float(np.nanmedian(filled[:: max(1, filled.shape[0] // 256), :: max(1, filled.shape[1] // 256)]))
    filled = np.where(np.isfinite(filled), filled, fill)
    smooth = ndimage.gaussian_filter(filled, sigma, mode="nearest", truncate=3.0)
    size = max(9, int(4 * fwhm) | 1)
    sky = ndimage.median_filter(smooth[::4, ::4], size=max(3, size // 4), mode="nearest")
    sky = np.repeat(np.repeat(sky, 4, axis=0), 4, axis=1)[: data.shape[0], : data.shape[1]]
    # the noise of a Gaussian-smoothed image: sigma_pix / (2 sqrt(pi) sigma)
    smooth_noise = noise / (2.0 * math.sqrt(math.pi) * sigma)
    return (smooth - sky > min_snr * smooth_noise) & ~bad
