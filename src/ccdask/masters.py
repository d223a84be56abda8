"""Lazy graphs of the calibration masters: bias, dark rate, and flats per filter.

Each builder calibrates its input frames with :func:`ccdask.process.process` (up to the step
the master itself corrects) and stacks them with :func:`ccdask.combine.combine`, propagating
the frames' variance planes. Nothing here computes: the pipeline decides when (and caches).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from .catalog import Entry
from .combine import combine
from .combine._config import CombineConfig
from .config import ReduceConfig
from .errors import PlanError
from .frame import Master
from .process import ChipMasters, process_entry
from .sections import Section

__all__ = ["bias_master", "dark_master", "flat_masters", "focal_plane_median", "normalise_flats"]


def _stack(frames: Sequence[Any], cfg: CombineConfig, name: str) -> Any:
    sci = da.stack([f.sci for f in frames])
    var = da.stack([f.var for f in frames])
    opts = cfg.to_dict()
    return combine(sci, variance=var, name=name, **opts)


def _master(kind: str, chip: str, res: Any, entries: Sequence[Entry], **extra: Any) -> Master:
    meta = {"inputs": [e.name for e in entries], "label": f"{kind} {chip} ({len(entries)} frames)"}
    meta.update(extra.pop("meta", {}))
    return Master(kind=kind, chip=chip, data=res.data, variance=res.variance, count=res.count,
                  ncombine=len(entries), meta=meta, **extra)


def _chunks(entry: Entry, config: ReduceConfig) -> tuple[int, int]:
    return config.chunks_for(entry.shape)


def bias_master(entries: Sequence[Entry], config: ReduceConfig, *, chip: str) -> Master:
    """Overscan-corrected, trimmed, gain-applied biases (e-) stacked per ``config.bias.combine``."""
    if not entries:
        raise PlanError(f"no bias frames for chip {chip}")
    frames = [process_entry(e, None, config, role="bias", chunks=_chunks(e, config)) for e in entries]
    return _master("bias", chip, _stack(frames, config.bias.combine, f"bias-{chip}"), entries)


def dark_master(entries: Sequence[Entry], config: ReduceConfig, *, chip: str,
                bias: Master | None) -> Master:
    """Bias-subtracted darks divided by their exposure times, stacked into a rate (e-/s)."""
    if not entries:
        raise PlanError(f"no dark frames for chip {chip}")
    masters = ChipMasters(bias=bias)
    rates = []
    for e in entries:
        f = process_entry(e, masters, config, role="dark", chunks=_chunks(e, config))
        t = np.float32(e.exptime)
        rates.append(f.evolve(sci=f.sci / t, var=f.var / (t * t)))
    times = sorted({float(e.exptime) for e in entries})
    res = _stack(rates, config.dark.combine, f"dark-{chip}")
    return _master("dark", chip, res, entries, meta={"exptimes": times})


def focal_plane_median(images: Sequence[da.Array], region: str = "[*,*]", *,
                       step: int | None = None, name: str = "median") -> da.Array:
    """The median of ``region`` of every chip image, pooled: a lazy 0-d float64 array.

    The pixels used are a fixed grid (every ``step``-th row and column of the region, ``step``
    chosen so each chip contributes at most 2**18 pixels unless given), so the result is exact
    for that sample and independent of chunking. NaNs are ignored.
    """
    parts = []
    for img in images:
        sec = Section.parse(region, keyword="flat.region").validate(tuple(img.shape), keyword="flat.region")
        sub = img[sec.normalized().slices]
        s = step or max(1, math.ceil(math.sqrt(sub.shape[0] * sub.shape[1] / 2**18)))
        parts.append(sub[::s, ::s].ravel())
    pooled = da.concatenate(parts)
    med = dask.delayed(_nanmedian, pure=True)(pooled, dask_key_name=f"{name}-{dask.base.tokenize(pooled)}")
    return da.from_delayed(med, shape=(), dtype=np.float64)


def _nanmedian(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    good = values[np.isfinite(values)]
    return np.asarray(np.median(good) if good.size else np.nan, dtype=np.float64)


def flat_masters(entries: Mapping[str, Sequence[Entry]], config: ReduceConfig, *, filter: str | None,
                 biases: Mapping[str, Master | None], darks: Mapping[str, Master | None]) -> dict[str, Master]:
    """Per chip, the stack of flats of one filter, each exposure normalised over the focal plane.

    ``entries`` maps chip → that chip's flat frames. Every exposure (a file) is divided by the
    median of its calibrated chips pooled (see :func:`focal_plane_median`), so chip-to-chip
    sensitivity survives; the result is *not yet* normalised to 1 (see :func:`normalise_flats`).
    """
    by_file: dict[str, dict[str, Any]] = {}
    for chip, ents in entries.items():
        cm = ChipMasters(bias=biases.get(chip), dark=darks.get(chip))
        for e in ents:
            f = process_entry(e, cm, config, role="flat", chunks=_chunks(e, config))
            by_file.setdefault(e.path, {})[chip] = f
    norms = {}
    for path, chips in by_file.items():
        label = f"flatnorm-{filter}-{path.rsplit('/', 1)[-1]}"
        norms[path] = focal_plane_median([f.sci for f in chips.values()], config.flat.region,
                                         step=None, name=label)
    out = {}
    for chip, ents in entries.items():
        frames = []
        for e in ents:
            f = by_file[e.path][chip]
            n = norms[e.path].astype(np.float32)
            frames.append(f.evolve(sci=f.sci / n, var=f.var / (n * n)))
        res = _stack(frames, config.flat.combine, f"flat-{filter}-{chip}")
        out[chip] = _master("flat", chip, res, ents, filter=filter)
    return out


def normalise_flats(flats: Mapping[str, Master], config: ReduceConfig) -> dict[str, Master]:
    """Divide every chip's flat by the pooled focal-plane median so the median response is 1."""
    chips = list(flats)
    if not chips:
        return {}
    filt = flats[chips[0]].filter
    m = focal_plane_median([flats[c].data for c in chips], config.flat.region,
                           name=f"flatscale-{filt}").astype(np.float32)
    out = {}
    for c in chips:
        f = flats[c]
        var = None if f.variance is None else f.variance / (m * m)
        meta = dict(f.meta)
        meta["label"] = f"flat {filt} {c} ({f.ncombine} frames)"
        out[c] = Master(kind="flat", chip=c, data=f.data / m, variance=var, count=f.count,
                        ncombine=f.ncombine, filter=filt, meta=meta)
    return out
