"""L.A.Cosmic iterations driven by ccdask around astroscrappy's detection (numpy, one chip).

astroscrappy's ``detect_cosmics`` runs ``niter`` full-frame iterations: detect on the cleaned
image, add the detections to the mask, clean every masked pixel (a 5x5 mean of the good
pixels), repeat. Every quantity an iteration derives for a pixel depends only on the cleaned
image, the cleaned noise image and the mask within a fixed reach ``a`` of it (8 pixels for
the separable medians, see :func:`ccdask.calibrate._cosmics.lacosmic_halo`), and cleaning
changes only the pixels it flags (and the already flagged pixels within 2 of them, whose 5x5
mean loses a neighbour). So iteration ``k + 1`` can give a different answer than iteration
``k`` only within ``a`` of the pixels iteration ``k`` changed; everywhere else its detections
are iteration ``k``'s. :func:`lacosmic_np` runs the first iteration on the whole chip (one
astroscrappy call with ``niter=1``) and every later one only in windows around the changed
pixels (margin ``a + 2``), cleaning in numpy exactly as astroscrappy does (the same float32
sums in the same order). Without source protection its mask and cleaned image equal one
whole-chip astroscrappy call with the same parameters; they cost about one iteration instead
of ``niter``.

Between detection and cleaning, each iteration may pass its detections through a ``veto``
(source protection, :mod:`ccdask.calibrate._sources`): vetoed pixels are neither flagged nor
cleaned, so a bright star's core no longer seeds growth into the rest of the star in the
next iteration.

Only the default cleaning type (``meanmask``) takes this path, with an infinite saturation
level (ccdask passes saturation as a mask); :func:`lacosmic_np` calls astroscrappy for all
iterations otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._masks import grow_mask_np

__all__ = ["lacosmic_np", "lacosmic_reach"]

Veto = Callable[[np.ndarray, np.ndarray], np.ndarray]


def lacosmic_reach(sepmed: bool, fsmode: str, psfsize: int) -> int:
    """How far (pixels) one iteration's detection of a pixel reads the image, the noise image
    and the mask: the larger of the Laplacian-to-noise median and the fine-structure image,
    plus the two 3x3 growths (see :func:`ccdask.calibrate._cosmics.lacosmic_halo`)."""
    med = 3 if sepmed else 2
    splus = max(1, med) + med
    second = 4 if sepmed else 3
    fine = max((2 if sepmed else 1) + second, med) if fsmode == "median" else med + psfsize // 2 + second
    return max(splus, fine) + 2 + 1  # +1: the 3x3 dilation of the input mask


def _clean(
    arr0: np.ndarray, crmask: np.ndarray, bad: np.ndarray, background: float, rows: Any, cols: Any
) -> np.ndarray:
    """astroscrappy's 5x5 masked mean of the good pixels at (rows, cols), as float32 sums in its
    order, divided in double precision; ``background`` where no neighbour is good."""
    excl = crmask | bad
    n = np.zeros(rows.size, dtype=np.int64)
    s = np.zeros(rows.size, dtype=np.float32)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            ok = ~excl[rows + dy, cols + dx]
            s = np.where(ok, s + arr0[rows + dy, cols + dx], s)
            n += ok
    out = (s.astype(np.float64) / np.maximum(n, 1)).astype(np.float32)
    return np.where(n == 0, np.float32(background), out).astype(np.float32)


def _interior(crmask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = crmask.shape
    rr, cc = np.nonzero(crmask[2 : ny - 2, 2 : nx - 2])
    return rr + 2, cc + 2


def lacosmic_np(
    data: np.ndarray,
    inmask: np.ndarray,
    invar: np.ndarray | None,
    *,
    gain: float,
    readnoise: float,
    params: dict[str, Any],
    veto: Veto | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """L.A.Cosmic on one chip: ``(crmask, cleaned)`` as astroscrappy returns them.

    ``data`` is float32 with non-finite pixels already replaced and masked; ``inmask`` boolean;
    ``invar`` the variance (data units squared) or None for astroscrappy's own model;
    ``params`` astroscrappy's keyword parameters (``niter``, ``sepmed``, ``cleantype``...).
    ``veto(detections, flagged)`` returns the detections to keep (a boolean image).
    """
    import astroscrappy
    from astroscrappy.utils import dilate3, median

    niter = int(params["niter"])
    kind = params["cleantype"]
    if kind != "meanmask" or (veto is None and niter == 1):
        return _whole(data, inmask, invar, gain=gain, readnoise=readnoise, params=params)
    one = {**params, "niter": 1}
    clean0 = np.ascontiguousarray(data * gain, dtype=np.float32)
    var0 = (
        np.ascontiguousarray(invar * (gain * gain), dtype=np.float32)
        if invar is not None
        else np.ascontiguousarray(clean0 + np.float32(readnoise * readnoise), dtype=np.float32)
    )
    inmask = np.ascontiguousarray(inmask, dtype=bool)
    bad = dilate3(inmask.astype(np.uint8)).astype(bool)
    good = ~bad
    background = float(median(np.ascontiguousarray(clean0[good]), int(good.sum()))) if good.any() else 0.0
    background_var = float(median(np.ascontiguousarray(var0[good]), int(good.sum()))) if good.any() else 0.0

    def detect(img: np.ndarray, var: np.ndarray, m: np.ndarray) -> np.ndarray:
        cr, _ = astroscrappy.detect_cosmics(
            img, inmask=m, invar=var, gain=1.0, readnoise=readnoise, satlevel=np.inf, verbose=False, **one
        )
        return np.asarray(cr, dtype=bool)

    reach = lacosmic_reach(bool(params["sepmed"]), params["fsmode"], int(params["psfsize"]))
    ny, nx = clean0.shape
    cleanarr, cleanvar = clean0.copy(), var0.copy()
    crmask = np.zeros((ny, nx), dtype=bool)
    raw = detect(cleanarr, cleanvar, inmask)  # iteration 1, the whole chip
    for it in range(niter):
        kept = raw if veto is None else (raw & veto(raw, crmask))
        if not kept.any():
            break
        crmask |= kept
        rows, cols = _interior(crmask)
        new_clean = cleanarr.copy()
        new_var = cleanvar.copy()
        new_clean[rows, cols] = _clean(clean0, crmask, bad, background, rows, cols)
        new_var[rows, cols] = _clean(var0, crmask, bad, background_var, rows, cols)
        changed = (new_clean != cleanarr) | (new_var != cleanvar)
        cleanarr, cleanvar = new_clean, new_var
        if it == niter - 1 or not changed.any():
            break
        # iteration it + 2 differs from this one's detections only within reach of a change
        region = grow_mask_np(changed, reach)
        for win, here in _windows(region, reach + 2):
            got = detect(
                np.ascontiguousarray(cleanarr[win]),
                np.ascontiguousarray(cleanvar[win]),
                np.ascontiguousarray(inmask[win]),
            )
            raw[win] = np.where(here, got, raw[win])
    return crmask, (cleanarr / np.float32(gain)).astype(np.float32)


#: When the windows of an iteration would cover more than this fraction of the chip (their
#: areas added up), the iteration runs on the whole chip instead: the same result, cheaper.
WHOLE_FRACTION = 0.6


def _windows(region: np.ndarray, margin: int) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """Windows covering ``region``: one per connected part of it, its bounding box grown by
    ``margin`` (clipped to the image), with the part's pixels, whose results the window gives;
    or the whole image once the windows would add up to :data:`WHOLE_FRACTION` of it."""
    from scipy import ndimage

    ny, nx = region.shape
    labels, _n = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    out = []
    area = 0
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        win = (
            slice(max(sl[0].start - margin, 0), min(sl[0].stop + margin, ny)),
            slice(max(sl[1].start - margin, 0), min(sl[1].stop + margin, nx)),
        )
        area += (win[0].stop - win[0].start) * (win[1].stop - win[1].start)
        if area > WHOLE_FRACTION * ny * nx:
            return [((slice(0, ny), slice(0, nx)), region)]
        out.append((win, labels[win] == lab))
    return out


def _whole(
    data: np.ndarray,
    inmask: np.ndarray,
    invar: np.ndarray | None,
    *,
    gain: float,
    readnoise: float,
    params: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    import astroscrappy

    cr, cleaned = astroscrappy.detect_cosmics(
        data, inmask=inmask, invar=invar, gain=gain, readnoise=readnoise, satlevel=np.inf, verbose=False, **params
    )
    return np.asarray(cr, dtype=bool), np.asarray(cleaned, dtype=np.float32)
