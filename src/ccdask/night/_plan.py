"""From a catalogue to a validated plan: which frames make which master, which masters
calibrate which exposure, per chip.

Everything a reduction needs from the headers is checked here, before any pixel is read: a
missing master names its type, filter and chip; a missing keyword names the file and the
keywords tried; shapes that disagree name the files. Problems found while cataloguing are
carried along (skipped files), not fatal.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import Catalog, Entry, Problem
from ..errors import PlanError

__all__ = ["ChipPlan", "Exposure", "Plan", "make_plan", "safe_filter_name"]


@dataclass(frozen=True)
class ChipPlan:
    """The frames of one chip, by role. ``flats`` and ``darks`` are keyed by filter / exptime."""

    chip: str
    raw_shape: tuple[int, int]
    biases: tuple[Entry, ...]
    darks: tuple[Entry, ...]
    flats: dict[str | None, tuple[Entry, ...]]
    science: tuple[Entry, ...]

    @property
    def dark_exptimes(self) -> list[float]:
        return sorted({float(e.exptime) for e in self.darks if e.exptime is not None})


@dataclass(frozen=True)
class Exposure:
    """One science exposure (one raw file) and its chips, in file order."""

    path: str
    name: str
    filter: str | None
    exptime: float | None
    chips: tuple[Entry, ...]


@dataclass(frozen=True)
class Plan:
    """A validated reduction plan."""

    chips: dict[str, ChipPlan]
    exposures: tuple[Exposure, ...]
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    steps: dict[str, bool] = field(default_factory=dict)

    @property
    def filters(self) -> list[str | None]:
        return sorted({f for cp in self.chips.values() for f in cp.flats}, key=lambda f: f or "")

    def summary(self) -> str:
        lines = []
        for name, cp in self.chips.items():
            flats = ", ".join(f"{f or '-'}:{len(v)}" for f, v in cp.flats.items()) or "none"
            lines.append(
                f"{name}: {len(cp.biases)} bias, {len(cp.darks)} dark, flats {flats}, {len(cp.science)} science"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        lines.extend(f"skipped: {p}" for p in self.problems)
        return "\n".join(lines)


def _keywords(entry: Entry, field_name: str) -> str:
    from ..profiles import load_profile

    try:
        return "/".join(load_profile(entry.profile).keywords[field_name])
    except Exception:  # a user profile given as a path: the field name is clear enough
        return field_name.upper()


def make_plan(catalog: Catalog, config: Any) -> Plan:
    """Validate ``catalog`` against the steps ``config`` enables and return the plan.

    ``config`` is a :class:`ccdask.config.ReduceConfig` (only ``bias.enabled``,
    ``dark.mode``/``dark.tolerance``/``dark.required`` and ``flat.enabled`` are read here).

    Raises
    ------
    PlanError
        A master the science frames need has no inputs, a needed keyword is missing, or the
        frames of one chip disagree in shape.
    """
    use_bias = bool(config.bias.enabled)
    dark_mode = config.dark.mode
    use_flat = bool(config.flat.enabled)
    science_all = catalog.select(imagetyp="science")
    if len(catalog) == 0:
        raise PlanError(
            "no usable raw frames"
            + (f" ({len(catalog.problems)} skipped: {catalog.problems[0]})" if catalog.problems else "")
        )
    notes: list[str] = []
    any_darks = len(catalog.select(imagetyp="dark")) > 0
    use_dark = dark_mode != "none" and (any_darks or config.dark.required)
    if dark_mode != "none" and not any_darks:
        if config.dark.required:
            raise PlanError("no dark frames found, and dark.required is set")
        notes.append("no dark frames: dark current is not subtracted")
    other = catalog.select(imagetyp="other")
    if len(other):
        labels = Counter(e.label for e in other)
        notes.append("not reduced (type 'other'): " + ", ".join(f"{n} {k}" for k, n in labels.items()))
        untyped = list(dict.fromkeys(Path(e.path).name for e in other if e.label == "unknown"))
        if untyped:
            notes.append(
                f"no image type ({_keywords(other.entries[0], 'imagetyp')}) in "
                + ", ".join(untyped[:10])
                + (" ..." if len(untyped) > 10 else "")
                + ": not reduced"
            )

    notes.extend(_missing_chip_notes(catalog))

    chips: dict[str, ChipPlan] = {}
    for (chip,), rows in catalog.group_by("chip").items():
        shape = _common_shape(rows, chip)
        biases = tuple(rows.select(imagetyp="bias"))
        darks = tuple(rows.select(imagetyp="dark")) if use_dark else ()
        science = tuple(rows.select(imagetyp="science"))
        flats: dict[str | None, tuple[Entry, ...]] = {}
        if use_flat:
            for (filt,), group in rows.select(imagetyp="flat").group_by("filter").items():
                flats[filt] = tuple(group)
        need_masters = bool(science) or bool(flats) or bool(darks)
        if use_bias and need_masters and not biases:
            raise PlanError(
                f"no bias frames for chip {chip}: needed to calibrate "
                f"{_count(science, flats, darks)} (to go without, set bias.enabled = false: "
                "ccdask reduce --skip bias)"
            )
        if use_dark and not darks and (science or flats):
            raise PlanError(
                f"no dark frames for chip {chip} (darks exist for other chips; to go "
                'without, set dark.mode = "none": ccdask reduce --skip dark)'
            )
        for e in darks:
            _need_exptime(e, "dark", positive=True)
        if use_dark:
            for e in (*science, *(f for fl in flats.values() for f in fl)):
                _need_exptime(e, e.imagetyp, positive=False)
                # nearest mode holds science frames to the tolerance; flats (short, dark current
                # negligible) take the nearest dark's rate scaled to their exposure time
                if dark_mode == "nearest" and e.imagetyp == "science":
                    _nearest_dark(e, darks, config.dark.tolerance)
        if use_flat:
            for e in science:
                if e.filter not in flats:
                    have = ", ".join(repr(f) for f in flats) or "none"
                    raise PlanError(
                        f"no flat for filter {e.filter!r} on chip {chip}, needed by {e.path}[{e.hdu}] "
                        f"(flats exist for: {have}; filter keywords {_keywords(e, 'filter')}); "
                        "to reduce without flats, set flat.enabled = false (ccdask reduce --skip flat)"
                    )
        chips[chip] = ChipPlan(chip, shape, biases, darks, flats, science)

    _check_master_names([f for cp in chips.values() for f in cp.flats])
    exposures = []
    for (path,), group in science_all.group_by("path").items():
        ents = tuple(group)
        exposures.append(
            Exposure(path=path, name=ents[0].name, filter=ents[0].filter, exptime=ents[0].exptime, chips=ents)
        )
    _check_unique_names(exposures)
    if not exposures:
        notes.append("no science frames: only masters are built")
    steps = {"bias": use_bias, "dark": use_dark, "flat": use_flat}
    return Plan(chips, tuple(exposures), tuple(catalog.problems), tuple(notes), steps)


def _missing_chip_notes(catalog: Catalog, most: int = 10) -> list[str]:
    """A note per file that holds fewer chips than the rest of its night (at most ``most``).

    The night's chips are the set of chips that most files of one profile hold (on a tie, the
    larger set); a file holding a strict part of that set is named with the chips it lacks.
    Files whose chips are simply different (another instrument) are not compared.
    """
    files: dict[str, list[Entry]] = {}
    for e in catalog:
        files.setdefault(e.path, []).append(e)
    by_profile: dict[str, dict[str, frozenset[str]]] = {}
    for path, ents in files.items():
        by_profile.setdefault(ents[0].profile, {})[path] = frozenset(e.chip for e in ents)
    notes: list[str] = []
    for held in by_profile.values():
        counts = Counter(held.values())
        if len(counts) < 2:
            continue
        full = max(counts, key=lambda chips: (counts[chips], len(chips)))
        order = [c for c in dict.fromkeys(e.chip for e in catalog) if c in full]
        short = [(path, [c for c in order if c not in chips]) for path, chips in held.items() if chips < full]
        for path, missing in short[:most]:
            notes.append(
                f"{path} lacks chip(s) {', '.join(missing)}, which {counts[full]} other file(s) of "
                f"the night hold (chips {', '.join(order)}); the chip(s) it holds are used"
            )
        if len(short) > most:
            notes.append(f"... and {len(short) - most} more file(s) lacking chips")
    return notes


def _count(science: tuple[Entry, ...], flats: dict[str | None, tuple[Entry, ...]], darks: tuple[Entry, ...]) -> str:
    parts = []
    if science:
        parts.append(f"{len(science)} science")
    nflat = sum(len(v) for v in flats.values())
    if nflat:
        parts.append(f"{nflat} flat")
    if darks:
        parts.append(f"{len(darks)} dark")
    return ", ".join(parts) + " frame(s)"


def _common_shape(rows: Catalog, chip: str) -> tuple[int, int]:
    shapes = Counter(e.shape for e in rows)
    if len(shapes) == 1:
        only: tuple[int, int] = next(iter(shapes))
        return only
    common, _ = shapes.most_common(1)[0]
    odd = [f"{e.path}[{e.hdu}] {e.shape[0]}x{e.shape[1]}" for e in rows if e.shape != common]
    raise PlanError(
        f"chip {chip}: frames disagree in shape (most are {common[0]}x{common[1]}): "
        + "; ".join(odd[:5])
        + (" ..." if len(odd) > 5 else "")
    )


def _need_exptime(e: Entry, role: str, *, positive: bool) -> None:
    bad = e.exptime is None or e.exptime != e.exptime or e.exptime < 0 or (positive and e.exptime == 0)
    if bad:
        what = "missing" if e.exptime is None else f"invalid ({e.exptime})"
        raise PlanError(
            f"{e.path}[{e.hdu}]: exposure time {what} in this {role} frame "
            f"(keywords tried: {_keywords(e, 'exptime')}); it is needed to scale the dark current"
        )


def _nearest_dark(e: Entry, darks: tuple[Entry, ...], tolerance: float) -> float:
    times = sorted({float(d.exptime) for d in darks if d.exptime is not None})
    exptime = float(e.exptime or 0.0)  # checked by _need_exptime first
    best = nearest_dark_exptime(exptime, times)
    if abs(best - exptime) > tolerance:
        raise PlanError(
            f"{e.path}[{e.hdu}]: no dark within {tolerance:g} s of its exposure time {e.exptime:g} s "
            f"(dark exposure times available: {', '.join(f'{t:g}' for t in times)})"
        )
    return best


def nearest_dark_exptime(exptime: float, times: list[float]) -> float:
    """The dark exposure time closest to ``exptime`` (ties go to the shorter)."""
    return min(times, key=lambda t: (abs(t - exptime), t))


def safe_filter_name(filt: str | None) -> str:
    """A filter name usable in a file name: ``flat_<this>.fits``."""
    if filt is None or not str(filt).strip():
        return "NONE"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(filt).strip()).strip(".") or "NONE"


def _check_master_names(filters: list[str | None]) -> None:
    """Two filters must not write the same ``flat_<name>.fits`` (names are made file-safe)."""
    seen: dict[str, str | None] = {}
    for f in dict.fromkeys(filters):
        name = safe_filter_name(f)
        if name in seen:
            raise PlanError(
                f"filters {seen[name]!r} and {f!r} would write the same master file "
                f"flat_{name}.fits (rename one in the headers or a profile)"
            )
        seen[name] = f


def _check_unique_names(exposures: list[Exposure]) -> None:
    seen: dict[str, str] = {}
    for exp in exposures:
        if exp.name in seen:
            raise PlanError(
                f"two science files would write the same output {exp.name}.fits: "
                f"{seen[exp.name]} and {exp.path} (rename one)"
            )
        seen[exp.name] = exp.path
    for exp in exposures:
        if Path(exp.name).name != exp.name or exp.name in ("", ".", ".."):
            raise PlanError(f"{exp.path}: cannot derive a safe output name")
