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

Only terms within a chip are supported (no crosstalk between chips of one controller).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage

from ..errors import ConfigError, ShapeMismatchError
from ..profiles._layout import Amplifier, ChipLayout
from ..utils import MAD_TO_SIGMA, atomic_write_text
from ..utils._options import ConfigBase, option
from ._files import entries_by_chip, load_table, read_chip
from ._regions import block_location, rect_of, whole_block

__all__ = [
    "CrosstalkConfig",
    "CrosstalkFit",
    "CrosstalkTable",
    "CrosstalkTerm",
    "correct_crosstalk",
    "correct_crosstalk_np",
    "load_crosstalk",
    "measure_crosstalk",
    "measure_crosstalk_files",
]


@dataclass(frozen=True)
class CrosstalkConfig(ConfigBase):
    """Crosstalk correction of the raw frames (off unless a coefficient file is given)."""

    file: str | None = option(
        None,
        "TOML file of crosstalk coefficients ([[crosstalk]] tables: chip, source, victim, linear, "
        "quadratic, flip; see docs/signatures.md); None: no crosstalk correction",
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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "victim": self.victim, "linear": self.linear}
        if self.quadratic:
            out["quadratic"] = self.quadratic
        if self.chip is not None:
            out["chip"] = self.chip
        if self.flip is not None:
            out["flip"] = self.flip
        return out


@dataclass(frozen=True)
class CrosstalkTable:
    """The coefficients of a camera: the terms of every chip."""

    terms: tuple[CrosstalkTerm, ...]
    source: str = "<table>"

    def for_chip(self, layout: ChipLayout) -> tuple[CrosstalkTerm, ...]:
        """The terms that apply to ``layout``'s chip (its own, then the chip-less ones it has the
        amplifiers of; a chip's own term wins over a chip-less one for the same pair)."""
        names = {a.name for a in layout.amplifiers}
        own = {(t.source, t.victim): t for t in self.terms if t.chip == layout.name}
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
        unknown = set(row) - {"chip", "source", "victim", "linear", "quadratic", "flip", "linear_err", "quadratic_err"}
        if unknown:
            raise ConfigError(f"{source}: crosstalk term {i + 1}: unknown keys {sorted(unknown)}")
        for key in ("source", "victim", "linear"):
            if key not in row:
                raise ConfigError(f"{source}: crosstalk term {i + 1} has no {key!r}")
        src, vic = row["source"], row["victim"]
        if not isinstance(src, str) or not isinstance(vic, str):
            raise ConfigError(f"{source}: crosstalk term {i + 1}: source and victim must be amplifier names")
        if src == vic:
            raise ConfigError(f"{source}: crosstalk term {i + 1}: source and victim are both {src!r}")
        chip = row.get("chip")
        if chip is not None and not isinstance(chip, str):
            raise ConfigError(f"{source}: crosstalk term {i + 1}: chip must be a name, got {chip!r}")
        flip = row.get("flip")
        if flip is not None and not isinstance(flip, bool):
            raise ConfigError(f"{source}: crosstalk term {i + 1}: flip must be true or false, got {flip!r}")
        ident = (chip, src, vic)
        if ident in seen:
            raise ConfigError(f"{source}: crosstalk term {src} -> {vic}{' of ' + chip if chip else ''} is given twice")
        seen.add(ident)
        terms.append(
            CrosstalkTerm(
                source=src,
                victim=vic,
                linear=_number(source, i, "linear", row["linear"]),
                quadratic=_number(source, i, "quadratic", row.get("quadratic", 0.0)),
                chip=chip,
                flip=flip,
            )
        )
    return CrosstalkTable(tuple(terms), source)


def load_crosstalk(path: str | os.PathLike[str]) -> CrosstalkTable:
    """The coefficient table of a TOML file (cached per path, modification time and size)."""
    return load_table(path, parse_crosstalk, "crosstalk coefficients")


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


def _pairs(layout: ChipLayout, terms: Iterable[CrosstalkTerm]) -> tuple[_Pair, ...]:
    amps = {a.name: a for a in layout.amplifiers}
    out = []
    for t in terms:
        s, v = amps[t.source], amps[t.victim]
        rs, rv = rect_of(s.datasec), rect_of(v.datasec)
        if (rs.y0, rs.y1) != (rv.y0, rv.y1) or (rs.x1 - rs.x0) != (rv.x1 - rv.x0):
            raise ShapeMismatchError(
                f"chip {layout.name}: crosstalk {t.source} -> {t.victim} needs data sections on the same raw "
                f"rows and of equal width; they are {s.datasec} and {v.datasec}"
            )
        flip = default_flip(s, v) if t.flip is None else t.flip
        out.append(
            _Pair(
                rs.y0, rs.y1, rs.x0, rs.x1, rv.x0, rv.x1, flip, _serial_cols(s), _serial_cols(v), t.linear, t.quadratic
            )
        )
    return tuple(out)


def _signal_rows(block: np.ndarray, x0: int, x1: int, over: tuple[int, int] | None, flip: bool) -> np.ndarray:
    """float64 signal of columns ``x0:x1`` of ``block`` (each row minus its overscan median)."""
    s = np.asarray(block[:, x0:x1], dtype=np.float64)
    if over is not None:
        s = s - np.median(np.asarray(block[:, over[0] : over[1]], dtype=np.float64), axis=1)[:, None]
    return s[:, ::-1] if flip else s


# --------------------------------------------------------------------------------------------
# the correction


def _correct_kernel(
    block: np.ndarray, pairs: tuple[_Pair, ...], block_info: dict[Any, Any] | None = None
) -> np.ndarray:
    """Subtract every pair's crosstalk from a block of whole raw rows."""
    where = block_location(block_info)
    if where.x0 != 0 or where.x1 != block.shape[1] + where.x0:
        raise RuntimeError("crosstalk correction needs blocks of whole rows")
    out = np.asarray(block, dtype=np.float64).copy()
    for p in pairs:
        ya, yb = max(p.y0, where.y0), min(p.y1, where.y1)
        if ya >= yb:
            continue
        rows = slice(ya - where.y0, yb - where.y0)
        s = _signal_rows(block[rows], p.sx0, p.sx1, p.over, p.flip)
        out[rows, p.vx0 : p.vx1] -= p.linear * s + p.quadratic * s * s
    return out.astype(np.float32)


def correct_crosstalk_np(raw: np.ndarray, layout: ChipLayout, table: CrosstalkTable) -> np.ndarray:
    """:func:`correct_crosstalk` on a whole raw chip held in memory (float32 out)."""
    arr = np.asarray(raw)
    _check_shape(arr.shape, layout)
    pairs = _pairs(layout, table.for_chip(layout))
    return _correct_kernel(arr, pairs, block_info=whole_block(arr.shape))


def correct_crosstalk(raw: da.Array, layout: ChipLayout, table: CrosstalkTable) -> da.Array:
    """Subtract the crosstalk of ``table`` from one raw chip, lazily.

    Parameters
    ----------
    raw : dask.array.Array
        The raw chip in ADU, shape ``layout.raw_shape``.
    layout : ChipLayout
        Its amplifiers.
    table : CrosstalkTable
        The coefficients (the terms of this chip are used).

    Returns
    -------
    dask.array.Array
        float32, raw shape, in blocks of whole rows (the input is rechunked to full width so
        the result does not depend on its chunking); equal to :func:`correct_crosstalk_np`.
    """
    arr = raw if isinstance(raw, da.Array) else da.asarray(raw)
    _check_shape(arr.shape, layout)
    pairs = _pairs(layout, table.for_chip(layout))
    return arr.rechunk({1: -1}).map_blocks(
        _correct_kernel,
        pairs=pairs,
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


def crosstalk_history(table: CrosstalkTable, layout: ChipLayout) -> str:
    """The HISTORY line of the correction of one chip."""
    terms = table.for_chip(layout)
    parts = [
        f"{t.source}->{t.victim} {t.linear:.4g}" + (f"+{t.quadratic:.3g}s^2" if t.quadratic else "") for t in terms
    ]
    return f"crosstalk: {Path(table.source).name}: " + (", ".join(parts) if parts else "no terms for this chip")


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

    def term(self) -> CrosstalkTerm:
        return CrosstalkTerm(self.source, self.victim, self.linear, self.quadratic, chip=self.chip, flip=self.flip)


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
    v = _signal_rows(rows, p.vx0, p.vx1, p.vover, False)
    sat = amps[victim].saturate
    bright_src = s >= threshold
    vic_ok = (v < threshold) & np.isfinite(v)
    if sat is not None:
        vic_ok &= np.asarray(rows[:, p.vx0 : p.vx1], dtype=np.float64) < sat
    k = np.arange(p.vx1 - p.vx0)
    src_col = (p.sx1 - 1 - k) if p.flip else (p.sx0 + k)
    far = np.abs(p.vx0 + k - src_col) >= min_distance
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
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Iteratively clipped least squares of ``v = c1 s (+ c2 s²)`` through the origin.

    Returns the coefficients, their standard errors, the pixels kept and the residuals' robust
    sigma. The error is the larger of the fit's formal error (covariance with the clipped
    residuals' variance) and, with ``groups`` (labels of pixels whose errors may be correlated:
    the same star, the same place in several frames), the delete-one-group jackknife error:
    the pixels of one ghost share their victim's background and any faint light under it.
    """
    s = np.asarray(s, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    ncoef = 2 if quadratic else 1
    if s.size < ncoef + 2:
        raise ConfigError(
            f"too few bright source pixels ({s.size}) to fit crosstalk: use frames with bright or saturated "
            "stars, or lower the threshold"
        )
    design = np.stack([s, s * s], axis=1) if quadratic else s[:, None]
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
    return coef, err, int(keep.sum()), spread


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
    fits_out = []
    for src, vic in todo:
        for raw in raws:
            _check_shape(np.shape(raw), layout)
        # a first guess from the median ratio, then fits with the victim's own sources (what the
        # current model does not explain) masked, until the mask settles
        model: tuple[float, float] | None = None
        for it in range(4):
            ss, vs, gs = [], [], []
            flip = False
            for raw in raws:
                s, v, flip, g = pair_samples(raw, layout, src, vic, threshold=threshold, model=model)
                ss.append(s)
                vs.append(v)
                gs.append(g)
            s_all, v_all, g_all = np.concatenate(ss), np.concatenate(vs), np.concatenate(gs)
            if it == 0:
                model = (float(np.median(v_all / s_all)) if s_all.size else 0.0, 0.0)
                continue
            try:
                coef, err, n, spread = fit_crosstalk(s_all, v_all, quadratic=quadratic, sigma=sigma, groups=g_all)
            except ConfigError as exc:
                raise ConfigError(f"chip {layout.name}, {src} -> {vic}: {exc}") from None
            new = (float(coef[0]), float(coef[1]) if quadratic else 0.0)
            if new == model:
                break
            model = new
        fits_out.append(
            CrosstalkFit(
                chip=layout.name,
                source=src,
                victim=vic,
                linear=float(coef[0]),
                linear_err=float(err[0]),
                quadratic=float(coef[1]) if quadratic else 0.0,
                quadratic_err=float(err[1]) if quadratic else 0.0,
                npix=n,
                scatter=spread,
                flip=flip,
            )
        )
    return fits_out


def measure_crosstalk_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    profile: str | None = None,
    threshold: float = 5000.0,
    quadratic: bool = False,
    sigma: float = 3.0,
) -> list[CrosstalkFit]:
    """:func:`measure_crosstalk` for every chip of raw FITS files (layouts from the profile)."""
    by_chip = {
        chip: entries
        for chip, entries in entries_by_chip(paths, profile=profile).items()
        if entries[0].layout.namps > 1
    }
    if not by_chip:
        raise ConfigError("measure_crosstalk_files: no chip of these files has more than one amplifier")
    out: list[CrosstalkFit] = []
    for entries in by_chip.values():
        raws = [read_chip(e) for e in entries]
        out.extend(measure_crosstalk(raws, entries[0].layout, threshold=threshold, quadratic=quadratic, sigma=sigma))
    return out


def fits_to_toml(fits_list: Sequence[CrosstalkFit], *, note: str = "") -> str:
    """The measured coefficients as a coefficient file (the format :func:`load_crosstalk` reads)."""
    lines = ["# crosstalk coefficients measured by ccdask crosstalk" + (f": {note}" if note else ""), ""]
    for f in fits_list:
        lines += [
            "[[crosstalk]]",
            f'chip = "{f.chip}"',
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
