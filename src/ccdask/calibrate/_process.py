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

import dask
import dask.array as da
import numpy as np
from astropy.io import fits

from .. import dq as DQ
from ..catalog import Entry
from ..frame import Frame, Master
from ..io._ccddata import from_ccddata, is_ccddata
from ..profiles._layout import ChipLayout
from ..utils import ConfigBase, option
from . import (
    apply_gain,
    assemble,
    divide_flat,
    initial_variance,
    overscan_stats,
    read_noise_from_overscan,
    subtract_bias,
    subtract_dark,
    subtract_overscan,
)
from ._config import OverscanConfig
from ._cosmics import CosmicConfig, clean_frame
from ._masks import MaskConfig, build_dq, interpolate_bad, saturation_mask

__all__ = ["ChipMasters", "ProcessConfig", "open_raw", "process", "process_entry", "process_in_memory"]

Role = Literal["bias", "dark", "flat", "science"]


@dataclass(frozen=True)
class ProcessConfig(ConfigBase):
    """The parameters of the per-chip chain: what :func:`process` needs of a reduction's
    configuration (``ReduceConfig.process_config()`` gives it; its fields mirror those of
    ``ReduceConfig`` of the same names, with ``flat_min_value`` for ``flat.min_value``)."""

    chunk_mb: float = option(
        32.0, "target size of the pixel chunks of one frame, in MiB",
        check=lambda v: 0.25 <= v <= 4096, why="must lie between 0.25 and 4096")
    read_noise: Literal["header", "overscan"] = option(
        "header", "where the read noise comes from: the header/profile, or measured in the overscan")
    overscan: OverscanConfig = option(OverscanConfig(), "overscan per amplifier")
    masks: MaskConfig = option(MaskConfig(), "bad pixels, saturation, interpolation")
    cosmics: CosmicConfig = option(CosmicConfig(), "cosmic rays in science frames")
    flat_min_value: float = option(
        0.1, "flat values below this are replaced by it when dividing, and their pixels flagged bad",
        check=lambda v: v > 0, why="must be positive")

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


def _fmt(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if v is not None)


def process(raw: da.Array, masters: ChipMasters | None = None, config: Any = None, *,
            layout: ChipLayout, header: fits.Header | None = None, exptime: float | None = None,
            name: str = "", role: Role = "science") -> Frame:
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

    Returns
    -------
    Frame
        Lazy SCI (e-), VAR (e-²) and DQ, with one history line per step.
    """
    cfg = as_process_config(config)
    masters = masters or ChipMasters()
    if is_ccddata(raw):
        raw = from_ccddata(raw, chunks=cfg.chunks_for(raw.shape))[0]
    elif not isinstance(raw, da.Array):
        raw = da.from_array(np.asarray(raw), chunks=cfg.chunks_for(np.shape(raw)))
    history: list[str] = []
    stats: dict[str, Any] = {}

    saturated = saturation_mask(raw, layout, grow=cfg.masks.saturation_grow)
    has_overscan = all(a.biassec is not None for a in layout.amplifiers)
    if cfg.overscan.enabled and has_overscan:
        data = subtract_overscan(raw, layout, cfg.overscan)
        history.append(f"overscan: {_fmt(cfg.overscan.to_dict())}")
        stats["overscan"] = overscan_stats(raw, layout, cfg.overscan)
    else:
        data = raw.astype(np.float32)
        history.append("overscan: not subtracted" + ("" if has_overscan else " (no BIASSEC)"))
    sci = apply_gain(assemble(data, layout), layout)
    history.append("trim+gain: " + ", ".join(f"{a.name}:{a.ccdsec}x{a.gain:g}" for a in layout.amplifiers))

    read_noise = None
    if cfg.read_noise == "overscan" and has_overscan:
        read_noise = read_noise_from_overscan(raw, layout, cfg.overscan)
        history.append("variance: read noise measured in the overscan")
    else:
        history.append("variance: read noise " + ", ".join(f"{a.name}={a.rdnoise}" for a in layout.amplifiers))
    var = initial_variance(sci, layout, read_noise=read_noise)

    if masters.bias is not None:
        sci, var = subtract_bias(sci, var, masters.bias)
        history.append(f"bias: {masters.bias.meta.get('label', 'master')}")
    if masters.dark is not None:
        sci, var = subtract_dark(sci, var, masters.dark, exptime)
        history.append(f"dark: {masters.dark.meta.get('label', 'master')} x {exptime:g} s")
    low = None
    if masters.flat is not None:
        sci, var, low = divide_flat(sci, var, masters.flat, min_value=cfg.flat_min_value)
        history.append(f"flat: {masters.flat.meta.get('label', 'master')}, min_value={cfg.flat_min_value:g}")

    if role in ("dark", "flat"):
        sci = da.where(saturated, np.float32(np.nan), sci)
        var = da.where(saturated, np.float32(np.nan), var)
    bad = masters.bad
    if low is not None:
        bad = low if bad is None else (bad | low)
    nodata = ~da.isfinite(sci)
    dqa = build_dq(bad=bad, saturated=saturated, nodata=nodata).astype(DQ.DQ_DTYPE)
    frame = Frame(sci=sci, var=var, dq=dqa, chip=layout.name,
                  header=header if header is not None else fits.Header(), layout=layout,
                  exptime=exptime, name=name, history=tuple(history), stats=stats)
    if role == "science" and cfg.cosmics.method != "none":
        frame = clean_frame(frame, cfg.cosmics, saturation=saturated)
    if role == "science" and cfg.masks.interpolate:
        to_fix = (frame.dq & np.uint16(DQ.BAD | DQ.COSMIC | DQ.SATURATED)) != 0
        fixed, done = interpolate_bad(frame.sci, to_fix, size=cfg.masks.interpolate_size)
        frame = frame.evolve(
            sci=fixed, dq=frame.dq | (done.astype(DQ.DQ_DTYPE) * DQ.DQ_DTYPE(DQ.INTERPOLATED)),
            step=f"interpolated bad pixels: median of good neighbours in a {cfg.masks.interpolate_size}-pixel box")
    return frame


def process_entry(entry: Entry, masters: ChipMasters | None = None, config: Any = None,
                  *, role: Role | None = None, chunks: Any = None) -> Frame:
    """:func:`process` for one row of a :class:`~ccdask.catalog.Catalog`."""
    return process(open_raw(entry, chunks), masters, config, layout=entry.layout, header=entry.header,
                   exptime=entry.exptime, name=entry.name, role=role or _role(entry))


def process_in_memory(raw: np.ndarray, masters: dict[str, Any], config: Any, *,
                      layout: ChipLayout, exptime: float | None, name: str = "",
                      role: Role = "science") -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """:func:`process` on one whole chip held in memory, inside a single task.

    The night pipeline calibrates each science chip-frame in one task (read, calibrate, mask,
    cosmic rays, write) so the graph stays at a couple of tasks per chip-frame however many
    exposures a night holds; the arithmetic is exactly that of :func:`process`, run with the
    synchronous scheduler on one block. ``masters`` maps ``bias``/``dark``/``flat`` to
    ``(data, variance)`` numpy pairs (or None) and ``bad`` to a boolean array (or None).

    Returns
    -------
    sci, var, dq, history
    """
    def master(kind: str) -> Master | None:
        pair = masters.get(kind)
        if pair is None:
            return None
        data, var = pair
        return Master(kind=kind, chip=layout.name, data=da.from_array(data, chunks=-1),
                      variance=None if var is None else da.from_array(var, chunks=-1), count=None,
                      ncombine=0, meta={"label": masters.get(f"{kind}_label", "master")})

    bad = masters.get("bad")
    cm = ChipMasters(bias=master("bias"), dark=master("dark"), flat=master("flat"),
                     bad=None if bad is None else da.from_array(bad, chunks=-1))
    frame = process(da.from_array(raw, chunks=-1), cm, config, layout=layout, exptime=exptime,
                    name=name, role=role)
    sci, var, dqa, over = dask.compute(frame.sci, frame.var, frame.dq, frame.stats.get("overscan", {}),
                                       scheduler="sync")
    history = list(frame.history)
    for amp, st in over.items():  # the measured overscan of each amplifier, recorded with the frame
        history.append(f"overscan {amp}: level {float(st.level):.2f} ADU, noise {float(st.noise):.2f} ADU")
    return sci, var, dqa, tuple(history)


def _role(entry: Entry) -> Role:
    return entry.imagetyp if entry.imagetyp in ("bias", "dark", "flat") else "science"
