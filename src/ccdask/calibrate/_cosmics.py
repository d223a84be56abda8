"""Cosmic-ray detection and cleaning of one chip, lazily, through ``map_overlap``.

Two methods:

``lacosmic``
    astroscrappy's L.A.Cosmic (van Dokkum 2001) run on each chunk plus a halo of
    neighbouring pixels. LACosmic is local: every quantity it derives for a pixel (Laplacian,
    noise model, fine-structure image, the saturated-star mask, the 3x3 growth of detections,
    the 5x5 cleaning) depends only on pixels within a fixed distance, and each of its
    ``niter`` iterations feeds the cleaned image to the next, so that distance grows by the
    same step per iteration. :func:`lacosmic_halo` adds up those radii for the chosen
    parameters; with that halo (the default) the mask and the cleaned image of every chunk
    equal a whole-frame astroscrappy run, for any chunking. The frame edges are not padded
    (``boundary="none"``): a chunk at the edge of the frame sees the real edge, exactly as
    the whole-frame run does, so the equality holds up to the border too. (One documented
    exception: when a cosmic-ray pixel has no usable pixel at all in its 5x5 cleaning box,
    astroscrappy fills it with the median of the whole image it was given, which for a chunk
    is the median of that chunk and its halo.)

``median``
    A pixel is a cosmic ray when it exceeds the median of its ``size`` x ``size``
    neighbourhood by more than ``threshold`` standard deviations, the standard deviation
    being the square root of the variance plane (or of the noise model
    ``max(signal, 0) + read noise²`` when no variance is given). Cleaned pixels take the
    local median.

Units
-----
astroscrappy works in electrons: it multiplies the data by ``gain``, compares the result with
``satlevel`` and builds its noise model as ``data x gain + readnoise²``. ccdask frames are in
electrons already, so the normal call is ``gain=1.0`` with the read noise in electrons and any
saturation level in electrons. :func:`detect_cosmics` takes ``gain`` as electrons per *data
unit*, ``read_noise`` in electrons, ``saturation`` in data units and ``var`` in data units
squared, and passes astroscrappy ``gain``, ``readnoise=read_noise``,
``satlevel=saturation x gain`` and ``invar=var``, which is consistent for data in ADU
(``gain`` = e-/ADU) as well as in electrons (``gain=1``). The cleaned image is returned in the
units of the input.

Threads
-------
astroscrappy releases the GIL and runs its loops with OpenMP. Its pool size is fixed when the
library loads (``OMP_NUM_THREADS``); with dask threads on every core, set it to 1 in the
workers' environment: measured on 2 cores, OpenMP threads on top of dask threads only add
spinning (+40 % CPU, see ``benchmarks/RESULTS.md``). Chips and frames are independent, so the
default keeps the input chunks (one call per chip with the reader's default chunking);
``CosmicConfig.tile`` splits a chip for parallelism inside it.

Examples
--------
>>> cr, cleaned = detect_cosmics(sci, var, gain=1.0, read_noise=5.0,
...                              config=CosmicConfig(sigclip=5.0))   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import numpy as np
from scipy import ndimage

from .. import dq as dqbits
from ..errors import ConfigError, ShapeMismatchError
from ..frame import Frame
from ..utils._options import ConfigBase, option
from ._lacosmic import lacosmic_np, lacosmic_reach
from ._masks import grow_mask, grow_mask_np
from ._sources import SEEING_DEPTH, block_sigmas, fwhm_of, measure_fwhm, psf_veto, veto_radius

__all__ = [
    "CosmicConfig",
    "CosmicMethod",
    "clean_arrays_np",
    "clean_frame",
    "cosmic_step",
    "detect_cosmics",
    "detect_cosmics_np",
    "frame_read_noise",
    "lacosmic_halo",
]

CosmicMethod = Literal["lacosmic", "median", "none"]

#: The widest seeing (FWHM, pixels) the star protection models; wider measurements are clipped
#: to it (it bounds the halo of the dask form).
MAX_SEEING = 8.0

_CR_DTYPE = np.dtype([("mask", np.bool_), ("clean", np.float32)])


def _odd(v: int) -> bool:
    return v >= 1 and v % 2 == 1


@dataclass(frozen=True)
class CosmicConfig(ConfigBase):
    """How cosmic rays are found and cleaned (DQ bit 4).

    The LACosmic fields are astroscrappy's ``detect_cosmics`` parameters of the same names.
    """

    method: Literal["lacosmic", "median", "none"] = option(
        "lacosmic", "lacosmic (astroscrappy), median (local median + variance), or none"
    )
    sigclip: float = option(
        4.5, "LACosmic: Laplacian-to-noise limit for detection", check=lambda v: v > 0, why="must be positive"
    )
    sigfrac: float = option(
        0.3, "LACosmic: fraction of sigclip used for neighbouring pixels", check=lambda v: v > 0, why="must be positive"
    )
    objlim: float = option(
        5.0,
        "LACosmic: minimum contrast between the Laplacian and the "
        "fine-structure image (raise it if star cores are flagged)",
        check=lambda v: v > 0,
        why="must be positive",
    )
    niter: int = option(
        2,
        "LACosmic: iterations (each widens the halo needed); 2: with the star protection, "
        "iterations 3 and 4 flag no more of the hits (measured, benchmarks/RESULTS.md)",
        check=lambda v: 1 <= v <= 20,
        why="must be between 1 and 20",
    )
    sepmed: bool = option(True, "LACosmic: separable median filters (faster; False is 2.6-3x slower)")
    cleantype: Literal["meanmask", "medmask", "median", "idw"] = option(
        "meanmask", "LACosmic: how cosmic-ray pixels are replaced in the cleaned image (5x5 box)"
    )
    fsmode: Literal["median", "convolve"] = option(
        "median", "LACosmic: fine-structure image by median filters or by PSF convolution"
    )
    psfmodel: Literal["gauss", "gaussx", "gaussy", "moffat"] = option(
        "gauss", "LACosmic: PSF model when fsmode = convolve"
    )
    psffwhm: float = option(
        2.5, "LACosmic: PSF FWHM (pixels) when fsmode = convolve", check=lambda v: v > 0, why="must be positive"
    )
    psfsize: int = option(
        7,
        "LACosmic: PSF kernel side (odd, pixels) when fsmode = convolve",
        check=_odd,
        why="must be an odd positive integer",
    )
    psfbeta: float = option(
        4.765, "LACosmic: Moffat beta when psfmodel = moffat", check=lambda v: v > 0, why="must be positive"
    )
    saturation_grow: int = option(
        2,
        "grow a saturated-pixel mask by this many pixels before detection (the grown pixels "
        "are only ignored, not flagged); the steep wings of saturated stars otherwise look "
        "like cosmic rays (astroscrappy grows the saturated stars it finds itself by 4)",
        check=lambda v: 0 <= v <= 50,
        why="must be between 0 and 50",
    )
    use_variance: bool = option(
        True, "LACosmic: give astroscrappy the VAR plane as its noise model (invar) when available"
    )
    protect: bool = option(
        True,
        "LACosmic: keep stars' own pixels out of the mask: each iteration's candidates that a "
        "Gaussian star of the chip's seeing explains are neither flagged nor cleaned",
    )
    protect_sigma: float = option(
        5.0,
        "LACosmic protection: a candidate on a star stays a cosmic ray when it stands this many "
        "sigma (plus the tolerance) above the star's prediction",
        check=lambda v: v > 0,
        why="must be positive",
    )
    protect_tolerance: float = option(
        0.5,
        "LACosmic protection: fraction of the star's predicted value allowed above it (PSFs are not exactly Gaussian)",
        check=lambda v: 0 <= v <= 10,
        why="must lie between 0 and 10",
    )
    seeing: float | None = option(
        None,
        "PSF FWHM (pixels) for the protection; None: measured per chip from its bright isolated "
        "stars (psffwhm when fewer than 3 are found)",
        check=lambda v: 0.5 <= v <= MAX_SEEING,
        why=f"must lie between 0.5 and {MAX_SEEING} pixels",
    )
    halo: int | None = option(
        None,
        "pixels of overlap between chunks; None: the proven bound of lacosmic_halo() "
        "(41 for the defaults), or size // 2 for the median method",
        check=lambda v: v >= 0,
        why="must be zero or positive",
    )
    tile: int | None = option(
        None,
        "rechunk the chip into tiles of about this side before detection; None keeps the "
        "input chunks (chunks smaller than the halo are merged either way)",
        check=lambda v: v >= 16,
        why="must be at least 16 pixels",
    )
    size: int = option(
        5,
        "median method: side of the median window (odd)",
        check=lambda v: _odd(v) and v >= 3,
        why="must be an odd integer >= 3",
    )
    threshold: float = option(
        5.0, "median method: excess over the local median, in sigma", check=lambda v: v > 0, why="must be positive"
    )
    clean: bool = option(True, "replace cosmic-ray pixels of SCI by the cleaned values (False only sets DQ bit 4)")


def lacosmic_halo(config: CosmicConfig | None = None) -> int:
    """The halo (pixels) that makes chunked LACosmic equal to a whole-frame run.

    Every step of astroscrappy's ``detect_cosmics`` reads pixels within a fixed Chebyshev
    radius; the radii add up along the chain of steps:

    * noise model: median of the variance, ``sepmedfilt7`` (radius 3) or ``medfilt5`` (2);
    * Laplacian of the 2x-subsampled image: radius 1; ``S / noise``: max(1, noise) = 3 (2);
    * ``S' = S - median(S)``: + 3 (+ 2) = 6 (4);
    * fine structure: ``sepmedfilt5`` then ``sepmedfilt9`` (2 + 4 = 6), or ``medfilt3`` then
      ``medfilt7`` (1 + 3 = 4); with ``fsmode="convolve"``: noise + psfsize // 2 + that second
      median;
    * two 3x3 growths of the candidates: + 2. One iteration's detections thus reach
      ``a = max(S', F) + 2`` = 8 (6) from the image it starts from;
    * the saturated-star mask: a median (3 | 2) and two 5x5 dilations (4), or the 3x3 growth
      of the given mask (1): 7 (6), entering the detections before the two growths:
      ``b`` = 9 (8);
    * cleaning: a 5x5 box, + 2, and the cleaned image starts the next iteration.

    So the detections of iteration 1 reach ``r1 = max(a, b)``, those of iteration k reach
    ``r_k = max(r_{k-1} + 2 + a, b)``, the final mask reaches ``r_niter`` and the final
    cleaned image ``r_niter + 2``. Without protection (``sepmed``, ``fsmode="median"``, 4
    iterations): 9, 19, 29, 39, so 41. The star protection adds, per iteration, the window its
    test reads around a candidate (``veto_radius(MAX_SEEING) + 1`` = 13): 21, 44, 67, 90, so 92
    for four iterations, and 46 for the defaults (two iterations).

    Parameters
    ----------
    config : CosmicConfig, optional
        The LACosmic parameters (``niter``, ``sepmed``, ``fsmode``, ``psfsize``).

    Returns
    -------
    int
        The halo in pixels.
    """
    cfg = config or CosmicConfig()
    med = 3 if cfg.sepmed else 2
    a = lacosmic_reach(cfg.sepmed, cfg.fsmode, cfg.psfsize) - 1  # without the input mask's dilation
    mask_radius = max(med + 4, 1)
    b = mask_radius + 2
    if cfg.protect:
        # each iteration's candidates are tested against the star in a window around them
        # (its ring and fit read veto_radius + 1 more), and the seeing is measured per chip
        a += veto_radius(MAX_SEEING) + 1
    r = max(a, b)
    for _ in range(cfg.niter - 1):
        r = max(r + 2 + a, b)
    return r + 2


# --------------------------------------------------------------------------------------------
# block kernels


def _lacosmic_block(
    sci: np.ndarray,
    var: np.ndarray | None,
    mask: np.ndarray | None,
    *,
    params: dict[str, Any],
    gain: float,
    readnoise: float,
    satlevel: float,
    protect: tuple[float, float] | None = None,
    fwhm: float | None = None,
) -> np.ndarray:
    import astroscrappy

    data, invar, inmask, finite = _prepare(sci, var, mask)
    if np.isfinite(satlevel):  # astroscrappy finds the saturated stars itself: its own iterations
        crmask, cleaned = astroscrappy.detect_cosmics(
            data, inmask=inmask, invar=invar, gain=gain, readnoise=readnoise, satlevel=satlevel, verbose=False, **params
        )
    else:
        veto = None
        if protect is not None:
            veto = _star_veto(data, invar, inmask, gain, readnoise, protect, params, fwhm)
        crmask, cleaned = lacosmic_np(data, inmask, invar, gain=gain, readnoise=readnoise, params=params, veto=veto)
    out = np.empty(data.shape, dtype=_CR_DTYPE)
    out["mask"] = crmask
    out["clean"] = np.where(finite, cleaned, sci)
    return out


def _prepare(
    sci: np.ndarray, var: np.ndarray | None, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """What the LACosmic kernel works on: float32 data with non-finite pixels at 0 and masked,
    the variance likewise (or None), the mask, and where the data were finite."""
    data = np.ascontiguousarray(sci, dtype=np.float32)
    finite = np.isfinite(data)
    inmask = np.zeros(data.shape, dtype=bool) if mask is None else np.array(mask, dtype=bool)
    if not finite.all():
        inmask |= ~finite
        data = np.where(finite, data, np.float32(0.0))
    invar = None
    if var is not None:
        invar = np.ascontiguousarray(var, dtype=np.float32)
        vfinite = np.isfinite(invar)
        if not vfinite.all():
            inmask |= ~vfinite
            invar = np.where(vfinite, invar, np.float32(0.0))
    return data, invar, inmask, finite


def _seeing_block(
    sci: np.ndarray,
    var: np.ndarray | None,
    mask: np.ndarray | None,
    core: tuple[int, int, int, int],
    gain: float,
    readnoise: float,
) -> np.ndarray:
    """The star sigmas of one tile (with its overlap) whose peaks lie in its ``core``."""
    data, invar, inmask, _ = _prepare(sci, var, mask)
    return block_sigmas(data, _noise(data, invar, gain, readnoise), inmask, core)


def _lazy_seeing(s: da.Array, v: da.Array | None, m: da.Array | None, gain: float, readnoise: float) -> Any:
    """The chip's seeing as one delayed value, from the stars of every tile (each tile read with
    an overlap of ``SEEING_DEPTH``): the same stars, hence the same median, as the whole chip."""
    import dask

    depth = SEEING_DEPTH
    tile = (min(s.shape[0], 1024), min(s.shape[1], 1024))  # any tiling gives the same stars
    s, v, m = (None if a is None else a.rechunk(tile) for a in (s, v, m))
    assert s is not None
    arrays = [a for a in (s, v, m) if a is not None]
    order = [a is not None for a in (s, v, m)]
    over = [da.overlap.overlap(a, depth=depth, boundary="none").to_delayed() for a in arrays]
    ny_chunks, nx_chunks = s.chunks
    parts = []
    for i in range(len(ny_chunks)):
        for j in range(len(nx_chunks)):
            blocks = iter(o[i, j] for o in over)
            sb, vb, mb = (next(blocks) if have else None for have in order)
            y0 = 0 if i == 0 else depth
            x0 = 0 if j == 0 else depth
            core = (y0, y0 + ny_chunks[i], x0, x0 + nx_chunks[j])
            parts.append(dask.delayed(_seeing_block, pure=True)(sb, vb, mb, core, gain, readnoise))
    return dask.delayed(lambda *p: fwhm_of(np.concatenate(p)), pure=True)(*parts)


def _noise(data: np.ndarray, invar: np.ndarray | None, gain: float, readnoise: float) -> np.ndarray:
    """The noise (data units) of every pixel: the variance plane's, or astroscrappy's model."""
    if invar is not None:
        return np.sqrt(np.maximum(invar, 0.0)).astype(np.float32)
    e = np.maximum(data.astype(np.float64) * gain, 0.0)
    return (np.sqrt(e + readnoise * readnoise) / gain).astype(np.float32)


def _star_veto(
    data: np.ndarray,
    invar: np.ndarray | None,
    inmask: np.ndarray,
    gain: float,
    readnoise: float,
    protect: tuple[float, float],
    params: dict[str, Any],
    fwhm: float | None,
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The veto of :func:`ccdask.calibrate._lacosmic.lacosmic_np`: each iteration's new candidates
    that a star of the chip's seeing explains are dropped (:func:`~ccdask.calibrate._sources.psf_veto`)."""
    noise = _noise(data, invar, gain, readnoise)
    seeing = fwhm if fwhm is not None else measure_fwhm(data, noise, inmask)
    seeing = min(float(seeing if seeing is not None else params["psffwhm"]), MAX_SEEING)
    significance, tolerance = protect

    def veto(raw: np.ndarray, flagged: np.ndarray) -> np.ndarray:
        test = raw & ~flagged
        excluded = raw | flagged | inmask
        stars = psf_veto(data, noise, excluded, test, fwhm=seeing, significance=significance, tolerance=tolerance)
        return ~stars

    return veto


def _median_block(
    sci: np.ndarray,
    var: np.ndarray | None,
    mask: np.ndarray | None,
    *,
    size: int,
    threshold: float,
    gain: float,
    readnoise: float,
) -> np.ndarray:
    data = np.asarray(sci, dtype=np.float32)
    finite = np.isfinite(data)
    filled = np.where(finite, data, np.float32(0.0))
    local = ndimage.median_filter(filled, size=size, mode="reflect")
    if var is not None:
        sigma = np.sqrt(np.maximum(np.asarray(var, dtype=np.float64), 0.0))
    else:
        electrons = np.maximum(filled.astype(np.float64) * gain, 0.0)
        sigma = np.sqrt(electrons + readnoise * readnoise) / gain
    excess = filled.astype(np.float64) - local
    cr = finite & (excess > 0) & (excess > threshold * sigma)
    if mask is not None:
        cr &= ~np.asarray(mask, dtype=bool)
    out = np.empty(data.shape, dtype=_CR_DTYPE)
    out["mask"] = cr
    out["clean"] = np.where(cr, local, data)
    return out


# --------------------------------------------------------------------------------------------
# the public entry points


def _lacosmic_params(cfg: CosmicConfig) -> dict[str, Any]:
    return {
        "sigclip": cfg.sigclip,
        "sigfrac": cfg.sigfrac,
        "objlim": cfg.objlim,
        "niter": cfg.niter,
        "sepmed": cfg.sepmed,
        "cleantype": cfg.cleantype,
        "fsmode": cfg.fsmode,
        "psfmodel": cfg.psfmodel,
        "psffwhm": cfg.psffwhm,
        "psfsize": cfg.psfsize,
        "psfbeta": cfg.psfbeta,
    }


def detect_cosmics(
    sci: da.Array,
    var: da.Array | None = None,
    *,
    gain: float = 1.0,
    read_noise: float,
    saturation: float | da.Array | None = None,
    mask: da.Array | None = None,
    config: CosmicConfig | None = None,
) -> tuple[da.Array, da.Array]:
    """Find and clean the cosmic rays of one chip, lazily.

    Parameters
    ----------
    sci : dask.array.Array
        The chip, calibrated (sky included: the noise model needs the background), in data
        units (electrons for ccdask frames).
    var : dask.array.Array, optional
        Its variance in data units squared. LACosmic uses it as the noise model when
        ``config.use_variance`` (it median-filters it like its own model); the median method
        uses it for sigma.
    gain : float
        Electrons per data unit: 1.0 for data in electrons, the amplifier gain for ADU.
    read_noise : float
        Read noise in electrons (used by the noise model when no variance is used).
    saturation : float or dask.array.Array, optional
        A saturation level in data units (astroscrappy masks saturated stars around pixels at
        or above it), or a boolean mask of saturated pixels (e.g. from
        :func:`ccdask.calibrate._masks.saturation_mask`), which is grown by ``config.saturation_grow``
        pixels and joins ``mask``. None: no saturation.
    mask : dask.array.Array, optional
        Boolean, pixels to ignore (bad pixels, no data). They are never flagged and not used
        to clean their neighbours.
    config : CosmicConfig, optional
        Method and parameters; ``CosmicConfig()`` by default.

    Returns
    -------
    cr_mask : dask.array.Array
        Boolean, True for cosmic-ray pixels (DQ bit 4).
    cleaned : dask.array.Array
        ``sci`` with the cosmic-ray pixels replaced (float32, data units).

    Raises
    ------
    ShapeMismatchError
        ``var``, ``mask`` or a saturation mask differ in shape from ``sci``.
    ConfigError
        A parameter is out of range.

    Notes
    -----
    Non-finite pixels are masked (and handed to astroscrappy as 0); they keep their values in
    the cleaned image. Chunks smaller than the halo are merged with their neighbours by dask;
    for speed prefer chunks of 1000 pixels or more (``config.tile``).
    """
    cfg = config or CosmicConfig()
    _check_noise(gain, read_noise)
    s = da.asarray(sci)
    if s.ndim != 2:
        raise ShapeMismatchError(f"detect_cosmics works on one 2-D chip, got shape {s.shape}")
    if s.dtype != np.float32:
        s = s.astype(np.float32)
    if cfg.tile is not None:
        s = s.rechunk((cfg.tile, cfg.tile))

    def aligned(arr: Any, label: str) -> da.Array:
        a = da.asarray(arr)
        _check_aligned(a.shape, s.shape, label)
        return a.rechunk(s.chunks)

    m = None if mask is None else aligned(mask, "mask").astype(bool)
    satlevel = np.inf
    if saturation is not None:
        if np.ndim(saturation) == 0 and not isinstance(saturation, da.Array):
            satlevel = float(saturation) * float(gain)
        else:
            sat = grow_mask(aligned(saturation, "saturation mask"), cfg.saturation_grow)
            m = sat if m is None else (m | sat)
    v = None if var is None else aligned(var, "variance").astype(np.float32)

    if cfg.method == "none":
        return da.zeros(s.shape, dtype=bool, chunks=s.chunks), s
    if cfg.method == "lacosmic" and v is not None and not cfg.use_variance:
        v = None
    kernel, depth, kwargs = _kernel(cfg, gain, read_noise, satlevel)
    if cfg.method == "lacosmic" and cfg.protect and cfg.seeing is None and not np.isfinite(satlevel):
        kwargs["fwhm"] = _lazy_seeing(s, v, m, float(gain), float(read_noise))
    arrays = [s, v, m]
    present = [a for a in arrays if a is not None]
    order = [a is not None for a in arrays]

    def call(*blocks: np.ndarray, **kw: Any) -> np.ndarray:
        it = iter(blocks)
        sci_b, var_b, mask_b = (next(it) if have else None for have in order)
        return kernel(sci_b, var_b, mask_b, **kw)

    result = da.map_overlap(
        call, *present, depth=depth, boundary="none", dtype=_CR_DTYPE, meta=np.empty((0, 0), dtype=_CR_DTYPE), **kwargs
    )
    return result["mask"], result["clean"]


def detect_cosmics_np(
    sci: np.ndarray,
    var: np.ndarray | None = None,
    *,
    gain: float = 1.0,
    read_noise: float,
    saturation: float | np.ndarray | None = None,
    mask: np.ndarray | None = None,
    config: CosmicConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`detect_cosmics` on a whole chip held in memory: one call of the kernel on the
    whole chip (the halo that makes chunked detection equal to a whole-frame run is not
    needed; ``config.tile`` and ``config.halo`` only shape the dask form)."""
    cfg = config or CosmicConfig()
    _check_noise(gain, read_noise)
    s = np.asarray(sci)
    if s.ndim != 2:
        raise ShapeMismatchError(f"detect_cosmics works on one 2-D chip, got shape {s.shape}")
    s = s.astype(np.float32) if s.dtype != np.float32 else s
    m = None
    if mask is not None:
        _check_aligned(np.shape(mask), s.shape, "mask")
        m = np.asarray(mask).astype(bool)
    satlevel = np.inf
    if saturation is not None:
        if np.ndim(saturation) == 0:
            satlevel = float(saturation) * float(gain)
        else:
            _check_aligned(np.shape(saturation), s.shape, "saturation mask")
            sat = grow_mask_np(np.asarray(saturation), cfg.saturation_grow)
            m = sat if m is None else (m | sat)
    v = None
    if var is not None:
        _check_aligned(np.shape(var), s.shape, "variance")
        v = np.asarray(var).astype(np.float32)
    if cfg.method == "none":
        return np.zeros(s.shape, dtype=bool), s
    if cfg.method == "lacosmic" and v is not None and not cfg.use_variance:
        v = None
    kernel, _depth, kwargs = _kernel(cfg, gain, read_noise, satlevel)
    result = kernel(s, v, m, **kwargs)
    return result["mask"], result["clean"]


def _check_noise(gain: float, read_noise: float | None) -> None:
    if not (gain > 0):
        raise ConfigError(f"detect_cosmics: gain must be positive, got {gain!r}")
    if read_noise is None or not (read_noise >= 0):
        raise ConfigError(f"detect_cosmics: read_noise must be >= 0 electrons, got {read_noise!r}")


def _check_aligned(shape: tuple[int, ...], sci_shape: tuple[int, ...], label: str) -> None:
    if tuple(shape) != tuple(sci_shape):
        raise ShapeMismatchError(
            f"detect_cosmics: {label} of shape {tuple(shape)} differs from the image {tuple(sci_shape)}"
        )


def _kernel(
    cfg: CosmicConfig, gain: float, read_noise: float, satlevel: float
) -> tuple[Callable[..., np.ndarray], int, dict[str, Any]]:
    """The block kernel of the configured method, its halo and its parameters."""
    if cfg.method == "lacosmic":
        depth = lacosmic_halo(cfg) if cfg.halo is None else cfg.halo
        return (
            _lacosmic_block,
            depth,
            {
                "params": _lacosmic_params(cfg),
                "gain": float(gain),
                "readnoise": float(read_noise),
                "satlevel": satlevel,
                "protect": (float(cfg.protect_sigma), float(cfg.protect_tolerance)) if cfg.protect else None,
                "fwhm": cfg.seeing,
            },
        )
    depth = cfg.size // 2 if cfg.halo is None else max(cfg.halo, cfg.size // 2)
    return (
        _median_block,
        depth,
        {"size": cfg.size, "threshold": float(cfg.threshold), "gain": float(gain), "readnoise": float(read_noise)},
    )


def cosmic_step(cfg: CosmicConfig) -> str:
    """The history line of the cosmic-ray step."""
    if cfg.method == "lacosmic":
        return (
            f"cosmics: lacosmic sigclip={cfg.sigclip} sigfrac={cfg.sigfrac} "
            f"objlim={cfg.objlim} niter={cfg.niter} sepmed={cfg.sepmed} "
            f"halo={lacosmic_halo(cfg) if cfg.halo is None else cfg.halo}"
            f"{f' stars protected ({cfg.protect_sigma:g} sigma)' if cfg.protect else ''}"
            f"{' cleaned' if cfg.clean else ''}"
        )
    return f"cosmics: median size={cfg.size} threshold={cfg.threshold}{' cleaned' if cfg.clean else ''}"


def frame_read_noise(layout: Any) -> float:
    """The read noise a frame's cosmic-ray noise model uses: its amplifiers' largest (e-), or
    0 when none is known (the VAR plane then carries the noise)."""
    noises = [a.rdnoise for a in (layout.amplifiers if layout else ()) if a.rdnoise is not None]
    return max(noises) if noises else 0.0


def clean_arrays_np(
    sci: np.ndarray,
    var: np.ndarray,
    dq: np.ndarray,
    config: CosmicConfig,
    *,
    read_noise: float,
    saturation: np.ndarray | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clean_frame` on arrays in memory: the new ``(sci, dq)`` of one calibrated chip.

    ``info``, when given, receives the chip's QA figures: ``cosmic_hits`` (connected groups of
    flagged pixels), ``seeing_fwhm`` (pixels, measured from the stars; NaN when too few) and
    ``source_flagged`` (the fraction of the pixels of detected sources flagged as cosmic rays).
    """
    cfg = config
    flagged = (dq & np.uint16(dqbits.BAD | dqbits.NODATA)) != 0
    saturated = (dq & np.uint16(dqbits.SATURATED)) != 0
    if saturation is not None:
        saturated = saturated | np.asarray(saturation).astype(bool)
    flagged = flagged | grow_mask_np(saturated, cfg.saturation_grow)
    seeing = cfg.seeing
    measured = None
    if cfg.method == "lacosmic" and seeing is None:
        data, invar, inmask, _ = _prepare(sci, var if cfg.use_variance else None, flagged)
        measured = measure_fwhm(data, _noise(data, invar, 1.0, read_noise), inmask)
        # measured once: the star protection uses it, the QA reports it
        seeing = min(measured if measured is not None else cfg.psffwhm, MAX_SEEING)
        cfg = dataclasses.replace(cfg, seeing=max(seeing, 0.5))
    cr, cleaned = detect_cosmics_np(sci, var, gain=1.0, read_noise=read_noise, mask=flagged, config=cfg)
    new_dq = dq | (cr.astype(dqbits.DQ_DTYPE) * dqbits.DQ_DTYPE(dqbits.COSMIC))
    if info is not None:
        from scipy import ndimage as _nd

        from ._sources import star_pixels

        info["cosmic_hits"] = int(_nd.label(cr, structure=np.ones((3, 3), dtype=bool))[1])
        info["seeing_fwhm"] = float(measured) if measured is not None else float(cfg.seeing or np.nan)
        noise = np.sqrt(np.maximum(np.nan_to_num(np.asarray(var, dtype=np.float32)), 0.0))
        # sources found on the cleaned image: the hits themselves are no sources
        src = star_pixels(np.nan_to_num(np.asarray(cleaned, dtype=np.float32)), noise, flagged, seeing or cfg.psffwhm)
        n = int(src.sum())
        info["source_flagged"] = float((src & cr).sum() / n) if n else float("nan")
    return (cleaned if config.clean else sci), new_dq


def clean_frame(
    frame: Frame,
    config: CosmicConfig | None = None,
    *,
    saturation: float | da.Array | None = None,
    read_noise: float | None = None,
) -> Frame:
    """Detect cosmic rays on a calibrated :class:`~ccdask.frame.Frame` (electrons).

    Pixels already flagged BAD or NODATA in the frame's DQ are masked, and so are SATURATED
    pixels grown by ``config.saturation_grow``. The result has DQ bit 4 set on cosmic-ray
    pixels and, when ``config.clean``, the cleaned SCI.

    Parameters
    ----------
    frame : Frame
        One calibrated chip; SCI in electrons, VAR in e-².
    config : CosmicConfig, optional
        Method and parameters.
    saturation : float or dask.array.Array, optional
        Saturation level in electrons or a saturated-pixel mask (see :func:`detect_cosmics`).
    read_noise : float, optional
        Read noise (e-); by default the largest of the layout's amplifiers (or 0 when the VAR
        plane carries the noise).

    Returns
    -------
    Frame
        The frame with updated SCI and DQ and one history line.
    """
    cfg = config or CosmicConfig()
    if cfg.method == "none":
        return frame
    if read_noise is None:
        read_noise = frame_read_noise(frame.layout)
    flagged = (frame.dq & np.uint16(dqbits.BAD | dqbits.NODATA)) != 0
    saturated = (frame.dq & np.uint16(dqbits.SATURATED)) != 0
    if saturation is not None and (isinstance(saturation, da.Array) or np.ndim(saturation) == 2):
        saturated = saturated | da.asarray(saturation).astype(bool)
        saturation = None
    flagged = flagged | grow_mask(saturated, cfg.saturation_grow)
    cr, cleaned = detect_cosmics(
        frame.sci, frame.var, gain=1.0, read_noise=read_noise, saturation=saturation, mask=flagged, config=cfg
    )
    dq = frame.dq | (cr.astype(dqbits.DQ_DTYPE) * dqbits.DQ_DTYPE(dqbits.COSMIC))
    sci = cleaned if cfg.clean else frame.sci
    return frame.evolve(step=cosmic_step(cfg), sci=sci, dq=dq)
