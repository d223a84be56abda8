"""The night's master stages, typed: what each master is made of, and the masters of a night.

A stage turns the plan into :class:`MasterSpec` rows (one per master: its kind, chip, inputs,
parameters and cache key), takes the cached masters from the store and builds the rest (each
chip-frame calibrated once to the scratch zarr, then stacked tile by tile). The results travel
as one :class:`NightMasters`, the only thing later stages read.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np

from ..cache import MasterCache, master_key
from ..cache._versions import STEP_VERSIONS
from ..calibrate import ChipMasters
from ..calibrate._masks import bad_pixel_mask
from ..catalog import Entry
from ..config import ReduceConfig
from ..errors import CcdaskWarning, PlanError
from ..frame import Master
from ..utils import canonical_hash
from ._masters import (
    calibrate_frames,
    illuminate_flats,
    illumination_samples,
    normalise_flats,
    pooled_median,
    stack_master,
)
from ._plan import Plan, nearest_dark_exptime

__all__ = ["MasterSpec", "NightMasters", "Runner", "StageContext", "build_masters", "key_of", "stage_graph"]


def key_of(m: Master | None) -> str | None:
    """The cache key of a master (None for no master)."""
    return None if m is None else m.meta.get("cache_key")


MasterKind = Literal["bias", "dark", "flat"]


@dataclass(frozen=True)
class MasterSpec:
    """One master to get from the cache or build: ``name`` is unique within its stage."""

    name: str
    kind: MasterKind
    chip: str
    entries: tuple[Entry, ...]
    params: Mapping[str, Any]
    key: str
    calibration: Any = None  # the chip's earlier masters, packed as one graph node


@dataclass(frozen=True)
class NightMasters:
    """Every master of a night: bias and dark per chip, darks per (chip, exptime) in
    ``nearest`` mode, flats and fringe frames per filter and chip."""

    dark_mode: str = "scale"
    bias: Mapping[str, Master] = field(default_factory=dict)
    dark: Mapping[str, Master] = field(default_factory=dict)
    dark_groups: Mapping[tuple[str, float | None], Master] = field(default_factory=dict)
    flats: Mapping[str | None, Mapping[str, Master]] = field(default_factory=dict)
    fringes: Mapping[str | None, Mapping[str, Master]] = field(default_factory=dict)  # night._fringe_stage

    def dark_for(self, chip: str, exptime: float | None) -> Master | None:
        """The dark that calibrates a frame of ``exptime`` on ``chip``: the scaled one, or in
        ``nearest`` mode the one of the nearest exposure time."""
        if self.dark_mode == "scale" or not self.dark_groups:
            return self.dark.get(chip)
        times = sorted(t for (c, t) in self.dark_groups if c == chip and t is not None)
        if not times:
            return None
        return self.dark_groups[(chip, nearest_dark_exptime(float(exptime or 0.0), times))]

    def flat_for(self, chip: str, filt: str | None) -> Master | None:
        return self.flats.get(filt, {}).get(chip)

    def fringe_for(self, chip: str, filt: str | None) -> Master | None:
        return self.fringes.get(filt, {}).get(chip)

    def for_science(
        self, entry: Entry, filt: str | None, steps: Mapping[str, bool]
    ) -> tuple[Master | None, Master | None, Master | None]:
        """The bias, dark and flat that calibrate one science chip-frame (``steps``: the plan's)."""
        chip = entry.chip
        dark = self.dark_for(chip, entry.exptime) if steps["dark"] else None
        flat = self.flat_for(chip, filt) if steps["flat"] else None
        return self.bias.get(chip), dark, flat


def science_chip_masters(
    bias: Master | None, dark: Master | None, flat: Master | None, cfg: ReduceConfig, shape: tuple[int, int]
) -> ChipMasters:
    """A science chip's masters with its bad-pixel mask (from the dark's rate and the flat)."""
    bad = bad_pixel_mask(
        dark_rate=None if dark is None else dark.data,
        flat=None if flat is None else flat.data,
        config=cfg.masks,
        shape=shape,
    )
    return ChipMasters(bias=bias, dark=dark, flat=flat, bad=bad)


class Runner:
    """Computes one stage's collections with a single call on the chosen scheduler and keeps
    per-stage records (seconds, tasks, task groups, masters cached and built, raw pixels).

    ``client`` may be a :class:`~ccdask.cluster.LazyClient`: its cluster is started by the
    first stage that has something to compute, never by a night with nothing left to do.
    ``progress`` is ``False``, ``True`` (dask's own bar) or a callable
    ``progress(stage, futures, client, record)`` that returns once the futures are done (the
    command line's bar); ``on_stage(stage, record, seconds)`` hears of every stage computed.
    """

    def __init__(
        self,
        client: Any,
        progress: bool | Callable[..., None],
        log: Callable[[str], None],
        on_stage: Callable[[str, dict[str, Any], float], None] | None = None,
    ):
        self.client = client
        self.progress = progress
        self.log = log
        self.on_stage = on_stage
        self.stages: dict[str, dict[str, Any]] = {}

    def record(self, stage: str) -> dict[str, Any]:
        return self.stages.setdefault(stage, {"seconds": 0.0, "tasks": 0, "task_groups": {}})

    def _client(self) -> Any:
        from ..cluster import LazyClient

        return self.client.get() if isinstance(self.client, LazyClient) else self.client

    def compute(self, stage: str, collections: Sequence[Any]) -> list[Any]:
        record = self.record(stage)
        if not collections:
            return []
        from dask.utils import key_split

        graph = stage_graph(collections)
        record["tasks"] += len(graph)
        for k, n in Counter(key_split(k) for k in graph).items():
            record["task_groups"][k] = record["task_groups"].get(k, 0) + n
        client = self._client()
        t0 = time.perf_counter()
        if client is None or isinstance(client, str) or not hasattr(client, "gather"):
            results = list(dask.compute(*collections, scheduler=client or "threads"))
        else:
            futures = client.compute(list(collections))
            if callable(self.progress):
                self.progress(stage, futures, client, record)
            elif self.progress:
                from distributed import progress

                progress(futures)
            results = client.gather(futures)
        seconds = time.perf_counter() - t0
        record["seconds"] += seconds
        self.log(f"  {stage}: {len(graph)} tasks in {seconds:.1f} s")
        if self.on_stage is not None:
            self.on_stage(stage, record, seconds)
        return results


def stage_graph(collections: Sequence[Any]) -> Mapping[Any, Any]:
    """The task graph of one stage's collections, optimised as the scheduler will have it.

    One low-level optimisation per kind of collection (dask's own grouping); materialised
    unoptimised, every array would cull and fuse the whole shared graph on its own, which took
    minutes for a survey night's flats (62 chips sharing the focal-plane normalisation).
    """
    graph: Mapping[Any, Any] = dask.base.collections_to_expr(list(collections)).optimize().__dask_graph__()
    return graph


@dataclass(frozen=True)
class StageContext:
    """What every master stage shares: the configuration, the store, the runner, the scratch."""

    cfg: ReduceConfig
    store: MasterCache
    runner: Runner
    scratch: Path
    crosstalk: Any = None  # the night's NightCrosstalk (night/_crosstalk.py), None: no correction

    @property
    def common(self) -> dict[str, Any]:
        """The parameters every master's key carries."""
        out: dict[str, Any] = {
            "overscan": self.cfg.overscan.to_dict(),
            "read_noise": self.cfg.read_noise,
            "masks": {"saturation_grow": self.cfg.masks.saturation_grow},
        }
        m = self.cfg.masks
        if m.bleed:  # bleed trails blank pixels of darks and flats; only when on, so other keys stay as they were
            out["masks"]["bleed"] = {"level": m.bleed_level, "length": m.bleed_length, "grow": m.bleed_grow}
        if self.crosstalk is not None:  # the coefficients, from the file or the profile; only when used
            out["crosstalk"] = self.crosstalk.identity()
        elif self.cfg.crosstalk.file is not None:  # only when used, so the keys of other nights stay as they were
            from ..calibrate._crosstalk import load_crosstalk

            out["crosstalk"] = load_crosstalk(self.cfg.crosstalk.file).to_dict()
        if self.cfg.linearity.file is not None:
            from ..calibrate._linearity import load_linearity

            out["linearity"] = load_linearity(self.cfg.linearity.file).to_dict()
        return out


def pack_masters(cm: ChipMasters, name: str) -> Any:
    """The masters of one chip as a single graph node, computed once and shared by many tasks."""
    keys = [key_of(cm.bias), key_of(cm.dark), key_of(cm.flat), None if cm.bad is None else cm.bad.name]
    return dask.delayed(master_inputs(cm), pure=True, name=f"masters-{name}-{canonical_hash(keys)[:8]}")


def master_inputs(cm: ChipMasters) -> dict[str, Any]:
    """The masters of one chip as graph inputs of a task (computed once per chip)."""
    out: dict[str, Any] = {}
    for kind in ("bias", "dark", "flat"):
        m = getattr(cm, kind)
        if m is not None:
            out[kind] = (m.data, m.variance)
            out[f"{kind}_label"] = m.meta.get("label", kind)
    if cm.bad is not None:
        out["bad"] = cm.bad
    return out


def _spec(
    ctx: StageContext,
    kind: MasterKind,
    name: str,
    chip: str,
    entries: tuple[Entry, ...],
    params: dict[str, Any],
    calibration: Any = None,
) -> MasterSpec:
    key = master_key(kind, [e.identity for e in entries], params, chip=chip)
    return MasterSpec(name=name, kind=kind, chip=chip, entries=entries, params=params, key=key, calibration=calibration)


def bias_masters(plan: Plan, ctx: StageContext) -> dict[str, Master]:
    """Bias masters per chip."""
    specs = [
        _spec(
            ctx,
            "bias",
            chip,
            chip,
            cp.biases,
            {**ctx.common, "combine": ctx.cfg.bias.combine.to_dict(), "layout": cp.biases[0].layout.to_dict()},
        )
        for chip, cp in plan.chips.items()
        if cp.biases
    ]
    return build_masters("bias", specs, ctx)


def dark_masters(plan: Plan, ctx: StageContext, bias: Mapping[str, Master]) -> NightMasters:
    """Dark-rate masters per chip (``scale``) or per chip and exposure time (``nearest``)."""
    mode = ctx.cfg.dark.mode
    specs, times = [], {}
    for chip, cp in plan.chips.items():
        groups: dict[float | None, tuple[Entry, ...]] = (
            {None: cp.darks}
            if mode == "scale"
            else {t: tuple(e for e in cp.darks if e.exptime == t) for t in cp.dark_exptimes}
        )
        for t, ents in groups.items():
            name = chip if t is None else f"{chip}@{t:g}s"
            params = {
                **ctx.common,
                "combine": ctx.cfg.dark.combine.to_dict(),
                "mode": mode,
                "bias": key_of(bias.get(chip)),
            }
            specs.append(
                _spec(ctx, "dark", name, chip, ents, params, pack_masters(ChipMasters(bias=bias.get(chip)), name))
            )
            times[name] = (chip, t)
    built = build_masters("dark", specs, ctx, rate=True)
    groups_built = {times[name]: m for name, m in built.items()}
    return NightMasters(
        dark_mode=mode,
        bias=bias,
        dark={c: m for (c, t), m in groups_built.items() if t is None},
        dark_groups=groups_built,
    )


def flat_masters(plan: Plan, ctx: StageContext, masters: NightMasters) -> NightMasters:
    """Normalised flats per filter and chip (optionally shaped by twilight/dome illumination)."""
    cfg = ctx.cfg
    per_filter: dict[str | None, dict[str, tuple[Entry, ...]]] = {}
    for chip, cp in plan.chips.items():
        for filt, ents in cp.flats.items():
            per_filter.setdefault(filt, {})[chip] = ents
    flats: dict[str | None, Mapping[str, Master]] = {}
    for filt, by_chip in per_filter.items():
        stage = f"flat-{filt}" if filt else "flat"
        dome_by, twilight_by = split_twilight(by_chip, cfg, filt, ctx.runner.log)
        if not twilight_by:
            flats[filt] = normalise_flats(_flat_stage(ctx, masters, stage, filt, by_chip, {}), cfg)
            continue
        # the dome master's key also covers the twilight inputs and the model's options, so
        # the final (illuminated) flat, which carries that key, changes when either does
        twi_ids = sorted(
            (e.identity for ents in twilight_by.values() for e in ents), key=lambda d: (d["path"], d["hdu"])
        )
        illum = {
            "order": cfg.flat.illumination_order,
            "sigma": cfg.flat.illumination_sigma,
            "maxiters": cfg.flat.illumination_maxiters,
            "twilight_inputs": canonical_hash(twi_ids),
            "version": STEP_VERSIONS["illumination"],
        }
        dome = _flat_stage(ctx, masters, stage, filt, dome_by, {"illumination": illum})
        twilight = _flat_stage(ctx, masters, f"{stage}-twilight", filt, twilight_by, {"set": "twilight"})
        lazy = illumination_samples(dome, twilight)
        values = ctx.runner.compute(f"{stage}-illumination", list(lazy.values()))
        detsecs = {c: by_chip[c][0].layout.detsec for c in dome}
        illuminated, models = illuminate_flats(dome, twilight, dict(zip(lazy, values, strict=True)), detsecs, cfg)
        for mdl in models:
            ctx.runner.log(f"  {stage}: illumination order {mdl.order} from {mdl.nused}/{mdl.nsample} samples")
        flats[filt] = normalise_flats(illuminated, cfg)
    return NightMasters(
        dark_mode=masters.dark_mode, bias=masters.bias, dark=masters.dark, dark_groups=masters.dark_groups, flats=flats
    )


def _flat_stage(
    ctx: StageContext,
    masters: NightMasters,
    stage: str,
    filt: str | None,
    by_chip: Mapping[str, tuple[Entry, ...]],
    extra: dict[str, Any],
) -> dict[str, Master]:
    pooled = sorted((e.identity for ents in by_chip.values() for e in ents), key=lambda d: (d["path"], d["hdu"]))
    specs = []
    for chip, ents in by_chip.items():
        dark = masters.dark_for(chip, ents[0].exptime)
        params = {
            **ctx.common,
            "combine": ctx.cfg.flat.combine.to_dict(),
            "region": ctx.cfg.flat.region,
            "filter": filt,
            "bias": key_of(masters.bias.get(chip)),
            "dark": key_of(dark),
            "pooled_inputs": canonical_hash(pooled),
            **extra,
        }
        specs.append(
            _spec(
                ctx,
                "flat",
                chip,
                chip,
                ents,
                params,
                pack_masters(ChipMasters(bias=masters.bias.get(chip), dark=dark), f"{chip}-flat"),
            )
        )
    return build_masters(stage, specs, ctx, filter=filt, focal_plane=True)


def split_twilight(
    by_chip: Mapping[str, tuple[Entry, ...]], cfg: ReduceConfig, filt: str | None, log: Callable[[str], None]
) -> tuple[Mapping[str, tuple[Entry, ...]], Mapping[str, tuple[Entry, ...]]]:
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
        log(
            f"  note: filter {filt!r}: not every chip has both dome and twilight flats; "
            "illumination correction skipped, all flats stacked together"
        )
        return by_chip, {}
    return dome, twi


def build_masters(
    stage: str,
    specs: Sequence[MasterSpec],
    ctx: StageContext,
    *,
    rate: bool = False,
    filter: str | None = None,
    focal_plane: bool = False,
) -> dict[str, Master]:
    """Masters from the cache; the missing ones are built (calibrate, then stack) and stored.

    With ``focal_plane`` (flats), each exposure is first divided by the median of all its chips
    pooled; then *every* chip of the filter is rebuilt when one is missing, since they share
    that normalisation.
    """
    cfg, runner = ctx.cfg, ctx.runner
    record = runner.record(stage)
    found = {s.name: m for s in specs if (m := ctx.store.get(s.key)) is not None}
    todo = [s for s in specs if s.name not in found]
    if focal_plane and todo:
        todo = list(specs)
    record["cached"] = len(specs) - len(todo)
    record["built"] = len(todo)
    record["raw_pixels"] = sum(e.shape[0] * e.shape[1] for s in todo for e in s.entries)
    if not todo:
        runner.log(f"  {stage}: {len(found)} master(s) from the cache")
        return {s.name: found[s.name] for s in specs}
    kind = todo[0].kind
    combine_cfg = getattr(cfg, kind).combine
    cal = calibrate_frames(
        kind,
        {s.name: s.entries for s in todo},
        cfg,
        ctx.scratch,
        masters={s.name: s.calibration for s in todo if s.calibration is not None},
        combine_cfg=combine_cfg,
        rate=rate,
        sample_region=cfg.flat.region if focal_plane else None,
        crosstalk=ctx.crosstalk,
    )
    try:
        infos = runner.compute(stage, cal.tasks)
        divisors: dict[str, list[float]] = {}
        if focal_plane:
            divisors = _focal_plane_divisors(cal, infos, filter)
        pending = {}
        for s in todo:
            lazy = stack_master(
                kind, s.chip, cal.arrays[s.name], combine_cfg, divisors=divisors.get(s.name), filter=filter
            )
            meta = {**lazy.meta, "key": s.key, "params": dict(s.params)}
            pending[s.name] = ctx.store.store_graph(
                s.key,
                Master(
                    kind=lazy.kind,
                    chip=lazy.chip,
                    data=lazy.data,
                    variance=lazy.variance,
                    count=lazy.count,
                    ncombine=lazy.ncombine,
                    filter=lazy.filter,
                    exptime=None,
                    meta=meta,
                ),
            )
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
    return {s.name: found[s.name] for s in specs if s.name in found}  # in the plan's order


def _focal_plane_divisors(cal: Any, infos: list[Any], filter: str | None) -> dict[str, list[float]]:
    """Per flat exposure, the median of its chips' samples pooled; exposures without light are
    left out with a warning (junk must not stop a night), unless all are."""
    samples: dict[str, list[np.ndarray]] = {}
    flat_rows = [(name, e) for name, rows in cal.arrays.items() for e, _s, _v in rows]
    for (_name, e), info in zip(flat_rows, infos, strict=True):
        samples.setdefault(e.path, []).append(info["sample"])
    norm = {path: pooled_median(ss) for path, ss in samples.items()}
    blank = [path for path, value in norm.items() if not (np.isfinite(value) and value > 0)]
    if blank:
        what = "flat" + ("" if filter is None else f" for filter {filter!r}")
        listed = "; ".join(f"{p} (median {norm[p]:.4g})" for p in blank[:5]) + (" ..." if len(blank) > 5 else "")
        if len(blank) == len(norm):
            raise PlanError(
                f"no usable {what}: every exposure has a median <= 0 over the focal "
                f"plane, it cannot be normalised (empty or negative flats?): {listed}"
            )
        warnings.warn(
            f"{len(blank)} of {len(norm)} exposure(s) left out of the {what}: median <= 0 "
            f"over the focal plane (empty or negative flat?): {listed}",
            CcdaskWarning,
            stacklevel=4,
        )
        cal.arrays = {name: [r for r in rows if r[0].path not in blank] for name, rows in cal.arrays.items()}
    return {name: [norm[e.path] for e, _s, _v in rows] for name, rows in cal.arrays.items()}
