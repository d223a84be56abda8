"""Overscan per amplifier: collapse, smooth along the readout direction, subtract, measure.

Conventions
-----------
* A *line* is a raw row for a serial overscan (overscan columns beside the data, one value per
  row) and a raw column for a parallel overscan (overscan rows above/below the data, one value
  per column). Models are computed on raw line numbers, so a flipped data section simply reads
  the model backwards: :func:`overscan_model` returns one value per line of the data section *in
  the order of* ``raw[amp.datasec.slices]``.
* ``skip_start``/``skip_end`` count overscan columns (serial) or rows (parallel) away from the
  data: see :class:`~ccdask.calibrate.OverscanConfig`.
* :func:`subtract_overscan` changes only the amplifiers' data-section pixels. Overscan, prescan
  and any other pixel keep their raw values (cast to float32), so masks computed on raw
  coordinates (saturation) stay meaningful and the overscan can still be inspected.
* Data lines not covered by the overscan lines (LFC: DATASEC rows 1-4128, BIASSEC rows 1-4127)
  get the nearest overscan line's value when ``model="none"``, and the model's extrapolation
  otherwise.
* An amplifier with a second, parallel overscan (``parallel_biassec``: DECam's POSTSEC, Rubin's
  rows above the data) has both subtracted, in its ``overscan_order``: with ``serial-first`` the
  serial model is subtracted from the data *and* from the parallel overscan pixels (at their
  rows, extrapolated as the model says), the parallel overscan so corrected is collapsed per
  column, and that model is subtracted from the data too; ``parallel-first`` swaps the roles.
  Statistics (:func:`overscan_stats`) describe the serial (``biassec``) overscan.
* Fits and statistics run in float64; the subtracted frame is float32.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import dask.array as da
import numpy as np

from ..errors import ConfigError, ShapeMismatchError
from ..profiles._layout import Amplifier, ChipLayout
from ..utils import MAD_TO_SIGMA
from ._config import OverscanConfig
from ._regions import Rect, block_location, check_disjoint, local_slices, rect_of, whole_block

__all__ = [
    "OverscanStats",
    "overscan_model",
    "overscan_stats",
    "overscan_stats_np",
    "subtract_overscan",
    "subtract_overscan_np",
]


class OverscanStats(NamedTuple):
    """0-d float64 summaries of one amplifier's overscan, in raw ADU: lazy from
    :func:`overscan_stats`, numpy from :func:`overscan_stats_np`.

    Attributes
    ----------
    level : dask.array.Array or numpy.ndarray
        Mean of the overscan model over the amplifier's data lines.
    noise : dask.array.Array or numpy.ndarray
        Robust standard deviation (1.4826 x MAD) of the used overscan pixels about the model.
        With ``model="none"`` the model is the per-line statistic of the same pixels, which
        biases the noise low by roughly ``1/(2 n)`` for ``n`` overscan columns (rows) used.
    """

    level: da.Array | np.ndarray
    noise: da.Array | np.ndarray


@dataclass(frozen=True)
class _Geometry:
    """Where one amplifier's overscan and data lie, in line/across terms."""

    amp: str
    chip: str
    serial: bool
    over_rect: Rect  # the overscan pixels used (after skips), raw, half-open
    line0: int  # first raw line of the overscan
    nlines: int  # number of overscan lines
    nline_total: int  # raw lines of the whole frame (rows if serial, columns if parallel)
    data_lines: slice  # the data section's lines, in its own (possibly flipped) order


def _geometry(
    raw_shape: tuple[int, ...], amp: Amplifier, config: OverscanConfig, chip: str = "", *, parallel: bool = False
) -> _Geometry:
    """The geometry of ``amp``'s overscan, or of its second (parallel) one when ``parallel``."""
    label = f"{'chip ' + chip + ', ' if chip else ''}amplifier {amp.name}" + (
        " (parallel overscan)" if parallel else ""
    )
    if len(raw_shape) != 2:
        raise ShapeMismatchError(f"{label}: expected a 2-D raw chip, got shape {tuple(raw_shape)}")
    if amp.biassec is None or amp.overscan_axis is None:
        raise ConfigError(
            f"{label}: no overscan region (biassec) is defined; give one in the instrument "
            "profile or disable overscan subtraction (overscan.enabled = false)"
        )
    region = amp.parallel_biassec if parallel else amp.biassec
    assert region is not None
    data = rect_of(amp.datasec)
    over = rect_of(region)
    ny, nx = raw_shape
    if over.y1 > ny or over.x1 > nx or data.y1 > ny or data.x1 > nx:
        raise ShapeMismatchError(
            f"{label}: datasec {amp.datasec} / overscan {region} do not fit a raw chip of shape {tuple(raw_shape)}"
        )
    serial = amp.overscan_axis == "serial" and not parallel
    if serial:
        a0, a1 = over.x0, over.x1
        after = (over.x0 + over.x1) > (data.x0 + data.x1)
    else:
        a0, a1 = over.y0, over.y1
        after = (over.y0 + over.y1) > (data.y0 + data.y1)
    # Away from the data: an overscan after the data starts next to it at its low index.
    if after:
        u0, u1 = a0 + config.skip_start, a1 - config.skip_end
    else:
        u0, u1 = a0 + config.skip_end, a1 - config.skip_start
    if u1 <= u0:
        raise ConfigError(
            f"{label}: skipping {config.skip_start} + {config.skip_end} of the {a1 - a0} overscan "
            f"{'columns' if serial else 'rows'} of {region} leaves none"
        )
    if serial:
        used = Rect(over.y0, over.y1, u0, u1)
        line0, nlines, total = over.y0, over.y1 - over.y0, ny
        data_lines = amp.datasec.slices[0]
    else:
        used = Rect(u0, u1, over.x0, over.x1)
        line0, nlines, total = over.x0, over.x1 - over.x0, nx
        data_lines = amp.datasec.slices[1]
    _check_model_fits(label, config, nlines)
    return _Geometry(amp.name, chip, serial, used, line0, nlines, total, data_lines)


def _check_model_fits(label: str, config: OverscanConfig, nlines: int) -> None:
    if config.model in ("polynomial", "legendre") and nlines < config.order + 1:
        raise ConfigError(
            f"{label}: a {config.model} of order {config.order} needs at least {config.order + 1} "
            f"overscan lines, the overscan has {nlines}"
        )
    if config.model == "spline" and nlines < config.knots + 4:
        raise ConfigError(
            f"{label}: a cubic spline with {config.knots} interior knots needs at least "
            f"{config.knots + 4} overscan lines, the overscan has {nlines}"
        )


# -- numpy kernels ------------------------------------------------------------------------------


def _collapse_lines(block: np.ndarray, method: str, clip_sigma: float, clip_iters: int) -> np.ndarray:
    """One float64 value per line (axis 0) of an overscan block ``(lines, across)``."""
    a = np.asarray(block, dtype=np.float64)
    finite = np.isfinite(a)
    if method in ("median", "mean"):
        if finite.all():
            return np.median(a, axis=1) if method == "median" else np.mean(a, axis=1)
        # a non-finite overscan pixel (a bad readout, a NaN in float data) must not spoil its
        # whole line: use the finite values; a line with none stays NaN (and is flagged later)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            a = np.where(finite, a, np.nan)
            return np.nanmedian(a, axis=1) if method == "median" else np.nanmean(a, axis=1)
    keep = finite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(clip_iters):
            kept = np.where(keep, a, np.nan)
            center = np.nanmedian(kept, axis=1, keepdims=True)
            spread = np.nanstd(kept, axis=1, keepdims=True)
            new = keep & (np.abs(a - center) <= clip_sigma * spread)
            if np.array_equal(new, keep):
                break
            keep = new
        return np.nanmean(np.where(keep, a, np.nan), axis=1)


def _evaluate_model(
    profile: np.ndarray, line0: int, nline_total: int, model: str, order: int, knots: int
) -> np.ndarray:
    """The model of a collapsed ``profile`` (lines ``line0...``) at every raw line 0..total-1."""
    y = np.asarray(profile, dtype=np.float64)
    n = y.size
    x = np.arange(line0, line0 + n, dtype=np.float64)
    everywhere = np.arange(nline_total, dtype=np.float64)
    if model == "none":
        idx = np.clip(np.arange(nline_total) - line0, 0, n - 1)
        return y[idx]
    good = np.isfinite(y)
    if model in ("polynomial", "legendre"):
        kind = np.polynomial.Polynomial if model == "polynomial" else np.polynomial.Legendre
        domain = [x[0], x[-1]] if n > 1 else [x[0] - 0.5, x[0] + 0.5]
        fit = kind.fit(x[good], y[good], order, domain=domain)
        return fit(everywhere)
    from scipy.interpolate import make_lsq_spline

    xs, ys = x[good], y[good]
    inner = np.linspace(xs[0], xs[-1], knots + 2)[1:-1]
    t = np.concatenate([np.repeat(xs[0], 4), inner, np.repeat(xs[-1], 4)])
    spline = make_lsq_spline(xs, ys, t, k=3)
    return spline(everywhere, extrapolate=True)


def _robust_std_about(block: np.ndarray, model_full: np.ndarray, line0: int) -> np.ndarray:
    """1.4826 x MAD of ``block`` (lines, across) minus the model at its lines, as a 0-d array."""
    a = np.asarray(block, dtype=np.float64)
    resid = a - model_full[line0 : line0 + a.shape[0], None]
    resid = resid[np.isfinite(resid)]
    if resid.size == 0:
        return np.array(np.nan)
    mad = np.median(np.abs(resid - np.median(resid)))
    return np.array(MAD_TO_SIGMA * mad)


def _second_model(
    region: np.ndarray,
    first_full: np.ndarray,
    first_serial: bool,
    y0: int,
    x0: int,
    second_serial: bool,
    line0: int,
    nline_total: int,
    method: str,
    clip_sigma: float,
    clip_iters: int,
    model: str,
    order: int,
    knots: int,
) -> np.ndarray:
    """The second overscan's model at every raw line, measured after the first is subtracted.

    ``region`` is the second overscan's used pixels (raw rows ``y0...``, columns ``x0...``);
    ``first_full`` the first model at every raw line of its own direction.
    """
    a = np.asarray(region, dtype=np.float64)
    f = np.asarray(first_full, dtype=np.float64)
    first = f[y0 : y0 + a.shape[0], None] if first_serial else f[None, x0 : x0 + a.shape[1]]
    corrected = a - first
    profile = _collapse_lines(corrected if second_serial else corrected.T, method, clip_sigma, clip_iters)
    return _evaluate_model(profile, line0, nline_total, model, order, knots)


def _subtract_kernel(
    block: np.ndarray,
    *models: np.ndarray,
    rects: tuple[Rect, ...],
    serial: tuple[bool | tuple[bool, ...], ...],
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """Each rectangle minus its model(s): one per amplifier, or a tuple of two for an amplifier
    with a serial and a parallel overscan (``serial`` then holds a tuple of two flags)."""
    where = block_location(block_info)
    out = block.astype(np.float32)
    it = iter(models)
    for rect, is_serial in zip(rects, serial, strict=True):
        flags = is_serial if isinstance(is_serial, tuple) else (is_serial,)
        mine = [next(it) for _ in flags]
        sl = local_slices(rect, where)
        if sl is None:
            continue
        values = np.asarray(block[sl], dtype=np.float64)
        for model, flag in zip(mine, flags, strict=True):
            values = values - (model[sl[0], :] if flag else model[:, sl[1]])
        out[sl] = values
    return out


# -- numpy forms: one whole chip in memory -------------------------------------------------------


def _model_full_np(raw: np.ndarray, geo: _Geometry, config: OverscanConfig) -> np.ndarray:
    """The float64 model at every raw line, from the same kernels as :func:`_model_full`."""
    r = geo.over_rect
    over = raw[r.y0 : r.y1, r.x0 : r.x1]
    profile = _collapse_lines(over if geo.serial else over.T, config.method, config.clip_sigma, config.clip_iters)
    return _evaluate_model(profile, geo.line0, geo.nline_total, config.model, config.order, config.knots)


def _order(raw_shape: tuple[int, ...], amp: Amplifier, config: OverscanConfig, chip: str) -> list[_Geometry]:
    """The amplifier's overscans in the order they are subtracted (one or two)."""
    primary = _geometry(raw_shape, amp, config, chip)
    if amp.parallel_biassec is None:
        return [primary]
    second = _geometry(raw_shape, amp, config, chip, parallel=True)
    return [primary, second] if amp.overscan_order == "serial-first" else [second, primary]


def _second_args(first: _Geometry, second: _Geometry, config: OverscanConfig) -> tuple[Any, ...]:
    r = second.over_rect
    return (
        first.serial,
        r.y0,
        r.x0,
        second.serial,
        second.line0,
        second.nline_total,
        config.method,
        config.clip_sigma,
        config.clip_iters,
        config.model,
        config.order,
        config.knots,
    )


def _models_np(raw: np.ndarray, geos: list[_Geometry], config: OverscanConfig) -> list[np.ndarray]:
    first = _model_full_np(raw, geos[0], config)
    if len(geos) == 1:
        return [first]
    r = geos[1].over_rect
    second = _second_model(raw[r.y0 : r.y1, r.x0 : r.x1], first, *_second_args(geos[0], geos[1], config))
    return [first, second]


def subtract_overscan_np(raw: np.ndarray, layout: ChipLayout, config: OverscanConfig | None = None) -> np.ndarray:
    """:func:`subtract_overscan` on a whole raw chip held in memory (numpy in, numpy out)."""
    config = config or OverscanConfig()
    raw = np.asarray(raw)
    _check_shape(raw, layout)
    if not config.enabled:
        return raw.astype(np.float32)
    rects = {a.name: rect_of(a.datasec) for a in layout.amplifiers}
    check_disjoint(layout, rects, "data sections")
    models: list[np.ndarray] = []
    serial: list[bool | tuple[bool, ...]] = []
    for amp in layout.amplifiers:
        geos = _order(raw.shape, amp, config, layout.name)
        for geo, full in zip(geos, _models_np(raw, geos, config), strict=True):
            models.append(full[:, None] if geo.serial else full[None, :])
        serial.append(geos[0].serial if len(geos) == 1 else tuple(g.serial for g in geos))
    return _subtract_kernel(
        raw, *models, rects=tuple(rects.values()), serial=tuple(serial), block_info=whole_block(raw.shape)
    )


def overscan_stats_np(
    raw: np.ndarray, layout: ChipLayout, config: OverscanConfig | None = None
) -> dict[str, OverscanStats]:
    """:func:`overscan_stats` on a whole raw chip held in memory: 0-d float64 numpy values."""
    config = config or OverscanConfig()
    raw = np.asarray(raw)
    _check_shape(raw, layout)
    out = {}
    for amp in layout.amplifiers:
        geo = _geometry(raw.shape, amp, config, layout.name)
        full = _model_full_np(raw, geo, config)
        r = geo.over_rect
        over = raw[r.y0 : r.y1, r.x0 : r.x1]
        noise = _robust_std_about(over if geo.serial else over.T, full, geo.line0)
        out[amp.name] = OverscanStats(np.asarray(full[geo.data_lines].mean()), noise)
    return out


# -- lazy graph ---------------------------------------------------------------------------------


def _used_overscan(raw: da.Array, geo: _Geometry) -> da.Array:
    """The used overscan pixels as ``(lines, across)``, whole lines in each chunk."""
    r = geo.over_rect
    over = raw[r.y0 : r.y1, r.x0 : r.x1]
    if not geo.serial:
        over = over.T
    return over.rechunk({1: -1})


def _model_full(raw: da.Array, geo: _Geometry, config: OverscanConfig) -> da.Array:
    """Lazy float64 model at every raw line of the frame (one chunk)."""
    over = _used_overscan(raw, geo)
    profile = over.map_blocks(
        _collapse_lines,
        config.method,
        config.clip_sigma,
        config.clip_iters,
        drop_axis=1,
        dtype=np.float64,
        meta=np.array((), dtype=np.float64),
        token=f"overscan-collapse-{geo.chip}-{geo.amp}",
    ).rechunk(-1)
    return profile.map_blocks(
        _evaluate_model,
        geo.line0,
        geo.nline_total,
        config.model,
        config.order,
        config.knots,
        chunks=((geo.nline_total,),),
        dtype=np.float64,
        meta=np.array((), dtype=np.float64),
        token=f"overscan-model-{geo.chip}-{geo.amp}",
    )


def _second_model_lazy(raw: da.Array, first_full: da.Array, geos: list[_Geometry], config: OverscanConfig) -> da.Array:
    """Lazy float64 model of the second overscan at every raw line (one chunk)."""
    r = geos[1].over_rect
    region = raw[r.y0 : r.y1, r.x0 : r.x1].rechunk(-1)
    kind = "parallel" if not geos[1].serial else "serial"
    constants = [x for value in _second_args(geos[0], geos[1], config) for x in (value, None)]
    return da.blockwise(
        _second_model,
        "k",
        region,
        "ij",
        first_full,
        "l",
        *constants,
        new_axes={"k": geos[1].nline_total},
        concatenate=True,
        dtype=np.float64,
        meta=np.array((), dtype=np.float64),
        token=f"overscan-{kind}-{geos[1].chip}-{geos[1].amp}",
    )


def _as_dask(raw: da.Array | np.ndarray) -> da.Array:
    return raw if isinstance(raw, da.Array) else da.asarray(raw)


def overscan_model(raw: da.Array, amp: Amplifier, config: OverscanConfig | None = None, *, chip: str = "") -> da.Array:
    """The overscan level to subtract from each line of one amplifier's data section.

    Parameters
    ----------
    raw : dask.array.Array
        The raw chip ``(ny, nx)``, overscan included, in ADU.
    amp : Amplifier
        The amplifier; its ``biassec`` and ``overscan_axis`` must be set.
    config : OverscanConfig, optional
        Collapse method, skips and smoothing model (defaults: median, no skips, no model).
    chip : str, optional
        Chip name, used in error messages and task names.

    Returns
    -------
    dask.array.Array
        Lazy 1-D float64 array: one value per row of the data section (serial overscan) or per
        column (parallel), in the order of ``raw[amp.datasec.slices]`` (a flipped data section
        gets the model reversed).

    Raises
    ------
    ConfigError
        The amplifier has no overscan, the skips leave no overscan, or the model needs more
        lines than the overscan has.
    """
    config = config or OverscanConfig()
    raw = _as_dask(raw)
    geo = _geometry(raw.shape, amp, config, chip)
    return _model_full(raw, geo, config)[geo.data_lines]


def subtract_overscan(raw: da.Array, layout: ChipLayout, config: OverscanConfig | None = None) -> da.Array:
    """Subtract each amplifier's overscan model from its data section.

    Parameters
    ----------
    raw : dask.array.Array
        The raw chip, shape ``layout.raw_shape``, in ADU (any numeric dtype).
    layout : ChipLayout
        The chip's amplifiers.
    config : OverscanConfig, optional
        Collapse method, skips and model; ``enabled=False`` returns ``raw`` as float32.

    Returns
    -------
    dask.array.Array
        Lazy float32 array of the raw shape and chunks. Each amplifier's data-section pixels are
        ``raw - model`` broadcast along the readout direction (computed in float64); all other
        pixels (overscan included) keep their raw values.

    Raises
    ------
    ShapeMismatchError
        ``raw`` does not have the layout's raw shape.
    ConfigError
        An amplifier has no overscan (while enabled), or the overscan cannot support the model.
    ProfileError
        Two amplifiers' data sections overlap.
    """
    config = config or OverscanConfig()
    raw = _as_dask(raw)
    _check_shape(raw, layout)
    if not config.enabled:
        return raw.astype(np.float32)
    rects = {a.name: rect_of(a.datasec) for a in layout.amplifiers}
    check_disjoint(layout, rects, "data sections")
    models: list[da.Array] = []
    serial: list[bool | tuple[bool, ...]] = []
    for amp in layout.amplifiers:
        geos = _order(raw.shape, amp, config, layout.name)
        fulls = [_model_full(raw, geos[0], config)]
        if len(geos) == 2:
            fulls.append(_second_model_lazy(raw, fulls[0], geos, config))
        for geo, full in zip(geos, fulls, strict=True):
            if geo.serial:
                models.append(full[:, None].rechunk((raw.chunks[0], 1)))
            else:
                models.append(full[None, :].rechunk((1, raw.chunks[1])))
        serial.append(geos[0].serial if len(geos) == 1 else tuple(g.serial for g in geos))
    return da.map_blocks(
        _subtract_kernel,
        raw,
        *models,
        rects=tuple(rects.values()),
        serial=tuple(serial),
        dtype=np.float32,
        meta=np.array((), dtype=np.float32),
        token=f"overscan-{layout.name}",
    )


def overscan_stats(raw: da.Array, layout: ChipLayout, config: OverscanConfig | None = None) -> dict[str, OverscanStats]:
    """Per-amplifier overscan level and noise, as lazy 0-d float64 arrays in ADU.

    The measurement ignores ``config.enabled``: it describes the overscan whether or not it is
    subtracted. Computing these together with :func:`subtract_overscan`'s result shares the
    collapse and fit tasks (same keys).

    Parameters
    ----------
    raw : dask.array.Array
        The raw chip, shape ``layout.raw_shape``.
    layout : ChipLayout
        The chip's amplifiers; every one must have an overscan.
    config : OverscanConfig, optional
        Collapse method, skips and model.

    Returns
    -------
    dict of str to OverscanStats
        ``{amplifier name: OverscanStats(level, noise)}``; ``level`` is the mean of the model
        over the data lines, ``noise`` the robust standard deviation of the used overscan
        pixels about the model.
    """
    config = config or OverscanConfig()
    raw = _as_dask(raw)
    _check_shape(raw, layout)
    out = {}
    for amp in layout.amplifiers:
        geo = _geometry(raw.shape, amp, config, layout.name)
        full = _model_full(raw, geo, config)
        level = full[geo.data_lines].mean()
        over = _used_overscan(raw, geo).rechunk(-1)
        noise = da.blockwise(
            _robust_std_about,
            "",
            over,
            "ij",
            full,
            "k",
            geo.line0,
            None,
            concatenate=True,
            dtype=np.float64,
            meta=np.array((), dtype=np.float64),
            token=f"overscan-noise-{layout.name}-{amp.name}",
        )
        out[amp.name] = OverscanStats(level, noise)
    return out


def _check_shape(raw: da.Array | np.ndarray, layout: ChipLayout) -> None:
    if tuple(raw.shape) != tuple(layout.raw_shape):
        raise ShapeMismatchError(
            f"chip {layout.name}: array of shape {tuple(raw.shape)} does not match the layout's "
            f"raw shape {tuple(layout.raw_shape)}"
        )
