"""The night's crosstalk: which coefficient table corrects it, and what each chip-frame task
reads of the other chips of its exposure.

The table is ``crosstalk.file`` when the configuration names one; else the instrument profile's
``[crosstalk]`` table when the profile asks for it (``apply = true``) and ``crosstalk.profile``
is true; else there is no correction. It is checked against the night's chips once, before any
task is built. Each chip-frame task is then handed a :class:`ChipCrosstalk`: the table and the
readers of the other chips' amplifiers its inter-chip terms name (same file, only those
amplifiers' columns), so a task holds its own raw chip plus one ``rows x (width + overscan)``
strip per source amplifier, never a whole exposure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..calibrate._crosstalk import (
    CrosstalkInputs,
    CrosstalkTable,
    load_crosstalk,
    profile_crosstalk,
    read_source_amp,
)
from ..calibrate._regions import rect_of
from ..catalog import Entry
from ..config import ReduceConfig
from ..errors import ConfigError
from ..profiles._layout import ChipLayout
from ..utils import canonical_hash

__all__ = ["ChipCrosstalk", "NightCrosstalk", "night_crosstalk", "resolve_crosstalk_table"]


@dataclass(frozen=True)
class ChipCrosstalk:
    """What one chip-frame task needs for the crosstalk: the table and, per source amplifier
    of another chip, ``(reader, layout, amplifier)`` (readers are cheap and picklable)."""

    table: CrosstalkTable
    reads: tuple[tuple[Any, ChipLayout, str], ...] = ()

    def load(self) -> CrosstalkInputs:
        """Read the source amplifiers (only their data and serial overscan columns)."""
        sources = tuple(
            read_source_amp(reader, layout, amp, where=f"{self.table.source}: {reader.path}")
            for reader, layout, amp in self.reads
        )
        return CrosstalkInputs(self.table, sources)

    @property
    def extra_pixels(self) -> int:
        """Raw pixels read besides the chip's own (the source amplifiers' strips)."""
        total = 0
        for _reader, layout, amp in self.reads:
            a = {x.name: x for x in layout.amplifiers}[amp]
            d = rect_of(a.datasec)
            cols = d.x1 - d.x0
            if a.biassec is not None and a.overscan_axis == "serial":
                b = rect_of(a.biassec)
                cols += b.x1 - b.x0
            total += layout.raw_shape[0] * cols
        return total


@dataclass(frozen=True)
class NightCrosstalk:
    """The night's table and, per raw file, its chips' catalogue rows (to find the source chips
    of an inter-chip term in the same exposure)."""

    table: CrosstalkTable
    files: Mapping[str, Mapping[str, Entry]]

    def identity(self) -> dict[str, Any]:
        """What the cache keys of masters and reduced frames carry: the coefficients."""
        return self.table.to_dict()

    def for_entry(self, entry: Entry) -> ChipCrosstalk:
        """The crosstalk inputs of one chip-frame."""
        reads = []
        chips = self.files.get(entry.path, {})
        for chip, amp in self.table.source_amps(entry.chip):
            sibling = chips.get(chip)
            if sibling is None:
                raise ConfigError(
                    f"{self.table.source}: chip {entry.chip} has crosstalk from chip {chip}, which {entry.path} "
                    f"does not hold (it has {', '.join(sorted(chips))})"
                )
            reads.append((sibling.source, sibling.layout, amp))
        return ChipCrosstalk(self.table, tuple(reads))


def resolve_crosstalk_table(cfg: ReduceConfig, profiles: Iterable[str]) -> tuple[CrosstalkTable | None, bool]:
    """The table that corrects a night and whether it came from ``crosstalk.file`` (else from
    the profile: ``cfg.profile``, or the profiles the catalogue detected, named ``profiles``)."""
    if cfg.crosstalk.file is not None:
        return load_crosstalk(cfg.crosstalk.file), True
    if not cfg.crosstalk.profile:
        return None, False
    from ..profiles import load_profile

    names = [cfg.profile] if cfg.profile is not None else sorted(set(profiles))
    tables = {}
    for name in names:
        prof = load_profile(name)
        if prof.crosstalk_spec is not None and prof.crosstalk_apply:
            table = profile_crosstalk(prof)
            if table is not None:
                tables[prof.name] = table
    if not tables:
        return None, False
    if len({canonical(t) for t in tables.values()}) > 1:
        raise ConfigError(
            f"the night's frames come from profiles with different crosstalk tables ({', '.join(sorted(tables))}); "
            "reduce them separately or name one table with crosstalk.file"
        )
    return next(iter(tables.values())), False


def canonical(table: CrosstalkTable) -> str:
    """A digest of a table's coefficients (not of where it came from)."""
    return canonical_hash(table.to_dict())


def night_crosstalk(entries: Iterable[Entry], cfg: ReduceConfig) -> NightCrosstalk | None:
    """The night's crosstalk from its catalogue rows (None: no correction), checked against
    its chips: a table from ``crosstalk.file`` must name only chips and amplifiers the night
    has; a profile's may name chips the night did not read."""
    rows = list(entries)
    table, from_file = resolve_crosstalk_table(cfg, (e.profile for e in rows))
    if table is None:
        return None
    layouts: dict[str, ChipLayout] = {}
    files: dict[str, dict[str, Entry]] = {}
    for e in rows:
        layouts.setdefault(e.chip, e.layout)
        files.setdefault(e.path, {})[e.chip] = e
    table.check(layouts, all_chips=from_file)
    return NightCrosstalk(table, files)
