"""The fringe stage of a night: per enabled filter and chip, a fringe frame from the night's
science frames (cached like every master), then each science chip's scale fitted and the scaled
frame subtracted by the science task.

**Build** (``fringe-<filter>`` in the stage records), out of core like the other masters:

1. one task per science chip-frame of the filter: read the raw chip, run the whole per-chip
   chain (:func:`ccdask.calibrate.process_in_memory`, as the science task does), find its
   sources (:func:`~ccdask.calibrate._fringe.source_mask_np`) and its sky (the median of the
   other good pixels), and write SCI, VAR, DQ and the mask to a scratch zarr store chunked like
   the stacking tiles;
2. the sky-subtracted, source-masked frames are read back tile by tile and stacked by the
   stacking engine (a clipped mean with their variance planes);
3. one task per chip-frame fits its scale against that stack
   (:func:`~ccdask.calibrate._fringe.fit_fringe_np`) and measures how many of its source pixels
   no frame covers (the dither check); with ``fringe.iterations`` > 1 each frame is divided by
   its scale relative to the mean and step 2 is run again;
4. the last stack is written to the master cache under a key of its inputs' content, the
   calibration masters' keys and every parameter that changes its pixels.

The arithmetic is that of :func:`ccdask.night._fringe.fringe_frame` (the in-memory form), done
tile by tile, so the two agree on the same frames.

**Correct** (in the science task, :func:`correct_chip`): the scale of the chip's fringe frame in
the calibrated chip, ``sci - s F`` and the variance with ``s² var_F``, ``FRNGSCL``/``FRNGSERR``
and a HISTORY line in the chip's header.
"""

from __future__ import annotations

import functools
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..cache import input_identity, master_key
from ..calibrate import ChipMasters, process_in_memory
from ..calibrate._fringe import FringeFrame, fit_fringe_np, source_mask_np, subtract_fringe_np
from ..catalog import Entry
from ..combine import CombineConfig, combine
from ..combine._stack import tile_shape
from ..config import ReduceConfig
from ..errors import CcdaskError, CcdaskWarning, PlanError, ShapeMismatchError
from ..frame import Master
from ..utils import canonical_hash
from ._plan import Plan
from ._stages import NightMasters, StageContext, key_of, master_inputs, pack_masters, science_chip_masters

__all__ = [
    "FringeUse",
    "check_fringe_plan",
    "correct_chip",
    "fringe_groups",
    "fringe_masters",
    "fringe_use",
    "pack_with_fringe",
]

_PLANES = {"sci": ("float32", float("nan")), "var": ("float32", float("nan")), "dq": ("int16", 0), "mask": ("u1", 0)}


def _combine_config(cfg: ReduceConfig) -> CombineConfig:
    """The stacking engine's parameters of the fringe frame: a mean clipped about the median
    in standard deviations (a MAD of a few values is often tiny and rejects good ones)."""
    f = cfg.fringe
    return CombineConfig(
        method="mean", clip="sigma", sigma_lower=f.clip, sigma_upper=f.clip, maxiters=f.clip_maxiters, spread="std"
    )


def fringe_groups(plan: Plan, cfg: ReduceConfig) -> dict[str, dict[str, tuple[Entry, ...]]]:
    """The science chip-frames of every fringe-corrected filter, per chip (in the plan's order)."""
    out: dict[str, dict[str, tuple[Entry, ...]]] = {}
    for filt in cfg.fringe.filters:
        by_chip = {c: tuple(e for e in cp.science if e.filter == filt) for c, cp in plan.chips.items()}
        by_chip = {c: ents for c, ents in by_chip.items() if ents}
        if by_chip:
            out[filt] = by_chip
    return out


def check_fringe_plan(plan: Plan, cfg: ReduceConfig) -> list[str]:
    """Notes on ``fringe.filters`` (a filter without science frames); raises :class:`PlanError`
    before anything is computed when a filter and chip have too few frames for a fringe frame."""
    groups = fringe_groups(plan, cfg)
    notes = [
        f"fringe.filters lists {filt!r}, but the night has no science frames in it: nothing to correct"
        for filt in cfg.fringe.filters
        if filt not in groups
    ]
    need = cfg.fringe.min_frames
    external = cfg.fringe.external()
    for filt, by_chip in groups.items():
        if filt in external:
            external_fringes(external[filt], filt, by_chip)  # headers only: every chip there, shapes right
            continue
        for chip, ents in by_chip.items():
            if len(ents) < need:
                names = ", ".join(e.name for e in ents)
                raise PlanError(
                    f"fringe frame of filter {filt!r} on chip {chip}: only {len(ents)} science frame(s) "
                    f"({names}), fringe.min_frames is {need}; add exposures, lower fringe.min_frames "
                    f"(at least 2), or leave {filt!r} out of fringe.filters"
                )
    return notes


def external_fringes(path: str, filt: str, by_chip: Mapping[str, tuple[Entry, ...]]) -> dict[str, Master]:
    """The fringe frames of ``filt`` read lazily from ``path`` (``fringe.files``), one extension
    per chip named as the chip, with optional ``<chip>_VAR`` (else 0) and ``<chip>_COUNT`` (else
    1 where the frame is finite). Only headers are read here; a missing chip or a wrong shape is
    an error naming the file."""
    from ..io import ImageSource, scan_file

    where = f"fringe.files {filt}={path}"
    try:
        infos = scan_file(path)
    except (CcdaskError, OSError) as exc:
        raise PlanError(f"{where}: cannot read the fringe frames: {exc}") from exc
    named = {i.extname.upper(): i for i in infos if i.extname}
    out = {}
    for chip, ents in by_chip.items():
        info = named.get(chip.upper())
        if info is None:
            raise PlanError(
                f"{where}: no extension {chip!r} for the science frames of chip {chip} "
                f"(the file holds {', '.join(sorted(named)) or 'no named image extension'})"
            )
        shape = ents[0].layout.trimmed_shape
        if tuple(info.shape) != tuple(shape):
            raise ShapeMismatchError(
                f"{path}[{info.extname}]: the fringe frame is {info.shape[0]}x{info.shape[1]}, chip {chip}'s "
                f"calibrated frames are {shape[0]}x{shape[1]}"
            )
        data = ImageSource.from_info(info).to_dask(name=f"fringe-file-{filt}-{chip}")
        key = master_key(
            "fringe",
            [input_identity(path, info.index, info.header.tostring())],
            {"filter": filt, "external": True},
            chip=chip,
        )
        var_info, count_info = named.get(f"{chip.upper()}_VAR"), named.get(f"{chip.upper()}_COUNT")
        for extra in (var_info, count_info):
            if extra is not None and tuple(extra.shape) != tuple(shape):
                raise ShapeMismatchError(f"{path}[{extra.extname}]: {extra.shape}, the fringe frame is {shape}")
        variance = (
            da.zeros(shape, dtype=np.float32, chunks=data.chunks)
            if var_info is None
            else ImageSource.from_info(var_info).to_dask(chunks=data.chunks)
        )
        count = (
            da.isfinite(data).astype(np.int16)
            if count_info is None
            else ImageSource.from_info(count_info).to_dask(chunks=data.chunks).astype(np.int16)
        )
        out[chip] = Master(
            kind="fringe",
            chip=chip,
            data=data,
            variance=variance,
            count=count,
            ncombine=int(info.header.get("NCOMBINE", 0)),
            filter=filt,
            meta={
                "cache_key": key,
                "inputs": [],
                "norms": [],
                "label": f"fringe {filt} {chip} (from {path})",
                "params": {"file": str(path)},
            },
        )
    return out


@dataclass(frozen=True)
class _Spec:
    filter: str
    chip: str
    entries: tuple[Entry, ...]
    params: Mapping[str, Any]
    key: str
    calibration: Any  # the packed masters of every frame, by frame name


def _specs(
    plan: Plan, ctx: StageContext, masters: NightMasters, filt: str, by_chip: Mapping[str, tuple[Entry, ...]]
) -> list[_Spec]:
    cfg = ctx.cfg
    out = []
    for chip, ents in by_chip.items():
        cms = [
            science_chip_masters(*masters.for_science(e, filt, plan.steps), cfg, e.layout.trimmed_shape) for e in ents
        ]
        used = sorted({(key_of(cm.bias), key_of(cm.dark), key_of(cm.flat)) for cm in cms}, key=str)
        params = {
            **ctx.common,
            # what the science chain does besides the masters (cosmic rays, bad-pixel masks...)
            "science": {
                "masks": cfg.masks.to_dict(),
                "cosmics": cfg.cosmics.to_dict(),
                "flat_min_value": cfg.flat.min_value,
            },
            "fringe": cfg.fringe.stack_params(),
            "filter": filt,
            "masters": [list(u) for u in used],
            "layouts": canonical_hash([e.layout.to_dict() for e in ents]),
        }
        key = master_key("fringe", [e.identity for e in ents], params, chip=chip)
        packed: dict[tuple[Any, ...], Any] = {}
        calibration = {}
        for e, cm in zip(ents, cms, strict=True):
            mk = (key_of(cm.bias), key_of(cm.dark), key_of(cm.flat))
            if mk not in packed:
                packed[mk] = pack_masters(cm, chip)
            calibration[e.name] = packed[mk]
        out.append(_Spec(filt, chip, ents, params, key, calibration))
    return out


# ---------------------------------------------------------------------------- step 1: calibrate


def _calibrate_task(
    source: Any,
    paths: Mapping[str, str],
    masters: dict[str, Any],
    *,
    cfg: ReduceConfig,
    layout: Any,
    exptime: float | None,
    name: str,
    tile: tuple[int, int],
    crosstalk: Any = None,
) -> dict[str, Any]:
    """Calibrate one science chip-frame as the science task does; write its planes and mask."""
    import zarr

    raw = source.read(slice(None), slice(None))
    xt = None if crosstalk is None else crosstalk.load()  # the other chips' source amplifiers
    sci, var, dq, _hist = process_in_memory(
        raw, masters, cfg, layout=layout, exptime=exptime, name=name, role="science", crosstalk=xt
    )
    # as the reduced file holds them (float32, int16 DQ), so the stage equals the in-memory form
    sci = np.asarray(sci, dtype=np.float32)
    var = np.asarray(var, dtype=np.float32)
    dq16 = np.asarray(dq).astype(np.int16)
    mask = source_mask_np(sci, dq16, nsigma=cfg.fringe.nsigma, grow=cfg.fringe.grow)
    sky = float(np.median(sci[~mask])) if (~mask).any() else 0.0
    for plane, values in (("sci", sci), ("var", var), ("dq", dq16), ("mask", mask.astype(np.uint8))):
        dtype, fill = _PLANES[plane]
        z = zarr.create_array(
            store=paths[plane],
            shape=sci.shape,
            chunks=tile,
            dtype=dtype,
            compressors=None,
            fill_value=fill,
            overwrite=True,
        )
        z[...] = values
    return {"sky": sky, "good": int(np.count_nonzero(~mask))}


@dataclass
class _Calibrated:
    root: Path
    tasks: list[Any] = field(default_factory=list)
    rows: dict[str, list[tuple[Entry, dict[str, str]]]] = field(default_factory=dict)
    tiles: dict[str, tuple[int, int]] = field(default_factory=dict)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def calibrate_science(
    specs: Sequence[_Spec], cfg: ReduceConfig, scratch: Path, *, crosstalk: Any = None
) -> _Calibrated:
    """Graph of step 1: one task per science chip-frame of ``specs``, writing under ``scratch``.
    ``crosstalk``: the night's NightCrosstalk (or None), as the science stage has it."""
    memory = _combine_config(cfg).memory_per_task
    out = _Calibrated(root=scratch / f"fringe-{uuid.uuid4().hex[:8]}")
    for number, s in enumerate(specs):
        shape = s.entries[0].layout.trimmed_shape
        tile = tile_shape(len(s.entries), shape, memory, variance=True, stacked=True)
        out.tiles[s.chip] = tile
        rows = []
        for i, e in enumerate(s.entries):
            # by number: chip names come from headers and may hold '/' or '..'
            paths = {p: str(out.root / f"{number:03d}" / f"{i:04d}-{p}.zarr") for p in _PLANES}
            func = functools.partial(
                _calibrate_task,
                e.source,
                paths,
                cfg=cfg,
                layout=e.layout,
                exptime=e.exptime,
                name=e.name,
                tile=tile,
                crosstalk=None if crosstalk is None else crosstalk.for_entry(e),
            )
            key = f"calibrate-fringe-{e.name}-{s.chip}-{dask.base.tokenize(paths)[:8]}"
            out.tasks.append(dask.delayed(func, pure=False)(s.calibration[e.name], dask_key_name=key))
            rows.append((e, paths))
        out.rows[s.chip] = rows
    return out


# -------------------------------------------------------------------------------- step 2: stack


def _read_tile(
    plane_paths: tuple[str, ...],
    mask_paths: tuple[str, ...],
    skies: tuple[float, ...] | None,
    norms: tuple[float, ...],
    rows: slice,
    cols: slice,
) -> np.ndarray:
    """One ``(N, ty, tx)`` tile: SCI minus the sky (``skies`` given) or VAR, NaN where masked,
    divided by the frame's norm (VAR by its square), as :func:`~ccdask.night._fringe.fringe_frame` does."""
    import zarr

    out = np.empty((len(plane_paths), rows.stop - rows.start, cols.stop - cols.start), dtype=np.float32)
    for i, (path, mpath) in enumerate(zip(plane_paths, mask_paths, strict=True)):
        plane = zarr.open_array(path, mode="r")[rows, cols]
        mask = zarr.open_array(mpath, mode="r")[rows, cols] != 0
        k = norms[i]
        if skies is None:
            out[i] = np.where(mask, np.float32(np.nan), plane) / np.float32(k * k)
        else:
            out[i] = np.where(mask, np.float32(np.nan), plane - np.float32(skies[i])) / np.float32(k)
    return out


def _stack_planes(
    rows: Sequence[tuple[Entry, Mapping[str, str]]],
    shape: tuple[int, int],
    tile: tuple[int, int],
    skies: Sequence[float] | None,
    norms: Sequence[float],
    name: str,
) -> da.Array:
    from dask._task_spec import Task
    from dask.highlevelgraph import HighLevelGraph

    plane = "var" if skies is None else "sci"
    ps = tuple(p[plane] for _, p in rows)
    ms = tuple(p["mask"] for _, p in rows)
    sk = None if skies is None else tuple(float(s) for s in skies)
    ns = tuple(float(n) for n in norms)
    key = f"{name}-{dask.base.tokenize(ps, ms, sk, ns, shape, tile)}"
    ny, nx = shape
    ys = [(y, min(y + tile[0], ny)) for y in range(0, ny, tile[0])]
    xs = [(x, min(x + tile[1], nx)) for x in range(0, nx, tile[1])]
    layer = {}
    for i, (y0, y1) in enumerate(ys):
        for j, (x0, x1) in enumerate(xs):
            k = (key, 0, i, j)
            layer[k] = Task(k, _read_tile, ps, ms, sk, ns, slice(y0, y1), slice(x0, x1))
    chunks = ((len(ps),), tuple(b - a for a, b in ys), tuple(b - a for a, b in xs))
    graph = HighLevelGraph.from_collections(key, layer, dependencies=())
    return da.Array(graph, key, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))


def stack_fringe(
    rows: Sequence[tuple[Entry, Mapping[str, str]]],
    tile: tuple[int, int],
    skies: Sequence[float],
    norms: Sequence[float],
    cfg: ReduceConfig,
    *,
    label: str,
) -> Any:
    """Step 2, lazily: the clipped stack of one chip's sky-subtracted, masked frames (a
    :class:`~ccdask.combine.CombineResult`), read back from scratch tile by tile."""
    shape = rows[0][0].layout.trimmed_shape
    sci = _stack_planes(rows, shape, tile, skies, norms, f"scratch-fringe-sci-{label}")
    var = _stack_planes(rows, shape, tile, None, norms, f"scratch-fringe-var-{label}")
    return combine(sci, variance=var, name=label, **_combine_config(cfg).to_dict())


# ---------------------------------------------------------------------------- step 3: fit


def _fit_task(
    paths: Mapping[str, str],
    parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    norms: tuple[float, ...],
    index: int,
    fit: Mapping[str, Any],
) -> dict[str, float]:
    """The frame's scale against one pass's stack, and the fraction of its source pixels that
    no frame covers (1 when the sources did not move between the frames)."""
    import zarr

    sci, var, dq = (np.asarray(zarr.open_array(paths[p], mode="r")[...]) for p in ("sci", "var", "dq"))
    data, variance, count = (np.asarray(a) for a in parts)
    frame = FringeFrame(data, variance, count, len(norms), norms)
    result = fit_fringe_np(sci, var, dq, frame, index=index, **fit)
    mask = source_mask_np(sci, dq, nsigma=fit["nsigma"], grow=fit["grow"])
    sources = mask & np.isfinite(sci) & (dq == 0)
    static = float(np.mean(frame.count[sources] == 0)) if sources.any() else float("nan")
    return {"scale": result.scale, "scale_err": result.scale_err, "static": static}


def _fit_round(
    cal: _Calibrated, lazy: Mapping[str, Any], norms: Mapping[str, list[float]], cfg: ReduceConfig, filt: str
) -> list[Any]:
    tasks = []
    for chip, rows in cal.rows.items():
        res = lazy[chip]
        parts = dask.delayed(tuple, pure=True)(
            [res.data, res.variance, res.count], dask_key_name=f"fringe-pass-{filt}-{chip}-{res.data.name[-8:]}"
        )
        for k, (e, paths) in enumerate(rows):
            func = functools.partial(_fit_task, paths, norms=tuple(norms[chip]), index=k, fit=cfg.fringe.fit_params())
            tasks.append(
                dask.delayed(func, pure=True)(parts, dask_key_name=f"fit-fringe-{e.name}-{chip}-{res.data.name[-8:]}")
            )
    return tasks


def _check_dither(filt: str, chip: str, names: Sequence[str], static: Sequence[float], cfg: ReduceConfig) -> float:
    values = np.array(static, dtype=np.float64)
    level = float(np.nanmedian(values)) if np.isfinite(values).any() else 0.0
    if level > cfg.fringe.max_static:
        msg = (
            f"fringe frame of filter {filt!r} on chip {chip}: the frames do not move enough; in the "
            f"median frame {level:.0%} of its source pixels are masked in every frame "
            f"({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}), so the fringe frame has "
            "holes there and those pixels are left uncorrected (dither between exposures; "
            f"fringe.max_static is {cfg.fringe.max_static:g})"
        )
        if cfg.fringe.require_dither:
            raise PlanError(msg + "; fringe.require_dither is set")
        warnings.warn(msg, CcdaskWarning, stacklevel=5)  # at the caller of reduce
    return level


# ------------------------------------------------------------------------------- the stage


def fringe_masters(plan: Plan, ctx: StageContext, masters: NightMasters) -> NightMasters:
    """Fringe frames per enabled filter and chip: from the cache, or built (see the module notes)."""
    cfg, runner = ctx.cfg, ctx.runner
    fringes: dict[str | None, Mapping[str, Master]] = {}
    external = cfg.fringe.external()
    for filt, by_chip in fringe_groups(plan, cfg).items():
        stage = f"fringe-{filt}"
        record = runner.record(stage)
        if filt in external:
            fringes[filt] = external_fringes(external[filt], filt, by_chip)
            record["external"] = len(by_chip)
            runner.log(f"  {stage}: {len(by_chip)} fringe frame(s) from {external[filt]}")
            continue
        specs = _specs(plan, ctx, masters, filt, by_chip)
        found = {s.chip: m for s in specs if (m := ctx.store.get(s.key)) is not None}
        todo = [s for s in specs if s.chip not in found]
        record["cached"] = record.get("cached", 0) + len(specs) - len(todo)
        record["built"] = record.get("built", 0) + len(todo)
        record["raw_pixels"] = record.get("raw_pixels", 0) + sum(
            e.shape[0] * e.shape[1] for s in todo for e in s.entries
        )
        if not todo:
            runner.log(f"  {stage}: {len(found)} fringe frame(s) from the cache")
        else:
            found.update(_build(stage, todo, ctx))
        fringes[filt] = {s.chip: found[s.chip] for s in specs}
    return replace(masters, fringes=fringes)


def _build(stage: str, todo: Sequence[_Spec], ctx: StageContext) -> dict[str, Master]:
    cfg, runner = ctx.cfg, ctx.runner
    filt = todo[0].filter
    cal = calibrate_science(todo, cfg, ctx.scratch, crosstalk=ctx.crosstalk)
    try:
        infos = runner.compute(stage, cal.tasks)
        skies: dict[str, list[float]] = {}
        for (chip, e), info in zip(((c, e) for c, rows in cal.rows.items() for e, _ in rows), infos, strict=True):
            if info["good"] < 100:
                raise PlanError(
                    f"fringe frame of filter {filt!r} on chip {chip}: {e.path}[{e.hdu}] has only "
                    f"{info['good']} good pixels once its sources are masked"
                )
            skies.setdefault(chip, []).append(info["sky"])
        norms = {c: [1.0] * len(rows) for c, rows in cal.rows.items()}
        static: dict[str, float] = {}

        def stack_all() -> dict[str, Any]:
            return {
                c: stack_fringe(rows, cal.tiles[c], skies[c], norms[c], cfg, label=f"fringe-{filt}-{c}")
                for c, rows in cal.rows.items()
            }

        lazy = stack_all()
        # a fit round after every pass but the last, and at least one (the scales, the dither check)
        passes = cfg.fringe.iterations
        for it in range(max(passes - 1, 1)):
            results = runner.compute(stage, _fit_round(cal, lazy, norms, cfg, filt))
            new: dict[str, list[float]] = {}
            pos = 0
            for chip, rows in cal.rows.items():
                got = results[pos : pos + len(rows)]
                pos += len(rows)
                names = [e.name for e, _ in rows]
                scales = np.array([g["scale"] for g in got])
                if not np.all(scales > 0):
                    bad = ", ".join(f"{n} ({s:.3g})" for n, s in zip(names, scales, strict=True) if not s > 0)
                    raise PlanError(
                        f"fringe frame of filter {filt!r} on chip {chip}: frame(s) {bad} show the fringe "
                        "pattern with a scale <= 0 (no fringes in this filter, or frames unlike the rest?)"
                    )
                if it == 0:
                    static[chip] = _check_dither(filt, chip, names, [g["static"] for g in got], cfg)
                new[chip] = [float(x) for x in scales / float(np.mean(scales))]
            if it < passes - 1:
                norms = new
                lazy = stack_all()
        pending = {}
        for s in todo:
            res = lazy[s.chip]
            rows = cal.rows[s.chip]
            meta = {
                "inputs": [e.name for e, _ in rows],
                "label": f"fringe {filt} {s.chip} ({len(rows)} frames)",
                "key": s.key,
                "params": dict(s.params),
                "norms": norms[s.chip],
                "skies": skies[s.chip],
                "static": static.get(s.chip),
            }
            pending[s.chip] = ctx.store.store_graph(
                s.key,
                Master(
                    kind="fringe",
                    chip=s.chip,
                    data=res.data,
                    variance=res.variance,
                    count=res.count,
                    ncombine=len(rows),
                    filter=filt,
                    meta=meta,
                ),
            )
        try:
            written = runner.compute(stage, [p.writes for p in pending.values()])
        except BaseException:
            for p in pending.values():
                p.abort()
            raise
        out = {chip: p.finalize(w) for (chip, p), w in zip(pending.items(), written, strict=True)}
        for chip in out:
            runner.log(
                f"  {stage}: {chip} fringe frame of {len(cal.rows[chip])} frames, relative amplitudes "
                + ", ".join(f"{n:.3f}" for n in norms[chip])
            )
        return out
    finally:
        cal.cleanup()


# ------------------------------------------------------------------------- science correction


@dataclass(frozen=True)
class FringeUse:
    """What a science chip task needs to correct its fringes besides the frame's arrays."""

    key: str
    filter: str
    #: the frame's place among the fringe frame's inputs (None: it was not stacked)
    index: int | None
    norms: tuple[float, ...]
    nframes: int
    fit: Mapping[str, Any]


def fringe_use(fringe: Master, entry: Entry, cfg: ReduceConfig) -> FringeUse:
    """The static part of one chip-frame's fringe correction (from the fringe master's meta)."""
    inputs = list(fringe.meta.get("inputs", []))
    return FringeUse(
        key=str(key_of(fringe)),
        filter=str(fringe.filter),
        index=inputs.index(entry.name) if entry.name in inputs else None,
        norms=tuple(float(n) for n in fringe.meta.get("norms", [1.0] * fringe.ncombine)),
        nframes=fringe.ncombine,
        fit=dict(cfg.fringe.fit_params()),
    )


def pack_with_fringe(cm: ChipMasters, fringe: Master, name: str) -> Any:
    """:func:`~ccdask.night._stages.pack_masters` with the chip's fringe frame added (``fringe``:
    data, variance, count), as one graph node."""
    keys = [key_of(cm.bias), key_of(cm.dark), key_of(cm.flat), None if cm.bad is None else cm.bad.name, key_of(fringe)]
    inputs = {**master_inputs(cm), "fringe": (fringe.data, fringe.variance, fringe.count)}
    return dask.delayed(inputs, pure=True, name=f"masters-{name}-{canonical_hash(keys)[:8]}")


def correct_chip(
    sci: np.ndarray, var: np.ndarray, dq: np.ndarray, arrays: Sequence[np.ndarray], use: FringeUse, header: Any
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Fit the scale of the fringe frame ``arrays`` (data, variance, count) in one calibrated
    chip and subtract it; the scale and its error go into ``header`` (FRNGSCL, FRNGSERR).
    Returns the corrected SCI and VAR and the HISTORY lines."""
    data, variance, count = (np.asarray(a) for a in arrays)
    frame = FringeFrame(data, variance, count, use.nframes, use.norms)
    sci32 = np.asarray(sci, dtype=np.float32)
    var32 = np.asarray(var, dtype=np.float32)
    dq16 = np.asarray(dq).astype(np.int16)
    fit = fit_fringe_np(sci32, var32, dq16, frame, index=use.index, **use.fit)
    out_sci, out_var = subtract_fringe_np(sci32, var32, frame, fit)
    header["FRNGSCL"] = (round(fit.scale, 6), "fringe frame scale subtracted (ccdask)")
    header["FRNGSERR"] = (round(fit.scale_err, 6), "error of FRNGSCL")
    own = "one of its inputs" if use.index is not None else "not one of its inputs"
    line = (
        f"fringe: {use.filter} fringe frame {use.key} ({use.nframes} frames, {own}) x "
        f"{fit.scale:.5f} +/- {fit.scale_err:.5f} subtracted ({fit.npix} points)"
    )
    return out_sci, out_var, [line]
