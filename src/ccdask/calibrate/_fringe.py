"""Fringes: a fringe frame per filter from the night's science frames, scaled per exposure and subtracted.

Thinned CCDs in red filters show fringes: the night sky's emission lines interfere in the thin
silicon and add a fixed pattern of light and dark bands to the sky, whose amplitude follows the
lines' brightness and so changes from exposure to exposure. In a calibrated (flat-fielded)
frame it is additive: ``sci = sky + stars + a_k F``.

**Fringe frame** (:func:`ccdask.night._fringe.fringe_frame`, above the stacking engine; the idea of IRAF ``mkfringecor`` and DRAGONS
``makeFringeFrame``): each calibrated science frame of the filter has its sky (the median of its
good pixels) subtracted and its sources masked (DQ != 0, or more than ``nsigma`` robust sigma
above the sky, grown by ``grow`` pixels); the residuals are stacked with the stacking engine
(:func:`ccdask.combine.combine`: sigma-clipped mean, NaN ignored, the variance planes
propagated). The result is the mean amplitude times the pattern, with its variance.

**Scale** (:func:`fit_fringe_np`, as ``rmfringe`` fits at fringe-sensitive points): over a frame's
good pixels where the fringe frame departs from its median by at least ``sensitive`` of its
robust rms, ``sci = c + s F`` by least squares, iteratively clipped at ``clip`` robust sigma.
Two known biases are removed: the fringe frame's own noise (which would shrink ``s`` by
``var(F) / (var(F) + noise)``, errors in the regressor) and the frame's own noise in the fringe
frame (it is one of the ``n`` stacked): ``s = (sum F r - sum var / n) / (sum F² - sum var_F)``
on centred ``F`` and ``r``. Its error is the sandwich estimate from the residuals
(``sum F² res² / D²``), which holds the noise of both.

**Subtraction** (:func:`subtract_fringe_np`, :func:`subtract_fringe` for dask, pixel by pixel):
``sci - s F``, variance ``var + s² var_F - 2 s var / n`` where the frame was one of the ``n`` stacked
at the pixel (its noise in ``F`` partly cancels its own), ``var + s² var_F`` elsewhere; pixels the
fringe frame does not cover are left as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from ..errors import ConfigError, ShapeMismatchError
from ..utils import MAD_TO_SIGMA, ConfigBase, option
from ._masks import grow_mask_np

__all__ = [
    "FringeConfig",
    "FringeFit",
    "FringeFrame",
    "fit_fringe_np",
    "source_mask_np",
    "subtract_fringe",
    "subtract_fringe_np",
]


def _filters(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise TypeError("expected a list of filter names")
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise TypeError("every filter must be a non-empty string")
    if len(set(value)) != len(value):
        raise ValueError("a filter is listed twice")
    return tuple(value)


def _files(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise TypeError("expected a list of 'FILTER=path' strings")
    seen = set()
    for item in value:
        filt, sep, path = item.partition("=") if isinstance(item, str) else ("", "", "")
        if not sep or not filt.strip() or not path.strip():
            raise ValueError(f"{item!r} is not 'FILTER=path'")
        if filt.strip() in seen:
            raise ValueError(f"filter {filt.strip()!r} is given two files")
        seen.add(filt.strip())
    return tuple(value)


@dataclass(frozen=True)
class FringeConfig(ConfigBase):
    """Fringe correction of the science frames, per filter (off unless ``filters`` names some).

    For each listed filter and chip, the night's calibrated science frames of that filter make a
    fringe frame (sky subtracted, sources masked, stacked by ``combine``; cached like the other
    masters); each frame's scale is fitted at the fringe-sensitive points and the scaled fringe
    frame subtracted (see docs/signatures.md).
    """

    filters: tuple[str, ...] = option(
        (),
        "filters whose science frames are fringe-corrected, as the catalogue names them (e.g. "
        '["z", "Y"]); empty: no fringe correction',
        parse=_filters,
    )
    min_frames: int = option(
        3,
        "fewest science frames of a filter and chip to build its fringe frame from (the night "
        "stops with an error naming the filter and chip when there are fewer)",
        check=lambda v: isinstance(v, int) and v >= 2,
        why="must be an integer >= 2",
    )
    nsigma: float = option(
        3.0,
        "source mask: pixels more than this many robust sigma above the median of the frame "
        "smoothed over 3 x 3 pixels are sources (left out of the fringe frame and the fit)",
        check=lambda v: v > 0,
        why="must be positive",
    )
    grow: int = option(
        2,
        "source mask: grown by this many pixels",
        check=lambda v: isinstance(v, int) and 0 <= v <= 64,
        why="must be an integer from 0 to 64",
    )
    iterations: int = option(
        2,
        "stacking passes: from the second on, each frame's residual is divided by its fitted "
        "amplitude relative to the mean before stacking (so a pixel's value does not depend on "
        "which frames were good there)",
        check=lambda v: isinstance(v, int) and 1 <= v <= 5,
        why="must be an integer from 1 to 5",
    )
    clip: float = option(
        3.0,
        "stack: each pixel's values beyond this many standard deviations of the median are "
        "rejected, iterated (a sigma-clipped mean through the stacking engine; the standard "
        "deviation, since a MAD of a few values is often tiny and rejects good ones)",
        check=lambda v: v > 0,
        why="must be positive",
    )
    clip_maxiters: int = option(
        5,
        "stack: at most this many clipping iterations",
        check=lambda v: isinstance(v, int) and v >= 1,
        why="must be an integer >= 1",
    )
    sensitive: float = option(
        0.5,
        "scale fit: the fringe-sensitive points are good pixels where the fringe frame, smoothed "
        "over 5 x 5 pixels, departs from its median by at least this many of its robust rms (0: all)",
        check=lambda v: v >= 0,
        why="must be zero or positive",
    )
    fit_clip: float = option(
        3.0,
        "scale fit: robust least squares, points beyond this many robust sigma of the residual left out, iterated",
        check=lambda v: v > 0,
        why="must be positive",
    )
    fit_maxiters: int = option(
        10,
        "scale fit: at most this many clip-and-refit iterations",
        check=lambda v: isinstance(v, int) and v >= 0,
        why="must be a non-negative integer",
    )
    jackknife_bands: int = option(
        16,
        "scale fit: the error is the larger of the residuals' estimate and a delete-one-band "
        "jackknife over this many bands of rows",
        check=lambda v: isinstance(v, int) and v >= 3,
        why="must be an integer >= 3",
    )
    max_static: float = option(
        0.5,
        "dither check: when, in the median frame, more than this fraction of its source pixels "
        "is masked in every frame (the sources did not move), the fringe frame has holes there: "
        "a warning (an error with `require_dither`)",
        check=lambda v: 0 <= v <= 1,
        why="must be a fraction from 0 to 1",
    )
    require_dither: bool = option(False, "stop with an error, rather than warn, when the dither check fails")
    files: tuple[str, ...] = option(
        (),
        "external fringe frames, 'FILTER=path' (e.g. [\"z=fringe_z.fits\"]): the filter's fringe frame "
        "is read from that FITS file instead of being built from the night's frames; laid out as "
        "masters/fringe_<FILTER>.fits: an image extension per chip named as the chip (optional "
        "<chip>_VAR and <chip>_COUNT); each filter must be in `filters`",
        parse=_files,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        extra = [f for f in self.external() if f not in self.filters]
        if extra:
            raise ConfigError(
                f"FringeConfig.files: filter(s) {', '.join(map(repr, extra))} have a file but are not in fringe.filters"
            )

    def external(self) -> dict[str, str]:
        """The external fringe frames: filter -> path."""
        return {f.strip(): p.strip() for f, _, p in (item.partition("=") for item in self.files)}

    def stack_params(self) -> dict[str, Any]:
        """What the fringe frame's pixels depend on (its cache key carries them)."""
        return {
            "mask": {"nsigma": self.nsigma, "grow": self.grow},
            "stack": {"clip": self.clip, "maxiters": self.clip_maxiters, "iterations": self.iterations},
            "fit": self.fit_params(),
        }

    def fit_params(self) -> dict[str, Any]:
        """The keyword arguments of :func:`fit_fringe_np`."""
        return {
            "nsigma": self.nsigma,
            "grow": self.grow,
            "sensitive": self.sensitive,
            "clip": self.fit_clip,
            "maxiters": self.fit_maxiters,
            "blocks": self.jackknife_bands,
        }


@dataclass(frozen=True)
class FringeFrame:
    """The stacked fringe pattern of one chip and filter (e-, the frames' mean amplitude)."""

    data: np.ndarray  #: float32, NaN where no frame had a good pixel
    variance: np.ndarray  #: float32
    count: np.ndarray  #: frames stacked per pixel
    nframes: int
    #: what each stacked frame's residual was divided by (its fringe amplitude relative to the mean)
    norms: tuple[float, ...] = ()


@dataclass(frozen=True)
class FringeFit:
    """The fringe frame's scale in one exposure."""

    scale: float
    scale_err: float
    sky: float  #: the fitted constant (e-)
    npix: int  #: pixels in the fit after clipping
    own: float  #: 1 / the norm of the exposure in the stack (0 when it was not stacked)


def _box_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Mean of the finite values in a ``size`` x ``size`` box (NaN where there are none)."""
    from scipy import ndimage

    finite = np.isfinite(image)
    total = ndimage.uniform_filter(np.where(finite, image, 0.0), size, mode="constant")
    weight = ndimage.uniform_filter(finite.astype(np.float64), size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan)


def _robust(values: np.ndarray) -> tuple[float, float]:
    med = float(np.median(values))
    return med, MAD_TO_SIGMA * float(np.median(np.abs(values - med)))


def source_mask_np(sci: np.ndarray, dq: np.ndarray | None, *, nsigma: float = 3.0, grow: int = 2) -> np.ndarray:
    """Pixels to leave out of the fringe frame and the fit: flagged (DQ != 0), non-finite, or
    sources: more than ``nsigma`` robust sigma above the median in the image smoothed over 3 x 3
    pixels, grown by ``grow``. Smoothed, a pixel's own noise hardly decides whether it is masked
    (masking the pixels the noise lifted would bias the fringe scale low); the fringes, many
    pixels wide, are in the smoothed image's sigma and stay unmasked."""
    s = np.asarray(sci, dtype=np.float64)
    bad = ~np.isfinite(s)
    if dq is not None:
        bad |= np.asarray(dq) != 0
    if bad.all():
        return np.ones(s.shape, dtype=bool)
    smooth = _box_mean(np.where(bad, np.nan, s), 3)
    good = np.isfinite(smooth) & ~bad
    med, sig = _robust(smooth[good])
    with np.errstate(invalid="ignore"):
        bright = np.nan_to_num(smooth, nan=-np.inf) > med + nsigma * sig
    return bad | grow_mask_np(bright, grow)


def _check(nsigma: float, grow: int) -> None:
    if not nsigma > 0:
        raise ConfigError(f"fringes: nsigma must be positive, got {nsigma!r}")
    if isinstance(grow, bool) or not isinstance(grow, int) or grow < 0:
        raise ConfigError(f"fringes: grow must be a non-negative integer, got {grow!r}")


def fit_fringe_np(
    sci: np.ndarray,
    var: np.ndarray,
    dq: np.ndarray | None,
    fringe: FringeFrame,
    *,
    index: int | None = None,
    nsigma: float = 3.0,
    grow: int = 2,
    sensitive: float = 0.5,
    clip: float = 3.0,
    maxiters: int = 10,
    blocks: int = 16,
) -> FringeFit:
    """The scale of ``fringe`` in one calibrated frame (see the module notes).

    ``index``: the frame is the ``index``-th of those stacked into ``fringe`` (its own noise in
    the fringe frame is then accounted for); None: it was not stacked.
    """
    _check(nsigma, grow)
    own_w = 0.0 if index is None else 1.0 / (fringe.norms[index] if fringe.norms else 1.0)
    sci = np.asarray(sci)
    var = np.asarray(var)
    if sci.shape != fringe.data.shape:
        raise ShapeMismatchError(f"fringes: frame {sci.shape} and fringe frame {fringe.data.shape} differ in shape")
    use = ~source_mask_np(sci, dq, nsigma=nsigma, grow=grow)
    use &= np.isfinite(fringe.data) & np.isfinite(var) & (fringe.count > 0)
    if use.sum() < 100:
        raise ConfigError(f"fringes: only {int(use.sum())} good pixels to fit the fringe scale")
    if sensitive > 0:  # chosen on the fringe frame smoothed over 5 x 5 pixels, so not on its own noise
        f64 = fringe.data.astype(np.float64)
        smooth = _box_mean(np.where(np.isfinite(f64), f64, np.nan), 5)
        del f64
        fmed, frms = _robust(smooth[use & np.isfinite(smooth)])
        use &= np.abs(smooth - fmed) >= sensitive * frms
        del smooth
    # from here on only the candidate points, in float64 (in the order of the pixels, so the
    # sums are those over the whole frame's selected pixels)
    idx = np.flatnonzero(use)
    f = fringe.data.ravel()[idx].astype(np.float64)
    r = sci.ravel()[idx].astype(np.float64)
    v = var.ravel()[idx].astype(np.float64)
    vf = fringe.variance.ravel()[idx].astype(np.float64)
    n = np.maximum(fringe.count.ravel()[idx].astype(np.float64), 1.0)
    keep = np.ones(idx.size, dtype=bool)
    for _ in range(maxiters + 1):
        fu, ru, vu, vfu, nu = f[keep], r[keep], v[keep], vf[keep], n[keep]
        fc = fu - fu.mean()
        rc = ru - ru.mean()
        own = own_w * vu / nu
        denom = float(np.sum(fc * fc) - np.sum(vfu))
        if not denom > 0:
            raise ConfigError("fringes: the fringe frame is no stronger than its own noise; no scale can be fitted")
        scale = float(np.sum(fc * rc) - np.sum(own)) / denom
        sky = float(ru.mean() - scale * fu.mean())
        res_all = r - sky - scale * f
        _, sig = _robust(res_all[keep])
        new = keep & (np.abs(res_all) <= clip * sig) if sig > 0 else keep
        if np.array_equal(new, keep):
            break
        keep = new
    res = res_all[keep]
    fk, rk, vk, vfk, nk = f[keep], r[keep], v[keep], vf[keep], n[keep]
    del f, r, v, vf, n, fu, ru, vu, vfu, nu, fc, rc, own, res_all
    fc = fk - fk.mean()
    err = math.sqrt(float(np.sum(fc * fc * res * res))) / denom
    del fc, res
    # and a delete-one-block jackknife over bands of rows: faint light of sources below the mask
    # is common to the frame and the fringe frame, and correlated over many pixels
    rows = idx[keep] // sci.shape[1]
    bands = np.minimum(rows * blocks // sci.shape[0], blocks - 1)
    parts = []
    for b in range(blocks):
        out = bands != b
        fu, ru, vu, vfu, nu = fk[out], rk[out], vk[out], vfk[out], nk[out]
        fcb, rcb = fu - fu.mean(), ru - ru.mean()
        d = float(np.sum(fcb * fcb) - np.sum(vfu))
        if d > 0:
            parts.append((float(np.sum(fcb * rcb)) - float(np.sum(own_w * vu / nu))) / d)
    if len(parts) > 2:
        jk = np.array(parts)
        err = max(err, math.sqrt((len(jk) - 1) / len(jk) * float(np.sum((jk - jk.mean()) ** 2))))
    return FringeFit(scale, err, sky, int(keep.sum()), own_w)


def _subtract_block(
    sci: np.ndarray, var: np.ndarray, f: np.ndarray, vf: np.ndarray, n: np.ndarray, scale: float, own: float
) -> np.ndarray:
    ok = np.isfinite(f) & (n > 0)
    fz = np.where(ok, f, 0.0).astype(np.float32)
    out_sci = (sci - np.float32(scale) * fz).astype(np.float32)
    add = np.float32(scale * scale) * np.where(ok, vf, 0.0).astype(np.float32)
    if own:
        add = add - np.where(ok, np.float32(2.0 * scale * own) * var / np.maximum(n, 1).astype(np.float32), 0.0)
    out_var = (var + add).astype(np.float32)
    return np.stack([out_sci, out_var])


def subtract_fringe_np(
    sci: np.ndarray, var: np.ndarray, fringe: FringeFrame, fit: FringeFit
) -> tuple[np.ndarray, np.ndarray]:
    """``sci - s F`` and its variance (see the module notes), on arrays held in memory."""
    if np.shape(sci) != fringe.data.shape:
        raise ShapeMismatchError(f"fringes: frame {np.shape(sci)} and fringe frame {fringe.data.shape} differ in shape")
    out = _subtract_block(
        np.asarray(sci, np.float32),
        np.asarray(var, np.float32),
        fringe.data,
        fringe.variance,
        fringe.count,
        fit.scale,
        fit.own,
    )
    return out[0], out[1]


def subtract_fringe(sci: da.Array, var: da.Array, fringe: FringeFrame, fit: FringeFit) -> tuple[da.Array, da.Array]:
    """:func:`subtract_fringe_np` lifted by dask, block by block (any chunking gives the same)."""
    s = da.asarray(sci)
    if tuple(s.shape) != fringe.data.shape:
        raise ShapeMismatchError(f"fringes: frame {s.shape} and fringe frame {fringe.data.shape} differ in shape")
    v = da.asarray(var).rechunk(s.chunks)
    parts = [da.from_array(a, chunks=s.chunks) for a in (fringe.data, fringe.variance, fringe.count)]
    both = da.map_blocks(
        _subtract_block,
        s,
        v,
        *parts,
        scale=fit.scale,
        own=fit.own,
        new_axis=0,
        chunks=((2,), *s.chunks),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
        token="subtract-fringe",
    )
    return both[0], both[1]
