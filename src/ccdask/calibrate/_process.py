"""One call per chip image: ``process`` is ccdask's counterpart of ``ccdproc.ccd_process``.

From a raw chip (lazy, raw ADU) to a calibrated :class:`~ccdask.frame.Frame` in electrons:
saturation (raw ADU, per amplifier) → overscan per amplifier → trim and assemble → gain →
variance → bias → dark (scaled by exposure time) → flat → DQ (static bad pixels, saturation,
low flat, non-finite) → cosmic rays → optional interpolation of bad pixels. Each step is one
of the pure functions of :mod:`ccdask.calibrate`, :mod:`ccdask.calibrate._masks` and :mod:`ccdask.calibrate._cosmics`;
this module only strings them together as the configuration says and records the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import numpy as np
from astropy.io import fits

from .. import dq as DQ
from ..catalog import Entry
from ..frame import Frame, Master
from ..io._ccddata import from_ccddata, is_ccddata
from ..profiles._layout import ChipLayout
from ..utils import ConfigBase, option
from ._arith import (
    apply_gain,
    apply_gain_np,
    divide_flat,
    divide_flat_np,
    initial_variance,
    initial_variance_np,
    read_noise_from_overscan,
    read_noise_from_overscan_np,
    subtract_bias,
    subtract_bias_np,
    subtract_dark,
    subtract_dark_np,
)
from ._assemble import assemble, assemble_np
from ._bleed import bleed_history, bleed_mask, bleed_mask_np
from ._config import OverscanConfig
from ._cosmics import CosmicConfig, clean_arrays_np, clean_frame, cosmic_step, frame_read_noise
from ._crosstalk import (
    CrosstalkConfig,
    CrosstalkInputs,
    correct_crosstalk,
    correct_crosstalk_np,
    crosstalk_history,
    load_crosstalk,
)
from ._linearity import LinearityConfig, correct_linearity, correct_linearity_np, linearity_history, load_linearity
from ._masks import (
    MaskConfig,
    build_dq,
    build_dq_np,
    interpolate_bad,
    interpolate_bad_np,
    saturation_mask,
    saturation_mask_np,
)
from ._overscan import overscan_stats, overscan_stats_np, subtract_overscan, subtract_overscan_np

__all__ = ["ChipMasters", "ProcessConfig", "open_raw", "process", "process_entry", "process_in_memory"]

Role = Literal["bias", "dark", "flat", "science"]


@dataclass(frozen=True)
class ProcessConfig(ConfigBase):
    """The parameters of the per-chip chain: what :func:`process` needs of a reduction's
    configuration (``ReduceConfig.process_config()`` gives it; its fields mirror those of
    ``ReduceConfig`` of the same names, with ``flat_min_value`` for ``flat.min_value``)."""

    chunk_mb: float = option(
        32.0,
        "target size of the pixel chunks of one frame, in MiB",
        check=lambda v: 0.25 <= v <= 4096,
        why="must lie between 0.25 and 4096",
    )
    read_noise: Literal["header", "overscan", "auto"] = option(
        "header",
        "where the read noise comes from: the header/profile, measured in each frame's overscan, or "
        "auto: the header/profile where it gives one, else the frame's overscan",
    )
    crosstalk: CrosstalkConfig = option(CrosstalkConfig(), "crosstalk between the amplifiers of a chip (raw ADU)")
    overscan: OverscanConfig = option(OverscanConfig(), "overscan per amplifier")
    linearity: LinearityConfig = option(LinearityConfig(), "nonlinearity per amplifier (ADU, after the overscan)")
    masks: MaskConfig = option(MaskConfig(), "bad pixels, saturation, interpolation")
    cosmics: CosmicConfig = option(CosmicConfig(), "cosmic rays in science frames")
    flat_min_value: float = option(
        0.1,
        "flat values below this are replaced by it when dividing, and their pixels flagged bad",
        check=lambda v: v > 0,
        why="must be positive",
    )

    def chunks_for(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Chunks of a chip of ``shape``: whole rows, about ``chunk_mb`` MiB of float32 each."""
        ny, nx = shape
        rows = max(1, int(self.chunk_mb * 2**20 // (4 * max(nx, 1))))
        return (min(rows, ny), nx)


def as_process_config(config: Any) -> ProcessConfig:
    """``config`` as a :class:`ProcessConfig`: None gives the defaults; a reduction's
    configuration (anything with ``process_config()``) gives its chain parameters."""
    if config is None:
        return ProcessConfig()
    if isinstance(config, ProcessConfig):
        return config
    if hasattr(config, "process_config"):
        return config.process_config()
    raise TypeError(f"expected a ReduceConfig or ProcessConfig, not {type(config).__name__}")


@dataclass(frozen=True)
class ChipMasters:
    """The masters that calibrate one chip (any may be None) and its static bad-pixel mask."""

    bias: Master | None = None
    dark: Master | None = None
    flat: Master | None = None
    bad: da.Array | None = None


def open_raw(entry: Entry, chunks: Any = None) -> da.Array:
    """The raw chip of a catalogue entry as a lazy float32 array (raw ADU)."""
    return entry.source.to_dask(chunks=chunks)


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if v is not None)


class _Lazy:
    """The steps as dask graph builders (the dask form of each step)."""

    saturation = staticmethod(saturation_mask)
    bleed = staticmethod(bleed_mask)
    crosstalk = staticmethod(correct_crosstalk)
    linearity = staticmethod(correct_linearity)
    subtract_overscan = staticmethod(subtract_overscan)
    overscan_stats = staticmethod(overscan_stats)
    assemble = staticmethod(assemble)
    apply_gain = staticmethod(apply_gain)
    read_noise = staticmethod(read_noise_from_overscan)
    initial_variance = staticmethod(initial_variance)
    where = staticmethod(da.where)
    isfinite = staticmethod(da.isfinite)
    build_dq = staticmethod(build_dq)
    interpolate_bad = staticmethod(interpolate_bad)

    @staticmethod
    def subtract_bias(sci: Any, var: Any, m: Master) -> tuple[Any, Any]:
        return tuple(subtract_bias(sci, var, m))

    @staticmethod
    def subtract_dark(sci: Any, var: Any, m: Master, exptime: float | None) -> tuple[Any, Any]:
        return tuple(subtract_dark(sci, var, m, exptime))

    @staticmethod
    def divide_flat(sci: Any, var: Any, m: Master, min_value: float) -> tuple[Any, Any, Any]:
        return tuple(divide_flat(sci, var, m, min_value=min_value))

    @staticmethod
    def cosmics(
        sci: Any, var: Any, dqa: Any, cfg: CosmicConfig, saturated: Any, layout: ChipLayout, info: dict[str, Any]
    ) -> tuple[Any, Any]:
        f = clean_frame(
            Frame(sci=sci, var=var, dq=dqa, chip=layout.name, header=fits.Header(), layout=layout),
            cfg,
            saturation=saturated,
        )
        return f.sci, f.dq


class _Eager:
    """The same steps on numpy arrays: one whole chip in memory, nothing lazy."""

    saturation = staticmethod(saturation_mask_np)
    bleed = staticmethod(bleed_mask_np)
    crosstalk = staticmethod(correct_crosstalk_np)
    linearity = staticmethod(correct_linearity_np)
    subtract_overscan = staticmethod(subtract_overscan_np)
    overscan_stats = staticmethod(overscan_stats_np)
    assemble = staticmethod(assemble_np)
    apply_gain = staticmethod(apply_gain_np)
    read_noise = staticmethod(read_noise_from_overscan_np)
    initial_variance = staticmethod(initial_variance_np)
    where = staticmethod(np.where)
    isfinite = staticmethod(np.isfinite)
    build_dq = staticmethod(build_dq_np)
    interpolate_bad = staticmethod(interpolate_bad_np)

    @staticmethod
    def subtract_bias(sci: Any, var: Any, m: _Arrays) -> tuple[Any, Any]:
        return subtract_bias_np(sci, var, m.data, m.variance, chip=m.chip)

    @staticmethod
    def subtract_dark(sci: Any, var: Any, m: _Arrays, exptime: float | None) -> tuple[Any, Any]:
        return subtract_dark_np(sci, var, m.data, m.variance, exptime, chip=m.chip)

    @staticmethod
    def divide_flat(sci: Any, var: Any, m: _Arrays, min_value: float) -> tuple[Any, Any, Any]:
        return divide_flat_np(sci, var, m.data, m.variance, min_value, chip=m.chip)

    @staticmethod
    def cosmics(
        sci: Any, var: Any, dqa: Any, cfg: CosmicConfig, saturated: Any, layout: ChipLayout, info: dict[str, Any]
    ) -> tuple[Any, Any]:
        return clean_arrays_np(sci, var, dqa, cfg, read_noise=frame_read_noise(layout), saturation=saturated, info=info)


@dataclass(frozen=True)
class _Arrays:
    """A master held in memory: what the eager chain needs of it."""

    chip: str
    data: np.ndarray
    variance: np.ndarray | None
    label: str


@dataclass(frozen=True)
class _Chained:
    sci: Any
    var: Any
    dq: Any
    history: tuple[str, ...]
    stats: dict[str, Any]


def _chain(
    ops: Any,
    raw: Any,
    masters: dict[str, Any],
    bad: Any,
    cfg: ProcessConfig,
    *,
    layout: ChipLayout,
    exptime: float | None,
    role: Role,
    crosstalk: CrosstalkInputs | None = None,
) -> _Chained:
    """The per-chip chain, written once: ``ops`` gives each step as a dask graph builder
    (:func:`process`) or as a numpy function (:func:`process_in_memory`). ``masters`` maps
    ``bias``/``dark``/``flat`` to what ``ops`` takes (Master or _Arrays), each with a label.
    ``crosstalk`` (the table and the other chips' source amplifiers) overrides ``crosstalk.file``."""
    history: list[str] = []
    stats: dict[str, Any] = {}

    def label(kind: str) -> str:
        m = masters[kind]
        return m.label if isinstance(m, _Arrays) else m.meta.get("label", "master")

    saturated = ops.saturation(raw, layout, grow=cfg.masks.saturation_grow)
    bleed = None
    if cfg.masks.bleed:  # raw ADU like the saturation; DQ bit 32, treated as saturated from here on
        m = cfg.masks
        bleed = ops.bleed(raw, layout, level=m.bleed_level, length=m.bleed_length, grow=m.bleed_grow)
        history.append(bleed_history(m.bleed_level, m.bleed_length, m.bleed_grow))
    full = saturated if bleed is None else (saturated | bleed)
    if crosstalk is None and cfg.crosstalk.file is not None:
        crosstalk = CrosstalkInputs(load_crosstalk(cfg.crosstalk.file))
    if crosstalk is not None:  # raw ADU, before the overscan; saturation stays that of the raw frame
        raw = ops.crosstalk(raw, layout, crosstalk)
        history.append(crosstalk_history(crosstalk, layout))
    has_overscan = all(a.biassec is not None for a in layout.amplifiers)
    if cfg.overscan.enabled and has_overscan:
        data = ops.subtract_overscan(raw, layout, cfg.overscan)
        history.append(f"overscan: {_fmt(cfg.overscan.to_dict())}")
        stats["overscan"] = ops.overscan_stats(raw, layout, cfg.overscan)
    else:
        data = raw.astype(np.float32)
        history.append("overscan: not subtracted" + ("" if has_overscan else " (no BIASSEC)"))
    if cfg.linearity.file is not None:  # ADU above the overscan, before trimming and gain
        curves = load_linearity(cfg.linearity.file)
        data = ops.linearity(data, layout, curves)
        history.append(linearity_history(curves, layout))
    sci = ops.apply_gain(ops.assemble(data, layout), layout)
    history.append("trim+gain: " + ", ".join(f"{a.name}:{a.ccdsec}x{a.gain:g}" for a in layout.amplifiers))

    read_noise = None
    unknown = [a.name for a in layout.amplifiers if a.rdnoise is None]
    if has_overscan and (cfg.read_noise == "overscan" or (cfg.read_noise == "auto" and unknown)):
        measured = ops.read_noise(raw, layout, cfg.overscan)
        if cfg.read_noise == "overscan":
            read_noise = measured
            history.append("variance: read noise measured in the overscan")
        else:
            read_noise = {name: measured[name] for name in unknown}
            history.append(f"variance: read noise measured in the overscan for {', '.join(unknown)}")
    else:
        history.append("variance: read noise " + ", ".join(f"{a.name}={a.rdnoise}" for a in layout.amplifiers))
    var = ops.initial_variance(sci, layout, read_noise=read_noise)

    if masters.get("bias") is not None:
        sci, var = ops.subtract_bias(sci, var, masters["bias"])
        history.append(f"bias: {label('bias')}")
    if masters.get("dark") is not None:
        sci, var = ops.subtract_dark(sci, var, masters["dark"], exptime)
        history.append(f"dark: {label('dark')} x {exptime:g} s")
    low = None
    if masters.get("flat") is not None:
        sci, var, low = ops.divide_flat(sci, var, masters["flat"], cfg.flat_min_value)
        history.append(f"flat: {label('flat')}, min_value={cfg.flat_min_value:g}")

    if role in ("dark", "flat"):
        sci = ops.where(full, np.float32(np.nan), sci)
        var = ops.where(full, np.float32(np.nan), var)
    if low is not None:
        bad = low if bad is None else (bad | low)
    nodata = ~ops.isfinite(sci)
    dqa = ops.build_dq(bad=bad, saturated=saturated, nodata=nodata, bleed=bleed).astype(DQ.DQ_DTYPE)
    if role == "science" and cfg.cosmics.method != "none":
        stats["cosmics"] = {}
        sci, dqa = ops.cosmics(sci, var, dqa, cfg.cosmics, full, layout, stats["cosmics"])
        history.append(cosmic_step(cfg.cosmics))
    if role == "science" and cfg.masks.interpolate:
        to_fix = (dqa & np.uint16(DQ.BAD | DQ.COSMIC | DQ.SATURATED | DQ.BLEED)) != 0
        sci, done = ops.interpolate_bad(sci, to_fix, size=cfg.masks.interpolate_size)
        dqa = dqa | (done.astype(DQ.DQ_DTYPE) * DQ.DQ_DTYPE(DQ.INTERPOLATED))
        history.append(
            f"interpolated bad pixels: median of good neighbours in a {cfg.masks.interpolate_size}-pixel box"
        )
    return _Chained(sci, var, dqa, tuple(history), stats)


def process(
    raw: da.Array,
    masters: ChipMasters | None = None,
    config: Any = None,
    *,
    layout: ChipLayout,
    header: fits.Header | None = None,
    exptime: float | None = None,
    name: str = "",
    role: Role = "science",
    crosstalk: CrosstalkInputs | None = None,
) -> Frame:
    """Calibrate one raw chip lazily.

    Parameters
    ----------
    raw : dask.array.Array, numpy array or CCDData
        The raw chip in ADU, shape ``layout.raw_shape`` (overscan included).
    masters : ChipMasters, optional
        Bias, dark (rate, e-/s) and flat masters for this chip, and the static bad-pixel mask.
        Steps whose master is None are skipped.
    config : ReduceConfig or ProcessConfig, optional
        Step parameters (defaults when None).
    layout : ChipLayout
        The chip's amplifiers.
    header : astropy.io.fits.Header, optional
        Carried into the frame (provenance is added by the writers).
    exptime : float, optional
        Exposure time in seconds, needed when a dark is subtracted.
    name : str
        The frame's name (for task keys and messages).
    role : {"bias", "dark", "flat", "science"}
        What the frame is: masks and cosmic rays apply to science frames only; saturated
        pixels of darks and flats become NaN so a stack ignores them.
    crosstalk : CrosstalkInputs, optional
        The crosstalk table and the other chips' source amplifiers (dask or numpy
        :class:`~ccdask.calibrate._crosstalk.SourceAmp`) of its inter-chip terms; overrides
        ``crosstalk.file`` of the configuration.

    Returns
    -------
    Frame
        Lazy SCI (e-), VAR (e-²) and DQ, with one history line per step.
    """
    cfg = as_process_config(config)
    cm = masters or ChipMasters()
    if is_ccddata(raw):
        raw = from_ccddata(raw, chunks=cfg.chunks_for(raw.shape))[0]
    elif not isinstance(raw, da.Array):
        raw = da.from_array(np.asarray(raw), chunks=cfg.chunks_for(np.shape(raw)))
    out = _chain(
        _Lazy,
        raw,
        {"bias": cm.bias, "dark": cm.dark, "flat": cm.flat},
        cm.bad,
        cfg,
        layout=layout,
        exptime=exptime,
        role=role,
        crosstalk=crosstalk,
    )
    return Frame(
        sci=out.sci,
        var=out.var,
        dq=out.dq,
        chip=layout.name,
        header=header if header is not None else fits.Header(),
        layout=layout,
        exptime=exptime,
        name=name,
        history=out.history,
        stats=out.stats,
    )


def process_entry(
    entry: Entry,
    masters: ChipMasters | None = None,
    config: Any = None,
    *,
    role: Role | None = None,
    chunks: Any = None,
) -> Frame:
    """:func:`process` for one row of a :class:`~ccdask.catalog.Catalog`."""
    return process(
        open_raw(entry, chunks),
        masters,
        config,
        layout=entry.layout,
        header=entry.header,
        exptime=entry.exptime,
        name=entry.name,
        role=role or _role(entry),
    )


def process_in_memory(
    raw: np.ndarray,
    masters: dict[str, Any],
    config: Any,
    *,
    layout: ChipLayout,
    exptime: float | None,
    name: str = "",
    role: Role = "science",
    qa: dict[str, Any] | None = None,
    crosstalk: CrosstalkInputs | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """:func:`process` on one whole chip held in memory, as numpy, inside a single task.

    The night pipeline calibrates each chip-frame in one task (read, calibrate, mask, cosmic
    rays, write) so the graph stays at a couple of tasks per chip-frame however many exposures
    a night holds. This runs the numpy form of every step (the functions the dask forms of
    :func:`process` map over their blocks), in the same order with the same history: no graph
    is built. ``masters`` maps ``bias``/``dark``/``flat`` to ``(data, variance)`` numpy pairs
    (or None), ``<kind>_label`` to their labels, and ``bad`` to a boolean array (or None).

    ``qa``, when given, receives the cosmic-ray step's figures (hits, measured seeing, fraction
    of source pixels flagged; see :func:`~ccdask.calibrate._cosmics.clean_arrays_np`).
    ``crosstalk``: as for :func:`process` (numpy source amplifiers).

    Returns
    -------
    sci, var, dq, history
    """
    cfg = as_process_config(config)
    arrays = {}
    for kind in ("bias", "dark", "flat"):
        pair = masters.get(kind)
        if pair is not None:
            data, var = pair
            arrays[kind] = _Arrays(
                layout.name,
                np.asarray(data),
                None if var is None else np.asarray(var),
                str(masters.get(f"{kind}_label", "master")),
            )
    bad = masters.get("bad")
    out = _chain(
        _Eager,
        np.asarray(raw),
        arrays,
        None if bad is None else np.asarray(bad),
        cfg,
        layout=layout,
        exptime=exptime,
        role=role,
        crosstalk=crosstalk,
    )
    if qa is not None:
        qa.update(out.stats.get("cosmics", {}))
    history = list(out.history)
    for amp, st in out.stats.get("overscan", {}).items():  # the measured overscan, recorded with the frame
        history.append(f"overscan {amp}: level {float(st.level):.2f} ADU, noise {float(st.noise):.2f} ADU")
    return out.sci, out.var, out.dq, tuple(history)


def _role(entry: Entry) -> Role:
    kinds: dict[str, Role] = {"bias": "bias", "dark": "dark", "flat": "flat"}
    return kinds.get(entry.imagetyp, "science")
