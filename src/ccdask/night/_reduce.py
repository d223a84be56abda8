"""The night: catalogue → plan → masters (cached) → science → outputs, manifest and QA.

``reduce`` builds one graph per stage (bias, dark, flat, science) and computes each with a
single call, so the dashboard's task stream reads as the night's stages, each with named tasks
(``combine-bias-CCD1``, ``reduce-science_g_000-CCD2``...). Masters come from the zarr cache when
their inputs and parameters are unchanged; reduced frames already written with the same inputs,
masters and parameters are skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import MasterCache
from ..catalog import Catalog
from ..config import load_config
from ..errors import CcdaskWarning
from ..io._write import TMP_PREFIX
from ._crosstalk import night_crosstalk
from ._fringe_stage import check_fringe_plan, fringe_masters
from ._manifest import write_manifest
from ._plan import Exposure, Plan, make_plan
from ._products import master_outputs
from ._qa import bin_factor, write_qa
from ._read_noise import measure_read_noise
from ._science import science_graph
from ._stages import NightMasters, Runner, StageContext, bias_masters, dark_masters, flat_masters

__all__ = ["ReduceResult", "reduce"]


@dataclass
class ReduceResult:
    """What a reduction did: the plan, outputs, masters, per-stage timings and task counts, and
    the read noise measured where the headers had none (chip → amplifier → e-)."""

    out: Path
    plan: Plan
    outputs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    masters: dict[str, str] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    manifest_path: Path | None = None
    read_noise: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: whether this run started (or connected to) a cluster; ``None`` when the caller passed
    #: its own client or scheduler
    cluster_started: bool | None = None

    @property
    def raw_pixels(self) -> int:
        """Raw pixels read by the stages that ran (cached masters and skipped frames excluded)."""
        return sum(s.get("raw_pixels", 0) for s in self.stages.values())


def reduce(
    raw: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    config: Any = None,
    client: Any = None,
    cache: str | os.PathLike[str] | None = None,
    progress: bool | Callable[..., None] = False,
    log: Callable[[str], None] | None = None,
    on_stage: Callable[[str, dict[str, Any], float], None] | None = None,
) -> ReduceResult:
    """Reduce a night of raw frames into ``out`` (see DESIGN's output layout).

    ``raw``: files and/or folders. ``config``: a ReduceConfig, dict or TOML path (defaults when
    None). ``client``: a ``distributed.Client``, a :class:`~ccdask.cluster.LazyClient`,
    ``"threads"``, ``"sync"``, a dask scheduler function, or None for an embedded LocalCluster
    started when the first stage has something to compute (a night with nothing left to do
    starts none). ``cache``: the zarr master cache (default ``OUT/cache.zarr``). ``progress``
    shows a bar per stage (``True``: dask's; or a callable, see :class:`Runner`); ``log``
    receives one line per event, ``on_stage`` the record of every stage computed. Raises :class:`~ccdask.errors.PlanError` before any computation when the frames
    cannot satisfy the plan.
    """
    from ..cluster import LazyClient

    if client is None:
        with LazyClient() as lazy:
            return reduce(
                raw, out, config=config, client=lazy, cache=cache, progress=progress, log=log, on_stage=on_stage
            )
    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    cfg, out = load_config(config), Path(out)
    catalog = Catalog.scan(raw, profile=cfg.profile)
    plan = make_plan(catalog, cfg)
    fringe_notes = check_fringe_plan(plan, cfg)  # before any pixel is read
    out.mkdir(parents=True, exist_ok=True)
    _sweep_tmp(out)
    runner = Runner(client, progress, log, on_stage)
    result = ReduceResult(out=out, plan=plan)
    log(f"planned {len(plan.chips)} chip(s), {len(plan.exposures)} science exposure(s)")
    for note in (*plan.notes, *fringe_notes):
        log(f"  note: {note}")
    store = MasterCache(cache if cache is not None else out / "cache.zarr")
    plan, result.read_noise = measure_read_noise(plan, cfg, runner, store)
    runner.stages["catalog"] = {"seconds": time.perf_counter() - t_start}

    crosstalk = night_crosstalk(catalog.entries, cfg)
    if crosstalk is not None:
        n_inter = sum(t.inter for t in crosstalk.table.terms)
        log(f"  crosstalk: {crosstalk.table.source} ({len(crosstalk.table.terms)} terms, {n_inter} between chips)")
    ctx = StageContext(cfg, store, runner, out / ".scratch", crosstalk=crosstalk)
    masters = NightMasters(dark_mode=cfg.dark.mode, bias=bias_masters(plan, ctx) if plan.steps["bias"] else {})
    if plan.steps["dark"]:
        masters = dark_masters(plan, ctx, masters.bias)
    if plan.steps["flat"]:
        masters = flat_masters(plan, ctx, masters)
    if cfg.fringe.filters:
        masters = fringe_masters(plan, ctx, masters)

    factor = max(bin_factor(cp.raw_shape, max(64, cfg.output.qa_max_pixels // 2)) for cp in plan.chips.values())
    history = {chip: tuple(rn["history"]) for chip, rn in result.read_noise.items()}
    science = science_graph(
        plan, cfg, out / "reduced", masters, thumb_factor=factor, history=history, crosstalk=crosstalk
    )
    files = master_outputs(out, masters, cfg, factor)
    todo = [f for f in files if f.task is not None]
    runner.record("science")["raw_pixels"] = science.raw_pixels
    results = runner.compute("science", [*science.tasks, *[f.task for f in todo]])
    sci_results, master_results = results[: len(science.tasks)], results[len(science.tasks) :]
    result.outputs = [str(f) for _, f in science.finals]
    result.skipped = science.skipped
    result.masters = {f.label: str(f.path) for f in files}
    _warn_mostly_flagged(science.finals, sci_results)

    t_qa = time.perf_counter()
    if cfg.output.qa:
        detsecs = {c: cp.science[0].layout.detsec if cp.science else None for c, cp in plan.chips.items()}
        write_qa(
            out / "qa",
            science.finals,
            sci_results,
            [(f.label, str(f.path), r) for f, r in zip(todo, master_results, strict=True)],
            detsecs,
            factor,
        )
    result.stages = runner.stages
    if isinstance(client, LazyClient):
        result.cluster_started = client.started
    result.stages["qa"] = {"seconds": time.perf_counter() - t_qa}
    result.manifest_path = write_manifest(out, catalog, plan, cfg, result, masters, total=time.perf_counter() - t_start)
    return result


def _warn_mostly_flagged(
    finals: Sequence[tuple[Exposure, Path]], sci_results: Sequence[list[dict[str, Any]]], limit: float = 0.5
) -> None:
    """Warn about reduced chips with most pixels flagged: almost always an unusable master
    (a blank or negative flat), which must not pass silently in an unattended run."""
    bad = [
        f"{final.name} {c['chip']} ({c['stats']['rejected_fraction']:.0%})"
        for (_, final), chips in zip(finals, sci_results, strict=True)
        for c in chips
        if c.get("stats", {}).get("rejected_fraction", 0.0) > limit
    ]
    if bad:
        warnings.warn(
            f"{len(bad)} reduced chip(s) have more than {limit:.0%} of their pixels flagged "
            "(DQ != 0): "
            + "; ".join(bad[:5])
            + (" ..." if len(bad) > 5 else "")
            + "; check the masters (a blank or negative flat?) and the DQ planes",
            CcdaskWarning,
            stacklevel=3,
        )


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
