"""The fringe frame of one chip and filter from the night's calibrated science frames, stacked by
the stacking engine (it sits above :mod:`ccdask.combine`; the per-frame steps, the scale fit and
the subtraction, are numpy/dask functions of :mod:`ccdask.calibrate._fringe`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..calibrate._fringe import FringeFrame, _check, fit_fringe_np, source_mask_np
from ..errors import ConfigError, ShapeMismatchError

__all__ = ["fringe_frame"]


def fringe_frame(
    frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    *,
    nsigma: float = 3.0,
    grow: int = 2,
    clip: float = 3.0,
    iterations: int = 2,
    name: str | None = None,
) -> FringeFrame:
    """The fringe frame of one chip from calibrated science frames ``(sci, var, dq)`` of one
    filter: sky subtracted, sources masked, stacked by the stacking engine (sigma-clipped mean at
    ``clip``, NaN ignored, variance propagated). From the second of ``iterations`` on, each
    frame's residual is divided by its fitted amplitude relative to the mean before stacking."""
    _check(nsigma, grow)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"fringes: iterations must be a positive integer, got {iterations!r}")
    if len(frames) < 2:
        raise ConfigError(f"fringes: a fringe frame needs at least 2 science frames, got {len(frames)}")
    shapes = {np.shape(sci) for sci, _, _ in frames}
    if len(shapes) != 1:
        raise ShapeMismatchError(f"fringes: the science frames differ in shape: {sorted(shapes)}")
    resid = []
    varis = []
    masks = []
    for sci, var, dq in frames:
        mask = source_mask_np(sci, dq, nsigma=nsigma, grow=grow)
        s = np.asarray(sci, dtype=np.float32)
        sky = float(np.median(s[~mask])) if (~mask).any() else 0.0
        resid.append(np.where(mask, np.float32(np.nan), s - np.float32(sky)))
        varis.append(np.where(mask, np.float32(np.nan), np.asarray(var, dtype=np.float32)))
        masks.append(mask)
    norms = np.ones(len(frames))
    out = _stack(resid, varis, norms, clip, name)
    for _ in range(iterations - 1):
        # a pixel's mean amplitude depends on which frames are good there: stack the residuals
        # divided by each frame's relative amplitude, so every pixel sees the same pattern
        scales = np.array(
            [
                fit_fringe_np(sci, var, dq, out, index=k, nsigma=nsigma, grow=grow).scale
                for k, (sci, var, dq) in enumerate(frames)
            ]
        )
        if not np.all(scales > 0):
            raise ConfigError(f"fringes: a frame shows the fringe pattern with a negative scale ({scales.tolist()})")
        norms = scales / float(np.mean(scales))  # the scales are against the pattern itself, not the last norms
        out = _stack(resid, varis, norms, clip, name)
    return out


def _stack(
    resid: list[np.ndarray], varis: list[np.ndarray], norms: np.ndarray, clip: float, name: str | None
) -> FringeFrame:
    from ..combine import combine

    result = combine(
        np.stack([r / np.float32(k) for r, k in zip(resid, norms, strict=True)]),
        method="mean",
        clip="sigma",
        sigma_lower=clip,
        sigma_upper=clip,
        spread="std",  # a MAD of a few values is often tiny: it would reject good ones and bias the stack
        variance=np.stack([v / np.float32(k * k) for v, k in zip(varis, norms, strict=True)]),
        name=name or "fringe",
    ).compute(scheduler="sync")
    assert result.variance is not None
    return FringeFrame(
        np.asarray(result.data),
        np.asarray(result.variance),
        np.asarray(result.count),
        nframes=len(resid),
        norms=tuple(float(k) for k in norms),
    )
