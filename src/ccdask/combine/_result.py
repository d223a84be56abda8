"""The result of a combine: lazy arrays, one-call compute, CCDData and provenance."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._config import CombineConfig

__all__ = ["ALGORITHM_VERSION", "CombineResult", "provenance_header"]

#: Bumped whenever the kernels' numerical results change (part of cache keys).
ALGORITHM_VERSION = 1

# Short FITS keywords for the parameters (value, comment).
_PARAM_CARDS = (
    ("method", "CMBMETH", "combine method of the survivors"),
    ("clip", "CMBCLIP", "rejection algorithm"),
    ("sigma_lower", "CMBSIGLO", "sigma clipping lower threshold"),
    ("sigma_upper", "CMBSIGHI", "sigma clipping upper threshold"),
    ("maxiters", "CMBMAXIT", "sigma clipping max iterations (0: no limit)"),
    ("center", "CMBCENTR", "sigma clipping center"),
    ("spread", "CMBSPRD", "sigma clipping spread"),
    ("nlow", "CMBNLOW", "extrema clipping: lowest rejected"),
    ("nhigh", "CMBNHIGH", "extrema clipping: highest rejected"),
    ("min_clip", "CMBMINCL", "lower absolute threshold"),
    ("max_clip", "CMBMAXCL", "upper absolute threshold"),
    ("nkeep", "CMBNKEEP", "minimum survivors of sigma clipping"),
    ("mclip", "CMBMCLIP", "IRAF clipping median center"),
)
# Written only with the rejections that use them.
_NOISE_CARDS = (
    ("rdnoise", "CMBRDNS", "ccdclip read noise (e-) or its keyword"),
    ("gain", "CMBGAIN", "ccdclip gain (e-/ADU) or its keyword"),
    ("snoise", "CMBSNOIS", "ccdclip sensitivity noise or its keyword"),
)


@dataclass(frozen=True)
class CombineResult:
    """A combined image: lazy dask arrays until :meth:`compute` (then numpy arrays).

    Attributes
    ----------
    data : dask or numpy array (ny, nx) float32
        Combined values; NaN where no frame survived.
    count : dask or numpy array (ny, nx) int16
        Number of surviving frames per pixel.
    variance : dask or numpy array (ny, nx) float32, or None
        Variance of ``data`` (from input variance planes or the survivors' scatter, see
        ``variance_source``), None when not asked for.
    ncombine : int
        Number of input frames.
    config : CombineConfig
        The options used.
    inputs : tuple of str
        Names of the inputs (file names, or ``frame i``).
    name : str or None
        The readable name in the task keys.
    scale_factors : array (N,) or None
        Multiplicative factors applied per frame (lazy for ``median``/``mean``).
    variance_source : {"planes", "scatter"} or None
    zero_offsets : array (N,) or None
        Additive offsets applied per frame after the scale (lazy for statistics).
    frame_weights : array (N,) or None
        Weights of the mean or sum per frame (numbers, exposure times or header values).
    dq : array (ny, nx) uint16 or None
        With input DQ planes: bit 8 (no data) where nothing survived, bit 2 where only
        saturated values were combined (:mod:`ccdask.combine._planes`).
    nrej : array (ny, nx) int16 or None
        Number of values rejected per pixel (``nrej_plane``).
    sigma : array (ny, nx) float32 or None
        Standard deviation of the survivors about the result (``sigma_plane``).
    rejmask : array (N, ny, nx) uint8 or None
        1 where a frame's value was not used (``rejmask_cube``).
    """

    data: Any
    count: Any
    variance: Any = None
    ncombine: int = 0
    config: CombineConfig = field(default_factory=CombineConfig)
    inputs: tuple[str, ...] = ()
    name: str | None = None
    scale_factors: Any = None
    variance_source: str | None = None
    zero_offsets: Any = None
    frame_weights: Any = None
    dq: Any = None
    nrej: Any = None
    sigma: Any = None
    rejmask: Any = None

    @property
    def is_lazy(self) -> bool:
        """True while ``data`` is a dask array."""
        return not isinstance(self.data, np.ndarray)

    def compute(self, **kwargs: Any) -> CombineResult:
        """Compute data, count, variance, the optional planes (and lazy scale factors) in one ``dask.compute`` call.

        Keyword arguments go to :func:`dask.compute` (e.g. ``scheduler=``). Returns a new
        result holding numpy arrays.
        """
        if not self.is_lazy:
            return self
        import dask

        names = (
            "data",
            "count",
            "variance",
            "scale_factors",
            "zero_offsets",
            "frame_weights",
            "dq",
            "nrej",
            "sigma",
            "rejmask",
        )
        values = dask.compute(*(getattr(self, name) for name in names), **kwargs)
        return dataclasses.replace(self, **dict(zip(names, values, strict=True)))

    def header(self, base: Any = None) -> Any:
        """A FITS header with the provenance (see :func:`provenance_header`)."""
        return provenance_header(self, base)

    def to_ccddata(self, unit: Any = "adu", **compute_kwargs: Any) -> Any:
        """An ``astropy.nddata.CCDData`` (computing first if lazy).

        The variance becomes a ``VarianceUncertainty``; pixels without survivors are masked;
        the header carries the provenance.
        """
        from astropy.nddata import CCDData, VarianceUncertainty

        res = self.compute(**compute_kwargs)
        unc = None if res.variance is None else VarianceUncertainty(res.variance, unit=None)
        ccd = CCDData(res.data, unit=unit, uncertainty=unc, mask=res.count == 0, meta=res.header())
        return ccd


def provenance_header(result: CombineResult, base: Any = None) -> Any:
    """Header cards describing how ``result`` was made.

    ``NCOMBINE``; ``IMCMBnnn`` with each input (as IRAF ``imcombine``; above 999 inputs they go
    to ``HISTORY``); the parameters as ``CMB*`` keywords; ``CMBSCALE`` and ``CMBVAR``;
    ``CCDASKV`` (ccdask version) and ``CMBALGV`` (algorithm version); a ``HISTORY`` line.
    Cards are added to a copy of ``base`` when given.
    """
    from astropy.io import fits

    from .._version import __version__

    hdr = fits.Header() if base is None else base.copy()
    cfg = result.config
    hdr["NCOMBINE"] = (result.ncombine, "number of frames combined")
    for key, card, comment in _PARAM_CARDS:
        value = getattr(cfg, key)
        if key == "maxiters" and value is None:
            value = 0
        if value is None:
            continue
        hdr[card] = (value, comment)
    if cfg.clip in ("ccdclip", "crreject"):
        for key, card, comment in _NOISE_CARDS:
            hdr[card] = (getattr(cfg, key), comment)
    if cfg.clip == "pclip":
        hdr["CMBPCLIP"] = (cfg.pclip, "pclip percentile pixel parameter")
    if cfg.clip == "gesd":
        hdr["CMBGESDF"] = (cfg.gesd_fraction, "GESD most outliers, fraction of frames")
        hdr["CMBGESDA"] = (cfg.gesd_alpha, "GESD significance")
    if cfg.grow > 0:
        hdr["CMBGROW"] = (cfg.grow, "radius of grown rejections (pixels)")
    scale = "array" if isinstance(cfg.scale, tuple) else cfg.scale
    hdr["CMBSCALE"] = (scale if scale is not None else "none", "per-frame scaling")
    if cfg.zero is not None:
        hdr["CMBZERO"] = ("array" if isinstance(cfg.zero, tuple) else cfg.zero, "per-frame additive offsets")
    if cfg.weights is not None:
        hdr["CMBWEIGH"] = ("array" if isinstance(cfg.weights, tuple) else cfg.weights, "per-frame weights")
    if cfg.statsec is not None:
        hdr["CMBSTSEC"] = (cfg.statsec, "section of the scale/zero statistics")
    if cfg.normalize != "mean":
        hdr["CMBNORM"] = (cfg.normalize, "scales/zeros relative to this frame")
    if result.variance_source is not None:
        hdr["CMBVAR"] = (result.variance_source, "variance from input planes or scatter")
    if result.dq is not None:
        hdr["CMBDQBAD"] = (cfg.dq_bad, "input DQ bits that mark a value bad")
    hdr["CCDASKV"] = (__version__, "ccdask version")
    hdr["CMBALGV"] = (ALGORITHM_VERSION, "ccdask combine algorithm version")
    if len(result.inputs) <= 999:
        for i, name in enumerate(result.inputs, start=1):
            hdr[f"IMCMB{i:03d}"] = (str(name)[:68], "input frame")
    else:
        for name in result.inputs:
            hdr.add_history(f"input: {name}")
    for values, card, comment in (
        (result.scale_factors, "CMBSC", "scale factor of input frame"),
        (result.zero_offsets, "CMBZR", "zero offset of input frame (after scale)"),
        (result.frame_weights, "CMBWT", "weight of input frame"),
    ):
        if isinstance(values, np.ndarray) and values.size == result.ncombine and values.size <= 999:
            for i, f in enumerate(values, start=1):
                hdr[f"{card}{i:03d}"] = (float(f), comment)
    hdr.add_history(
        f"ccdask {__version__} combine of {result.ncombine} frames: "
        + ", ".join(f"{k}={v}" for k, v in _history_params(cfg))
    )
    return hdr


def _history_params(cfg: CombineConfig) -> Iterator[tuple[str, Any]]:
    d = cfg.to_dict()
    for key in (
        "method",
        "clip",
        "sigma_lower",
        "sigma_upper",
        "maxiters",
        "center",
        "spread",
        "nlow",
        "nhigh",
        "min_clip",
        "max_clip",
        "nkeep",
    ):
        yield key, d[key]
    if cfg.clip in ("ccdclip", "crreject"):
        yield from ((k, d[k]) for k in ("rdnoise", "gain", "snoise"))
    if cfg.clip == "pclip":
        yield "pclip", d["pclip"]
    if cfg.grow > 0:
        yield "grow", d["grow"]
    if isinstance(cfg.scale, str):
        yield "scale", cfg.scale


# ---------------------------------------------------------------------------------------------
# writing, out of core
# ---------------------------------------------------------------------------------------------
#: The planes of a result and the extension suffix each is written under (data has none).
PLANES = (
    ("count", "COUNT"),
    ("variance", "VAR"),
    ("dq", "DQ"),
    ("nrej", "NREJ"),
    ("sigma", "SIGMA"),
    ("rejmask", "REJMASK"),
)

_BITPIX = {np.dtype(np.float32): -32, np.dtype(np.int16): 16, np.dtype(np.uint16): 16, np.dtype(np.uint8): 8}
_STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "BLANK", "EXTNAME"}
_BLOCK = 2880


def _image_header(base: Any, shape: tuple[int, ...], dtype: np.dtype, *, primary: bool, extname: str | None) -> Any:
    """A FITS image header for ``shape``/``dtype`` followed by the cards of ``base``."""
    from astropy.io import fits

    hdr = fits.Header()
    if primary:
        hdr["SIMPLE"] = True
    else:
        hdr["XTENSION"] = "IMAGE"
    hdr["BITPIX"] = _BITPIX[dtype]
    hdr["NAXIS"] = len(shape)
    for axis, size in enumerate(reversed(shape), start=1):
        hdr[f"NAXIS{axis}"] = size
    if primary:
        hdr["EXTEND"] = True
    else:
        hdr["PCOUNT"] = 0
        hdr["GCOUNT"] = 1
    if dtype == np.uint16:
        hdr["BZERO"] = 32768
        hdr["BSCALE"] = 1
    if extname:
        hdr["EXTNAME"] = extname
    for card in () if base is None else base.cards:
        if card.keyword in _STRUCTURAL or card.keyword.startswith("NAXIS"):
            continue
        hdr.append(card, end=True)
    return hdr


class _FileRegion:
    """A ``__setitem__`` target writing blocks into a data section of a file with ``os.pwrite``.

    ``da.store`` gives each block with its region (slices); the block goes row by row, or as one
    run where its rows span the whole width, big-endian at its place in the C-ordered array. No
    memory map, so written pages are not held in the process; picklable (path and layout only).
    """

    def __init__(self, path: str, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.offset = offset
        self.shape = shape
        self.ndim = len(shape)
        self.dtype = np.dtype(dtype).newbyteorder(">")

    def __setitem__(self, key: tuple[slice, ...], value: Any) -> None:
        starts = [0 if k.start is None else k.start for k in key]
        block = np.ascontiguousarray(value, dtype=self.dtype)
        size = self.dtype.itemsize
        strides = [int(np.prod(self.shape[i + 1 :])) for i in range(self.ndim)]
        full_rows = self.ndim >= 2 and block.shape[-1] == self.shape[-1]
        lead = block.shape[:-2] if full_rows else block.shape[:-1]
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for idx in np.ndindex(*lead):
                pos = sum((starts[i] + idx[i]) * strides[i] for i in range(len(idx)))
                pos += starts[len(idx)] * strides[len(idx)]  # the first row (whole rows) or column
                os.pwrite(fd, block[idx].tobytes(), self.offset + pos * size)
        finally:
            os.close(fd)


def _stored(arr: Any) -> Any:
    """The values as FITS stores them (uint16 as int16 with BZERO 32768)."""
    if arr.dtype == np.uint16:
        return (arr.astype(np.int32) - 32768).astype(np.int16)
    return arr


def write_fits(
    path: Any,
    parts: Any,
    *,
    primary: Any = None,
    overwrite: bool = False,
    **compute_kwargs: Any,
) -> list[CombineResult]:
    """Write lazy results to one FITS file, out of core, under a temporary name then renamed.

    ``parts`` is a sequence of ``(name, result, base_header)``: one part with ``name`` None puts
    its data in the primary HDU and its planes in extensions ``COUNT``, ``VAR``, ``DQ``, ``NREJ``,
    ``SIGMA``, ``REJMASK`` (those the result has); named parts go to extensions ``<name>``,
    ``<name>_COUNT``, ... after a primary HDU with the header ``primary``. Headers carry the
    provenance (:func:`provenance_header` on ``base_header``).

    The file is laid out first (headers, then the data sections as holes); one ``dask.compute``
    writes every plane tile by tile where it belongs (``os.pwrite``, :class:`_FileRegion`) and
    computes the lazy scale factors, so no whole plane (nor the ``(N, ny, nx)`` rejection cube)
    is held in memory; the headers are then rewritten with the factors (the same cards, so the
    same size). Keyword arguments go to ``dask.compute`` (any scheduler whose workers see the
    file). Returns the results with their per-frame values computed.
    """
    import dask
    import dask.array as da

    from ..utils import atomic_path

    parts = list(parts)
    single = len(parts) == 1 and parts[0][0] is None

    def headers(results: list[CombineResult]) -> list[tuple[Any, Any]]:
        out: list[tuple[Any, Any]] = []
        if not single:
            out.append((_image_header(primary, (), np.dtype(np.uint8), primary=True, extname=None), None))
        for (name, _, base), res in zip(parts, results, strict=True):
            prov = res.header(base)
            shape = tuple(res.data.shape)
            out.append((_image_header(prov, shape, np.dtype(np.float32), primary=single, extname=name), res.data))
            for attr, suffix in PLANES:
                plane = getattr(res, attr)
                if plane is not None:
                    ext = suffix if name is None else f"{name}_{suffix}"
                    hdr = _image_header(None, tuple(plane.shape), np.dtype(plane.dtype), primary=False, extname=ext)
                    out.append((hdr, plane))
        return out

    def placeholder(res: CombineResult) -> CombineResult:
        n = res.ncombine
        return dataclasses.replace(
            res,
            scale_factors=None if res.scale_factors is None else np.zeros(n),
            zero_offsets=None if res.zero_offsets is None else np.zeros(n),
            frame_weights=None if res.frame_weights is None else np.zeros(n),
        )

    layout = headers([placeholder(res) for _, res, _ in parts])
    with atomic_path(path, overwrite=overwrite) as tmp:
        offsets = []
        with open(tmp, "wb") as fh:
            for hdr, plane in layout:
                fh.write(hdr.tostring().encode("ascii"))
                offsets.append(fh.tell())
                if plane is not None:
                    nbytes = int(np.prod(plane.shape)) * np.dtype(plane.dtype).itemsize
                    fh.seek(-(-nbytes // _BLOCK) * _BLOCK, 1)
            fh.truncate(fh.tell())
        sources, targets = [], []
        for (_, plane), offset in zip(layout, offsets, strict=True):
            if plane is None or int(np.prod(plane.shape)) == 0:
                continue
            stored = _stored(da.asarray(plane))
            sources.append(stored)
            targets.append(_FileRegion(str(tmp), offset, tuple(plane.shape), stored.dtype))
        store = da.store(sources, targets, lock=False, compute=False)
        lazy = [(res.scale_factors, res.zero_offsets, res.frame_weights) for _, res, _ in parts]
        _, per_frame = dask.compute(store, lazy, **compute_kwargs)
        done = [
            dataclasses.replace(res, scale_factors=f, zero_offsets=z, frame_weights=w)
            for (_, res, _), (f, z, w) in zip(parts, per_frame, strict=True)
        ]
        final = headers(done)
        with open(tmp, "r+b") as out:
            for (hdr, _), (old, _), offset in zip(final, layout, offsets, strict=True):
                text = hdr.tostring().encode("ascii")
                if len(text) != len(old.tostring()):
                    raise RuntimeError("combine writer: a header changed size after the compute")
                out.seek(offset - len(text))
                out.write(text)
    return done
