"""The science stage: one task per chip-frame (read → calibrate → write a part file) and one
per exposure (assemble the parts after the raw primary header, then rename into place)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astropy.io import fits

from .._version import __version__
from ..calibrate import process_in_memory
from ..config import ReduceConfig
from ..io._write import TMP_PREFIX, concat_parts
from ..utils import canonical_hash
from ._fringe_stage import correct_chip, fringe_use, pack_with_fringe
from ._plan import Exposure, Plan
from ._products import chip_header, has_key, output_name, reduced_part_task
from ._stages import NightMasters, key_of, pack_masters, science_chip_masters

__all__ = ["ScienceGraph", "science_graph"]


@dataclass
class ScienceGraph:
    """The science stage, built but not computed: the per-exposure tasks, their outputs, the
    exposures skipped (already reduced with the same CCDKEY) and the raw pixels it reads."""

    tasks: list[Any] = field(default_factory=list)
    finals: list[tuple[Exposure, Path]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    raw_pixels: int = 0


def science_graph(
    plan: Plan,
    cfg: ReduceConfig,
    reduced_dir: Path,
    masters: NightMasters,
    *,
    thumb_factor: int,
    history: Mapping[str, tuple[str, ...]] | None = None,
    crosstalk: Any = None,
) -> ScienceGraph:
    """One task per chip-frame and one per exposure; exposures whose output already carries the
    same ``CCDKEY`` are skipped. Nothing is read: readers come from the catalogue's scanned
    headers and the primary header is read by the assembling task. ``history`` adds lines per
    chip to the provenance (e.g. how its read noise was measured). ``crosstalk``: the night's
    NightCrosstalk (None: no correction); its coefficients join the key."""
    graph = ScienceGraph()
    chip_numbers = {c: i + 1 for i, c in enumerate(plan.chips)}
    settings = cfg.to_dict()
    if not cfg.fringe.filters:  # off: reduced frames keep the CCDKEY they had before fringes existed
        settings.pop("fringe")
    cfg_digest = canonical_hash(settings)
    packed: dict[tuple[Any, ...], Any] = {}
    for exp in plan.exposures:
        used = {}
        chip_tasks = []
        for entry in exp.chips:
            chip = entry.chip
            bias, dark, flat = masters.for_science(entry, exp.filter, plan.steps)
            fringe = masters.fringe_for(chip, exp.filter)
            mkey = (chip, key_of(bias), key_of(dark), key_of(flat), key_of(fringe))
            if mkey not in packed:
                cm = science_chip_masters(bias, dark, flat, cfg, entry.layout.trimmed_shape)
                packed[mkey] = pack_masters(cm, chip) if fringe is None else pack_with_fringe(cm, fringe, chip)
            used[chip] = {"bias": key_of(bias), "dark": key_of(dark), "flat": key_of(flat)}
            if fringe is not None:
                used[chip]["fringe"] = key_of(fringe)
            chip_tasks.append((entry, packed[mkey], None if fringe is None else fringe_use(fringe, entry, cfg)))
        identity = {"inputs": [e.identity for e in exp.chips], "masters": used, "config": cfg_digest}
        if crosstalk is not None:  # only when used, so the keys of other nights stay as they were
            identity["crosstalk"] = crosstalk.identity()
        key = canonical_hash({**identity, "version": __version__})
        final = reduced_dir / output_name(exp.name)
        if cfg.output.skip_existing and has_key(final, key):
            graph.skipped.append(str(final))
            continue
        chip_specs, part_paths = [], []
        for entry, packed_masters, fringe_info in chip_tasks:
            # named by chip number: chip names come from headers and may hold '/' or '..'
            part = reduced_dir / f"{TMP_PREFIX}{exp.name}.{chip_numbers[entry.chip]}.part"
            # static arguments go into a partial: dask does not walk it looking for collections
            task = functools.partial(
                _science_chip_task,
                str(part),
                entry.source,
                cfg=cfg,
                layout=entry.layout,
                exptime=entry.exptime,
                name=exp.name,
                header=entry.header,
                extver=chip_numbers[entry.chip],
                thumb_factor=thumb_factor,
                crosstalk=None if crosstalk is None else crosstalk.for_entry(entry),
                fringe=fringe_info,
            )
            chip_specs.append((f"reduce-{exp.name}-{entry.chip}-{key[:8]}", task, packed_masters))
            part_paths.append(str(part))
            graph.raw_pixels += entry.shape[0] * entry.shape[1]
        finish = functools.partial(
            _finish_exposure, str(final), exp.path, provenance_cards(exp, used, cfg, key, history or {}), part_paths
        )
        graph.tasks.append(exposure_tasks(f"assemble-{exp.name}-{key[:8]}", finish, chip_specs))
        graph.finals.append((exp, final))
    return graph


def exposure_tasks(key: str, finish: Callable[[list[Any]], Any], chips: Sequence[tuple[str, Any, Any]]) -> Any:
    """One exposure as one graph layer: a task per chip ``(key, function, packed masters)``
    calling ``function(masters)``, and ``key`` calling ``finish`` with their results in order.

    Written as task specs rather than ``dask.delayed`` calls: a delayed call walks and culls
    the whole graph of its arguments (here the masters' arrays) once per exposure, which made
    a survey night's science graph cost seconds per hundred exposures.
    """
    from dask._task_spec import List, Task, TaskRef
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    layer: dict[str, Any] = {}
    needs: dict[Any, Any] = {}
    for chip_key, function, packed in chips:
        layer[chip_key] = Task(chip_key, function, TaskRef(packed.key))
        needs[packed.key] = packed
    layer[key] = Task(key, finish, List(*(TaskRef(k) for k, _, _ in chips)))
    return Delayed(key, HighLevelGraph.from_collections(key, layer, dependencies=list(needs.values())))


def provenance_cards(
    exp: Exposure,
    used: Mapping[str, Mapping[str, str | None]],
    cfg: ReduceConfig,
    key: str,
    history: Mapping[str, tuple[str, ...]],
) -> list[tuple[str, Any, str]]:
    """The cards ccdask adds to a reduced file's primary header, as ``(keyword, value,
    comment)``: plain data, made into a header by the task that writes the file."""
    cards: list[tuple[str, Any, str]] = [
        ("CCDASKV", __version__, "ccdask version"),
        ("CCDKEY", key, "inputs+masters+parameters id"),
        ("RAWFILE", Path(exp.path).name, "raw file reduced"),
    ]
    for chip, keys in used.items():
        for kind, k in keys.items():
            if k:
                cards.append(("HISTORY", f"ccdask: {kind} master for {chip}: cache key {k}", ""))
        for line in history.get(chip, ()):
            cards.append(("HISTORY", f"ccdask: {line}", ""))
    steps = [
        "overscan" if cfg.overscan.enabled else None,
        "trim",
        "gain",
        "bias" if cfg.bias.enabled else None,
        f"dark({cfg.dark.mode})" if cfg.dark.mode != "none" else None,
        "flat" if cfg.flat.enabled else None,
        f"cosmics({cfg.cosmics.method})",
        "fringe" if exp.filter in cfg.fringe.filters else None,
    ]
    cards.append(("HISTORY", "ccdask steps: " + " > ".join(s for s in steps if s), ""))
    return cards


def provenance(
    exp: Exposure,
    used: Mapping[str, Mapping[str, str | None]],
    cfg: ReduceConfig,
    key: str,
    history: Mapping[str, tuple[str, ...]],
) -> fits.Header:
    """The cards ccdask adds to a reduced file's primary header, as a header."""
    return _header(provenance_cards(exp, used, cfg, key, history))


def _header(cards: Sequence[tuple[str, Any, str]]) -> fits.Header:
    h = fits.Header()
    for keyword, value, comment in cards:
        if keyword == "HISTORY":
            h.add_history(value)
        else:
            h[keyword] = (value, comment)
    return h


def primary_header(path: str) -> fits.Header:
    with fits.open(path, mode="readonly", lazy_load_hdus=True, memmap=False) as h:
        return h[0].header.copy()


def _science_chip_task(
    part: str,
    source: Any,
    masters: dict[str, Any],
    *,
    cfg: ReduceConfig,
    layout: Any,
    exptime: float | None,
    name: str,
    header: fits.Header,
    extver: int,
    thumb_factor: int,
    crosstalk: Any = None,
    fringe: Any = None,
) -> dict[str, Any]:
    """Read, calibrate and write one chip of one exposure (one task per chip-frame).

    ``header`` is the chip's merged header; the chip's own cards (not the primary's, not the
    raw layout's) go into its SCI extension. ``fringe`` (a :class:`~ccdask.night._fringe_stage.FringeUse`)
    subtracts the scaled fringe frame packed with the masters after the chain.
    """
    raw = source.read(slice(None), slice(None))
    header = chip_header(header, primary_header(source.path), layout)
    if layout.detsec is not None:
        header["DETSEC"] = str(layout.detsec)
    qa: dict[str, Any] = {}
    xt = None if crosstalk is None else crosstalk.load()  # the other chips' source amplifiers
    sci, var, dqa, history = process_in_memory(
        raw, masters, cfg, layout=layout, exptime=exptime, name=name, role="science", qa=qa, crosstalk=xt
    )
    if fringe is not None:
        sci, var, lines = correct_chip(sci, var, dqa, masters["fringe"], fringe, header)
        history = (*history, *lines)
    return reduced_part_task(
        part,
        sci,
        var,
        dqa,
        header=header,
        chip=layout.name,
        extver=extver,
        history=history,
        thumb_factor=thumb_factor,
        extra_stats=qa,
    )


def _finish_exposure(
    final: str,
    raw_path: str,
    provenance: Sequence[tuple[str, Any, str]],
    part_paths: list[str],
    chip_results: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Assemble an exposure: the raw primary header plus ccdask's cards, then the chips' parts."""
    primary = primary_header(raw_path)
    for k in (
        "SIMPLE",
        "BITPIX",
        "NAXIS",
        "NAXIS1",
        "NAXIS2",
        "EXTEND",
        "BZERO",
        "BSCALE",
        "BLANK",
        "CHECKSUM",
        "DATASUM",
    ):
        primary.remove(k, ignore_missing=True, remove_all=True)
    primary.extend(_header(provenance).cards, unique=False)
    concat_parts(final, primary, part_paths)
    return chip_results
