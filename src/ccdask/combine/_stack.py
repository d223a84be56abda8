"""The dask layer: stack frames, cut them into ``(N, ty, tx)`` tiles, map the kernel per tile.

Two graph shapes, both with one kernel task per tile:

* **files** whose pixels can be read by region (plain FITS, fpack): each tile task reads its
  region from every frame (:meth:`ccdask.io.ImageSource.read`) into one ``(N, ty, tx)`` block and
  clips it. No stacking or rechunking tasks, nothing held between tasks but the outputs. Plain
  files (without ``grow``) go band by band instead (:func:`_tile_in_bands`): each band of
  :func:`band_rows` rows (about :data:`BAND_BYTES`) is decoded from the tile's stored values
  (read with ``pread``, no memory map: the task holds its buffers and outputs, whatever the
  number of frames) into one reused float32 buffer and clipped while it is in cache; the
  kernel's results do not depend on the block shape, so the numbers are the same.
* **arrays** (numpy, dask, sequences of 2-D arrays) and gzip-wrapped files (which must be
  decompressed whole): the frames are stacked, rechunked to ``(N, ty, tx)`` and the kernel is
  mapped over the blocks. A gzip file is decompressed once per graph and its bytes are held
  until every tile that needs them has run, so peak memory grows with the stack there.

Tile shape (:func:`tile_shape`): with ``B`` the per-task budget (``memory_per_task``, default
64 MiB) and ``b`` the bytes a task holds per output pixel, ``ty = floor(B / (nx b))`` whole rows
(rows are contiguous in FITS files), balanced over the frame; if one row does not fit,
``ty = 1`` and ``tx = floor(B / b)``. ``b = 4N (+4N with variance planes) + 32`` for file
tiles (the block, one frame's read buffers, the outputs) and twice the block for stacked arrays
(the rechunked pieces and their concatenation), plus ``extra_per_frame`` bytes per frame and
pixel where DQ planes and the optional outputs are computed (:mod:`ccdask.combine._planes`).
So peak memory per task does not grow with N or with the frame size: more frames give shorter tiles.
"""

from __future__ import annotations

import math
import operator
import os
import typing
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from numpy.typing import ArrayLike

from ..errors import ConfigError, ShapeMismatchError
from ..io._decode import RAW_DTYPES
from ..utils import SAMPLE_PIXELS, sample_step
from . import _planes
from ._config import (
    DEFAULT_DQ_BAD,
    SIRIL_CLIPS,
    Center,
    Clip,
    CombineConfig,
    Method,
    Normalize,
    ScaleMode,
    Spread,
    parse_memory,
    parse_statsec,
)
from ._kernels import combine_block
from ._planes import plane_sources
from ._result import CombineResult

if TYPE_CHECKING:
    from ..io import ImageSource
    from ..io._scan import HduKey

#: What ``combine`` stacks: an array ``(N, y, x)``, 2-D arrays, or FITS paths.
Frames: TypeAlias = np.ndarray | da.Array | Iterable[ArrayLike | str | os.PathLike[str]]
#: Input variance planes like the frames: an array ``(N, y, x)``, 2-D arrays or files.
VariancePlanes: TypeAlias = np.ndarray | da.Array | Iterable[ArrayLike | str | os.PathLike[str]]
#: Input DQ planes or masks like the frames: an array ``(N, y, x)``, 2-D arrays or files.
DqPlanes: TypeAlias = np.ndarray | da.Array | Iterable[ArrayLike | str | os.PathLike[str]]
#: The outputs of one tile task: data, count, variance (None unless asked for).
_TileOut: TypeAlias = tuple[np.ndarray, np.ndarray, np.ndarray | None]

__all__ = ["SCALE_SAMPLE_PIXELS", "combine", "scale_sample_step", "tile_shape"]

#: Pixels per frame (at most) of the fixed sample grid on which median/mean scales are computed.
SCALE_SAMPLE_PIXELS = SAMPLE_PIXELS

_META2 = np.empty((0, 0), np.float32)
_META_COUNT = np.empty((0, 0), np.int16)
_META_DQ = np.empty((0, 0), np.uint16)
#: Where each output sits in a tile task's tuple (:class:`ccdask.combine._planes.PlanesResult`).
_OUTPUT_INDEX = {"data": 0, "count": 1, "variance": 2, "dq": 3, "nrej": 4, "sigma": 5, "rejmask": 6}


# ---------------------------------------------------------------------------------------------
# tiling
# ---------------------------------------------------------------------------------------------
def tile_shape(
    nframes: int,
    shape: tuple[int, int],
    memory_per_task: int | str | None = None,
    *,
    variance: bool = False,
    stacked: bool = False,
    extra_per_frame: int = 0,
) -> tuple[int, int]:
    """Tile ``(ty, tx)`` for ``nframes`` frames of ``shape`` within the per-task budget.

    >>> tile_shape(30, (4096, 2048))
    (205, 2048)
    >>> tile_shape(48, (4096, 2048))
    (142, 2048)
    """
    budget = parse_memory(memory_per_task)
    ny, nx = shape
    per_pixel = 4 * nframes * (2 if variance else 1) + extra_per_frame * nframes
    if stacked:
        per_pixel *= 2
    per_pixel += 32
    rows = budget // (nx * per_pixel)
    if rows >= 1:
        rows = min(rows, ny)
        ntiles = math.ceil(ny / rows)
        return math.ceil(ny / ntiles), nx
    cols = max(1, budget // per_pixel)
    ntiles = math.ceil(nx / cols)
    return 1, math.ceil(nx / ntiles)


def _flat_floats(values: ArrayLike) -> tuple[float, ...]:
    """Per-frame values as a flat tuple of float (CombineConfig checks them)."""
    return tuple(np.asarray(values, dtype=np.float64).reshape(-1).tolist())


def _starts(n: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(s + step, n)) for s in range(0, n, step)]


# ---------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------
def _crop(out: _TileOut, top: int, left: int, ty: int, tx: int) -> _TileOut:
    """The core ``(ty, tx)`` of a tile's outputs computed with a halo."""
    core = (slice(top, top + ty), slice(left, left + tx))
    data, count, var = out
    return data[core], count[core], None if var is None else var[core]


def _tile_from_sources(
    sources: Sequence[ImageSource],
    rows: slice,
    cols: slice,
    scale: np.ndarray | None,
    config: CombineConfig,
    want_var: bool,
    halo: int = 0,
    zero: np.ndarray | None = None,
) -> _TileOut:
    """Read one tile (plus ``halo`` pixels around it, inside the frame) from every frame and combine it."""
    fy, fx = sources[0].shape
    r0, r1 = max(rows.start - halo, 0), min(rows.stop + halo, fy)
    c0, c1 = max(cols.start - halo, 0), min(cols.stop + halo, fx)
    if not halo and all(src.kind == "plain" for src in sources):
        return _tile_in_bands(sources, rows, cols, scale, config, want_var, zero)
    block = np.empty((len(sources), r1 - r0, c1 - c0), np.float32)
    for i, src in enumerate(sources):
        block[i] = src.read(slice(r0, r1), slice(c0, c1))
    res = combine_block(block, config, scale=scale, zero=zero, return_variance=want_var)
    out = (res.data, res.count, res.variance)
    if halo:
        out = _crop(out, rows.start - r0, cols.start - c0, rows.stop - rows.start, cols.stop - cols.start)
    return out


#: Bytes of the ``(N, rows, tx)`` float32 band a tile task decodes and combines at a time (it
#: stays in the L2 cache between the decode and the kernel; see :func:`_tile_in_bands`).
BAND_BYTES = 1 << 20


def band_rows(nframes: int, width: int) -> int:
    """Rows of a band of ``nframes`` float32 frames ``width`` pixels wide within :data:`BAND_BYTES`.

    >>> band_rows(24, 2048), band_rows(48, 2048), band_rows(200, 4096)
    (5, 2, 1)
    """
    return max(1, BAND_BYTES // (4 * nframes * max(width, 1)))


def _tile_in_bands(
    sources: Sequence[ImageSource],
    rows: slice,
    cols: slice,
    scale: np.ndarray | None,
    config: CombineConfig,
    want_var: bool,
    zero: np.ndarray | None,
) -> _TileOut:
    """One tile of plain files: its stored values read, then decoded and combined band by band
    of :func:`band_rows` rows.

    Each frame's region of stored values is read with one ``pread`` into one buffer (2 bytes a
    value for 16-bit frames, half the float32 block the tile is sized for); each band is decoded
    from it into one reused ``(N, rows, tx)`` float32 buffer and combined while it is in cache.
    Nothing of the files is memory-mapped, so the task's memory is those buffers and its outputs
    (a map's pages, once touched, count in the process's resident memory until it is unmapped,
    and a tile task touches every frame). The kernel's results do not depend on the block shape,
    so this is the tile computed at once.
    """
    n = len(sources)
    ty, tx = rows.stop - rows.start, cols.stop - cols.start
    dtypes = [RAW_DTYPES[src.bitpix] for src in sources]
    per_frame = ty * tx * max(dt.itemsize for dt in dtypes)
    stored = np.empty(n * per_frame, np.uint8)
    frames = []
    for i, (src, dtype) in enumerate(zip(sources, dtypes, strict=True)):
        raw = stored[i * per_frame : i * per_frame + ty * tx * dtype.itemsize].view(dtype).reshape(ty, tx)
        src.read_stored_into(rows, cols, raw)
        frames.append(raw)
    band = band_rows(n, tx)
    buf = np.empty((n, min(band, ty), tx), np.float32)
    data = np.empty((ty, tx), np.float32)
    count = np.empty((ty, tx), np.int16)
    var = np.empty((ty, tx), np.float32) if want_var else None
    for b0 in range(0, ty, band):
        b1 = min(b0 + band, ty)
        block = buf if b1 - b0 == buf.shape[1] else np.empty((n, b1 - b0, tx), np.float32)
        for i, (src, raw) in enumerate(zip(sources, frames, strict=True)):
            src.decode_into(raw[b0:b1], block[i])
        res = combine_block(block, config, scale=scale, zero=zero, return_variance=want_var)
        data[b0:b1] = res.data
        count[b0:b1] = res.count
        if var is not None:
            assert res.variance is not None
            var[b0:b1] = res.variance
    return data, count, var


def _tile_from_block(
    block: np.ndarray,
    var: np.ndarray | None,
    scale: np.ndarray | None,
    config: CombineConfig,
    want_var: bool,
    crop: tuple[int, int, int, int] | None = None,
    zero: np.ndarray | None = None,
) -> _TileOut:
    """Combine one rechunked ``(N, ty, tx)`` block (the arrays graph); ``crop`` removes its halo."""
    res = combine_block(block, config, scale=scale, zero=zero, variance=var, return_variance=want_var)
    out = (res.data, res.count, res.variance)
    return out if crop is None else _crop(out, *crop)


def iraf_mode(values: ArrayLike) -> float:
    """IRAF imcombine's mode of a sample (its "true mode", not ``3 median - 2 mean``).

    With ``a`` the sorted values (``n`` of them): fewer than 10 give the median; otherwise, over
    the central 70 % ``a[i:j]`` (``i = int(1 + 0.15 n) - 1``, ``j = int(1 + 0.85 n) - 1``), a window
    of width ``0.1 (a[j] - a[i])`` slides in steps of ``0.01 (a[j] - a[i])`` from ``a[i]``; the
    mode is the middle value of the first window holding the most values. The constants are
    IRAF's (documented in its ``icmode``); checked against IRAF's log in tests/combine/test_iraf.py.

    >>> iraf_mode([5.0, 1.0, 3.0])
    3.0
    >>> float(round(iraf_mode(np.r_[np.linspace(0, 10, 50), np.full(30, 7.0)]), 6))
    7.0
    """
    a = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    n = a.size
    if n == 0:
        return math.nan
    if n < 10:
        return float(np.median(a))
    i = int(1 + n * 0.15) - 1
    j = int(1 + n * 0.85) - 1
    lo_edge, hi_edge = a[i], a[j]
    if lo_edge == hi_edge:
        return float(lo_edge)
    step = 0.01 * (hi_edge - lo_edge)
    width = 0.1 * (hi_edge - lo_edge)
    start = lo_edge - step
    k = i
    best = 0
    mode = a[i]
    while True:
        start += step
        stop = start + width
        while i < j and a[i] < start:
            i += 1
        while k < j and a[k] < stop:
            k += 1
        if k - i > best:
            best = k - i
            mode = a[(i + k) // 2]
        if k >= j:
            break
    return float(mode)


def _sample_levels(sample: np.ndarray, stats: tuple[str, ...], config: CombineConfig, label: str) -> tuple[float, ...]:
    """The statistics ``stats`` (median exact, mean, IRAF's mode) of a frame's sample."""
    s = np.asarray(sample, dtype=np.float64)
    if config.min_clip is not None or config.max_clip is not None:
        lo = -np.inf if config.min_clip is None else config.min_clip
        hi = np.inf if config.max_clip is None else config.max_clip
        s = np.where((s >= lo) & (s <= hi), s, np.nan)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ConfigError(f"{label}: no finite value to compute its {'/'.join(stats)} from")
    out = []
    for stat in stats:
        if stat == "noise":  # the frame's robust noise (weights="noise")
            out.append(float(_planes.MAD_TO_SIGMA * np.median(np.abs(s - np.median(s)))))
            continue
        out.append(float(np.median(s) if stat == "median" else np.mean(s) if stat == "mean" else iraf_mode(s)))
    return tuple(out)


def _source_levels(
    source: ImageSource,
    stats: tuple[str, ...],
    rows: slice,
    cols: slice,
    step: int,
    band: int,
    config: CombineConfig,
) -> tuple[float, ...]:
    """Statistics of a frame on its fixed sample grid inside the section, read in bands of rows."""
    r0, r1 = rows.start, rows.stop
    if source.kind == "gzip":
        sample = source.read(slice(r0, r1, step), slice(cols.start, cols.stop, step))
    else:
        parts = [
            source.read(slice(y, min(y + band, r1), step), slice(cols.start, cols.stop, step))
            for y in range(r0, r1, band)
        ]
        sample = np.concatenate(parts, axis=0)
    return _sample_levels(sample, stats, config, source.label)


def _array_levels(sample: np.ndarray, stats: tuple[str, ...], config: CombineConfig, index: int) -> tuple[float, ...]:
    return _sample_levels(sample, stats, config, f"frame {index}")


def _factors(*levels: float) -> np.ndarray:
    lv = np.asarray(levels, dtype=np.float64)
    return lv.mean() / lv


def _relative(levels: np.ndarray, normalize: str) -> float:
    """The reference level: the mean of the stack's levels or the first frame's."""
    return float(levels[0] if normalize == "first" else levels.mean())


def _scale_from_levels(levels: np.ndarray, normalize: str, what: str, labels: Sequence[str]) -> np.ndarray:
    for label, v in zip(labels, levels, strict=True):
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{label}: its {what} is {v}; scale={what!r} needs a positive level")
    return _relative(levels, normalize) / levels


def _resolve_levels(
    scale_kind: str | None,
    zero_kind: str | None,
    stats: tuple[str, ...],
    normalize: str,
    const_scale: np.ndarray | None,
    const_zero: np.ndarray | None,
    zero_keys: np.ndarray | None,
    labels: Sequence[str],
    *levels: tuple[float, ...],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-frame ``(scale, zero)`` from the frames' statistics, header levels and constants.

    A zero statistic ``l_i`` becomes ``z_i = Z - f_i l_i`` with ``Z`` the mean (or,
    ``normalize="first"``, the first) of the ``f_i l_i``; a header zero ``k_i`` is added before
    the scale, as IRAF does: ``z_i = f_i k_i``.
    """
    table = np.asarray(levels, dtype=np.float64).reshape(len(labels), len(stats))
    scale = const_scale
    if scale_kind in stats:
        scale = _scale_from_levels(table[:, stats.index(scale_kind)], normalize, str(scale_kind), labels)
    zero = const_zero
    unit = 1.0 if scale is None else scale
    if zero_kind in stats:
        lv = table[:, stats.index(zero_kind)] * unit
        zero = _relative(lv, normalize) - lv
    elif zero_keys is not None:
        zero = zero_keys * unit  # IRAF adds a header zero before scaling, as it is
    return scale, zero


def scale_sample_step(shape: tuple[int, int]) -> int:
    """Stride of the fixed sample grid ``frame[::step, ::step]`` used for median/mean scales.

    >>> scale_sample_step((4096, 2048))
    6
    """
    return sample_step(shape)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def _is_path(x: object) -> TypeGuard[str | os.PathLike[str]]:
    return isinstance(x, str | os.PathLike)


class _Inputs:
    """Normalised frames: either image sources (files) or one dask stack (N, ny, nx)."""

    def __init__(self, frames: Frames, hdu: HduKey) -> None:
        self.sources: list[ImageSource] | None = None
        self.stack: da.Array | None = None
        self.names: list[str] = []
        if _is_path(frames):
            raise ConfigError(
                "frames must be a sequence of files or arrays, not one path "
                f"({frames!s}); pass [path] to combine a single file"
            )
        if isinstance(frames, np.ndarray | da.Array):
            if frames.ndim != 3:
                raise ShapeMismatchError(f"frames must be a 3-D array (N, y, x), got shape {frames.shape}")
            self.stack = da.asarray(frames)
            self.names = [f"frame {i}" for i in range(frames.shape[0])]
        else:
            items = list(frames)
            if not items:
                raise ConfigError("combine needs at least one frame")
            paths = [x for x in items if _is_path(x)]
            if len(paths) == len(items):
                from ..io import image_source

                self.sources = [image_source(p, hdu) for p in paths]
                first = self.sources[0]
                for src in self.sources[1:]:
                    if src.shape != first.shape:
                        raise ShapeMismatchError(
                            f"{src.label}: frame shape (ny, nx) = {src.shape} differs from "
                            f"{first.shape} of the first frame {first.label}"
                        )
                self.names = [os.path.basename(src.path) for src in self.sources]
            elif paths:
                raise ConfigError("frames mix file paths and arrays; pass one kind")
            else:
                arrays: list[np.ndarray | da.Array] = []
                for i, x in enumerate(items):
                    a = x if isinstance(x, da.Array) else np.asarray(x)
                    if a.ndim != 2:
                        raise ShapeMismatchError(f"frame {i} must be 2-D, got shape {a.shape}")
                    if arrays and a.shape != arrays[0].shape:
                        raise ShapeMismatchError(f"frame {i} has shape {a.shape}, frame 0 has {arrays[0].shape}")
                    arrays.append(a)
                self.stack = da.stack([da.asarray(a) for a in arrays])
                self.names = [f"frame {i}" for i in range(len(arrays))]
        if self.stack is not None and self.stack.dtype != np.float32:
            self.stack = self.stack.astype(np.float32)

    # Either ``sources`` (files) or ``stack`` (arrays) is set from the start.
    @property
    def n(self) -> int:
        if self.sources is not None:
            return len(self.sources)
        assert self.stack is not None
        return self.stack.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        if self.sources is not None:
            ny, nx = self.sources[0].shape
        else:
            assert self.stack is not None
            ny, nx = self.stack.shape[1:]
        return ny, nx

    @property
    def readable_by_region(self) -> bool:
        return self.sources is not None and all(s.kind in ("plain", "fpack") for s in self.sources)

    def as_stack(self, tile: tuple[int, int]) -> da.Array:
        """The frames as one dask array ``(N, ny, nx)`` chunked ``(N, ty, tx)``."""
        n = self.n
        if self.stack is None:
            assert self.sources is not None
            # chunks aligned with the tiles: the rechunk only concatenates along N
            self.stack = da.stack([s.to_dask(chunks=tile) for s in self.sources])
        return self.stack.rechunk((n, *tile))

    @property
    def labels(self) -> list[str]:
        """How errors name each frame: ``path[hdu]`` for files, ``frame i`` for arrays."""
        if self.sources is not None:
            return [src.label for src in self.sources]
        return list(self.names)

    def header_values(self, key: str, option: str) -> np.ndarray:
        """The number under header keyword ``key`` in each file (``option``: what needs it)."""
        if self.sources is None:
            raise ConfigError(f"{option}='!{key}' reads a header keyword; with array frames give numbers")
        from ..io import scan_file

        out = np.empty(self.n)
        for i, src in enumerate(self.sources):
            info = next(h for h in scan_file(src.path) if h.index == src.hdu)
            raw = info.header.get(key)
            if raw is None:
                raise ConfigError(f"{src.label}: no {key} in the header; {option}='!{key}' needs it")
            try:
                out[i] = float(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{src.label}: {key} = {raw!r} is not a number") from exc
            if not math.isfinite(out[i]):
                raise ConfigError(f"{src.label}: {key} = {raw!r} is not finite")
        return out

    def exptimes(self, exptime: ArrayLike | None) -> np.ndarray:
        if exptime is not None:
            t = np.asarray(exptime, dtype=np.float64).reshape(-1)
            if t.shape[0] != self.n:
                raise ConfigError(f"exptime has {t.shape[0]} values for {self.n} frames")
            labels = self.names
        elif self.sources is not None:
            from ..io import scan_file

            t = np.empty(self.n)
            labels = []
            for i, src in enumerate(self.sources):
                info = next(h for h in scan_file(src.path) if h.index == src.hdu)
                labels.append(src.label)
                value = info.header.get("EXPTIME", info.header.get("EXPOSURE"))
                if value is None:
                    raise ConfigError(f"{src.label}: no EXPTIME in the header; scale='exposure' needs it")
                try:
                    t[i] = float(value)
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"{src.label}: EXPTIME = {value!r} is not a number") from exc
        else:
            raise ConfigError("scale='exposure' with array frames needs exptime=[...]")
        for label, v in zip(labels, t, strict=True):
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{label}: exposure time {v} s; scale='exposure' needs > 0")
        return t


# ---------------------------------------------------------------------------------------------
# the public function
# ---------------------------------------------------------------------------------------------
def combine(
    frames: Frames,
    *,
    method: Method = "mean",
    clip: Clip = "sigma",
    sigma_lower: float = 3.0,
    sigma_upper: float = 3.0,
    maxiters: int | None = 5,
    center: Center = "median",
    spread: Spread = "mad_std",
    nlow: int = 1,
    nhigh: int = 1,
    min_clip: float | None = None,
    max_clip: float | None = None,
    nkeep: int = 1,
    mclip: bool = True,
    scale: ScaleMode | str | ArrayLike | None = None,
    weights: str | ArrayLike | None = None,
    hdu: HduKey = None,
    memory_per_task: int | float | str | None = None,
    variance: bool | str | VariancePlanes | None = None,
    zero: str | ArrayLike | None = None,
    exptime: ArrayLike | None = None,
    name: str | None = None,
    rdnoise: float | str = 0.0,
    gain: float | str = 1.0,
    snoise: float | str = 0.0,
    pclip: float = -0.5,
    gesd_fraction: float = 0.3,
    gesd_alpha: float = 0.05,
    grow: float = 0.0,
    statsec: str | None = None,
    normalize: Normalize = "mean",
    dq: str | DqPlanes | None = None,
    dq_bad: int | str = DEFAULT_DQ_BAD,
    nrej_plane: bool = False,
    rejmask_cube: bool = False,
    sigma_plane: bool = False,
) -> CombineResult:
    """Clip and combine frames along the frame axis, lazily.

    Parameters
    ----------
    frames : array (N, y, x), sequence of 2-D arrays, or sequence of FITS paths
        numpy or dask arrays (any dtype, used as float32) or files read lazily with
        :mod:`ccdask.io` (``hdu`` selects the image HDU of each file). NaN and ±inf are ignored.
    method : {"mean", "median", "sum"}
        Statistic of the survivors (``sum`` as ccdproc: the sum of survivors, not rescaled).
    clip : {"sigma", "sigclip", "avsigclip", "ccdclip", "crreject", "pclip", "minmax", "extrema", \
"winsorized", "linearfit", "gesd", "none"}
        Rejection (see :mod:`ccdask.combine._kernels` for the exact semantics). ``sigclip``,
        ``avsigclip``, ``ccdclip``, ``crreject`` and ``pclip`` are IRAF imcombine's ``reject=`` kinds
        (``avsigclip`` estimates its sigma factor per image row, so tiles hold whole rows even
        above ``memory_per_task``)
        (``sigma_lower``/``sigma_upper`` are its ``lsigma``/``hsigma``; ``mclip``, ``nkeep``).
        ``winsorized``, ``linearfit`` and ``gesd`` are Siril's (:mod:`ccdask.combine._siril`).
    sigma_lower, sigma_upper, maxiters, center, spread
        Sigma clipping as ``astropy.stats.sigma_clip(axis=0, ...)``; ``maxiters=None`` iterates
        until nothing changes.
    nlow, nhigh : int
        Extrema clipping: lowest/highest values rejected per pixel.
    min_clip, max_clip : float, optional
        Absolute thresholds on the input values (before scaling), with any clip mode;
        ``clip="minmax"`` needs at least one.
    nkeep : int
        Minimum survivors kept by sigma clipping (``0``: astropy exactly); with ``sigclip`` as
        IRAF, negative: the most values that may be rejected.
    mclip : bool
        ``sigclip``: median (True) or mean (False) center, as IRAF's ``mclip``.
    scale : None, array (N,), or {"median", "mean", "exposure"}
        Multiplicative factor per frame. ``median``/``mean``: ``f_i = mean_j(m_j) / m_i`` with
        ``m_i`` the statistic of frame ``i`` on the fixed grid ``frame[::s, ::s]`` (``s`` from
        :func:`scale_sample_step`, at most 2**18 pixels; finite values inside the thresholds),
        computed in its own lazy pass, exact and chunk independent. ``exposure``:
        ``f_i = mean(t) / t_i`` from ``EXPTIME`` (files) or ``exptime=``.
    weights : array (N,), "exposure", "!KEYWORD" or "ivar", optional
        Weights of the mean (or sum); ``"ivar"``: per pixel ``1/var`` from the variance planes
        (mean only, see :mod:`ccdask.combine._planes`).
    hdu : int, str or (str, int), optional
        Image HDU of each file (default: the only one).
    memory_per_task : int or str, optional
        Per-task memory budget in bytes or as ``"64 MiB"`` (default 64 MiB); sets the tile shape.
    variance : None, True/"scatter", an EXTNAME, files, or array like ``frames``
        None: no variance. ``"scatter"``: the variance of the result from the survivors'
        scatter. Variance planes ``(N, y, x)`` (arrays, one file per frame, or an EXTNAME such
        as ``"VAR"``: that extension of each frame's file, with the frame HDU's ``EXTVER``):
        propagated over the survivors (``sum(w² s² var)/sum(w)²`` for the mean, see
        :mod:`ccdask.combine._kernels`); ``clip="varclip"`` needs them.
    zero : array (N,), optional
        Additive offset per frame, applied after the scale: ``value * scale + zero``.
    exptime : array (N,), optional
        Exposure times for ``scale="exposure"`` with array frames.
    name : str, optional
        Readable part of the task keys: ``combine-<name>-<token>`` (e.g. ``"bias-CCD1"``).
    rdnoise, gain, snoise : float or str
        ``ccdclip``/``crreject`` noise model: read noise (electrons), gain (electrons per data
        unit), sensitivity noise (fraction); a number, or the header keyword holding it in every
        file (the frames must agree on it).
    pclip : float
        ``pclip``: the percentile pixel (IRAF's ``pclip``, see :func:`pclip_offset`).
    gesd_fraction, gesd_alpha : float
        ``clip="gesd"``: the most outliers tested (a fraction of the frames) and the significance,
        as Siril's ``rej g`` parameters.
    grow : float
        Radius in pixels: the neighbours (same frame, ``dy² + dx² <= grow²``) of each rejected
        value are rejected too (IRAF's ``grow``); tiles are computed with a halo of
        ``ceil(grow)`` pixels, so results do not depend on the tiling.

    dq : None, an EXTNAME, files, or array like ``frames``
        Per-frame DQ planes or masks (integers; booleans: True is bad), e.g. ``"DQ"`` for
        ccdask-reduced files; values with ``dq & dq_bad`` set are left out (saturated ones are
        kept where nothing else is, see :mod:`ccdask.combine._planes`); the result has a ``dq`` plane.
    dq_bad : int or str
        The bits of ``dq`` that make a value bad (default :data:`DEFAULT_DQ_BAD`).
    nrej_plane, rejmask_cube, sigma_plane : bool
        Also compute the number of rejected values per pixel, the per-frame rejection masks
        ``(N, y, x)`` and the survivors' standard deviation (see :mod:`ccdask.combine._planes`).

    Returns
    -------
    CombineResult
        Lazy ``data`` (float32), ``count`` (int16), ``variance`` (float32 or None) and the
        optional ``dq``, ``nrej``, ``rejmask``, ``sigma``.

    Examples
    --------
    >>> import numpy as np
    >>> stack = np.ones((5, 4, 6), np.float32); stack[2, 1, 1] = 1e4
    >>> res = combine(stack).compute()
    >>> float(res.data[1, 1]), int(res.count[1, 1]), res.ncombine
    (1.0, 4, 5)
    """
    scale_cfg = scale if isinstance(scale, str) or scale is None else _flat_floats(scale)
    config = CombineConfig(
        method=method,
        clip=clip,
        sigma_lower=sigma_lower,
        sigma_upper=sigma_upper,
        maxiters=maxiters,
        center=center,
        spread=spread,
        nlow=nlow,
        nhigh=nhigh,
        min_clip=min_clip,
        max_clip=max_clip,
        nkeep=nkeep,
        mclip=mclip,
        rdnoise=rdnoise,
        gain=gain,
        snoise=snoise,
        pclip=pclip,
        gesd_fraction=gesd_fraction,
        gesd_alpha=gesd_alpha,
        grow=grow,
        statsec=statsec,
        normalize=normalize,
        # a string is checked (a ScaleMode choice or "!KEYWORD") by CombineConfig itself
        scale=scale_cfg,
        zero=zero if zero is None or isinstance(zero, str) else _flat_floats(zero),
        weights=weights if weights is None or isinstance(weights, str) else _flat_floats(weights),
        memory_per_task=parse_memory(memory_per_task),
        dq_bad=typing.cast(int, dq_bad),  # a string is parsed by CombineConfig
        nrej_plane=nrej_plane,
        rejmask_cube=rejmask_cube,
        sigma_plane=sigma_plane,
    )
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"name must be a non-empty string, not {name!r}")
    inputs = _Inputs(frames, hdu)
    n = inputs.n
    config.check_frames(n)

    var_stack = None
    want_var = False
    var_sources = dq_sources = None
    dq_stack: da.Array | None = None
    if dq is not None:
        dq_sources = plane_sources(inputs.sources, dq, "dq", inputs.shape)
        if dq_sources is None:
            dq_stack = _planes.array_planes(dq, (n, *inputs.shape), "DQ planes")
            if not (dq_stack.dtype == np.bool_ or dq_stack.dtype.kind in "iu"):
                raise ConfigError(f"DQ planes or masks must be integers or booleans, not {dq_stack.dtype}")
    scatter = variance is True or (isinstance(variance, str) and variance == "scatter")
    if not scatter:
        var_sources = plane_sources(inputs.sources, variance, "variance", inputs.shape)
    if scatter or var_sources is not None:
        want_var = True
    elif variance is not None and variance is not False:
        want_var = True
        var_stack = _planes.array_planes(variance, (n, *inputs.shape), "variance planes").astype(np.float32)
    has_var = var_stack is not None or var_sources is not None

    prefix = f"combine-{name}" if name else "combine"
    token = tokenize(
        [s.token for s in inputs.sources] if inputs.sources is not None else inputs.stack,
        var_stack,
        None if var_sources is None else [s.token for s in var_sources],
        None if dq_sources is None else [s.token for s in dq_sources],
        dq_stack,
        config.to_dict(),
        want_var,
        hdu,
        exptime,
    )

    kconfig = _resolve_noise(config, inputs)

    # ---- scale, zero, weights: constants, from headers, or a lazy statistics pass
    layers: dict[str, dict[Any, Any]] = {}
    layer_deps: dict[str, set[str]] = {}
    collections: list[da.Array] = []
    labels = inputs.labels
    sc, zc, wc = config.scale, config.zero, config.weights
    const_scale: np.ndarray | None = None
    if isinstance(sc, tuple):
        const_scale = np.asarray(sc)
    elif sc == "exposure":
        const_scale = _scale_from_levels(inputs.exptimes(exptime), config.normalize, "exposure", labels)
    elif isinstance(sc, str) and sc.startswith("!"):
        # IRAF: the header value is the factor itself (relative to the first frame's)
        keys = inputs.header_values(sc[1:], "scale")
        const_scale = 1.0 / _scale_from_levels(keys, config.normalize, sc, labels)
    const_zero: np.ndarray | None = np.asarray(zc) if isinstance(zc, tuple) else None
    zero_keys = inputs.header_values(zc[1:], "zero") if isinstance(zc, str) and zc.startswith("!") else None
    weights_used: np.ndarray | None = None
    if isinstance(wc, tuple):
        weights_used = np.asarray(wc)
    elif wc == "exposure":
        weights_used = inputs.exptimes(exptime)
    elif wc == "noise":  # 1 / sigma² of each frame, from the statistics pass below
        pass
    elif wc == "ivar":  # per pixel, from the variance planes (ccdask.combine._planes)
        if not has_var:
            raise ConfigError("weights='ivar' needs input variance planes (variance=)")
    elif isinstance(wc, str):
        weights_used = inputs.header_values(wc[1:], "weights")
    if weights_used is not None and not (np.all(weights_used >= 0) and np.any(weights_used > 0)):
        raise ConfigError(f"weights {weights_used.tolist()} must be >= 0 with at least one > 0")
    stats = tuple(k for k in ("median", "mean", "mode") if k in (sc, zc)) + (("noise",) if wc == "noise" else ())
    kconfig = kconfig.replace(
        scale=None,
        zero=None,
        weights="ivar" if wc == "ivar" else None if weights_used is None else tuple(weights_used.tolist()),
    )
    scale_arg: Any = const_scale
    zero_arg: Any = None
    weights_arg: Any = None
    levels_name = None
    if stats:
        levels_name = _levels_graph(
            inputs, config, stats, const_scale, const_zero, zero_keys, prefix, token, layers, layer_deps, collections
        )
        scale_arg = (operator.getitem, (levels_name, 0), 0)
        zero_arg = (operator.getitem, (levels_name, 0), 1)
        if wc == "noise":
            weights_arg = _planes.noise_weights_layer(f"{prefix}-levels-{token}", stats, labels, layers, layer_deps)
    else:
        const_scale, const_zero = _resolve_levels(
            None, None, (), config.normalize, const_scale, const_zero, zero_keys, labels
        )
        scale_arg, zero_arg = const_scale, const_zero
    factors_name = levels_name

    planes = (
        var_sources is not None
        or dq_sources is not None
        or dq_stack is not None
        or config.nrej_plane
        or config.rejmask_cube
        or config.sigma_plane
        or config.weights in ("ivar", "noise")
    )
    use_files = inputs.readable_by_region and var_stack is None and dq_stack is None
    for extra in (var_sources, dq_sources):
        use_files = use_files and (extra is None or all(s.kind in ("plain", "fpack") for s in extra))
    # Siril's kinds hold a second copy of the block (its values with the rejected ones as NaN)
    # unless they reject and combine in one pass (mean or sum, no variance, no planes); the
    # planes path also holds per frame the DQ values (<= 4 bytes), the masked copy and masks
    siril_two_pass = config.clip in SIRIL_CLIPS and (config.method == "median" or want_var or planes)
    twice = not use_files or siril_two_pass
    tile = tile_shape(
        n,
        inputs.shape,
        config.memory_per_task,
        variance=has_var,
        stacked=twice,
        extra_per_frame=11 if planes else 0,
    )
    if config.clip == "avsigclip" and tile[1] < inputs.shape[1]:
        tile = (1, inputs.shape[1])  # IRAF estimates avsigclip's sigma factor per image row: whole rows
    ny, nx = inputs.shape
    # grow: each tile is computed with a halo of ceil(grow) pixels (rejections of the neighbours)
    halo = math.ceil(config.grow)
    if halo:
        tile = (max(tile[0], min(halo, ny)), tile[1] if tile[1] == nx else max(tile[1], min(halo, nx)))
    ys, xs = _starts(ny, tile[0]), _starts(nx, tile[1])
    tiles_name = f"{prefix}-{token}"
    tasks: dict[Any, Any] = {}
    tdeps: set[str] = {factors_name} if factors_name else set()
    if planes and use_files:
        for i, (y0, y1) in enumerate(ys):
            for j, (x0, x1) in enumerate(xs):
                tasks[(tiles_name, i, j)] = (
                    _planes.tile_from_sources,
                    inputs.sources,
                    var_sources,
                    dq_sources,
                    slice(y0, y1),
                    slice(x0, x1),
                    scale_arg,
                    kconfig,
                    want_var,
                    halo,
                    zero_arg,
                    weights_arg,
                )
    elif use_files:
        sources = inputs.sources
        for i, (y0, y1) in enumerate(ys):
            for j, (x0, x1) in enumerate(xs):
                tasks[(tiles_name, i, j)] = (
                    _tile_from_sources,
                    sources,
                    slice(y0, y1),
                    slice(x0, x1),
                    scale_arg,
                    kconfig,
                    want_var,
                    halo,
                    zero_arg,
                )
    else:
        stack = inputs.as_stack(tile)
        if var_sources is not None:
            var_stack = _planes.stack_of(var_sources, tile, integers=False)
        if dq_sources is not None:
            dq_stack = _planes.stack_of(dq_sources, tile, integers=True)
        if var_stack is not None:
            var_stack = var_stack.rechunk(stack.chunks)
        if dq_stack is not None:
            dq_stack = dq_stack.rechunk(stack.chunks)
        if halo:
            depth = {0: 0, 1: halo, 2: halo}
            stack = da.overlap.overlap(stack, depth=depth, boundary="none")
            if var_stack is not None:
                var_stack = da.overlap.overlap(var_stack, depth=depth, boundary="none")
            if dq_stack is not None:
                dq_stack = da.overlap.overlap(dq_stack, depth=depth, boundary="none")
        collections.append(stack)
        tdeps.add(stack.name)
        for extra_stack in (var_stack, dq_stack):
            if extra_stack is not None:
                collections.append(extra_stack)
                tdeps.add(extra_stack.name)
        for i, (y0, y1) in enumerate(ys):
            for j, (x0, x1) in enumerate(xs):
                vkey = (var_stack.name, 0, i, j) if var_stack is not None else None
                crop = (halo if i else 0, halo if j else 0, y1 - y0, x1 - x0) if halo else None
                if planes:
                    tasks[(tiles_name, i, j)] = (
                        _planes.tile_from_block,
                        (stack.name, 0, i, j),
                        vkey,
                        (dq_stack.name, 0, i, j) if dq_stack is not None else None,
                        scale_arg,
                        kconfig,
                        want_var,
                        crop,
                        zero_arg,
                        weights_arg,
                    )
                    continue
                tasks[(tiles_name, i, j)] = (
                    _tile_from_block,
                    (stack.name, 0, i, j),
                    vkey,
                    scale_arg,
                    kconfig,
                    want_var,
                    crop,
                    zero_arg,
                )
    layers[tiles_name] = tasks
    layer_deps[tiles_name] = tdeps
    chunks = (tuple(b - a for a, b in ys), tuple(b - a for a, b in xs))
    suffixes = ["data", "count", "variance"][: 3 if want_var else 2]
    if planes:
        wanted = (dq is not None, config.nrej_plane, config.sigma_plane, config.rejmask_cube)
        suffixes += [name for name, on in zip(("dq", "nrej", "sigma", "rejmask"), wanted, strict=True) if on]
    for suffix in suffixes:
        index = _OUTPUT_INDEX[suffix]
        out_name = f"{prefix}-{suffix}-{token}"
        lead = (0,) if suffix == "rejmask" else ()
        layers[out_name] = {
            (out_name, *lead, i, j): (operator.getitem, (tiles_name, i, j), index)
            for i in range(len(ys))
            for j in range(len(xs))
        }
        layer_deps[out_name] = {tiles_name}
    hlg = _graph(layers, layer_deps, collections)

    def output(suffix: str, meta: np.ndarray) -> da.Array:
        out_name = f"{prefix}-{suffix}-{token}"
        return da.Array(hlg, out_name, chunks=chunks, dtype=meta.dtype, meta=meta)

    data = output("data", _META2)
    count = output("count", _META_COUNT)
    var_out = output("variance", _META2) if want_var else None
    extras: dict[str, da.Array | None] = {}
    for suffix, meta in (("dq", _META_DQ), ("nrej", _META_COUNT), ("sigma", _META2)):
        extras[suffix] = output(suffix, meta) if suffix in suffixes else None
    rejmask_out = None
    if "rejmask" in suffixes:
        rname = f"{prefix}-rejmask-{token}"
        rejmask_out = da.Array(hlg, rname, chunks=((n,), *chunks), dtype=np.uint8, meta=np.empty((0, 0, 0), np.uint8))

    def per_frame(index: int, present: bool, const: Any) -> Any:
        if levels_name is None:
            return None if const is None else np.asarray(const)
        if not present:
            return None
        return da.Array(
            hlg, f"{levels_name}-{index}", chunks=((n,),), dtype=np.float64, meta=np.empty((0,), np.float64)
        )

    factors = per_frame(0, sc is not None, scale_arg)
    zeros = per_frame(1, zc is not None, zero_arg)
    if weights_arg is not None:  # weights="noise": lazy, from the statistics pass
        weights_used = da.Array(hlg, weights_arg[0], chunks=((n,),), dtype=np.float64, meta=np.empty((0,), np.float64))
    return CombineResult(
        data=data,
        count=count,
        variance=var_out,
        ncombine=n,
        config=config,
        inputs=tuple(inputs.names),
        name=name,
        scale_factors=factors,
        variance_source=("planes" if has_var else "scatter" if want_var else None),
        zero_offsets=zeros,
        frame_weights=weights_used,
        dq=extras["dq"],
        nrej=extras["nrej"],
        sigma=extras["sigma"],
        rejmask=rejmask_out,
    )


def _resolve_noise(config: CombineConfig, inputs: _Inputs) -> CombineConfig:
    """The config with ``rdnoise``/``gain``/``snoise`` header keywords replaced by their values."""
    names = [n for n in ("rdnoise", "gain", "snoise") if isinstance(getattr(config, n), str)]
    if not names or config.clip not in ("ccdclip", "crreject"):
        return config
    if inputs.sources is None:
        raise ConfigError(f"{', '.join(names)} name header keywords; with array frames give numbers")
    from ..io import scan_file

    values: dict[str, Any] = {}
    for name in names:
        key = getattr(config, name)
        found: list[tuple[str, float]] = []
        for src in inputs.sources:
            info = next(h for h in scan_file(src.path) if h.index == src.hdu)
            raw = info.header.get(key)
            if raw is None:
                raise ConfigError(f"{src.label}: no {key} in the header; {name}={key!r} needs it")
            try:
                found.append((src.label, float(raw)))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{src.label}: {key} = {raw!r} is not a number") from exc
        first_label, first = found[0]
        for label, v in found[1:]:
            if v != first:
                raise ConfigError(
                    f"{label}: {key} = {v} differs from {first} in {first_label}; per-frame noise "
                    "parameters are not supported, combine frames that share them"
                )
        values[name] = first
    return config.replace(**values)


def _graph(
    layers: dict[str, dict[Any, Any]], layer_deps: dict[str, set[str]], collections: list[da.Array]
) -> HighLevelGraph:
    """A HighLevelGraph of our layers on top of the input collections' graphs."""
    all_layers: dict[str, Any] = dict(layers)
    all_deps = {k: set(layer_deps.get(k, ())) for k in layers}
    for coll in collections:
        g = coll.__dask_graph__()
        if not isinstance(g, HighLevelGraph):
            g = HighLevelGraph.from_collections(coll.name, g)
        for lname, lay in g.layers.items():
            all_layers.setdefault(lname, lay)
            all_deps.setdefault(lname, set(g.dependencies.get(lname, set())))
    return HighLevelGraph(all_layers, all_deps)


def _levels_graph(
    inputs: _Inputs,
    config: CombineConfig,
    stats: tuple[str, ...],
    const_scale: np.ndarray | None,
    const_zero: np.ndarray | None,
    zero_keys: np.ndarray | None,
    prefix: str,
    token: str,
    layers: dict[str, dict[Any, Any]],
    layer_deps: dict[str, set[str]],
    collections: list[da.Array],
) -> str:
    """Add the layers computing each frame's statistics and the per-frame ``(scale, zero)``.

    The statistics are taken on the fixed grid ``section[::s, ::s]`` of the ``statsec`` section
    (``s`` from :func:`scale_sample_step` of the section's shape). The result's key
    ``(name, 0)`` holds ``(scale, zero)``; ``(name-0, 0)`` and ``(name-1, 0)`` hold each alone.
    """
    ny, nx = inputs.shape
    rows, cols = (slice(0, ny), slice(0, nx))
    if config.statsec is not None:
        rows, cols = parse_statsec(config.statsec)
        if rows.stop > ny or cols.stop > nx:
            raise ConfigError(f"statsec {config.statsec} lies outside the frames ({nx} x {ny} pixels, x by y)")
    step = scale_sample_step((rows.stop - rows.start, cols.stop - cols.start))
    stat_name = f"{prefix}-levels-{token}"
    name = f"{prefix}-scale-{token}"
    tasks: dict[Any, Any] = {}
    if inputs.readable_by_region:
        assert inputs.sources is not None  # readable by region: files
        band = max(step, (config.memory_per_task // (16 * nx)) // step * step)
        for i, src in enumerate(inputs.sources):
            tasks[(stat_name, i)] = (_source_levels, src, stats, rows, cols, step, band, config)
        layer_deps[stat_name] = set()
    else:
        if inputs.stack is None:
            assert inputs.sources is not None
            inputs.stack = da.stack([s.to_dask() for s in inputs.sources])
        sample = inputs.stack[:, rows, cols][:, ::step, ::step].rechunk((1, -1, -1))
        collections.append(sample)
        for i in range(inputs.n):
            tasks[(stat_name, i)] = (_array_levels, (operator.getitem, (sample.name, i, 0, 0), 0), stats, config, i)
        layer_deps[stat_name] = {sample.name}
    layers[stat_name] = tasks
    scale_kind = config.scale if config.scale in stats else None
    zero_kind = config.zero if config.zero in stats else None
    layers[name] = {
        (name, 0): (
            _resolve_levels,
            scale_kind,
            zero_kind,
            stats,
            config.normalize,
            const_scale,
            const_zero,
            zero_keys,
            inputs.labels,
            *[(stat_name, i) for i in range(inputs.n)],
        )
    }
    layer_deps[name] = {stat_name}
    for index in (0, 1):
        layers[f"{name}-{index}"] = {(f"{name}-{index}", 0): (operator.getitem, (name, 0), index)}
        layer_deps[f"{name}-{index}"] = {name}
    return name
