"""The calibration masters, built in two steps that keep memory flat and graphs small.

1. **Calibrate** (one task per chip-frame): read the raw chip, run :func:`ccdask.calibrate._process.process`
   on it up to the step the master itself corrects (in memory, one block), and write SCI and VAR
   to a scratch zarr store chunked like the stacking tiles. Flat tasks also return a fixed-grid
   sample of their pixels for the focal-plane normalisation.
2. **Stack** (tile by tile): the scratch frames of one chip are read back lazily and stacked by
   :func:`ccdask.combine.combine` with their variance planes; each task holds one
   ``(N, ty, tx)`` tile within the per-task memory budget.

So a master's memory is bounded by one chip (step 1) or one tile (step 2), never by the number
of frames, and the graph is one task per chip-frame plus a few per tile.
"""

from __future__ import annotations

import functools
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..calibrate._process import Role, process_in_memory
from ..catalog import Entry
from ..combine import combine
from ..combine._stack import tile_shape
from ..config import ReduceConfig
from ..frame import Master
from ..sections import Section
from ..utils import sample_step

__all__ = [
    "CalibratedFrames",
    "calibrate_frames",
    "focal_plane_median",
    "normalise_flats",
    "pooled_median",
    "scratch_stack",
    "stack_master",
]


def _region_sample(img: np.ndarray, region: str) -> np.ndarray:
    sec = Section.parse(region, keyword="flat.region").validate(img.shape, keyword="flat.region")
    sub = img[sec.normalized().slices]
    s = sample_step(sub.shape)
    return np.ascontiguousarray(sub[::s, ::s], dtype=np.float32).ravel()


def pooled_median(samples: Sequence[np.ndarray]) -> float:
    """The median of the finite values of several samples pooled (NaN when there are none)."""
    values = np.concatenate([np.asarray(s, np.float64).ravel() for s in samples])
    good = values[np.isfinite(values)]
    return float(np.median(good)) if good.size else float("nan")


@dataclass
class CalibratedFrames:
    """Step 1 of a master stage: per chip, the scratch arrays and the tasks that fill them."""

    root: Path
    tasks: list[Any] = field(default_factory=list)
    arrays: dict[str, list[tuple[Entry, Any, Any]]] = field(default_factory=dict)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _calibrate_task(
    source: Any,
    sci_path: str,
    var_path: str,
    masters: dict[str, Any],
    *,
    cfg: ReduceConfig,
    layout: Any,
    exptime: float | None,
    name: str,
    role: Role,
    rate: bool,
    region: str | None,
    tile: tuple[int, int],
    crosstalk: Any = None,
) -> dict[str, Any]:
    import zarr

    raw = source.read(slice(None), slice(None))
    shape = layout.trimmed_shape
    xt = None if crosstalk is None else crosstalk.load()  # the other chips' source amplifiers
    sci, var, _dq, _hist = process_in_memory(
        raw, masters, cfg, layout=layout, exptime=exptime, name=name, role=role, crosstalk=xt
    )
    if rate:
        t = np.float32(exptime)
        sci = sci / t
        var = var / (t * t)
    for path, plane in ((sci_path, sci), (var_path, var)):
        z = zarr.create_array(
            store=path,
            shape=shape,
            chunks=tile,
            dtype="float32",
            compressors=None,
            fill_value=float("nan"),
            overwrite=True,
        )
        z[...] = plane
    out: dict[str, Any] = {"nan": int(np.count_nonzero(~np.isfinite(sci)))}
    if region is not None:
        out["sample"] = _region_sample(sci, region)
    return out


def calibrate_frames(
    kind: Role,
    entries: Mapping[str, Sequence[Entry]],
    cfg: ReduceConfig,
    scratch: Path,
    *,
    masters: Mapping[str, Any],
    combine_cfg: Any,
    rate: bool = False,
    sample_region: str | None = None,
    crosstalk: Any = None,
) -> CalibratedFrames:
    """Graph of step 1 for one master stage: one task per chip-frame writing to ``scratch``.

    ``entries`` maps chip → frames; ``masters`` maps chip → a packed (delayed) set of masters as
    made by :func:`ccdask.night._reduce.pack_masters` (or an empty dict). With ``rate``, frames are
    divided by their exposure time (darks). With ``sample_region``, each task returns the
    fixed-grid sample of that region (flats). ``crosstalk``: the night's NightCrosstalk (or None).
    """
    root = scratch / f"{kind}-{uuid.uuid4().hex[:8]}"
    out = CalibratedFrames(root=root)
    for number, (chip, ents) in enumerate(entries.items()):
        if not ents:
            continue
        shape = ents[0].layout.trimmed_shape
        tile = tile_shape(len(ents), shape, combine_cfg.memory_per_task, variance=True, stacked=True)
        rows = []
        for i, e in enumerate(ents):
            # by number: chip names come from headers and may hold '/' or '..'
            paths = [str(root / f"{number:03d}" / f"{i:04d}-{plane}.zarr") for plane in ("sci", "var")]
            # static arguments go into a partial: dask does not walk it looking for collections
            func = functools.partial(
                _calibrate_task,
                e.source,
                paths[0],
                paths[1],
                cfg=cfg,
                layout=e.layout,
                exptime=e.exptime,
                name=e.name,
                role=kind,
                rate=rate,
                region=sample_region,
                tile=tile,
                crosstalk=None if crosstalk is None else crosstalk.for_entry(e),
            )
            task = dask.delayed(func, pure=False)(
                masters.get(chip, {}), dask_key_name=f"calibrate-{kind}-{e.name}-{chip}-{dask.base.tokenize(paths)[:8]}"
            )
            out.tasks.append(task)
            rows.append((e, paths[0], paths[1]))
        out.arrays[chip] = rows
    return out


def _read_tile(
    paths: tuple[str, ...], divisors: tuple[float, ...] | None, squared: bool, rows: slice, cols: slice
) -> np.ndarray:
    """One ``(N, ty, tx)`` tile of a chip's calibrated frames, read from their scratch stores
    (each divided by its divisor, or by its square for a variance plane)."""
    import zarr

    out = np.empty((len(paths), rows.stop - rows.start, cols.stop - cols.start), dtype=np.float32)
    for i, path in enumerate(paths):
        plane = zarr.open_array(path, mode="r")[rows, cols]
        if divisors is None:
            out[i] = plane
        else:
            d = np.float32(divisors[i])
            np.divide(plane, d * d if squared else d, out=out[i])
    return out


def scratch_stack(
    paths: Sequence[str],
    shape: tuple[int, int],
    tile: tuple[int, int],
    *,
    divisors: Sequence[float] | None = None,
    squared: bool = False,
    name: str = "scratch",
) -> da.Array:
    """The lazy ``(N, ny, nx)`` stack of scratch planes, chunked ``(N, ty, tx)``: one task per
    tile reads that tile of every frame (no per-frame array, so building it opens no store and
    its graph has one task per tile)."""
    from dask._task_spec import Task
    from dask.highlevelgraph import HighLevelGraph

    ps = tuple(str(p) for p in paths)
    divs = None if divisors is None else tuple(float(d) for d in divisors)
    token = dask.base.tokenize(ps, divs, squared, shape, tile)
    key = f"{name}-{token}"
    ny, nx = shape
    ys = [(y, min(y + tile[0], ny)) for y in range(0, ny, tile[0])]
    xs = [(x, min(x + tile[1], nx)) for x in range(0, nx, tile[1])]
    layer = {}
    for i, (y0, y1) in enumerate(ys):
        for j, (x0, x1) in enumerate(xs):
            k = (key, 0, i, j)
            layer[k] = Task(k, _read_tile, ps, divs, squared, slice(y0, y1), slice(x0, x1))
    chunks = ((len(ps),), tuple(b - a for a, b in ys), tuple(b - a for a, b in xs))
    graph = HighLevelGraph.from_collections(key, layer, dependencies=())
    return da.Array(graph, key, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))


def stack_master(
    kind: str,
    chip: str,
    rows: Sequence[tuple[Entry, str, str]],
    combine_cfg: Any,
    *,
    divisors: Sequence[float] | None = None,
    filter: str | None = None,
) -> Master:
    """Step 2: the lazy clipped stack of one chip's calibrated frames (read back from scratch).

    ``divisors`` (flats) divide each frame, and its variance by the square, before stacking.
    The frames are read tile by tile in the stacking's own tiles (:func:`scratch_stack`).
    """
    entries = [e for e, _, _ in rows]
    shape = entries[0].layout.trimmed_shape
    tile = tile_shape(len(rows), shape, combine_cfg.memory_per_task, variance=True, stacked=True)
    label = f"{kind}-{'' if filter is None else f'{filter}-'}{chip}"
    sci = scratch_stack([sp for _, sp, _ in rows], shape, tile, divisors=divisors, name=f"scratch-sci-{label}")
    var = scratch_stack(
        [vp for _, _, vp in rows], shape, tile, divisors=divisors, squared=True, name=f"scratch-var-{label}"
    )
    res = combine(sci, variance=var, name=label, **combine_cfg.to_dict())
    meta: dict[str, Any] = {
        "inputs": [e.name for e in entries],
        "label": f"{kind}{'' if filter is None else ' ' + filter} {chip} ({len(entries)} frames)",
    }
    if kind == "dark":
        meta["exptimes"] = sorted({float(e.exptime) for e in entries if e.exptime is not None})
    return Master(
        kind=kind,
        chip=chip,
        data=res.data,
        variance=res.variance,
        count=res.count,
        ncombine=len(entries),
        filter=filter,
        meta=meta,
    )


def focal_plane_median(images: Sequence[da.Array], region: str = "[*,*]", *, name: str = "median") -> da.Array:
    """The median of ``region`` of every chip image pooled, on the fixed sample grid: lazy 0-d."""
    parts = []
    for img in images:
        sec = Section.parse(region, keyword="flat.region").validate(tuple(img.shape), keyword="flat.region")
        sub = img[sec.normalized().slices]
        s = sample_step(tuple(sub.shape))
        parts.append(sub[::s, ::s].ravel())
    # method="tasks": dask would otherwise import distributed to choose one, and a rerun with
    # nothing to compute (flats from the cache) must not pay for that import
    pooled = da.concatenate(parts).rechunk(-1, method="tasks")
    return da.map_blocks(
        _nanmedian,
        pooled,
        drop_axis=0,
        dtype=np.float64,
        meta=np.array((), np.float64),
        name=f"{name}-{dask.base.tokenize(pooled)}",
    )


def _nanmedian(values: np.ndarray) -> np.ndarray:
    return np.asarray(pooled_median([values]), dtype=np.float64)


def normalise_flats(flats: Mapping[str, Master], config: ReduceConfig) -> dict[str, Master]:
    """Divide every chip's flat by the pooled focal-plane median so the median response is 1."""
    chips = list(flats)
    if not chips:
        return {}
    filt = flats[chips[0]].filter
    m = focal_plane_median([flats[c].data for c in chips], config.flat.region, name=f"flatscale-{filt}").astype(
        np.float32
    )
    out = {}
    for c in chips:
        f = flats[c]
        var = None if f.variance is None else f.variance / (m * m)
        meta = dict(f.meta)
        meta["label"] = f"flat {filt} {c} ({f.ncombine} frames)"
        out[c] = Master(
            kind="flat",
            chip=c,
            data=f.data / m,
            variance=var,
            count=f.count,
            ncombine=f.ncombine,
            filter=filt,
            meta=meta,
        )
    return out


def illumination_samples(dome: Mapping[str, Master], twilight: Mapping[str, Master]) -> dict[str, da.Array]:
    """Lazy ``twilight / dome`` per chip on the illumination model's fixed sample grid."""
    from ..calibrate._illumination import sample_grid

    return {c: (twilight[c].data / dome[c].data)[sample_grid(tuple(dome[c].data.shape))] for c in dome}


def illuminate_flats(
    dome: Mapping[str, Master],
    twilight: Mapping[str, Master],
    samples: Mapping[str, np.ndarray],
    detsecs: Mapping[str, Any],
    config: ReduceConfig,
) -> tuple[dict[str, Master], list[Any]]:
    """``dome × L(twilight / dome)`` per chip, with ``L`` the 2-D Legendre fit of the sampled ratio.

    One fit over the focal plane when every chip has a DETSEC, else one fit per chip in its own
    pixel coordinates. The model is evaluated lazily, block by block, on the dome master's chunks;
    the result is *not* normalised (:func:`normalise_flats` does that). Returns the masters and
    the fitted models.
    """
    from ..calibrate._illumination import chip_coords, fit_focal_plane, model_image

    fc = config.flat
    chips = list(dome)
    shapes = {c: tuple(dome[c].data.shape) for c in chips}
    focal = all(detsecs.get(c) is not None for c in chips)
    coords = {c: chip_coords(shapes[c], detsecs[c] if focal else None) for c in chips}
    groups = [chips] if focal else [[c] for c in chips]
    out: dict[str, Master] = {}
    models = []
    for group in groups:
        model = fit_focal_plane(
            {c: samples[c] for c in group},
            shapes,
            coords,
            fc.illumination_order,
            sigma=fc.illumination_sigma,
            maxiters=fc.illumination_maxiters,
        )
        models.append(model)
        for c in group:
            d = dome[c]
            m = model_image(model, shapes[c], coords[c], chunks=d.data.chunks, name=f"illumination-{d.filter}-{c}")
            meta = dict(d.meta)
            meta["params"] = {
                **meta.get("params", {}),
                "illumination_fit": {
                    "coordinates": "focal plane (DETSEC)" if focal else "chip",
                    "order": model.order,
                    "coeffs": [round(x, 8) for x in model.coeffs],
                    "used": model.nused,
                    "sampled": model.nsample,
                    "twilight_inputs": twilight[c].meta.get("inputs", []),
                },
            }
            meta["label"] = (
                f"flat {d.filter} {c} ({d.ncombine} dome frames, illumination from {twilight[c].ncombine} twilight)"
            )
            out[c] = Master(
                kind="flat",
                chip=c,
                data=d.data * m,
                variance=None if d.variance is None else d.variance * (m * m),
                count=d.count,
                ncombine=d.ncombine,
                filter=d.filter,
                meta=meta,
            )
    return out, models
