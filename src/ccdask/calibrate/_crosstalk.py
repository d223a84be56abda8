"""Crosstalk between the amplifiers of a chip: the coefficient table, the correction, the measurement.

When two amplifiers are read out at the same time, a fraction of each pixel's signal on one
(the *source*) appears in the pixel the other (the *victim*) reads at the same instant: a
bright star on one amplifier leaves a faint (positive or negative) ghost at the mirrored place
on the other. The model, per ordered pair and in raw ADU::

    victim(y, x) += linear * s + quadratic * s²,   s = source(y, x') - source overscan(y)

where ``x'`` is the source column read at the same time as victim column ``x`` and the source
overscan is the median of the source amplifier's serial overscan in the same raw row (the
signal, without the bias level). Pixels are paired in readout order: the two data sections
must cover the same raw rows and be equally wide; column ``k`` of the victim (counted from its
low-x edge) pairs with column ``k`` of the source, or with column ``w - 1 - k`` when ``flip``.
By default ``flip`` is true when the two amplifiers' serial overscans lie on opposite sides of
their data (amplifiers reading towards opposite ends of the serial register, the usual case of
two amplifiers sharing a chip) and false otherwise. An amplifier without a serial overscan
contributes its raw values as the signal.

:func:`correct_crosstalk_np` (numpy) and :func:`correct_crosstalk` (dask, whole rows per block,
so the result does not depend on the chunking) subtract every term from the raw frame before
the overscan, using the uncorrected source values (first-order correction, as IRAF ``xtalkcor``
and LSST ``ip_isr`` do). :func:`measure_crosstalk` fits the coefficients from raw frames with
bright or saturated stars.

The table is TOML (a file named by ``crosstalk.file`` in the configuration; ``ccdask crosstalk
--write`` produces one)::

    [[crosstalk]]
    chip = "CCD1"        # optional: without it the term applies to every chip with these amplifiers
    source = "A"
    victim = "B"
    linear = 4.0e-4
    quadratic = 0.0      # optional
    flip = true          # optional (default: from the overscan sides, see above)

Crosstalk between chips read by the same controller has the same form, with the source
amplifier on another chip of the same exposure: a term with ``source_chip`` (the other chip's
name; ``chip``, the victim's chip, is then required)::

    [[crosstalk]]
    chip = "CCD2"          # the victim's chip
    source_chip = "CCD1"   # the source's chip (default: the victim's own)
    source = "A"
    victim = "B"
    linear = 3.0e-5

Pixels pair as within a chip (the same raw rows, column ``k`` with ``k`` or ``w - 1 - k``), so
the two chips must have as many raw rows and the two data sections the same rows and width.
The task of one victim chip never holds the other chips: it is handed only the source
amplifiers' raw columns (:class:`SourceAmp`: all raw rows of the amplifier's data columns,
then of its serial overscan, read lazily from the other chips' files), so a task holds its own
raw chip plus ``rows x (width + overscan)`` pixels per source amplifier named in the table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage

from ..errors import ConfigError, ProfileError, ShapeMismatchError
from ..profiles._layout import Amplifier, ChipLayout
from ..utils import MAD_TO_SIGMA, atomic_write_text
from ..utils._options import ConfigBase, option
from ._files import entries_by_chip, load_table, read_chip
from ._regions import block_location, rect_of, whole_block

__all__ = [
    "CrosstalkConfig",
    "CrosstalkFit",
    "CrosstalkInputs",
    "CrosstalkTable",
    "CrosstalkTerm",
    "SourceAmp",
    "correct_crosstalk",
    "correct_crosstalk_np",
    "load_crosstalk",
    "measure_crosstalk",
    "measure_crosstalk_files",
    "measure_crosstalk_inter",
    "profile_crosstalk",
    "read_source_amp",
    "source_amp",
]


@dataclass(frozen=True)
class CrosstalkConfig(ConfigBase):
    """Crosstalk correction of the raw frames (off unless a coefficient file is given)."""

    file: str | None = option(
        None,
        "TOML file of crosstalk coefficients ([[crosstalk]] tables: chip, source, victim, linear, "
        "quadratic, flip, source_chip; see docs/signatures.md); None: the instrument profile's table when "
        "it asks for one (see profile), else no crosstalk correction",
    )
    profile: bool = option(
        True,
        "when file is None, correct with the instrument profile's crosstalk table if the profile has one and "
        "asks for it ([crosstalk] apply = true); false: never use the profile's table",
    )


@dataclass(frozen=True)
class CrosstalkTerm:
    """One ordered pair: ``victim += linear s + quadratic s²`` with ``s`` the source's signal."""

    source: str
    victim: str
    linear: float
    quadratic: float = 0.0
    chip: str | None = None
    flip: bool | None = None
    source_chip: str | None = None  #: another chip's amplifier (None: the victim's own chip)

    @property
    def inter(self) -> bool:
        """Whether the source amplifier lies on another chip."""
        return self.source_chip is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "victim": self.victim, "linear": self.linear}
        if self.quadratic:
            out["quadratic"] = self.quadratic
        if self.chip is not None:
            out["chip"] = self.chip
        if self.flip is not None:
            out["flip"] = self.flip
        if self.source_chip is not None:
            out["source_chip"] = self.source_chip
        return out


@dataclass(frozen=True)
class CrosstalkTable:
    """The coefficients of a camera: the terms of every chip."""

    terms: tuple[CrosstalkTerm, ...]
    source: str = "<table>"

    def for_chip(self, layout: ChipLayout) -> tuple[CrosstalkTerm, ...]:
        """The terms within ``layout``'s chip (its own, then the chip-less ones it has the
        amplifiers of; a chip's own term wins over a chip-less one for the same pair)."""
        names = {a.name for a in layout.amplifiers}
        own = {(t.source, t.victim): t for t in self.terms if t.chip == layout.name and not t.inter}
        out = list(own.values())
        for t in self.terms:
            if t.chip is None and (t.source, t.victim) not in own and {t.source, t.victim} <= names:
                out.append(t)
        for t in out:
            if t.source not in names or t.victim not in names:
                missing = t.source if t.source not in names else t.victim
                raise ConfigError(
                    f"{self.source}: crosstalk term {t.source} -> {t.victim} of chip {layout.name} names "
                    f"amplifier {missing!r}, which the chip does not have (it has {', '.join(sorted(names))})"
                )
        return tuple(out)

    def inter_for_chip(self, chip: str) -> tuple[CrosstalkTerm, ...]:
        """The terms whose victim is on ``chip`` and whose source is on another chip."""
        return tuple(t for t in self.terms if t.inter and t.chip == chip)

    def source_amps(self, chip: str) -> tuple[tuple[str, str], ...]:
        """``(source chip, amplifier)`` of every other chip's amplifier that ``chip``'s inter-chip
        terms read, sorted: what its task must be handed (:class:`SourceAmp`)."""
        return tuple(sorted({(str(t.source_chip), t.source) for t in self.inter_for_chip(chip)}))

    @property
    def has_inter(self) -> bool:
        return any(t.inter for t in self.terms)

    def check(self, layouts: Mapping[str, ChipLayout], *, all_chips: bool = True) -> None:
        """Check the table against a camera's chips (name -> layout): every amplifier a term
        names exists on its chip and, with ``all_chips``, every chip it names is one of them
        (a profile's table may name chips a night did not read: ``all_chips=False`` skips the
        terms of such chips, but an inter-chip term whose victim was read needs its source)."""
        known = ", ".join(sorted(layouts))
        for t in self.terms:
            what = f"{self.source}: crosstalk term {t.source} -> {t.victim}" + (f" of chip {t.chip}" if t.chip else "")
            for role, chip, amp in (("victim", t.chip, t.victim), ("source", t.source_chip or t.chip, t.source)):
                if chip is None:
                    if not any(amp in {a.name for a in lay.amplifiers} for lay in layouts.values()):
                        raise ConfigError(f"{what} names {role} amplifier {amp!r}, which no chip has")
                    continue
                if chip not in layouts:
                    if all_chips or (role == "source" and t.chip in layouts):
                        raise ConfigError(f"{what} names {role} chip {chip!r}, which is not among the chips ({known})")
                    continue
                names = {a.name for a in layouts[chip].amplifiers}
                if amp not in names:
                    raise ConfigError(
                        f"{what} names {role} amplifier {amp!r} of chip {chip}, which that chip does not have "
                        f"(it has {', '.join(sorted(names))})"
                    )

    def to_dict(self) -> dict[str, Any]:
        return {"crosstalk": [t.to_dict() for t in self.terms]}


def _number(source: str, i: int, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"{source}: crosstalk term {i + 1}: {key} must be a finite number, got {value!r}")
    return float(value)


def parse_crosstalk(doc: dict[str, Any], *, source: str = "<dict>") -> CrosstalkTable:
    """A :class:`CrosstalkTable` from the parsed TOML document ``{"crosstalk": [{...}, ...]}``."""
    unknown_top = set(doc) - {"crosstalk"}
    if unknown_top:
        raise ConfigError(f"{source}: unknown top-level entries {sorted(unknown_top)} (expected [[crosstalk]] tables)")
    rows = doc.get("crosstalk", [])
    if not isinstance(rows, list):
        raise ConfigError(f"{source}: crosstalk must be a list of tables ([[crosstalk]])")
    terms = []
    seen = set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(f"{source}: crosstalk term {i + 1} is not a table")
        keys = {"chip", "source_chip", "source", "victim", "linear", "quadratic", "flip", "linear_err", "quadratic_err"}
        unknown = set(row) - keys
        if unknown:
            raise ConfigError(f"{source}: crosstalk term {i + 1}: unknown keys {sorted(unknown)}")
        for key in ("source", "victim", "linear"):
            if key not in row:
                raise ConfigError(f"{source}: crosstalk term {i + 1} has no {key!r}")
        src, vic = row["source"], row["victim"]
        if not isinstance(src, str) or not isinstance(vic, str):
            raise ConfigError(f"{source}: crosstalk term {i + 1}: source and victim must be amplifier names")
        chip = row.get("chip")
        if chip is not None and not isinstance(chip, str):
            raise ConfigError(f"{source}: crosstalk term {i + 1}: chip must be a name, got {chip!r}")
        src_chip = row.get("source_chip")
        if src_chip is not None and not isinstance(src_chip, str):
            raise ConfigError(f"{source}: crosstalk term {i + 1}: source_chip must be a name, got {src_chip!r}")
        if src_chip is not None and chip is None:
            raise ConfigError(
                f"{source}: crosstalk term {i + 1}: a term with source_chip needs chip (the victim's chip)"
            )
        if src_chip == chip:
            src_chip = None  # the default: the victim's own chip
        if src == vic and src_chip is None:
            raise ConfigError(f"{source}: crosstalk term {i + 1}: source and victim are both {src!r}")
        flip = row.get("flip")
        if flip is not None and not isinstance(flip, bool):
            raise ConfigError(f"{source}: crosstalk term {i + 1}: flip must be true or false, got {flip!r}")
        ident = (chip, src_chip, src, vic)
        if ident in seen:
            frm = f"{src_chip}:" if src_chip else ""
            raise ConfigError(
                f"{source}: crosstalk term {frm}{src} -> {vic}{' of ' + chip if chip else ''} is given twice"
            )
        seen.add(ident)
        terms.append(
            CrosstalkTerm(
                source=src,
                victim=vic,
                linear=_number(source, i, "linear", row["linear"]),
                quadratic=_number(source, i, "quadratic", row.get("quadratic", 0.0)),
                chip=chip,
                flip=flip,
                source_chip=src_chip,
            )
        )
    return CrosstalkTable(tuple(terms), source)


def load_crosstalk(path: str | os.PathLike[str]) -> CrosstalkTable:
    """The coefficient table of a TOML file (cached per path, modification time and size)."""
    return load_table(path, parse_crosstalk, "crosstalk coefficients")


def profile_crosstalk(profile: Any) -> CrosstalkTable | None:
    """The crosstalk coefficients an instrument profile carries (its ``[crosstalk]`` table,
    inline terms or a file relative to the profile), or None; errors name the profile."""
    spec = getattr(profile, "crosstalk_spec", None)
    if spec is None:
        return None
    kind, value = spec
    try:
        if kind == "file":
            return load_crosstalk(value)
        return parse_crosstalk({"crosstalk": value}, source=f"{profile.source} [crosstalk]")
    except ConfigError as exc:
        text = str(exc)
        raise ProfileError(text if profile.source in text else f"{profile.source}: {text}") from exc


# --------------------------------------------------------------------------------------------
# geometry of a pair


@dataclass(frozen=True)
class _Pair:
    """Raw columns of a source and a victim, their shared rows and the source's overscan."""

    y0: int
    y1: int
    sx0: int
    sx1: int
    vx0: int
    vx1: int
    flip: bool
    over: tuple[int, int] | None  # source serial overscan columns
    vover: tuple[int, int] | None  # victim serial overscan columns
    linear: float
    quadratic: float


def _overscan_side(amp: Amplifier) -> int:
    """-1 / +1: the serial overscan lies left / right of the data; 0 without one."""
    if amp.biassec is None or amp.overscan_axis != "serial":
        return 0
    d, b = rect_of(amp.datasec), rect_of(amp.biassec)
    return 1 if (b.x0 + b.x1) > (d.x0 + d.x1) else -1


def _serial_cols(amp: Amplifier) -> tuple[int, int] | None:
    if amp.biassec is None or amp.overscan_axis != "serial":
        return None
    b = rect_of(amp.biassec)
    return (b.x0, b.x1)


def default_flip(source: Amplifier, victim: Amplifier) -> bool:
    """Whether the pair reads in opposite directions: serial overscans on opposite sides."""
    a, b = _overscan_side(source), _overscan_side(victim)
    return a != 0 and b != 0 and a != b


def _pair(t: CrosstalkTerm, s: Amplifier, v: Amplifier, where: str, shift: int = 0) -> _Pair:
    """The pair of source ``s`` and victim ``v``; ``shift`` moves the source's columns (an
    inter-chip source sits after the raw chip in the block the kernel sees)."""
    rs, rv = rect_of(s.datasec), rect_of(v.datasec)
    if (rs.y0, rs.y1) != (rv.y0, rv.y1) or (rs.x1 - rs.x0) != (rv.x1 - rv.x0):
        raise ShapeMismatchError(
            f"{where}: crosstalk {t.source} -> {t.victim} needs data sections on the same raw "
            f"rows and of equal width; they are {s.datasec} and {v.datasec}"
        )
    flip = default_flip(s, v) if t.flip is None else t.flip
    over = _serial_cols(s)
    if shift:  # the strip of a SourceAmp: its data columns, then its serial overscan columns
        w = rs.x1 - rs.x0
        strip_over = None if over is None else (shift + w, shift + w + over[1] - over[0])
        return _Pair(
            rs.y0, rs.y1, shift, shift + w, rv.x0, rv.x1, flip, strip_over, _serial_cols(v), t.linear, t.quadratic
        )
    return _Pair(rs.y0, rs.y1, rs.x0, rs.x1, rv.x0, rv.x1, flip, over, _serial_cols(v), t.linear, t.quadratic)


def _pairs(layout: ChipLayout, terms: Iterable[CrosstalkTerm]) -> tuple[_Pair, ...]:
    amps = {a.name: a for a in layout.amplifiers}
    return tuple(_pair(t, amps[t.source], amps[t.victim], f"chip {layout.name}") for t in terms)


def _signal_rows(block: np.ndarray, x0: int, x1: int, over: tuple[int, int] | None, flip: bool) -> np.ndarray:
    """float64 signal of columns ``x0:x1`` of ``block`` (each row minus its overscan median)."""
    s = np.asarray(block[:, x0:x1], dtype=np.float64)
    if over is not None:
        s = s - np.median(np.asarray(block[:, over[0] : over[1]], dtype=np.float64), axis=1)[:, None]
    return s[:, ::-1] if flip else s


# --------------------------------------------------------------------------------------------
# the source amplifiers of other chips


@dataclass(frozen=True)
class SourceAmp:
    """The raw pixels of one amplifier of another chip, as a victim chip's task needs them.

    ``pixels`` (numpy or dask, ``(raw rows, width + overscan columns)``) holds every raw row
    of the amplifier's data columns, then of its serial overscan columns (none without one).
    Build it with :func:`source_amp` (from an array of the whole chip) or
    :func:`read_source_amp` (reading only those columns from the chip's file).
    """

    chip: str
    amp: Amplifier
    pixels: Any

    @property
    def key(self) -> tuple[str, str]:
        return (self.chip, self.amp.name)


def _amp_columns(layout: ChipLayout, amp: str, where: str) -> tuple[Amplifier, list[tuple[int, int]]]:
    amps = {a.name: a for a in layout.amplifiers}
    if amp not in amps:
        raise ConfigError(f"{where}: chip {layout.name} has no amplifier {amp!r} (it has {', '.join(sorted(amps))})")
    a = amps[amp]
    d = rect_of(a.datasec)
    cols = [(d.x0, d.x1)]
    over = _serial_cols(a)
    if over is not None:
        cols.append(over)
    return a, cols


def source_amp(raw: Any, layout: ChipLayout, amp: str, *, where: str = "crosstalk") -> SourceAmp:
    """The :class:`SourceAmp` of amplifier ``amp`` of a whole raw chip (numpy or dask: lazy for dask)."""
    _check_shape(np.shape(raw), layout)
    a, cols = _amp_columns(layout, amp, where)
    parts = [raw[:, x0:x1] for x0, x1 in cols]
    if isinstance(raw, da.Array):
        pixels: Any = da.concatenate(parts, axis=1).astype(np.float32)
    else:
        pixels = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)
    return SourceAmp(layout.name, a, pixels)


def read_source_amp(reader: Any, layout: ChipLayout, amp: str, *, where: str = "crosstalk") -> SourceAmp:
    """The :class:`SourceAmp` of amplifier ``amp`` read from its file: only its data and serial
    overscan columns are read (``reader`` is the chip's :class:`~ccdask.io.ImageSource`)."""
    a, cols = _amp_columns(layout, amp, where)
    rows = slice(0, layout.raw_shape[0])
    parts = [np.asarray(reader.read(rows, slice(x0, x1)), dtype=np.float32) for x0, x1 in cols]
    return SourceAmp(layout.name, a, np.concatenate(parts, axis=1))


@dataclass(frozen=True)
class CrosstalkInputs:
    """What the correction of one chip needs: the table and the other chips' source amplifiers
    its inter-chip terms read (none for a table without such terms)."""

    table: CrosstalkTable
    sources: tuple[SourceAmp, ...] = ()


def _inter_pairs(
    layout: ChipLayout, table: CrosstalkTable, sources: Sequence[SourceAmp]
) -> tuple[tuple[_Pair, ...], list[SourceAmp]]:
    """The pairs of ``layout``'s inter-chip terms, their source columns placed after the raw
    chip in the order of the returned sources (the ones the terms use)."""
    terms = table.inter_for_chip(layout.name)
    if not terms:
        return (), []
    by_key = {s.key: s for s in sources}
    vamps = {a.name: a for a in layout.amplifiers}
    used: list[SourceAmp] = []
    offset: dict[tuple[str, str], int] = {}
    x = layout.raw_shape[1]
    out = []
    for t in terms:
        key = (str(t.source_chip), t.source)
        if t.victim not in vamps:
            raise ConfigError(
                f"{table.source}: crosstalk term {t.source_chip}:{t.source} -> {t.victim} of chip {layout.name} "
                f"names amplifier {t.victim!r}, which the chip does not have (it has {', '.join(sorted(vamps))})"
            )
        if key not in by_key:
            raise ConfigError(
                f"{table.source}: chip {layout.name} has crosstalk from amplifier {t.source} of chip "
                f"{t.source_chip}, whose raw pixels were not given (pass the source amplifiers of the other chips: "
                "CrosstalkInputs.sources)"
            )
        src = by_key[key]
        if key not in offset:
            if np.shape(src.pixels)[0] != layout.raw_shape[0]:
                raise ShapeMismatchError(
                    f"{table.source}: crosstalk {t.source_chip}:{t.source} -> {layout.name}:{t.victim} needs chips "
                    f"with as many raw rows; they have {np.shape(src.pixels)[0]} and {layout.raw_shape[0]}"
                )
            offset[key] = x
            x += int(np.shape(src.pixels)[1])
            used.append(src)
        out.append(_pair(t, src.amp, vamps[t.victim], f"chips {t.source_chip} and {layout.name}", offset[key]))
    return tuple(out), used


# --------------------------------------------------------------------------------------------
# the correction


def _correct_kernel(
    block: np.ndarray, pairs: tuple[_Pair, ...], width: int, block_info: dict[Any, Any] | None = None
) -> np.ndarray:
    """Subtract every pair's crosstalk from a block of whole raw rows; the block's first
    ``width`` columns are the chip, any further ones the other chips' source amplifiers."""
    where = block_location(block_info)
    if where.x0 != 0 or where.x1 != block.shape[1] + where.x0:
        raise RuntimeError("crosstalk correction needs blocks of whole rows")
    out = np.asarray(block[:, :width], dtype=np.float64).copy()
    for p in pairs:
        ya, yb = max(p.y0, where.y0), min(p.y1, where.y1)
        if ya >= yb:
            continue
        rows = slice(ya - where.y0, yb - where.y0)
        s = _signal_rows(block[rows], p.sx0, p.sx1, p.over, p.flip)
        out[rows, p.vx0 : p.vx1] -= p.linear * s + p.quadratic * s * s
    return out.astype(np.float32)


def _inputs(table: CrosstalkTable | CrosstalkInputs, sources: Sequence[SourceAmp]) -> CrosstalkInputs:
    if isinstance(table, CrosstalkInputs):
        return CrosstalkInputs(table.table, (*table.sources, *sources))
    return CrosstalkInputs(table, tuple(sources))


def correct_crosstalk_np(
    raw: np.ndarray,
    layout: ChipLayout,
    table: CrosstalkTable | CrosstalkInputs,
    sources: Sequence[SourceAmp] = (),
) -> np.ndarray:
    """:func:`correct_crosstalk` on a whole raw chip held in memory (float32 out)."""
    arr = np.asarray(raw)
    _check_shape(arr.shape, layout)
    inp = _inputs(table, sources)
    pairs = _pairs(layout, inp.table.for_chip(layout))
    inter, used = _inter_pairs(layout, inp.table, inp.sources)
    if used:
        arr = np.concatenate([arr.astype(np.float32, copy=False), *[np.asarray(s.pixels) for s in used]], axis=1)
    return _correct_kernel(arr, pairs + inter, layout.raw_shape[1], block_info=whole_block(arr.shape))


def correct_crosstalk(
    raw: da.Array,
    layout: ChipLayout,
    table: CrosstalkTable | CrosstalkInputs,
    sources: Sequence[SourceAmp] = (),
) -> da.Array:
    """Subtract the crosstalk of ``table`` from one raw chip, lazily.

    Parameters
    ----------
    raw : dask.array.Array
        The raw chip in ADU, shape ``layout.raw_shape``.
    layout : ChipLayout
        Its amplifiers.
    table : CrosstalkTable or CrosstalkInputs
        The coefficients (the terms of this chip are used), with the other chips' source
        amplifiers when it has inter-chip terms.
    sources : sequence of SourceAmp
        Further source amplifiers of other chips (dask or numpy pixels).

    Returns
    -------
    dask.array.Array
        float32, raw shape, in blocks of whole rows (the input, and any source amplifiers, are
        rechunked to full width and to the same rows, so the result does not depend on their
        chunking); equal to :func:`correct_crosstalk_np`.
    """
    arr = raw if isinstance(raw, da.Array) else da.asarray(raw)
    _check_shape(arr.shape, layout)
    inp = _inputs(table, sources)
    pairs = _pairs(layout, inp.table.for_chip(layout))
    inter, used = _inter_pairs(layout, inp.table, inp.sources)
    arr = arr.rechunk({1: -1})
    width = layout.raw_shape[1]
    if used:
        rows = arr.chunks[0]
        extra = [da.asarray(s.pixels).astype(np.float32).rechunk((rows, -1)) for s in used]
        arr = da.concatenate([arr.astype(np.float32), *extra], axis=1).rechunk({1: -1})
    return arr.map_blocks(
        _correct_kernel,
        pairs=pairs + inter,
        width=width,
        chunks=(arr.chunks[0], (width,)),
        dtype=np.float32,
        meta=np.array((), dtype=np.float32),
        token=f"crosstalk-{layout.name}",
    )


def _check_shape(shape: Sequence[int], layout: ChipLayout) -> None:
    if tuple(shape) != tuple(layout.raw_shape):
        raise ShapeMismatchError(
            f"chip {layout.name}: array of shape {tuple(shape)} does not match the layout's raw shape "
            f"{tuple(layout.raw_shape)}"
        )


def crosstalk_history(table: CrosstalkTable | CrosstalkInputs, layout: ChipLayout) -> str:
    """The HISTORY line of the correction of one chip."""
    tab = table.table if isinstance(table, CrosstalkInputs) else table
    terms = tab.for_chip(layout) + tab.inter_for_chip(layout.name)
    parts = [
        (f"{t.source_chip}:" if t.inter else "")
        + f"{t.source}->{t.victim} {t.linear:.4g}"
        + (f"+{t.quadratic:.3g}s^2" if t.quadratic else "")
        for t in terms
    ]
    return f"crosstalk: {Path(tab.source).name}: " + (", ".join(parts) if parts else "no terms for this chip")


# --------------------------------------------------------------------------------------------
# the measurement


@dataclass(frozen=True)
class CrosstalkFit:
    """The measured coefficients of one ordered pair of one chip.

    Attributes
    ----------
    chip, source, victim : str
        Where.
    linear, linear_err : float
        The linear coefficient and its standard error.
    quadratic, quadratic_err : float
        The quadratic coefficient and its error (0 and 0 for a linear fit).
    npix : int
        Pixels used (source bright, victim not, surviving the clipping).
    scatter : float
        Robust standard deviation of the victim pixels about the fit (ADU).
    flip : bool
        The pairing used.
    source_chip : str or None
        The source's chip when it is not ``chip`` (an inter-chip pair; ``chip`` is the victim's).
    """

    chip: str
    source: str
    victim: str
    linear: float
    linear_err: float
    quadratic: float
    quadratic_err: float
    npix: int
    scatter: float
    flip: bool
    source_chip: str | None = None

    def term(self) -> CrosstalkTerm:
        return CrosstalkTerm(
            self.source,
            self.victim,
            self.linear,
            self.quadratic,
            chip=self.chip,
            flip=self.flip,
            source_chip=self.source_chip,
        )

    @property
    def significant(self) -> bool:
        """Whether the linear coefficient differs from zero by more than 3 standard errors."""
        return abs(self.linear) > 3.0 * self.linear_err


def _victim_background(v: np.ndarray, masked: np.ndarray, box: int = 16) -> np.ndarray:
    """The victim's local background (ADU): the median of its unmasked pixels in boxes of
    ``box`` x ``box`` pixels, held constant over each box (the median of the whole amplifier
    where a box has no unmasked pixel). The sky, the flat field and any fixed bias pattern
    vary by a few ADU over an amplifier, as much as a ghost."""
    good = ~masked & np.isfinite(v)
    whole = float(np.median(v[good])) if good.any() else 0.0
    ny, nx = v.shape
    out = np.empty(v.shape, dtype=np.float64)
    for y0 in range(0, ny, box):
        for x0 in range(0, nx, box):
            sl = (slice(y0, y0 + box), slice(x0, x0 + box))
            g = good[sl]
            out[sl] = float(np.median(v[sl][g])) if g.sum() >= box else whole
    return out


def pair_samples(
    raw: np.ndarray,
    layout: ChipLayout,
    source: str,
    victim: str,
    *,
    threshold: float,
    model: tuple[float, float] | None = None,
    detect_sigma: float = 4.0,
    min_distance: int = 12,
) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
    """Source signal and background-subtracted victim at the pixels where the source is bright.

    A pixel is used when the source signal is at least ``threshold`` ADU; the victim is not
    itself bright (its signal below ``threshold``, its raw value below its saturation); the
    victim pixel lies at least ``min_distance`` raw columns from its source pixel (next to the
    boundary of two mirrored amplifiers a star lights both pixels of a pair directly); and,
    when a crosstalk ``model`` ``(linear, quadratic)`` is given, the victim minus that model is
    not a source of its own: above ``detect_sigma`` times the victim's noise, or within 2
    pixels of such a pixel (the victim's own stars at the ghost's place).
    """
    amps = {a.name: a for a in layout.amplifiers}
    for name in (source, victim):
        if name not in amps:
            raise ConfigError(f"chip {layout.name} has no amplifier {name!r} (it has {', '.join(amps)})")
    (p,) = _pairs(layout, [CrosstalkTerm(source, victim, 0.0)])
    arr = np.asarray(raw)
    rows = arr[p.y0 : p.y1]
    s = _signal_rows(rows, p.sx0, p.sx1, p.over, p.flip)
    k = np.arange(p.vx1 - p.vx0)
    src_col = (p.sx1 - 1 - k) if p.flip else (p.sx0 + k)
    far = np.abs(p.vx0 + k - src_col) >= min_distance
    return _samples(s, rows, p, amps[victim].saturate, far, threshold, model, detect_sigma)


def inter_pair_samples(
    source_raw: np.ndarray,
    source_layout: ChipLayout,
    source: str,
    victim_raw: np.ndarray,
    victim_layout: ChipLayout,
    victim: str,
    *,
    threshold: float,
    model: tuple[float, float] | None = None,
    detect_sigma: float = 4.0,
) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
    """:func:`pair_samples` for a source amplifier on another chip of the same exposure (the
    victim's own sky never lights the source chip, so no pixel is left out for its distance)."""
    src = source_amp(np.asarray(source_raw), source_layout, source)
    term = CrosstalkTerm(source, victim, 0.0, chip=victim_layout.name, source_chip=source_layout.name)
    table = CrosstalkTable((term,), "<measurement>")
    (p,), _ = _inter_pairs(victim_layout, table, [src])
    vraw = np.asarray(victim_raw)
    block = np.concatenate([vraw.astype(np.float32, copy=False), np.asarray(src.pixels)], axis=1)[p.y0 : p.y1]
    s = _signal_rows(block, p.sx0, p.sx1, p.over, p.flip)
    far = np.ones(p.vx1 - p.vx0, dtype=bool)
    vamp = {a.name: a for a in victim_layout.amplifiers}[victim]
    return _samples(s, block, p, vamp.saturate, far, threshold, model, detect_sigma)


def _samples(
    s: np.ndarray,
    rows: np.ndarray,
    p: _Pair,
    sat: float | None,
    far: np.ndarray,
    threshold: float,
    model: tuple[float, float] | None,
    detect_sigma: float,
) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
    v = _signal_rows(rows, p.vx0, p.vx1, p.vover, False)
    bright_src = s >= threshold
    vic_ok = (v < threshold) & np.isfinite(v)
    if sat is not None:
        vic_ok &= np.asarray(rows[:, p.vx0 : p.vx1], dtype=np.float64) < sat
    quiet = ~(bright_src | ~vic_ok)
    v = v - _victim_background(v, ndimage.binary_dilation(~quiet, structure=np.ones((5, 5), bool)))
    use = bright_src & vic_ok & far[None, :]
    if model is not None:
        rest = v[quiet]
        noise = MAD_TO_SIGMA * float(np.median(np.abs(rest - np.median(rest)))) if rest.size else 0.0
        resid = v - (model[0] * s + model[1] * s * s)
        own = ndimage.binary_dilation(np.abs(resid) > detect_sigma * noise, structure=np.ones((5, 5), bool))
        use &= ~own
    blocks = np.broadcast_to(((np.arange(p.y0, p.y1)) // 64)[:, None], use.shape)
    return s[use], v[use], p.flip, blocks[use]


def fit_crosstalk(
    s: np.ndarray,
    v: np.ndarray,
    *,
    quadratic: bool = False,
    sigma: float = 3.0,
    maxiters: int = 10,
    groups: np.ndarray | None = None,
    offset: bool = False,
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Iteratively clipped least squares of ``v = c1 s (+ c2 s²)`` through the origin, or with
    ``offset`` of ``v = c0 + c1 s (+ c2 s²)`` (``c0`` fitted and dropped from the result: the
    victim's background estimate, a box median, sits a fraction of an ADU off the mean of the
    pixels the fit keeps once the victim's own sources are masked and clipped, which through
    the origin biases ``c1`` by that offset over the mean source signal).

    Returns the coefficients, their standard errors, the pixels kept and the residuals' robust
    sigma. The error is the larger of the fit's formal error (covariance with the clipped
    residuals' variance) and, with ``groups`` (labels of pixels whose errors may be correlated:
    the same star, the same place in several frames), the delete-one-group jackknife error:
    the pixels of one ghost share their victim's background and any faint light under it.
    """
    s = np.asarray(s, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    ncoef = (2 if quadratic else 1) + (1 if offset else 0)
    if s.size < ncoef + 2:
        raise ConfigError(
            f"too few bright source pixels ({s.size}) to fit crosstalk: use frames with bright or saturated "
            "stars, or lower the threshold"
        )
    columns = ([np.ones_like(s)] if offset else []) + [s] + ([s * s] if quadratic else [])
    design = np.stack(columns, axis=1)
    keep = np.ones(s.size, dtype=bool)
    coef = np.zeros(ncoef)
    spread = math.nan
    for _ in range(maxiters + 1):
        coef, *_ = np.linalg.lstsq(design[keep], v[keep], rcond=None)
        resid = v - design @ coef
        spread = MAD_TO_SIGMA * float(np.median(np.abs(resid[keep] - np.median(resid[keep]))))
        if not spread > 0:
            break
        new = np.abs(resid) <= sigma * spread
        if np.array_equal(new, keep) or new.sum() < ncoef + 2:
            break
        keep = new
    resid = v[keep] - design[keep] @ coef
    dof = max(int(keep.sum()) - ncoef, 1)
    var = float(resid @ resid) / dof
    cov = var * np.linalg.inv(design[keep].T @ design[keep])
    err = np.sqrt(np.diag(cov))
    if groups is not None:
        g = np.asarray(groups)[keep]
        labels = np.unique(g)
        if labels.size >= 3:
            dk, vk = design[keep], v[keep]
            jack = np.array([np.linalg.lstsq(dk[g != lab], vk[g != lab], rcond=None)[0] for lab in labels])
            m = labels.size
            jerr = np.sqrt((m - 1) / m * ((jack - jack.mean(axis=0)) ** 2).sum(axis=0))
            err = np.maximum(err, jerr)
    if offset:
        coef, err = coef[1:], err[1:]
    return coef, err, int(keep.sum()), spread


def _fit_pair(
    sample: Any, nframes: int, *, quadratic: bool, sigma: float, label: str
) -> tuple[np.ndarray, np.ndarray, int, float, bool]:
    """The robust fit of one pair over ``nframes`` frames: ``sample(i, model)`` gives frame
    ``i``'s samples (:func:`pair_samples`). A first guess from the median ratio, then fits with
    the victim's own sources (what the current model does not explain) masked, until the mask
    settles."""
    model: tuple[float, float] | None = None
    coef = err = np.zeros(2)
    n, spread, flip = 0, math.nan, False
    for it in range(4):
        ss, vs, gs = [], [], []
        for i in range(nframes):
            s, v, flip, g = sample(i, model)
            ss.append(s)
            vs.append(v)
            gs.append(g)
        s_all, v_all, g_all = np.concatenate(ss), np.concatenate(vs), np.concatenate(gs)
        if it == 0:
            model = (float(np.median(v_all / s_all)) if s_all.size else 0.0, 0.0)
            continue
        try:
            coef, err, n, spread = fit_crosstalk(
                s_all, v_all, quadratic=quadratic, sigma=sigma, groups=g_all, offset=True
            )
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None
        new = (float(coef[0]), float(coef[1]) if quadratic else 0.0)
        if new == model:
            break
        model = new
    return coef, err, n, spread, flip


def _fit_result(
    chip: str, src: str, vic: str, fitted: tuple[np.ndarray, np.ndarray, int, float, bool], quadratic: bool, **kw: Any
) -> CrosstalkFit:
    coef, err, n, spread, flip = fitted
    return CrosstalkFit(
        chip=chip,
        source=src,
        victim=vic,
        linear=float(coef[0]),
        linear_err=float(err[0]),
        quadratic=float(coef[1]) if quadratic else 0.0,
        quadratic_err=float(err[1]) if quadratic else 0.0,
        npix=n,
        scatter=spread,
        flip=flip,
        **kw,
    )


def measure_crosstalk(
    raws: Sequence[np.ndarray],
    layout: ChipLayout,
    *,
    threshold: float = 5000.0,
    quadratic: bool = False,
    sigma: float = 3.0,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> list[CrosstalkFit]:
    """Crosstalk coefficients of every ordered amplifier pair of one chip from raw frames.

    Parameters
    ----------
    raws : sequence of numpy arrays
        Raw frames of the chip (ADU, overscan included) with bright or saturated stars.
    layout : ChipLayout
        The chip's amplifiers.
    threshold : float
        Source signal (ADU above its overscan) from which a pixel is used.
    quadratic : bool
        Fit a quadratic term too.
    sigma : float
        Clipping threshold of the robust fit (the victim's own stars and cosmic rays drop out).
    pairs : sequence of (source, victim), optional
        The pairs to measure (default: every ordered pair of amplifiers).

    Returns
    -------
    list of CrosstalkFit
        One per pair, all frames pooled.
    """
    if not threshold > 0:
        raise ConfigError(f"measure_crosstalk: threshold must be positive, got {threshold!r}")
    names = [a.name for a in layout.amplifiers]
    todo = list(pairs) if pairs is not None else [(a, b) for a in names for b in names if a != b]
    for raw in raws:
        _check_shape(np.shape(raw), layout)
    fits_out = []
    for src, vic in todo:

        def sample(i: int, model: tuple[float, float] | None, src: str = src, vic: str = vic) -> Any:
            return pair_samples(raws[i], layout, src, vic, threshold=threshold, model=model)

        fitted = _fit_pair(
            sample, len(raws), quadratic=quadratic, sigma=sigma, label=f"chip {layout.name}, {src} -> {vic}"
        )
        fits_out.append(_fit_result(layout.name, src, vic, fitted, quadratic))
    return fits_out


def measure_crosstalk_inter(
    exposures: Sequence[Mapping[str, np.ndarray]],
    layouts: Mapping[str, ChipLayout],
    *,
    threshold: float = 5000.0,
    quadratic: bool = False,
    sigma: float = 3.0,
    pairs: Sequence[tuple[str, str, str, str]] | None = None,
) -> list[CrosstalkFit]:
    """Crosstalk coefficients between amplifiers of different chips of the same exposures.

    Parameters
    ----------
    exposures : sequence of mappings
        Per exposure, chip name -> raw frame (ADU, overscan included).
    layouts : mapping
        Chip name -> layout (every chip of ``exposures``).
    threshold, quadratic, sigma
        As for :func:`measure_crosstalk`.
    pairs : sequence of (source chip, source amp, victim chip, victim amp), optional
        The pairs to measure (default: every ordered pair of amplifiers on different chips
        with as many raw rows and equally wide data sections on the same rows).

    Returns
    -------
    list of CrosstalkFit
        One per pair (``chip`` the victim's, ``source_chip`` the source's), all exposures pooled.
    """
    if not threshold > 0:
        raise ConfigError(f"measure_crosstalk_inter: threshold must be positive, got {threshold!r}")
    if pairs is None:
        todo = [
            (sc, sa.name, vc, va.name)
            for sc, sl in layouts.items()
            for vc, vl in layouts.items()
            if sc != vc and sl.raw_shape[0] == vl.raw_shape[0]
            for sa in sl.amplifiers
            for va in vl.amplifiers
            if _same_rows(sa, va)
        ]
    else:
        todo = list(pairs)
    for exp in exposures:
        for chip, raw in exp.items():
            if chip not in layouts:
                raise ConfigError(f"measure_crosstalk_inter: no layout for chip {chip!r}")
            _check_shape(np.shape(raw), layouts[chip])
    out = []
    for sc, sa, vc, va in todo:
        frames = [e for e in exposures if sc in e and vc in e]
        label = f"chip {sc}:{sa} -> {vc}:{va}"
        if not frames:
            raise ConfigError(f"{label}: no exposure holds both chips")

        def sample(
            i: int,
            model: tuple[float, float] | None,
            sc: str = sc,
            sa: str = sa,
            vc: str = vc,
            va: str = va,
            frames: list[Mapping[str, np.ndarray]] = frames,
        ) -> Any:
            return inter_pair_samples(
                frames[i][sc], layouts[sc], sa, frames[i][vc], layouts[vc], va, threshold=threshold, model=model
            )

        fitted = _fit_pair(sample, len(frames), quadratic=quadratic, sigma=sigma, label=label)
        out.append(_fit_result(vc, sa, va, fitted, quadratic, source_chip=sc))
    return out


def _same_rows(a: Amplifier, b: Amplifier) -> bool:
    ra, rb = rect_of(a.datasec), rect_of(b.datasec)
    return (ra.y0, ra.y1) == (rb.y0, rb.y1) and (ra.x1 - ra.x0) == (rb.x1 - rb.x0)


def measure_crosstalk_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    profile: str | None = None,
    threshold: float = 5000.0,
    quadratic: bool = False,
    sigma: float = 3.0,
    inter_chip: bool = False,
    chips: Sequence[str] | None = None,
) -> list[CrosstalkFit]:
    """:func:`measure_crosstalk` for every chip of raw FITS files (layouts from the profile);
    with ``inter_chip``, :func:`measure_crosstalk_inter` too, for every ordered pair of
    amplifiers of different chips among ``chips`` (default: all), read from the same files."""
    grouped = entries_by_chip(paths, profile=profile)
    if chips is not None:
        missing = sorted(set(chips) - set(grouped))
        if missing:
            raise ConfigError(
                f"measure_crosstalk_files: no chip {missing} in these files (they have {sorted(grouped)})"
            )
        grouped = {c: grouped[c] for c in chips}
    by_chip = {chip: entries for chip, entries in grouped.items() if entries[0].layout.namps > 1}
    if not by_chip and not (inter_chip and len(grouped) > 1):
        raise ConfigError("measure_crosstalk_files: no chip of these files has more than one amplifier")
    out: list[CrosstalkFit] = []
    raws = {chip: [(e.path, read_chip(e)) for e in entries] for chip, entries in grouped.items()}
    for chip, entries in by_chip.items():
        out.extend(
            measure_crosstalk(
                [r for _, r in raws[chip]], entries[0].layout, threshold=threshold, quadratic=quadratic, sigma=sigma
            )
        )
    if inter_chip:
        if len(grouped) < 2:
            raise ConfigError("measure_crosstalk_files: inter-chip crosstalk needs files of more than one chip")
        layouts = {chip: entries[0].layout for chip, entries in grouped.items()}
        per_file: dict[str, dict[str, np.ndarray]] = {}
        for chip, rows in raws.items():
            for path, raw in rows:
                per_file.setdefault(path, {})[chip] = raw
        out.extend(
            measure_crosstalk_inter(
                list(per_file.values()), layouts, threshold=threshold, quadratic=quadratic, sigma=sigma
            )
        )
    return out


def fits_to_toml(fits_list: Sequence[CrosstalkFit], *, note: str = "") -> str:
    """The measured coefficients as a coefficient file (the format :func:`load_crosstalk` reads)."""
    lines = ["# crosstalk coefficients measured by ccdask crosstalk" + (f": {note}" if note else ""), ""]
    for f in fits_list:
        lines += [
            "[[crosstalk]]",
            f'chip = "{f.chip}"',
            *([f'source_chip = "{f.source_chip}"'] if f.source_chip else []),
            f'source = "{f.source}"',
            f'victim = "{f.victim}"',
            f"linear = {f.linear!r}",
            f"linear_err = {f.linear_err!r}",
        ]
        if f.quadratic or f.quadratic_err:
            lines += [f"quadratic = {f.quadratic!r}", f"quadratic_err = {f.quadratic_err!r}"]
        lines += [f"flip = {'true' if f.flip else 'false'}", ""]
    return "\n".join(lines)


def write_crosstalk(path: str | os.PathLike[str], fits_list: Sequence[CrosstalkFit], *, note: str = "") -> Path:
    """Write :func:`fits_to_toml` atomically to ``path``."""
    return atomic_write_text(path, fits_to_toml(fits_list, note=note))
