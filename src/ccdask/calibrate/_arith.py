"""Gain, initial variance and the master-frame corrections, with variance propagation.

All functions take and return lazy dask arrays; pixel data come out as float32. Per-amplifier
numbers (gain, read noise) are applied block by block from the amplifiers' ``ccdsec``
rectangles, so no full-frame map of them is ever put in the graph.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any, NamedTuple

import dask.array as da
import numpy as np

from ..errors import ConfigError, PlanError, ShapeMismatchError
from ..frame import Master
from ..profiles._layout import ChipLayout
from ._config import OverscanConfig
from ._overscan import overscan_stats, overscan_stats_np
from ._regions import Rect, block_location, check_disjoint, local_slices, rect_of, whole_block

__all__ = [
    "Corrected",
    "FlatCorrected",
    "apply_gain",
    "apply_gain_np",
    "divide_flat",
    "divide_flat_np",
    "initial_variance",
    "initial_variance_np",
    "read_noise_from_overscan",
    "read_noise_from_overscan_np",
    "subtract_bias",
    "subtract_bias_np",
    "subtract_dark",
    "subtract_dark_np",
]


class Corrected(NamedTuple):
    """A corrected frame: lazy float32 ``sci`` and ``var`` (None when no variance came in)."""

    sci: da.Array
    var: da.Array | None


class FlatCorrected(NamedTuple):
    """A flat-fielded frame plus the boolean map of pixels whose flat was raised to ``min_value``."""

    sci: da.Array
    var: da.Array | None
    low: da.Array


# -- per-amplifier kernels ----------------------------------------------------------------------


def _gain_kernel(
    block: np.ndarray, *, rects: tuple[Rect, ...], gains: tuple[float, ...], block_info: dict[Any, Any] | None = None
) -> np.ndarray:
    where = block_location(block_info)
    out = np.empty(block.shape, dtype=np.float32)
    for rect, gain in zip(rects, gains, strict=True):
        sl = local_slices(rect, where)
        if sl is not None:
            out[sl] = block[sl] * np.float64(gain)
    return out


def _variance_kernel(
    block: np.ndarray, *rns: float | np.ndarray, rects: tuple[Rect, ...], block_info: dict[Any, Any] | None = None
) -> np.ndarray:
    where = block_location(block_info)
    out = np.empty(block.shape, dtype=np.float32)
    for rect, rn in zip(rects, rns, strict=True):
        sl = local_slices(rect, where)
        if sl is not None:
            view = out[sl]
            np.maximum(block[sl], np.float32(0), out=view)
            view += np.float32(np.float64(rn) ** 2)
    return out


def _ccd_rects(layout: ChipLayout) -> dict[str, Rect]:
    rects = {a.name: rect_of(a.ccdsec) for a in layout.amplifiers}
    check_disjoint(layout, rects, "ccdsecs")
    return rects


def _check_trimmed(arr: da.Array, layout: ChipLayout, what: str) -> da.Array:
    out = arr if isinstance(arr, da.Array) else da.asarray(arr)
    _check_trimmed_shape(out.shape, layout, what)
    return out


def _check_trimmed_np(arr: np.ndarray, layout: ChipLayout, what: str) -> np.ndarray:
    out = np.asarray(arr)
    _check_trimmed_shape(out.shape, layout, what)
    return out


def _check_trimmed_shape(shape: tuple[int, ...], layout: ChipLayout, what: str) -> None:
    if tuple(shape) != tuple(layout.trimmed_shape):
        raise ShapeMismatchError(
            f"chip {layout.name}: {what} has shape {tuple(shape)}, expected the trimmed "
            f"shape {tuple(layout.trimmed_shape)}"
        )


def _valid_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _check_amp_names(layout: ChipLayout, mapping: Mapping[str, object], what: str) -> None:
    names = {a.name for a in layout.amplifiers}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise ConfigError(
            f"chip {layout.name}: {what} given for unknown amplifier(s) {unknown}; the chip has {sorted(names)}"
        )


def apply_gain(trimmed: da.Array, layout: ChipLayout, gain: Mapping[str, float] | None = None) -> da.Array:
    """Convert a trimmed chip from ADU to electrons, each amplifier by its own gain.

    Parameters
    ----------
    trimmed : dask.array.Array
        The assembled chip in ADU, shape ``layout.trimmed_shape``.
    layout : ChipLayout
        The chip's amplifiers; ``amp.gain`` (e-/ADU) is used unless overridden.
    gain : mapping of str to float, optional
        Gains (e-/ADU) overriding the layout's for the named amplifiers (e.g. measured from
        flat/bias pairs).

    Returns
    -------
    dask.array.Array
        Lazy float32 array in electrons, same shape and chunks.

    Raises
    ------
    ConfigError
        A gain is missing, not a finite positive number, or given for an unknown amplifier;
        the message names the chip and amplifier.
    """
    arr = _check_trimmed(trimmed, layout, "the frame to gain-correct")
    rects = _ccd_rects(layout)
    return da.map_blocks(
        _gain_kernel,
        arr,
        rects=tuple(rects.values()),
        gains=_gains(layout, gain),
        dtype=np.float32,
        meta=np.array((), dtype=np.float32),
        token=f"gain-{layout.name}",
    )


def apply_gain_np(trimmed: np.ndarray, layout: ChipLayout, gain: Mapping[str, float] | None = None) -> np.ndarray:
    """:func:`apply_gain` on a whole trimmed chip held in memory."""
    arr = _check_trimmed_np(trimmed, layout, "the frame to gain-correct")
    rects = _ccd_rects(layout)
    return _gain_kernel(arr, rects=tuple(rects.values()), gains=_gains(layout, gain), block_info=whole_block(arr.shape))


def _gains(layout: ChipLayout, gain: Mapping[str, float] | None) -> tuple[float, ...]:
    """Each amplifier's gain (the layout's unless overridden), validated."""
    given = dict(gain or {})
    _check_amp_names(layout, given, "gain")
    gains = []
    for amp in layout.amplifiers:
        g = given.get(amp.name, amp.gain)
        if not _valid_number(g) or not float(g) > 0:
            raise ConfigError(
                f"chip {layout.name}, amplifier {amp.name}: gain {g!r} is missing or invalid "
                "(need a finite number of e-/ADU > 0)"
            )
        gains.append(float(g))
    return tuple(gains)


def initial_variance(
    electrons: da.Array, layout: ChipLayout, read_noise: Mapping[str, float | da.Array] | None = None
) -> da.Array:
    """The variance of a raw frame in electrons²: ``rn² + max(signal, 0)`` per amplifier.

    Parameters
    ----------
    electrons : dask.array.Array
        The overscan-subtracted, trimmed, gain-corrected chip (e-), shape
        ``layout.trimmed_shape``; its positive part is the Poisson term.
    layout : ChipLayout
        The chip's amplifiers; ``amp.rdnoise`` (e-) is used unless overridden.
    read_noise : mapping of str to float or 0-d dask array, optional
        Read noise in electrons overriding the layout's for the named amplifiers, e.g. the
        lazy values of :func:`read_noise_from_overscan`. Lazy values are not validated.

    Returns
    -------
    dask.array.Array
        Lazy float32 variance (e-²), same shape and chunks (NaN where the signal is NaN).

    Raises
    ------
    ConfigError
        No read noise is known for an amplifier (neither in the layout nor in ``read_noise``),
        or a given value is not a finite number >= 0; the message names the chip and amplifier.
    """
    arr = _check_trimmed(electrons, layout, "the frame to build a variance for")
    rects = _ccd_rects(layout)
    return da.map_blocks(
        _variance_kernel,
        arr,
        *_read_noises(layout, read_noise),
        rects=tuple(rects.values()),
        dtype=np.float32,
        meta=np.array((), dtype=np.float32),
        token=f"variance-{layout.name}",
    )


def initial_variance_np(
    electrons: np.ndarray, layout: ChipLayout, read_noise: Mapping[str, float | np.ndarray] | None = None
) -> np.ndarray:
    """:func:`initial_variance` on a whole trimmed chip held in memory (read noises may be
    0-d numpy arrays, e.g. from :func:`ccdask.calibrate._overscan.overscan_stats_np`)."""
    arr = _check_trimmed_np(electrons, layout, "the frame to build a variance for")
    rects = _ccd_rects(layout)
    return _variance_kernel(
        arr, *_read_noises(layout, read_noise), rects=tuple(rects.values()), block_info=whole_block(arr.shape)
    )


def _read_noises(layout: ChipLayout, read_noise: Mapping[str, Any] | None) -> list[Any]:
    """Each amplifier's read noise (the layout's unless overridden), validated; 0-d arrays
    (lazy or numpy: measured values) are passed through."""
    given = dict(read_noise or {})
    _check_amp_names(layout, given, "read noise")
    rns: list[Any] = []
    for amp in layout.amplifiers:
        rn = given.get(amp.name, amp.rdnoise)
        if rn is None:
            raise ConfigError(
                f"chip {layout.name}, amplifier {amp.name}: no read noise known; set it in the "
                "instrument profile or header, or pass read_noise (e.g. measured from the "
                "overscan with read_noise_from_overscan)"
            )
        if isinstance(rn, (da.Array, np.ndarray)):
            if rn.ndim != 0:
                raise ConfigError(
                    f"chip {layout.name}, amplifier {amp.name}: a measured read noise must be a 0-d "
                    f"array, got shape {rn.shape}"
                )
            rns.append(rn)
            continue
        if not _valid_number(rn) or float(rn) < 0:
            raise ConfigError(
                f"chip {layout.name}, amplifier {amp.name}: read noise {rn!r} is invalid (need a "
                "finite number of electrons >= 0)"
            )
        rns.append(float(rn))
    return rns


def read_noise_from_overscan(
    raw: da.Array, layout: ChipLayout, config: OverscanConfig | None = None
) -> dict[str, da.Array]:
    """Read noise per amplifier measured from the overscan, in electrons.

    The overscan noise (robust standard deviation of the overscan pixels about the overscan
    model, ADU, see :func:`overscan_stats`) times the amplifier's gain.

    Parameters
    ----------
    raw : dask.array.Array
        The raw chip, shape ``layout.raw_shape``, in ADU.
    layout : ChipLayout
        The chip's amplifiers; each must have an overscan.
    config : OverscanConfig, optional
        Collapse method, skips and model used for the measurement.

    Returns
    -------
    dict of str to dask.array.Array
        ``{amplifier name: lazy 0-d float64 read noise in e-}``, ready for
        :func:`initial_variance`'s ``read_noise``.
    """
    stats = overscan_stats(raw, layout, config)
    return {amp.name: stats[amp.name].noise * float(amp.gain) for amp in layout.amplifiers}


def read_noise_from_overscan_np(
    raw: np.ndarray, layout: ChipLayout, config: OverscanConfig | None = None
) -> dict[str, np.ndarray]:
    """:func:`read_noise_from_overscan` on a whole raw chip in memory: 0-d float64 arrays."""
    stats = overscan_stats_np(raw, layout, config)
    return {amp.name: np.asarray(stats[amp.name].noise * float(amp.gain)) for amp in layout.amplifiers}


# -- masters ------------------------------------------------------------------------------------


def _f32(x: da.Array) -> da.Array:
    x = x if isinstance(x, da.Array) else da.asarray(x)
    return x.astype(np.float32) if x.dtype != np.float32 else x


def _like(x: da.Array | None, ref: da.Array) -> da.Array | None:
    """``x`` chunked as ``ref`` (map_blocks needs matching blocks); None stays None."""
    if x is None:
        return None
    x = x if isinstance(x, da.Array) else da.asarray(x)
    return x if x.chunks == ref.chunks else x.rechunk(ref.chunks)


def _check_master(sci: da.Array, master: Master, kind: str) -> None:
    if not isinstance(master, Master):
        raise TypeError(f"expected a ccdask.frame.Master for the {kind}, got {type(master).__name__}")
    if tuple(master.data.shape) != tuple(sci.shape):
        raise ShapeMismatchError(
            f"chip {master.chip}: {master.kind} master of shape {tuple(master.data.shape)} does "
            f"not match the frame's shape {tuple(sci.shape)}"
        )
    if master.variance is not None and tuple(master.variance.shape) != tuple(sci.shape):
        raise ShapeMismatchError(
            f"chip {master.chip}: {master.kind} master variance of shape "
            f"{tuple(master.variance.shape)} does not match the frame's shape {tuple(sci.shape)}"
        )


def subtract_bias(sci: da.Array, var: da.Array | None, master: Master) -> Corrected:
    """Subtract a bias master: ``sci - B``, ``var + var_B``.

    Parameters
    ----------
    sci : dask.array.Array
        The frame (e-).
    var : dask.array.Array or None
        Its variance (e-²); None propagates no variance.
    master : Master
        The bias master (e-), same shape; its ``variance`` (variance of the master's mean,
        e-²) is added when not None.

    Returns
    -------
    Corrected
        ``(sci, var)`` lazy float32.
    """
    sci = _f32(sci)
    _check_master(sci, master, "bias")
    out = sci - _f32(master.data)
    if var is None:
        return Corrected(out, None)
    var = _f32(var)
    if master.variance is not None:
        var = var + _f32(master.variance)
    return Corrected(out, var)


def subtract_dark(sci: da.Array, var: da.Array | None, master: Master, exptime: float | None) -> Corrected:
    """Subtract a dark master scaled to the frame's exposure time.

    A master without ``exptime`` is a dark *rate* (e-/s) and is multiplied by ``exptime``. A
    master with its own ``exptime`` (combined at one exposure time, ``nearest`` mode) is scaled
    by ``exptime / master.exptime``, as ``ccdproc.subtract_dark(scale=True)`` does. With ``s``
    the factor: ``sci - s D``, ``var + s² var_D``.

    Parameters
    ----------
    sci : dask.array.Array
        The bias-subtracted frame (e-).
    var : dask.array.Array or None
        Its variance (e-²); None propagates no variance.
    master : Master
        The dark master.
    exptime : float
        The frame's exposure time in seconds.

    Returns
    -------
    Corrected
        ``(sci, var)`` lazy float32.

    Raises
    ------
    PlanError
        The exposure time (frame's or master's) is missing or not a finite number >= 0 (> 0 for
        the master's).
    """
    sci = _f32(sci)
    _check_master(sci, master, "dark")
    scale = _dark_scale(master.chip, exptime, master.exptime)
    out = sci - _f32(master.data) * np.float32(scale)
    if var is None:
        return Corrected(out, None)
    var = _f32(var)
    if master.variance is not None:
        var = var + _f32(master.variance) * np.float32(scale * scale)
    return Corrected(out, var)


def _dark_scale(chip: str, exptime: float | None, master_exptime: float | None) -> float:
    """The factor of a dark master: the frame's exposure time for a rate, else the ratio."""
    if exptime is None or not _valid_number(exptime) or float(exptime) < 0:
        raise PlanError(f"chip {chip}: the dark needs the frame's exposure time, got {exptime!r}")
    if master_exptime is None:
        return float(exptime)
    if not _valid_number(master_exptime) or not float(master_exptime) > 0:
        raise PlanError(f"chip {chip}: dark master exposure time {master_exptime!r} is invalid")
    return float(exptime) / float(master_exptime)


# -- numpy forms of the master corrections: one whole chip in memory ---------------------------


def _f32np(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype != np.float32 else x


def _check_master_np(sci: np.ndarray, chip: str, kind: str, data: np.ndarray, variance: np.ndarray | None) -> None:
    for what, arr in (("", data), (" variance", variance)):
        if arr is not None and tuple(np.shape(arr)) != tuple(sci.shape):
            raise ShapeMismatchError(
                f"chip {chip}: {kind} master{what} of shape {tuple(np.shape(arr))} does not match "
                f"the frame's shape {tuple(sci.shape)}"
            )


def subtract_bias_np(
    sci: np.ndarray, var: np.ndarray | None, bias: np.ndarray, bias_var: np.ndarray | None = None, *, chip: str = ""
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`subtract_bias` on arrays in memory: ``sci - B``, ``var + var_B``."""
    sci = _f32np(sci)
    _check_master_np(sci, chip, "bias", bias, bias_var)
    out = sci - _f32np(bias)
    if var is None:
        return out, None
    var = _f32np(var)
    if bias_var is not None:
        var = var + _f32np(bias_var)
    return out, var


def subtract_dark_np(
    sci: np.ndarray,
    var: np.ndarray | None,
    dark: np.ndarray,
    dark_var: np.ndarray | None,
    exptime: float | None,
    *,
    dark_exptime: float | None = None,
    chip: str = "",
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`subtract_dark` on arrays in memory (``dark_exptime`` None: ``dark`` is a rate)."""
    sci = _f32np(sci)
    _check_master_np(sci, chip, "dark", dark, dark_var)
    scale = _dark_scale(chip, exptime, dark_exptime)
    out = sci - _f32np(dark) * np.float32(scale)
    if var is None:
        return out, None
    var = _f32np(var)
    if dark_var is not None:
        var = var + _f32np(dark_var) * np.float32(scale * scale)
    return out, var


def divide_flat_np(
    sci: np.ndarray,
    var: np.ndarray | None,
    flat: np.ndarray,
    flat_var: np.ndarray | None = None,
    min_value: float | None = None,
    *,
    chip: str = "",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """:func:`divide_flat` on arrays in memory: ``(sci, var, low)`` from the same kernels."""
    sci = _f32np(sci)
    _check_master_np(sci, chip, "flat", flat, flat_var)
    mv = _min_value(chip, min_value)
    out = _flat_sci(sci, flat, mv)
    low = np.zeros(sci.shape, dtype=bool) if mv is None else _flat_low(flat, mv)
    if var is None:
        return out, None, low
    return out, _flat_var(sci, _f32np(var), flat, flat_var, mv), low


def _min_value(chip: str, min_value: float | None) -> float | None:
    if min_value is not None and not _valid_number(min_value):
        raise ConfigError(f"chip {chip}: flat min_value {min_value!r} is not a number")
    return None if min_value is None else float(min_value)


def _guarded_flat(f: np.ndarray, min_value: float | None) -> np.ndarray:
    f = np.asarray(f, dtype=np.float32)
    return f if min_value is None else np.maximum(f, np.float32(min_value))


def _flat_sci(s: np.ndarray, f: np.ndarray, min_value: float | None) -> np.ndarray:
    # A float32 quotient is correctly rounded: the same as dividing in float64 and rounding.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(s, dtype=np.float32) / _guarded_flat(f, min_value)


def _flat_var(
    s: np.ndarray, v: np.ndarray, f: np.ndarray, vf: np.ndarray | None, min_value: float | None
) -> np.ndarray:
    # var/f² + s² var_f/f⁴ written as (var + (s/f)² var_f) / f²: no f⁴ to underflow.
    g = _guarded_flat(f, min_value)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if vf is None:
            out = np.asarray(v, dtype=np.float32) / (g * g)
        else:
            out = np.asarray(s, dtype=np.float32) / g
            out *= out
            out *= np.asarray(vf, dtype=np.float32)
            out += np.asarray(v, dtype=np.float32)
            out /= g * g
    return out


def _flat_low(f: np.ndarray, min_value: float) -> np.ndarray:
    # compared in float64, as ccdproc does: min_value need not be a float32 number
    return np.asarray(f, dtype=np.float64) < min_value


def divide_flat(sci: da.Array, var: da.Array | None, master: Master, min_value: float | None = None) -> FlatCorrected:
    """Divide by a normalised flat, propagating the variance of both.

    As ``ccdproc.flat_correct(min_value=..., norm_value=1)``: flat values below ``min_value``
    are replaced by ``min_value`` first (the master is *not* renormalised: ccdask masters are
    already normalised). With ``f`` the guarded flat: ``sci / f`` and
    ``var / f² + sci² var_f / f⁴`` (the flat's own variance kept where it was raised), all in
    float32 (the quotient is correctly rounded, as if computed in float64; the variance is
    good to a few float32 ulps).

    Parameters
    ----------
    sci : dask.array.Array
        The bias- and dark-subtracted frame (e-).
    var : dask.array.Array or None
        Its variance (e-²); None propagates no variance.
    master : Master
        The normalised flat; its ``variance`` is used when not None.
    min_value : float, optional
        Floor of the flat; None leaves the flat as it is (zeros then give inf/NaN).

    Returns
    -------
    FlatCorrected
        ``(sci, var, low)``: lazy float32 frame and variance, and a lazy boolean map of the
        pixels whose flat was below ``min_value`` (all False when ``min_value`` is None).
    """
    sci = _f32(sci)
    _check_master(sci, master, "flat")
    mv = _min_value(master.chip, min_value)
    flat = _like(master.data, sci)
    meta32 = np.array((), dtype=np.float32)
    out = da.map_blocks(_flat_sci, sci, flat, mv, dtype=np.float32, meta=meta32, token=f"flat-{master.chip}")
    if mv is None:
        low = da.zeros(sci.shape, dtype=bool, chunks=sci.chunks)
    else:
        low = da.map_blocks(
            _flat_low, flat, mv, dtype=bool, meta=np.array((), dtype=bool), token=f"flat-low-{master.chip}"
        )
    if var is None:
        return FlatCorrected(out, None, low)
    var = _like(_f32(var), sci)
    new_var = da.map_blocks(
        _flat_var,
        sci,
        var,
        flat,
        _like(master.variance, sci),
        mv,
        dtype=np.float32,
        meta=meta32,
        token=f"flat-var-{master.chip}",
    )
    return FlatCorrected(out, new_var, low)
