"""The coadd: a lazy graph of one task per footprint tile, and the numpy stack of one tile.

Graph (built from headers only; nothing is read or computed): the footprint is cut into tiles
(bands of rows, or squares) sized by the per-task budget (:func:`coadd_tile_shape`) for ``depth`` slots,
``depth`` being the largest number of chips whose outlines overlap one place of the footprint.
Each tile task (:func:`coadd_tile`) resamples every chip reaching the tile onto its part of the
tile (:func:`~ccdask.coadd._reproject.reproject_tile`) and packs the values of each pixel into
slots in input order, so the stack is ``(slots, ty, tx)`` with slots the overlap depth, not the
number of chips reaching the tile: a task's memory is flat in the number of frames (more
overlapping frames give shorter tiles) and in the footprint size (wider footprints do not add
slots). Then :func:`stack_tile`.

:func:`stack_tile` (numpy): the combine engine's kernel (:func:`ccdask.combine.combine_block`,
``return_mask=True``) finds the rejected values of each pixel with the configured rejection on the
scaled values; the survivors are then averaged with per-pixel inverse-variance weights, in frame
order, in float64: ``SCI = Σ w v / Σ w``, ``VAR = Σ w² σ² / (Σ w)²`` (``= 1 / Σ w`` with
``w = 1/σ²``), ``COVERAGE`` the number of survivors, ``EXPOSURE`` the sum of their exposure
times, ``DQ = 8`` (no data) where nothing survived. A frame that gives NaN at a pixel takes no
part there, so a pixel's value does not depend on which tile it falls in.
"""

from __future__ import annotations

import math
import operator
import os
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .. import dq as DQ
from ..combine import CombineConfig, combine_block
from ..errors import ConfigError, WcsError
from ._config import CoaddConfig
from ._footprint import Footprint, auto_footprint, outline_bbox
from ._frames import ChipFrame, read_chips
from ._reproject import reproject_tile
from ._result import CoaddResult

__all__ = [
    "BYTES_PER_PIXEL",
    "BYTES_PER_SLOT",
    "TileResult",
    "coadd",
    "coadd_tile",
    "coadd_tile_shape",
    "noise_clip",
    "overlap_depth",
    "place_chips",
    "stack_tile",
]

_OUTPUTS = (
    ("sci", np.float32),
    ("var", np.float32),
    ("coverage", np.int16),
    ("exposure", np.float32),
    ("dq", np.int16),
)


class TileResult(NamedTuple):
    """The five planes of one coadd tile."""

    sci: np.ndarray
    var: np.ndarray
    coverage: np.ndarray
    exposure: np.ndarray
    dq: np.ndarray


def _empty_tile(shape: tuple[int, int]) -> TileResult:
    return TileResult(
        np.full(shape, np.nan, np.float32),
        np.full(shape, np.nan, np.float32),
        np.zeros(shape, np.int16),
        np.zeros(shape, np.float32),
        np.full(shape, DQ.NODATA, np.int16),
    )


def noise_clip(
    sci: np.ndarray, var: np.ndarray, scale: np.ndarray, lower: float, upper: float, *, maxiters: int = 10
) -> np.ndarray:
    """``sci`` with NaN where a value lies more than ``upper`` (above) or ``lower`` (below) times
    its own noise ``sqrt(var)`` from the median of the pixel's survivors (scaled values),
    iterated until nothing changes (IRAF's ``ccdclip`` idea, the VAR plane as the noise model).

    With few frames per pixel (a dithered field has 2-6) this finds a cosmic ray among three
    values, where a spread measured from the values themselves cannot.
    """
    f = scale.reshape(-1, 1, 1)
    v = sci.astype(np.float64) * f
    sigma = np.sqrt(var.astype(np.float64)) * np.abs(f)
    alive = np.isfinite(v) & np.isfinite(sigma)
    for _ in range(maxiters):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            med = np.nanmedian(np.where(alive, v, np.nan), axis=0)
            d = v - med
            out = alive & ((d > upper * sigma) | (-d > lower * sigma))
        if not out.any():
            break
        alive &= ~out
    return np.where(alive, sci, np.float32(np.nan)).astype(np.float32)


def stack_tile(
    sci: np.ndarray,
    var: np.ndarray,
    *,
    reject: CombineConfig,
    weights: str = "ivar",
    exptime: np.ndarray | None = None,
    noise_sigma: tuple[float, float] | None = None,
) -> TileResult:
    """Reject and average a ``(K, ty, tx)`` stack of resampled, scaled planes (module notes).

    ``sci``/``var`` are float32 with NaN where a slot holds nothing; the slots of a pixel hold
    its frames in input order (packed or not: NaN slots take no part anywhere). ``exptime``
    ``(K, ty, tx)`` fills the exposure map.
    """
    k, ty, tx = sci.shape
    if k == 0:
        return _empty_tile((ty, tx))
    if noise_sigma is not None:
        sci = noise_clip(sci, var, np.ones(k), noise_sigma[0], noise_sigma[1], maxiters=reject.maxiters or 10)
    res = combine_block(sci, reject, return_mask=True)
    assert res.mask is not None
    keep = ~res.mask
    sw = np.zeros((ty, tx))
    swv = np.zeros((ty, tx))
    sw2v = np.zeros((ty, tx))
    count = np.zeros((ty, tx), np.int64)
    expo = np.zeros((ty, tx))
    for i in range(k):
        v = sci[i].astype(np.float64)
        s2 = var[i].astype(np.float64)
        ok = keep[i] & np.isfinite(s2) & (s2 > 0)
        if weights == "ivar":
            with np.errstate(divide="ignore", invalid="ignore"):
                w = np.where(ok, 1.0 / s2, 0.0)
        else:
            w = ok.astype(np.float64)
        sw += w
        swv += np.where(ok, w * v, 0.0)
        sw2v += np.where(ok, w * w * s2, 0.0)
        count += ok
        if exptime is not None:
            expo += np.where(ok, exptime[i].astype(np.float64), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out_sci = np.where(count > 0, swv / sw, np.nan).astype(np.float32)
        out_var = np.where(count > 0, sw2v / (sw * sw), np.nan).astype(np.float32)
    dqp = np.where(count > 0, 0, DQ.NODATA).astype(np.int16)
    return TileResult(out_sci, out_var, count.astype(np.int16), expo.astype(np.float32), dqp)


#: Bytes a tile task holds per output pixel and per overlapping frame: the packed SCI, VAR and
#: exposure slots (float32), the rejection mask, and the noise clipping's float64 scratch.
BYTES_PER_SLOT = 56
#: ... and per output pixel: the float64 accumulators and the outputs.
BYTES_PER_PIXEL = 128
#: Bands of whole rows are used when they get at least this many rows.
MIN_BAND_ROWS = 64


def coadd_tile_shape(depth: int, shape: tuple[int, int], memory_per_task: int) -> tuple[int, int]:
    """Tile ``(ty, tx)`` of ``area = budget / (BYTES_PER_SLOT × depth + BYTES_PER_PIXEL)`` pixels:
    bands of whole rows when a band gets at least :data:`MIN_BAND_ROWS` rows, else squares
    (short bands would resample every chip onto slivers), balanced over the footprint.

    >>> coadd_tile_shape(4, (600, 600), 64 * 2**20)
    (300, 600)
    >>> coadd_tile_shape(20, (10000, 10000), 64 * 2**20)
    (228, 228)
    """
    ny, nx = shape
    area = max(1, memory_per_task // (BYTES_PER_SLOT * max(depth, 1) + BYTES_PER_PIXEL))

    def balanced(n: int, step: int) -> int:
        step = max(1, min(step, n))
        return math.ceil(n / math.ceil(n / step))

    rows = area // nx
    if rows >= min(ny, MIN_BAND_ROWS):
        return balanced(ny, rows), nx
    side = math.isqrt(area)
    return balanced(ny, side), balanced(nx, side)


def coadd_tile(
    chips: Sequence[ChipFrame],
    boxes: Sequence[tuple[int, int, int, int]],
    footprint: Footprint,
    rows: slice,
    cols: slice,
    config: CoaddConfig,
    scale: Sequence[float],
    exptime: Sequence[float],
) -> TileResult:
    """Resample every chip of ``chips`` onto the tile ``[rows, cols]`` and stack them (a task).

    ``boxes`` are the chips' footprint pixels ``(x0, x1, y0, y1)``: each chip is resampled onto
    its part of the tile only, and its values are packed into per-pixel slots in input order, so
    the stack holds as many slots as frames overlap at one place of the tile (not as many as
    chips reach the tile).
    """
    ty, tx = rows.stop - rows.start, cols.stop - cols.start
    parts = []
    for chip, (bx0, bx1, by0, by1), f, t in zip(chips, boxes, scale, exptime, strict=True):
        x0, x1 = max(bx0, cols.start) - cols.start, min(bx1, cols.stop) - cols.start
        y0, y1 = max(by0, rows.start) - rows.start, min(by1, rows.stop) - rows.start
        if x0 < x1 and y0 < y1:
            parts.append((chip, (x0, x1, y0, y1), f, t))
    depth = overlap_depth([p[1] for p in parts], (ty, tx))
    if depth == 0:
        return _empty_tile((ty, tx))
    sci = np.full((depth, ty, tx), np.nan, np.float32)
    var = np.full((depth, ty, tx), np.nan, np.float32)
    times = np.zeros((depth, ty, tx), np.float32)
    filled = np.zeros((ty, tx), np.int64)
    for chip, (x0, x1, y0, y1), f, t in parts:
        sub_rows = slice(rows.start + y0, rows.start + y1)
        sub_cols = slice(cols.start + x0, cols.start + x1)
        out = reproject_tile(chip, footprint, sub_rows, sub_cols, method=config.method, reject_bits=config.reject_bits)
        if out is None:
            continue
        s, v = out
        yy, xx = np.nonzero(np.isfinite(s))
        slot = filled[y0 + yy, x0 + xx]
        if f == 1.0:
            sci[slot, y0 + yy, x0 + xx] = s[yy, xx]
            var[slot, y0 + yy, x0 + xx] = v[yy, xx]
        else:
            sci[slot, y0 + yy, x0 + xx] = (s[yy, xx].astype(np.float64) * f).astype(np.float32)
            var[slot, y0 + yy, x0 + xx] = (v[yy, xx].astype(np.float64) * (f * f)).astype(np.float32)
        times[slot, y0 + yy, x0 + xx] = t
        filled[y0 + yy, x0 + xx] += 1
    used = int(filled.max())
    return stack_tile(
        sci[:used],
        var[:used],
        reject=config.reject,
        weights=config.weights,
        exptime=times[:used],
        noise_sigma=None
        if config.noise_sigma is None
        else (
            config.noise_sigma if config.noise_sigma_lower is None else config.noise_sigma_lower,
            config.noise_sigma,
        ),
    )


def _bbox_pixels(box: tuple[float, float, float, float], shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Footprint pixels ``(x0, x1, y0, y1)`` (end exclusive) touched by an outline box, one
    pixel wider each side, clipped; None if outside."""
    ny, nx = shape
    x0 = max(0, math.floor(box[0] + 0.5) - 1)
    x1 = min(nx, math.ceil(box[1] - 0.5) + 2)
    y0 = max(0, math.floor(box[2] + 0.5) - 1)
    y1 = min(ny, math.ceil(box[3] - 0.5) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, x1, y0, y1


def place_chips(chips: Sequence[ChipFrame], footprint: Footprint) -> list[tuple[int, tuple[int, int, int, int]]]:
    """``(index, (x0, x1, y0, y1))`` of every chip that falls on the footprint: the footprint
    pixels its outline touches, one pixel wider each side (headers only)."""
    placed = []
    for i, chip in enumerate(chips):
        box = outline_bbox(chip, footprint.wcs)
        if box is None:
            continue
        px = _bbox_pixels(box, footprint.shape)
        if px is not None:
            placed.append((i, px))
    return placed


def overlap_depth(boxes: Sequence[tuple[int, int, int, int]], shape: tuple[int, int]) -> int:
    """The largest number of boxes ``(x0, x1, y0, y1)`` covering one footprint pixel."""
    if not boxes:
        return 0
    ny, nx = shape
    xs = sorted({0, nx, *(b[0] for b in boxes), *(b[1] for b in boxes)})
    ys = sorted({0, ny, *(b[2] for b in boxes), *(b[3] for b in boxes)})
    grid = np.zeros((len(ys), len(xs)), np.int64)
    xi = {x: i for i, x in enumerate(xs)}
    yi = {y: i for i, y in enumerate(ys)}
    for x0, x1, y0, y1 in boxes:
        grid[yi[y0], xi[x0]] += 1
        grid[yi[y0], xi[x1]] -= 1
        grid[yi[y1], xi[x0]] -= 1
        grid[yi[y1], xi[x1]] += 1
    return int(grid.cumsum(0).cumsum(1).max())


def _footprint_of(
    chips: Sequence[ChipFrame],
    footprint: Footprint | str | os.PathLike[str] | None,
    wcs_from: str | os.PathLike[str] | None,
    pixel_scale: float | None,
    rotation: float | None,
) -> Footprint:
    if isinstance(footprint, Footprint):
        return footprint
    if footprint is not None and not (isinstance(footprint, str) and footprint == "auto"):
        if wcs_from is not None:
            raise ConfigError("give either a footprint file or wcs_from, not both")
        return Footprint.from_file(footprint)
    wcs = None if wcs_from is None else Footprint.from_file(wcs_from, shape=False).wcs
    if wcs is not None and (pixel_scale is not None or rotation is not None):
        raise ConfigError("wcs_from fixes the projection: pixel_scale and rotation cannot be given with it")
    return auto_footprint(chips, pixel_scale_arcsec=pixel_scale, rotation_deg=rotation, wcs=wcs)


def coadd(
    frames: Sequence[str | os.PathLike[str]],
    *,
    footprint: Footprint | str | os.PathLike[str] | None = None,
    wcs_from: str | os.PathLike[str] | None = None,
    pixel_scale: float | None = None,
    rotation: float | None = None,
    method: str = "interp",
    clip: str = "none",
    sigma_lower: float = 3.0,
    sigma_upper: float = 3.0,
    maxiters: int | None = 5,
    center: str = "median",
    spread: str = "mad_std",
    nlow: int = 1,
    nhigh: int = 1,
    nkeep: int = 1,
    mclip: bool = True,
    noise_sigma: float | None = 4.0,
    noise_sigma_lower: float | None = None,
    weights: str = "ivar",
    scale: str = "none",
    reject_bits: int | None = None,
    memory_per_task: int | float | str | None = None,
    config: CoaddConfig | None = None,
    name: str | None = None,
) -> CoaddResult:
    """Reproject reduced frames onto one tangent-plane footprint and stack them, lazily.

    Parameters
    ----------
    frames : sequence of paths
        ccdask reduced frames (``SCI``/``VAR``/``DQ`` per chip, each ``SCI`` with a celestial WCS).
    footprint : Footprint, path, "auto" or None
        The output grid: a :class:`Footprint`, an image file whose WCS and shape are taken, or
        ``auto``/None (covering every chip; see :func:`~ccdask.coadd.auto_footprint`).
    wcs_from : path, optional
        Take the projection (tangent point, scale, rotation) of this file's WCS and size the box
        to cover every chip.
    pixel_scale, rotation : float, optional
        ``auto`` footprint: pixel scale (arcsec) and rotation (degrees) instead of the chips' medians.
    method : {"interp", "adaptive", "exact"}
        Resampling (the ``reproject`` package).
    clip, sigma_lower, sigma_upper, maxiters, center, spread, nlow, nhigh, nkeep, mclip
        The combine engine's rejection along the frame axis, as :func:`ccdask.combine`
        (default ``none``), after the noise clipping.
    noise_sigma, noise_sigma_lower : float or None
        Reject values more than ``noise_sigma`` (above; ``noise_sigma_lower`` below, default the
        same) times their own ``sqrt(VAR)`` from the pixel's median (:func:`noise_clip`; default
        4, None: off).
    weights : {"ivar", "none"}
        Inverse-variance weights per pixel (default) or a plain mean of the survivors.
    scale : {"none", "exposure"}
        ``exposure``: each frame times ``mean(EXPTIME) / EXPTIME``.
    reject_bits : int, optional
        DQ bits left out before resampling (default bad | saturated | cosmic ray | no data).
    memory_per_task : int or str, optional
        Per-task budget (default 64 MiB); sets the tile height.
    config : CoaddConfig, optional
        All options at once (the keyword options above are then ignored).
    name : str, optional
        Readable part of the task keys (``coadd-<name>-<token>``).

    Returns
    -------
    CoaddResult
        Lazy ``sci``, ``var``, ``coverage``, ``exposure``, ``dq`` on ``footprint``.
    """
    if config is None:
        reject = CombineConfig(
            method="mean",
            clip=clip,  # type: ignore[arg-type]  # checked against the Clip choices by CombineConfig
            sigma_lower=sigma_lower,
            sigma_upper=sigma_upper,
            maxiters=maxiters,
            center=center,  # type: ignore[arg-type]
            spread=spread,  # type: ignore[arg-type]
            nlow=nlow,
            nhigh=nhigh,
            nkeep=nkeep,
            mclip=mclip,
        )
        fields: dict[str, Any] = {
            "method": method,
            "reject": reject,
            "weights": weights,
            "scale": scale,
            "noise_sigma": noise_sigma,
            "noise_sigma_lower": noise_sigma if noise_sigma_lower is None else noise_sigma_lower,
        }
        if reject_bits is not None:
            fields["reject_bits"] = reject_bits
        if memory_per_task is not None:
            fields["memory_per_task"] = memory_per_task
        config = CoaddConfig(**fields)
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"name must be a non-empty string, not {name!r}")
    if isinstance(frames, str | os.PathLike):
        frames = [frames]
    chips = read_chips(list(frames))
    fp = _footprint_of(chips, footprint, wcs_from, pixel_scale, rotation)

    # per-chip scale and exposure time
    times = [c.exptime for c in chips]
    if config.scale == "exposure":
        missing = [c.label for c, t in zip(chips, times, strict=True) if t is None]
        if missing:
            raise ConfigError(f"{missing[0]}: no EXPTIME in the header; scale='exposure' needs it")
        per_file: dict[int, float] = {}
        for c, t in zip(chips, times, strict=True):
            per_file.setdefault(c.index, float(t))  # type: ignore[arg-type]
        mean_t = sum(per_file.values()) / len(per_file)
        factors = [mean_t / float(t) for t in times]  # type: ignore[arg-type]
    else:
        factors = [1.0] * len(chips)
    exptimes = [math.nan if t is None else float(t) for t in times]

    placed = place_chips(chips, fp)
    if not placed:
        raise WcsError(
            f"no input chip falls on the footprint ({fp.shape[1]} x {fp.shape[0]} pixels); check the inputs' WCS"
        )
    depth = overlap_depth([b for _, b in placed], fp.shape)
    tile = coadd_tile_shape(depth, fp.shape, config.memory_per_task)
    ny, nx = fp.shape
    ys = [(s, min(s + tile[0], ny)) for s in range(0, ny, tile[0])]
    xs = [(s, min(s + tile[1], nx)) for s in range(0, nx, tile[1])]

    token = tokenize(
        [(c.sci.token, c.extver) for c in chips], fp.header().tostring(), fp.shape, config.to_dict(), ys, xs
    )
    prefix = f"coadd-{name}" if name else "coadd"
    tiles_name = f"{prefix}-tile-{token}"
    tasks: dict[Any, Any] = {}
    for ti, (y0, y1) in enumerate(ys):
        for tj, (x0, x1) in enumerate(xs):
            sel = [(i, b) for i, b in placed if b[0] < x1 and b[1] > x0 and b[2] < y1 and b[3] > y0]
            tasks[(tiles_name, ti, tj)] = (
                coadd_tile,
                [chips[i] for i, _ in sel],
                [b for _, b in sel],
                fp,
                slice(y0, y1),
                slice(x0, x1),
                config,
                [factors[i] for i, _ in sel],
                [exptimes[i] for i, _ in sel],
            )
    layers: dict[str, Any] = {tiles_name: tasks}
    deps: dict[str, set[str]] = {tiles_name: set()}
    for index, (suffix, _) in enumerate(_OUTPUTS):
        out_name = f"{prefix}-{suffix}-{token}"
        layers[out_name] = {
            (out_name, ti, tj): (operator.getitem, (tiles_name, ti, tj), index)
            for ti in range(len(ys))
            for tj in range(len(xs))
        }
        deps[out_name] = {tiles_name}
    hlg = HighLevelGraph(layers, deps)
    chunks = (tuple(b - a for a, b in ys), tuple(b - a for a, b in xs))
    arrays = {
        suffix: da.Array(hlg, f"{prefix}-{suffix}-{token}", chunks=chunks, dtype=dt, meta=np.empty((0, 0), dt))
        for suffix, dt in _OUTPUTS
    }
    files = list(dict.fromkeys(c.path for c in chips))
    return CoaddResult(
        sci=arrays["sci"],
        var=arrays["var"],
        coverage=arrays["coverage"],
        exposure=arrays["exposure"],
        dq=arrays["dq"],
        footprint=fp,
        config=config,
        inputs=tuple(files),
        nchips=len(placed),
        depth=depth,
        tile=tile,
        name=name,
    )
