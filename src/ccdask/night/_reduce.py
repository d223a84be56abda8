"""The night: catalogue → plan → masters (cached) → science → outputs, manifest and QA.

``reduce`` builds one graph per stage (bias, dark, flat, science) and computes each with a
single call, so the dashboard's task stream reads as the night's stages, each with named tasks
(``combine-bias-CCD1``, ``write-science_g_000-CCD2``...). Masters come from the zarr cache when
their inputs and parameters are unchanged; reduced frames already written with the same inputs,
masters and parameters are skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
from astropy.io import fits

from .._version import __version__
from ..cache._store import MasterCache, master_key
from ..calibrate._masks import bad_pixel_mask
from ..calibrate._process import ChipMasters, process_in_memory
from ..catalog import Catalog, Entry
from ..config import ReduceConfig, load_config
from ..errors import CcdaskWarning, PlanError
from ..frame import Master
from ..io._write import TMP_PREFIX, concat_parts
from ._manifest import write_manifest
from ._masters import (
    calibrate_frames,
    illuminate_flats,
    illumination_samples,
    normalise_flats,
    pooled_median,
    stack_master,
)
from ._plan import Plan, make_plan, nearest_dark_exptime
from ._products import (
    chip_header,
    master_part_task,
    output_name,
    reduced_part_task,
    safe_filter_name,
)
from ._qa import bin_factor, focal_plane, save_png, stats_table

__all__ = ["ReduceResult", "reduce"]


@dataclass
class ReduceResult:
    """What a reduction did: the plan, outputs, masters, per-stage timings and task counts."""

    out: Path
    plan: Plan
    outputs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    masters: dict[str, str] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    manifest_path: Path | None = None

    @property
    def raw_pixels(self) -> int:
        """Raw pixels read by the stages that ran (cached masters and skipped frames excluded)."""
        return sum(s.get("raw_pixels", 0) for s in self.stages.values())


class _Runner:
    """Computes one stage's collections with a single call on the chosen scheduler."""

    def __init__(self, client: Any, progress: bool, log: Callable[[str], None]):
        self.client = client
        self.progress = progress
        self.log = log
        self.stages: dict[str, dict[str, Any]] = {}

    def compute(self, stage: str, collections: Sequence[Any]) -> list[Any]:
        record = self.stages.setdefault(stage, {"seconds": 0.0, "tasks": 0, "task_groups": {}})
        if not collections:
            return []
        graph = dask.base.collections_to_expr(list(collections)).__dask_graph__()
        groups = Counter(_key_prefix(k) for k in graph)
        record["tasks"] += len(graph)
        for k, n in groups.items():
            record["task_groups"][k] = record["task_groups"].get(k, 0) + n
        t0 = time.perf_counter()
        if self.client is None or isinstance(self.client, str) or not hasattr(self.client, "gather"):
            results = list(dask.compute(*collections, scheduler=self.client or "threads"))
        else:
            futures = self.client.compute(list(collections))
            if self.progress:
                from distributed import progress

                progress(futures)
            results = self.client.gather(futures)
        seconds = time.perf_counter() - t0
        record["seconds"] += seconds
        self.log(f"  {stage}: {len(graph)} tasks in {seconds:.1f} s")
        return results


def _key_prefix(key: Any) -> str:
    """The task group of a key, as the dashboard shows it (``combine-bias``, ``read``...)."""
    from dask.utils import key_split

    return key_split(key)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _primary_header(path: str) -> fits.Header:
    with fits.open(path, mode="readonly", lazy_load_hdus=True, memmap=False) as h:
        return h[0].header.copy()


def reduce(raw: str | os.PathLike | Iterable[str | os.PathLike], out: str | os.PathLike, *,
           config: Any = None, client: Any = None, cache: str | os.PathLike | None = None,
           progress: bool = False, log: Callable[[str], None] | None = None) -> ReduceResult:
    """Reduce a night of raw frames into ``out`` (see DESIGN's output layout).

    Parameters
    ----------
    raw : path or paths
        Raw files and/or folders.
    out : path
        Output folder (created). Nothing is written outside it and the cache.
    config : ReduceConfig, dict, TOML path, optional
        Step parameters; defaults when None.
    client : distributed.Client, "threads", "sync", a dask scheduler function, or None
        Where to compute. None opens an embedded LocalCluster (``ccdask.cluster``) for the run.
    cache : path, optional
        The zarr master cache (default ``OUT/cache.zarr``); nights may share one.
    progress : bool
        Show a progress bar per stage (terminals).
    log : callable, optional
        Receives one line per event (the CLI passes ``print``).

    Returns
    -------
    ReduceResult

    Raises
    ------
    PlanError
        Before any computation, when the frames cannot satisfy the plan.
    """
    if client is None:
        from ..cluster import ClusterConfig, open_client

        with open_client(ClusterConfig()) as c:
            return reduce(raw, out, config=config, client=c, cache=cache, progress=progress, log=log)
    log = log or (lambda _msg: None)
    cfg = load_config(config)
    t_start = time.perf_counter()
    out = Path(out)
    catalog = Catalog.scan(raw, profile=cfg.profile)
    plan = make_plan(catalog, cfg)
    out.mkdir(parents=True, exist_ok=True)
    _sweep_tmp(out)
    store = MasterCache(cache if cache is not None else out / "cache.zarr")
    runner = _Runner(client, progress, log)
    result = ReduceResult(out=out, plan=plan)
    log(f"planned {len(plan.chips)} chip(s), {len(plan.exposures)} science exposure(s)")
    for note in plan.notes:
        log(f"  note: {note}")
    t_scan = time.perf_counter() - t_start

    cfgd = cfg.to_dict()
    common = {"overscan": cfgd["overscan"], "read_noise": cfg.read_noise, "masks": {
        "saturation_grow": cfg.masks.saturation_grow}}

    scratch = out / ".scratch"
    # ---------------------------------------------------------------- bias
    biases: dict[str, Master | None] = dict.fromkeys(plan.chips)
    if plan.steps["bias"]:
        wanted = {}
        for chip, cp in plan.chips.items():
            if cp.biases:
                params = {**common, "combine": cfgd["bias"]["combine"], "layout": cp.biases[0].layout.to_dict()}
                wanted[chip] = (master_key("bias", [e.identity for e in cp.biases], params, chip=chip,
                                           algorithm_version="bias-1"), params, cp.biases, chip)
        biases.update(_stage_masters("bias", wanted, store, runner, cfg, scratch,
                                     combine_cfg=cfg.bias.combine, masters={}))

    # ---------------------------------------------------------------- dark
    darks: dict[str, Master | None] = dict.fromkeys(plan.chips)
    dark_groups: dict[tuple[str, float | None], Master] = {}
    if plan.steps["dark"]:
        wanted = {}
        for chip, cp in plan.chips.items():
            groups = ({None: cp.darks} if cfg.dark.mode == "scale" else
                      {t: tuple(e for e in cp.darks if float(e.exptime) == t) for t in cp.dark_exptimes})
            for t, ents in groups.items():
                params = {**common, "combine": cfgd["dark"]["combine"], "mode": cfg.dark.mode,
                          "bias": _key_of(biases[chip])}
                name = chip if t is None else f"{chip}@{t:g}s"
                wanted[name] = (master_key("dark", [e.identity for e in ents], params, chip=chip,
                                           algorithm_version="dark-1"), params, ents, chip)
        packed = {name: pack_masters(ChipMasters(bias=biases[w[3]]), name) for name, w in wanted.items()}
        built = _stage_masters("dark", wanted, store, runner, cfg, scratch, combine_cfg=cfg.dark.combine,
                               masters=packed, rate=True)
        for name, m in built.items():
            chip, ents = wanted[name][3], wanted[name][2]
            t = None if cfg.dark.mode == "scale" else float(ents[0].exptime)
            dark_groups[(chip, t)] = m
            if t is None:
                darks[chip] = m

    # ---------------------------------------------------------------- flats
    flats: dict[str | None, dict[str, Master]] = {}
    if plan.steps["flat"]:
        per_filter: dict[str | None, dict[str, tuple[Entry, ...]]] = {}
        for chip, cp in plan.chips.items():
            for filt, ents in cp.flats.items():
                per_filter.setdefault(filt, {})[chip] = ents
        def flat_stage(stage: str, by_chip: dict[str, tuple[Entry, ...]], extra: dict) -> dict[str, Master]:
            pooled = sorted((e.identity for ents in by_chip.values() for e in ents), key=lambda d: (d["path"], d["hdu"]))
            wanted = {}
            packed = {}
            for chip, ents in by_chip.items():
                dark = _dark_for(chip, None, darks, dark_groups, cfg, ents)
                params = {**common, "combine": cfgd["flat"]["combine"], "region": cfg.flat.region,
                          "filter": filt, "bias": _key_of(biases[chip]), "dark": _key_of(dark),
                          "pooled_inputs": _digest(pooled), **extra}
                wanted[chip] = (master_key("flat", [e.identity for e in ents], params,
                                           chip=chip, algorithm_version="flat-1"), params, ents, chip)
                packed[chip] = pack_masters(ChipMasters(bias=biases[chip], dark=dark), f"{chip}-flat")
            return _stage_masters(stage, wanted, store, runner, cfg, scratch,
                                  combine_cfg=cfg.flat.combine, masters=packed, filter=filt,
                                  focal_plane=True)

        for filt, by_chip in per_filter.items():
            stage = f"flat-{filt}" if filt else "flat"
            dome_by, twilight_by = _split_twilight(by_chip, cfg, filt, log)
            if not twilight_by:
                flats[filt] = normalise_flats(flat_stage(stage, by_chip, {}), cfg)
                continue
            # the dome master's key also covers the twilight inputs and the model's options, so
            # the final (illuminated) flat, which carries that key, changes when either does
            twi_ids = sorted((e.identity for ents in twilight_by.values() for e in ents),
                             key=lambda d: (d["path"], d["hdu"]))
            illum = {"order": cfg.flat.illumination_order, "sigma": cfg.flat.illumination_sigma,
                     "maxiters": cfg.flat.illumination_maxiters, "twilight_inputs": _digest(twi_ids),
                     "algorithm": "illumination-1"}
            dome = flat_stage(stage, dome_by, {"illumination": illum})
            twilight = flat_stage(f"{stage}-twilight", twilight_by, {"set": "twilight"})
            lazy = illumination_samples(dome, twilight)
            values = runner.compute(f"{stage}-illumination", list(lazy.values()))
            detsecs = {c: by_chip[c][0].layout.detsec for c in dome}
            illuminated, models = illuminate_flats(dome, twilight, dict(zip(lazy, values, strict=True)), detsecs, cfg)
            for mdl in models:
                log(f"  {stage}: illumination order {mdl.order} from {mdl.nused}/{mdl.nsample} samples")
            flats[filt] = normalise_flats(illuminated, cfg)

    # ---------------------------------------------------------------- science
    factor = max(bin_factor(cp.raw_shape, max(64, cfg.output.qa_max_pixels // 2)) for cp in plan.chips.values())
    science = science_graph(plan, cfg, out / "reduced", biases=biases, darks=darks, dark_groups=dark_groups,
                            flats=flats, thumb_factor=factor)
    tasks, finals, raw_pixels = science.tasks, science.finals, science.raw_pixels
    result.skipped.extend(science.skipped)

    master_files = _master_outputs(out, biases, darks, dark_groups, flats, cfg, factor)
    master_todo = [(label, t, path) for label, t, path in master_files if t is not None]
    results = runner.compute("science", [*tasks, *[t for _, t, _ in master_todo]])
    runner.stages["science"]["raw_pixels"] = raw_pixels
    sci_results, master_results = results[:len(tasks)], results[len(tasks):]
    result.outputs = [str(f) for _, f in finals]
    _warn_mostly_flagged(finals, sci_results)

    # ---------------------------------------------------------------- QA, manifest
    t_qa = time.perf_counter()
    rows = []
    if cfg.output.qa:
        qa_dir = out / "qa"
        for (exp, final), chips in zip(finals, sci_results, strict=True):
            for c in chips:
                rows.append({"file": final.name, "chip": c["chip"], "filter": exp.filter or "",
                             "exptime": exp.exptime if exp.exptime is not None else float("nan"),
                             **c["stats"]})
            thumbs = {c["chip"]: c["thumb"] for c in chips}
            det = {e.chip: e.layout.detsec for e in exp.chips}
            save_png(qa_dir / f"{exp.name}.png", focal_plane(thumbs, det, factor),
                     f"{exp.name} ({exp.filter or '-'}, {exp.exptime or 0:g} s)")
        for (label, _t, path), chips in zip(master_todo, master_results, strict=True):
            thumbs = {c["chip"]: c["thumb"] for c in chips}
            det = {c: plan.chips[c].science[0].layout.detsec if plan.chips[c].science else None for c in thumbs}
            save_png(qa_dir / f"master_{Path(path).stem}.png", focal_plane(thumbs, det, factor), label)
        if rows:
            table = stats_table(rows)
            qa_dir.mkdir(parents=True, exist_ok=True)
            tmp = qa_dir / f"{TMP_PREFIX}stats.ecsv"
            table.write(tmp, format="ascii.ecsv", overwrite=True)
            os.replace(tmp, qa_dir / "stats.ecsv")
    for label, _t, path in master_files:
        result.masters[label] = str(path)
    result.stages = runner.stages
    result.stages["qa"] = {"seconds": time.perf_counter() - t_qa}
    result.stages["catalog"] = {"seconds": t_scan}
    result.manifest_path = write_manifest(out, catalog, plan, cfg, result, biases, darks, dark_groups, flats,
                                           total=time.perf_counter() - t_start)
    return result


@dataclass
class ScienceGraph:
    """The science stage, built but not computed."""

    tasks: list[Any] = field(default_factory=list)
    finals: list[tuple[Any, Path]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    raw_pixels: int = 0


def science_graph(plan: Plan, cfg: ReduceConfig, reduced_dir: Path, *, biases, darks, dark_groups, flats,
                  thumb_factor: int) -> ScienceGraph:
    """One task per chip-frame (read → calibrate → write a part) and one per exposure (assemble).

    Exposures whose output already carries the same ``CCDKEY`` are skipped. Nothing is read:
    readers come from the catalogue's scanned headers and the primary header is read by the
    assembling task.
    """
    graph = ScienceGraph()
    chip_numbers = {c: i + 1 for i, c in enumerate(plan.chips)}
    cfg_digest = _digest(cfg.to_dict())
    packed: dict[tuple[str, Any], Any] = {}
    for exp in plan.exposures:
        used = {}
        chip_tasks = []
        for entry in exp.chips:
            chip = entry.chip
            dark = _dark_for(chip, entry.exptime, darks, dark_groups, cfg, (entry,)) if plan.steps["dark"] else None
            flat = flats.get(exp.filter, {}).get(chip) if plan.steps["flat"] else None
            mkey = (chip, _key_of(biases.get(chip)), _key_of(dark), _key_of(flat))
            if mkey not in packed:
                bad = bad_pixel_mask(dark_rate=None if dark is None else dark.data,
                                     flat=None if flat is None else flat.data, config=cfg.masks,
                                     shape=entry.layout.trimmed_shape)
                packed[mkey] = pack_masters(ChipMasters(bias=biases.get(chip), dark=dark, flat=flat, bad=bad), chip)
            used[chip] = {"bias": _key_of(biases.get(chip)), "dark": _key_of(dark), "flat": _key_of(flat)}
            chip_tasks.append((entry, packed[mkey]))
        key = _digest({"inputs": [e.identity for e in exp.chips], "masters": used,
                       "config": cfg_digest, "version": __version__})
        final = reduced_dir / output_name(exp.name)
        if cfg.output.skip_existing and _has_key(final, key):
            graph.skipped.append(str(final))
            continue
        parts, part_paths = [], []
        for entry, masters in chip_tasks:
            # named by chip number: chip names come from headers and may hold '/' or '..'
            part = reduced_dir / f"{TMP_PREFIX}{exp.name}.{chip_numbers[entry.chip]}.part"
            # static arguments go into a partial: dask does not walk it looking for collections
            task = functools.partial(
                _science_chip_task, str(part), entry.source, cfg=cfg, layout=entry.layout,
                exptime=entry.exptime, name=exp.name, header=entry.header,
                extver=chip_numbers[entry.chip], thumb_factor=thumb_factor)
            parts.append(dask.delayed(task, pure=False)(
                masters, dask_key_name=f"reduce-{exp.name}-{entry.chip}-{key[:8]}"))
            part_paths.append(str(part))
            graph.raw_pixels += entry.shape[0] * entry.shape[1]
        graph.tasks.append(dask.delayed(_finish_exposure, pure=True)(
            str(final), exp.path, _provenance(exp, used, cfg, key), part_paths, parts,
            dask_key_name=f"assemble-{exp.name}-{key[:8]}"))
        graph.finals.append((exp, final))
    return graph


def _split_twilight(by_chip: dict[str, tuple[Entry, ...]], cfg: ReduceConfig, filt: str | None,
                    log: Callable[[str], None]) -> tuple[dict, dict]:
    """Dome and twilight flats of one filter per chip, when ``flat.illumination`` applies.

    Returns ``(by_chip, {})`` — every flat stacked together, as without the option — when the
    option is off, or the filter lacks dome or twilight flats (a note is logged when only some
    chips have both).
    """
    if not cfg.flat.illumination:
        return by_chip, {}
    from ..profiles._profile import _norm

    labels = {_norm(x) for x in cfg.flat.twilight_labels}
    twi = {c: tuple(e for e in ents if _norm(e.label) in labels) for c, ents in by_chip.items()}
    dome = {c: tuple(e for e in ents if _norm(e.label) not in labels) for c, ents in by_chip.items()}
    if not any(twi.values()) or not any(dome.values()):
        return by_chip, {}
    if not all(twi.values()) or not all(dome.values()):
        log(f"  note: filter {filt!r}: not every chip has both dome and twilight flats; "
            "illumination correction skipped, all flats stacked together")
        return by_chip, {}
    return dome, twi


def _key_of(m: Master | None) -> str | None:
    return None if m is None else m.meta.get("cache_key")


def _dark_for(chip, exptime, darks, dark_groups, cfg, entries) -> Master | None:
    if cfg.dark.mode == "scale" or not dark_groups:
        return darks.get(chip)
    times = sorted(t for (c, t) in dark_groups if c == chip)
    if not times:
        return None
    ref = exptime if exptime is not None else float(entries[0].exptime)
    return dark_groups[(chip, nearest_dark_exptime(ref, times))]


def _stage_masters(stage: str, wanted: dict, store: MasterCache, runner: _Runner, cfg: ReduceConfig,
                   scratch: Path, *, combine_cfg: Any, masters: dict, rate: bool = False,
                   filter: str | None = None, focal_plane: bool = False) -> dict[Any, Master]:
    """Masters from the cache; the missing ones are built (calibrate, then stack) and stored.

    ``wanted`` maps a name to ``(cache key, params, entries, chip)``. With ``focal_plane``
    (flats), each exposure is first divided by the median of all its chips pooled; then *every*
    chip of the filter is rebuilt when one is missing, since they share that normalisation.
    """
    record = runner.stages.setdefault(stage, {"seconds": 0.0, "tasks": 0, "task_groups": {}})
    found = {name: m for name, (key, *_rest) in wanted.items() if (m := store.get(key)) is not None}
    todo = {name: w for name, w in wanted.items() if name not in found}
    if focal_plane and todo:
        todo = dict(wanted)
    record["cached"] = len(wanted) - len(todo)
    record["built"] = len(todo)
    record["raw_pixels"] = sum(e.shape[0] * e.shape[1] for _k, _p, ents, _c in todo.values() for e in ents)
    if not todo:
        runner.log(f"  {stage}: {len(found)} master(s) from the cache")
        return found
    kind = stage.split("-")[0]
    cal = calibrate_frames(kind, {name: w[2] for name, w in todo.items()}, cfg, scratch,
                           masters=masters, combine_cfg=combine_cfg, rate=rate,
                           sample_region=cfg.flat.region if focal_plane else None)
    try:
        infos = runner.compute(f"{stage}", cal.tasks)
        divisors: dict[Any, list[float]] = {}
        if focal_plane:
            samples: dict[str, list[np.ndarray]] = {}
            flat_rows = [(name, e) for name, rows in cal.arrays.items() for e, _s, _v in rows]
            for (_name, e), info in zip(flat_rows, infos, strict=True):
                samples.setdefault(e.path, []).append(info["sample"])
            norm = {path: pooled_median(ss) for path, ss in samples.items()}
            blank = [path for path, value in norm.items() if not (np.isfinite(value) and value > 0)]
            if blank:  # no light: left out with a warning (junk must not stop a night), unless all are
                what = "flat" + ("" if filter is None else f" for filter {filter!r}")
                listed = "; ".join(f"{p} (median {norm[p]:.4g})" for p in blank[:5]) + (" ..." if len(blank) > 5 else "")
                if len(blank) == len(norm):
                    raise PlanError(f"no usable {what}: every exposure has a median <= 0 over the focal "
                                    f"plane, it cannot be normalised (empty or negative flats?): {listed}")
                warnings.warn(f"{len(blank)} of {len(norm)} exposure(s) left out of the {what}: median <= 0 "
                              f"over the focal plane (empty or negative flat?): {listed}", CcdaskWarning, stacklevel=3)
                cal.arrays = {name: [r for r in rows if r[0].path not in blank] for name, rows in cal.arrays.items()}
            divisors = {name: [norm[e.path] for e, _s, _v in rows] for name, rows in cal.arrays.items()}
        pending = {}
        for name, (key, params, _ents, chip) in todo.items():
            lazy = stack_master(kind, chip, cal.arrays[name], combine_cfg, divisors=divisors.get(name),
                                filter=filter)
            meta = dict(lazy.meta)
            meta.update({"key": key, "params": params})
            pending[name] = store.store_graph(key, Master(
                kind=lazy.kind, chip=lazy.chip, data=lazy.data, variance=lazy.variance, count=lazy.count,
                ncombine=lazy.ncombine, filter=lazy.filter, exptime=None, meta=meta))
        try:
            written = runner.compute(stage, [p.writes for p in pending.values()])
        except BaseException:
            for p in pending.values():
                p.abort()
            raise
        for (name, p), w in zip(pending.items(), written, strict=True):
            found[name] = p.finalize(w)
    finally:
        cal.cleanup()
    return found


def pack_masters(cm: ChipMasters, name: str) -> Any:
    """The masters of one chip as a single graph node, computed once and shared by many tasks."""
    return dask.delayed(_master_inputs(cm), pure=True, name=f"masters-{name}-{_digest(_master_keys(cm))[:8]}")


def _master_keys(cm: ChipMasters) -> list:
    return [_key_of(cm.bias), _key_of(cm.dark), _key_of(cm.flat), None if cm.bad is None else cm.bad.name]


def _has_key(path: Path, key: str) -> bool:
    if not path.exists():
        return False
    try:
        return fits.getheader(path, 0).get("CCDKEY") == key
    except (OSError, ValueError):
        return False


def _provenance(exp, used: dict, cfg: ReduceConfig, key: str) -> fits.Header:
    """The cards ccdask adds to a reduced file's primary header."""
    h = fits.Header()
    h["CCDASKV"] = (__version__, "ccdask version")
    h["CCDKEY"] = (key, "inputs+masters+parameters id")
    h["RAWFILE"] = (Path(exp.path).name, "raw file reduced")
    for chip, keys in used.items():
        for kind, k in keys.items():
            if k:
                h.add_history(f"ccdask: {kind} master for {chip}: cache key {k}")
    steps = ["overscan" if cfg.overscan.enabled else None, "trim", "gain",
             "bias" if cfg.bias.enabled else None, f"dark({cfg.dark.mode})" if cfg.dark.mode != "none" else None,
             "flat" if cfg.flat.enabled else None, f"cosmics({cfg.cosmics.method})"]
    h.add_history("ccdask steps: " + " > ".join(s for s in steps if s))
    return h


def _master_inputs(cm: ChipMasters) -> dict[str, Any]:
    """The masters of one chip as graph inputs of a science task (computed once per chip)."""
    out: dict[str, Any] = {}
    for kind in ("bias", "dark", "flat"):
        m = getattr(cm, kind)
        if m is not None:
            out[kind] = (m.data, m.variance)
            out[f"{kind}_label"] = m.meta.get("label", kind)
    if cm.bad is not None:
        out["bad"] = cm.bad
    return out


def _science_chip_task(part: str, source: Any, masters: dict[str, Any], *, cfg: ReduceConfig,
                       layout: Any, exptime: float | None, name: str, header: fits.Header,
                       extver: int, thumb_factor: int) -> dict[str, Any]:
    """Read, calibrate and write one chip of one exposure (one task per chip-frame).

    ``header`` is the chip's merged header; the chip's own cards (not the primary's, not the
    raw layout's) go into its SCI extension.
    """
    raw = source.read(slice(None), slice(None))
    header = chip_header(header, _primary_header(source.path), layout)
    if layout.detsec is not None:
        header["DETSEC"] = str(layout.detsec)
    sci, var, dqa, history = process_in_memory(raw, masters, cfg, layout=layout, exptime=exptime,
                                               name=name, role="science")
    return reduced_part_task(part, sci, var, dqa, header=header, chip=layout.name, extver=extver,
                             history=history, thumb_factor=thumb_factor)


def _finish_exposure(final: str, raw_path: str, provenance: fits.Header, part_paths: list[str],
                     chip_results: list[dict]) -> list[dict]:
    """Assemble an exposure: the raw primary header plus ccdask's cards, then the chips' parts."""
    primary = _primary_header(raw_path)
    for k in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE", "BLANK",
              "CHECKSUM", "DATASUM"):
        primary.remove(k, ignore_missing=True, remove_all=True)
    primary.extend(provenance.cards, unique=False)
    concat_parts(final, primary, part_paths)
    return chip_results


def _finish(final: str, primary: fits.Header, part_paths: list[str], chip_results: list[dict]) -> list[dict]:
    concat_parts(final, primary, part_paths)
    return chip_results


def _master_outputs(out: Path, biases, darks, dark_groups, flats, cfg: ReduceConfig, factor: int):
    """Delayed writers of OUT/masters/*.fits: (label, task, path) per file."""
    if not cfg.output.masters_fits:
        return []
    mdir = out / "masters"
    files: list[tuple[str, dict[str, Master]]] = []
    if any(biases.values()):
        files.append(("bias", {c: m for c, m in biases.items() if m is not None}))
    if any(darks.values()):
        files.append(("dark", {c: m for c, m in darks.items() if m is not None}))
    elif dark_groups:
        for t in sorted({t for _, t in dark_groups}):
            files.append((f"dark_{t:g}s", {c: m for (c, tt), m in dark_groups.items() if tt == t}))
    for filt, ms in flats.items():
        files.append((f"flat_{safe_filter_name(filt)}", ms))
    outs = []
    for label, ms in files:
        final = mdir / f"{label}.fits"
        ident = _digest({c: (_key_of(m), m.kind) for c, m in ms.items()})
        if _has_key(final, ident):
            outs.append((label, None, final))
            continue
        parts_paths, parts = [], []
        for number, (chip, m) in enumerate(ms.items(), start=1):
            part = mdir / f"{TMP_PREFIX}{label}.{number}.part"  # never a header value in a path
            meta = {"key": _key_of(m), "inputs": m.meta.get("inputs", []), "filter": m.filter,
                    "params": m.meta.get("params", {})}
            parts.append(dask.delayed(master_part_task, pure=True)(
                str(part), m.data, m.variance, m.count, chip=chip, kind=m.kind, ncombine=m.ncombine,
                meta=meta, thumb_factor=factor, dask_key_name=f"write-master-{label}-{chip}-{ident[:8]}"))
            parts_paths.append(str(part))
        prim = fits.Header()
        prim["CCDASKV"] = (__version__, "ccdask version")
        prim["CCDKEY"] = (ident, "identity of these masters")
        prim["MASTER"] = (label, "kind of master")
        task = dask.delayed(_finish, pure=True)(str(final), prim, parts_paths, parts,
                                                dask_key_name=f"assemble-master-{label}-{ident[:8]}")
        outs.append((label, task, final))
    return outs


def _warn_mostly_flagged(finals, sci_results, limit: float = 0.5) -> None:
    """Warn about reduced chips with most pixels flagged: almost always an unusable master
    (a blank or negative flat), which must not pass silently in an unattended run."""
    bad = [f"{final.name} {c['chip']} ({c['stats']['rejected_fraction']:.0%})"
           for (_, final), chips in zip(finals, sci_results, strict=True) for c in chips
           if c.get("stats", {}).get("rejected_fraction", 0.0) > limit]
    if bad:
        warnings.warn(f"{len(bad)} reduced chip(s) have more than {limit:.0%} of their pixels flagged "
                      "(DQ != 0): " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
                      + "; check the masters (a blank or negative flat?) and the DQ planes",
                      CcdaskWarning, stacklevel=3)


def _sweep_tmp(out: Path, max_age: float = 0.0) -> None:
    """Remove part and temporary files left by a killed run (only ours: ``.tmp-*`` names and
    the ``.scratch`` folder of calibrated frames)."""
    shutil.rmtree(out / ".scratch", ignore_errors=True)
    for sub in ("reduced", "masters", "qa"):
        d = out / sub
        if d.is_dir():
            for p in d.glob(f"{TMP_PREFIX}*"):
                if p.is_file() and time.time() - p.stat().st_mtime >= max_age:
                    p.unlink(missing_ok=True)
