"""Per-frame planes beside the values: DQ masks and variance in, DQ/rejection/sigma planes out.

Inputs
------
* **DQ planes or masks** (``combine(..., dq=...)``): integers per value; a value is bad where
  ``dq & dq_bad != 0`` (IRAF's ``masktype=badbits``, ``maskvalue=dq_bad``), a boolean mask is
  ``True`` = bad pixel (bit 1). Bad values are set aside before the rejection, as non-finite
  values are. **Saturation** (bit 2 :data:`ccdask.dq.SATURATED`, when ``dq_bad`` holds it): at a
  pixel where no value is usable (finite and not bad) but some are bad only for being saturated,
  those saturated values are combined (a saturated star stays saturated in the master, not a
  hole), and the output DQ there has the saturated bit.
* **Frame noise weights** (``weights="noise"``): ``w_i = 1 / sigma_i²`` with ``sigma_i`` the
  robust noise of frame ``i``, ``1.4826 · median(|x - median(x)|)`` over the finite values inside
  the thresholds of the fixed sample grid of ``statsec`` (the grid of the scale statistics),
  computed in the same lazy pass as the scale statistics; nothing is read to build the graph.
* **Variance planes** (``variance=``): arrays, files, or the ``VAR`` extension beside each frame
  of ccdask-reduced files. They are propagated in quadrature over the survivors (see
  :mod:`ccdask.combine._kernels`), ``clip="varclip"`` rejects against them and
  ``weights="ivar"`` weights each value by ``1/var`` (scaled by ``scale²``): after the
  (unweighted) rejection the mean is ``sum(x/v)/sum(1/v)`` and its variance ``1/sum(1/v)`` over
  the survivors; a value without a variance ``> 0`` is left out.

Reduced frames (SCI/VAR/DQ extensions, ``EXTVER`` the chip number) are combined with
``hdu=("SCI", chip), variance="VAR", dq="DQ"``: a string names the extension of the same file
with the frame HDU's ``EXTVER``.

Outputs (one tile task computes them all with the data)
--------------------------------------------------------
* ``dq`` (uint16, with DQ inputs): :data:`~ccdask.dq.NODATA` where nothing survived,
  :data:`~ccdask.dq.SATURATED` where saturated values were combined;
* ``nrej`` (int16, ``nrej_plane``): values that took part (finite, not bad; with ``varclip`` also
  a finite variance ``>= 0``) and were rejected by the rejection, the thresholds or ``grow``.
  IRAF's ``nrejmasks`` also counts the masked values: it is ``nrej + masked``;
* ``rejmask`` (uint8 ``(N, ny, nx)``, ``rejmask_cube``): 1 where a frame's value was not used
  (IRAF's ``rejmask``), one cube chunked like the stack;
* ``sigma`` (float32, ``sigma_plane``): ``sqrt(sum w (x - c)² / sum w · n / (n - 1))`` over
  the ``n`` survivors ``x`` (scaled) about the combined value ``c``, ``w`` the weights (1 without,
  ``1/var`` per value with ``weights="ivar"``);
  ``n = 1`` gives 0, ``n = 0`` NaN (IRAF's ``sigma`` image, IRAF writes ``blank`` there).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..dq import BAD, NODATA, SATURATED
from ..errors import ConfigError, FitsReadError, ShapeMismatchError
from ._config import CombineConfig
from ._kernels import _jit, combine_block

if TYPE_CHECKING:
    import dask.array as da

    from ..io import ImageSource

#: 1.4826 × MAD is the sigma of a normal distribution (the constant of astropy's mad_std).
MAD_TO_SIGMA = 1.482602218505602

__all__ = ["PlanesResult", "array_planes", "combine_planes", "plane_sources", "read_bits", "stack_of"]


class PlanesResult(NamedTuple):
    """Outputs of :func:`combine_planes` for one ``(N, ty, tx)`` block (None: not asked for)."""

    data: np.ndarray
    count: np.ndarray  # type: ignore[assignment]  # the public name shadows tuple.count
    variance: np.ndarray | None
    dq: np.ndarray | None
    nrej: np.ndarray | None
    sigma: np.ndarray | None
    rejmask: np.ndarray | None


def _bits(dq: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """DQ values as integers, contiguous (a boolean mask is the bad-pixel bit, 1)."""
    arr = np.ascontiguousarray(dq)
    if arr.shape != shape:
        raise ShapeMismatchError(f"DQ planes {arr.shape} do not match the block {shape}")
    if arr.dtype == np.bool_:
        return arr.view(np.uint8) * np.uint8(BAD)
    if arr.dtype.kind in "iu":
        return arr
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not (np.all(finite) and np.all(arr == np.round(arr))):
            raise ConfigError("DQ planes or masks must hold integers (bit masks)")
        return arr.astype(np.int64)
    raise ConfigError(f"DQ planes or masks must be integers or booleans, not {arr.dtype}")


def combine_planes(
    block: ArrayLike,
    config: CombineConfig,
    *,
    scale: ArrayLike | None = None,
    zero: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    variance: ArrayLike | None = None,
    dq: ArrayLike | None = None,
    return_variance: bool = False,
    noise: tuple[float, float, float] | None = None,
) -> PlanesResult:
    """:func:`~ccdask.combine.combine_block` with DQ planes in and the optional planes out.

    Examples
    --------
    >>> import numpy as np
    >>> from ccdask.combine import CombineConfig
    >>> stack = np.full((4, 1, 2), 10.0, np.float32); stack[0, 0, 0] = 99.0
    >>> dq = np.zeros((4, 1, 2), np.uint16); dq[0, 0, 0] = 1          # frame 0 is bad there
    >>> dq[:, 0, 1] = 2; stack[:, 0, 1] = 65000.0                        # saturated everywhere
    >>> res = combine_planes(stack, CombineConfig(clip="none", nrej_plane=True), dq=dq)
    >>> res.data.tolist(), res.count.tolist(), res.dq.tolist(), res.nrej.tolist()
    ([[10.0, 65000.0]], [[3, 4]], [[0, 2]], [[0, 0]])
    """
    data = np.ascontiguousarray(block, dtype=np.float32)
    if data.ndim != 3:
        raise ShapeMismatchError(f"a block must be (N, ty, tx), got shape {data.shape}")
    fallback = None
    if dq is not None:
        masked = np.empty_like(data)
        fallback = np.empty(data.shape[1:], np.bool_)
        _apply_dq(data, _bits(dq, data.shape), config.dq_bad, bool(config.dq_bad & SATURATED), masked, fallback)
        data = masked
    ivar = config.weights == "ivar"
    scaled_var = None
    if ivar:
        if variance is None:
            raise ConfigError("weights='ivar' needs input variance planes")
        sc = _frame_values(scale, config.scale, data.shape[0], 1.0)
        scaled_var = np.asarray(variance, dtype=np.float64) * (sc * sc)[:, None, None]
        usable = np.isfinite(scaled_var) & (scaled_var > 0)
        if not np.all(usable):
            data = np.where(usable, data, np.float32(np.nan))  # no weight without a variance > 0
    need_mask = config.nrej_plane or config.rejmask_cube or config.sigma_plane or ivar
    res = combine_block(
        data,
        config.replace(weights=None) if ivar else config,
        scale=scale,
        zero=zero,
        weights=weights,
        variance=variance,
        return_variance=return_variance,
        return_mask=need_mask,
        noise=noise,
    )
    if ivar:
        assert res.mask is not None and scaled_var is not None
        res = res._replace(**_ivar_mean(data, scaled_var, ~res.mask, res.count, config, scale, zero))
    out_dq = None
    if dq is not None:
        out_dq = np.where(res.count == 0, np.uint16(NODATA), np.uint16(0)).astype(np.uint16)
        if fallback is not None:
            out_dq[fallback & (res.count > 0)] |= np.uint16(SATURATED)
    nrej = sigma = rejmask = None
    if need_mask:
        assert res.mask is not None
        used = ~res.mask
        if config.nrej_plane:
            took_part = np.isfinite(data)
            if config.clip == "varclip" and variance is not None:
                v = np.asarray(variance)
                took_part &= np.isfinite(v) & (v >= 0)  # varclip leaves out values without a variance
            nrej = np.count_nonzero(res.mask & took_part, axis=0).astype(np.int16)
        if config.rejmask_cube:
            rejmask = res.mask.view(np.uint8)  # bool is one byte, 0 or 1
        if config.sigma_plane:
            sigma = _sigma(data, used, res.data, res.count, config, scale, zero, weights, scaled_var)
    return PlanesResult(res.data, res.count, res.variance, out_dq, nrej, sigma, rejmask)


@_jit
def _apply_dq(
    data: NDArray[np.float32],
    dq: NDArray[Any],
    bad_bits: int,
    keep_saturated: bool,
    out: NDArray[np.float32],
    fallback: NDArray[np.bool_],
) -> None:  # pragma: no cover - compiled
    """``out``: the values, NaN where ``dq & bad_bits``; with ``keep_saturated``, where no finite
    value is good but some are bad only for bit 2, those are kept and ``fallback`` is set."""
    n, ty, tx = data.shape
    has_good = np.empty(tx, np.bool_)
    has_sat = np.empty(tx, np.bool_)
    nan = np.float32(np.nan)
    for y in range(ty):
        for x in range(tx):
            has_good[x] = False
            has_sat[x] = False
        for k in range(n):
            for x in range(tx):
                f = dq[k, y, x] & bad_bits
                fin = np.isfinite(data[k, y, x])
                has_good[x] |= fin & (f == 0)
                has_sat[x] |= fin & (f == SATURATED)
        for x in range(tx):
            fallback[y, x] = keep_saturated & has_sat[x] & (not has_good[x])
        for k in range(n):
            for x in range(tx):
                f = dq[k, y, x] & bad_bits
                keep = (f == 0) | (fallback[y, x] & (f == SATURATED))
                out[k, y, x] = data[k, y, x] if keep else nan


def _frame_values(value: ArrayLike | None, field: Any, n: int, default: float) -> np.ndarray:
    """Per-frame numbers from the argument, else the config's tuple, else ``default``."""
    v = value if value is not None else field if isinstance(field, tuple) else None
    return np.full(n, default) if v is None else np.asarray(v, dtype=np.float64).reshape(n)


def _scaled(data: np.ndarray, k: int, sc: np.ndarray, zr: np.ndarray) -> np.ndarray:
    """Frame ``k`` as the kernels see it: ``float32(float64(v) * scale + zero)``, as float64."""
    x = data[k]
    if sc[k] != 1.0 or zr[k] != 0.0:
        x = (x.astype(np.float64) * sc[k] + zr[k]).astype(np.float32)
    return x.astype(np.float64)


def _ivar_mean(
    data: np.ndarray,
    scaled_var: np.ndarray,
    used: np.ndarray,
    count: np.ndarray,
    config: CombineConfig,
    scale: ArrayLike | None,
    zero: ArrayLike | None,
) -> dict[str, np.ndarray]:
    """The inverse-variance mean of the survivors, ``sum(x/v)/sum(1/v)``, and its variance ``1/sum(1/v)``."""
    n = data.shape[0]
    sc = _frame_values(scale, config.scale, n, 1.0)
    zr = _frame_values(zero, config.zero, n, 0.0)
    acc = np.zeros(count.shape, np.float64)
    sw = np.zeros(count.shape, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(n):
            w = np.where(used[k], 1.0 / scaled_var[k], 0.0)
            acc += np.where(used[k], w * _scaled(data, k, sc, zr), 0.0)
            sw += w
        mean = np.where(count > 0, acc / sw, np.nan).astype(np.float32)
        var = np.where(count > 0, 1.0 / sw, np.nan).astype(np.float32)
    return {"data": mean, "variance": var}


def _sigma(
    data: np.ndarray,
    used: np.ndarray,
    center: np.ndarray,
    count: np.ndarray,
    config: CombineConfig,
    scale: ArrayLike | None,
    zero: ArrayLike | None,
    weights: ArrayLike | None,
    scaled_var: np.ndarray | None = None,
) -> np.ndarray:
    """The survivors' standard deviation about ``center`` (see the module notes), frame by frame;
    with ``scaled_var`` (``weights="ivar"``) the weights are ``1/var`` per value."""
    n = data.shape[0]
    sc = _frame_values(scale, config.scale, n, 1.0)
    zr = _frame_values(zero, config.zero, n, 0.0)
    wt = _frame_values(weights, config.weights, n, 1.0)
    c = center.astype(np.float64)
    acc = np.zeros(center.shape, np.float64)
    sw = np.zeros(center.shape, np.float64)
    for k in range(n):
        d = _scaled(data, k, sc, zr) - c
        with np.errstate(invalid="ignore", divide="ignore"):
            wk = wt[k] if scaled_var is None else np.where(used[k], 1.0 / scaled_var[k], 0.0)
        acc += np.where(used[k], wk * d * d, 0.0)
        sw += np.where(used[k], wk, 0.0)
    nf = count.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(nf > 1, nf / (nf - 1), 1.0)
        out = np.sqrt(acc / sw * corr)
    return np.where(count > 0, out, np.nan).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# where the planes come from
# ---------------------------------------------------------------------------------------------
def read_bits(source: ImageSource, rows: slice, cols: slice) -> np.ndarray:
    """A region of a DQ plane or mask file as integers (float files must hold whole numbers)."""
    if source.integer_dtype is not None:
        return source.read_integers(rows, cols)
    values = source.read(rows, cols)
    if not (np.all(np.isfinite(values)) and np.all(values == np.round(values))):
        raise FitsReadError(f"{source.label}: a DQ plane or mask must hold integers (bit masks)")
    return values.astype(np.int64)


def _is_path(x: object) -> bool:
    return isinstance(x, str | os.PathLike)


def plane_sources(
    frames: Sequence[ImageSource] | None,
    value: Any,
    what: str,
    shape: tuple[int, int],
) -> list[ImageSource] | None:
    """The image sources of a plane given as an extension name or as files, or None (arrays).

    ``value`` a string: the extension ``EXTNAME=value`` of each frame's file with the frame HDU's
    ``EXTVER`` (``frames`` must be files). A sequence of paths: each file's only image HDU.
    """
    from ..io import ImageSource, image_source
    from ..io._read import _scan_checked
    from ..io._scan import select_hdu

    if isinstance(value, str):
        if frames is None:
            raise ConfigError(
                f"{what}={value!r} names an extension of the frames' files; with array frames give arrays"
            )
        out = []
        for src in frames:
            scan = _scan_checked(src.path)  # one walk of the file's headers for both HDUs
            info = next(h for h in scan.images if h.index == src.hdu)
            key: Any = value if info.extver is None else (value, info.extver)
            out.append(ImageSource.from_info(select_hdu(scan.images, key, scan.path, scan.skipped)))
    elif isinstance(value, list | tuple) and value and all(_is_path(v) for v in value):
        out = [image_source(p) for p in value]
        if frames is not None and len(out) != len(frames):
            raise ConfigError(f"{what}: {len(out)} files for {len(frames)} frames")
    else:
        return None
    for src in out:
        if src.shape != shape:
            raise ShapeMismatchError(f"{src.label}: {what} plane shape {src.shape} differs from the frames' {shape}")
    return out


def stack_of(sources: Sequence[ImageSource], tile: tuple[int, int], integers: bool) -> da.Array:
    """The planes of ``sources`` as one dask stack chunked ``(1, ty, tx)``."""
    import dask.array as da

    return da.stack([s.to_dask(chunks=tile, integers=integers and s.integer_dtype is not None) for s in sources])


# ---------------------------------------------------------------------------------------------
# tile tasks
# ---------------------------------------------------------------------------------------------
def _crop(res: PlanesResult, top: int, left: int, ty: int, tx: int) -> PlanesResult:
    """The core ``(ty, tx)`` of a tile's outputs computed with a halo."""
    core = (slice(top, top + ty), slice(left, left + tx))
    parts = [None if a is None else a[(slice(None), *core)] if a.ndim == 3 else a[core] for a in res]
    return PlanesResult(*parts)  # type: ignore[arg-type]  # data and count are never None


def tile_from_sources(
    sources: Sequence[ImageSource],
    var_sources: Sequence[ImageSource] | None,
    dq_sources: Sequence[ImageSource] | None,
    rows: slice,
    cols: slice,
    scale: np.ndarray | None,
    config: CombineConfig,
    want_var: bool,
    halo: int = 0,
    zero: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> PlanesResult:
    """Read one tile (plus ``halo``) of every frame and of its planes, and combine it."""
    fy, fx = sources[0].shape
    r0, r1 = max(rows.start - halo, 0), min(rows.stop + halo, fy)
    c0, c1 = max(cols.start - halo, 0), min(cols.stop + halo, fx)
    region = (slice(r0, r1), slice(c0, c1))
    block = np.empty((len(sources), r1 - r0, c1 - c0), np.float32)
    for i, src in enumerate(sources):
        block[i] = src.read(*region)
    var = None
    if var_sources is not None:
        var = np.empty_like(block)
        for i, src in enumerate(var_sources):
            var[i] = src.read(*region)
    dq = None
    if dq_sources is not None:
        dq = np.stack([read_bits(src, *region) for src in dq_sources])
    res = combine_planes(
        block, config, scale=scale, zero=zero, weights=weights, variance=var, dq=dq, return_variance=want_var
    )
    if halo:
        res = _crop(res, rows.start - r0, cols.start - c0, rows.stop - rows.start, cols.stop - cols.start)
    return res


def tile_from_block(
    block: np.ndarray,
    var: np.ndarray | None,
    dq: np.ndarray | None,
    scale: np.ndarray | None,
    config: CombineConfig,
    want_var: bool,
    crop: tuple[int, int, int, int] | None = None,
    zero: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> PlanesResult:
    """Combine one rechunked ``(N, ty, tx)`` block with its planes; ``crop`` removes its halo."""
    res = combine_planes(
        block, config, scale=scale, zero=zero, weights=weights, variance=var, dq=dq, return_variance=want_var
    )
    return res if crop is None else _crop(res, *crop)


def array_planes(value: Any, shape: tuple[int, int, int], what: str) -> da.Array:
    """Planes given as an ``(N, y, x)`` array or a sequence of 2-D arrays, as one dask stack."""
    import dask.array as da

    if isinstance(value, np.ndarray | da.Array):
        stack = da.asarray(value)
    else:
        try:
            stack = da.stack([da.asarray(v) for v in value])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{what} must be an (N, y, x) array, 2-D arrays or files") from exc
    if stack.shape != shape:
        raise ShapeMismatchError(f"{what} {stack.shape} do not match the frames {shape}")
    return stack


# ---------------------------------------------------------------------------------------------
# weights="noise"
# ---------------------------------------------------------------------------------------------
def noise_weights(stats: tuple[str, ...], labels: Sequence[str], *levels: tuple[float, ...]) -> np.ndarray:
    """``1 / sigma_i²`` from each frame's robust noise (the ``noise`` column of its statistics)."""
    column = stats.index("noise")
    sigma = np.array([lv[column] for lv in levels], dtype=np.float64)
    for label, value in zip(labels, sigma, strict=True):
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(f"{label}: its noise (1.4826 MAD) is {value}; weights='noise' needs it > 0")
    return 1.0 / (sigma * sigma)


def noise_weights_layer(
    stat_name: str,
    stats: tuple[str, ...],
    labels: Sequence[str],
    layers: dict[str, dict[Any, Any]],
    layer_deps: dict[str, set[str]],
) -> tuple[str, int]:
    """Add the task turning the frames' statistics (layer ``stat_name``) into weights; its key."""
    name = stat_name.replace("-levels-", "-weights-", 1)
    layers[name] = {(name, 0): (noise_weights, stats, list(labels), *[(stat_name, i) for i in range(len(labels))])}
    layer_deps[name] = {stat_name}
    return (name, 0)
